//! What an arena needs around `fork(2)`: which process it belongs to, and
//! what the `pthread_atfork` handlers (in `global.rs`) do to it.
//!
//! # The model
//!
//! Every arena records the *fork generation* it was built in
//! ([`Lineage`]). The generation is a process-wide counter that the
//! `pthread_atfork` child handler bumps, so in a forked child every arena
//! that existed at the fork is *inherited*: its memory is either not there at
//! all (`MADV_DONTFORK`, every arena but the global heap) or is the parent's
//! live `MAP_SHARED` memory, made read-only by the child handler (the global
//! heap). Neither may be allocated from or freed into: the first would hand
//! out memory that is not there or that the parent still uses, the second
//! would write into the parent.
//!
//! So every allocation, free and resize of an inherited arena is refused
//! before any lock is taken, and aborts with one line on stderr: the resize
//! entry points (`alloc_api.rs`) ask [`SecretArena::is_inherited`] first;
//! allocation and free cannot match the owner's fast path in a child (the
//! child handler resets the thread's token, `thread::enter_child`), and
//! every slow path returns `Misuse::Forked` before its first lock.
//! Consequently **no allocator call of a forked child takes a lock of an
//! inherited arena**, whatever state the parent's threads left those locks
//! in. (`stats()` and `last_error()` do take them; the README says not to
//! call them in a child.) Arenas created in the child are its own and work
//! normally.
//!
//! The prepare handler still takes the grow lock of the arenas it knows
//! ([`SecretArena::lock_for_fork`]), for another reason: so that no segment
//! is half-published at the instant of the fork, and the child handler sees
//! every segment it must protect.
//!
//! # What the child handler does (all async-signal-safe system calls)
//!
//! - [`SecretArena::protect_in_child`] on the global heap: every segment
//!   becomes `PROT_READ`. `exec` can still read argv, envp and `pre_exec`
//!   closures built on the heap; a stray write faults instead of landing in
//!   the parent's live pages; the range stays mapped, so nothing else can be
//!   mapped there.
//! - [`reserve_in_child`] on every `MADV_DONTFORK` mapping of the parent
//!   (found through the process-wide registry, `backing::registry`): their
//!   ranges are holes in the child; they are re-reserved `PROT_NONE`, so a
//!   later `mmap` of the child cannot land where stale pointers point.
//! - [`close_inherited_fd`] on the backing file descriptor of every arena
//!   of the parent (each arena holds one, to grow by): a child holding it
//!   could map the parent's secret file itself.
//!
//! Arena files other than this one touch it in three places: the builder's
//! `fork` field (`builder.rs`), the arena's `lineage` field and the early
//! return in `Drop` for an inherited arena (`mod.rs`). The backing keeps the
//! `Fork` for its whole reservation, including later growth steps.

use std::sync::MutexGuard;

use rustix::fd::RawFd;
use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};

use super::{SecretArena, SecretArenaBuilder, lock};
use crate::backing::Fork;

pub(crate) use crate::backing::{enter_child, generation};

/// Where an arena was born and what a fork child gets of it.
///
/// # Invariants
///
/// `generation` is the value of [`generation()`] when the arena was built;
/// it never changes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lineage {
    fork: Fork,
    generation: u32,
}

impl Lineage {
    /// The lineage of an arena being built now.
    pub(crate) fn new(fork: Fork) -> Lineage {
        Lineage { fork, generation: generation() }
    }

    /// Whether the arena was built before a `fork` that made this process:
    /// a load of a static that no thread writes, and a compare.
    #[inline]
    pub(crate) fn inherited(self) -> bool {
        self.generation != generation()
    }
}

impl SecretArenaBuilder {
    /// Lets a `fork(2)` child inherit the arena's mappings (no
    /// `MADV_DONTFORK`). Only for the global allocator's heap, whose child
    /// handler must then call [`SecretArena::protect_in_child`].
    pub(crate) fn inherited_by_fork(mut self) -> Self {
        self.fork = Fork::Inherit;
        self
    }
}

