//! Resizing blocks: in place when the block allows it, else by moving and
//! wiping the old block, so no copy of a secret is left behind.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::classes::{PAGE, class_for};
use super::segment::{RUN_BODY, Segment};
use super::{Block, Misuse, SecretArena, dangling, lock, slice};
use crate::wipe::wipe;

impl SecretArena {
    /// Resizes the block at `ptr` from `old` to `new`, in place when it can,
    /// else by moving it and wiping the old block. With `zero`, bytes from
    /// `old.size()` to `new.size()` are zero afterwards. `Ok(None)` means the
    /// arena is full and the old block is untouched.
    ///
    /// # Safety
    ///
    /// `ptr` must be a block of this arena allocated with a layout that
    /// `old` fits, with no live references into it.
    pub(crate) unsafe fn resize_block(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Option<NonNull<[u8]>>, Misuse> {
        if old.size() == 0 {
            return Ok(self.alloc_block(new));
        }
        let addr = ptr.as_ptr() as usize;
        let block = self.locate(addr)?;
        let len = block.len();
        if old.size() > len {
            return Err(Misuse::LayoutTooLarge { ptr: addr, size: old.size(), block: len });
        }
        if new.size() == 0 {
            self.free_block(ptr, old)?;
            return Ok(Some(dangling(new.align())));
        }
        let p = ptr.as_ptr();
        if addr % new.align() == 0 {
            match block {
                Block::Chunk { class, .. } => {
                    let stays = new.size() <= len
                        && (new.size() >= old.size() || class_for(new.size(), new.align()) == Some(class));
                    if stays {
                        if new.size() < old.size() {
                            // SAFETY: `new.size()..len` lies inside the live chunk.
                            unsafe { wipe(p.add(new.size()), len - new.size()) };
                        } else if zero {
                            // SAFETY: `old.size()..new.size()` lies inside the live chunk.
                            unsafe { p.add(old.size()).write_bytes(0, new.size() - old.size()) };
                        }
                        return Ok(Some(slice(p, len)));
                    }
                }
                Block::Run { seg, page, pages } => {
                    let need = new.size().div_ceil(PAGE);
                    if new.size() <= old.size() {
                        // A block small enough for a class moves to a chunk,
                        // unless the arena is full: then the run is cut down
                        // in place rather than fail.
                        if class_for(new.size(), new.align()).is_some() {
                            if let Some(moved) = self.alloc_block(new) {
                                return self.finish_move(ptr, old, new, moved).map(Some);
                            }
                        }
                        self.shrink_run(seg, page, pages, need, new.size());
                        return Ok(Some(slice(p, need * PAGE)));
                    } else if need <= pages || self.extend_run(seg, page, pages, need) {
                        if zero {
                            // SAFETY: inside the (possibly extended) live run.
                            unsafe { p.add(old.size()).write_bytes(0, new.size() - old.size()) };
                        }
                        return Ok(Some(slice(p, need.max(pages) * PAGE)));
                    }
                }
            }
        }
        let Some(moved) = self.alloc_block(new) else {
            return Ok(None);
        };
        self.finish_move(ptr, old, new, moved).map(Some)
    }

    /// Copies what both layouts cover from `ptr` to `moved`, then wipes and
    /// frees `ptr`. The new block is zero beyond the copy (invariant 1).
    fn finish_move(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        moved: NonNull<[u8]>,
    ) -> Result<NonNull<[u8]>, Misuse> {
        // SAFETY: both blocks are live and distinct, and each holds at least
        // `min(old, new)` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr().cast::<u8>(), old.size().min(new.size()))
        };
        self.free_block(ptr, old)?;
        Ok(moved)
    }

    /// Keeps the first `need` pages of a run, wiping from `keep_bytes` on.
    fn shrink_run(&self, seg: &Segment, page: usize, pages: usize, need: usize, keep_bytes: usize) {
        // SAFETY: `keep_bytes..pages * PAGE` is inside the live run.
        unsafe { wipe(seg.page_addr(page).add(keep_bytes), pages * PAGE - keep_bytes) };
        if need == pages {
            return;
        }
        seg.meta(page).aux.store(need as u32, Ordering::Relaxed);
        self.return_pages(seg, page + need, pages - need);
    }

    /// Grows a run to `need` pages if the pages after it are free.
    fn extend_run(&self, seg: &Segment, page: usize, pages: usize, need: usize) -> bool {
        {
            let mut counters = lock(&self.pages);
            if !seg.take_exact(page + pages, need - pages) {
                return false;
            }
            counters.committed += need - pages;
            counters.peak = counters.peak.max(counters.committed);
        }
        for p in page + pages..page + need {
            let m = seg.meta(p);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        seg.meta(page).aux.store(need as u32, Ordering::Relaxed);
        true
    }
}
