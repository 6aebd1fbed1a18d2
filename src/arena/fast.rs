//! The owner's fast paths, and finding a block from its address.
//!
//! A thread allocates from, and frees into, the slabs it owns with plain
//! loads and stores (`slab`), between two stores to its heap's `busy` flag
//! that let a reclaimer know when it is safe to take a slab (`reclaim`).
//!
//! Three tiers:
//!
//! - `alloc_fast` / `free_fast`: the owner's current slab of the layout's
//!   class, found from the heap alone. These are what `Allocator` and
//!   `GlobalAlloc` inline; they decline (`None`, `false`) rather than report.
//! - `alloc_block` / `free_block_located`: any block, found through the page
//!   table (`locate`), with every misuse reported as a [`Misuse`]; the full
//!   refill that merges other threads' frees (`alloc_chunk`).
//! - Everything else goes to `slow` (slab changes, remote frees, the shared
//!   path) and `runs` (page runs).

use core::alloc::Layout;
use core::ptr::NonNull;

use super::classes::{CHUNK_OF, CLASS_COUNT, CLASS_SIZES, NO_CHUNK, PAGE, SLAB_SPAN, class_for, small_class};
use super::slab::{PageMeta, RUN_HEAD, SLAB_BODY, SLAB_HEAD, bit};
use super::{Block, Misuse, SecretArena, dangling, thread};
use crate::sync::{Ordering, light_fence};
use crate::wipe::wipe_chunk;

