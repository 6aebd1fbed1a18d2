//! [`SecretCell`]: any `T` in secret memory, for key types that are not
//! `Zeroize` (expanded ciphers, dalek secrets): they clean up in their own
//! `Drop` or are `ZeroizeOnDrop`, and the memory they lived in is wiped
//! after them.

use core::any::type_name;
use core::fmt;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box;

use crate::global::DefaultArena;
use crate::secret::boxed::{ExposeSecret, ExposeSecretMut};
use crate::wipe::wipe;

/// Any `T` in memory from allocator `A` (by default the process-wide secret
/// arena), its bytes wiped after it is dropped.
///
/// [`SecretBox`](crate::SecretBox) needs `T: Zeroize`. The key types people
/// hold mostly are not: `aes_gcm::Aes256Gcm` and
/// `chacha20poly1305::ChaCha20Poly1305` (0.10 and 0.11),
/// `x25519_dalek::StaticSecret` 3 and `ed25519_dalek::SigningKey` are
/// `ZeroizeOnDrop` or wipe themselves in their `Drop`, or (without their
/// `zeroize` feature) do nothing. `SecretCell<T>` takes any `T`:
///
/// - **Drop** runs `T`'s own `Drop` (a `ZeroizeOnDrop` type zeroizes
///   itself there), then overwrites all `size_of::<T>()` bytes, padding
///   included, then frees the memory. So the bytes are zero with any
///   allocator, and whether or not `T` cleans up after itself; the secret
///   arena wipes the chunk once more.
/// - **Access**, `Debug`, `Send`/`Sync`: as `SecretBox` (no `Deref`, no
///   `Clone`, `Debug` prints `SecretCell<T>([REDACTED])`).
/// - **Not reached:** heap memory that `T` itself owns (a `Vec` inside
///   `T`) comes from the global allocator, unless the program installs
///   [`SecretGlobalAlloc`](crate::SecretGlobalAlloc). None of the key types
///   above owns any.
///
/// # Construction and the stack
///
/// Rust builds a value where it likes, and a constructor such as
/// `Aes256Gcm::new(&key)` returns its result through a stack slot. What
/// each constructor leaves outside secret memory:
///
/// - [`init_with(|| T)`](SecretCell::init_with) allocates first, then
///   moves the returned `T` in and wipes the slot it was returned in. The
///   constructor's own temporaries (a key schedule being expanded, a copy of
///   the key bytes it was passed, spilled registers) are in stack frames
///   that have already returned: call [`wipe_stack`](crate::wipe_stack)
///   right after to overwrite them.
/// - [`init_with_mut`](SecretCell::init_with_mut) (for `T: Default`) puts
///   `T::default()` in secret memory first and lets the closure fill it in
///   place: for key arrays (`aes_gcm::Key<Aes256Gcm>`) nothing but the
///   zeroed default passes the stack.
/// - [`new`](SecretCell::new) takes a value that already exists somewhere:
///   that place keeps its copy.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretCell, wipe_stack};
///
/// // A type with no `Zeroize`, which `SecretBox` would not take.
/// struct RoundKeys([u32; 60]);
///
/// let keys = SecretCell::init_with(|| RoundKeys([0x0123_4567; 60]));
/// wipe_stack(16 << 10);
/// assert_eq!(keys.expose_secret().0[59], 0x0123_4567);
/// assert!(secret_arena::global()?.contains(keys.expose_ptr()));
/// assert_eq!(format!("{keys:?}"), format!("SecretCell<{}>([REDACTED])", core::any::type_name::<RoundKeys>()));
/// # Ok::<(), secret_arena::Error>(())
/// ```
///
/// No `Clone`, and no way to the value but `expose_secret`:
///
/// ```compile_fail,E0599
/// let k = secret_arena::SecretCell::new([1u8; 32]);
/// let copy = k.clone();
/// ```
///
/// ```compile_fail,E0614
/// let k = secret_arena::SecretCell::new([1u8; 32]);
/// let bytes: [u8; 32] = *k;
/// ```
pub struct SecretCell<T, A: Allocator = DefaultArena> {
    /// Invariant: after `T` is dropped (in `Drop`), all `size_of::<T>()`
    /// bytes are wiped before the memory is handed back to `A`.
    inner: ManuallyDrop<Box<T, A>>,
}

impl<T> SecretCell<T> {
    /// Moves `value` into the default arena. The argument itself is a copy
    /// outside secret memory; prefer [`init_with`](SecretCell::init_with).
    /// Aborts, as `Box::new` does, if no memory can be had.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretCell};
    ///
    /// let k = SecretCell::new([7u8; 32]);
    /// assert_eq!(k.expose_secret()[0], 7);
    /// ```
    pub fn new(value: T) -> Self {
        Self::new_in(value, DefaultArena)
    }

