//! The secret types: the top layer, `secret/` → `arena/` → `backing/`.
//!
//! Each type here hides its value behind [`ExposeSecret`] and wipes it when
//! dropped; the memory comes from an allocator (the process-wide secret
//! arena, [`DefaultArena`](crate::DefaultArena), unless the caller names
//! another). Nothing in this layer imports from the crate root: the default
//! arena comes from `crate::global`, wiping from `crate::wipe`.

pub(crate) mod boxed;
mod bytes;
mod cell;
pub(crate) mod input;
#[cfg(feature = "serde")]
mod redact;
#[cfg(feature = "serde")]
pub(crate) mod serde;
mod stack;
pub(crate) mod string;
pub(crate) mod vec;

#[cfg(feature = "serde")]
pub use self::serde::SerializableSecret;
pub use boxed::{CloneableSecret, ExposeSecret, ExposeSecretMut, SecretBox, SecretSlice};
pub use cell::SecretCell;
pub use stack::wipe_stack;
pub use string::SecretString;
pub use vec::SecretVec;
