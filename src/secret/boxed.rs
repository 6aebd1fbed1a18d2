//! [`SecretBox`]: one secret value in secret memory, zeroized on drop,
//! reachable only through [`ExposeSecret`] / [`ExposeSecretMut`].
//!
//! Three layers: `SecretBox` (zeroizes `T`, hides it) → an allocator (the
//! arena by default: wipes the chunk again on free) → the backing
//! (`memfd_secret` or an mlocked memfd).

use core::alloc::Layout;
use core::any::type_name;
use core::fmt;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box;
use zeroize::Zeroize;

use crate::global::DefaultArena;
use crate::wipe::wipe;

/// Read access to a secret, by explicit call only.
///
/// The same name and signature as in the `secrecy` crate, so code written
/// against `secrecy` only changes its `use` line.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let pin = SecretBox::new(1234u32);
/// assert_eq!(*pin.expose_secret(), 1234);
/// ```
pub trait ExposeSecret<S: ?Sized> {
    /// Borrows the secret. Keep the borrow short, and do not copy the value
    /// out of secret memory.
    fn expose_secret(&self) -> &S;
}

/// Write access to a secret, by explicit call only.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, ExposeSecretMut, SecretBox};
///
/// let mut key = SecretBox::new([0u8; 4]);
/// key.expose_secret_mut()[0] = 7;
/// assert_eq!(key.expose_secret(), &[7, 0, 0, 0]);
/// ```
pub trait ExposeSecretMut<S: ?Sized> {
    /// Borrows the secret mutably.
    fn expose_secret_mut(&mut self) -> &mut S;
}

/// Marker: a secret type that may be duplicated. [`SecretBox<T>`] is
/// `Clone` only when `T` implements this; each copy is zeroized on its own
/// drop.
///
/// Implemented for the integer types and for arrays of them.
///
/// # Examples
///
/// ```
/// use secret_arena::{CloneableSecret, ExposeSecret, SecretBox};
/// use zeroize::Zeroize;
///
/// #[derive(Clone, Default, Zeroize)]
/// struct SessionKey([u8; 16]);
/// impl CloneableSecret for SessionKey {}
///
/// let a = SecretBox::new(SessionKey([9; 16]));
/// let b = a.clone();
/// assert_eq!(b.expose_secret().0, [9; 16]);
/// ```
pub trait CloneableSecret: Clone + Zeroize {}

macro_rules! cloneable {
    ($($t:ty),*) => { $(impl CloneableSecret for $t {})* };
}
cloneable!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
impl<T: CloneableSecret, const N: usize> CloneableSecret for [T; N] {}

