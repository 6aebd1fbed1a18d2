//! Pages: taking and returning them, page runs, and growth.

use core::alloc::Layout;
use core::ptr::NonNull;

use super::classes::PAGE;
use super::slab::{FREE, RUN_BODY, RUN_FREEING, RUN_HEAD};
use super::{MAX_SEGMENTS, Misuse, SecretArena, SlabList, lock, slice};
use crate::backing::os_page_size;
use crate::error::Error;
use crate::sync::Ordering;
use crate::wipe::wipe_chunk;

impl SecretArena {
    /// Takes `n` pages aligned to `align`; when none are free, reclaims
    /// empty slabs once, then grows the arena. `held` is the class lock the
    /// caller holds, if any. Returns the first page.
    pub(super) fn take_pages(&self, n: usize, align: usize, mut held: Option<(usize, &mut SlabList)>) -> Option<usize> {
        let (mut reclaimed, mut forced) = (false, false);
        loop {
            let seen = self.segment_count();
            {
                let mut counters = lock(&self.page_lock);
                if let Some(p) = self.pages.take_pages(self.base, n, align) {
                    counters.committed += n;
                    counters.peak = counters.peak.max(counters.committed);
                    // purge() wipes up to here.
                    self.mapping.raise_high_water(self.pages.high_water() * PAGE);
                    return Some(p);
                }
            }
            if !reclaimed {
                reclaimed = true;
                if self.reclaim(held.as_mut().map(|(c, l)| (*c, &mut **l)), false) > 0 {
                    continue;
                }
            }
            let slack = align.saturating_sub(os_page_size().max(PAGE));
            if !self.grow(n.checked_mul(PAGE)?.checked_add(slack)?, seen) {
                // Before failing: idle threads' empty slabs too, whatever
                // the rate limit says.
                if !forced {
                    forced = true;
                    if self.reclaim(held.as_mut().map(|(c, l)| (*c, &mut **l)), true) > 0 {
                        continue;
                    }
                }
                return None;
            }
        }
    }

    /// Maps the next part of the reservation, of at least `min_bytes`,
    /// unless another thread grew the arena since `seen`. Returns whether it
    /// is worth searching again.
    #[cold]
    fn grow(&self, min_bytes: usize, seen: usize) -> bool {
        let _g = lock(&self.grow);
        let count = self.segment_count();
        if count != seen {
            return true;
        }
        let capacity = self.mapping.len();
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
            match self.mapping.grow(capacity + want) {
                Ok(()) => break,
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
        if let Err(e) = self.pages.grow(self.mapping.len() / PAGE) {
            *lock(&self.last_error) = Some(e);
            return false;
        }
        self.seg_starts[count].store(capacity / PAGE, Ordering::Relaxed);
        self.segment_count.store(count + 1, Ordering::Release);
        true
    }

    /// Serves `layout` as a run of whole pages.
    #[cold]
    pub(super) fn alloc_run(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let pages = layout.size().div_ceil(PAGE);
        let page = self.take_pages(pages, layout.align().max(PAGE), None)?;
        let head = self.pages.meta(page);
        for body in 1..pages {
            let m = self.pages.meta(page + body);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        head.aux.store(pages as u32, Ordering::Relaxed);
        head.state.store(RUN_HEAD, Ordering::Release);
        Some(slice(self.page_addr(page), pages * PAGE))
    }

    /// Wipes and frees the run of `pages` pages at `page`.
    pub(super) fn free_run(&self, page: usize, pages: usize, addr: usize) -> Result<(), Misuse> {
        let head = self.pages.meta(page);
        head.state
            .compare_exchange(RUN_HEAD, RUN_FREEING, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Misuse::NotAllocated(addr))?;
        // SAFETY: the run `page..page + pages` is live and being given up;
        // it is page-aligned and a multiple of 16 bytes long.
        unsafe { wipe_chunk(self.page_addr(page), pages * PAGE) };
        self.return_pages(page, pages);
        Ok(())
    }

    /// Marks `start..start + n` free and gives them back to the page pool.
    /// The pages must already be zero and belong to no block.
    pub(super) fn return_pages(&self, start: usize, n: usize) {
        for p in start..start + n {
            self.pages.meta(p).state.store(FREE, Ordering::Release);
        }
        let mut counters = lock(&self.page_lock);
        self.pages.put_pages(start, n);
        counters.committed -= n;
    }

    /// Grows a run to `need` pages if the pages after it are free.
    pub(super) fn extend_run(&self, page: usize, pages: usize, need: usize) -> bool {
        {
            let mut counters = lock(&self.page_lock);
            if !self.pages.take_exact(page + pages, need - pages) {
                return false;
            }
            counters.committed += need - pages;
            counters.peak = counters.peak.max(counters.committed);
            self.mapping.raise_high_water(self.pages.high_water() * PAGE);
        }
        for p in page + pages..page + need {
            let m = self.pages.meta(p);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        self.pages.meta(page).aux.store(need as u32, Ordering::Relaxed);
        true
    }
}
