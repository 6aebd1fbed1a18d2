//! The process-wide default arena.

use std::sync::{Mutex, OnceLock, PoisonError};

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

use crate::arena::SecretArena;
use crate::backing::{BackingPolicy, memlock_budget};
use crate::error::Error;

/// First segment of the default arena: 256 KiB.
///
/// # Examples
///
/// ```
/// let arena = secret_arena::global()?;
/// println!("{} bytes mapped; first segment: {} bytes or the budget", arena.capacity(), secret_arena::GLOBAL_INITIAL_CAPACITY);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const GLOBAL_INITIAL_CAPACITY: usize = 256 << 10;
/// Growth limit of the default arena where no memlock limit applies
/// (root, `CAP_IPC_LOCK` or an unlimited rlimit): 64 GiB.
///
/// # Examples
///
/// ```
/// let arena = secret_arena::global()?;
/// if secret_arena::memlock_budget().available().is_none() {
///     assert_eq!(arena.max_capacity(), secret_arena::GLOBAL_UNLIMITED_MAX);
/// }
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const GLOBAL_UNLIMITED_MAX: usize = 64 << 30;

static GLOBAL: OnceLock<SecretArena> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process-wide default arena, created on first use.
///
/// It is created lazily because while any secret-memory file exists, the
/// kernel refuses to hibernate the system. It starts at
/// [`GLOBAL_INITIAL_CAPACITY`] and grows by segments up to what
/// `RLIMIT_MEMLOCK` leaves free when it is created (or
/// [`GLOBAL_UNLIMITED_MAX`] where no limit applies). It prefers
/// `memfd_secret` and falls back to an mlocked memfd.
///
/// A failed creation is not remembered: the next call tries again.
///
/// # Errors
///
/// As [`SecretArenaBuilder::build`](crate::SecretArenaBuilder::build); in
/// particular [`Error::MemlockBudget`] when no locked memory is left.
///
/// # Examples
///
/// ```
/// use allocator_api2::vec::Vec;
///
/// let arena = secret_arena::global()?;
/// let mut token = Vec::new_in(arena);
/// token.extend_from_slice(b"ghp_...");
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[inline]
pub fn global() -> Result<&'static SecretArena, Error> {
    match GLOBAL.get() {
        Some(arena) => Ok(arena),
        None => create_global(),
    }
}

#[cold]
fn create_global() -> Result<&'static SecretArena, Error> {
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(arena) = GLOBAL.get() {
        return Ok(arena);
    }
    let page = crate::backing::os_page_size();
    let (initial, max) = match memlock_budget().available() {
        None => (GLOBAL_INITIAL_CAPACITY, GLOBAL_UNLIMITED_MAX),
        // Leave the rounding to the budget: never ask for more than is free.
        Some(avail) => {
            let avail = avail / page * page;
            (GLOBAL_INITIAL_CAPACITY.min(avail.max(page)), avail.max(page))
        }
    };
    let arena =
        SecretArena::builder().capacity(initial).max_capacity(max).policy(BackingPolicy::PreferSecret).build()?;
    Ok(GLOBAL.get_or_init(|| arena))
}

/// The default arena if it exists already.
pub(crate) fn existing() -> Option<&'static SecretArena> {
    GLOBAL.get()
}

/// A zero-size handle to the [`global()`] arena, for types that take an
/// allocator parameter.
///
/// # Examples
///
/// ```
/// use allocator_api2::boxed::Box;
/// use secret_arena::DefaultArena;
///
/// let key = Box::new_in([0x42u8; 32], DefaultArena);
/// assert!(secret_arena::global()?.contains(key.as_ptr()));
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DefaultArena;

// SAFETY: every call delegates to the one `'static` global arena, whose
// blocks stay valid for the rest of the process; see `SecretArena`'s impl.
unsafe impl Allocator for DefaultArena {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        global().map_err(|_| AllocError)?.allocate(layout)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate(layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let arena = existing().expect("DefaultArena::deallocate of a block the default arena never handed out");
        // SAFETY: the caller's contract; the block came from this arena.
        unsafe { arena.deallocate(ptr, layout) }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed through.
        unsafe { global().map_err(|_| AllocError)?.grow(ptr, old, new) }
    }

    unsafe fn grow_zeroed(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed through.
        unsafe { global().map_err(|_| AllocError)?.grow_zeroed(ptr, old, new) }
    }

    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's contract, passed through.
        unsafe { global().map_err(|_| AllocError)?.shrink(ptr, old, new) }
    }
}
