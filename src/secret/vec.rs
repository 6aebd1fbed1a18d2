//! [`SecretVec`]: a growable byte secret, for secrets of unknown length.
//!
//! It grows by allocating a larger block from their allocator, copying,
//! and wiping the whole old block before freeing it, so no copy is left
//! behind by a reallocation, with any allocator (the secret arena wipes the
//! old chunk once more).

use core::alloc::Layout;
use core::fmt;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;

use crate::global::DefaultArena;
use crate::secret::boxed::{ExposeSecret, ExposeSecretMut};
use crate::wipe::wipe;

/// Smallest capacity a growing buffer allocates: one 16-byte arena chunk.
const MIN_CAPACITY: usize = 16;

/// A growable byte secret in memory from `A` (by default the process-wide
/// secret arena), wiped on drop, on shrink and on every reallocation.
///
/// Access goes through [`ExposeSecret`] / [`ExposeSecretMut`]; `Debug`
/// prints `SecretVec([REDACTED])`; there is no `Clone` or `Display`.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretVec};
///
/// let mut seed = SecretVec::new();
/// seed.extend_from_slice(b"correct horse ");
/// seed.extend_from_slice(b"battery staple");
/// assert_eq!(seed.expose_secret(), b"correct horse battery staple");
/// assert_eq!(format!("{seed:?}"), "SecretVec([REDACTED])");
/// ```
///
/// ```compile_fail,E0599
/// let v = secret_arena::SecretVec::from_slice(b"k");
/// let copy = v.clone();
/// ```
pub struct SecretVec<A: Allocator = DefaultArena> {
    /// Invariant: every byte of the allocation outside `buf[..len]` that
    /// ever held a secret byte has been wiped.
    buf: Vec<u8, A>,
}

impl SecretVec {
    /// An empty buffer in the default arena; allocates nothing yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = secret_arena::SecretVec::new();
    /// assert!(v.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::new_in(DefaultArena)
    }

    /// An empty buffer with room for `capacity` bytes in the default arena.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = secret_arena::SecretVec::with_capacity(64);
    /// assert!(v.capacity() >= 64);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_in(capacity, DefaultArena)
    }

    /// A copy of `bytes` in the default arena.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let v = SecretVec::from_slice(b"api key");
    /// assert_eq!(v.expose_secret(), b"api key");
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::from_slice_in(bytes, DefaultArena)
    }
}

impl Default for SecretVec {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Allocator> SecretVec<A> {
    /// An empty buffer that will allocate from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let v = SecretVec::new_in(&arena);
    /// assert_eq!(v.capacity(), 0);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn new_in(alloc: A) -> Self {
        SecretVec { buf: Vec::new_in(alloc) }
    }

    /// An empty buffer with room for `capacity` bytes from `alloc`;
    /// aborts if the memory cannot be had.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let v = SecretVec::with_capacity_in(100, &arena);
    /// assert!(v.capacity() >= 100);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn with_capacity_in(capacity: usize, alloc: A) -> Self {
        SecretVec { buf: Vec::with_capacity_in(capacity, alloc) }
    }

    /// As [`with_capacity_in`](SecretVec::with_capacity_in), but returns an
    /// error instead of aborting.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when `alloc` cannot provide `capacity` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(4096)?;
    /// assert!(SecretVec::try_with_capacity_in(1 << 30, &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_with_capacity_in(capacity: usize, alloc: A) -> Result<Self, AllocError> {
        let mut buf = Vec::new_in(alloc);
        buf.try_reserve_exact(capacity).map_err(|_| AllocError)?;
        Ok(SecretVec { buf })
    }

    /// Number of secret bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(secret_arena::SecretVec::from_slice(b"abc").len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether there are no secret bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(secret_arena::SecretVec::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes the buffer holds without reallocating.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(secret_arena::SecretVec::with_capacity(10).capacity() >= 10);
    /// ```
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Shortens the buffer to `len` bytes, wiping the bytes cut off. Does
    /// nothing if `len >= self.len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let mut v = SecretVec::from_slice(b"secret!");
    /// v.truncate(6);
    /// assert_eq!(v.expose_secret(), b"secret");
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len < self.buf.len() {
            let cut = self.buf.len() - len;
            // SAFETY: `len..len + cut` lies inside the initialised part of
            // the buffer, which we borrow mutably.
            unsafe { wipe(self.buf.as_mut_ptr().add(len), cut) };
            self.buf.truncate(len);
        }
    }

    /// Wipes and empties the buffer; keeps its memory.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = secret_arena::SecretVec::from_slice(b"x");
    /// v.clear();
    /// assert!(v.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

