//! The atomics of the arena's metadata: `core`'s, or loom's when the
//! library's unit tests are built with `--cfg loom`, so that loom can
//! model-check the slab and heap protocols (`arena::loom_tests`).
//!
//! Only the lib's own test build switches: with `--cfg loom`, every other
//! build (integration tests, dependents) still gets `core`'s atomics.
//!
//! The owner's fast path and a reclaimer synchronise through an *asymmetric
//! fence*: the owner only keeps the compiler from reordering
//! ([`light_fence`]); the reclaimer makes every thread run a full barrier
//! with `membarrier(2)` ([`heavy_fence`]). Loom cannot model `membarrier`,
//! so under loom both are `fence(SeqCst)`, which is what the barrier amounts
//! to on the owner's side.

#[cfg(not(all(loom, test)))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// The owner's half of the asymmetric fence: a compiler barrier only.
#[inline(always)]
pub(crate) fn light_fence() {
    #[cfg(not(all(loom, test)))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(all(loom, test))]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The reclaimer's half: every thread runs a full barrier. `false` where
/// `membarrier(2)` is unavailable.
pub(crate) fn heavy_fence() -> bool {
    #[cfg(not(all(loom, test)))]
    return crate::arena::thread::membarrier();
    #[cfg(all(loom, test))]
    {
        loom::sync::atomic::fence(Ordering::SeqCst);
        true
    }
}

/// Lets another thread run while waiting.
pub(crate) fn yield_now() {
    #[cfg(not(all(loom, test)))]
    std::thread::yield_now();
    #[cfg(all(loom, test))]
    loom::thread::yield_now();
}
