//! The memory source: one file-backed reservation per arena.
//!
//! # The contract every backing keeps
//!
//! A [`Mapping`] reserves address space for the arena's `max_capacity` once,
//! opens ONE backing file whose size is set once to that maximum, and maps
//! the file into the reservation from offset 0 on, in steps, as the arena
//! grows ([`Mapping::grow`]). Its mapped prefix of `len` bytes (a multiple of
//! the OS page size) is
//!
//! 1. readable and writable at `base..base + len`, and zero on first touch;
//!    `base + off` is always file offset `off`, so the prefix is one
//!    contiguous range however many steps mapped it;
//! 2. a `MAP_SHARED` mapping of a file that only this mapping uses. The
//!    file's descriptor is **held** (`O_CLOEXEC`) for the arena's life, so
//!    growth needs no new descriptor and works at the fd limit (`EMFILE`).
//!    A process that may `ptrace` us could take the descriptor with
//!    `pidfd_getfd(2)` and map the file itself; that is no more than what
//!    ptrace rights give anyway (they can read the fallback's pages
//!    directly, and stop us and map the secret file into our own address
//!    space). The descriptor is closed when the arena is dropped;
//! 3. locked in RAM (never swapped), and charged to `RLIMIT_MEMLOCK` for
//!    each step's length when that step is mapped, so running out of budget
//!    is an error of that step (the arena stays as it was), never a fault
//!    later;
//! 4. excluded from core dumps (`VM_DONTDUMP`) and, under [`Fork::Hide`],
//!    not inherited by `fork` (`MADV_DONTFORK`), the not-yet-mapped rest of
//!    the reservation too; under [`Fork::Inherit`] (the global allocator's
//!    heap only) a child inherits the shared mapping, and the
//!    `pthread_atfork` child handler makes it read-only there
//!    (`arena::fork`), and closes the held descriptor;
//! 5. surrounded by `PROT_NONE` address space: one guard page before `base`,
//!    and after the mapped prefix the rest of the reservation plus one guard
//!    page, all anonymous and so not charged to the memlock budget;
//! 6. returned to the kernel as it is when dropped: wiping is the arena's job.
//!
//! The secret backing adds that its pages are removed from the kernel's
//! direct map, so the kernel itself (and through it `ptrace`,
//! `process_vm_readv` and `/proc/<pid>/mem`) cannot read them.
//!
//! Every system call's result is checked; a failure undoes what was done so
//! far and is reported as an [`Error`] naming the step.

mod budget;
mod memfd;
pub(crate) mod registry;
mod secret;
mod sys;

use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fd::{AsRawFd, OwnedFd};
use rustix::mm::{self, Advice, MapFlags, ProtFlags};

use crate::error::{Errno, Error, Step};

pub use budget::{MemlockBudget, memlock_budget};

/// Which kind of memory backs an arena.
///
/// # Examples
///
/// ```
/// use secret_arena::{Backing, SecretArena};
///
/// let arena = SecretArena::new(16 << 10)?;
/// if arena.backing() != Backing::MemfdSecret {
///     eprintln!("warning: secrets are only locked here, not hidden from the kernel");
/// }
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backing {
    /// A `memfd_secret(2)` file: locked, not dumped, and removed from the
    /// kernel's direct map.
    MemfdSecret,
    /// The fallback: a sealed `memfd_create(2)` file, locked with
    /// `mlock2(MLOCK_ONFAULT)` and marked `MADV_DONTDUMP`. Its pages stay in
    /// the kernel's direct map, so the kernel, `ptrace` and root can read them.
    MlockedMemfd,
}

impl Backing {
    /// A short human-readable name, as `probe` prints it.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::Backing;
    ///
    /// assert!(Backing::MemfdSecret.describe().starts_with("memfd_secret"));
    /// assert!(Backing::MlockedMemfd.describe().contains("readable by the kernel"));
    /// ```
    pub fn describe(self) -> &'static str {
        match self {
            Backing::MemfdSecret => "memfd_secret (removed from the kernel's direct map)",
            Backing::MlockedMemfd => "mlocked memfd fallback (locked and not dumped, but readable by the kernel)",
        }
    }
}

