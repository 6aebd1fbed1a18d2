//! Loom model checks of the slab and heap protocols. Run them with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom`.
//!
//! They call the real `PageMeta` and `Heap` operations; the arena-level
//! steps around them (the class lock, the release, the owner's fast-path
//! `busy` stores) are repeated here in the same order with the same
//! orderings as in `fast`, `slow` and `reclaim`. A class lock is a loom
//! `Mutex`; `membarrier` is a `fence(SeqCst)` (see `crate::sync`).

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::super::classes::{CLASSES, ClassInfo, WORDS};
use super::super::heap::{DISARMED, Heap};
use super::{FREE, PageMeta, SLAB_HEAD, UNOWNED};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, heavy_fence, light_fence};

/// 2048-byte chunks: two per slab, in bitmap word 0.
const C2048: usize = 23;
const T: u64 = 5 << 10 | 5;

fn info() -> &'static ClassInfo {
    &CLASSES[C2048]
}

/// A slab head of the 2048-byte class with the given owner and bitmaps.
fn slab(owner: u64, local: u64, freed: u64, bits: u64) -> PageMeta {
    let w = |v: u64| core::array::from_fn::<_, WORDS, _>(|i| AtomicU64::new(if i == 0 { v } else { 0 }));
    PageMeta {
        state: AtomicU32::new(SLAB_HEAD | C2048 as u32),
        aux: AtomicU32::new(0),
        owner: AtomicU64::new(owner),
        local: w(local),
        prev: AtomicPtr::new(core::ptr::null_mut()),
        next: AtomicPtr::new(core::ptr::null_mut()),
        freed: w(freed),
        bits: w(bits),
    }
}

fn heap(token: u64, cur: &PageMeta) -> Heap {
    let h = Heap {
        token: AtomicU64::new(token),
        busy: AtomicU32::new(0),
        revoking: AtomicU32::new(0),
        cur: core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut())),
        slab: core::array::from_fn(|_| AtomicUsize::new(0)),
    };
    h.cur[C2048].store(cur as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
    h
}

/// `SecretArena::release_locked` as far as the protocol goes: under the
/// class lock, an unowned slab whose `bits` are full stops being a slab.
/// Returns whether this call released it.
fn release_if_due(m: &PageMeta, lock: &Mutex<()>) -> bool {
    let _g = lock.lock().unwrap();
    if m.state.load(Ordering::Relaxed) == SLAB_HEAD | C2048 as u32
        && m.owner.load(Ordering::Relaxed) == UNOWNED
        && m.bits_full(info())
    {
        m.state.store(FREE, Ordering::Release);
        return true;
    }
    false
}

/// A chunk freed by another thread reaches the owner's next allocation
/// wiped: the remote wipe happens before the owner's read.
#[test]
fn loom_a_remotely_freed_chunk_reaches_the_owner_wiped() {
    loom::model(|| {
        // Owned by T, both chunks in use; chunk 0 (held remotely) has a secret.
        let m = Arc::new(slab(T, 0, 0, 0));
        let chunk0 = Arc::new(UnsafeCell::new(0x5EC2_E75E_u64));
        let remote = {
            let (m, chunk0) = (m.clone(), chunk0.clone());
            thread::spawn(move || {
                // SAFETY: chunk 0 is this thread's until its bit is set.
                chunk0.with_mut(|p| unsafe { *p = 0 });
                assert_eq!(m.remote_free(0, 1, info()), Ok(false), "owned slabs are never released by a free");
            })
        };
        if m.refill() == Ok(true) {
            assert_eq!(m.take_local(), Some(0), "only chunk 0 is ever free");
            // SAFETY: the owner took chunk 0 from its bitmap.
            let v = chunk0.with(|p| unsafe { *p });
            assert_eq!(v, 0, "the owner saw the previous holder's secret");
        }
        remote.join().unwrap();
    });
}

/// Issue 12 point 7: two frees of one chunk race, and the first empties an
/// unowned slab, which is released. The second must still be reported:
/// a release leaves `bits` full, so its `fetch_or` finds the bit set.
/// (With a release that zeroes `bits`, as before, this model fails.)
#[test]
fn loom_a_double_free_racing_the_release_is_caught() {
    loom::model(|| {
        // Unowned; chunk 0 free, chunk 1 in use and about to be freed twice.
        let m = Arc::new(slab(UNOWNED, 0, 0, 1));
        let lock = Arc::new(Mutex::new(()));
        let free1 = |m: Arc<PageMeta>, lock: Arc<Mutex<()>>| {
            move || match m.remote_free(0, 2, info()) {
                Err(()) => (false, false),
                Ok(due) => (true, due && release_if_due(&m, &lock)),
            }
        };
        let a = thread::spawn(free1(m.clone(), lock.clone()));
        let (ok_b, rel_b) = free1(m.clone(), lock.clone())();
        let (ok_a, rel_a) = a.join().unwrap();
        assert!(ok_a != ok_b, "exactly one of two frees of one chunk succeeds (a: {ok_a}, b: {ok_b})");
        assert!(rel_a || rel_b, "the emptied slab was released");
        assert_eq!(m.bits[0].load(Ordering::Relaxed), 3, "a released slab keeps full bits");
    });
}

