//! The memory source: one file-backed mapping per arena segment.
//!
//! # The contract every backing keeps
//!
//! A [`Mapping`] of `len` bytes (a multiple of the OS page size) is
//!
//! 1. readable and writable at `base..base + len`, and zero on first touch;
//! 2. a `MAP_SHARED` mapping of a file whose descriptor is already closed, so
//!    no fd is held and the file dies with the mapping;
//! 3. locked in RAM (never swapped), and charged to `RLIMIT_MEMLOCK` in full
//!    when it is created, so running out of budget is an error at creation,
//!    never later;
//! 4. excluded from core dumps (`VM_DONTDUMP`) and, under [`Fork::Hide`],
//!    not inherited by `fork` (`MADV_DONTFORK`); under [`Fork::Inherit`]
//!    (the global allocator's heap only) a child inherits the shared
//!    mapping, and the arena's `pthread_atfork` child handler makes it
//!    read-only there (`arena::fork`);
//! 5. surrounded by one `PROT_NONE` guard page on each side, which are
//!    anonymous and so not charged to the memlock budget;
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

use core::ptr::NonNull;

use rustix::fd::OwnedFd;
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

/// One mapped segment of backing memory; see the module docs for its contract.
///
/// # Invariants
///
/// 1. `reservation..reservation + reservation_len` is mapped by this value
///    alone, and is unmapped exactly once, on drop.
/// 2. `base == reservation + guard` and `base + len + guard ==
///    reservation + reservation_len`; both guards are `PROT_NONE`.
pub(crate) struct Mapping {
    reservation: NonNull<u8>,
    reservation_len: usize,
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
    /// Its entry in the purge registry; `None` until registered.
    slot: Option<registry::SlotId>,
}

// SAFETY: a Mapping is an owned range of address space; it holds no
// thread-affine state, and all access to the bytes goes through the arena's
// own synchronisation.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the addresses.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to the OS page size) under `policy`.
    pub(crate) fn create(len: usize, policy: BackingPolicy, fork: Fork) -> Result<Mapping, Error> {
        let len = round_to_os_pages(len).ok_or(Error::InvalidCapacity { requested: len })?;
        match policy {
            BackingPolicy::ForceFallback => Self::create_as(len, Backing::MlockedMemfd, fork),
            BackingPolicy::RequireSecret | BackingPolicy::PreferSecret => match secret::open(len) {
                Ok(fd) => Self::map_file(fd, len, Backing::MemfdSecret, fork),
                Err(Error::SecretMemoryUnavailable { .. }) if policy == BackingPolicy::PreferSecret => {
                    Self::create_as(len, Backing::MlockedMemfd, fork)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Maps `len` bytes of exactly the given backing (used for further
    /// segments, which keep the first segment's backing).
    pub(crate) fn create_as(len: usize, backing: Backing, fork: Fork) -> Result<Mapping, Error> {
        let len = round_to_os_pages(len).ok_or(Error::InvalidCapacity { requested: len })?;
        let fd = match backing {
            Backing::MemfdSecret => secret::open(len)?,
            Backing::MlockedMemfd => memfd::open(len)?,
        };
        Self::map_file(fd, len, backing, fork)
    }

    /// Reserves address space with a guard page on each side, maps `fd` in
    /// the middle, closes `fd`, and applies the backing's protections.
    fn map_file(fd: OwnedFd, len: usize, backing: Backing, fork: Fork) -> Result<Mapping, Error> {
        let guard = os_page_size();
        let reservation_len = len.checked_add(2 * guard).ok_or(Error::InvalidCapacity { requested: len })?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses
        // cannot alias any existing Rust object.
        let reservation = unsafe {
            mm::mmap_anonymous(
                core::ptr::null_mut(),
                reservation_len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|errno| Error::Syscall { step: Step::Reserve, errno })?;
        let reservation = NonNull::new(reservation.cast::<u8>()).expect("mmap never returns null on success");
        // From here on, dropping `mapping` unmaps the whole reservation,
        // including whatever has been mapped into it.
        let mut mapping = Mapping {
            reservation,
            reservation_len,
            // SAFETY: `guard < reservation_len`, so the result is inside the reservation.
            base: unsafe { reservation.add(guard) },
            len,
            backing,
            slot: None,
        };
        // SAFETY: the target range lies inside our own PROT_NONE reservation,
        // which no Rust object refers to, so MAP_FIXED replaces nothing but it.
        unsafe {
            mm::mmap(
                mapping.base.as_ptr().cast(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        }
        .map_err(|errno| match (backing, errno) {
            (Backing::MemfdSecret, Errno::AGAIN) => budget::error(len, errno),
            _ => Error::Syscall { step: Step::Map, errno },
        })?;
        // The mapping keeps the file alive; holding the fd would only leak it
        // to anyone who can read our fd table.
        drop(fd);

        if backing == Backing::MlockedMemfd {
            lock(mapping.base, len)?;
            // SAFETY: advice on our own live mapping; it changes no contents.
            unsafe { mm::madvise(mapping.base.as_ptr().cast(), len, Advice::LinuxDontDump) }
                .map_err(|errno| Error::Syscall { step: Step::DontDump, errno })?;
        }
        if fork == Fork::Hide {
            // SAFETY: advice on our own reservation (guards and file mapping);
            // it only affects what a future fork(2) child inherits.
            unsafe { mm::madvise(reservation.as_ptr().cast(), reservation_len, Advice::LinuxDontFork) }
                .map_err(|errno| Error::Syscall { step: Step::DontFork, errno })?;
        }
        let ranges = registry::Ranges {
            base: mapping.base.as_ptr() as usize,
            len,
            reservation: reservation.as_ptr() as usize,
            reservation_len,
        };
        let slot = registry::register(ranges)?;
        registry::set_inherited(&slot, fork == Fork::Inherit);
        mapping.slot = Some(slot);
        Ok(mapping)
    }

    /// The first usable byte.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The number of usable bytes (a multiple of the OS page size).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Which backing this mapping has.
    pub(crate) fn backing(&self) -> Backing {
        self.backing
    }

    /// Tells the purge registry that bytes `..bytes` have been handed out.
    #[inline]
    pub(crate) fn raise_high_water(&self, bytes: usize) {
        if let Some(slot) = &self.slot {
            registry::raise_high_water(slot, bytes);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Before munmap: returns once no purge can be reading the range.
        if let Some(slot) = self.slot.take() {
            registry::deregister(slot);
        }
        // SAFETY: invariant 1: the reservation is ours and is unmapped only here.
        // munmap of a range we mapped can only fail on a broken invariant;
        // there is nothing useful to do with the error in a destructor.
        let _ = unsafe { mm::munmap(self.reservation.as_ptr().cast(), self.reservation_len) };
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
