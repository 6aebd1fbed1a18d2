//! [`SecretString`]: a growable UTF-8 secret (passwords, tokens), a
//! [`SecretVec`] that keeps its bytes valid UTF-8.

use core::fmt;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::global::DefaultArena;
use crate::secret::boxed::{ExposeSecret, ExposeSecretMut};
use crate::secret::vec::SecretVec;

/// A growable UTF-8 secret (a password, a token) in memory from `A`, with
/// the guarantees of [`SecretVec`].
///
/// `From<String>`, `From<&str>` and `FromStr` make migrating from
/// `secrecy::SecretString` a rename of the import; `From<String>` zeroizes
/// the `String`'s buffer after copying it.
///
/// With the `serde` feature it deserializes from a string straight into
/// secret memory; an owned `String` the deserializer hands over is zeroized.
/// serde_json's own scratch buffer (used for strings with escapes, and by
/// `from_reader`) is freed unwiped unless the program installs
/// [`SecretGlobalAlloc`](crate::SecretGlobalAlloc).
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretString};
///
/// let mut password = SecretString::new();
/// for c in "hunter2".chars() {
///     password.push(c);
/// }
/// assert_eq!(password.expose_secret(), "hunter2");
/// assert_eq!(format!("{password:?}"), "SecretString([REDACTED])");
/// ```
///
/// ```compile_fail,E0277
/// let password = secret_arena::SecretString::from("hunter2");
/// println!("{}", password);
/// ```
pub struct SecretString<A: Allocator = DefaultArena> {
    /// Invariant: `bytes` is valid UTF-8.
    bytes: SecretVec<A>,
}

impl SecretString {
    /// An empty string in the default arena; allocates nothing yet.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(secret_arena::SecretString::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::new_in(DefaultArena)
    }
}

impl Default for SecretString {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Allocator> SecretString<A> {
    /// An empty string that will allocate from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretString};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let mut s = SecretString::new_in(&arena);
    /// s.push_str("token");
    /// assert!(arena.contains(s.expose_secret().as_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn new_in(alloc: A) -> Self {
        SecretString { bytes: SecretVec::new_in(alloc) }
    }

    /// Length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(secret_arena::SecretString::from("é").len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the string is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!secret_arena::SecretString::from("x").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Shortens the string to `len` bytes, wiping the rest. Does nothing if
    /// `len >= self.len()`.
    ///
    /// # Panics
    ///
    /// If `len` is not on a `char` boundary, as `String::truncate`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let mut s = SecretString::from("pass word");
    /// s.truncate(4);
    /// assert_eq!(s.expose_secret(), "pass");
    /// s.truncate(100);
    /// assert_eq!(s.expose_secret(), "pass");
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            assert!(self.expose_secret().is_char_boundary(len), "SecretString::truncate: {len} is not a char boundary");
            self.bytes.truncate(len);
        }
    }

    /// Removes the last character (a backspace), wiping its bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let mut s = SecretString::from("pw1");
    /// assert_eq!(s.pop(), Some('1'));
    /// assert_eq!(s.expose_secret(), "pw");
    /// ```
    pub fn pop(&mut self) -> Option<char> {
        let c = self.expose_secret().chars().next_back()?;
        self.bytes.truncate(self.len() - c.len_utf8());
        Some(c)
    }

    /// The bytes as a string if they are UTF-8; otherwise they are wiped
    /// (dropped) and the error says where they stopped being UTF-8.
    pub(crate) fn from_utf8_secret(bytes: SecretVec<A>) -> Result<Self, core::str::Utf8Error> {
        core::str::from_utf8(bytes.expose_secret())?;
        Ok(SecretString { bytes })
    }

    /// Wipes and empties the string; keeps its memory.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut s = secret_arena::SecretString::from("x");
    /// s.clear();
    /// assert!(s.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

impl<A: Allocator + Clone> SecretString<A> {
    /// Appends `s`, growing as [`SecretVec`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let mut s = SecretString::new();
    /// s.push_str("open ");
    /// s.push_str("sesame");
    /// assert_eq!(s.expose_secret(), "open sesame");
    /// ```
    pub fn push_str(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// As [`push_str`](SecretString::push_str), but returns an error
    /// instead of aborting when the string cannot grow.
    ///
    /// # Errors
    ///
    /// [`AllocError`]; the string is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut s = secret_arena::SecretString::new();
    /// s.try_push_str("abc")?;
    /// # Ok::<(), secret_arena::allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_push_str(&mut self, s: &str) -> Result<(), AllocError> {
        self.bytes.try_extend_from_slice(s.as_bytes())
    }

    /// Appends one character.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let mut s = SecretString::new();
    /// s.push('ß');
    /// assert_eq!(s.expose_secret(), "ß");
    /// ```
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// Copies `src` in, then zeroizes `src`'s whole buffer, leaving it empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretString};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let mut typed = String::from("hunter2");
    /// let mut s = SecretString::new_in(&arena);
    /// s.take_from(&mut typed);
    /// assert!(typed.is_empty());
    /// assert_eq!(s.expose_secret(), "hunter2");
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn take_from(&mut self, src: &mut String) {
        self.push_str(src);
        zeroize::Zeroize::zeroize(src);
    }
}

impl<A: Allocator> ExposeSecret<str> for SecretString<A> {
    fn expose_secret(&self) -> &str {
        // SAFETY: invariant: the bytes are valid UTF-8.
        unsafe { core::str::from_utf8_unchecked(self.bytes.expose_secret()) }
    }
}

impl<A: Allocator> ExposeSecretMut<str> for SecretString<A> {
    fn expose_secret_mut(&mut self) -> &mut str {
        // SAFETY: invariant: the bytes are valid UTF-8, and safe code cannot
        // make a `&mut str` invalid.
        unsafe { core::str::from_utf8_unchecked_mut(self.bytes.expose_secret_mut()) }
    }
}

impl<A: Allocator> fmt::Debug for SecretString<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([REDACTED])")
    }
}

impl From<&str> for SecretString {
    /// Copies `s` into the default arena.
    fn from(s: &str) -> Self {
        let mut secret = Self::new();
        secret.push_str(s);
        secret
    }
}

impl From<String> for SecretString {
    /// Copies `s` into the default arena and zeroizes `s`'s buffer.
    fn from(mut s: String) -> Self {
        let mut secret = Self::new();
        secret.take_from(&mut s);
        secret
    }
}

impl core::str::FromStr for SecretString {
    type Err = core::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s))
    }
}

/// `==` in constant time for equal lengths (`subtle` feature).
///
/// # Examples
///
/// ```
/// use secret_arena::SecretString;
///
/// assert!(SecretString::from("a") == SecretString::from("a"));
/// assert!(SecretString::from("a") != SecretString::from("b"));
/// ```
#[cfg(feature = "subtle")]
impl<A: Allocator> PartialEq for SecretString<A> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

#[cfg(feature = "subtle")]
impl<A: Allocator> Eq for SecretString<A> {}
