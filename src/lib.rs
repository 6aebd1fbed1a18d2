#![doc = include_str!("../README.md")]
#![cfg(any(target_os = "linux", target_os = "android"))]

mod alloc_api;
mod arena;
mod backing;
mod error;
mod global;
mod secret;
mod sync;
mod wipe;

pub use alloc_api::SecretGlobalAlloc;
pub use arena::classes::CLASS_COUNT;
pub use arena::{ClassStats, DEFAULT_CAPACITY, InvariantError, MAX_SEGMENTS, SecretArena, SecretArenaBuilder, Stats};
pub use backing::registry::{SLOTS as MAX_MAPPINGS, purge};
pub use backing::{Backing, BackingPolicy, MemlockBudget, memfd_secret_available, memlock_budget};
/// rustix's errno type, which [`Error`] carries. Not inlined: its many
/// constants belong to rustix's documentation, not this crate's.
#[doc(no_inline)]
pub use error::Errno;
pub use error::{Error, Step};
pub use global::{DefaultArena, GLOBAL_INITIAL_CAPACITY, GLOBAL_UNLIMITED_MAX, global};
#[cfg(feature = "serde")]
pub use secret::SerializableSecret;
pub use secret::input::READ_FILE_MAX;
pub use secret::{
    CloneableSecret, ExposeSecret, ExposeSecretMut, SecretBox, SecretCell, SecretSlice, SecretString, SecretVec,
    wipe_stack,
};

/// allocator-api2, re-exported so users name the same `Allocator` trait.
pub use allocator_api2;
