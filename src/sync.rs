//! The atomics of the arena's page metadata: `core`'s, or loom's when the
//! library's unit tests are built with `--cfg loom`, so that loom can
//! model-check the chunk-bitmap protocol (`arena::slab`'s loom tests).
//!
//! Only the lib's own test build switches: with `--cfg loom`, every other
//! build (integration tests, dependents) still gets `core`'s atomics.

#[cfg(not(all(loom, test)))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
