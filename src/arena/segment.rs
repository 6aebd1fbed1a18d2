//! A segment: one backing [`Mapping`] plus its out-of-band metadata.
//!
//! The metadata lives in a private anonymous mapping of its own, never in the
//! secret mapping and never on the global heap: an overflow of a secret
//! cannot reach the allocator's bookkeeping, secret memory is spent on
//! secrets only, and the arena can be the global allocator. It holds:
//!
//! - the [`Segment`] header;
//! - one 64-byte [`PageMeta`] per arena page, which says what the page is
//!   and, for the first page of a slab, holds the slab's chunk bitmap;
//! - the used-page bitmap (one bit per page, 1 = used), read and written
//!   only under the arena's page lock.
//!
//! All-zero bytes are a valid initial state for both (free pages, nothing to
//! take from any bitmap), so creating a segment touches no metadata page: a
//! large arena costs no memory until it is used.
//!
//! # Invariants
//!
//! 1. A page is free in the used-page bitmap ⇔ its `state` is [`FREE`].
//! 2. The `bits` of every `PageMeta` that is not a live slab head are all
//!    zero, so a stale pointer to it can never allocate from it.
//! 3. A slab head's `bits` have a 1 exactly for its free chunks; slots past
//!    the end of the slab stay 0 (`ClassInfo::all_free`).
//! 4. Pages at or above `high_water` have never been handed out, so they are
//!    untouched and zero.

use core::ptr::NonNull;

use rustix::mm::{self, MapFlags, ProtFlags};

use super::classes::{PAGE, WORDS};
use crate::backing::{Backing, Mapping};
use crate::error::{Error, Step};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// `PageMeta::state` of a page that belongs to nobody.
pub(crate) const FREE: u32 = 0;
/// First page of a slab; the low 8 bits are the class.
pub(crate) const SLAB_HEAD: u32 = 1 << 8;
/// Later page of a slab; `aux` is the head's page index.
pub(crate) const SLAB_BODY: u32 = 2 << 8;
/// First page of a run; `aux` is the run's length in pages.
pub(crate) const RUN_HEAD: u32 = 3 << 8;
/// Later page of a run; `aux` is the head's page index.
pub(crate) const RUN_BODY: u32 = 4 << 8;
/// A run head whose free is in progress.
pub(crate) const RUN_FREEING: u32 = 5 << 8;
/// `aux` of a slab head that no shard has as its current slab.
pub(crate) const NO_OWNER: u32 = u32::MAX;

/// What one arena page is; for a slab head, also the slab's bitmap.
#[repr(C, align(64))]
pub(crate) struct PageMeta {
    /// One of the state constants above.
    pub state: AtomicU32,
    /// Depends on `state`; see the constants.
    pub aux: AtomicU32,
    /// Slab heads: neighbours in the class's slab list (class lock).
    pub prev: AtomicPtr<PageMeta>,
    /// See `prev`.
    pub next: AtomicPtr<PageMeta>,
    /// Slab heads: address of the slab's first byte.
    pub base: AtomicUsize,
    /// Slab heads: 1 = free chunk. Invariants 2 and 3.
    pub bits: [AtomicU64; WORDS],
}

#[cfg(all(loom, test))]
impl PageMeta {
    /// A page's metadata outside any segment, for the loom tests, which
    /// cannot map one: `state`, chunks starting at `base`, and `bits`.
    pub(crate) fn for_loom(state: u32, base: usize, bits: [u64; WORDS]) -> PageMeta {
        PageMeta {
            state: AtomicU32::new(state),
            aux: AtomicU32::new(NO_OWNER),
            prev: AtomicPtr::new(core::ptr::null_mut()),
            next: AtomicPtr::new(core::ptr::null_mut()),
            base: AtomicUsize::new(base),
            bits: bits.map(AtomicU64::new),
        }
    }
}

/// One mapping and its metadata. Lives at the start of its metadata mapping.
pub(crate) struct Segment {
    mapping: Mapping,
    /// Arena pages in the mapping.
    pages: usize,
    meta: NonNull<PageMeta>,
    used_map: NonNull<AtomicU64>,
    /// Where the next first-fit search starts (page lock).
    search_hint: AtomicUsize,
    /// One past the highest page ever handed out (page lock to write).
    high_water: AtomicUsize,
    meta_len: usize,
}

