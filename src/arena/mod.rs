//! The slab arena: size classes carved lazily out of backing segments.
//!
//! # How a request is served
//!
//! - **Small** (≤ 4096 bytes, alignment ≤ 4096): a chunk of the request's
//!   [size class](classes). Each thread has a shard; each (shard, class) pair
//!   has a *current slab* hint, and allocation is one compare-and-swap on
//!   that slab's bitmap ([`slab`]). Only when the slab is full does the
//!   thread take its class's lock, to pick another slab with room, carve a
//!   new one from free pages, or borrow another shard's.
//! - **Large**: a run of whole 4 KiB pages, found first-fit under the page
//!   lock.
//! - **Growth**: when no segment has room, a new segment is mapped (up to
//!   the builder's maximum) under the grow lock.
//!
//! Lock order: class lock → grow lock → page lock. None of them is held
//! while the arena could allocate, and all are `std::sync::Mutex`, which is
//! futex-based and never allocates.
//!
//! # Invariants
//!
//! 1. Every byte of the arena that is not part of a live block is zero:
//!    freeing wipes the whole chunk or run, shrinking wipes the tail, and a
//!    move wipes the old block. So `allocate_zeroed` costs nothing extra.
//! 2. `committed` pages (slabs plus runs) `+` free pages `==` capacity pages.
//! 3. A slab is in exactly one class list, its class's, while its head's
//!    state is `SLAB_HEAD | class`.
//! 4. A slab with an owner (a shard) is that shard's current slab. An empty
//!    slab without owner is released by the free that empties it (unless a
//!    stale hint holds a bit at that instant; it is then reused or reclaimed
//!    later), and every empty slab, owned or not, is reclaimed when pages run
//!    out, before the arena grows.

pub(crate) mod classes;
pub(crate) mod fork;
mod resize;
mod segment;
pub(crate) mod shard;
mod slab;
mod slow;
mod stats;

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use classes::{CLASS_COUNT, CLASS_SIZES, CLASSES, PAGE, class_for};
use segment::{NO_OWNER, PageMeta, RUN_HEAD, SLAB_BODY, SLAB_HEAD, Segment};
use shard::SHARDS;

use crate::backing::{Backing, BackingPolicy, Fork, Mapping, os_page_size};
use crate::error::Error;
use crate::wipe::wipe_chunk;

pub use stats::{ClassStats, InvariantError, Stats};

/// Most segments one arena can have.
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
    /// Published segments; `segments[..segment_count]` are non-null and live
    /// until drop.
    segments: [AtomicPtr<Segment>; MAX_SEGMENTS],
    /// Each published segment's address range and metadata, copied here so
    /// the free path finds a page's metadata with two dependent loads
    /// instead of four. Written once, before `segment_count` publishes it.
    ranges: [SegRange; MAX_SEGMENTS],
    segment_count: AtomicUsize,
    /// Per-shard hints. May be stale; see `slab`.
    hints: [ShardHints; SHARDS],
    classes: [ClassState; CLASS_COUNT],
    /// Page counters; the lock also guards every segment's free-page bitmap.
    pages: Mutex<PageCounters>,
    /// Serialises adding segments.
    grow: Mutex<()>,
    backing: Backing,
    max_capacity: usize,
    capacity: AtomicUsize,
    last_error: Mutex<Option<Error>>,
    /// The fork generation it was built in, and what a child inherits.
    lineage: fork::Lineage,
}

/// Where a segment's memory and metadata are.
struct SegRange {
    base: AtomicUsize,
    len: AtomicUsize,
    meta: AtomicPtr<PageMeta>,
}

/// One shard's hints, on cache lines of their own.
#[repr(align(64))]
struct ShardHints {
    /// The slab this shard allocates from, per class.
    current: [AtomicPtr<PageMeta>; CLASS_COUNT],
    /// Per class, a slab a thread of this shard freed into while its bitmap
    /// word was full: a cheap place to look before scanning the class list.
    recent: [AtomicPtr<PageMeta>; CLASS_COUNT],
}

