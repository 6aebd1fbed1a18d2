#![doc = include_str!("../README.md")]
#![cfg(any(target_os = "linux", target_os = "android"))]

mod alloc_api;
pub mod arena;
mod backing;
mod error;
mod global;
mod sync;
mod wipe;

pub use alloc_api::SecretGlobalAlloc;
pub use arena::{ClassStats, InvariantError, SecretArena, SecretArenaBuilder, Stats};
pub use backing::{Backing, BackingPolicy, MemlockBudget, memfd_secret_available, memlock_budget};
pub use error::{Errno, Error, Step};
pub use global::{DefaultArena, GLOBAL_INITIAL_CAPACITY, GLOBAL_UNLIMITED_MAX, global};

/// allocator-api2, re-exported so users name the same `Allocator` trait.
pub use allocator_api2;
