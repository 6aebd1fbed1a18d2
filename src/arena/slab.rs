//! A page's out-of-band metadata, and the slab protocol on it.
//!
//! A slab's chunks are tracked by three bitmaps in its head [`PageMeta`],
//! never by links inside secret memory, so free chunks stay all-zero:
//!
//! | bitmap  | who writes it | how |
//! |---------|---------------|-----|
//! | `local` | the owner     | plain loads and stores: chunks it allocates from |
//! | `freed` | the owner     | plain loads and stores: chunks it freed since its last refill |
//! | `bits`  | any thread    | atomic RMW: chunks other threads freed; all free chunks of an unowned slab |
//!
//! The owner is a thread (its token in `owner`); ownership is given and
//! taken under the class lock only, or by the reclaim protocol (`reclaim`).
//! When `local` runs dry the owner *refills*: `local = freed | bits.swap(0)`.
//! A chunk found in both `bits` and `local | freed` then is a cross-thread
//! double free.
//!
//! An unowned slab is released (its pages go back to the pool) by the free
//! that makes `bits` full, under the class lock. A release leaves `bits`
//! full: a racing double free of a chunk of that slab then still finds its
//! bit set and is reported, by construction (the loom model
//! `loom_a_double_free_racing_the_release_is_caught`).

use super::classes::{ClassInfo, WORDS};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

/// `PageMeta::state` of a page that belongs to nobody.
pub(crate) const FREE: u32 = 0;
/// First page of a slab; the low 8 bits are the class.
pub(crate) const SLAB_HEAD: u32 = 1 << 8;
/// Later page of a slab; `aux` is the head's page index.
pub(crate) const SLAB_BODY: u32 = 2 << 8;
/// First page of a run; `aux` is the run's length in pages.
pub(crate) const RUN_HEAD: u32 = 3 << 8;
/// Later page of a run; `aux` is the head's page index.
pub(crate) const RUN_BODY: u32 = 4 << 8;
/// A run head whose free is in progress.
pub(crate) const RUN_FREEING: u32 = 5 << 8;
/// `owner` of a slab that no thread owns.
pub(crate) const UNOWNED: u64 = 0;

/// What one arena page is; for a slab head, also the slab's bitmaps.
///
/// All-zero bytes (a fresh anonymous mapping) are a valid value: a free page.
///
/// # Invariants (slab heads)
///
/// 1. `local`, `freed` and `bits` are pairwise disjoint, and their union
///    has bits only for chunks that exist (`ClassInfo::all_free`); a bit in
///    one of them is a free, all-zero chunk.
/// 2. `owner == UNOWNED` ⇒ `local == freed == 0`.
/// 3. `owner == t != UNOWNED` ⇒ the slab is `cur[class]` of the heap of the
///    slot of `t` in this arena, or is being taken from it under the class
///    lock.
/// 4. Only the owner reads or writes `local` and `freed`, except under the
///    class lock while the owner provably is not in its fast path (see
///    `reclaim`).
#[repr(C, align(64))]
pub(crate) struct PageMeta {
    // --- cache line 0: what the owner's allocation and free read ---
    /// One of the state constants above.
    pub state: AtomicU32,
    /// Depends on `state`; see the constants.
    pub aux: AtomicU32,
    /// Slab heads: the owning thread's token, or [`UNOWNED`].
    pub owner: AtomicU64,
    /// Slab heads: free chunks the owner allocates from (1 = free).
    pub local: [AtomicU64; WORDS],
    /// Slab heads: neighbours in the class's slab list (class lock).
    pub prev: AtomicPtr<PageMeta>,
    /// See `prev`.
    pub next: AtomicPtr<PageMeta>,
    // --- cache line 1 ---
    /// Slab heads: chunks the owner freed since its last refill.
    pub freed: [AtomicU64; WORDS],
    /// Slab heads: chunks other threads freed, or every free chunk of an
    /// unowned slab.
    pub bits: [AtomicU64; WORDS],
}

#[cfg(not(all(loom, test)))]
const _: () = assert!(size_of::<PageMeta>() == 128);

/// Bit index `idx` as a word and a mask.
#[inline(always)]
pub(crate) fn bit(idx: usize) -> (usize, u64) {
    // `% WORDS` changes nothing for a chunk index (< 256) and lets the
    // compiler drop the bounds checks on the bitmap words.
    ((idx / 64) % WORDS, 1u64 << (idx % 64))
}

