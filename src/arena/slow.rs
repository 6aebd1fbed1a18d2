//! The arena's locked paths: finding another slab when a shard's current one
//! is full, carving and releasing slabs, reclaiming empty slabs when pages
//! run out, page runs, and growth.
//!
//! A shard whose current slab is full looks, in this order, at:
//!
//! 1. the slabs that threads recently freed into while their bitmap word
//!    was full (one hint per shard and class);
//! 2. up to [`SCAN_LIMIT`] slabs of the class list, from where the last scan
//!    stopped, for one with room that no shard owns;
//! 3. a new slab carved from free pages: first reclaiming every empty slab
//!    of every class, then growing the arena, if both are needed;
//! 4. every slab of the class, owned or not: a request fails only when no
//!    slab of its class has room and no pages can be had.
//!
//! So filling an arena costs O(1) list steps per slab, and an allocation
//! fails only after everything was tried.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::classes::{CLASS_SIZES, CLASSES, PAGE};
use super::segment::{self, NO_OWNER, PageMeta, RUN_BODY, RUN_FREEING, RUN_HEAD, SLAB_BODY, SLAB_HEAD, Segment};
use super::{MAX_SEGMENTS, Misuse, SecretArena, SlabList, lock, shard, slice};
use crate::backing::{Mapping, os_page_size};
use crate::error::Error;
use crate::wipe::wipe_chunk;

/// Slabs one bounded scan looks at before carving a new one.
pub(super) const SCAN_LIMIT: usize = 32;

impl SecretArena {
    /// The class had nothing: take a free chunk of a larger class (without
    /// carving or growing for it), else a page run, so that a request fails
    /// only when nothing in the arena can hold it.
    #[cold]
    pub(super) fn alloc_small_fallback(&self, class: usize, layout: Layout) -> Option<NonNull<[u8]>> {
        let shard = shard::current();
        for (bigger, &size) in CLASS_SIZES.iter().enumerate().skip(class + 1) {
            if size as usize % layout.align() == 0 {
                if let Some(p) = self.alloc_chunk_slow(bigger, shard, false) {
                    return Some(slice(p as *mut u8, size as usize));
                }
            }
        }
        self.alloc_run(layout)
    }