/// Which backing an arena may use, chosen when it is built.
///
/// # Examples
///
/// ```
/// use secret_arena::{Backing, BackingPolicy, SecretArena};
///
/// // The fallback, on purpose: e.g. to compare the two backings.
/// let arena = SecretArena::builder().capacity(8 << 10).policy(BackingPolicy::ForceFallback).build()?;
/// assert_eq!(arena.backing(), Backing::MlockedMemfd);
/// assert_eq!(BackingPolicy::default(), BackingPolicy::PreferSecret);
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackingPolicy {
    /// Use `memfd_secret` where the kernel offers it, else the mlocked memfd
    /// fallback. [`SecretArena::backing`](crate::SecretArena::backing) says
    /// which one was used.
    #[default]
    PreferSecret,
    /// Use `memfd_secret` or fail with [`Error::SecretMemoryUnavailable`].
    RequireSecret,
    /// Always use the fallback: for tests, and for comparing the two.
    ForceFallback,
}

/// What a `fork(2)` child inherits of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) enum Fork {
    /// `MADV_DONTFORK`: the child has no mapping there, so a secret is
    /// unreachable (SIGSEGV) in it. Every arena but the global heap.
    #[default]
    Hide,
    /// The child inherits the `MAP_SHARED` mapping, so `exec` can read argv,
    /// envp and `pre_exec` closures built on the heap. Only for the global
    /// allocator's heap, whose child handler turns it read-only at once.
    Inherit,
}

/// Held while a backing file is open but not (or no longer) registered, and
/// while a growth step is half made (mapped, not yet `MADV_DONTFORK`), and
/// by the `pthread_atfork` prepare handler across `fork(2)`. So a fork never
/// lands in those windows, and the child handler finds every backing file
/// descriptor and every hidden range in the registry: it closes the one and
/// re-reserves the other. Linux has no `O_CLOFORK`; this lock is what makes
/// "a fork child cannot map the parent's secret file" hold.
///
/// Lock order: the creation lock and an arena's grow lock come before it.
/// A `std::sync::Mutex`: futex-based, it never allocates.
static FORK_GATE: Mutex<()> = Mutex::new(());

/// Takes [`FORK_GATE`]: for the prepare handler, and inside this module.
pub(crate) fn lock_fork_gate() -> MutexGuard<'static, ()> {
    FORK_GATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fork generation of this process: 0 in the process that was exec'd,
/// bumped by one in every `fork(2)` child by [`enter_child`]. A mapping (and
/// an arena) built in an earlier generation was inherited across a fork.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The current fork generation.
#[inline]
pub(crate) fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// Marks this process as a new fork child: every mapping and arena that
/// exists now is inherited from here on. Called first thing by the
/// `pthread_atfork` child handler, while the child has one thread.
pub(crate) fn enter_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Whether the kernel gives this process `memfd_secret(2)`.
///
/// Creates a secret-memory file and closes it at once, without mapping it.
/// `Err` carries the kernel's answer: `ENOSYS` where the kernel lacks it or
/// has it disabled, `EPERM` where a seccomp profile forbids it.
///
/// # Examples
///
/// ```
/// match secret_arena::memfd_secret_available() {
///     Ok(()) => println!("memfd_secret works here"),
///     Err(errno) => println!("no memfd_secret: {errno}"),
/// }
/// ```
pub fn memfd_secret_available() -> Result<(), Errno> {
    sys::memfd_secret().map(drop)
}