/// The owner gives up its slab while another thread frees the slab's last
/// live chunk: the slab is released exactly once, never stranded.
#[test]
fn loom_disown_and_a_remote_free_never_strand_an_empty_slab() {
    loom::model(|| {
        // Owned by T; chunk 0 held by another thread, chunk 1 by the owner.
        let m = Arc::new(slab(T, 0, 0, 0));
        let lock = Arc::new(Mutex::new(()));
        let remote = {
            let (m, lock) = (m.clone(), lock.clone());
            thread::spawn(move || m.remote_free(0, 1, info()) == Ok(true) && release_if_due(&m, &lock))
        };
        assert!(m.owner_free(0, 2, || {}), "chunk 1 was live");
        let by_owner = {
            let _g = lock.lock().unwrap();
            // SecretArena::disown_locked.
            let full = m.disown(info()) == Ok(true);
            full && {
                m.state.store(FREE, Ordering::Release);
                true
            }
        };
        let by_remote = remote.join().unwrap();
        assert!(by_owner || by_remote, "an empty, unowned slab was left behind");
        assert!(!(by_owner && by_remote), "released twice");
    });
}

/// A chunk freed by its owner and by another thread, in either order, is
/// reported at the owner's next refill.
#[test]
fn loom_a_cross_thread_double_free_is_caught_at_refill() {
    loom::model(|| {
        let m = Arc::new(slab(T, 0, 0, 0));
        let remote = {
            let m = m.clone();
            // The remote path past its early check (which a race can pass).
            thread::spawn(move || m.remote_free(0, 1, info()).is_ok())
        };
        let owner_ok = m.owner_free(0, 1, || {});
        let remote_ok = remote.join().unwrap();
        assert!(owner_ok && remote_ok, "neither path sees the other's bitmap at once");
        assert_eq!(m.refill(), Err(0), "the refill must report chunk 0");
        assert_eq!(m.local[0].load(Ordering::Relaxed), 1, "merged once, consistent");
    });
}

/// The owner's fast allocation, as in `SecretArena::alloc_fast`.
fn owner_alloc(h: &Heap, m: &PageMeta) -> Option<usize> {
    h.busy.store(1, Ordering::Relaxed);
    light_fence();
    let got = if h.token.load(Ordering::Relaxed) == T && !h.cur[C2048].load(Ordering::Relaxed).is_null() {
        m.take_local()
    } else {
        None
    };
    h.busy.store(0, Ordering::Release);
    got
}

/// `SecretArena::reclaim`'s pass over a heap it read as quiescent (the
/// token `t` read before taking the flag; the owner is alive and not the
/// caller): whether it took the slab.
fn quiescent_pass(h: &Heap, m: &PageMeta, t: u64) -> bool {
    if t != DISARMED || !h.try_hold() {
        return false;
    }
    let mut taken = false;
    // Decided again under the flag, as `reclaim` does.
    if h.token.load(Ordering::Relaxed) == DISARMED {
        h.set_cur(C2048, None);
        taken = m.disown(info()).is_ok();
    }
    h.unhold();
    taken
}

/// `SecretArena::reclaim`'s idle step on a live heap, then `take_slabs`:
/// disarm, barrier, wait for `busy`, and take the slab only if it is
/// entirely free. Whether it took it.
fn idle_revoke(h: &Heap, m: &PageMeta) -> bool {
    assert!(h.try_hold());
    assert!(h.token.compare_exchange(T, DISARMED, Ordering::Relaxed, Ordering::Relaxed).is_ok());
    assert!(heavy_fence());
    h.wait_not_busy();
    let taken = m.all_free(info()) && {
        h.set_cur(C2048, None);
        m.disown(info()) == Ok(true)
    };
    h.unhold();
    taken
}

/// An idle owner's heap is disarmed, `membarrier`, `busy` waited for, and
/// its slab taken only if still entirely free: never while the owner
/// allocates from it.
#[test]
fn loom_reclaim_never_takes_a_slab_the_owner_allocates_from() {
    loom::model(|| {
        let m = Arc::new(slab(T, 3, 0, 0));
        let h = Arc::new(heap(T, &m));
        let owner = {
            let (m, h) = (m.clone(), h.clone());
            thread::spawn(move || owner_alloc(&h, &m))
        };
        let taken = idle_revoke(&h, &m);
        let got = owner.join().unwrap();
        assert!(!(taken && got.is_some()), "the slab was taken while the owner allocated chunk {got:?} from it");
        assert!(taken || got.is_some(), "an empty slab of a disarmed heap was not taken");
    });
}

