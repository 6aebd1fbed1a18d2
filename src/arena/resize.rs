//! Resizing blocks: in place when the block allows it, else by moving and
//! wiping the old block, so no copy of a secret is left behind.

use crate::sync::Ordering;
use core::alloc::Layout;
use core::ptr::NonNull;

use super::classes::{PAGE, class_for};
use super::slab::bit;
use super::{Block, Misuse, SecretArena, dangling, slice};
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
            return self.alloc_block(new);
        }
        let addr = ptr.as_ptr() as usize;
        let block = self.locate(addr)?;
        if let Block::Chunk { head, idx, .. } = block {
            // A freed chunk is no block to resize (exact for the owner's
            // own chunks; racy, like any misuse, for others').
            let (w, mask) = bit(idx);
            if head.free_mask(w) & mask != 0 {
                return Err(Misuse::NotAllocated(addr));
            }
        }
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
                Block::Run { page, pages } => {
                    let need = new.size().div_ceil(PAGE);
                    if new.size() <= old.size() {
                        // A block small enough for a class moves to a chunk,
                        // unless the arena is full: then the run is cut down
                        // in place rather than fail.
                        if class_for(new.size(), new.align()).is_some() {
                            if let Some(moved) = self.alloc_block(new)? {
                                return self.finish_move(ptr, old, new, moved).map(Some);
                            }
                        }
                        self.shrink_run(page, pages, need, new.size());
                        return Ok(Some(slice(p, need * PAGE)));
                    } else if need <= pages || self.extend_run(page, pages, need) {
                        if zero {
                            // SAFETY: inside the (possibly extended) live run.
                            unsafe { p.add(old.size()).write_bytes(0, new.size() - old.size()) };
                        }
                        return Ok(Some(slice(p, need.max(pages) * PAGE)));
                    }
                }
            }
        }
        let Some(moved) = self.alloc_block(new)? else {
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
    fn shrink_run(&self, page: usize, pages: usize, need: usize, keep_bytes: usize) {
        // SAFETY: `keep_bytes..pages * PAGE` is inside the live run.
        unsafe { wipe(self.page_addr(page).add(keep_bytes), pages * PAGE - keep_bytes) };
        if need == pages {
            return;
        }
        self.pages.meta(page).aux.store(need as u32, Ordering::Relaxed);
        self.return_pages(page + need, pages - need);
    }
}