/// The arena's reservation and its backing file; see the module docs for
/// its contract. The single owner of both, so it is also what registers the
/// range in the process-wide registry (`registry`: `purge()` and the fork
/// handlers find every arena's memory there).
///
/// # Invariants
///
/// 1. `reservation..reservation + reservation_len` is mapped by this value
///    alone, and is unmapped exactly once, on drop.
/// 2. `base == reservation + guard` and `base + max_len + guard ==
///    reservation + reservation_len`; `base..base + len` maps file offsets
///    `0..len`, everything else in the reservation is `PROT_NONE`.
/// 3. `len` only grows, and only under the caller's lock (see `grow`).
pub(crate) struct Mapping {
    reservation: NonNull<u8>,
    reservation_len: usize,
    base: NonNull<u8>,
    len: AtomicUsize,
    max_len: usize,
    /// Dropped by hand in `drop`: not in a fork child, where the number
    /// was already closed by the child handler and may have been reused.
    file: ManuallyDrop<OwnedFd>,
    backing: Backing,
    fork: Fork,
    /// The fork generation it was created in.
    generation: u32,
    /// Its entry in the process-wide registry (`purge()`, fork handlers);
    /// `None` until registered.
    slot: Option<registry::SlotId>,
}

// SAFETY: a Mapping is an owned range of address space and an owned fd; it
// holds no thread-affine state, and all access to the bytes goes through the
// arena's own synchronisation.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` exposes the addresses, and `grow` is
// serialised by its caller.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Reserves `max_len` bytes, opens the backing file for them under
    /// `policy`, and maps the first `len` (both rounded up to the OS page
    /// size; `max_len` is at least `len`).
    ///
    /// Where that much address space cannot be reserved (`RLIMIT_AS`, or
    /// valgrind, which refuses huge mappings), the reservation, and so
    /// [`max_len`](Self::max_len), is halved until it can, down to `len`.
    pub(crate) fn create(len: usize, max_len: usize, policy: BackingPolicy, fork: Fork) -> Result<Mapping, Error> {
        let len = round_to_os_pages(len).ok_or(Error::InvalidCapacity { requested: len })?;
        let max_len = round_to_os_pages(max_len.max(len)).ok_or(Error::InvalidCapacity { requested: max_len })?;
        // Until the file is registered and its first step mapped.
        let gate = lock_fork_gate();
        let reserved = Reserved::new(len, max_len)?;
        let max_len = reserved.len - 2 * os_page_size();
        let (file, backing) = match policy {
            BackingPolicy::ForceFallback => (memfd::open(max_len)?, Backing::MlockedMemfd),
            BackingPolicy::RequireSecret | BackingPolicy::PreferSecret => match secret::open(max_len) {
                Ok(fd) => (fd, Backing::MemfdSecret),
                Err(Error::SecretMemoryUnavailable { .. }) if policy == BackingPolicy::PreferSecret => {
                    (memfd::open(max_len)?, Backing::MlockedMemfd)
                }
                Err(e) => return Err(e),
            },
        };
        let guard = os_page_size();
        let reservation = reserved.into_raw();
        // From here on, dropping `mapping` unmaps the whole reservation,
        // including whatever has been mapped into it, and closes the file.
        let mut mapping = Mapping {
            reservation,
            reservation_len: max_len + 2 * guard,
            // SAFETY: `guard < reservation_len`, so the result is inside the reservation.
            base: unsafe { reservation.add(guard) },
            len: AtomicUsize::new(0),
            max_len,
            file: ManuallyDrop::new(file),
            backing,
            fork,
            generation: generation(),
            slot: None,
        };
        if fork == Fork::Hide {
            // SAFETY: advice on our own reservation; it only affects what a
            // future fork(2) child inherits.
            unsafe { mm::madvise(reservation.as_ptr().cast(), mapping.reservation_len, Advice::LinuxDontFork) }
                .map_err(|errno| Error::Syscall { step: Step::DontFork, errno })?;
        }
        let ranges = registry::Ranges {
            base: mapping.base.as_ptr() as usize,
            // purge() wipes below the high-water mark, which never passes
            // the mapped prefix; the fork handlers use the reservation.
            len: max_len,
            reservation: reservation.as_ptr() as usize,
            reservation_len: mapping.reservation_len,
            fd: mapping.file.as_raw_fd(),
            inherited: fork == Fork::Inherit,
        };
        let made = registry::register(ranges).and_then(|slot| {
            mapping.slot = Some(slot);
            mapping.grow_gated(len)
        });
        // Released before `mapping` can drop on an error, whose `Drop` takes
        // the gate again.
        drop(gate);
        made.map(|()| mapping)
    }

    /// Maps file offsets `len()..new_len` at `base + len()`, with the
    /// backing's protections, and makes `new_len` (rounded up to the OS page
    /// size) the mapped length. On error nothing changes: the range is
    /// `PROT_NONE` again and nothing stays charged.
    ///
    /// The caller serialises calls (the arena's grow lock).
    pub(crate) fn grow(&self, new_len: usize) -> Result<(), Error> {
        let _gate = lock_fork_gate();
        self.grow_gated(new_len)
    }

    /// [`grow`](Self::grow), with [`FORK_GATE`] held by the caller.
    fn grow_gated(&self, new_len: usize) -> Result<(), Error> {
        let old = self.len.load(Ordering::Relaxed);
        let new_len = round_to_os_pages(new_len).ok_or(Error::InvalidCapacity { requested: new_len })?;
        if new_len <= old {
            return Ok(());
        }
        if new_len > self.max_len {
            return Err(Error::InvalidCapacity { requested: new_len });
        }
        let n = new_len - old;
        // SAFETY: inside the reservation (invariant 2, `new_len <= max_len`).
        let at = unsafe { self.base.add(old) };
        self.map_step(at, old, n).inspect_err(|_| self.unmap_step(at, n))?;
        self.len.store(new_len, Ordering::Release);
        Ok(())
    }

    fn map_step(&self, at: NonNull<u8>, off: usize, n: usize) -> Result<(), Error> {
        // SAFETY: the target range lies inside our own PROT_NONE reservation,
        // past the mapped prefix, which no Rust object refers to, so
        // MAP_FIXED replaces nothing but reserved address space.
        unsafe {
            mm::mmap(
                at.as_ptr().cast(),
                n,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &*self.file,
                off as u64,
            )
        }
        .map_err(|errno| match (self.backing, errno) {
            (Backing::MemfdSecret, Errno::AGAIN) => budget::error(n, errno),
            _ => Error::Syscall { step: Step::Map, errno },
        })?;
        if self.backing == Backing::MlockedMemfd {
            lock(at, n)?;
            // SAFETY: advice on our own live mapping; it changes no contents.
            unsafe { mm::madvise(at.as_ptr().cast(), n, Advice::LinuxDontDump) }
                .map_err(|errno| Error::Syscall { step: Step::DontDump, errno })?;
        }
        if self.fork == Fork::Inherit {
            return Ok(());
        }
        // The new VMA does not inherit the reservation's DONTFORK: set it.
        // SAFETY: advice on our own mapping; it only affects fork(2) children.
        unsafe { mm::madvise(at.as_ptr().cast(), n, Advice::LinuxDontFork) }
            .map_err(|errno| Error::Syscall { step: Step::DontFork, errno })
    }

    /// Puts `at..at + n` back to reserved `PROT_NONE` address space after a
    /// failed step, dropping any lock and memlock charge it took.
    fn unmap_step(&self, at: NonNull<u8>, n: usize) {
        // SAFETY: the range is inside our reservation and past the mapped
        // prefix, so no block refers to it.
        let _ = unsafe {
            mm::mmap_anonymous(
                at.as_ptr().cast(),
                n,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED,
            )
        };
        if self.fork == Fork::Hide {
            // SAFETY: as above.
            let _ = unsafe { mm::madvise(at.as_ptr().cast(), n, Advice::LinuxDontFork) };
        }
    }

    /// The first usable byte.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The number of mapped, usable bytes (a multiple of the OS page size).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The most bytes this mapping can grow to.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// Which backing this mapping has.
    pub(crate) fn backing(&self) -> Backing {
        self.backing
    }

    /// Tells the registry that bytes `..bytes` from `base` have been handed
    /// out, so that `purge()` wipes them (and nothing above).
    #[inline]
    pub(crate) fn raise_high_water(&self, bytes: usize) {
        if let Some(slot) = &self.slot {
            registry::raise_high_water(slot, bytes);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.generation != generation() {
            // A fork child's copy of the parent's mapping: the child handler
            // closed the descriptor already (the number may be reused now),
            // and the range stays reserved, so stale pointers can never
            // reach a later mapping. The registry slot is the parent's.
            return;
        }
        // Until the descriptor is closed: a fork in between would give the
        // child a descriptor the registry no longer lists.
        let _gate = lock_fork_gate();
        // Before munmap: returns once no purge can be reading the range.
        if let Some(slot) = self.slot.take() {
            registry::deregister(slot);
        }
        // SAFETY: invariant 1: the reservation is ours and is unmapped only here.
        // munmap of a range we mapped can only fail on a broken invariant;
        // there is nothing useful to do with the error in a destructor.
        let _ = unsafe { mm::munmap(self.reservation.as_ptr().cast(), self.reservation_len) };
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.file) };
    }
}

