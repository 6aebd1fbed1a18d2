//! Taking empty slabs back when pages run out, before the arena grows.
//!
//! Three kinds of slab can hold pages while entirely free:
//!
//! 1. **Unowned** ones, normally released by the free that empties them;
//!    the class lists are swept for any left.
//! 2. **Dead threads'** current slabs. A thread's exit destructor clears its
//!    slot's token (`thread`), so a heap whose token is no longer its slot's
//!    belongs to a dead thread, which will never touch it again: all its
//!    slabs are disowned (the empty ones released), no barrier needed.
//! 3. **Idle live threads'** current slabs. The owner reads and writes them
//!    without atomics, so they are taken in four steps, all while holding
//!    the heap's `revoking` flag:
//!    1. *disarm* the heap (`token = DISARMED`), so the owner's next fast
//!       path fails and it must take a class lock and the flag to re-arm;
//!    2. issue one `membarrier(2)`, after which the owner's store to `busy`
//!       of a fast path already under way is visible, and a fast path that
//!       starts later sees the heap disarmed;
//!    3. wait until `busy` is 0;
//!    4. under each class lock, take the current slab only if it is still
//!       entirely free.
//!
//!    Without `membarrier` (seccomp, valgrind, Linux before 4.14) this step
//!    is skipped: idle threads keep one slab per class they used, and only
//!    dead threads' slabs come back.
//!
//! All three run in one pass, so "dead" and "idle" are decided once per heap,
//! under its flag. The idle step runs at most once a millisecond, so an arena
//! that is simply full does not pay a barrier per failed allocation.

use super::classes::{CLASS_COUNT, CLASSES};
use super::heap::{DISARMED, Heap};
use super::slab::UNOWNED;
use super::thread::{self, MAX_SLOTS};
use super::{SecretArena, SlabList};
use crate::sync::{Ordering, heavy_fence};

/// Least time between two reclaims from idle threads.
const IDLE_RECLAIM_EVERY_NS: u64 = 1_000_000;

