//! Chunk bitmaps: the lock-free fast path.
//!
//! A slab's head [`PageMeta`] holds one bit per chunk (1 = free).
//! Allocation finds a 1 bit and clears it with a compare-and-swap; freeing
//! sets it with `fetch_or`, and a bit that was already set is a double free.
//! All-zero metadata (a fresh anonymous mapping) thus means "nothing to
//! take", so a segment's metadata needs no initialisation. No lock is taken, so threads on different slabs never meet, and two
//! threads on one slab meet only on the bitmap word.
//!
//! A thread may hold a stale pointer to a head that has since been released
//! and re-carved for another class. That is harmless: a released head's bits
//! are all zero (nothing to take), and after a successful CAS the allocator
//! re-reads the head's `state`. The CAS acquires the `Release` store that
//! published the bitmap, which was made after `state`, so a mismatch is seen
//! and the bit is given back.

use core::sync::atomic::Ordering;

use super::classes::{ClassInfo, WORDS};
use super::segment::{PageMeta, SLAB_HEAD};

impl PageMeta {
    /// Takes a free chunk of `class` from this slab; returns its address.
    #[inline]
    pub(crate) fn try_alloc(&self, class: usize, info: &ClassInfo) -> Option<usize> {
        for (w, word) in self.bits.iter().enumerate() {
            let mut v = word.load(Ordering::Relaxed);
            while v != 0 {
                let bit = v.trailing_zeros();
                let mask = 1u64 << bit;
                match word.compare_exchange_weak(v, v & !mask, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        if self.state.load(Ordering::Relaxed) != SLAB_HEAD | class as u32 {
                            // A stale pointer to a slab of another class: give it back.
                            word.fetch_or(mask, Ordering::Release);
                            return None;
                        }
                        let idx = w * 64 + bit as usize;
                        debug_assert!(idx < info.chunks as usize, "chunk {idx} past slab end {}", info.chunks);
                        return Some(self.base.load(Ordering::Relaxed) + idx * info.size as usize);
                    }
                    Err(now) => v = now,
                }
            }
        }
        None
    }

    /// Whether any chunk is free.
    pub(crate) fn has_free(&self) -> bool {
        self.bits.iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// Whether every chunk is free. SeqCst loads: part of the protocol
    /// that keeps an emptied slab from being missed (see `free_chunk`).
    pub(crate) fn is_empty(&self, info: &ClassInfo) -> bool {
        self.bits.iter().zip(&info.all_free).all(|(w, &f)| w.load(Ordering::SeqCst) == f)
    }

    /// Chunks handed out.
    pub(crate) fn used_chunks(&self, info: &ClassInfo) -> usize {
        self.bits.iter().zip(&info.all_free).map(|(w, &f)| (f & !w.load(Ordering::Relaxed)).count_ones() as usize).sum()
    }

    /// Turns an empty slab's bitmap to all zeros, so no one can allocate from
    /// it any more. Fails, changing nothing, if any chunk is in use.
    pub(crate) fn reserve_if_empty(&self, info: &ClassInfo) -> bool {
        for w in 0..WORDS {
            if self.bits[w].compare_exchange(info.all_free[w], 0, Ordering::Acquire, Ordering::Relaxed).is_err() {
                for undo in 0..w {
                    self.bits[undo].store(info.all_free[undo], Ordering::Release);
                }
                return false;
            }
        }
        true
    }
}