/// An anonymous `PROT_NONE` reservation not yet owned by a [`Mapping`]:
/// unmapped if creation fails before it is handed over.
struct Reserved {
    ptr: NonNull<u8>,
    len: usize,
}

impl Reserved {
    /// Reserves `max_len` bytes plus a guard page on each side, or, where
    /// the kernel refuses that much (`ENOMEM`, `EINVAL`), half as much, and
    /// so on down to `len`.
    fn new(len: usize, max_len: usize) -> Result<Reserved, Error> {
        let guard = os_page_size();
        let mut want = max_len;
        loop {
            let total = want.checked_add(2 * guard).ok_or(Error::InvalidCapacity { requested: want })?;
            // SAFETY: a fresh anonymous mapping at an address the kernel
            // chooses cannot alias any existing Rust object.
            let r = unsafe {
                mm::mmap_anonymous(
                    core::ptr::null_mut(),
                    total,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE,
                )
            };
            match r {
                Ok(p) => {
                    let ptr = NonNull::new(p.cast::<u8>()).expect("mmap never returns null on success");
                    return Ok(Reserved { ptr, len: total });
                }
                Err(Errno::NOMEM | Errno::INVAL) if want > len => want = (want / 2 / guard * guard).max(len),
                Err(errno) => return Err(Error::Syscall { step: Step::Reserve, errno }),
            }
        }
    }

