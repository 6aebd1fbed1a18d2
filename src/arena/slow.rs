//! The arena's locked slab paths: a thread whose current slab is exhausted
//! gives it up and takes another; remote frees; releasing slabs; the shared
//! path of threads without a heap.
//!
//! A thread whose slab is exhausted (nothing in `local`, `freed` or `bits`)
//! takes its class's lock, disowns the slab, and looks, in this order, at:
//!
//! 1. up to [`SCAN_LIMIT`] slabs of the class list, from where the last scan
//!    stopped, for an unowned one with room;
//! 2. a new slab carved from free pages: first reclaiming empty slabs
//!    (`reclaim`), then growing the arena, if both are needed;
//! 3. every slab of the class: an unowned one with room is taken, else a
//!    chunk other threads freed into an owned slab's `bits` is taken alone.
//!
//! So filling an arena costs O(1) list steps per slab, and an allocation
//! fails only when no slab of the class has a chunk free outside another
//! thread's private bitmaps, and no page can be had.

use core::alloc::Layout;
use core::ptr::NonNull;

use super::classes::{CLASS_SIZES, CLASSES, PAGE};
use super::heap::Heap;
use super::slab::{PageMeta, SLAB_BODY, SLAB_HEAD, UNOWNED};
use super::{Misuse, SecretArena, SlabList, lock, slice, thread};
use crate::sync::Ordering;
use crate::wipe::wipe_chunk;

/// Slabs one bounded scan looks at before carving a new one.
pub(super) const SCAN_LIMIT: usize = 32;
/// Most slow paths that skip the bounded scan after fruitless ones.
pub(super) const MAX_SCAN_SKIP: u32 = 64;

impl SecretArena {
    /// The class had nothing: take a free chunk of a larger class (without
    /// carving or growing for it), else a page run, so that a request fails
    /// only when nothing in the arena can hold it.
    #[cold]
    pub(super) fn alloc_small_fallback(&self, class: usize, layout: Layout) -> Result<Option<NonNull<[u8]>>, Misuse> {
        let t = thread::token();
        for (bigger, &size) in CLASS_SIZES.iter().enumerate().skip(class + 1) {
            if size as usize % layout.align() == 0 {
                if let Some(p) = self.alloc_chunk_slow(bigger, t, false)? {
                    return Ok(Some(slice(p as *mut u8, size as usize)));
                }
            }
        }
        Ok(self.alloc_run(layout))
    }

