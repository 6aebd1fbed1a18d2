//! Statistics and the invariant checker.

use crate::sync::Ordering;
use core::fmt;

use super::classes::{CLASS_COUNT, CLASS_SIZES, CLASSES, PAGE, WORDS};
use super::slab::{FREE, PageMeta, RUN_BODY, RUN_HEAD, SLAB_BODY, SLAB_HEAD, UNOWNED};
use super::{SecretArena, lock};
use crate::backing::Backing;

/// Counts for one size class.
///
/// # Examples
///
/// ```
/// use allocator_api2::boxed::Box;
///
/// let arena = secret_arena::SecretArena::new(16 << 10)?;
/// let key = Box::new_in([0u8; 32], &arena);
/// let class = arena.stats().classes.iter().find(|c| c.chunk_size == 32).copied().unwrap();
/// assert_eq!(class.in_use, 1);
/// assert!(class.slabs >= 1 && class.chunks >= 1);
/// # drop(key);
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// Chunk size of the class, in bytes.
    pub chunk_size: usize,
    /// Slabs carved for the class.
    pub slabs: usize,
    /// Chunks those slabs hold.
    pub chunks: usize,
    /// Chunks handed out.
    pub in_use: usize,
}

/// A snapshot of an arena's use. Taken without stopping other threads, so
/// under concurrent use the numbers may not add up exactly.
///
/// # Examples
///
/// ```
/// use allocator_api2::vec::Vec;
///
/// let arena = secret_arena::SecretArena::new(32 << 10)?;
/// let mut token = Vec::new_in(&arena);
/// token.extend_from_slice(&[7u8; 10_000]); // a page run of three pages
/// let stats = arena.stats();
/// assert_eq!((stats.capacity, stats.segments), (32 << 10, 1));
/// assert_eq!(stats.in_runs, 12 << 10);
/// assert!(stats.in_use >= stats.in_runs && stats.committed >= stats.in_use);
/// drop(token);
/// assert_eq!(arena.stats().in_use, 0);
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Which backing the arena has.
    pub backing: Backing,
    /// Bytes mapped, in all segments.
    pub capacity: usize,
    /// The most the arena may grow to.
    pub max_capacity: usize,
    /// Segments (mappings) in use.
    pub segments: usize,
    /// Bytes handed to slabs and page runs.
    pub committed: usize,
    /// The most bytes ever committed at once.
    pub peak_committed: usize,
    /// Bytes in live blocks: chunks at their class size, runs in whole pages.
    pub in_use: usize,
    /// Bytes in live page runs (included in `in_use`).
    pub in_runs: usize,
    /// Per size class.
    pub classes: [ClassStats; CLASS_COUNT],
}

/// A broken arena invariant, found by [`SecretArena::check_invariants`].
///
/// # Examples
///
/// ```
/// let arena = secret_arena::SecretArena::new(16 << 10)?;
/// // SAFETY: no other thread uses the arena during the check.
/// if let Err(e) = unsafe { arena.check_invariants() } {
///     panic!("{} (segment {}, page {}, detail {})", e.what, e.segment, e.page, e.detail);
/// }
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvariantError {
    /// Which invariant.
    pub what: &'static str,
    /// Segment index.
    pub segment: usize,
    /// Page index in the segment.
    pub page: usize,
    /// A detail: a byte offset, a count or a state, depending on `what`.
    pub detail: usize,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arena invariant broken: {} (segment {}, page {}, detail {:#x})",
            self.what, self.segment, self.page, self.detail
        )
    }
}

impl std::error::Error for InvariantError {}