    /// Finds the shard a slab with room, in the order of the module docs,
    /// and allocates from it.
    #[cold]
    pub(super) fn alloc_chunk_slow(&self, class: usize, shard: usize, may_carve: bool) -> Option<usize> {
        let info = &CLASSES[class];
        let current = &self.hints[shard].current[class];
        let mut list = lock(&self.classes[class].list);
        loop {
            let cur = current.load(Ordering::Relaxed);
            if !cur.is_null() {
                // SAFETY: hints point into this arena's metadata, which lives
                // as long as `self`.
                let cur = unsafe { &*cur };
                if let Some(p) = cur.try_alloc(class, info) {
                    return Some(p);
                }
                self.disown(cur, class, shard, &mut list);
            }
            let unowned_with_room = |m: &PageMeta| m.aux.load(Ordering::Relaxed) == NO_OWNER && m.has_free();
            let next = self
                .take_recent(class)
                .or_else(|| Self::scan(&mut list, SCAN_LIMIT, unowned_with_room))
                .or_else(|| if may_carve { self.carve(class, &mut list) } else { None })
                .or_else(|| Self::scan(&mut list, usize::MAX, PageMeta::has_free));
            let Some(next) = next else {
                current.store(core::ptr::null_mut(), Ordering::Relaxed);
                return None;
            };
            if next.aux.load(Ordering::Relaxed) == NO_OWNER {
                next.aux.store(shard as u32, Ordering::Relaxed);
            }
            current.store(next as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
        }
    }

    /// `shard` stops owning its full current slab, so frees can release it;
    /// if it emptied meanwhile, releases it here. Class lock held.
    fn disown(&self, cur: &PageMeta, class: usize, shard: usize, list: &mut SlabList) {
        if cur.state.load(Ordering::Relaxed) != SLAB_HEAD | class as u32
            || cur.aux.load(Ordering::Relaxed) != shard as u32
        {
            return;
        }
        // SeqCst, as the loads in `is_empty` and the RMW and loads in
        // `free_chunk`: either that free sees no owner and releases, or this
        // sees the slab empty.
        cur.aux.store(NO_OWNER, Ordering::SeqCst);
        if cur.is_empty(&CLASSES[class]) {
            self.release_locked(cur, class, list);
        }
    }

    /// A "freed while full" hint of any shard that is still an unowned slab
    /// of this class with room. Class lock held, so its class cannot change.
    fn take_recent(&self, class: usize) -> Option<&PageMeta> {
        self.hints.iter().find_map(|h| {
            let p = h.recent[class].load(Ordering::Relaxed);
            if p.is_null() {
                return None;
            }
            h.recent[class].store(core::ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: hints point into this arena's metadata.
            let m = unsafe { &*p };
            (m.state.load(Ordering::Relaxed) == SLAB_HEAD | class as u32
                && m.aux.load(Ordering::Relaxed) == NO_OWNER
                && m.has_free())
            .then_some(m)
        })
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

    /// Carves a new slab for `class` from free pages and links it into the
    /// class list. Class lock held.
    fn carve<'a>(&'a self, class: usize, list: &mut SlabList) -> Option<&'a PageMeta> {
        let info = &CLASSES[class];
        let (seg, page) = self.take_pages(info.pages as usize, PAGE, Some((class, &mut *list)))?;
        let head = seg.meta(page);
        head.base.store(seg.page_addr(page) as usize, Ordering::Relaxed);
        head.aux.store(NO_OWNER, Ordering::Relaxed);
        for body in 1..info.pages as usize {
            let m = seg.meta(page + body);
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
        head.state.store(SLAB_HEAD | class as u32, Ordering::Relaxed);
        // Publishing the bitmap last: whoever acquires it sees state and base.
        for (w, &all_free) in info.all_free.iter().enumerate() {
            head.bits[w].store(all_free, Ordering::Release);
        }
        Some(head)
    }

    /// Gives an empty slab's pages back if no shard owns it. Takes the class
    /// lock and checks again under it.
    #[cold]
    pub(super) fn release_slab(&self, head: &PageMeta, class: usize) {
        let mut list = lock(&self.classes[class].list);
        if head.aux.load(Ordering::Relaxed) == NO_OWNER {
            self.release_locked(head, class, &mut list);
        }
    }

    /// Gives an empty slab of `class` back to the page pool; returns whether
    /// it did. Class lock held (`list`).
    fn release_locked(&self, head: &PageMeta, class: usize, list: &mut SlabList) -> bool {
        let info = &CLASSES[class];
        if head.state.load(Ordering::Relaxed) != SLAB_HEAD | class as u32 || !head.reserve_if_empty(info) {
            return false;
        }
        // No chunk can be taken from it now (no bit set). Unlink it.
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
        head.aux.store(NO_OWNER, Ordering::Relaxed);
        let (seg, page) = self.meta_home(head);
        self.return_pages(seg, page, info.pages as usize);
        true
    }

    /// Releases every empty slab of every class, owned or not, to make room
    /// before growing. Classes whose lock another thread holds are skipped;
    /// `held` is the class (and list) the caller has locked. Returns how many
    /// slabs were released.
    fn reclaim_empty(&self, mut held: Option<(usize, &mut SlabList)>) -> usize {
        let mut released = 0;
        for (class, info) in CLASSES.iter().enumerate() {
            let mut guard;
            let list: &mut SlabList = match held.as_mut() {
                Some((c, l)) if *c == class => l,
                _ => match self.classes[class].list.try_lock() {
                    Ok(g) => {
                        guard = g;
                        &mut guard
                    }
                    Err(_) => continue,
                },
            };
            let mut p = list.head;
            while !p.is_null() {
                // SAFETY: a live list member; its class lock is held.
                let m = unsafe { &*p };
                p = m.next.load(Ordering::Relaxed);
                if m.is_empty(info) && self.release_locked(m, class, list) {
                    released += 1;
                }
            }
        }
        released
    }

    /// Takes `n` pages aligned to `align` from any segment; when none has
    /// room, reclaims empty slabs once, then grows the arena.
    fn take_pages(
        &self,
        n: usize,
        align: usize,
        mut held: Option<(usize, &mut SlabList)>,
    ) -> Option<(&Segment, usize)> {
        let mut reclaimed = false;
        loop {
            let seen = self.segment_count();
            {
                let mut counters = lock(&self.pages);
                for i in 0..seen {
                    let seg = self.segment(i);
                    if let Some(p) = seg.take_pages(n, align) {
                        counters.committed += n;
                        counters.peak = counters.peak.max(counters.committed);
                        return Some((seg, p));
                    }
                }
            }
            if !reclaimed {
                reclaimed = true;
                if self.reclaim_empty(held.as_mut().map(|(c, l)| (*c, &mut **l))) > 0 {
                    continue;
                }
            }
            let slack = align.saturating_sub(os_page_size().max(PAGE));
            if !self.grow(n.checked_mul(PAGE)?.checked_add(slack)?, seen) {
                return None;
            }
        }
    }

    /// Adds a segment of at least `min_bytes`, unless another thread already
    /// did since `seen`. Returns whether it is worth searching again.
    #[cold]
    fn grow(&self, min_bytes: usize, seen: usize) -> bool {
        let _g = lock(&self.grow);
        let count = self.segment_count();
        if count != seen {
            return true;
        }
        let capacity = self.capacity();
        let room = self.max_capacity.saturating_sub(capacity);
        let page = os_page_size();
        let min_bytes = min_bytes.next_multiple_of(page);
        if count == MAX_SEGMENTS || min_bytes > room {
            return false;
        }
        // Grow by a quarter, so locked memory stays within 1.25x of what is
        // used. 32 such steps multiply the arena by ~1,300; past them, steps
        // also spread what is left over the segments left, so the maximum
        // stays reachable.
        let spread = if count >= MAX_SEGMENTS / 2 { room / (MAX_SEGMENTS - count) } else { 0 };
        let mut want = (capacity / 4).max(spread).next_multiple_of(page).max(min_bytes).min(room);
        loop {
            match Mapping::create_as(want, self.backing, self.lineage.fork()).and_then(Segment::create) {
                Ok(seg) => {
                    self.publish(count, seg);
                    return true;
                }
                Err(e) => {
                    *lock(&self.last_error) = Some(e);
                    if matches!(e, Error::MemlockBudget { .. }) && want > min_bytes {
                        want = (want / 2 / page * page).max(min_bytes);
                        continue;
                    }
                    return false;
                }
            }
        }
    }

    /// Serves `layout` as a run of whole pages.
    #[cold]
    pub(super) fn alloc_run(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let pages = layout.size().div_ceil(PAGE);
        let (seg, page) = self.take_pages(pages, layout.align().max(PAGE), None)?;
        let head = seg.meta(page);
        for body in 1..pages {
            let m = seg.meta(page + body);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        head.aux.store(pages as u32, Ordering::Relaxed);
        head.state.store(RUN_HEAD, Ordering::Release);
        Some(slice(seg.page_addr(page), pages * PAGE))
    }

    /// Wipes and frees the run of `pages` pages at `page`.
    pub(super) fn free_run(&self, seg: &Segment, page: usize, pages: usize, addr: usize) -> Result<(), Misuse> {
        let head = seg.meta(page);
        head.state
            .compare_exchange(RUN_HEAD, RUN_FREEING, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Misuse::NotAllocated(addr))?;
        // SAFETY: the run `page..page + pages` is live and being given up;
        // it is page-aligned and a multiple of 16 bytes long.
        unsafe { wipe_chunk(seg.page_addr(page), pages * PAGE) };
        self.return_pages(seg, page, pages);
        Ok(())
    }

    /// Marks `start..start + n` free and gives them back to the page pool.
    /// The pages must already be zero and belong to no block.
    pub(super) fn return_pages(&self, seg: &Segment, start: usize, n: usize) {
        for p in start..start + n {
            seg.meta(p).state.store(segment::FREE, Ordering::Release);
        }
        let mut counters = lock(&self.pages);
        seg.put_pages(start, n);
        counters.committed -= n;
    }
}