impl Segment {
    /// Maps `len` bytes of `backing` and its metadata; returns the header,
    /// which lives inside the metadata mapping.
    pub(crate) fn create(mapping: Mapping) -> Result<NonNull<Segment>, Error> {
        debug_assert_eq!(mapping.base().as_ptr() as usize % PAGE, 0);
        let pages = mapping.len() / PAGE;
        let words = pages.div_ceil(64);
        let meta_off = size_of::<Segment>().next_multiple_of(64);
        let map_off = meta_off + pages * size_of::<PageMeta>();
        let meta_len = (map_off + words * 8).next_multiple_of(crate::backing::os_page_size());
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let raw = unsafe {
            mm::mmap_anonymous(core::ptr::null_mut(), meta_len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
        }
        .map_err(|errno| Error::Syscall { step: Step::Metadata, errno })?;
        let raw = raw.cast::<u8>();
        // The PageMeta array and the used-page map stay as mmap gave them:
        // zero, which is FREE pages with empty bitmaps and no page used.
        // SAFETY: offsets are inside the `meta_len` bytes just mapped, and are
        // aligned for their types (64 for PageMeta, 8 for the bitmap).
        let (meta, used_map) = unsafe { (raw.add(meta_off).cast::<PageMeta>(), raw.add(map_off).cast::<AtomicU64>()) };
        let header = raw.cast::<Segment>();
        // SAFETY: offset 0 of the fresh mapping is aligned and large enough
        // (meta_off >= size_of::<Segment>()).
        unsafe {
            header.write(Segment {
                mapping,
                pages,
                // SAFETY (both): derived from a non-null mmap result.
                meta: NonNull::new_unchecked(meta),
                used_map: NonNull::new_unchecked(used_map),
                search_hint: AtomicUsize::new(0),
                high_water: AtomicUsize::new(0),
                meta_len,
            })
        };
        // SAFETY: non-null, as above.
        Ok(unsafe { NonNull::new_unchecked(header) })
    }

    /// Wipes every page ever handed out (on the fallback), then unmaps the
    /// backing and the metadata.
    ///
    /// Secret memory is not wiped here: the kernel zeroes each secretmem
    /// page as it frees it (`secretmem_free_folio` in `mm/secretmem.c`),
    /// which happens when the mapping, the file's last user, goes. Wiping it
    /// ourselves would fault in pages never touched (~10 µs each, and a
    /// permanent split of the kernel's direct map) for nothing.
    ///
    /// # Safety
    ///
    /// `seg` came from [`Segment::create`], is destroyed once, and nothing
    /// will touch it or any block inside it again.
    pub(crate) unsafe fn destroy(seg: NonNull<Segment>) {
        // SAFETY: per the contract `seg` is live until we unmap it below.
        let s = unsafe { seg.as_ref() };
        if s.mapping.backing() == Backing::MlockedMemfd {
            let used = s.high_water.load(Ordering::Acquire) * PAGE;
            // SAFETY: `base..base + used` is inside our mapping, and no block
            // in it is used any more, per the contract.
            unsafe { crate::wipe::wipe_chunk(s.base(), used) };
        }
        let meta_len = s.meta_len;
        // SAFETY: we own the header; reading it out moves the Mapping, which
        // unmaps the backing when dropped here.
        drop(unsafe { seg.as_ptr().read() }.mapping);
        // SAFETY: the metadata mapping is ours and no longer referenced.
        let _ = unsafe { mm::munmap(seg.as_ptr().cast(), meta_len) };
    }

    /// First byte of the usable memory.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.mapping.base().as_ptr()
    }

    /// Usable bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Arena pages.
    #[inline]
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    /// Metadata of page `p`.
    #[inline]
    pub(crate) fn meta(&self, p: usize) -> &PageMeta {
        // Cheap, and it keeps a bad index from ever reading outside the array.
        assert!(p < self.pages, "page {p} outside a segment of {} pages", self.pages);
        // SAFETY: `p < pages`, inside the array; all-zero bytes, as mmap gives
        // them, are a valid PageMeta (atomics and null pointers).
        unsafe { self.meta.add(p).as_ref() }
    }

    /// The first `PageMeta`; the array has `pages()` entries.
    pub(crate) fn meta_ptr(&self) -> *mut PageMeta {
        self.meta.as_ptr()
    }

