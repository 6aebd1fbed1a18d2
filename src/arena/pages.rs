//! The arena's out-of-band metadata for its whole reservation, and the pool
//! of free pages.
//!
//! One private anonymous mapping, never in secret memory and never on the
//! global heap (an overflow of a secret cannot reach the allocator's
//! bookkeeping, and the arena can be the global allocator), holds:
//!
//! - the heap table: one [`Heap`] per thread slot (`thread::MAX_SLOTS`);
//! - the used-page bitmap (one bit per page of `max_capacity`, 1 = used),
//!   read and written only under the arena's page lock;
//! - one 128-byte [`PageMeta`] per page of `max_capacity`: what the page
//!   is and, for a slab's first page, its bitmaps.
//!
//! It is reserved `PROT_NONE` for `max_capacity` and made writable as the
//! arena grows, so commit charge follows capacity. All-zero bytes are a valid
//! initial state for all three (no owner, free pages, nothing to take), so
//! growing touches no metadata page: memory is spent only when used.
//!
//! Page `p` is at `base + p * PAGE`, and its metadata is `meta[p]`: finding a
//! block's metadata is a subtraction and a shift, for every segment.
//!
//! # Invariants
//!
//! 1. A page is free in the used-page bitmap ⇔ its `state` is `FREE`.
//! 2. Pages at or above `high_water` have never been handed out, so they are
//!    untouched and zero.
//! 3. `pages` (mapped pages) only grows; pages below it are mapped.

use core::ptr::NonNull;

use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};

use super::classes::PAGE;
use super::heap::Heap;
use super::slab::PageMeta;
use super::thread::MAX_SLOTS;
use crate::error::{Error, Step};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// The metadata mapping and the page pool.
pub(crate) struct Pages {
    raw: NonNull<u8>,
    raw_len: usize,
    heaps: NonNull<Heap>,
    used_map: NonNull<AtomicU64>,
    meta: NonNull<PageMeta>,
    /// Offset of `meta` in the mapping, and writable bytes from there.
    meta_off: usize,
    meta_writable: AtomicUsize,
    max_pages: usize,
    /// Mapped pages (invariant 3).
    pages: AtomicUsize,
    /// Where the next first-fit search starts (page lock).
    search_hint: AtomicUsize,
    /// One past the highest page ever handed out (page lock to write).
    high_water: AtomicUsize,
}

// SAFETY: the pointers point into a mapping this value owns; all shared
// state in it is atomics, written under the arena's locks or protocols.
unsafe impl Send for Pages {}
// SAFETY: as above.
unsafe impl Sync for Pages {}

