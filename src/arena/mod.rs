//! The slab arena: size classes carved lazily out of backing segments.
//!
//! # How a request is served
//!
//! - **Small** (≤ 2048 bytes, alignment ≤ 2048): a chunk of the request's
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
//! 4. A slab with an owner (a shard) is that shard's current slab, and is
//!    never released; an empty slab without owner is released at once.

pub(crate) mod classes;
mod segment;
pub(crate) mod shard;
mod slab;
mod stats;

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use classes::{CLASS_COUNT, CLASS_SIZES, CLASSES, PAGE, class_for};
use segment::{NO_OWNER, PageMeta, RUN_BODY, RUN_FREEING, RUN_HEAD, SLAB_BODY, SLAB_HEAD, Segment};
use shard::SHARDS;

use crate::backing::{Backing, BackingPolicy, Mapping, os_page_size};
use crate::error::Error;
use crate::wipe::wipe;

pub use stats::{ClassStats, InvariantError, Stats};

/// Most segments one arena can have.
pub const MAX_SEGMENTS: usize = 64;

/// Default capacity of [`SecretArena::builder`]: 1 MiB.
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
/// See the [module docs](self): every free byte is zero; committed plus free
/// pages equal capacity; each slab is in its class's list.
pub struct SecretArena {
    /// Published segments; `segments[..segment_count]` are non-null and live
    /// until drop.
    segments: [AtomicPtr<Segment>; MAX_SEGMENTS],
    segment_count: AtomicUsize,
    /// Per-shard, per-class current-slab hints. May be stale; see `slab`.
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
}

#[repr(align(64))]
struct ShardHints([AtomicPtr<PageMeta>; CLASS_COUNT]);

#[repr(align(64))]
struct ClassState {
    list: Mutex<SlabList>,
    /// A slab of this class that had a chunk freed while full, if any.
    partial: AtomicPtr<PageMeta>,
}

/// A class's slabs, linked through their heads' `prev`/`next`.
struct SlabList {
    head: *mut PageMeta,
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
}

impl SecretArenaBuilder {
    /// Size of the first segment, in bytes, rounded up to the page size.
    /// Default: 1 MiB.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Largest total capacity the arena may grow to by adding segments.
    /// Default: the first capacity, i.e. no growth.
    pub fn max_capacity(mut self, bytes: usize) -> Self {
        self.max_capacity = Some(bytes);
        self
    }