impl SecretArena {
    /// Counts what is in use, per class and in all.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::boxed::Box;
    ///
    /// let arena = secret_arena::SecretArena::new(64 * 1024)?;
    /// let _key = Box::new_in([7u8; 32], &arena);
    /// let stats = arena.stats();
    /// assert_eq!(stats.in_use, 32);
    /// assert_eq!(stats.classes[1].chunk_size, 32);
    /// assert_eq!(stats.classes[1].in_use, 1);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let mut classes = [ClassStats::default(); CLASS_COUNT];
        for (c, cs) in classes.iter_mut().enumerate() {
            cs.chunk_size = CLASS_SIZES[c] as usize;
        }
        let mut in_runs = 0;
        let mut p = 0;
        while p < self.pages.pages() {
            let m = self.pages.meta(p);
            let state = m.state.load(Ordering::Acquire);
            if state & !0xff == SLAB_HEAD {
                let c = (state & 0xff) as usize;
                let info = &CLASSES[c];
                classes[c].slabs += 1;
                classes[c].chunks += info.chunks as usize;
                classes[c].in_use += m.used_chunks(info);
                p += info.pages as usize;
            } else if state == RUN_HEAD {
                let pages = (m.aux.load(Ordering::Relaxed) as usize).max(1);
                in_runs += pages * PAGE;
                p += pages;
            } else {
                p += 1;
            }
        }
        let counters = lock(&self.page_lock);
        Stats {
            backing: self.backing,
            capacity: self.capacity(),
            max_capacity: self.max_capacity,
            segments: self.segment_count(),
            committed: counters.committed * PAGE,
            peak_committed: counters.peak * PAGE,
            in_use: in_runs + classes.iter().map(|c| c.in_use * c.chunk_size).sum::<usize>(),
            in_runs,
            classes,
        }
    }

    /// Checks every invariant of the arena. Costs time in proportion to the
    /// memory ever used; for tests and fuzzing.
    ///
    /// It verifies that
    /// page states and the free-page bitmap agree, that slabs and runs are
    /// well formed and do not overlap, that class lists hold exactly their
    /// class's slabs, that the page counters add up, that no metadata points
    /// outside its segment, and that every free byte ever handed out is zero.
    ///
    /// # Errors
    ///
    /// The first broken invariant found.
    ///
    /// # Safety
    ///
    /// No other thread may allocate, free or write blocks of this arena
    /// during the call: it reads every free byte, and a concurrent write
    /// would be a data race.
    ///
    /// # Examples
    ///
    /// ```
    /// use allocator_api2::vec::Vec;
    ///
    /// let arena = secret_arena::SecretArena::new(64 * 1024)?;
    /// let mut v = Vec::new_in(&arena);
    /// v.extend_from_slice(&[1u8; 100]);
    /// drop(v);
    /// // SAFETY: no other thread uses the arena.
    /// unsafe { arena.check_invariants() }.expect("arena is consistent");
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub unsafe fn check_invariants(&self) -> Result<(), InvariantError> {
        let mut slabs_per_class = [0usize; CLASS_COUNT];
        let committed = self.check_pages(&mut slabs_per_class)?;
        let counters = lock(&self.page_lock);
        if counters.committed != committed || counters.peak < committed {
            return Err(err("page counters disagree with page states", 0, 0, counters.committed));
        }
        drop(counters);
        for (c, &expected) in slabs_per_class.iter().enumerate() {
            let list = lock(&self.classes[c].list);
            let mut n = 0;
            let mut prev: *mut PageMeta = core::ptr::null_mut();
            let mut p = list.head;
            while !p.is_null() {
                // SAFETY: list members point into this arena's metadata.
                let m = unsafe { &*p };
                let meta0 = self.pages.meta(0) as *const PageMeta as usize;
                let off = (p as usize).wrapping_sub(meta0);
                if off % size_of::<PageMeta>() != 0 || off / size_of::<PageMeta>() >= self.pages.pages() {
                    return Err(err("class list points outside the arena's metadata", 0, 0, p as usize));
                }
                let pg = off / size_of::<PageMeta>();
                let si = self.segment_of(pg);
                if m.state.load(Ordering::Relaxed) != SLAB_HEAD | c as u32 {
                    return Err(err("class list holds a page that is not its class's slab", si, pg, c));
                }
                if m.prev.load(Ordering::Relaxed) != prev {
                    return Err(err("class list back link is wrong", si, pg, c));
                }
                n += 1;
                if n > expected {
                    return Err(err("class list is longer than the class's slabs (cycle?)", si, pg, c));
                }
                prev = p;
                p = m.next.load(Ordering::Relaxed);
            }
            if n != expected || list.count != expected {
                return Err(err("class list does not hold every slab of its class", 0, 0, c));
            }
            if !list.rover.is_null() {
                let mut q = list.head;
                while !q.is_null() && q != list.rover {
                    // SAFETY: as above.
                    q = unsafe { &*q }.next.load(Ordering::Relaxed);
                }
                if q.is_null() {
                    return Err(err("class list rover is not a member", 0, 0, c));
                }
            }
        }
        self.check_heaps()
    }
}

fn err(what: &'static str, segment: usize, page: usize, detail: usize) -> InvariantError {
    InvariantError { what, segment, page, detail }
}

impl SecretArena {
    /// Heap invariants 2 and 3: an armed heap's current slabs are its
    /// thread's, and `slab` says where their chunks start.
    fn check_heaps(&self) -> Result<(), InvariantError> {
        for slot in 0..super::thread::MAX_SLOTS {
            let h = self.pages.heap(slot);
            let token = h.token.load(Ordering::Relaxed);
            for c in 0..CLASS_COUNT {
                let cur = h.cur[c].load(Ordering::Relaxed);
                let start = h.slab[c].load(Ordering::Relaxed);
                // SAFETY: heap invariant 2: a slab head in this arena's metadata.
                let Some(m) = (unsafe { cur.as_ref() }) else {
                    if start != 0 {
                        return Err(err("a heap has a slab address but no current slab", 0, 0, slot));
                    }
                    continue;
                };
                let page = self.pages.index_of(m);
                if start != self.page_addr(page) as usize {
                    return Err(err("a heap's slab address is not its current slab's", 0, page, slot));
                }
                if token != super::heap::DISARMED && m.owner.load(Ordering::Relaxed) != token {
                    return Err(err("an armed heap's current slab belongs to another thread", 0, page, slot));
                }
            }
        }
        Ok(())
    }