impl<A: Allocator + Clone> SecretVec<A> {
    /// A copy of `bytes` in memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let v = SecretVec::from_slice_in(b"pin", &arena);
    /// assert!(arena.contains(v.expose_secret().as_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn from_slice_in(bytes: &[u8], alloc: A) -> Self {
        let mut v = Self::with_capacity_in(bytes.len(), alloc);
        v.extend_from_slice(bytes);
        v
    }

    /// Makes room for `additional` more bytes. When the buffer must move,
    /// the old block is wiped whole before it is freed.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when the allocator cannot provide the larger block;
    /// the buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = secret_arena::SecretVec::new();
    /// v.try_reserve(100)?;
    /// assert!(v.capacity() >= 100);
    /// # Ok::<(), secret_arena::allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), AllocError> {
        let needed = self.buf.len().checked_add(additional).ok_or(AllocError)?;
        if needed <= self.buf.capacity() {
            return Ok(());
        }
        let new_capacity = needed.max(self.buf.capacity().saturating_mul(2)).max(MIN_CAPACITY);
        let mut larger = Vec::new_in(self.buf.allocator().clone());
        larger.try_reserve_exact(new_capacity).map_err(|_| AllocError)?;
        larger.extend_from_slice(&self.buf);
        let mut old = core::mem::replace(&mut self.buf, larger);
        // SAFETY: `old` owns an allocation of `capacity()` bytes that nothing
        // else references; `u8` has no invalid bit patterns.
        unsafe { wipe(old.as_mut_ptr(), old.capacity()) };
        drop(old);
        Ok(())
    }

    /// As [`try_reserve`](SecretVec::try_reserve), aborting (as `Vec`
    /// does) when the memory cannot be had.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = secret_arena::SecretVec::new();
    /// v.reserve(10);
    /// assert!(v.capacity() >= 10);
    /// ```
    pub fn reserve(&mut self, additional: usize) {
        if self.try_reserve(additional).is_err() {
            let size = self.buf.len().saturating_add(additional).min(isize::MAX as usize);
            std::alloc::handle_alloc_error(Layout::from_size_align(size, 1).unwrap_or(Layout::new::<u8>()));
        }
    }

    /// Appends one byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let mut v = SecretVec::new();
    /// v.push(b'k');
    /// assert_eq!(v.expose_secret(), b"k");
    /// ```
    pub fn push(&mut self, byte: u8) {
        self.reserve(1);
        self.buf.push(byte);
    }

    /// Appends `bytes`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let mut v = SecretVec::new();
    /// v.extend_from_slice(&[1, 2]);
    /// assert_eq!(v.expose_secret(), &[1, 2]);
    /// ```
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// As [`extend_from_slice`](SecretVec::extend_from_slice), but returns
    /// an error instead of aborting when the buffer cannot grow.
    ///
    /// # Errors
    ///
    /// [`AllocError`]; the buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = secret_arena::SecretVec::new();
    /// v.try_extend_from_slice(b"abc")?;
    /// assert_eq!(v.len(), 3);
    /// # Ok::<(), secret_arena::allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), AllocError> {
        self.try_reserve(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Copies `src` in, then zeroizes `src` (its whole capacity), leaving
    /// it empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let mut from_network = b"session cookie".to_vec();
    /// let mut v = SecretVec::new();
    /// v.take_from(&mut from_network);
    /// assert!(from_network.is_empty());
    /// assert_eq!(v.expose_secret(), b"session cookie");
    /// ```
    pub fn take_from(&mut self, src: &mut std::vec::Vec<u8>) {
        self.extend_from_slice(src);
        zeroize::Zeroize::zeroize(src);
    }
}

impl<A: Allocator> Drop for SecretVec<A> {
    fn drop(&mut self) {
        // SAFETY: the buffer owns `capacity()` writable bytes and is not
        // borrowed; `u8` has no invalid bit patterns.
        unsafe { wipe(self.buf.as_mut_ptr(), self.buf.capacity()) };
    }
}

impl<A: Allocator> ExposeSecret<[u8]> for SecretVec<A> {
    fn expose_secret(&self) -> &[u8] {
        &self.buf
    }
}

impl<A: Allocator> ExposeSecretMut<[u8]> for SecretVec<A> {
    fn expose_secret_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl<A: Allocator> fmt::Debug for SecretVec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretVec([REDACTED])")
    }
}

/// `==` in constant time for equal lengths (`subtle` feature).
#[cfg(feature = "subtle")]
impl<A: Allocator> PartialEq for SecretVec<A> {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.expose_secret(), other.expose_secret()).into()
    }
}

#[cfg(feature = "subtle")]
impl<A: Allocator> Eq for SecretVec<A> {}