impl Pages {
    /// Reserves metadata for `max_pages` pages and makes the heap table, the
    /// bitmap and the first `pages` pages' metadata writable.
    pub(crate) fn create(max_pages: usize, pages: usize) -> Result<Pages, Error> {
        let os_page = crate::backing::os_page_size();
        let heaps_len = MAX_SLOTS * size_of::<Heap>();
        let map_off = heaps_len;
        let meta_off = (map_off + max_pages.div_ceil(64) * 8).next_multiple_of(os_page);
        let raw_len = meta_off + max_pages * size_of::<PageMeta>();
        let fail = |errno| Error::Syscall { step: Step::Metadata, errno };
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let raw = unsafe {
            mm::mmap_anonymous(
                core::ptr::null_mut(),
                raw_len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(fail)?;
        let raw = NonNull::new(raw.cast::<u8>()).expect("mmap never returns null on success");
        // SAFETY: offsets are inside the `raw_len` bytes just mapped, and
        // aligned for their types (64 for Heap and PageMeta, 8 for words).
        let (heaps, used_map, meta) = unsafe { (raw.cast(), raw.add(map_off).cast(), raw.add(meta_off).cast()) };
        let p = Pages {
            raw,
            raw_len,
            heaps,
            used_map,
            meta,
            meta_off,
            meta_writable: AtomicUsize::new(0),
            max_pages,
            pages: AtomicUsize::new(0),
            search_hint: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
        };
        // SAFETY: the head of our own fresh mapping, nothing refers to it yet.
        unsafe { mm::mprotect(raw.as_ptr().cast(), meta_off, MprotectFlags::READ | MprotectFlags::WRITE) }
            .map_err(fail)?;
        p.grow(pages)?;
        Ok(p)
    }

    /// Makes metadata for `pages` pages writable and counts them as mapped.
    /// Arena grow lock held.
    pub(crate) fn grow(&self, pages: usize) -> Result<(), Error> {
        assert!(pages <= self.max_pages, "{pages} pages past the reservation's {}", self.max_pages);
        let os_page = crate::backing::os_page_size();
        let want = (pages * size_of::<PageMeta>()).next_multiple_of(os_page).min(self.raw_len - self.meta_off);
        let have = self.meta_writable.load(Ordering::Relaxed);
        if want > have {
            // SAFETY: `have..want` is inside our metadata mapping, past what
            // anyone uses; making it writable changes no contents.
            unsafe {
                mm::mprotect(
                    self.raw.as_ptr().add(self.meta_off + have).cast(),
                    want - have,
                    MprotectFlags::READ | MprotectFlags::WRITE,
                )
            }
            .map_err(|errno| Error::Syscall { step: Step::Metadata, errno })?;
            self.meta_writable.store(want, Ordering::Relaxed);
        }
        self.pages.store(pages, Ordering::Release);
        Ok(())
    }

    /// Mapped pages.
    #[inline]
    pub(crate) fn pages(&self) -> usize {
        self.pages.load(Ordering::Acquire)
    }

    /// The heap of slot `i` (`thread::slot_of` of a token).
    #[inline(always)]
    pub(crate) fn heap(&self, i: usize) -> &Heap {
        assert!(i < MAX_SLOTS);
        // SAFETY: the table has MAX_SLOTS entries, writable since `create`;
        // all-zero bytes are a valid Heap.
        unsafe { self.heaps.add(i).as_ref() }
    }

    /// Metadata of page `p`.
    #[inline(always)]
    pub(crate) fn meta(&self, p: usize) -> &PageMeta {
        // Cheap, and it keeps a bad index from ever reading outside the array.
        assert!(p < self.pages(), "page {p} outside the {} mapped pages", self.pages());
        // SAFETY: `p < pages`, inside the writable part of the array, and
        // all-zero bytes are a valid PageMeta.
        unsafe { self.meta.add(p).as_ref() }
    }

    /// Metadata of page `p`, for `p < pages()` already checked.
    ///
    /// # Safety
    ///
    /// `p` is below [`pages`](Self::pages).
    #[inline(always)]
    pub(crate) unsafe fn meta_unchecked(&self, p: usize) -> &PageMeta {
        // SAFETY: the caller's contract.
        unsafe { self.meta.add(p).as_ref() }
    }

    /// Page index of a `PageMeta` of this array.
    #[inline(always)]
    pub(crate) fn index_of(&self, m: &PageMeta) -> usize {
        (m as *const PageMeta as usize - self.meta.as_ptr() as usize) / size_of::<PageMeta>()
    }

    /// One past the highest page ever handed out.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Acquire)
    }

    fn used_word(&self, w: usize) -> &AtomicU64 {
        assert!(w < self.max_pages.div_ceil(64), "used-page word {w} past the map");
        // SAFETY: `w` is inside the zero-initialised, writable map.
        unsafe { self.used_map.add(w).as_ref() }
    }

    /// Whether page `p` is free in the used-page map.
    pub(crate) fn page_is_free(&self, p: usize) -> bool {
        self.used_word(p / 64).load(Ordering::Relaxed) & (1 << (p % 64)) == 0
    }

    /// Marks `start..start + n` used (raising the high-water mark) or free.
    /// Page lock held.
    fn set_range(&self, start: usize, n: usize, used: bool) {
        if used && start + n > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(start + n, Ordering::Release);
        }
        for p in start..start + n {
            let mask = 1u64 << (p % 64);
            let word = self.used_word(p / 64);
            debug_assert!((word.load(Ordering::Relaxed) & mask != 0) != used, "page {p} taken or freed twice");
            if used {
                word.fetch_or(mask, Ordering::Relaxed);
            } else {
                word.fetch_and(!mask, Ordering::Relaxed);
            }
        }
    }

    /// Finds and takes `n` free pages whose address (from `base`) is a
    /// multiple of `align`; returns the first page index. Page lock held.
    pub(crate) fn take_pages(&self, base: usize, n: usize, align: usize) -> Option<usize> {
        let pages = self.pages();
        if n == 0 || n > pages {
            return None;
        }
        let hint = self.search_hint.load(Ordering::Relaxed).min(pages);
        let found =
            self.find_free(base, hint, pages, n, align).or_else(|| self.find_free(base, 0, hint + n - 1, n, align))?;
        self.set_range(found, n, true);
        self.search_hint.store(found + n, Ordering::Relaxed);
        Some(found)
    }

    /// Returns `start..start + n` to the pool. Page lock held; the pages
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
        if start + n > self.pages() || !(start..start + n).all(|p| self.page_is_free(p)) {
            return false;
        }
        self.set_range(start, n, true);
        true
    }

    /// First-fit search for `n` free pages starting in `from..to`.
    fn find_free(&self, base: usize, from: usize, to: usize, n: usize, align: usize) -> Option<usize> {
        let pages = self.pages();
        let to = to.min(pages);
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
            let addr = base + p * PAGE;
            if addr % align != 0 {
                p += (addr.next_multiple_of(align) - addr) / PAGE;
                continue;
            }
            if p + n > pages {
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

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and the arena that owns this value is
        // being dropped, so nothing refers to it any more.
        let _ = unsafe { mm::munmap(self.raw.as_ptr().cast(), self.raw_len) };
    }
}