/// A thread frees into its slab, then exits; a reclaimer that sees the
/// slot's token gone takes the slab with that free in it.
#[test]
fn loom_a_dead_threads_slab_is_taken_with_its_last_frees() {
    loom::model(|| {
        let m = Arc::new(slab(T, 1, 0, 0));
        let slot_token = Arc::new(AtomicU64::new(T));
        let owner = {
            let (m, slot_token) = (m.clone(), slot_token.clone());
            thread::spawn(move || {
                assert!(m.owner_free(0, 2, || {}), "chunk 1 was live");
                // thread::on_thread_exit.
                slot_token.store(0, Ordering::Release);
            })
        };
        if slot_token.load(Ordering::Acquire) != T {
            assert_eq!(m.disown(info()), Ok(true), "the dead owner's last free was lost");
        }
        owner.join().unwrap();
    });
}

/// The owner frees the last live chunk of its current slab (its quickest
/// free, `SecretArena::free_current`) while a reclaimer disarms the heap
/// and takes the slab if entirely free: the free lands before the take or
/// not at all, never in the bitmaps of a slab already given up, and the
/// chunk is in exactly one bitmap afterwards.
#[test]
fn loom_reclaim_never_takes_a_slab_the_owner_frees_into() {
    loom::model(|| {
        // Chunk 0 live, chunk 1 free in `local`.
        let m = Arc::new(slab(T, 2, 0, 0));
        let h = Arc::new(heap(T, &m));
        let owner = {
            let (m, h) = (m.clone(), h.clone());
            thread::spawn(move || {
                h.busy.store(1, Ordering::Relaxed);
                light_fence();
                let freed = h.token.load(Ordering::Relaxed) == T
                    && !h.cur[C2048].load(Ordering::Relaxed).is_null()
                    && m.owner_free(0, 1, || {});
                h.busy.store(0, Ordering::Release);
                freed
            })
        };
        let taken = idle_revoke(&h, &m);
        let freed = owner.join().unwrap();
        assert!(!taken || freed, "a slab with a live chunk was taken");
        if taken {
            assert_eq!(m.owner.load(Ordering::Relaxed), UNOWNED);
            assert_eq!((m.local[0].load(Ordering::Relaxed), m.freed[0].load(Ordering::Relaxed)), (0, 0));
            assert_eq!(m.bits[0].load(Ordering::Relaxed), 3, "both chunks free, once");
        } else if freed {
            assert_eq!(m.free_mask(0), 3, "the owner's free is in its slab");
        }
    });
}

/// A heap left disarmed is re-armed by its owner (from a slow path, under
/// the flag) between a reclaimer's read of the token and its `try_hold`:
/// the reclaimer must then leave the heap alone, not take the slab the
/// owner is allocating from (found in review).
#[test]
fn loom_a_heap_rearmed_after_the_quiescent_read_is_left_alone() {
    loom::model(|| {
        let m = Arc::new(slab(T, 3, 0, 0));
        let h = Arc::new(heap(DISARMED, &m));
        let owner = {
            let (m, h) = (m.clone(), h.clone());
            thread::spawn(move || {
                // SecretArena::arm.
                h.hold();
                h.token.store(T, Ordering::Relaxed);
                h.unhold();
                owner_alloc(&h, &m)
            })
        };
        let t = h.token.load(Ordering::Acquire);
        let taken = quiescent_pass(&h, &m, t);
        let got = owner.join().unwrap();
        assert!(!(taken && got.is_some()), "the slab was taken while the re-armed owner allocated chunk {got:?}");
    });
}

/// Where `membarrier` fails, a reclaimer that disarmed a heap cannot know
/// the owner left its fast path, so it re-arms the heap before giving the
/// flag back; a later pass that reads the heap as disarmed would otherwise
/// take the slab from under the owner (found in review).
#[test]
fn loom_a_revoke_without_a_barrier_leaves_the_heap_armed() {
    loom::model(|| {
        let m = Arc::new(slab(T, 3, 0, 0));
        let h = Arc::new(heap(T, &m));
        let owner = {
            let (m, h) = (m.clone(), h.clone());
            thread::spawn(move || owner_alloc(&h, &m))
        };
        // The idle step, with `heavy_fence` failing.
        assert!(h.try_hold());
        assert!(h.token.compare_exchange(T, DISARMED, Ordering::Relaxed, Ordering::Relaxed).is_ok());
        h.token.store(T, Ordering::Relaxed);
        h.unhold();
        // A later reclaim.
        let t = h.token.load(Ordering::Acquire);
        let taken = quiescent_pass(&h, &m, t);
        let got = owner.join().unwrap();
        assert!(!(taken && got.is_some()), "the slab was taken while the owner allocated chunk {got:?}");
    });
}