    /// The owner's slow path: refills or gives up its current slab, then
    /// takes another, in the order of the module docs. Threads without a
    /// heap go to the shared path.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_chunk_slow(&self, class: usize, t: u64, may_carve: bool) -> Result<Option<usize>, Misuse> {
        // Before any lock: in a fork child, locks of an inherited arena may
        // be held by threads that do not exist here.
        if self.is_inherited() {
            return Err(Misuse::Forked);
        }
        let t = if t == thread::UNASSIGNED { thread::assign() } else { t };
        if !thread::is_real(t) {
            return Ok(self.alloc_shared(class, may_carve));
        }
        let slot = thread::slot_of(t);
        let h = self.pages.heap(slot);
        let mut list = lock(&self.classes[class].list);
        if h.token.load(Ordering::Relaxed) != t {
            self.arm(h, slot, t);
        }
        let cur = h.cur[class].load(Ordering::Relaxed);
        if !cur.is_null() {
            // SAFETY: heap invariant 2: a slab head in this arena's metadata.
            let s = unsafe { &*cur };
            if s.owner.load(Ordering::Relaxed) == t {
                // Under the class lock no reclaimer can take it; this thread
                // is not in its fast path.
                match s.refill() {
                    Ok(true) => return Ok(s.take_local().map(|i| self.chunk_addr(s, class, i))),
                    Ok(false) => {}
                    Err(i) => return Err(Misuse::NotAllocated(self.chunk_addr(s, class, i))),
                }
            }
            // Exhausted, or left over from this slot's dead thread.
            h.set_cur(class, None);
            self.disown_locked(s, class, &mut list)?;
        }
        let unowned_with_room = |m: &PageMeta| m.owner.load(Ordering::Relaxed) == UNOWNED && m.bits_nonempty();
        let next = self
            .bounded_scan(class, &mut list)
            .or_else(|| if may_carve { self.carve(class, &mut list) } else { None })
            .or_else(|| Self::scan(&mut list, usize::MAX, unowned_with_room));
        let Some(next) = next else {
            // Last resort: a chunk another thread freed into an owned slab.
            let any = Self::scan(&mut list, usize::MAX, PageMeta::bits_nonempty);
            return Ok(any.and_then(|m| m.take_shared().map(|i| self.chunk_addr(m, class, i))));
        };
        next.take_ownership(t);
        h.set_cur(class, Some((next, self.chunk_addr(next, class, 0))));
        Ok(next.take_local().map(|i| self.chunk_addr(next, class, i)))
    }

    /// Arms this thread's heap: its token becomes the heap's. Class lock held
    /// (any class); waits for a reclaimer that holds the heap.
    fn arm(&self, h: &Heap, slot: usize, t: u64) {
        h.hold();
        // The current slabs of this slot's dead thread become this thread's
        // (heap invariant 2): the dead thread never touches them again, and a
        // reclaimer needs the flag held here, so nobody else reads their
        // `local` or `freed`. Other threads compare `owner` with their own
        // token or with UNOWNED, and neither answer changes.
        for cur in &h.cur {
            // SAFETY: heap invariant 2: a slab head in this arena's metadata.
            if let Some(s) = unsafe { cur.load(Ordering::Relaxed).as_ref() } {
                s.owner.store(t, Ordering::Relaxed);
            }
        }
        h.token.store(t, Ordering::Relaxed);
        h.unhold();
        let (w, mask) = (slot / 64, 1u64 << (slot % 64));
        if self.armed[w].load(Ordering::Relaxed) & mask == 0 {
            self.armed[w].fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// A thread without a heap (all slots taken, or past its exit
    /// destructor) takes one chunk under the class lock.
    #[cold]
    fn alloc_shared(&self, class: usize, may_carve: bool) -> Option<usize> {
        let mut list = lock(&self.classes[class].list);
        let m = self
            .bounded_scan(class, &mut list)
            .or_else(|| if may_carve { self.carve(class, &mut list) } else { None })
            .or_else(|| Self::scan(&mut list, usize::MAX, PageMeta::bits_nonempty))?;
        m.take_shared().map(|i| self.chunk_addr(m, class, i))
    }

    /// Frees a chunk of a slab this thread does not own (or not through its
    /// heap): checked, wiped, then put in `bits`; releases the slab if that
    /// made an unowned slab entirely free.
    #[inline(never)]
    pub(super) fn free_remote(
        &self,
        ptr: *mut u8,
        head: &PageMeta,
        class: usize,
        w: usize,
        mask: u64,
    ) -> Result<(), Misuse> {
        if self.is_inherited() {
            return Err(Misuse::Forked);
        }
        // Free in any bitmap: a double free (the owner's bitmaps are read
        // racily; a free racing the owner's refill is caught at its next).
        if head.free_mask(w) & mask != 0 {
            return Err(Misuse::NotAllocated(ptr as usize));
        }
        let info = &CLASSES[class];
        // SAFETY: `locate` found a chunk of this class at `ptr`, not free, so
        // it is the caller's live block; chunks are 16-aligned multiples of 16.
        unsafe { wipe_chunk(ptr, info.size as usize) };
        match head.remote_free(w, mask, info) {
            Err(()) => Err(Misuse::NotAllocated(ptr as usize)),
            Ok(false) => {
                // An unowned slab has room now: let the next slow path of
                // this class look for it, even while backing off.
                let room = &self.classes[class].room;
                if head.owner.load(Ordering::Relaxed) == UNOWNED && !room.load(Ordering::Relaxed) {
                    room.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Ok(true) => {
                let mut list = lock(&self.classes[class].list);
                if head.state.load(Ordering::Relaxed) == SLAB_HEAD | class as u32
                    && head.owner.load(Ordering::Relaxed) == UNOWNED
                    && head.bits_full(info)
                {
                    self.release_locked(head, class, &mut list);
                }
                Ok(())
            }
        }
    }

    /// Gives a slab up (class lock held; its owner is not in its fast path)
    /// and releases it if it is entirely free.
    pub(super) fn disown_locked(&self, s: &PageMeta, class: usize, list: &mut SlabList) -> Result<(), Misuse> {
        let info = &CLASSES[class];
        let r = s.disown(info);
        if s.bits_full(info) {
            self.release_locked(s, class, list);
        } else if s.bits_nonempty() {
            // An unowned slab with room: worth scanning for again.
            list.scan_skip = 0;
            list.scan_backoff = 1;
        }
        r.map(drop).map_err(|i| Misuse::NotAllocated(self.chunk_addr(s, class, i)))
    }

    /// The first look of a slow path: up to [`SCAN_LIMIT`] slabs for an
    /// unowned one with room, unless recent scans found none and no slab
    /// got room since, by a disown or a free into an unowned slab
    /// (`SlabList::scan_skip`, `ClassState::room`). Class lock held.
    fn bounded_scan<'a>(&self, class: usize, list: &mut SlabList) -> Option<&'a PageMeta> {
        let room = &self.classes[class].room;
        if room.load(Ordering::Relaxed) {
            room.store(false, Ordering::Relaxed);
            list.scan_skip = 0;
            list.scan_backoff = 1;
        }
        if list.scan_skip > 0 {
            list.scan_skip -= 1;
            return None;
        }
        let unowned_with_room = |m: &PageMeta| m.owner.load(Ordering::Relaxed) == UNOWNED && m.bits_nonempty();
        let found = Self::scan(list, SCAN_LIMIT, unowned_with_room);
        if found.is_some() {
            list.scan_backoff = 1;
        } else if list.count > 0 {
            list.scan_skip = list.scan_backoff;
            list.scan_backoff = (list.scan_backoff * 2).min(MAX_SCAN_SKIP);
        }
        found
    }

    /// Looks at up to `limit` slabs of `list`, starting at its rover and
    /// wrapping around, for one that satisfies `pred`. Class lock held.
    fn scan<'a>(list: &mut SlabList, limit: usize, pred: impl Fn(&PageMeta) -> bool) -> Option<&'a PageMeta> {
        let mut p = if list.rover.is_null() { list.head } else { list.rover };
        for _ in 0..list.count.min(limit) {
            if p.is_null() {
                p = list.head;
            }
            // SAFETY: list members are live slab heads in this arena's
            // metadata; the class lock is held, so links are stable.
            let m = unsafe { &*p };
            p = m.next.load(Ordering::Relaxed);
            if pred(m) {
                list.rover = p;
                return Some(m);
            }
        }
        list.rover = p;
        None
    }

    /// Carves a new, unowned slab of `class` and links it in. Class lock held.
    fn carve<'a>(&'a self, class: usize, list: &mut SlabList) -> Option<&'a PageMeta> {
        let info = &CLASSES[class];
        let page = self.take_pages(info.pages as usize, PAGE, Some((class, &mut *list)))?;
        let head = self.pages.meta(page);
        for body in 1..info.pages as usize {
            let m = self.pages.meta(page + body);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(SLAB_BODY, Ordering::Release);
        }
        head.prev.store(core::ptr::null_mut(), Ordering::Relaxed);
        head.next.store(list.head, Ordering::Relaxed);
        if !list.head.is_null() {
            // SAFETY: the old list head is a live slab head; class lock held.
            unsafe { &*list.head }.prev.store(head as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
        }
        list.head = head as *const PageMeta as *mut PageMeta;
        list.count += 1;
        head.init_slab(class, info);
        Some(head)
    }

    /// Gives an unowned, entirely free slab of `class` back to the page
    /// pool. Class lock held (`list`). Its `bits` stay full: a racing double
    /// free of one of its chunks still finds the chunk free.
    pub(super) fn release_locked(&self, head: &PageMeta, class: usize, list: &mut SlabList) {
        debug_assert_eq!(head.owner.load(Ordering::Relaxed), UNOWNED);
        debug_assert!(head.bits_full(&CLASSES[class]));
        if head.state.load(Ordering::Relaxed) != SLAB_HEAD | class as u32 {
            return;
        }
        let me = head as *const PageMeta as *mut PageMeta;
        let (prev, next) = (head.prev.load(Ordering::Relaxed), head.next.load(Ordering::Relaxed));
        if prev.is_null() {
            list.head = next;
        } else {
            // SAFETY: a live list member; class lock held.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
        if list.rover == me {
            list.rover = next;
        }
        list.count -= 1;
        self.return_pages(self.pages.index_of(head), CLASSES[class].pages as usize);
    }
}
