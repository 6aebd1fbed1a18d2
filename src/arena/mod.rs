//! The slab arena: size classes carved lazily out of one growing mapping,
//! served to each thread from slabs it owns.
//!
//! # How a request is served
//!
//! - **Small** (≤ 4096 bytes, alignment ≤ 4096): a chunk of the request's
//!   [size class](classes). Each thread has a heap per arena ([`heap`]) with
//!   a current slab per class, which it *owns*: it allocates and frees
//!   there with plain loads and stores on out-of-band bitmaps ([`slab`],
//!   [`fast`]). The heap records where each current slab's chunks start, so
//!   the owner's allocation adds an offset and its free of a chunk of that
//!   slab subtracts one, without reading the page table. Other threads
//!   free into the slab's atomic `bits`. Only when
//!   its slab is exhausted does the owner take its class's lock, to give the
//!   slab up and take an unowned one with room, or carve a new one
//!   ([`slow`]).
//! - **Large**: a run of whole 4 KiB pages, found first-fit under the page
//!   lock.
//! - **Growth**: when no page is free, empty slabs are reclaimed, including
//!   those of idle and dead threads ([`reclaim`]), then the arena maps the
//!   next part of its one reservation (up to the builder's maximum) under the
//!   grow lock.
//!
//! Lock order: class lock → heap `revoking` flag → grow lock → page lock.
//! Other class locks and `revoking` flags are only ever tried, never waited
//! for, while one is held. None is held while the arena could allocate, and
//! all are `std::sync::Mutex` or atomics, which never allocate.
//!
//! # Invariants
//!
//! 1. Every byte of the arena that is not part of a live block is zero:
//!    freeing wipes the whole chunk or run, shrinking wipes the tail, and a
//!    move wipes the old block. So `allocate_zeroed` costs nothing extra.
//! 2. `committed` pages (slabs plus runs) `+` free pages `==` mapped pages.
//! 3. A slab is in exactly one class list, its class's, while its head's
//!    state is `SLAB_HEAD | class`.
//! 4. A slab with an owner is the owner's heap's current slab of its class
//!    (`slab::PageMeta` invariants). An unowned slab is released by the free
//!    that makes it entirely free; every empty slab, owned or not, can be
//!    reclaimed when pages run out, before the arena grows.

mod builder;
pub(crate) mod classes;
mod fast;
pub(crate) mod fork;
mod heap;
mod pages;
mod reclaim;
mod resize;
mod runs;
mod slab;
mod slow;
mod stats;
pub(crate) mod thread;

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use classes::{CLASS_COUNT, CLASS_SIZES, PAGE};
use pages::Pages;
use slab::PageMeta;
use thread::MAX_SLOTS;

use crate::backing::{Backing, Mapping};
use crate::error::Error;

pub use builder::SecretArenaBuilder;
pub use stats::{ClassStats, InvariantError, Stats};

/// Most growth steps one arena can take: its first mapping and up to
/// `MAX_SEGMENTS - 1` more. All of them lie in one address-space reservation
/// made for `max_capacity`, so finding a block's metadata costs the same in
/// every segment.
///
/// # Examples
///
/// ```
/// use secret_arena::{MAX_SEGMENTS, SecretArena};
///
/// let arena = SecretArena::builder().capacity(4096).max_capacity(1 << 20).build()?;
/// assert!(arena.stats().segments <= MAX_SEGMENTS);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const MAX_SEGMENTS: usize = 64;

