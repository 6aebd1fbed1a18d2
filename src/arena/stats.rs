//! Statistics and the invariant checker.

use core::fmt;
use core::sync::atomic::Ordering;

use super::classes::{CLASS_COUNT, CLASS_SIZES, CLASSES, PAGE, WORDS};
use super::segment::{FREE, PageMeta, RUN_BODY, RUN_HEAD, SLAB_BODY, SLAB_HEAD, Segment};
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
        for seg in self.segments() {
            let mut p = 0;
            while p < seg.pages() {
                let m = seg.meta(p);
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
        }
        let counters = lock(&self.pages);
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
        let mut committed = 0;
        let mut slabs_per_class = [0usize; CLASS_COUNT];
        for (si, seg) in self.segments().enumerate() {
            committed += check_segment(si, seg, &mut slabs_per_class)?;
        }
        let counters = lock(&self.pages);
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
                let home = self.segments().enumerate().find_map(|(si, s)| s.index_of(m).map(|pg| (si, pg)));
                let Some((si, pg)) = home else {
                    return Err(err("class list points outside every segment", 0, 0, p as usize));
                };
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
        Ok(())
    }
}

fn err(what: &'static str, segment: usize, page: usize, detail: usize) -> InvariantError {
    InvariantError { what, segment, page, detail }
}

/// Checks one segment; returns its committed pages.
fn check_segment(si: usize, seg: &Segment, slabs: &mut [usize; CLASS_COUNT]) -> Result<usize, InvariantError> {
    let high_water = seg.high_water();
    if high_water > seg.pages() {
        return Err(err("high-water mark past the segment end", si, high_water, seg.pages()));
    }
    let mut committed = 0;
    let mut p = 0;
    while p < seg.pages() {
        let m = seg.meta(p);
        let state = m.state.load(Ordering::Acquire);
        let free_in_map = seg.page_is_free(p);
        if (state == FREE) != free_in_map {
            return Err(err("page state and free-page bitmap disagree", si, p, state as usize));
        }
        if state == FREE {
            if m.bits.iter().any(|w| w.load(Ordering::Relaxed) != 0) {
                return Err(err("a free page has a usable bitmap", si, p, 0));
            }
            if p < high_water {
                check_zero(si, p, seg.page_addr(p), PAGE, 0)?;
            }
            p += 1;
        } else if state & !0xff == SLAB_HEAD {
            let c = (state & 0xff) as usize;
            if c >= CLASS_COUNT {
                return Err(err("slab head with an unknown class", si, p, c));
            }
            let info = &CLASSES[c];
            let n = info.pages as usize;
            if p + n > seg.pages() || p + n > high_water {
                return Err(err("slab runs past the segment or the high-water mark", si, p, n));
            }
            if m.base.load(Ordering::Relaxed) != seg.page_addr(p) as usize {
                return Err(err("slab base is not its own page", si, p, m.base.load(Ordering::Relaxed)));
            }
            for body in p + 1..p + n {
                let b = seg.meta(body);
                if b.state.load(Ordering::Relaxed) != SLAB_BODY || b.aux.load(Ordering::Relaxed) as usize != p {
                    return Err(err("slab body page does not point at its head", si, body, p));
                }
                if b.bits.iter().any(|w| w.load(Ordering::Relaxed) != 0) {
                    return Err(err("a slab body page has a usable bitmap", si, body, 0));
                }
            }
            for w in 0..WORDS {
                let bits = m.bits[w].load(Ordering::Relaxed);
                if bits & !info.all_free[w] != 0 {
                    return Err(err("bits of nonexistent chunks are set", si, p, w));
                }
                for bit in 0..64 {
                    let idx = w * 64 + bit;
                    if idx < info.chunks as usize && bits & (1 << bit) != 0 {
                        let chunk = seg.page_addr(p).wrapping_add(idx * info.size as usize);
                        check_zero(si, p, chunk, info.size as usize, idx * info.size as usize)?;
                    }
                }
            }
            // The slab's tail beyond its last chunk is never handed out.
            let used = info.chunks as usize * info.size as usize;
            check_zero(si, p, seg.page_addr(p).wrapping_add(used), n * PAGE - used, used)?;
            slabs[c] += 1;
            committed += n;
            p += n;
        } else if state == RUN_HEAD {
            let n = m.aux.load(Ordering::Relaxed) as usize;
            if n == 0 || p + n > seg.pages() || p + n > high_water {
                return Err(err("run length is zero or past the segment", si, p, n));
            }
            for body in p + 1..p + n {
                let b = seg.meta(body);
                if b.state.load(Ordering::Relaxed) != RUN_BODY || b.aux.load(Ordering::Relaxed) as usize != p {
                    return Err(err("run body page does not point at its head", si, body, p));
                }
            }
            committed += n;
            p += n;
        } else {
            return Err(err("page in a state no block can start with", si, p, state as usize));
        }
    }
    Ok(committed)
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