/// A secret `T` in memory from allocator `A` (by default the process-wide
/// secret arena, [`DefaultArena`]), zeroized when dropped.
///
/// - **Access** only through [`ExposeSecret::expose_secret`] and
///   [`ExposeSecretMut::expose_secret_mut`]: no `Deref`, no `Display`.
/// - **`Debug`** prints `SecretBox<T>([REDACTED])`, never the value.
/// - **`Clone`** only when `T: `[`CloneableSecret`].
/// - **Drop** calls `T::zeroize`, then `T`'s own `Drop`, and then frees
///   the memory, for every `T` and with any allocator; the secret arena
///   then wipes the whole chunk again (including padding bytes that
///   `zeroize` may not reach). For a `T` that is `ZeroizeOnDrop` or cleans
///   up in its own `Drop` but is not `Zeroize` (expanded cipher keys), see
///   [`SecretCell`](crate::SecretCell).
/// - **`Send` / `Sync`** follow `T` and `A` (the box is an owning pointer).
/// - With the `subtle` feature, `==` is constant-time through
///   `subtle::ConstantTimeEq`; with `serde`, it deserializes, and serializes
///   only when `T: SerializableSecret`.
///
/// # Constructors and stack copies
///
/// [`new`](SecretBox::new) takes the value by move, so the caller's copy of
/// it (a local, a temporary) stays wherever the compiler put it.
/// [`init_with_mut`](SecretBox::init_with_mut) never has the secret outside
/// secret memory: it allocates `T::default()` there and lets the closure
/// fill it in place. For bytes, [`zeroed`](SecretBox::zeroed) plus
/// `expose_secret_mut`, [`take_from_slice`](SecretBox::take_from_slice)
/// (copies, then zeroizes the source), and, with the `getrandom` feature,
/// `random` do the same. What a constructor closure leaves in its own
/// returned frames, [`wipe_stack`](crate::wipe_stack) overwrites.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let key = SecretBox::<[u8; 32]>::init_with_mut(|k| k.copy_from_slice(&[0x42; 32]));
/// assert_eq!(format!("{key:?}"), "SecretBox<[u8; 32]>([REDACTED])");
/// assert_eq!(key.expose_secret()[0], 0x42);
/// assert!(secret_arena::global()?.contains(key.expose_secret().as_ptr()));
/// # Ok::<(), secret_arena::Error>(())
/// ```
///
/// Many named keys, and the table that holds them, in one arena of your own:
///
/// ```
/// use hashbrown::HashMap;
/// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
///
/// let arena = SecretArena::new(64 << 10)?;
/// let mut keys = HashMap::new_in(&arena);
/// for (name, byte) in [("tls", 1u8), ("db", 2), ("backup", 3)] {
///     keys.insert(name, SecretBox::<[u8; 32], _>::init_with_mut_in(|k| k.fill(byte), &arena));
/// }
/// assert_eq!(keys["db"].expose_secret()[0], 2);
/// assert!(arena.contains(keys["tls"].expose_secret().as_ptr()));
/// drop(keys);
/// assert_eq!(arena.stats().in_use, 0);
/// # Ok::<(), secret_arena::Error>(())
/// ```
///
/// Misuse does not compile. There is no `Display`, even when `T` has one:
///
/// ```compile_fail,E0277
/// let pin = secret_arena::SecretBox::new(1234u32);
/// println!("{}", pin);
/// ```
///
/// No `Clone` unless `T: CloneableSecret`:
///
/// ```compile_fail,E0599
/// let key = secret_arena::SecretBox::new(vec![1u8; 32]);
/// let copy = key.clone();
/// ```
///
/// No way to the value but `expose_secret` (no `Deref`, no public field):
///
/// ```compile_fail,E0614
/// let key = secret_arena::SecretBox::new([1u8; 32]);
/// let bytes: [u8; 32] = *key;
/// ```
///
/// ```compile_fail,E0616
/// let key = secret_arena::SecretBox::new([1u8; 32]);
/// let bytes = &key.inner;
/// ```
///
/// A `T` that must stay on one thread keeps its box there:
///
/// ```compile_fail,E0277
/// use zeroize::Zeroize;
/// #[derive(Default)]
/// struct ThreadBound(u64, core::marker::PhantomData<*const ()>);
/// impl Zeroize for ThreadBound { fn zeroize(&mut self) { self.0.zeroize() } }
///
/// let secret = secret_arena::SecretBox::new(ThreadBound::default());
/// std::thread::spawn(move || drop(secret));
/// ```
pub struct SecretBox<T: Zeroize + ?Sized, A: Allocator = DefaultArena> {
    /// Invariant: the value is zeroized (in `Drop`) before the memory is
    /// handed back to `A`. `ManuallyDrop` because `Drop` takes the box
    /// apart itself.
    inner: ManuallyDrop<Box<T, A>>,
}

/// A boxed slice of secret values; `SecretSlice<u8>` holds key bytes.
/// The same alias as in `secrecy`.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretSlice};
///
/// let key: SecretSlice<u8> = SecretSlice::from_slice(b"0123456789abcdef");
/// assert_eq!(key.expose_secret().len(), 16);
/// ```
pub type SecretSlice<T, A = DefaultArena> = SecretBox<[T], A>;

impl<T: Zeroize> SecretBox<T> {
    /// Moves `value` into the default arena.
    ///
    /// The argument itself is a copy outside secret memory; prefer
    /// [`init_with_mut`](SecretBox::init_with_mut) for values that are
    /// computed. Aborts, as `Box::new` does, if no memory can be had; see
    /// [`try_new`](SecretBox::try_new).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let token = SecretBox::new(0xDEAD_BEEF_u64);
    /// assert_eq!(*token.expose_secret(), 0xDEAD_BEEF);
    /// ```
    pub fn new(value: T) -> Self {
        Self::new_in(value, DefaultArena)
    }

