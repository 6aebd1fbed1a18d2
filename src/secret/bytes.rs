//! Byte secrets: [`SecretBox<[u8]>`](SecretBox) constructors that never put
//! the secret on the stack, and constant-time equality (`subtle` feature).

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box;
use zeroize::Zeroize;

use crate::global::DefaultArena;
#[cfg(feature = "subtle")]
use crate::secret::boxed::ExposeSecret;
use crate::secret::boxed::{ExposeSecretMut, SecretBox};

impl SecretBox<[u8]> {
    /// `len` zero bytes in the default arena, to be filled through
    /// [`expose_secret_mut`](ExposeSecretMut::expose_secret_mut).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, ExposeSecretMut, SecretBox};
    ///
    /// let mut key = SecretBox::<[u8]>::zeroed(48);
    /// key.expose_secret_mut()[..4].copy_from_slice(b"abcd");
    /// assert_eq!(&key.expose_secret()[..5], b"abcd\0");
    /// ```
    pub fn zeroed(len: usize) -> Self {
        Self::zeroed_in(len, DefaultArena)
    }

    /// A copy of `bytes` in the default arena. The source is left alone;
    /// see [`take_from_slice`](SecretBox::take_from_slice) to wipe it.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let key = SecretBox::from_slice(b"not really secret");
    /// assert_eq!(key.expose_secret(), b"not really secret");
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::from_slice_in(bytes, DefaultArena)
    }

    /// Copies `src` into the default arena, then zeroizes `src`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let mut buf = *b"password from the network";
    /// let secret = SecretBox::take_from_slice(&mut buf[..8]);
    /// assert_eq!(secret.expose_secret(), b"password");
    /// assert_eq!(&buf[..9], b"\0\0\0\0\0\0\0\0 ");
    /// ```
    pub fn take_from_slice(src: &mut [u8]) -> Self {
        Self::take_from_slice_in(src, DefaultArena)
    }

    /// `len` random bytes from the OS (`getrandom`), written straight into
    /// the default arena.
    ///
    /// # Errors
    ///
    /// The OS random source failed; the box is zeroized and freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let key = SecretBox::<[u8]>::random(32)?;
    /// assert_eq!(key.expose_secret().len(), 32);
    ///
    /// // A fixed-size key: getrandom writes into the box directly.
    /// let key = SecretBox::<[u8; 32]>::try_init_with_mut(|k| getrandom::fill(k))?;
    /// assert_ne!(key.expose_secret(), &[0; 32]);
    /// # Ok::<(), getrandom::Error>(())
    /// ```
    #[cfg(feature = "getrandom")]
    pub fn random(len: usize) -> Result<Self, getrandom::Error> {
        Self::random_in(len, DefaultArena)
    }
}

impl<A: Allocator> SecretBox<[u8], A> {
    /// [`zeroed`](SecretBox::zeroed) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretBox::zeroed_in(32, &arena);
    /// assert_eq!(key.expose_secret(), &[0u8; 32][..]);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn zeroed_in(len: usize, alloc: A) -> Self {
        // SAFETY: the memory is zeroed, and zero bytes are valid `u8`s.
        SecretBox::from_box(unsafe { Box::new_zeroed_slice_in(len, alloc).assume_init() })
    }

    /// As [`zeroed_in`](SecretBox::zeroed_in), but returns an error instead
    /// of aborting when `alloc` is out of memory.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when `alloc` cannot provide `len` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(4096)?;
    /// assert!(SecretBox::try_zeroed_in(1 << 30, &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_zeroed_in(len: usize, alloc: A) -> Result<Self, AllocError> {
        let zeroed = Box::try_new_zeroed_slice_in(len, alloc)?;
        // SAFETY: the memory is zeroed, and zero bytes are valid `u8`s.
        Ok(SecretBox::from_box(unsafe { zeroed.assume_init() }))
    }

    /// [`from_slice`](SecretBox::from_slice) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretBox::from_slice_in(&[1, 2, 3], &arena);
    /// assert_eq!(key.expose_secret(), &[1, 2, 3]);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn from_slice_in(bytes: &[u8], alloc: A) -> Self {
        let mut secret = Self::zeroed_in(bytes.len(), alloc);
        secret.expose_secret_mut().copy_from_slice(bytes);
        secret
    }

    /// [`take_from_slice`](SecretBox::take_from_slice) with memory from
    /// `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let mut src = [9u8; 4];
    /// let key = SecretBox::take_from_slice_in(&mut src, &arena);
    /// assert_eq!((src, key.expose_secret()), ([0; 4], &[9u8; 4][..]));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn take_from_slice_in(src: &mut [u8], alloc: A) -> Self {
        let secret = Self::from_slice_in(src, alloc);
        src.zeroize();
        secret
    }

    /// [`random`](SecretBox::random) with memory from `alloc`.
    ///
    /// # Errors
    ///
    /// The OS random source failed; the box is zeroized and freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretBox::random_in(32, &arena).expect("OS randomness");
    /// assert_ne!(key.expose_secret(), &[0u8; 32][..]);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    #[cfg(feature = "getrandom")]
    pub fn random_in(len: usize, alloc: A) -> Result<Self, getrandom::Error> {
        let mut secret = Self::zeroed_in(len, alloc);
        getrandom::fill(secret.expose_secret_mut())?;
        Ok(secret)
    }
}

/// Copies the bytes into the default arena and zeroizes the `Vec`'s whole
/// buffer before it is freed (as `secrecy`'s `SecretSlice::from(Vec)`).
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretSlice};
///
/// let key = SecretSlice::from(vec![1u8, 2, 3]);
/// assert_eq!(key.expose_secret(), &[1, 2, 3]);
/// ```
impl From<std::vec::Vec<u8>> for SecretBox<[u8]> {
    fn from(mut bytes: std::vec::Vec<u8>) -> Self {
        let secret = Self::from_slice(&bytes);
        bytes.zeroize();
        secret
    }
}

/// Constant-time comparison of the secrets' bytes (`subtle` feature), for
/// any `T` that is bytes: arrays, slices, `str`, `Vec<u8>`.
///
/// Only the length is compared with an early exit: secrets of different
/// lengths are unequal at once (the length is not treated as secret).
///
/// # Examples
///
/// ```
/// use secret_arena::SecretBox;
/// use subtle::ConstantTimeEq;
///
/// let a = SecretBox::new([1u8; 32]);
/// let b = SecretBox::new([1u8; 32]);
/// assert!(bool::from(a.ct_eq(&b)));
/// assert!(a == b);
/// assert!(a != SecretBox::new([2u8; 32]));
/// ```
#[cfg(feature = "subtle")]
impl<T: Zeroize + ?Sized + AsRef<[u8]>, A: Allocator> subtle::ConstantTimeEq for SecretBox<T, A> {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.expose_secret().as_ref().ct_eq(other.expose_secret().as_ref())
    }
}

/// `==` through [`subtle::ConstantTimeEq`]: no early exit on the first
/// differing byte.
#[cfg(feature = "subtle")]
impl<T: Zeroize + ?Sized + AsRef<[u8]>, A: Allocator> PartialEq for SecretBox<T, A> {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self, other).into()
    }
}

#[cfg(feature = "subtle")]
impl<T: Zeroize + ?Sized + AsRef<[u8]>, A: Allocator> Eq for SecretBox<T, A> {}
