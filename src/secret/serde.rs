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

use core::fmt;
use core::marker::PhantomData;

use allocator_api2::alloc::Allocator;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use zeroize::Zeroize;

use crate::secret::boxed::{ExposeSecret, ExposeSecretMut, SecretBox};
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

/// Deserializes `T`, then swaps it into secret memory.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let key: SecretBox<[u8; 4]> = serde_json::from_str("[1, 2, 3, 4]").unwrap();
/// assert_eq!(key.expose_secret(), &[1, 2, 3, 4]);
/// ```
impl<'de, T: Zeroize + Default + DeserializeOwned, A: Allocator + Default> Deserialize<'de> for SecretBox<T, A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut secret = SecretBox::new_in(T::default(), A::default());
        let mut value = T::deserialize(deserializer)?;
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
        deserializer.deserialize_byte_buf(BytesVisitor(PhantomData))
    }
}

struct BytesVisitor<A>(PhantomData<A>);

impl<'de, A: Allocator + Clone + Default> Visitor<'de> for BytesVisitor<A> {
    type Value = SecretVec<A>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let mut secret = SecretVec::new_in(A::default());
        secret.try_extend_from_slice(v).map_err(|_| E::custom("secret memory exhausted"))?;
        Ok(secret)
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
            secret.try_extend_from_slice(&[byte]).map_err(|_| de::Error::custom("secret memory exhausted"))?;
        }
        Ok(secret)
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
        deserializer.deserialize_string(StrVisitor(PhantomData))
    }
}

struct StrVisitor<A>(PhantomData<A>);

impl<'de, A: Allocator + Clone + Default> Visitor<'de> for StrVisitor<A> {
    type Value = SecretString<A>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut secret = SecretString::new_in(A::default());
        secret.try_push_str(v).map_err(|_| E::custom("secret memory exhausted"))?;
        Ok(secret)
    }

    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Self::Value, E> {
        let secret = self.visit_str(&v);
        v.zeroize();
        secret
    }
}
