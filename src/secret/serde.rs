//! serde support (`serde` feature).
//!
//! - `Deserialize` for [`SecretVec`] and [`SecretString`] writes the bytes
//!   straight into secret memory: borrowed input is copied in, and an owned
//!   `String` or `Vec<u8>` handed over by the deserializer is zeroized after
//!   the copy. Buffers inside the deserializer itself are out of our reach:
//!   serde_json copies a string with escapes, and every string read by
//!   `from_reader`, into a scratch `Vec` it frees without wiping (measured
//!   with the scanning allocator of `tests/serde_leaks.rs`). Installing
//!   `SecretGlobalAlloc` puts that buffer in the arena, which wipes it.
//! - `Deserialize` for [`SecretBox<T>`] deserializes a `T` and swaps it into
//!   a default `T` already in secret memory, so the stack slot it was built
//!   in is overwritten by the default value; for a `T` that owns a heap
//!   buffer (`String`, `Vec`), only the pointer moves.
//! - `Serialize` only for `SecretBox<T>` with `T: `[`SerializableSecret`].
//! - **Errors never quote the input**: every deserializer and visitor runs
//!   through [`Redacting`](super::redact), which replaces each error by
//!   `invalid secret (input redacted), expected …`. Running out of secret
//!   memory is reported as such (it quotes nothing).
//!
//! # Formats that still buffer input outside secret memory
//!
//! - **serde_json:** a string with escapes (`\"`, `\u00e4`) is unescaped
//!   into a scratch `Vec` first, and so is every string when reading with
//!   `from_reader`/`from_slice` of a reader; the scratch buffer is freed
//!   unwiped. A string without escapes, read with `from_str`/`from_slice`,
//!   is borrowed from the input and copied straight in.
//! - **`#[serde(untagged)]`, `#[serde(flatten)]` and internally tagged
//!   enums** (`#[serde(tag = "…")]`): serde buffers the whole input of the
//!   enclosing value in its private `Content` tree (ordinary `String`s and
//!   `Vec`s) to try the variants, and drops it unwiped.
//! - **Any format's error:** the original error, built before we replace
//!   it, may quote the input and is dropped unwiped.
//! - **The input itself** (the `&str` or file contents the caller passes)
//!   is the caller's to wipe.
//!
//! Installing [`SecretGlobalAlloc`](crate::SecretGlobalAlloc) as the global
//! allocator puts all of these in the arena, which wipes them on free.

use core::fmt;
use core::marker::PhantomData;

use allocator_api2::alloc::Allocator;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use zeroize::Zeroize;

use crate::secret::boxed::{ExposeSecret, ExposeSecretMut, SecretBox};
use crate::secret::redact::Redacting;
use crate::secret::string::SecretString;
use crate::secret::vec::SecretVec;

/// Marker: a secret type that may be serialized (written out in the
/// clear). [`SecretBox<T>`] is `Serialize` only when `T` implements it.
///
/// # Examples
///
/// ```
/// use secret_arena::{SecretBox, SerializableSecret};
/// use zeroize::Zeroize;
///
/// #[derive(serde::Serialize, Default, Zeroize)]
/// struct ExportableKey(u64);
/// impl SerializableSecret for ExportableKey {}
///
/// let key = SecretBox::new(ExportableKey(7));
/// assert_eq!(serde_json::to_string(&key).unwrap(), "7");
/// ```
///
/// ```compile_fail,E0277
/// let key = secret_arena::SecretBox::new(7u64);
/// serde_json::to_string(&key).unwrap();
/// ```
pub trait SerializableSecret: Serialize {}

impl<T: Zeroize + ?Sized + SerializableSecret, A: Allocator> Serialize for SecretBox<T, A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.expose_secret().serialize(serializer)
    }
}

/// Deserializes `T`, then swaps it into secret memory. Errors never quote
/// the input.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let key: SecretBox<[u8; 4]> = serde_json::from_str("[1, 2, 3, 4]").unwrap();
/// assert_eq!(key.expose_secret(), &[1, 2, 3, 4]);
///
/// let err = serde_json::from_str::<SecretBox<u32>>("[\"hunter2\"]").unwrap_err();
/// assert!(!err.to_string().contains("hunter2"));
/// ```
impl<'de, T: Zeroize + Default + DeserializeOwned, A: Allocator + Default> Deserialize<'de> for SecretBox<T, A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut secret = SecretBox::new_in(T::default(), A::default());
        let mut value = T::deserialize(Redacting(deserializer))?;
        core::mem::swap(secret.expose_secret_mut(), &mut value);
        value.zeroize();
        Ok(secret)
    }
}

/// Accepts bytes, a string or a sequence of `u8`.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretVec};
///
/// let v: SecretVec = serde_json::from_str("[104, 105]").unwrap();
/// assert_eq!(v.expose_secret(), b"hi");
/// ```
impl<'de, A: Allocator + Clone + Default> Deserialize<'de> for SecretVec<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Redacting(deserializer).deserialize_byte_buf(BytesVisitor(PhantomData))?.map_err(Exhausted::error)
    }
}

/// The arena could not hold the secret. A value, not an error, so the
/// redaction (which replaces every error) does not hide it.
struct Exhausted;

impl Exhausted {
    fn error<E: de::Error>(self) -> E {
        E::custom("secret memory exhausted while deserializing a secret")
    }
}

struct BytesVisitor<A>(PhantomData<A>);

impl<'de, A: Allocator + Clone + Default> Visitor<'de> for BytesVisitor<A> {
    type Value = Result<SecretVec<A>, Exhausted>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let mut secret = SecretVec::new_in(A::default());
        Ok(secret.try_extend_from_slice(v).map(|()| secret).map_err(|_| Exhausted))
    }

    fn visit_byte_buf<E: de::Error>(self, mut v: Vec<u8>) -> Result<Self::Value, E> {
        let secret = self.visit_bytes(&v);
        v.zeroize();
        secret
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.visit_bytes(v.as_bytes())
    }

    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Self::Value, E> {
        let secret = self.visit_bytes(v.as_bytes());
        v.zeroize();
        secret
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut secret = SecretVec::new_in(A::default());
        while let Some(byte) = seq.next_element::<u8>()? {
            if secret.try_extend_from_slice(&[byte]).is_err() {
                // Read the rest, so the format does not report the
                // unfinished sequence instead.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Err(Exhausted));
            }
        }
        Ok(Ok(secret))
    }
}

/// Accepts a string.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretString};
///
/// #[derive(serde::Deserialize)]
/// struct Login {
///     user: String,
///     password: SecretString,
/// }
/// let login: Login = serde_json::from_str(r#"{"user": "ann", "password": "hunter2"}"#).unwrap();
/// assert_eq!(login.password.expose_secret(), "hunter2");
/// ```
impl<'de, A: Allocator + Clone + Default> Deserialize<'de> for SecretString<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Redacting(deserializer).deserialize_string(StrVisitor(PhantomData))?.map_err(Exhausted::error)
    }
}

struct StrVisitor<A>(PhantomData<A>);

impl<'de, A: Allocator + Clone + Default> Visitor<'de> for StrVisitor<A> {
    type Value = Result<SecretString<A>, Exhausted>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut secret = SecretString::new_in(A::default());
        Ok(secret.try_push_str(v).map(|()| secret).map_err(|_| Exhausted))
    }

    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Self::Value, E> {
        let secret = self.visit_str(&v);
        v.zeroize();
        secret
    }
}
