//! A thread's heap in one arena: its current slab per class.
//!
//! Each arena has one [`Heap`] per thread slot (`thread`), in its metadata
//! mapping. The owning thread reads and writes it with plain loads and
//! stores; other threads touch it only to take slabs back (`reclaim`).

use super::classes::CLASS_COUNT;
use super::slab::PageMeta;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// `Heap::token` of a heap no thread may use without re-arming it: never
/// armed, or revoked by a reclaimer.
pub(crate) const DISARMED: u64 = 0;

/// One thread's state in one arena. All-zero bytes are a valid, disarmed heap.
///
/// # Invariants
///
/// 1. `token` is the owning thread's token while armed, else [`DISARMED`].
///    Only the thread whose slot this is arms it (class lock and `revoking`
///    held); a reclaimer disarms it (`revoking` held).
/// 2. `cur[c]`, when not null, is a slab head of class `c` whose `owner` is
///    this slot's thread's token (possibly a dead thread's), written under
///    class `c`'s lock only. While the heap is armed with token `t`, that
///    owner is `t` (arming takes over a dead thread's slabs).
/// 3. `slab[c]` is the address of the first chunk of `cur[c]`'s slab, or 0
///    when `cur[c]` is null; the two are written together (`set_cur`).
/// 4. `busy` is 1 exactly while the owner is in a fast path, from before
///    its load of `token` until after its last access to `cur`, `slab` and
///    the slab's `local`/`freed`. A
///    reclaimer that disarmed the heap, then ran `membarrier`, then saw
///    `busy == 0`, knows the owner is out of its fast path until it re-arms.
#[repr(C, align(64))]
pub(crate) struct Heap {
    pub token: AtomicU64,
    pub busy: AtomicU32,
    /// 1 while a thread takes slabs from (or re-arms) this heap.
    pub revoking: AtomicU32,
    pub cur: [AtomicPtr<PageMeta>; CLASS_COUNT],
    /// Where `cur[c]`'s chunks start: the owner's allocation adds a chunk's
    /// offset, its free subtracts it, without going through the page table.
    pub slab: [AtomicUsize; CLASS_COUNT],
}

impl Heap {
    /// Makes `cur`, a slab head of `class` whose chunks start at `addr`, or
    /// none, the heap's current slab of `class` (invariants 2 and 3). Class
    /// lock held, and the owner out of its fast path.
    pub(crate) fn set_cur(&self, class: usize, cur: Option<(&PageMeta, usize)>) {
        let (m, addr) = match cur {
            Some((m, addr)) => (m as *const PageMeta as *mut PageMeta, addr),
            None => (core::ptr::null_mut(), 0),
        };
        self.slab[class].store(addr, Ordering::Relaxed);
        self.cur[class].store(m, Ordering::Relaxed);
    }

    /// Takes the `revoking` flag if free.
    pub(crate) fn try_hold(&self) -> bool {
        self.revoking.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the `revoking` flag, waiting for a reclaimer that has it (it
    /// never waits for anything this thread holds).
    pub(crate) fn hold(&self) {
        while !self.try_hold() {
            crate::sync::yield_now();
        }
    }

    /// Gives the `revoking` flag back.
    pub(crate) fn unhold(&self) {
        self.revoking.store(0, Ordering::Release);
    }

    /// Waits until the owner is out of its fast path (invariant 3).
    pub(crate) fn wait_not_busy(&self) {
        while self.busy.load(Ordering::Acquire) != 0 {
            crate::sync::yield_now();
        }
    }
}