impl PageMeta {
    /// Owner only: takes the lowest free chunk of `local`; its index.
    #[inline(always)]
    pub(crate) fn take_local(&self) -> Option<usize> {
        for (w, word) in self.local.iter().enumerate() {
            let v = word.load(Ordering::Relaxed);
            if v != 0 {
                word.store(v & (v - 1), Ordering::Relaxed);
                return Some(w * 64 + v.trailing_zeros() as usize);
            }
        }
        None
    }

    /// Owner only: frees chunk `(w, mask)`: runs `wipe`, then puts it in
    /// `freed`. `false`, doing neither, if it is free already (a double
    /// free).
    #[inline(always)]
    pub(crate) fn owner_free(&self, w: usize, mask: u64, wipe: impl FnOnce()) -> bool {
        let f = self.freed[w].load(Ordering::Relaxed);
        if (self.local[w].load(Ordering::Relaxed) | f) & mask != 0 {
            return false;
        }
        wipe();
        self.freed[w].store(f | mask, Ordering::Relaxed);
        true
    }

    /// Owner only, `local` empty: the refill when no other thread freed
    /// into the slab (`bits` empty, so there is no overlap to report), made
    /// without atomics; then takes a chunk as [`take_local`](Self::take_local).
    /// `None` if `bits` has chunks or `freed` has none: the full
    /// [`refill`](Self::refill) decides.
    #[inline(never)]
    pub(crate) fn refill_own(&self) -> Option<usize> {
        if self.bits.iter().any(|b| b.load(Ordering::Relaxed) != 0) {
            return None;
        }
        let mut any = 0;
        for w in 0..WORDS {
            let f = self.freed[w].load(Ordering::Relaxed);
            self.local[w].store(f, Ordering::Relaxed);
            self.freed[w].store(0, Ordering::Relaxed);
            any |= f;
        }
        if any == 0 {
            return None;
        }
        self.take_local()
    }

    /// Owner only: `local |= freed | bits`, emptying `freed` and `bits`.
    /// `Ok(true)` if `local` has a chunk now. `Err(idx)`: chunk `idx` was in
    /// `bits` and in `local | freed`, a cross-thread double free (the
    /// bitmaps are merged anyway, so they stay consistent).
    pub(crate) fn refill(&self) -> Result<bool, usize> {
        let mut any = false;
        let mut overlap = None;
        for w in 0..WORDS {
            let mine = self.local[w].load(Ordering::Relaxed) | self.freed[w].load(Ordering::Relaxed);
            // Acquire: the wipes of the chunks other threads freed.
            let theirs =
                if self.bits[w].load(Ordering::Relaxed) != 0 { self.bits[w].swap(0, Ordering::Acquire) } else { 0 };
            if mine & theirs != 0 && overlap.is_none() {
                overlap = Some(w * 64 + (mine & theirs).trailing_zeros() as usize);
            }
            self.freed[w].store(0, Ordering::Relaxed);
            self.local[w].store(mine | theirs, Ordering::Relaxed);
            any |= (mine | theirs) != 0;
        }
        overlap.map_or(Ok(any), Err)
    }

    /// A thread that does not own the slab frees chunk `(w, mask)` (wiped
    /// already) into `bits`. `Err(())`: it was free already. `Ok(true)`:
    /// the slab is unowned and now entirely free, so the caller should
    /// release it (under the class lock, re-checking).
    ///
    /// A `SeqCst` fence between the RMW and the loads, as between the store
    /// of `owner` and the loads in [`disown`](Self::disown): of a free and a
    /// disown racing on a slab's last chunk, at least one sees the other's
    /// write, so at least one sees the slab unowned and full. (SeqCst
    /// accesses alone are not enough in loom's model, which treats them as
    /// AcqRel; the fences are what the C++ model guarantees this with.)
    pub(crate) fn remote_free(&self, w: usize, mask: u64, info: &ClassInfo) -> Result<bool, ()> {
        // Release: the caller's wipe, for whoever takes the chunk next.
        if self.bits[w].fetch_or(mask, Ordering::Release) & mask != 0 {
            return Err(());
        }
        fence(Ordering::SeqCst);
        Ok(self.owner.load(Ordering::Relaxed) == UNOWNED && self.bits_full(info))
    }

