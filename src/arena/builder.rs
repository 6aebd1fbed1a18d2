//! Building an arena, and what it says about itself.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex;

use super::classes::{CLASS_COUNT, PAGE};
use super::pages::Pages;
use super::thread::MAX_SLOTS;
use super::{ClassState, DEFAULT_CAPACITY, MAX_SEGMENTS, PageCounters, SecretArena, SlabList, fork, lock};
use crate::backing::{Backing, BackingPolicy, Fork, Mapping, os_page_size};
use crate::error::Error;

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
    pub(super) fork: Fork,
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
        // Before the first mapping exists: a fork child must find every arena
        // marked inherited, its holes re-reserved and its descriptor closed,
        // whether or not the program ever touches the process-wide arenas.
        crate::global::register_fork_handlers();
        let page = os_page_size();
        let max = self.max_capacity.unwrap_or(self.capacity).max(self.capacity);
        let mapping = Mapping::create(self.capacity, max / page * page, self.policy, self.fork)?;
        let pages = Pages::create(mapping.max_len() / PAGE, mapping.len() / PAGE)?;
        let arena = SecretArena {
            base: mapping.base().as_ptr() as usize,
            pages,
            classes: [const {
                ClassState {
                    list: Mutex::new(SlabList {
                        head: core::ptr::null_mut(),
                        rover: core::ptr::null_mut(),
                        count: 0,
                        scan_skip: 0,
                        scan_backoff: 1,
                    }),
                    room: AtomicBool::new(false),
                }
            }; CLASS_COUNT],
            page_lock: Mutex::new(PageCounters::default()),
            grow: Mutex::new(()),
            seg_starts: [const { AtomicUsize::new(0) }; MAX_SEGMENTS],
            segment_count: AtomicUsize::new(1),
            armed: [const { AtomicU64::new(0) }; MAX_SLOTS / 64],
            last_idle_reclaim: AtomicU64::new(0),
            backing: mapping.backing(),
            max_capacity: mapping.max_len(),
            mapping,
            last_error: Mutex::new(None),
            lineage: fork::Lineage::new(self.fork),
        };
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
        self.pages.pages() * PAGE
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
        (ptr as usize).wrapping_sub(self.base) < self.capacity()
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
}