    /// Checks every page; returns the committed pages.
    fn check_pages(&self, slabs: &mut [usize; CLASS_COUNT]) -> Result<usize, InvariantError> {
        let pages = &self.pages;
        let n_pages = pages.pages();
        let high_water = pages.high_water();
        let at = |p: usize| (self.segment_of(p), p);
        if high_water > n_pages {
            return Err(err("high-water mark past the mapped pages", 0, high_water, n_pages));
        }
        let mut committed = 0;
        let mut p = 0;
        while p < n_pages {
            let (si, sp) = at(p);
            let m = pages.meta(p);
            let state = m.state.load(Ordering::Acquire);
            if (state == FREE) != pages.page_is_free(p) {
                return Err(err("page state and free-page bitmap disagree", si, sp, state as usize));
            }
            if state == FREE {
                if m.owner.load(Ordering::Relaxed) != UNOWNED
                    || (0..WORDS).any(|w| m.local[w].load(Ordering::Relaxed) | m.freed[w].load(Ordering::Relaxed) != 0)
                {
                    return Err(err("a free page has an owner or owned free chunks", si, sp, 0));
                }
                if p < high_water {
                    check_zero(si, sp, self.page_addr(p), PAGE, 0)?;
                }
                p += 1;
            } else if state & !0xff == SLAB_HEAD {
                let c = (state & 0xff) as usize;
                if c >= CLASS_COUNT {
                    return Err(err("slab head with an unknown class", si, sp, c));
                }
                let info = &CLASSES[c];
                let n = info.pages as usize;
                if p + n > n_pages || p + n > high_water {
                    return Err(err("slab runs past the mapping or the high-water mark", si, sp, n));
                }
                for body in p + 1..p + n {
                    let b = pages.meta(body);
                    if b.state.load(Ordering::Relaxed) != SLAB_BODY || b.aux.load(Ordering::Relaxed) as usize != p {
                        return Err(err("slab body page does not point at its head", si, body, p));
                    }
                }
                self.check_slab(si, p, m, c)?;
                slabs[c] += 1;
                committed += n;
                p += n;
            } else if state == RUN_HEAD {
                let n = m.aux.load(Ordering::Relaxed) as usize;
                if n == 0 || p + n > n_pages || p + n > high_water {
                    return Err(err("run length is zero or past the mapping", si, sp, n));
                }
                for body in p + 1..p + n {
                    let b = pages.meta(body);
                    if b.state.load(Ordering::Relaxed) != RUN_BODY || b.aux.load(Ordering::Relaxed) as usize != p {
                        return Err(err("run body page does not point at its head", si, body, p));
                    }
                }
                committed += n;
                p += n;
            } else {
                return Err(err("page in a state no block can start with", si, sp, state as usize));
            }
        }
        Ok(committed)
    }

    /// Checks one slab's bitmaps, owner and free bytes.
    fn check_slab(&self, si: usize, p: usize, m: &PageMeta, c: usize) -> Result<(), InvariantError> {
        let info = &CLASSES[c];
        let owner = m.owner.load(Ordering::Relaxed);
        for w in 0..WORDS {
            let (l, f, b) = (
                m.local[w].load(Ordering::Relaxed),
                m.freed[w].load(Ordering::Relaxed),
                m.bits[w].load(Ordering::Relaxed),
            );
            if l & f != 0 || l & b != 0 || f & b != 0 {
                return Err(err("a chunk is in two of local, freed and bits", si, p, w));
            }
            if (l | f | b) & !info.all_free[w] != 0 {
                return Err(err("bits of nonexistent chunks are set", si, p, w));
            }
            if owner == UNOWNED && (l | f) != 0 {
                return Err(err("an unowned slab has owner-private free chunks", si, p, w));
            }
            let free = l | f | b;
            for bit in 0..64 {
                let idx = w * 64 + bit;
                if idx < info.chunks as usize && free & (1 << bit) != 0 {
                    let chunk = self.page_addr(p).wrapping_add(idx * info.size as usize);
                    check_zero(si, p, chunk, info.size as usize, idx * info.size as usize)?;
                }
            }
        }
        if owner != UNOWNED {
            let h = self.pages.heap(super::thread::slot_of(owner));
            if !core::ptr::eq(h.cur[c].load(Ordering::Relaxed), m) {
                return Err(err("an owned slab is not its owner's current slab", si, p, owner as usize));
            }
        }
        // The slab's tail beyond its last chunk is never handed out.
        let used = info.chunks as usize * info.size as usize;
        check_zero(si, p, self.page_addr(p).wrapping_add(used), info.pages as usize * PAGE - used, used)
    }
}

fn check_zero(si: usize, page: usize, ptr: *mut u8, len: usize, off: usize) -> Result<(), InvariantError> {
    // SAFETY: the caller passes free memory inside a live segment; reading it
    // races with nothing because `check_invariants`'s caller guarantees the
    // arena is idle.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(err("a free byte is not zero", si, page, off + i)),
    }
}