    /// Page index of a `PageMeta` of this segment, if it is one.
    pub(crate) fn index_of(&self, m: &PageMeta) -> Option<usize> {
        let off = (m as *const PageMeta as usize).wrapping_sub(self.meta.as_ptr() as usize);
        let idx = off / size_of::<PageMeta>();
        (off % size_of::<PageMeta>() == 0 && idx < self.pages).then_some(idx)
    }

    /// Address of page `p`.
    #[inline]
    pub(crate) fn page_addr(&self, p: usize) -> *mut u8 {
        debug_assert!(p <= self.pages);
        self.base().wrapping_add(p * PAGE)
    }

    /// One past the highest page ever handed out.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Acquire)
    }

    fn used_word(&self, w: usize) -> &AtomicU64 {
        assert!(w < self.pages.div_ceil(64), "used-page word {w} past the map");
        // SAFETY: `w` is inside the zero-initialised map of `create`.
        unsafe { self.used_map.add(w).as_ref() }
    }

    /// Whether page `p` is free in the used-page map.
    pub(crate) fn page_is_free(&self, p: usize) -> bool {
        self.used_word(p / 64).load(Ordering::Relaxed) & (1 << (p % 64)) == 0
    }

    /// Whether pages `start..start + n` are all free. Page lock held.
    fn range_is_free(&self, start: usize, n: usize) -> bool {
        start + n <= self.pages && (start..start + n).all(|p| self.page_is_free(p))
    }

    /// Marks `start..start + n` used (`used = true`, raising the high-water
    /// mark) or free. Page lock held.
    fn set_range(&self, start: usize, n: usize, used: bool) {
        if used && start + n > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(start + n, Ordering::Release);
            self.mapping.raise_high_water((start + n) * PAGE);
        }
        for p in start..start + n {
            let mask = 1u64 << (p % 64);
            let word = self.used_word(p / 64);
            if used {
                debug_assert!(word.load(Ordering::Relaxed) & mask == 0, "page {p} taken twice");
                word.fetch_or(mask, Ordering::Relaxed);
            } else {
                debug_assert!(word.load(Ordering::Relaxed) & mask != 0, "page {p} freed twice");
                word.fetch_and(!mask, Ordering::Relaxed);
            }
        }
    }

    /// Finds and takes `n` free pages whose address is a multiple of
    /// `align`; returns the first page index. Page lock held.
    pub(crate) fn take_pages(&self, n: usize, align: usize) -> Option<usize> {
        if n == 0 || n > self.pages {
            return None;
        }
        let hint = self.search_hint.load(Ordering::Relaxed).min(self.pages);
        let found = self.find_free(hint, self.pages, n, align).or_else(|| self.find_free(0, hint + n - 1, n, align))?;
        self.set_range(found, n, true);
        self.search_hint.store(found + n, Ordering::Relaxed);
        Some(found)
    }

    /// Returns `start..start + n` to the free pool. Page lock held; the pages
    /// must be zero.
    pub(crate) fn put_pages(&self, start: usize, n: usize) {
        self.set_range(start, n, false);
        if start < self.search_hint.load(Ordering::Relaxed) {
            self.search_hint.store(start, Ordering::Relaxed);
        }
    }

    /// Takes `start..start + n` if all free (to grow a run in place). Page
    /// lock held.
    pub(crate) fn take_exact(&self, start: usize, n: usize) -> bool {
        if !self.range_is_free(start, n) {
            return false;
        }
        self.set_range(start, n, true);
        true
    }

    /// First-fit search for `n` free pages starting in `from..to`.
    fn find_free(&self, from: usize, to: usize, n: usize, align: usize) -> Option<usize> {
        let to = to.min(self.pages);
        let mut p = from;
        while p < to {
            // Skip whole used words quickly.
            let w = !self.used_word(p / 64).load(Ordering::Relaxed) >> (p % 64);
            if w == 0 {
                p = (p / 64 + 1) * 64;
                continue;
            }
            p += w.trailing_zeros() as usize;
            if p >= to {
                break;
            }
            let addr = self.page_addr(p) as usize;
            if addr % align != 0 {
                let aligned = addr.next_multiple_of(align);
                p += (aligned - addr) / PAGE;
                continue;
            }
            if p + n > self.pages {
                return None;
            }
            match (p..p + n).find(|&q| !self.page_is_free(q)) {
                None => return Some(p),
                Some(used) => p = used + 1,
            }
        }
        None
    }
}