    /// Whether `bits` holds every chunk.
    pub(crate) fn bits_full(&self, info: &ClassInfo) -> bool {
        self.bits.iter().zip(&info.all_free).all(|(b, &f)| b.load(Ordering::Relaxed) == f)
    }

    /// Class lock held, slab unowned: `token` becomes its owner and takes
    /// every free chunk into `local`.
    pub(crate) fn take_ownership(&self, token: u64) {
        debug_assert_eq!(self.owner.load(Ordering::Relaxed), UNOWNED);
        self.owner.store(token, Ordering::SeqCst);
        for w in 0..WORDS {
            // Acquire: the wipes of the chunks freed into `bits`.
            let v = self.bits[w].swap(0, Ordering::Acquire);
            self.local[w].store(v, Ordering::Relaxed);
        }
    }

    /// Class lock held, and the owner is not in its fast path (it is the
    /// caller, or it is revoked, or dead): gives `local | freed` back to
    /// `bits` and makes the slab unowned. `Ok(true)` if it is then entirely
    /// free. `Err(idx)`: chunk `idx` was also in `bits` (a cross-thread double
    /// free); the slab is unowned and consistent anyway.
    pub(crate) fn disown(&self, info: &ClassInfo) -> Result<bool, usize> {
        let mut overlap = None;
        for w in 0..WORDS {
            let mine = self.local[w].load(Ordering::Relaxed) | self.freed[w].load(Ordering::Relaxed);
            self.local[w].store(0, Ordering::Relaxed);
            self.freed[w].store(0, Ordering::Relaxed);
            if mine != 0 {
                let old = self.bits[w].fetch_or(mine, Ordering::Release);
                if old & mine != 0 && overlap.is_none() {
                    overlap = Some(w * 64 + (old & mine).trailing_zeros() as usize);
                }
            }
        }
        self.owner.store(UNOWNED, Ordering::Relaxed);
        // See `remote_free`.
        fence(Ordering::SeqCst);
        let full = self.bits_full(info);
        overlap.map_or(Ok(full), Err)
    }

    /// Class lock held: takes one chunk out of `bits` for a thread without a
    /// heap (the shared path); its index.
    pub(crate) fn take_shared(&self) -> Option<usize> {
        for (w, word) in self.bits.iter().enumerate() {
            let mut v = word.load(Ordering::Relaxed);
            while v != 0 {
                let low = v & v.wrapping_neg();
                match word.compare_exchange_weak(v, v & !low, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Some(w * 64 + low.trailing_zeros() as usize),
                    Err(now) => v = now,
                }
            }
        }
        None
    }

    /// Whether `bits` has a chunk (for unowned slabs: whether any is free).
    pub(crate) fn bits_nonempty(&self) -> bool {
        self.bits.iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// Free chunks in all three bitmaps. Exact only while the owner is
    /// still; a racy count otherwise (for statistics).
    pub(crate) fn free_mask(&self, w: usize) -> u64 {
        self.local[w].load(Ordering::Relaxed)
            | self.freed[w].load(Ordering::Relaxed)
            | self.bits[w].load(Ordering::Relaxed)
    }

    /// Whether every chunk is free, in any of the bitmaps.
    pub(crate) fn all_free(&self, info: &ClassInfo) -> bool {
        (0..WORDS).all(|w| self.free_mask(w) == info.all_free[w])
    }

    /// Chunks handed out.
    pub(crate) fn used_chunks(&self, info: &ClassInfo) -> usize {
        (0..WORDS).map(|w| (info.all_free[w] & !self.free_mask(w)).count_ones() as usize).sum()
    }

    /// Class lock held, page taken from the pool: makes this page the head
    /// of a new, unowned slab of `class` with every chunk free.
    pub(crate) fn init_slab(&self, class: usize, info: &ClassInfo) {
        self.owner.store(UNOWNED, Ordering::Relaxed);
        for w in 0..WORDS {
            self.local[w].store(0, Ordering::Relaxed);
            self.freed[w].store(0, Ordering::Relaxed);
            self.bits[w].store(info.all_free[w], Ordering::Relaxed);
        }
        // Release: a free that reads this state sees the bitmaps above.
        self.state.store(SLAB_HEAD | class as u32, Ordering::Release);
    }
}

#[cfg(all(test, loom))]
#[path = "loom_tests.rs"]
mod loom_tests;
