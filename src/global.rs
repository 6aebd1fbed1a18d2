//! The process-wide arenas: the default arena ([`global()`], behind
//! [`DefaultArena`] and `SecretBox`) and the global allocator's heap (behind
//! [`SecretGlobalAlloc`](crate::SecretGlobalAlloc)), and the
//! `pthread_atfork` handlers that keep both safe across `fork(2)`.
//!
//! They are two arenas because a fork child must see them differently:
//!
//! - the default arena is `MADV_DONTFORK`, like every explicit arena: a
//!   child has no mapping there, so its secrets are unreadable (SIGSEGV);
//! - the heap is inherited (shared), because between `fork` and `exec` the
//!   child must read argv, envp and `pre_exec` closures that live on the
//!   heap. The child handler makes it read-only at once, so the child cannot
//!   write into the parent's live pages.
//!
//! # Budget sharing
//!
//! Both start small and grow on demand: the first segment is
//! [`GLOBAL_INITIAL_CAPACITY`] or a quarter of the memlock budget left,
//! whichever is smaller (at least one page), so neither takes the budget
//! that explicit arenas may still need.

use std::cell::UnsafeCell;
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError};

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arena::SecretArena;
use crate::arena::fork::{self, ForkLock};
use crate::backing::{BackingPolicy, memlock_budget};
use crate::error::Error;

/// Largest first segment of the default arena and of the global
/// allocator's heap: 256 KiB. Under a memlock limit, the first segment is a
/// quarter of what is left, if that is smaller.
///
/// # Examples
///
/// ```
/// let arena = secret_arena::global()?;
/// println!("{} bytes mapped; first segment: at most {} bytes", arena.capacity(), secret_arena::GLOBAL_INITIAL_CAPACITY);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const GLOBAL_INITIAL_CAPACITY: usize = 256 << 10;
/// Growth limit of the default arena and of the heap where no memlock limit
/// applies (root, `CAP_IPC_LOCK` or an unlimited rlimit): 64 GiB.
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

/// The default arena (`MADV_DONTFORK`).
static GLOBAL: OnceLock<SecretArena> = OnceLock::new();
/// The global allocator's heap (inherited by a fork child, read-only there).
static HEAP: OnceLock<SecretArena> = OnceLock::new();
/// Serialises creating either arena, and is held across `fork` (see
/// [`HELD`]).
static INIT: Mutex<()> = Mutex::new(());

/// The process-wide default arena, created on first use.
///
/// It is created lazily because while any secret-memory file exists, the
/// kernel refuses to hibernate the system. Its first segment is
/// [`GLOBAL_INITIAL_CAPACITY`] or a quarter of what `RLIMIT_MEMLOCK` leaves
/// free, whichever is smaller, so that explicit arenas still fit; it grows
/// by segments on demand up to what the limit leaves free when it is created
/// (or [`GLOBAL_UNLIMITED_MAX`] where no limit applies). It prefers
/// `memfd_secret` and falls back to an mlocked memfd.
///
/// It is `MADV_DONTFORK`: a `fork(2)` child has no mapping there, and using
/// it in the child aborts with one line on stderr. It is not the arena of
/// [`SecretGlobalAlloc`](crate::SecretGlobalAlloc), which has its own.
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
    create_in(&GLOBAL, false)
}

/// Creates the arena in `cell` unless another thread did. Registers the fork
/// handlers first, outside `INIT`: the prepare handler takes `INIT`, and
/// glibc runs it while holding the lock `pthread_atfork` needs.
fn create_in(cell: &'static OnceLock<SecretArena>, heap: bool) -> Result<&'static SecretArena, Error> {
    register_fork_handlers();
    let _guard = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(arena) = cell.get() {
        return Ok(arena);
    }
    let (initial, max) = first_and_max(memlock_budget().available(), crate::backing::os_page_size());
    let builder = SecretArena::builder().capacity(initial).max_capacity(max).policy(BackingPolicy::PreferSecret);
    let arena = if heap { builder.inherited_by_fork() } else { builder }.build()?;
    Ok(cell.get_or_init(|| arena))
}

/// The budget-sharing policy: `(first segment, growth limit)` for an arena
/// created when `avail` bytes of locked memory are left (`None`: no limit).
fn first_and_max(avail: Option<usize>, page: usize) -> (usize, usize) {
    match avail {
        None => (GLOBAL_INITIAL_CAPACITY, GLOBAL_UNLIMITED_MAX),
        // Never ask for more than is free; leave three quarters of it to
        // explicit arenas and to growth on demand.
        Some(avail) => {
            let avail = (avail / page * page).max(page);
            ((avail / 4 / page * page).clamp(page, GLOBAL_INITIAL_CAPACITY), avail)
        }
    }
}

/// The default arena if it exists already.
#[inline]
pub(crate) fn existing() -> Option<&'static SecretArena> {
    GLOBAL.get()
}

/// The global allocator's heap, created on first use.
#[inline]
pub(crate) fn heap() -> Result<&'static SecretArena, Error> {
    match HEAP.get() {
        Some(arena) => Ok(arena),
        None => create_heap(),
    }
}

#[cold]
fn create_heap() -> Result<&'static SecretArena, Error> {
    create_in(&HEAP, true)
}

/// The global allocator's heap if it exists already.
#[inline]
pub(crate) fn existing_heap() -> Option<&'static SecretArena> {
    HEAP.get()
}

