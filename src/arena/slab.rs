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

use super::classes::{ClassInfo, WORDS};
use super::segment::{PageMeta, SLAB_HEAD};
use crate::sync::Ordering;

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

/// Loom model checks of the bitmap protocol. Run them with
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
///
/// The free path lives in `SecretArena::free_chunk` and a slab is published
/// by `SecretArena::carve`; the tests repeat their atomic steps (same order,
/// same orderings) around the real `try_alloc` and `reserve_if_empty`.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    use super::super::classes::{CLASSES, WORDS};
    use super::super::segment::{FREE, PageMeta, SLAB_HEAD};
    use crate::sync::Ordering;

    /// 2048-byte chunks: two per slab, in bitmap word 0.
    const C2048: usize = 23;
    /// 16-byte chunks: 256 per slab, all four bitmap words.
    const C16: usize = 0;

    fn slab(class: usize, bits: [u64; WORDS]) -> Arc<PageMeta> {
        Arc::new(PageMeta::for_loom(SLAB_HEAD | class as u32, 0, bits))
    }

    fn bits(m: &PageMeta) -> [u64; WORDS] {
        core::array::from_fn(|w| m.bits[w].load(Ordering::Relaxed))
    }

    /// Explores every interleaving: these models are small enough to need
    /// no preemption bound (all four take under a second in release).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        loom::model(f);
    }

    #[test]
    fn loom_concurrent_allocs_never_share_a_chunk() {
        model(|| {
            let info = &CLASSES[C2048];
            let m = slab(C2048, info.all_free);
            let t = {
                let m = m.clone();
                thread::spawn(move || m.try_alloc(C2048, &CLASSES[C2048]))
            };
            let u = {
                let m = m.clone();
                thread::spawn(move || m.try_alloc(C2048, &CLASSES[C2048]))
            };
            let mine = m.try_alloc(C2048, info);
            let (a, b) = (t.join().unwrap(), u.join().unwrap());
            let got: Vec<usize> = [a, b, mine].into_iter().flatten().collect();
            assert_eq!(got.len(), 2, "two chunks, three takers: exactly two win ({a:?} {b:?} {mine:?})");
            assert_ne!(got[0], got[1], "one chunk handed to two threads");
            assert_eq!(bits(&m)[0], 0, "both chunks marked taken");
        });
    }

    #[test]
    fn loom_a_freed_chunk_reaches_its_next_owner_wiped() {
        model(|| {
            let info = &CLASSES[C2048];
            // Both chunks in use; chunk 0 holds a secret.
            let m = slab(C2048, [0; WORDS]);
            let chunk0 = Arc::new(UnsafeCell::new(0x5EC2_E75E_C2E7_u64));
            let freer = {
                let (m, chunk0) = (m.clone(), chunk0.clone());
                thread::spawn(move || {
                    // SecretArena::free_chunk: wipe, then set the free bit (SeqCst).
                    // SAFETY: chunk 0 is this thread's until its bit is set.
                    chunk0.with_mut(|p| unsafe { *p = 0 });
                    let old = m.bits[0].fetch_or(1, Ordering::SeqCst);
                    assert_eq!(old & 1, 0, "chunk 0 was live");
                })
            };
            if let Some(addr) = m.try_alloc(C2048, info) {
                assert_eq!(addr, 0, "only chunk 0 is ever free");
                // Loom fails here if this read is not ordered after the wipe.
                // SAFETY: we own chunk 0 now that try_alloc cleared its bit.
                let v = chunk0.with(|p| unsafe { *p });
                assert_eq!(v, 0, "the next owner saw the previous owner's secret");
            }
            freer.join().unwrap();
        });
    }

    #[test]
    fn loom_release_and_alloc_never_both_win() {
        model(|| {
            let info = &CLASSES[C16];
            let m = slab(C16, info.all_free);
            let releaser = {
                let m = m.clone();
                thread::spawn(move || m.reserve_if_empty(&CLASSES[C16]))
            };
            let got = m.try_alloc(C16, info);
            let released = releaser.join().unwrap();
            assert!(released != got.is_some(), "exactly one must win: released {released}, allocated {got:?}");
            let now = bits(&m);
            if released {
                assert_eq!(now, [0; WORDS], "a released slab has no usable bit");
            } else {
                let idx = got.unwrap() / 16;
                let mut want = info.all_free;
                want[idx / 64] &= !(1 << (idx % 64));
                assert_eq!(now, want, "a failed release must undo every word it reserved");
            }
        });
    }

    #[test]
    fn loom_a_stale_pointer_never_allocates_from_a_recarved_slab() {
        model(|| {
            // A 16-byte slab that was just reserved for release (all zeros),
            // and a thread that still has it as its 16-byte hint.
            let m = Arc::new(PageMeta::for_loom(SLAB_HEAD | C16 as u32, 0, [0; WORDS]));
            let carver = {
                let m = m.clone();
                thread::spawn(move || {
                    // SecretArena::release_slab: the pages become free.
                    m.state.store(FREE, Ordering::Release);
                    // SecretArena::carve, for 2048-byte chunks: state (Relaxed),
                    // then the bitmap (Release).
                    m.state.store(SLAB_HEAD | C2048 as u32, Ordering::Relaxed);
                    for (w, &e) in CLASSES[C2048].all_free.iter().enumerate() {
                        m.bits[w].store(e, Ordering::Release);
                    }
                })
            };
            let stale = m.try_alloc(C16, &CLASSES[C16]);
            carver.join().unwrap();
            assert_eq!(stale, None, "a stale hint took a chunk of a slab re-carved for another class");
            assert_eq!(bits(&m), CLASSES[C2048].all_free, "the stale taker did not give its bit back");
        });
    }
}