/// The grow lock of one arena, held from the prepare handler until the
/// parent or child handler drops it.
pub(crate) struct ForkLock<'a> {
    _grow: MutexGuard<'a, ()>,
}

impl SecretArena {
    /// Whether this arena was built before a `fork` that made this process,
    /// so that it must not be used here. One load of a static and a compare.
    #[inline]
    pub(crate) fn is_inherited(&self) -> bool {
        self.lineage.inherited()
    }

    /// Takes the grow lock, so that no segment is being added while the
    /// process forks. For the prepare handler; the child never takes it
    /// again (see the module docs), dropping the guard just releases it.
    pub(crate) fn lock_for_fork(&self) -> ForkLock<'_> {
        ForkLock { _grow: lock(&self.grow) }
    }

    /// Child handler, for an arena built with
    /// [`SecretArenaBuilder::inherited_by_fork`]: makes every segment
    /// read-only in this (child) process. Returns the first failure's errno;
    /// the caller cannot do more than report it.
    ///
    /// Async-signal-safe: reads the arena's metadata, which is private
    /// memory the child has a copy of, and calls `mprotect(2)`.
    pub(crate) fn protect_in_child(&self) -> Result<(), rustix::io::Errno> {
        debug_assert_eq!(self.lineage.fork, Fork::Inherit);
        let mut result = Ok(());
        for (base, len) in self.mapped_ranges() {
            // SAFETY: `base..base + len` is a segment of this arena, mapped
            // in this process (the mapping was inherited). Making it
            // read-only changes no contents; no code of this child may write
            // there (the arena is inherited, so it refuses every call that
            // would), and a write by anyone else faults instead of reaching
            // the parent's pages.
            let r = unsafe { mm::mprotect(base as *mut _, len, MprotectFlags::READ) };
            result = result.and(r);
        }
        result
    }

    /// `(base, len)` of the mapped prefix of the arena's reservation: the
    /// memory blocks live in. (The rest of the reservation is `PROT_NONE`.)
    fn mapped_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        core::iter::once((self.mapping.base().as_ptr() as usize, self.mapping.len()))
    }
}

/// Closes, in a fork child, the backing file descriptor an arena of the
/// parent holds to grow by. A child holding it could map the parent's
/// secret file itself: the pages of a `MADV_DONTFORK` arena, and the heap's
/// *future* segments, which are not made read-only.
///
/// Uses the raw `close(2)`, not an `OwnedFd` drop, because the parent's copy
/// of the arena still owns the number; `EINTR` is not retried (on Linux the
/// descriptor is closed anyway).
pub(crate) fn close_inherited_fd(fd: RawFd) {
    // SAFETY: in the child, nothing else uses this descriptor: the arena
    // that owns it is inherited, and no code of this process may use it.
    unsafe { libc::close(fd) };
}

/// Child handler, for a mapping the child did not inherit
/// (`MADV_DONTFORK`): `start..start + len` (the whole reservation, guard
/// pages included) is a hole in the child; reserves it `PROT_NONE` so that
/// nothing the child maps later can land where the parent's stale pointers
/// point.
///
/// Async-signal-safe: one `mmap(2)` with `MAP_FIXED_NOREPLACE`, which never
/// replaces a mapping.
pub(crate) fn reserve_in_child(start: usize, len: usize) -> Result<(), rustix::io::Errno> {
    // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is mapped: it
    // cannot replace or alias any object of this process.
    let r = unsafe {
        mm::mmap_anonymous(
            start as *mut _,
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
        )
    };
    match r {
        // Kernels before 4.17 (and valgrind) take the flag as a mere hint
        // and may map elsewhere: undo that, it reserves nothing.
        Ok(p) if p as usize != start => {
            // SAFETY: the mapping just made, which nothing refers to.
            let _ = unsafe { mm::munmap(p, len) };
            Err(rustix::io::Errno::EXIST)
        }
        other => other.map(drop),
    }
}