    fn into_raw(self) -> NonNull<u8> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // SAFETY: our own reservation, which nothing refers to yet.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Locks the fallback mapping: `mlock2(MLOCK_ONFAULT)` charges the budget
/// without populating; where the kernel lacks `mlock2` (before 4.4, or under
/// valgrind) plain `mlock` locks and populates the whole range. Either way
/// the memory is locked or creation fails: never silently unlocked.
fn lock(base: NonNull<u8>, len: usize) -> Result<(), Error> {
    // SAFETY: the range is our own live mapping; locking changes no contents.
    let locked = match unsafe { mm::mlock_with(base.as_ptr().cast(), len, mm::MlockFlags::ONFAULT) } {
        // SAFETY: as above.
        Err(Errno::NOSYS) => unsafe { mm::mlock(base.as_ptr().cast(), len) },
        other => other,
    };
    locked.map_err(|errno| match errno {
        Errno::NOMEM | Errno::AGAIN | Errno::PERM => budget::error(len, errno),
        _ => Error::Syscall { step: Step::Lock, errno },
    })
}

/// The OS page size: the granularity of mappings and guard pages.
pub(crate) fn os_page_size() -> usize {
    rustix::param::page_size()
}

fn round_to_os_pages(len: usize) -> Option<usize> {
    // The arena numbers its 4 KiB pages with `u32`.
    const MAX_LEN: u64 = (u32::MAX as u64) * 4096;
    if len == 0 || len > isize::MAX as usize / 2 || len as u64 > MAX_LEN {
        return None;
    }
    let page = os_page_size();
    len.checked_add(page - 1).map(|l| l & !(page - 1))
}