    /// As [`new`](SecretBox::new), but returns an error instead of
    /// aborting when the arena is full or cannot be created
    /// ([`global()`](crate::global()) and
    /// [`SecretArena::last_error`](crate::SecretArena::last_error) say why).
    ///
    /// # Errors
    ///
    /// [`AllocError`] when the memory cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let key = SecretBox::try_new([7u8; 32])?;
    /// assert_eq!(key.expose_secret()[31], 7);
    /// # Ok::<(), secret_arena::allocator_api2::alloc::AllocError>(())
    /// ```
    pub fn try_new(value: T) -> Result<Self, AllocError> {
        Self::try_new_in(value, DefaultArena)
    }
}

impl<T: Zeroize + Default> SecretBox<T> {
    /// Allocates `T::default()` in the default arena and lets `ctr` fill it
    /// in place, so the secret never exists outside secret memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let key = SecretBox::<[u8; 32]>::init_with_mut(|k| {
    ///     for (i, b) in k.iter_mut().enumerate() {
    ///         *b = i as u8;
    ///     }
    /// });
    /// assert_eq!(key.expose_secret()[5], 5);
    /// ```
    pub fn init_with_mut(ctr: impl FnOnce(&mut T)) -> Self {
        Self::init_with_mut_in(ctr, DefaultArena)
    }

    /// As [`init_with_mut`](SecretBox::init_with_mut) for a fallible
    /// initialiser; on error the partly built secret is zeroized and freed.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let hex = "00ff10";
    /// let key = SecretBox::<[u8; 3]>::try_init_with_mut(|k| {
    ///     for (i, b) in k.iter_mut().enumerate() {
    ///         *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    ///     }
    ///     Ok::<(), core::num::ParseIntError>(())
    /// })?;
    /// assert_eq!(key.expose_secret(), &[0x00, 0xff, 0x10]);
    /// # Ok::<(), core::num::ParseIntError>(())
    /// ```
    pub fn try_init_with_mut<E>(ctr: impl FnOnce(&mut T) -> Result<(), E>) -> Result<Self, E> {
        Self::try_init_with_mut_in(ctr, DefaultArena)
    }

    /// Moves the value out of `src` into the default arena, leaving
    /// `src` zeroized. The move is a `mem::swap` with a default value, so
    /// for a `Vec` or `String` only the pointer moves (and its heap buffer
    /// stays where it is: use [`SecretVec`](crate::SecretVec) /
    /// [`SecretString`](crate::SecretString) to bring the bytes in).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let mut received = [0x5Au8; 32];
    /// let key = SecretBox::take_from(&mut received);
    /// assert_eq!(received, [0; 32]);
    /// assert_eq!(key.expose_secret()[0], 0x5A);
    /// ```
    pub fn take_from(src: &mut T) -> Self {
        Self::take_from_in(src, DefaultArena)
    }
}

impl<T: Zeroize> SecretBox<T> {
    /// Moves the value `ctr` returns into the default arena, then wipes the
    /// bytes of the place it was returned in (the `secrecy` method of the
    /// same name; here `T` need not be `Clone`). Copies the compiler made
    /// inside `ctr` are not reached: prefer
    /// [`init_with_mut`](SecretBox::init_with_mut), or call
    /// [`wipe_stack`](crate::wipe_stack) right after.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let key = SecretBox::init_with(|| [0x11u8; 32]);
    /// assert_eq!(key.expose_secret()[0], 0x11);
    /// ```
    pub fn init_with(ctr: impl FnOnce() -> T) -> Self {
        let mut value = MaybeUninit::new(ctr());
        // SAFETY: `value` holds an initialised `T`; it is a `MaybeUninit`,
        // so it is neither read as `T` nor dropped afterwards.
        unsafe { Self::move_from_raw(value.as_mut_ptr(), DefaultArena) }
    }

    /// As [`init_with`](SecretBox::init_with) for a fallible constructor.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretBox};
    ///
    /// let pin = SecretBox::try_init_with(|| "4711".parse::<u32>())?;
    /// assert_eq!(*pin.expose_secret(), 4711);
    /// # Ok::<(), core::num::ParseIntError>(())
    /// ```
    pub fn try_init_with<E>(ctr: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        let mut value = MaybeUninit::new(ctr()?);
        // SAFETY: as in `init_with`.
        Ok(unsafe { Self::move_from_raw(value.as_mut_ptr(), DefaultArena) })
    }
}