#[repr(align(64))]
struct ClassState {
    list: Mutex<SlabList>,
}

/// A class's slabs, linked through their heads' `prev`/`next`.
struct SlabList {
    head: *mut PageMeta,
    /// Where the next bounded scan starts (a member, or null).
    rover: *mut PageMeta,
    count: usize,
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
    LayoutTooLarge { ptr: usize, size: usize, block: usize },
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
        }
    }
}

/// Where a live block is.
enum Block<'a> {
    Chunk { head: &'a PageMeta, class: usize, idx: usize },
    Run { seg: &'a Segment, page: usize, pages: usize },
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

/// Builds a [`SecretArena`]: first capacity, growth limit, backing policy.
///
/// # Examples
///
/// ```
/// use secret_arena::{BackingPolicy, SecretArena};
///
/// let arena = SecretArena::builder()
///     .capacity(64 * 1024)        // the first segment
///     .max_capacity(1024 * 1024)  // grow by further segments up to this
///     .policy(BackingPolicy::PreferSecret)
///     .build()?;
/// assert_eq!(arena.capacity(), 64 * 1024);
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SecretArenaBuilder {
    capacity: usize,
    max_capacity: Option<usize>,
    policy: BackingPolicy,
    fork: Fork,
}

impl SecretArenaBuilder {
    /// Size of the first segment, in bytes, rounded up to the page size.
    /// Default: 1 MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let arena = secret_arena::SecretArena::builder().capacity(10_000).build()?;
    /// assert_eq!(arena.capacity(), 12 << 10); // three 4 KiB pages
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Largest total capacity the arena may grow to by adding segments.
    /// Default: the first capacity, i.e. no growth.
    ///
    /// # Examples
    ///
    /// ```
    /// // Starts with one 8 KiB segment; adds segments up to 48 KiB in all.
    /// let arena = secret_arena::SecretArena::builder().capacity(8 << 10).max_capacity(48 << 10).build()?;
    /// assert_eq!((arena.capacity(), arena.max_capacity()), (8 << 10, 48 << 10));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn max_capacity(mut self, bytes: usize) -> Self {
        self.max_capacity = Some(bytes);
        self
    }

    /// Which backing to use; see [`BackingPolicy`]. Default: prefer secret.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{BackingPolicy, Error, SecretArena};
    ///
    /// match SecretArena::builder().capacity(4096).policy(BackingPolicy::RequireSecret).build() {
    ///     Ok(arena) => assert_eq!(arena.backing(), secret_arena::Backing::MemfdSecret),
    ///     Err(Error::SecretMemoryUnavailable { errno }) => eprintln!("no memfd_secret here: {errno}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn policy(mut self, policy: BackingPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Maps the first segment and returns the arena.
    ///
    /// # Errors
    ///
    /// [`Error::MemlockBudget`] when the first segment does not fit
    /// `RLIMIT_MEMLOCK`, [`Error::SecretMemoryUnavailable`] under
    /// [`BackingPolicy::RequireSecret`] without `memfd_secret`,
    /// [`Error::InvalidCapacity`] for a zero or unmappable capacity, and
    /// [`Error::Syscall`] for any other failure, naming the step.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{Error, SecretArena};
    ///
    /// let arena = SecretArena::builder().capacity(16 << 10).build()?;
    /// assert_eq!(arena.capacity(), 16 << 10);
    /// assert!(matches!(SecretArena::builder().capacity(0).build(), Err(Error::InvalidCapacity { requested: 0 })));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn build(self) -> Result<SecretArena, Error> {
        let mapping = Mapping::create(self.capacity, self.policy, self.fork)?;
        let backing = mapping.backing();
        let len = mapping.len();
        let seg = Segment::create(mapping)?;
        let page = os_page_size();
        let max_capacity = (self.max_capacity.unwrap_or(len) / page * page).max(len);
        let arena = SecretArena {
            segments: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_SEGMENTS],
            ranges: [const {
                SegRange {
                    base: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                    meta: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; MAX_SEGMENTS],
            segment_count: AtomicUsize::new(0),
            hints: [const {
                ShardHints {
                    current: [const { AtomicPtr::new(core::ptr::null_mut()) }; CLASS_COUNT],
                    recent: [const { AtomicPtr::new(core::ptr::null_mut()) }; CLASS_COUNT],
                }
            }; SHARDS],
            classes: [const {
                ClassState {
                    list: Mutex::new(SlabList { head: core::ptr::null_mut(), rover: core::ptr::null_mut(), count: 0 }),
                }
            }; CLASS_COUNT],
            pages: Mutex::new(PageCounters::default()),
            grow: Mutex::new(()),
            backing,
            max_capacity,
            capacity: AtomicUsize::new(0),
            last_error: Mutex::new(None),
            lineage: fork::Lineage::new(self.fork),
        };
        arena.publish(0, seg);
        Ok(arena)
    }
}

impl SecretArena {
    /// An arena of one segment of `capacity` bytes (rounded up to the page
    /// size), preferring `memfd_secret` and falling back to an mlocked memfd.
    ///
    /// # Errors
    ///
    /// As [`SecretArenaBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// // 64 KiB fits even the oldest default RLIMIT_MEMLOCK.
    /// let arena = secret_arena::SecretArena::new(64 << 10)?;
    /// assert_eq!(arena.capacity(), 64 << 10);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<SecretArena, Error> {
        Self::builder().capacity(capacity).build()
    }

    /// A builder, for growth and the backing policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{Backing, BackingPolicy, SecretArena};
    ///
    /// let arena = SecretArena::builder().capacity(8192).policy(BackingPolicy::ForceFallback).build()?;
    /// assert_eq!(arena.backing(), Backing::MlockedMemfd);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn builder() -> SecretArenaBuilder {
        SecretArenaBuilder {
            capacity: DEFAULT_CAPACITY,
            max_capacity: None,
            policy: BackingPolicy::PreferSecret,
            fork: Fork::Hide,
        }
    }

    /// Which backing this arena got.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{Backing, SecretArena};
    ///
    /// let arena = SecretArena::new(4096)?;
    /// if arena.backing() == Backing::MlockedMemfd {
    ///     eprintln!("no memfd_secret here: the kernel can still read these pages");
    /// }
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Bytes mapped in all segments so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let arena = secret_arena::SecretArena::new(5000)?;
    /// assert_eq!(arena.capacity(), 8192); // rounded up to pages
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The most this arena may grow to.
    ///
    /// # Examples
    ///
    /// ```
    /// let arena = secret_arena::SecretArena::builder().capacity(4096).max_capacity(65536).build()?;
    /// assert_eq!(arena.max_capacity(), 65536);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    /// Whether `ptr` points into this arena's memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::boxed::Box;
    ///
    /// let arena = secret_arena::SecretArena::new(4096)?;
    /// let b = Box::new_in(7u64, &arena);
    /// assert!(arena.contains(&*b as *const u64 as *const u8));
    /// assert!(!arena.contains(&0u8));
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn contains(&self, ptr: *const u8) -> bool {
        let addr = ptr as usize;
        self.ranges[..self.segment_count()]
            .iter()
            .any(|r| addr.wrapping_sub(r.base.load(Ordering::Relaxed)) < r.len.load(Ordering::Relaxed))
    }

    /// Why the arena last failed to grow, if it ever did: the detail an
    /// `AllocError` cannot carry.
    ///
    /// # Examples
    ///
    /// ```
    /// let arena = secret_arena::SecretArena::new(4096)?;
    /// assert_eq!(arena.last_error(), None);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn last_error(&self) -> Option<Error> {
        *lock(&self.last_error)
    }

    /// Makes `seg` the `index`th segment. Grow lock held (or not yet shared).
    fn publish(&self, index: usize, seg: NonNull<Segment>) {
        // SAFETY: a live segment just created by `Segment::create`.
        let s = unsafe { seg.as_ref() };
        let range = &self.ranges[index];
        range.base.store(s.base() as usize, Ordering::Relaxed);
        range.len.store(s.len(), Ordering::Relaxed);
        range.meta.store(s.meta_ptr(), Ordering::Relaxed);
        self.segments[index].store(seg.as_ptr(), Ordering::Release);
        self.capacity.fetch_add(s.len(), Ordering::Relaxed);
        self.segment_count.store(index + 1, Ordering::Release);
    }

    #[inline]
    fn segment_count(&self) -> usize {
        self.segment_count.load(Ordering::Acquire)
    }

    #[inline]
    fn segment(&self, i: usize) -> &Segment {
        debug_assert!(i < self.segment_count());
        let p = self.segments[i].load(Ordering::Acquire);
        // SAFETY: segments below `segment_count` are published non-null and
        // stay mapped until the arena is dropped, which `&self` prevents.
        unsafe { &*p }
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        (0..self.segment_count()).map(|i| self.segment(i))
    }

    /// The segment whose metadata holds `m`, and `m`'s page index.
    fn meta_home(&self, m: &PageMeta) -> (&Segment, usize) {
        self.segments()
            .find_map(|s| s.index_of(m).map(|p| (s, p)))
            .expect("every PageMeta belongs to a segment of its arena")
    }

    // ----- allocation -----

    /// Allocates a block for `layout`; `None` when the arena is full.
    #[inline]
    pub(crate) fn alloc_block(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        if layout.size() == 0 {
            return Some(dangling(layout.align()));
        }
        if let Some(class) = class_for(layout.size(), layout.align()) {
            if let Some(p) = self.alloc_chunk(class) {
                return Some(slice(p as *mut u8, CLASS_SIZES[class] as usize));
            }
            return self.alloc_small_fallback(class, layout);
        }
        self.alloc_run(layout)
    }

    #[inline]
    fn alloc_chunk(&self, class: usize) -> Option<usize> {
        let shard = shard::current();
        let hint = self.hints[shard].current[class].load(Ordering::Relaxed);
        if !hint.is_null() {
            // SAFETY: hints only ever point at PageMeta inside this arena's
            // metadata, which lives as long as `self`.
            if let Some(p) = unsafe { &*hint }.try_alloc(class, &CLASSES[class]) {
                return Some(p);
            }
        }
        self.alloc_chunk_slow(class, shard, true)
    }

    // ----- freeing -----

    /// Finds the live block that starts at `addr`.
    #[inline]
    fn locate(&self, addr: usize) -> Result<Block<'_>, Misuse> {
        let n = self.segment_count();
        let mut i = 0;
        while i < n {
            let range = &self.ranges[i];
            let off = addr.wrapping_sub(range.base.load(Ordering::Relaxed));
            if off < range.len.load(Ordering::Relaxed) {
                let page = off / PAGE;
                // SAFETY: `page < len / PAGE`, the segment's page count, so
                // this is inside its PageMeta array, which lives as long as
                // `self`; all-zero bytes are a valid PageMeta.
                let meta = unsafe { &*range.meta.load(Ordering::Relaxed).add(page) };
                let state = meta.state.load(Ordering::Acquire);
                if state & !0xff == SLAB_HEAD {
                    // The common case: the block is in its slab's first page.
                    return Self::chunk_at(meta, state, addr, off % PAGE);
                }
                return self.locate_slow(self.segment(i), meta, page, state, addr);
            }
            i += 1;
        }
        Err(Misuse::Foreign(addr))
    }

    #[cold]
    fn locate_slow<'a>(
        &'a self,
        seg: &'a Segment,
        meta: &PageMeta,
        page: usize,
        state: u32,
        addr: usize,
    ) -> Result<Block<'a>, Misuse> {
        match state {
            SLAB_BODY => {
                let head_page = meta.aux.load(Ordering::Relaxed) as usize;
                let head = seg.meta(head_page);
                let head_state = head.state.load(Ordering::Acquire);
                if head_state & !0xff != SLAB_HEAD || head_page > page {
                    return Err(Misuse::NotAllocated(addr));
                }
                Self::chunk_at(head, head_state, addr, addr - seg.page_addr(head_page) as usize)
            }
            RUN_HEAD if addr % PAGE == 0 => {
                let pages = meta.aux.load(Ordering::Relaxed) as usize;
                Ok(Block::Run { seg, page, pages })
            }
            _ => Err(Misuse::NotAllocated(addr)),
        }
    }

    /// The chunk at byte `off` of the slab whose head is `head`, if live.
    #[inline]
    fn chunk_at(head: &PageMeta, state: u32, addr: usize, off: usize) -> Result<Block<'_>, Misuse> {
        let class = (state & 0xff) as usize;
        let info = &CLASSES[class];
        let idx = ((off as u64 * info.recip) >> 32) as usize;
        if idx * info.size as usize != off || idx >= info.chunks as usize {
            return Err(Misuse::NotAllocated(addr));
        }
        // A set bit means the chunk is free already: do not even wipe it.
        if head.bits[idx / 64].load(Ordering::Relaxed) & (1 << (idx % 64)) != 0 {
            return Err(Misuse::NotAllocated(addr));
        }
        Ok(Block::Chunk { head, class, idx })
    }

    /// Wipes and frees the block at `ptr`.
    #[inline]
    pub(crate) fn free_block(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Misuse> {
        if layout.size() == 0 {
            return Ok(());
        }
        let addr = ptr.as_ptr() as usize;
        let block = self.locate(addr)?;
        if layout.size() > block.len() {
            return Err(Misuse::LayoutTooLarge { ptr: addr, size: layout.size(), block: block.len() });
        }
        match block {
            Block::Chunk { head, class, idx } => self.free_chunk(ptr.as_ptr(), head, class, idx),
            Block::Run { seg, page, pages } => self.free_run(seg, page, pages, addr),
        }
    }

    #[inline]
    fn free_chunk(&self, ptr: *mut u8, head: &PageMeta, class: usize, idx: usize) -> Result<(), Misuse> {
        let info = &CLASSES[class];
        // SAFETY: `locate` found a live chunk of `info.size` bytes at `ptr`,
        // which the caller gives up; chunks are 16-aligned multiples of 16.
        unsafe { wipe_chunk(ptr, info.size as usize) };
        let (w, mask) = (idx / 64, 1u64 << (idx % 64));
        // SeqCst (not just Release): see the empty-slab check below. Only
        // the freed bit of the old value is used, so this is one `lock bts`.
        if head.bits[w].fetch_or(mask, Ordering::SeqCst) & mask != 0 {
            return Err(Misuse::NotAllocated(ptr as usize));
        }
        let now = head.bits[w].load(Ordering::SeqCst);
        if now == mask {
            // The word was full: leave a hint for the slow path, on this
            // shard's own cache line, and only if it changes.
            let recent = &self.hints[shard::current()].recent[class];
            let me = head as *const PageMeta as *mut PageMeta;
            if recent.load(Ordering::Relaxed) != me {
                recent.store(me, Ordering::Relaxed);
            }
        }
        if now == info.all_free[w] {
            // This word is now empty. The SeqCst RMW above and SeqCst loads
            // here, with the SeqCst store in the slow path's ownership
            // hand-off, order all of them: of two threads emptying a slab's
            // last words, or one emptying it while its owner lets go, at
            // least one sees the whole slab empty and unowned. (On x86 this
            // costs no fence: the RMW is locked and the loads are plain.)
            if head.aux.load(Ordering::SeqCst) == NO_OWNER && head.is_empty(info) {
                self.release_slab(head, class);
            }
        }
        Ok(())
    }
}

impl Drop for SecretArena {
    fn drop(&mut self) {
        if self.is_inherited() {
            // A fork child's copy: its memory is not this process's to wipe
            // or unmap (see `fork`). Leave the ranges reserved.
            return;
        }
        for i in 0..self.segment_count() {
            let p = self.segments[i].swap(core::ptr::null_mut(), Ordering::AcqRel);
            if let Some(seg) = NonNull::new(p) {
                // SAFETY: `&mut self` proves no block is borrowed any more;
                // each segment is destroyed once, here.
                unsafe { Segment::destroy(seg) };
            }
        }
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