impl SecretArena {
    /// The quickest allocation: a chunk of the owner's current slab of the
    /// layout's class, refilled from `freed` only when no other thread freed
    /// into the slab (`refill_own`). `None` sends the caller to
    /// [`alloc_block`](Self::alloc_block), which does everything else.
    /// Small enough to inline into every caller.
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let class = small_class(layout.size(), layout.align())?;
        let t = thread::token();
        let h = self.pages.heap(thread::slot_of(t));
        h.busy.store(1, Ordering::Relaxed);
        light_fence();
        let cur = h.cur[class].load(Ordering::Relaxed);
        if h.token.load(Ordering::Relaxed) == t && !cur.is_null() {
            // SAFETY: heap invariant 2: a slab head in this arena's metadata,
            // which lives as long as `self`.
            let s = unsafe { &*cur };
            let got = match s.take_local() {
                Some(i) => Some(i),
                None => s.refill_own(),
            };
            if let Some(i) = got {
                // Heap invariant 3: `slab[class]` is where `cur`'s chunks
                // start. Read before `busy` drops: after that a reclaimer
                // may give the slab up and clear it.
                let p = h.slab[class].load(Ordering::Relaxed) + i * CLASS_SIZES[class] as usize;
                h.busy.store(0, Ordering::Release);
                // SAFETY: a chunk address inside the mapping, never null.
                let p = unsafe { NonNull::new_unchecked(p as *mut u8) };
                return Some(NonNull::slice_from_raw_parts(p, CLASS_SIZES[class] as usize));
            }
        }
        h.busy.store(0, Ordering::Release);
        None
    }

    /// The quickest free (`free_current`): whether it freed `ptr`; `false`
    /// sends the caller to [`free_block_located`](Self::free_block_located),
    /// which frees anything else and reports misuse. Small enough to
    /// inline into every caller.
    #[inline(always)]
    pub(crate) fn free_fast(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        match small_class(layout.size(), layout.align()) {
            Some(class) => self.free_current(ptr.as_ptr(), class),
            None => false,
        }
    }

    /// Allocates a block for `layout`. `Ok(None)` when the arena is full;
    /// `Err` when a refill found a chunk freed twice (by two threads).
    #[inline]
    pub(crate) fn alloc_block(&self, layout: Layout) -> Result<Option<NonNull<[u8]>>, Misuse> {
        match small_class(layout.size(), layout.align()) {
            Some(class) => self.alloc_in_class(class, layout),
            None => self.alloc_block_other(layout),
        }
    }

    /// Zero-sized, over-aligned and page-run requests.
    #[inline(never)]
    fn alloc_block_other(&self, layout: Layout) -> Result<Option<NonNull<[u8]>>, Misuse> {
        if layout.size() == 0 {
            return Ok(Some(dangling(layout.align())));
        }
        if let Some(class) = class_for(layout.size(), layout.align()) {
            return self.alloc_in_class(class, layout);
        }
        if self.is_inherited() {
            return Err(Misuse::Forked);
        }
        Ok(self.alloc_run(layout))
    }

    /// A chunk of `class` (one that suits `layout`), else one of a larger
    /// class or a run.
    #[inline(always)]
    fn alloc_in_class(&self, class: usize, layout: Layout) -> Result<Option<NonNull<[u8]>>, Misuse> {
        if let Some(p) = self.alloc_chunk(class)? {
            // SAFETY: chunk addresses are inside the mapping, never null.
            let p = unsafe { NonNull::new_unchecked(p as *mut u8) };
            return Ok(Some(NonNull::slice_from_raw_parts(p, CLASS_SIZES[class] as usize)));
        }
        self.alloc_small_fallback(class, layout)
    }

    /// The owner's allocation: the lowest chunk of its current slab's
    /// `local`, refilling `local` once if it is empty.
    #[inline]
    fn alloc_chunk(&self, class: usize) -> Result<Option<usize>, Misuse> {
        let t = thread::token();
        let h = self.pages.heap(thread::slot_of(t));
        h.busy.store(1, Ordering::Relaxed);
        light_fence();
        debug_assert!(class < CLASS_COUNT);
        // SAFETY: `class_for` only gives classes below CLASS_COUNT.
        let cur = unsafe { h.cur.get_unchecked(class) }.load(Ordering::Relaxed);
        if h.token.load(Ordering::Relaxed) == t && !cur.is_null() {
            // SAFETY: `cur` points into this arena's metadata (heap
            // invariant 2), which lives as long as `self`.
            let s = unsafe { &*cur };
            let got = match s.take_local() {
                Some(i) => Ok(Some(i)),
                None => match s.refill() {
                    Ok(true) => Ok(s.take_local()),
                    Ok(false) => Ok(None),
                    Err(i) => Err(i),
                },
            };
            // Heap invariant 3: `slab[class]` is where `cur`'s chunks start.
            // Read before `busy` drops, as in `alloc_fast`.
            let start = h.slab[class].load(Ordering::Relaxed);
            h.busy.store(0, Ordering::Release);
            match got {
                Ok(Some(i)) => return Ok(Some(start + i * CLASS_SIZES[class] as usize)),
                Err(i) => return Err(Misuse::NotAllocated(self.chunk_addr(s, class, i))),
                Ok(None) => {}
            }
        } else {
            h.busy.store(0, Ordering::Release);
        }
        self.alloc_chunk_slow(class, t, true)
    }

    /// Finds the live block that starts at `addr`: a subtraction and a shift
    /// for every segment, since all lie in one reservation.
    #[inline]
    pub(super) fn locate(&self, addr: usize) -> Result<Block<'_>, Misuse> {
        let off = addr.wrapping_sub(self.base);
        if off >= self.pages.pages() * PAGE {
            return Err(Misuse::Foreign(addr));
        }
        let page = off / PAGE;
        // SAFETY: `page < pages()`, checked just above.
        let meta = unsafe { self.pages.meta_unchecked(page) };
        let state = meta.state.load(Ordering::Acquire);
        if state & !0xff == SLAB_HEAD {
            // The common case: the block is in its slab's first page.
            return Self::chunk_at(meta, state, addr, off % PAGE);
        }
        self.locate_slow(meta, page, state, addr)
    }

    #[cold]
    fn locate_slow<'a>(&'a self, meta: &PageMeta, page: usize, state: u32, addr: usize) -> Result<Block<'a>, Misuse> {
        match state {
            SLAB_BODY => {
                let head_page = meta.aux.load(Ordering::Relaxed) as usize;
                if head_page > page {
                    return Err(Misuse::NotAllocated(addr));
                }
                let head = self.pages.meta(head_page);
                let head_state = head.state.load(Ordering::Acquire);
                if head_state & !0xff != SLAB_HEAD {
                    return Err(Misuse::NotAllocated(addr));
                }
                Self::chunk_at(head, head_state, addr, (page - head_page) * PAGE + addr % PAGE)
            }
            RUN_HEAD if addr % PAGE == 0 => {
                let pages = meta.aux.load(Ordering::Relaxed) as usize;
                Ok(Block::Run { page, pages })
            }
            _ => Err(Misuse::NotAllocated(addr)),
        }
    }

    /// The chunk at byte `off` of the slab whose head is `head`, if `off` is
    /// a chunk's start. Whether the chunk is live is the free's to check.
    #[inline]
    fn chunk_at(head: &PageMeta, state: u32, addr: usize, off: usize) -> Result<Block<'_>, Misuse> {
        let class = (state & 0xff) as usize;
        let idx = match CHUNK_OF.get(class).and_then(|t| t.get(off / 16)) {
            Some(&i) if off % 16 == 0 && i != NO_CHUNK => i as usize,
            _ => return Err(Misuse::NotAllocated(addr)),
        };
        Ok(Block::Chunk { head, class, idx })
    }

    /// Wipes and frees the block at `ptr`.
    #[inline]
    pub(crate) fn free_block(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Misuse> {
        if self.free_fast(ptr, layout) {
            return Ok(());
        }
        self.free_block_located(ptr, layout)
    }

    /// The owner's quickest free: `ptr` is a chunk of its current slab of
    /// `class`, the class of the layout it is freed with. Found from the
    /// heap alone, without the page table; the checks are those of
    /// `locate` and `free_chunk`: a chunk's start, inside the slab, and not
    /// free already. Returns whether it freed the chunk. `false` leaves the
    /// free to `free_block_located`: `ptr` is not such a chunk, or the chunk
    /// is free already, a double free that path reports.
    ///
    /// A chunk of that slab freed with a layout of another class, or one
    /// aligned above 16, takes the located path, which checks the layout
    /// against the chunk; here the layout's class *is* the slab's, so the
    /// layout fits the chunk.
    #[inline(always)]
    fn free_current(&self, ptr: *mut u8, class: usize) -> bool {
        let t = thread::token();
        let h = self.pages.heap(thread::slot_of(t));
        h.busy.store(1, Ordering::Relaxed);
        light_fence();
        let off = (ptr as usize).wrapping_sub(h.slab[class].load(Ordering::Relaxed));
        let cur = h.cur[class].load(Ordering::Relaxed);
        // Heap invariants 2 and 3: while the heap is armed with this
        // thread's token, `cur` is a slab this thread owns, and its chunks
        // start at `slab[class]`.
        if off < SLAB_SPAN[class] && off % 16 == 0 && h.token.load(Ordering::Relaxed) == t && !cur.is_null() {
            // SAFETY: `off < SLAB_SPAN[class]`, so `off / 16` is below the
            // granules of the class's slab, at most MAX_SLAB_GRANULES.
            let idx = unsafe { *CHUNK_OF[class].get_unchecked(off / 16) };
            if idx != NO_CHUNK {
                // SAFETY: heap invariant 2: a slab head in this arena's
                // metadata, which lives as long as `self`.
                let s = unsafe { &*cur };
                let (w, mask) = bit(idx as usize);
                let ok = s.owner_free(w, mask, || {
                    // SAFETY: a chunk of this class starts at `ptr`, and it is
                    // not free, so it is the caller's live block, which it
                    // gives up; chunks are 16-aligned multiples of 16.
                    unsafe { wipe_chunk(ptr, CLASS_SIZES[class] as usize) }
                });
                h.busy.store(0, Ordering::Release);
                return ok;
            }
        }
        h.busy.store(0, Ordering::Release);
        false
    }

    /// Frees the block at `ptr`, found through the page table.
    #[inline(never)]
    pub(crate) fn free_block_located(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Misuse> {
        if layout.size() == 0 {
            return Ok(());
        }
        let addr = ptr.as_ptr() as usize;
        let block = self.locate(addr)?;
        if layout.size() > block.len() {
            return Err(Misuse::LayoutTooLarge { ptr: addr, size: layout.size(), block: block.len() });
        }
        match block {
            Block::Chunk { head, class, idx } => self.free_chunk(ptr.as_ptr(), head, class, idx),
            Block::Run { .. } if self.is_inherited() => Err(Misuse::Forked),
            Block::Run { page, pages } => self.free_run(page, pages, addr),
        }
    }

    /// The owner's free: checked against `local | freed`, wiped, put in
    /// `freed`. A slab the thread does not own goes to `free_remote`.
    #[inline]
    fn free_chunk(&self, ptr: *mut u8, head: &PageMeta, class: usize, idx: usize) -> Result<(), Misuse> {
        let (w, mask) = bit(idx);
        let t = thread::token();
        let h = self.pages.heap(thread::slot_of(t));
        h.busy.store(1, Ordering::Relaxed);
        light_fence();
        if head.owner.load(Ordering::Relaxed) == t && h.token.load(Ordering::Relaxed) == t {
            let ok = head.owner_free(w, mask, || {
                // SAFETY: `locate` found a chunk of this class at `ptr`, and
                // it is not free, so it is the caller's live block, which it
                // gives up; chunks are 16-aligned multiples of 16.
                unsafe { wipe_chunk(ptr, CLASS_SIZES[class] as usize) }
            });
            h.busy.store(0, Ordering::Release);
            return if ok { Ok(()) } else { Err(Misuse::NotAllocated(ptr as usize)) };
        }
        h.busy.store(0, Ordering::Release);
        self.free_remote(ptr, head, class, w, mask)
    }
}