/// Default capacity of [`SecretArena::builder`]: 1 MiB.
///
/// # Examples
///
/// ```no_run
/// // Needs 1 MiB of RLIMIT_MEMLOCK (or CAP_IPC_LOCK).
/// let arena = secret_arena::SecretArena::builder().build()?;
/// assert_eq!(arena.capacity(), secret_arena::DEFAULT_CAPACITY);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// A slab allocator over secret memory.
///
/// See the [crate docs](crate) for what it protects. Create one with
/// [`SecretArena::new`] or [`SecretArena::builder`], then allocate from it
/// through allocator-api2's [`Allocator`](allocator_api2::alloc::Allocator),
/// which `&SecretArena` implements too.
///
/// Dropping the arena wipes every page it ever handed out, then unmaps it.
///
/// # Examples
///
/// ```
/// use allocator_api2::vec::Vec;
/// use secret_arena::SecretArena;
///
/// let arena = SecretArena::new(64 * 1024)?;
/// let mut key = Vec::new_in(&arena);
/// key.extend_from_slice(b"correct horse battery staple");
/// assert_eq!(key.len(), 28);
/// println!("backed by {:?}", arena.backing());
/// # Ok::<(), secret_arena::Error>(())
/// ```
///
/// # Invariants
///
/// Every free byte is zero; committed plus free
/// pages equal capacity; each slab is in its class's list.
pub struct SecretArena {
    /// First byte of the mapping: page `p` is at `base + p * PAGE`.
    base: usize,
    /// Metadata of every page, heaps, and the page pool.
    pages: Pages,
    classes: [ClassState; CLASS_COUNT],
    /// Page counters; the lock also guards the used-page bitmap.
    page_lock: Mutex<PageCounters>,
    /// Serialises growth.
    grow: Mutex<()>,
    /// First page of each segment (growth step); `segment_count` are set.
    seg_starts: [AtomicUsize; MAX_SEGMENTS],
    segment_count: AtomicUsize,
    /// Bit `s`: slot `s`'s heap was armed at some time, so `reclaim` looks
    /// at it.
    armed: [AtomicU64; MAX_SLOTS / 64],
    /// Monotonic time (ns) of the last reclaim from idle threads.
    last_idle_reclaim: AtomicU64,
    backing: Backing,
    max_capacity: usize,
    /// The reservation and backing file; dropped (unmapped, closed) last.
    mapping: Mapping,
    last_error: Mutex<Option<Error>>,
    /// The fork generation it was built in, and what a fork child inherits
    /// of it (see `fork`).
    lineage: fork::Lineage,
}

#[repr(align(64))]
struct ClassState {
    list: Mutex<SlabList>,
    /// Set by a free into an unowned slab (which gives it room without the
    /// class lock); the next bounded scan then runs even while backing off
    /// (`SlabList::scan_skip`). Only a hint.
    room: AtomicBool,
}

/// A class's slabs, linked through their heads' `prev`/`next`.
struct SlabList {
    head: *mut PageMeta,
    /// Where the next bounded scan starts (a member, or null).
    rover: *mut PageMeta,
    count: usize,
    /// Slow paths that skip the bounded scan before the next one runs: set
    /// after a scan found nothing (doubling, up to [`slow::MAX_SCAN_SKIP`]),
    /// cleared when a slab with room becomes unowned. While a heap only
    /// grows, every slab in the list is full, and scanning 32 of them (a
    /// cache miss each) on every refill was most of the slow path's time.
    /// Only a hint: the last-resort full scan still runs before a request
    /// fails.
    scan_skip: u32,
    /// The skip to use after the next fruitless scan.
    scan_backoff: u32,
}

// SAFETY: the list is only reached through its Mutex, and points into
// metadata that lives as long as the arena.
unsafe impl Send for SlabList {}

#[derive(Default)]
struct PageCounters {
    committed: usize,
    peak: usize,
}

// SAFETY: all shared state is atomics or behind `Mutex`; the raw pointers
// point into mappings owned by the arena, which outlive every `&self`.
unsafe impl Send for SecretArena {}
// SAFETY: as above; every method is written for concurrent `&self` use.
unsafe impl Sync for SecretArena {}