    /// Allocates in the default arena, then moves the value `ctr` returns
    /// in and wipes the slot it was returned in. See the type's docs for
    /// what may remain on the stack, and [`wipe_stack`](crate::wipe_stack).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretCell};
    ///
    /// let k = SecretCell::init_with(|| [0x11u64; 8]);
    /// assert_eq!(k.expose_secret()[7], 0x11);
    /// ```
    pub fn init_with(ctr: impl FnOnce() -> T) -> Self {
        Self::init_with_in(ctr, DefaultArena)
    }

    /// As [`init_with`](SecretCell::init_with) for a fallible constructor;
    /// nothing is allocated for long if it fails.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretCell};
    ///
    /// let pin = SecretCell::try_init_with(|| "4711".parse::<u32>())?;
    /// assert_eq!(*pin.expose_secret(), 4711);
    /// # Ok::<(), core::num::ParseIntError>(())
    /// ```
    pub fn try_init_with<E>(ctr: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        Self::try_init_with_in(ctr, DefaultArena)
    }
}

impl<T: Default> SecretCell<T> {
    /// Allocates `T::default()` in the default arena and lets `ctr` fill it
    /// in place. For key arrays this takes the key bytes straight into
    /// secret memory, with no `zeroize` feature on the array type:
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretCell};
    ///
    /// // Stands for `aes_gcm::Key<Aes256Gcm>` (a `Default` byte array).
    /// type Key = [u8; 32];
    /// let mut received = [0x42u8; 32];
    /// let key = SecretCell::<Key>::init_with_mut(|k| k.copy_from_slice(&received));
    /// zeroize::Zeroize::zeroize(&mut received);
    /// assert_eq!(key.expose_secret(), &[0x42; 32]);
    /// ```
    pub fn init_with_mut(ctr: impl FnOnce(&mut T)) -> Self {
        Self::init_with_mut_in(ctr, DefaultArena)
    }

    /// As [`init_with_mut`](SecretCell::init_with_mut) for a fallible
    /// initialiser, such as reading key bytes in place; on error the partly
    /// filled value is dropped and its bytes wiped.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Read;
    /// use secret_arena::{ExposeSecret, SecretCell};
    ///
    /// let key = SecretCell::<[u8; 32]>::try_init_with_mut(|k| {
    ///     std::fs::File::open("/dev/urandom")?.read_exact(k)
    /// })?;
    /// assert_ne!(key.expose_secret(), &[0; 32]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_init_with_mut<E>(ctr: impl FnOnce(&mut T) -> Result<(), E>) -> Result<Self, E> {
        Self::try_init_with_mut_in(ctr, DefaultArena)
    }
}

impl<T, A: Allocator> SecretCell<T, A> {
    /// [`new`](SecretCell::new) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(16 << 10)?;
    /// let k = SecretCell::new_in([1u8; 16], &arena);
    /// assert!(arena.contains(k.expose_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn new_in(value: T, alloc: A) -> Self {
        SecretCell { inner: ManuallyDrop::new(Box::new_in(value, alloc)) }
    }

    /// As [`new_in`](SecretCell::new_in), but returns an error instead of
    /// aborting when `alloc` is out of memory; `value` is then dropped.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when `alloc` cannot provide the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(4096)?;
    /// assert!(SecretCell::try_new_in([0u8; 64], &arena).is_ok());
    /// assert!(SecretCell::try_new_in([0u8; 1 << 20], &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_new_in(value: T, alloc: A) -> Result<Self, AllocError> {
        Ok(SecretCell { inner: ManuallyDrop::new(Box::try_new_in(value, alloc)?) })
    }

    /// [`init_with`](SecretCell::init_with) with memory from `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(16 << 10)?;
    /// let k = SecretCell::init_with_in(|| [3u8; 32], &arena);
    /// assert!(arena.contains(k.expose_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn init_with_in(ctr: impl FnOnce() -> T, alloc: A) -> Self {
        let slot = Box::new_uninit_in(alloc);
        Self::fill(slot, ctr())
    }

    /// [`try_init_with`](SecretCell::try_init_with) with memory from
    /// `alloc`.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(16 << 10)?;
    /// let r = SecretCell::<u32, _>::try_init_with_in(|| "x".parse(), &arena);
    /// assert!(r.is_err());
    /// assert_eq!(arena.stats().in_use, 0);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_init_with_in<E>(ctr: impl FnOnce() -> Result<T, E>, alloc: A) -> Result<Self, E> {
        let slot = Box::new_uninit_in(alloc);
        Ok(Self::fill(slot, ctr()?))
    }

    /// Moves `value` into `slot`, then wipes the bytes `value` was in.
    ///
    /// `#[inline(always)]` so `value` is the caller's own return slot for
    /// `ctr()`, not one more copy in a frame of ours.
    #[inline(always)]
    fn fill(mut slot: Box<MaybeUninit<T>, A>, value: T) -> Self {
        let mut value = MaybeUninit::new(value);
        // SAFETY: `value` holds an initialised `T`, `slot` is writable for
        // one `T`, and the two do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(value.as_ptr(), slot.as_mut_ptr(), 1) };
        // SAFETY: `value`'s bytes are ours; the `T` in them was moved out
        // above and, being in a `MaybeUninit`, is never read or dropped.
        unsafe { wipe(value.as_mut_ptr().cast::<u8>(), size_of::<T>()) };
        // SAFETY: the copy above initialised `slot`.
        SecretCell { inner: ManuallyDrop::new(unsafe { slot.assume_init() }) }
    }

    /// The address of the value, to check where it lives
    /// ([`SecretArena::contains`](crate::SecretArena::contains)) without
    /// exposing it.
    ///
    /// # Examples
    ///
    /// ```
    /// let k = secret_arena::SecretCell::new(5u64);
    /// assert!(secret_arena::global()?.contains(k.expose_ptr()));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn expose_ptr(&self) -> *const u8 {
        (&raw const **self.inner).cast::<u8>()
    }
}