impl SecretArena {
    /// Releases every empty slab it can, of the three kinds above. `held` is
    /// the class (and list) whose lock the caller holds. Returns how many
    /// slabs were released.
    ///
    /// `force_idle` skips the once-a-millisecond limit on the idle step: for
    /// the last attempt before a request fails, which must not fail while an
    /// idle thread pins an empty slab. It costs a barrier only when some
    /// heap has an empty slab to give, so a full arena does not pay it.
    pub(super) fn reclaim(&self, mut held: Option<(usize, &mut SlabList)>, force_idle: bool) -> usize {
        let mut released = 0;
        for class in 0..CLASS_COUNT {
            released += self.with_class(class, &mut held, |arena, list| arena.sweep_unowned(class, list));
        }
        let me = thread::token();
        let idle_ok = if force_idle { thread::membarrier_usable() } else { self.idle_reclaim_due() };
        // Tokens of the heaps disarmed below (a token names its slot).
        let mut revoked = [0u64; MAX_SLOTS];
        let mut n_revoked = 0;
        for (w, word) in self.armed.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let h = self.pages.heap(slot);
                let t = h.token.load(Ordering::Acquire);
                let mine = thread::is_real(me) && thread::slot_of(me) == slot;
                let quiescent = t == DISARMED || !thread::is_alive(t) || mine;
                if quiescent {
                    // Disarmed heaps are quiescent too: whoever disarmed it
                    // waited for `busy` before giving the flag back (or
                    // re-armed it, below, when it could not).
                    if h.try_hold() {
                        // Decided again under the flag: between the read above
                        // and `try_hold`, a disarmed heap's live owner may have
                        // re-armed it and be in its fast path now. Such a heap
                        // is left to the idle step, which disarms and waits.
                        let t = h.token.load(Ordering::Relaxed);
                        let dead = t != DISARMED && !thread::is_alive(t);
                        if t == DISARMED || dead || mine {
                            if dead {
                                h.token.store(DISARMED, Ordering::Relaxed);
                            }
                            released += self.take_slabs(h, &mut held, dead || t == DISARMED);
                        }
                        h.unhold();
                    }
                } else if idle_ok && self.has_empty_slab(h) && h.try_hold() {
                    if h.token.compare_exchange(t, DISARMED, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                        revoked[n_revoked] = t;
                        n_revoked += 1;
                    } else {
                        h.unhold();
                    }
                }
            }
        }
        if n_revoked > 0 {
            let fenced = heavy_fence();
            for &t in &revoked[..n_revoked] {
                let h = self.pages.heap(thread::slot_of(t));
                if fenced {
                    h.wait_not_busy();
                    released += self.take_slabs(h, &mut held, false);
                } else {
                    // No barrier, so no proof the owner is out of its fast
                    // path: re-arm the heap as it was, rather than leave it
                    // disarmed, which others take for quiescent.
                    h.token.store(t, Ordering::Relaxed);
                }
                h.unhold();
            }
        }
        released
    }

    /// Runs `f` on `class`'s list: the held one, or one whose lock is free.
    fn with_class(
        &self,
        class: usize,
        held: &mut Option<(usize, &mut SlabList)>,
        f: impl FnOnce(&Self, &mut SlabList) -> usize,
    ) -> usize {
        match held {
            Some((c, list)) if *c == class => f(self, list),
            _ => match self.classes[class].list.try_lock() {
                Ok(mut g) => f(self, &mut g),
                Err(_) => 0,
            },
        }
    }

    /// Releases the unowned, entirely free slabs of `class`. Class lock held.
    fn sweep_unowned(&self, class: usize, list: &mut SlabList) -> usize {
        let info = &CLASSES[class];
        let mut released = 0;
        let mut p = list.head;
        while !p.is_null() {
            // SAFETY: a live list member; its class lock is held.
            let m = unsafe { &*p };
            p = m.next.load(Ordering::Relaxed);
            if m.owner.load(Ordering::Relaxed) == UNOWNED && m.bits_full(info) {
                self.release_locked(m, class, list);
                released += 1;
            }
        }
        released
    }

    /// Whether one of the heap's current slabs looks entirely free (a racy
    /// read, to decide whether a barrier is worth it).
    fn has_empty_slab(&self, h: &Heap) -> bool {
        (0..CLASS_COUNT).any(|c| {
            let cur = h.cur[c].load(Ordering::Relaxed);
            // SAFETY: heap invariant 2: a slab head in this arena's metadata.
            !cur.is_null() && unsafe { &*cur }.all_free(&CLASSES[c])
        })
    }

    /// Takes the heap's current slabs back: all of them with `all`, else the
    /// entirely free ones. The heap's `revoking` flag is held and its owner
    /// is out of its fast path (dead, disarmed and waited for, or the
    /// caller). Returns how many slabs were released.
    fn take_slabs(&self, h: &Heap, held: &mut Option<(usize, &mut SlabList)>, all: bool) -> usize {
        let mut released = 0;
        for (class, slot) in h.cur.iter().enumerate() {
            if slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            released += self.with_class(class, held, |arena, list| {
                let cur = slot.load(Ordering::Relaxed);
                // SAFETY: heap invariant 2; the class lock makes it stable.
                let Some(s) = (unsafe { cur.as_ref() }) else { return 0 };
                if !all && !s.all_free(&CLASSES[class]) {
                    return 0;
                }
                h.set_cur(class, None);
                let empty = s.all_free(&CLASSES[class]);
                // A chunk in two bitmaps here was freed twice by two threads
                // with no allocation between; the merge leaves it free once.
                let _ = arena.disown_locked(s, class, list);
                usize::from(empty)
            });
        }
        released
    }

    /// Whether the idle-thread step may run now (rate limit), and whether
    /// it can run at all.
    fn idle_reclaim_due(&self) -> bool {
        if !thread::membarrier_usable() {
            return false;
        }
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64);
        let last = self.last_idle_reclaim.load(Ordering::Relaxed);
        if last != 0 && now.wrapping_sub(last) < IDLE_RECLAIM_EVERY_NS {
            return false;
        }
        self.last_idle_reclaim.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}