/// A broken allocator contract: a pointer that was not handed out, a double
/// free, or a layout larger than the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Misuse {
    Foreign(usize),
    NotAllocated(usize),
    LayoutTooLarge {
        ptr: usize,
        size: usize,
        block: usize,
    },
    /// The arena was built before a `fork(2)` that made this process: its
    /// memory is a hole here, or the parent's read-only heap (see `fork`).
    /// Found on the slow paths only: the fork child handler resets the
    /// thread's token (`thread::enter_child`), so no fast path matches in a
    /// child and every call of an inherited arena reaches a slow path.
    Forked,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Misuse::Foreign(p) => write!(f, "secret-arena: {p:#x} was not allocated by this arena"),
            Misuse::NotAllocated(p) => {
                write!(f, "secret-arena: {p:#x} is not a live block of this arena (double free or interior pointer)")
            }
            Misuse::LayoutTooLarge { ptr, size, block } => {
                write!(f, "secret-arena: layout of {size} bytes for {ptr:#x}, whose block has only {block}")
            }
            Misuse::Forked => write!(f, "secret-arena: an arena created before fork(2) used in the child"),
        }
    }
}

/// Where a live block is.
enum Block<'a> {
    Chunk { head: &'a PageMeta, class: usize, idx: usize },
    Run { page: usize, pages: usize },
}

impl Block<'_> {
    fn len(&self) -> usize {
        match self {
            Block::Chunk { class, .. } => CLASS_SIZES[*class] as usize,
            Block::Run { pages, .. } => pages * PAGE,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks, but a poisoned lock still
    // guards consistent data: every update is complete before unlocking.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[inline]
fn slice(ptr: *mut u8, len: usize) -> NonNull<[u8]> {
    NonNull::slice_from_raw_parts(NonNull::new(ptr).expect("blocks are never null"), len)
}

/// The pointer for a zero-size block: non-null, aligned, never dereferenced.
pub(crate) fn dangling(align: usize) -> NonNull<[u8]> {
    slice(core::ptr::without_provenance_mut(align), 0)
}

impl SecretArena {
    #[inline]
    fn segment_count(&self) -> usize {
        self.segment_count.load(Ordering::Acquire)
    }

    /// The segment (growth step) that holds page `p`.
    fn segment_of(&self, p: usize) -> usize {
        (0..self.segment_count()).rev().find(|&i| self.seg_starts[i].load(Ordering::Relaxed) <= p).unwrap_or(0)
    }

    /// Address of page `p`.
    #[inline(always)]
    fn page_addr(&self, p: usize) -> *mut u8 {
        self.mapping.base().as_ptr().wrapping_add(p * PAGE)
    }

    /// Address of chunk `idx` of the slab whose head is `head`.
    #[inline(always)]
    fn chunk_addr(&self, head: &PageMeta, class: usize, idx: usize) -> usize {
        self.base + self.pages.index_of(head) * PAGE + idx * CLASS_SIZES[class] as usize
    }
}

impl Drop for SecretArena {
    fn drop(&mut self) {
        if self.is_inherited() {
            // A fork child's copy: its memory is not this process's to wipe
            // (see `fork`); `Mapping`'s own drop leaves the ranges reserved
            // and the (already closed) descriptor alone.
            return;
        }
        // Secret memory is not wiped here: the kernel zeroes each secretmem
        // page as it frees it (`secretmem_free_folio` in `mm/secretmem.c`),
        // which happens when the mapping, the file's last user, goes. Wiping
        // it ourselves would fault in pages never touched (~10 µs each, and a
        // permanent split of the kernel's direct map) for nothing.
        if self.backing == Backing::MlockedMemfd && self.pages.high_water() > 0 {
            let used = self.pages.high_water() * PAGE;
            // SAFETY: `&mut self` proves no block is borrowed any more, and
            // `base..base + used` is inside the mapping.
            unsafe { crate::wipe::wipe_chunk(self.page_addr(0), used) };
        }
        // Then `pages` and `mapping` drop: metadata unmapped, reservation
        // unmapped, file closed.
    }
}

impl fmt::Debug for SecretArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretArena")
            .field("backing", &self.backing)
            .field("capacity", &self.capacity())
            .field("max_capacity", &self.max_capacity)
            .field("segments", &self.segment_count())
            .finish_non_exhaustive()
    }
}