/// Moves the value out of a heap `Box` into the default arena without
/// passing it through the stack, wipes the heap block, and frees it.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let key = SecretBox::from(Box::new([7u8; 64]));
/// assert_eq!(key.expose_secret()[63], 7);
/// ```
impl<T: Zeroize> From<std::boxed::Box<T>> for SecretBox<T> {
    fn from(boxed: std::boxed::Box<T>) -> Self {
        let raw = std::boxed::Box::into_raw(boxed);
        // SAFETY: `raw` is a live, initialised `T` that we own; after the
        // move it is freed below as `MaybeUninit<T>`, so it is not dropped.
        let secret = unsafe { Self::move_from_raw(raw, DefaultArena) };
        // SAFETY: `raw` came from `Box::into_raw` with `T`'s layout, which
        // `MaybeUninit<T>` shares.
        drop(unsafe { std::boxed::Box::from_raw(raw.cast::<MaybeUninit<T>>()) });
        secret
    }
}

impl<T: Zeroize, A: Allocator> SecretBox<T, A> {
    /// Moves the `T` at `src` into memory from `alloc`, then wipes the
    /// `size_of::<T>()` bytes at `src`.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads and writes of a `T` and hold an
    /// initialised `T`. Afterwards it holds no value: the caller must not
    /// read it as a `T` or drop it.
    unsafe fn move_from_raw(src: *mut T, alloc: A) -> Self {
        let mut slot = Box::new_uninit_in(alloc);
        // SAFETY: `src` is a readable `T` (caller) and `slot` a fresh,
        // writable, non-overlapping one.
        unsafe { core::ptr::copy_nonoverlapping(src, slot.as_mut_ptr(), 1) };
        // SAFETY: `src` is writable for `size_of::<T>()` bytes (caller), and
        // no longer holds a value anyone will read.
        unsafe { wipe(src.cast::<u8>(), size_of::<T>()) };
        // SAFETY: the copy above initialised `slot`.
        SecretBox { inner: ManuallyDrop::new(unsafe { slot.assume_init() }) }
    }

    /// Moves `value` into memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretBox::new_in([1u8; 16], &arena);
    /// assert!(arena.contains(key.expose_secret().as_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn new_in(value: T, alloc: A) -> Self {
        SecretBox { inner: ManuallyDrop::new(Box::new_in(value, alloc)) }
    }

    /// As [`new_in`](SecretBox::new_in), but returns an error instead of
    /// aborting when `alloc` is out of memory. For in-place construction
    /// that may fail, pass `T::default()` and fill it through
    /// [`expose_secret_mut`](ExposeSecretMut::expose_secret_mut).
    ///
    /// # Errors
    ///
    /// [`AllocError`] when `alloc` cannot provide the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(4096)?;
    /// assert!(SecretBox::try_new_in([0u8; 64], &arena).is_ok());
    /// // Far more than the arena may ever hold.
    /// assert!(SecretBox::try_new_in([0u8; 1 << 20], &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_new_in(value: T, alloc: A) -> Result<Self, AllocError> {
        Ok(SecretBox { inner: ManuallyDrop::new(Box::try_new_in(value, alloc)?) })
    }
}