    /// Which backing to use; see [`BackingPolicy`]. Default: prefer secret.
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
    pub fn build(self) -> Result<SecretArena, Error> {
        let mapping = Mapping::create(self.capacity, self.policy)?;
        let backing = mapping.backing();
        let len = mapping.len();
        let seg = Segment::create(mapping)?;
        let max_capacity = self.max_capacity.unwrap_or(len).max(len);
        let arena = SecretArena {
            segments: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_SEGMENTS],
            segment_count: AtomicUsize::new(0),
            hints: [const { ShardHints([const { AtomicPtr::new(core::ptr::null_mut()) }; CLASS_COUNT]) }; SHARDS],
            classes: [const {
                ClassState {
                    list: Mutex::new(SlabList { head: core::ptr::null_mut(), count: 0 }),
                    partial: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; CLASS_COUNT],
            pages: Mutex::new(PageCounters::default()),
            grow: Mutex::new(()),
            backing,
            max_capacity,
            capacity: AtomicUsize::new(len),
            last_error: Mutex::new(None),
        };
        arena.segments[0].store(seg.as_ptr(), Ordering::Release);
        arena.segment_count.store(1, Ordering::Release);
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
    /// let arena = secret_arena::SecretArena::new(1 << 20)?;
    /// assert_eq!(arena.capacity(), 1 << 20);
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
        SecretArenaBuilder { capacity: DEFAULT_CAPACITY, max_capacity: None, policy: BackingPolicy::PreferSecret }
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
        self.segment_of(ptr as usize).is_some()
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

    fn segment_count(&self) -> usize {
        self.segment_count.load(Ordering::Acquire)
    }

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

    #[inline]
    fn segment_of(&self, addr: usize) -> Option<&Segment> {
        self.segments().find(|s| s.contains(addr))
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
        let hint = self.hints[shard].0[class].load(Ordering::Relaxed);
        if !hint.is_null() {
            // SAFETY: hints only ever point at PageMeta inside this arena's
            // metadata, which lives as long as `self`.
            if let Some(p) = unsafe { &*hint }.try_alloc(class, &CLASSES[class]) {
                return Some(p);
            }
        }
        self.alloc_chunk_slow(class, shard)
    }

    /// The class had nothing: try larger classes, then a page run, so that
    /// a request fails only when nothing in the arena can hold it.
    #[cold]
    fn alloc_small_fallback(&self, class: usize, layout: Layout) -> Option<NonNull<[u8]>> {
        for (bigger, &size) in CLASS_SIZES.iter().enumerate().skip(class + 1) {
            if size as usize % layout.align() == 0 {
                if let Some(p) = self.alloc_chunk(bigger) {
                    return Some(slice(p as *mut u8, size as usize));
                }
            }
        }
        self.alloc_run(layout)
    }

    #[cold]
    fn alloc_chunk_slow(&self, class: usize, shard: usize) -> Option<usize> {
        let info = &CLASSES[class];
        let state = &self.classes[class];
        let hint = &self.hints[shard].0[class];
        let mut list = lock(&state.list);
        loop {
            let current = hint.load(Ordering::Relaxed);
            if !current.is_null() {
                // SAFETY: as in `alloc_chunk`.
                let cur = unsafe { &*current };
                if let Some(p) = cur.try_alloc(class, info) {
                    return Some(p);
                }
                // Full: stop owning it, so frees into it can release it later.
                if cur.aux.load(Ordering::Relaxed) == shard as u32
                    && cur.state.load(Ordering::Relaxed) == SLAB_HEAD | class as u32
                {
                    cur.aux.store(NO_OWNER, Ordering::Relaxed);
                }
            }
            let next = self
                .take_partial(class)
                .or_else(|| Self::find_in_list(&list, |m| m.aux.load(Ordering::Relaxed) == NO_OWNER && m.has_free()))
                .or_else(|| self.carve(class, &mut list))
                .or_else(|| Self::find_in_list(&list, PageMeta::has_free));
            let Some(next) = next else {
                hint.store(core::ptr::null_mut(), Ordering::Relaxed);
                return None;
            };
            if next.aux.load(Ordering::Relaxed) == NO_OWNER {
                next.aux.store(shard as u32, Ordering::Relaxed);
            }
            hint.store(next as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
        }
    }

    /// The class's "freed while full" hint, if it is still an unowned slab
    /// of this class with room. Class lock held.
    fn take_partial(&self, class: usize) -> Option<&PageMeta> {
        let p = self.classes[class].partial.swap(core::ptr::null_mut(), Ordering::Relaxed);
        if p.is_null() {
            return None;
        }
        // SAFETY: the hint points into this arena's metadata.
        let m = unsafe { &*p };
        (m.state.load(Ordering::Relaxed) == SLAB_HEAD | class as u32
            && m.aux.load(Ordering::Relaxed) == NO_OWNER
            && m.has_free())
        .then_some(m)
    }

    fn find_in_list<'a>(list: &SlabList, pred: impl Fn(&PageMeta) -> bool) -> Option<&'a PageMeta> {
        let mut p = list.head;
        while !p.is_null() {
            // SAFETY: list members are live slab heads in this arena's
            // metadata; the class lock is held, so links are stable.
            let m = unsafe { &*p };
            if pred(m) {
                return Some(m);
            }
            p = m.next.load(Ordering::Relaxed);
        }
        None
    }

    /// Carves a new slab for `class` from free pages (growing the arena if
    /// allowed) and links it into the class list. Class lock held.
    fn carve<'a>(&'a self, class: usize, list: &mut SlabList) -> Option<&'a PageMeta> {
        let info = &CLASSES[class];
        let (seg, page) = self.take_pages(info.pages as usize, PAGE)?;
        let head = seg.meta(page);
        head.base.store(seg.page_addr(page) as usize, Ordering::Relaxed);
        head.aux.store(NO_OWNER, Ordering::Relaxed);
        for body in 1..info.pages as usize {
            let m = seg.meta(page + body);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(SLAB_BODY, Ordering::Release);
        }
        head.prev.store(core::ptr::null_mut(), Ordering::Relaxed);
        head.next.store(list.head, Ordering::Relaxed);
        if !list.head.is_null() {
            // SAFETY: the old list head is a live slab head; class lock held.
            unsafe { &*list.head }.prev.store(head as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
        }
        list.head = head as *const PageMeta as *mut PageMeta;
        list.count += 1;
        head.state.store(SLAB_HEAD | class as u32, Ordering::Relaxed);
        // Publishing the bitmap last: whoever acquires it sees state and base.
        for (w, &empty) in info.empty.iter().enumerate() {
            head.bits[w].store(empty, Ordering::Release);
        }
        Some(head)
    }

    /// Takes `n` pages aligned to `align` from any segment, growing the
    /// arena when none has room.
    fn take_pages(&self, n: usize, align: usize) -> Option<(&Segment, usize)> {
        loop {
            let seen = self.segment_count();
            {
                let mut counters = lock(&self.pages);
                for i in 0..seen {
                    let seg = self.segment(i);
                    if let Some(p) = seg.take_pages(n, align) {
                        counters.committed += n;
                        counters.peak = counters.peak.max(counters.committed);
                        return Some((seg, p));
                    }
                }
            }
            let slack = align.saturating_sub(os_page_size().max(PAGE));
            if !self.grow(n.checked_mul(PAGE)?.checked_add(slack)?, seen) {
                return None;
            }
        }
    }

    /// Adds a segment of at least `min_bytes`, unless another thread already
    /// did since `seen`. Returns whether it is worth searching again.
    #[cold]
    fn grow(&self, min_bytes: usize, seen: usize) -> bool {
        let _g = lock(&self.grow);
        let count = self.segment_count();
        if count != seen {
            return true;
        }
        let capacity = self.capacity();
        let room = self.max_capacity.saturating_sub(capacity);
        if count == MAX_SEGMENTS || min_bytes > room {
            return false;
        }
        // Double the arena each time, within the limit.
        let mut want = capacity.max(min_bytes).min(room);
        loop {
            match Mapping::create_as(want, self.backing).and_then(Segment::create) {
                Ok(seg) => {
                    // SAFETY: just created, non-null and live.
                    let len = unsafe { seg.as_ref() }.len();
                    self.segments[count].store(seg.as_ptr(), Ordering::Release);
                    self.capacity.fetch_add(len, Ordering::Relaxed);
                    self.segment_count.store(count + 1, Ordering::Release);
                    return true;
                }
                Err(e) => {
                    *lock(&self.last_error) = Some(e);
                    if matches!(e, Error::MemlockBudget { .. }) && want > min_bytes {
                        want = (want / 2).max(min_bytes);
                        continue;
                    }
                    return false;
                }
            }
        }
    }

    #[cold]
    fn alloc_run(&self, layout: Layout) -> Option<NonNull<[u8]>> {
        let pages = layout.size().div_ceil(PAGE);
        let (seg, page) = self.take_pages(pages, layout.align().max(PAGE))?;
        let head = seg.meta(page);
        for body in 1..pages {
            let m = seg.meta(page + body);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        head.aux.store(pages as u32, Ordering::Relaxed);
        head.state.store(RUN_HEAD, Ordering::Release);
        Some(slice(seg.page_addr(page), pages * PAGE))
    }

    // ----- freeing -----

    /// Finds the live block that starts at `addr`.
    fn locate(&self, addr: usize) -> Result<Block<'_>, Misuse> {
        let seg = self.segment_of(addr).ok_or(Misuse::Foreign(addr))?;
        let page = (addr - seg.base() as usize) / PAGE;
        let meta = seg.meta(page);
        let state = meta.state.load(Ordering::Acquire);
        let head = match state {
            SLAB_BODY => seg.meta(meta.aux.load(Ordering::Relaxed) as usize),
            RUN_HEAD if addr % PAGE == 0 => {
                let pages = meta.aux.load(Ordering::Relaxed) as usize;
                return Ok(Block::Run { seg, page, pages });
            }
            s if s & !0xff == SLAB_HEAD => meta,
            _ => return Err(Misuse::NotAllocated(addr)),
        };
        let head_state = head.state.load(Ordering::Acquire);
        if head_state & !0xff != SLAB_HEAD {
            return Err(Misuse::NotAllocated(addr));
        }
        let class = (head_state & 0xff) as usize;
        let info = &CLASSES[class];
        let off = addr.wrapping_sub(head.base.load(Ordering::Relaxed));
        let idx = ((off as u64 * info.recip) >> 32) as usize;
        let allocated = head.bits[idx / 64 % classes::WORDS].load(Ordering::Relaxed) & (1 << (idx % 64)) != 0;
        if off >= info.pages as usize * PAGE
            || idx * info.size as usize != off
            || idx >= info.chunks as usize
            || !allocated
        {
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
        // which the caller gives up.
        unsafe { wipe(ptr, info.size as usize) };
        let (w, mask) = (idx / 64, 1u64 << (idx % 64));
        let old = head.bits[w].fetch_and(!mask, Ordering::Release);
        if old & mask == 0 {
            return Err(Misuse::NotAllocated(ptr as usize));
        }
        if old == u64::MAX {
            self.classes[class].partial.store(head as *const PageMeta as *mut PageMeta, Ordering::Relaxed);
        }
        if old & !mask == info.empty[w] && head.aux.load(Ordering::Relaxed) == NO_OWNER && head.is_empty(info) {
            self.release_slab(head, class);
        }
        Ok(())
    }

    /// Gives an empty, unowned slab's pages back. Checks both again under
    /// the class lock, and does nothing if either no longer holds.
    #[cold]
    fn release_slab(&self, head: &PageMeta, class: usize) {
        let info = &CLASSES[class];
        let mut list = lock(&self.classes[class].list);
        if head.state.load(Ordering::Relaxed) != SLAB_HEAD | class as u32
            || head.aux.load(Ordering::Relaxed) != NO_OWNER
            || !head.reserve_if_empty(info)
        {
            return;
        }
        // No chunk can be taken from it now (all bits set). Unlink it.
        let (prev, next) = (head.prev.load(Ordering::Relaxed), head.next.load(Ordering::Relaxed));
        if prev.is_null() {
            list.head = next;
        } else {
            // SAFETY: a live list member; class lock held.
            unsafe { &*prev }.next.store(next, Ordering::Relaxed);
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { &*next }.prev.store(prev, Ordering::Relaxed);
        }
        list.count -= 1;
        let me = head as *const PageMeta as *mut PageMeta;
        let _ = self.classes[class].partial.compare_exchange(
            me,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let (seg, page) = self.meta_home(head);
        for p in page..page + info.pages as usize {
            seg.meta(p).state.store(segment::FREE, Ordering::Release);
        }
        let mut counters = lock(&self.pages);
        seg.put_pages(page, info.pages as usize);
        counters.committed -= info.pages as usize;
    }

    fn free_run(&self, seg: &Segment, page: usize, pages: usize, addr: usize) -> Result<(), Misuse> {
        let head = seg.meta(page);
        head.state
            .compare_exchange(RUN_HEAD, RUN_FREEING, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Misuse::NotAllocated(addr))?;
        // SAFETY: the run `page..page + pages` is live and being given up.
        unsafe { wipe(seg.page_addr(page), pages * PAGE) };
        for p in page..page + pages {
            seg.meta(p).state.store(segment::FREE, Ordering::Release);
        }
        let mut counters = lock(&self.pages);
        seg.put_pages(page, pages);
        counters.committed -= pages;
        Ok(())
    }

    // ----- resizing -----

    /// Resizes the block at `ptr` from `old` to `new`, in place when it can,
    /// else by moving it and wiping the old block. With `zero`, bytes from
    /// `old.size()` to `new.size()` are zero afterwards. `Ok(None)` means the
    /// arena is full and the old block is untouched.
    ///
    /// # Safety
    ///
    /// `ptr` must be a block of this arena allocated with a layout that
    /// `old` fits, with no live references into it.
    pub(crate) unsafe fn resize_block(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
    ) -> Result<Option<NonNull<[u8]>>, Misuse> {
        if old.size() == 0 {
            return Ok(self.alloc_block(new));
        }
        let addr = ptr.as_ptr() as usize;
        let block = self.locate(addr)?;
        let len = block.len();
        if old.size() > len {
            return Err(Misuse::LayoutTooLarge { ptr: addr, size: old.size(), block: len });
        }
        if new.size() == 0 {
            self.free_block(ptr, old)?;
            return Ok(Some(dangling(new.align())));
        }
        let p = ptr.as_ptr();
        if addr % new.align() == 0 {
            match block {
                Block::Chunk { class, .. } => {
                    let stays = new.size() <= len
                        && (new.size() >= old.size() || class_for(new.size(), new.align()) == Some(class));
                    if stays {
                        if new.size() < old.size() {
                            // SAFETY: `new.size()..len` lies inside the live chunk.
                            unsafe { wipe(p.add(new.size()), len - new.size()) };
                        } else if zero {
                            // SAFETY: `old.size()..new.size()` lies inside the live chunk.
                            unsafe { p.add(old.size()).write_bytes(0, new.size() - old.size()) };
                        }
                        return Ok(Some(slice(p, len)));
                    }
                }
                Block::Run { seg, page, pages } => {
                    let need = new.size().div_ceil(PAGE);
                    if new.size() <= old.size() {
                        if class_for(new.size(), new.align()).is_none() {
                            self.shrink_run(seg, page, pages, need, new.size());
                            return Ok(Some(slice(p, need * PAGE)));
                        }
                    } else if need <= pages || self.extend_run(seg, page, pages, need) {
                        if zero {
                            // SAFETY: inside the (possibly extended) live run.
                            unsafe { p.add(old.size()).write_bytes(0, new.size() - old.size()) };
                        }
                        return Ok(Some(slice(p, need.max(pages) * PAGE)));
                    }
                }
            }
        }
        let Some(moved) = self.alloc_block(new) else {
            return Ok(None);
        };
        // SAFETY: both blocks are live and distinct; we copy the bytes both
        // layouts cover. The new block is zero beyond them (invariant 1).
        unsafe { core::ptr::copy_nonoverlapping(p, moved.as_ptr().cast::<u8>(), old.size().min(new.size())) };
        self.free_block(ptr, old)?;
        Ok(Some(moved))
    }

    /// Keeps the first `need` pages of a run, wiping from `keep_bytes` on.
    fn shrink_run(&self, seg: &Segment, page: usize, pages: usize, need: usize, keep_bytes: usize) {
        // SAFETY: `keep_bytes..pages * PAGE` is inside the live run.
        unsafe { wipe(seg.page_addr(page).add(keep_bytes), pages * PAGE - keep_bytes) };
        if need == pages {
            return;
        }
        seg.meta(page).aux.store(need as u32, Ordering::Relaxed);
        for p in page + need..page + pages {
            seg.meta(p).state.store(segment::FREE, Ordering::Release);
        }
        let mut counters = lock(&self.pages);
        seg.put_pages(page + need, pages - need);
        counters.committed -= pages - need;
    }

    /// Grows a run to `need` pages if the pages after it are free.
    fn extend_run(&self, seg: &Segment, page: usize, pages: usize, need: usize) -> bool {
        {
            let mut counters = lock(&self.pages);
            if !seg.take_exact(page + pages, need - pages) {
                return false;
            }
            counters.committed += need - pages;
            counters.peak = counters.peak.max(counters.committed);
        }
        for p in page + pages..page + need {
            let m = seg.meta(p);
            m.aux.store(page as u32, Ordering::Relaxed);
            m.state.store(RUN_BODY, Ordering::Release);
        }
        seg.meta(page).aux.store(need as u32, Ordering::Relaxed);
        true
    }
}

impl Drop for SecretArena {
    fn drop(&mut self) {
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