// ----- fork -----

/// The locks the prepare handler took, until the parent or child handler
/// releases them.
struct Held(UnsafeCell<Option<HeldLocks>>);

struct HeldLocks {
    _init: MutexGuard<'static, ()>,
    _heap: Option<ForkLock<'static>>,
    _default: Option<ForkLock<'static>>,
    /// No backing file is open unregistered, and no growth step half made,
    /// while we fork (`backing::lock_fork_gate`). Taken last: the lock
    /// order puts it after the creation and grow locks.
    _gate: MutexGuard<'static, ()>,
}

// SAFETY: the cell is written only by the prepare handler after it took
// `INIT`, and emptied by the parent or child handler of the same fork, on
// the same thread, before `INIT` is released; so at most one thread touches
// it at a time.
unsafe impl Sync for Held {}

static HELD: Held = Held(UnsafeCell::new(None));
static REGISTER: Once = Once::new();

/// Installs the `pthread_atfork` handlers, once per process (a child
/// inherits them).
pub(crate) fn register_fork_handlers() {
    REGISTER.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` that live for the
        // whole program. pthread_atfork allocates with glibc's malloc, never
        // with ours.
        let ret = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if ret != 0 {
            // ENOMEM from glibc's own malloc: without the handlers a child
            // could write into the heap it shares with the parent.
            crate::alloc_api::fatal_line(format_args!(
                "secret-arena: pthread_atfork failed (errno {ret}): cannot make the heap safe across fork"
            ));
        }
    });
}

/// The pid of the process that is forking, recorded by the prepare handler
/// for the child handler (which cannot trust `getppid`: the parent may be
/// gone by then).
static FORKING_PID: AtomicU32 = AtomicU32::new(0);

/// Prepare handler: no arena is being created or growing while we fork.
extern "C" fn prepare() {
    let init = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    FORKING_PID.store(rustix::process::getpid().as_raw_nonzero().get() as u32, Ordering::Relaxed);
    let held = HeldLocks {
        _init: init,
        _heap: HEAP.get().map(SecretArena::lock_for_fork),
        _default: GLOBAL.get().map(SecretArena::lock_for_fork),
        _gate: crate::backing::lock_fork_gate(),
    };
    // SAFETY: `INIT` is held (see `Held`).
    unsafe { *HELD.0.get() = Some(held) };
}

/// Parent handler: releases what `prepare` took.
extern "C" fn parent() {
    // SAFETY: `INIT` is still held by this thread (see `Held`); dropping the
    // value releases the grow locks, then `INIT`.
    drop(unsafe { (*HELD.0.get()).take() });
}

/// Child handler (one thread, async-signal-safe calls only): every arena
/// that exists now becomes inherited; the heap turns read-only, the default
/// arena's holes are re-reserved; then the locks are released.
extern "C" fn child() {
    fork::enter_child();
    crate::arena::thread::enter_child();
    if let Some(heap) = HEAP.get() {
        if let Err(errno) = heap.protect_in_child() {
            // The child must not run with a writable view of the parent's
            // heap; nothing else is safe here.
            crate::alloc_api::fatal_line(format_args!(
                "secret-arena: fork child: mprotect(PROT_READ) of the inherited heap failed ({})",
                crate::alloc_api::ErrnoName(errno)
            ));
        }
    }
    // Every MADV_DONTFORK mapping of the parent (the default arena and
    // every explicit arena) is a hole here: reserve each PROT_NONE, so that
    // nothing this child maps later lands where stale pointers point. Best
    // effort: a hole stays a hole if the kernel refuses, and every use of an
    // inherited arena aborts anyway. And every arena's backing file
    // descriptor was inherited, hidden arenas' too: close them, or the child
    // could map the parent's secret files (including the heap's future
    // segments, which are not made read-only).
    crate::backing::registry::reset_readers_in_child();
    crate::backing::registry::for_each_of_parent(FORKING_PID.load(Ordering::Relaxed), |m| {
        if !m.inherited {
            let _ = fork::reserve_in_child(m.reservation, m.reservation_len);
        }
        fork::close_inherited_fd(m.fd);
    });
    // SAFETY: the prepare handler of this fork filled the cell while
    // holding `INIT`, and this is its copy in the one thread of the child.
    drop(unsafe { (*HELD.0.get()).take() });
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
        // (`SecretArena::deallocate` refuses an arena inherited across fork.)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_sharing_policy() {
        const KIB: usize = 1024;
        let page = 4096;
        // No limit: as before.
        assert_eq!(first_and_max(None, page), (GLOBAL_INITIAL_CAPACITY, GLOBAL_UNLIMITED_MAX));
        // 8 MiB and 1 MiB: the usual 256 KiB first segment.
        assert_eq!(first_and_max(Some(8 << 20), page), (256 * KIB, 8 << 20));
        assert_eq!(first_and_max(Some(1 << 20), page), (256 * KIB, 1 << 20));
        // 64 KiB: a quarter, leaving 48 KiB to explicit arenas.
        assert_eq!(first_and_max(Some(64 * KIB), page), (16 * KIB, 64 * KIB));
        // Almost nothing left: one page, and the kernel decides.
        assert_eq!(first_and_max(Some(5000), page), (page, page));
        assert_eq!(first_and_max(Some(0), page), (page, page));
    }
}