impl<T: Default, A: Allocator> SecretCell<T, A> {
    /// [`init_with_mut`](SecretCell::init_with_mut) with memory from
    /// `alloc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(16 << 10)?;
    /// let k = SecretCell::<[u8; 32], _>::init_with_mut_in(|k| k.fill(9), &arena);
    /// assert_eq!(k.expose_secret(), &[9; 32]);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn init_with_mut_in(ctr: impl FnOnce(&mut T), alloc: A) -> Self {
        let mut cell = Self::init_with_in(T::default, alloc);
        ctr(cell.expose_secret_mut());
        cell
    }

    /// [`try_init_with_mut`](SecretCell::try_init_with_mut) with memory
    /// from `alloc`.
    ///
    /// # Errors
    ///
    /// Whatever `ctr` returns; the cell is dropped and wiped first.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretCell};
    ///
    /// let arena = SecretArena::new(16 << 10)?;
    /// let r = SecretCell::<[u8; 8], _>::try_init_with_mut_in(|_| Err("short read"), &arena);
    /// assert!(r.is_err());
    /// assert_eq!(arena.stats().in_use, 0);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn try_init_with_mut_in<E>(ctr: impl FnOnce(&mut T) -> Result<(), E>, alloc: A) -> Result<Self, E> {
        let mut cell = Self::init_with_in(T::default, alloc);
        ctr(cell.expose_secret_mut())?;
        Ok(cell)
    }
}

impl<T, A: Allocator> Drop for SecretCell<T, A> {
    /// Drops `T`, wipes its bytes, frees the memory.
    fn drop(&mut self) {
        // SAFETY: `inner` is taken once, here, and never used again.
        let boxed = unsafe { ManuallyDrop::take(&mut self.inner) };
        let (raw, alloc) = Box::into_raw_with_allocator(boxed);
        // Frees (and wipes) the memory even if `T`'s `Drop` panics.
        let _free = WipeAndFree { ptr: raw, alloc };
        // SAFETY: `raw` is the live, initialised `T` the box owned; it is
        // dropped once, and afterwards only its bytes are overwritten.
        unsafe { core::ptr::drop_in_place(raw) };
    }
}

/// Wipes and frees a `T`'s memory when dropped, on the normal path and when
/// unwinding out of `T`'s `Drop`.
struct WipeAndFree<T, A: Allocator> {
    /// Invariant: allocated by `alloc` for one `T` (dangling if zero-size);
    /// the `T` in it has been dropped, or is being unwound out of.
    ptr: *mut T,
    alloc: A,
}

impl<T, A: Allocator> Drop for WipeAndFree<T, A> {
    #[inline]
    fn drop(&mut self) {
        if size_of::<T>() == 0 {
            return;
        }
        // SAFETY: `ptr` is writable for `size_of::<T>()` bytes that nothing
        // refers to any more; the dropped `T` is never read again.
        unsafe { wipe(self.ptr.cast::<u8>(), size_of::<T>()) };
        // SAFETY: the invariant: `ptr` came from `alloc` with `T`'s layout
        // and is freed only here.
        unsafe {
            self.alloc.deallocate(NonNull::new_unchecked(self.ptr.cast::<u8>()), core::alloc::Layout::new::<T>())
        };
    }
}

impl<T, A: Allocator> ExposeSecret<T> for SecretCell<T, A> {
    #[inline]
    fn expose_secret(&self) -> &T {
        &self.inner
    }
}

impl<T, A: Allocator> ExposeSecretMut<T> for SecretCell<T, A> {
    #[inline]
    fn expose_secret_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T, A: Allocator> fmt::Debug for SecretCell<T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretCell<{}>([REDACTED])", type_name::<T>())
    }
}