impl<T: Zeroize + Default, A: Allocator> SecretBox<T, A> {
    /// [`init_with_mut`](SecretBox::init_with_mut) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretBox::<[u8; 32], _>::init_with_mut_in(|k| k.fill(3), &arena);
    /// assert_eq!(key.expose_secret(), &[3; 32]);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn init_with_mut_in(ctr: impl FnOnce(&mut T), alloc: A) -> Self {
        let mut secret = Self::new_in(T::default(), alloc);
        ctr(secret.expose_secret_mut());
        secret
    }

    /// [`try_init_with_mut`](SecretBox::try_init_with_mut) with memory from
    /// `alloc`.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns; the secret is zeroized and freed first.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let r = SecretBox::<[u8; 8], _>::try_init_with_mut_in(|_| Err("bad input"), &arena);
    /// assert!(r.is_err());
    /// assert_eq!(arena.stats().in_use, 0);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_init_with_mut_in<E>(ctr: impl FnOnce(&mut T) -> Result<(), E>, alloc: A) -> Result<Self, E> {
        let mut secret = Self::new_in(T::default(), alloc);
        ctr(secret.expose_secret_mut())?;
        Ok(secret)
    }

    /// [`take_from`](SecretBox::take_from) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretBox};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let mut nonce_key = 0x1234_5678_u64;
    /// let key = SecretBox::take_from_in(&mut nonce_key, &arena);
    /// assert_eq!((nonce_key, *key.expose_secret()), (0, 0x1234_5678));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn take_from_in(src: &mut T, alloc: A) -> Self {
        let mut secret = Self::new_in(T::default(), alloc);
        core::mem::swap(secret.expose_secret_mut(), src);
        src.zeroize();
        secret
    }
}

impl<T: Zeroize + ?Sized, A: Allocator> SecretBox<T, A> {
    /// Wraps a box whose contents are already the secret.
    pub(crate) fn from_box(inner: Box<T, A>) -> Self {
        SecretBox { inner: ManuallyDrop::new(inner) }
    }
}

impl<T: Zeroize + ?Sized, A: Allocator> Drop for SecretBox<T, A> {
    /// Calls `T::zeroize`, then `T`'s own `Drop`, then frees the memory:
    /// always, for every `T` and every allocator. The secret arena then
    /// wipes the whole chunk again, padding included.
    ///
    /// `T::zeroize` is called even for a `T` without drop glue: such a `T`
    /// may still point at secret bytes elsewhere (a key handle holding a
    /// `&mut [u8; 32]`), and only its `Zeroize` knows to clear them.
    fn drop(&mut self) {
        // SAFETY: `inner` is taken once, here, and never used again.
        let boxed = unsafe { ManuallyDrop::take(&mut self.inner) };
        let layout = Layout::for_value::<T>(&boxed);
        let (raw, alloc) = Box::into_raw_with_allocator(boxed);
        // Frees the memory even if `zeroize` or `T`'s `Drop` panics.
        let _free = FreeOnDrop { ptr: raw.cast::<u8>(), layout, alloc };
        // SAFETY: `raw` is the live, initialised `T` the box owned, and
        // nothing else refers to it.
        unsafe { (*raw).zeroize() };
        // SAFETY: as above; the `T` is dropped once and not used afterwards
        // (`_free` only hands the bytes back to the allocator).
        unsafe { core::ptr::drop_in_place(raw) };
    }
}

/// Hands a block back to its allocator when dropped, on the normal path and
/// when unwinding out of a panicking `zeroize` or `Drop`.
struct FreeOnDrop<A: Allocator> {
    /// Invariant: allocated by `alloc` with `layout`, or dangling when
    /// `layout.size() == 0`; holds no live value.
    ptr: *mut u8,
    layout: Layout,
    alloc: A,
}

impl<A: Allocator> Drop for FreeOnDrop<A> {
    #[inline]
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: the invariant: `ptr` came from `alloc` with `layout`,
            // is non-null, and is freed only here.
            unsafe { self.alloc.deallocate(NonNull::new_unchecked(self.ptr), self.layout) };
        }
    }
}

impl<T: Zeroize + ?Sized, A: Allocator> ExposeSecret<T> for SecretBox<T, A> {
    #[inline]
    fn expose_secret(&self) -> &T {
        &self.inner
    }
}

impl<T: Zeroize + ?Sized, A: Allocator> ExposeSecretMut<T> for SecretBox<T, A> {
    #[inline]
    fn expose_secret_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: Zeroize + ?Sized, A: Allocator> fmt::Debug for SecretBox<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBox<{}>([REDACTED])", type_name::<T>())
    }
}

impl<T: CloneableSecret, A: Allocator + Clone> Clone for SecretBox<T, A> {
    fn clone(&self) -> Self {
        Self::new_in(self.expose_secret().clone(), Box::allocator(&self.inner).clone())
    }
}

impl<T: Zeroize + Default, A: Allocator + Default> Default for SecretBox<T, A> {
    /// `T::default()` in secret memory.
    fn default() -> Self {
        Self::new_in(T::default(), A::default())
    }
}
