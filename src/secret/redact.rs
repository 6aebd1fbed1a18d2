//! Deserialization errors without the input in them (`serde` feature).
//!
//! serde's errors quote what they did not expect: `invalid type: string
//! "hunter2", expected u32`, `invalid value: integer 256, expected u8`,
//! `unknown variant hunter2`. For a secret that quote is the secret, and
//! errors end up in logs. [`Redacting`] wraps a deserializer so that every
//! error coming out of it, and out of every visitor passed through it, is
//! replaced by `invalid secret (input redacted), expected <what the visitor
//! expected>`.
//!
//! - **Position.** An error a visitor returns is replaced inside the
//!   visitor call, so a format that adds the position to errors there
//!   (serde_json: `at line 1 column 12`) still does. An error the format
//!   raises before it reaches a visitor (a type mismatch it sees in the
//!   token, a syntax error) is replaced on its way out; the format adds
//!   the position again when it passes through an enclosing struct, map or
//!   sequence, but not for a secret that is the whole document.
//! - **Not reached.** The format's original error is built before we see
//!   it, so its text, input included, was in ordinary heap memory for a
//!   moment, and is dropped without wiping (install
//!   [`SecretGlobalAlloc`](crate::SecretGlobalAlloc) to have it wiped).

use core::fmt::{self, Write as _};

use serde::de::{self, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// What a visitor expects, rendered once before the visitor is used up.
pub(crate) struct Expected(String);

impl Expected {
    pub(crate) fn of<'de, V: Visitor<'de>>(visitor: &V) -> Self {
        struct Expecting<'a, V>(&'a V);
        impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.expecting(f)
            }
        }
        let mut s = String::new();
        // Writing to a `String` cannot fail; a visitor's `expecting` that
        // fails leaves the description short, nothing worse.
        let _ = write!(s, "{}", Expecting(visitor));
        Expected(s)
    }

    /// The redacted replacement for an error.
    pub(crate) fn error<E: de::Error>(&self) -> E {
        E::custom(format_args!("invalid secret (input redacted), expected {}", self.0))
    }
}

/// A deserializer whose errors never quote the input: see the module docs.
pub(crate) struct Redacting<D>(pub(crate) D);

/// A visitor whose errors never quote the input.
struct RedactingVisitor<'e, V> {
    inner: V,
    expected: &'e Expected,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let expected = Expected::of(&visitor);
            let wrapped = RedactingVisitor { inner: visitor, expected: &expected };
            self.0.$method($($arg,)* wrapped).map_err(|_| expected.error())
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Redacting<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method::<E>(v).map_err(|_| self.expected.error())
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for RedactingVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none::<E>().map_err(|_| self.expected.error())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit::<E>().map_err(|_| self.expected.error())
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.inner.visit_some(d).map_err(|_| self.expected.error())
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        self.inner.visit_newtype_struct(d).map_err(|_| self.expected.error())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<Self::Value, S::Error> {
        self.inner.visit_seq(seq).map_err(|_| self.expected.error())
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        self.inner.visit_map(map).map_err(|_| self.expected.error())
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data).map_err(|_| self.expected.error())
    }
}
