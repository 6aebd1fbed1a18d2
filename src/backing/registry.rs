//! The process-wide registry of backing mappings, for [`purge`](crate::purge).
//!
//! A fixed static table of [`SLOTS`] slots, one per live [`Mapping`](super::Mapping):
//! no allocation and no lock, so it can be read from a signal handler.
//!
//! # The slot protocol
//!
//! Each slot has a `state` and a `readers` count:
//!
//! - **register**: `FREE → CLAIMED` (compare-and-swap), write the fields,
//!   then `CLAIMED → LIVE` (release). A full table is
//!   [`Error::MappingRegistryFull`], at arena creation or growth: never an
//!   arena purge cannot see.
//! - **read** (purge, [`for_each`]): `readers += 1`, then check `state ==
//!   LIVE`; only then touch the range; finally `readers -= 1`.
//! - **deregister**, in `Mapping::drop` *before* `munmap`: `state = DYING`,
//!   then wait until `readers == 0`, then `state = FREE`.
//!
//! All four steps are `SeqCst`, so either the reader sees `DYING` (and skips
//! the range) or the dropping thread sees the reader's increment (and waits
//! for it): no reader ever touches an unmapped range.
//!
//! A signal handler that interrupts the *same* thread in the middle of
//! `Mapping::drop` sees `DYING` (or, before that, a still-mapped range), and
//! never waits on anything, so it cannot deadlock against the code it
//! interrupted. The dropping thread only waits for readers on *other*
//! threads, which never block.
//!
//! # Fork
//!
//! The table is in the process image, so a `fork(2)` child inherits it,
//! while the ranges themselves are `MADV_DONTFORK` and absent in the child
//! (all but the global allocator's heap, which the child inherits read-only).
//! Every slot records the pid that registered it, whether its mapping is
//! inherited on fork, and the backing file's descriptor (which every child
//! inherits). Readers ([`for_each`], so `purge()`) skip every slot another
//! process registered: in a child those ranges are either holes or the
//! parent's live memory. The fork child handler walks the parent's slots
//! with [`for_each_of_parent`], to re-reserve the holes and close the
//! descriptors.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering::SeqCst};

use crate::error::Error;

/// Slots in the registry: the backing mappings the process can have at once.
/// Each arena has one (its reservation, into which it grows), so this is the
/// number of arenas that can be alive at once; one more is
/// [`Error::MappingRegistryFull`](crate::Error::MappingRegistryFull).
///
/// # Examples
///
/// ```
/// // Each arena takes one slot, however far it grows.
/// let arena = secret_arena::SecretArena::builder().capacity(4096).max_capacity(64 << 10).build()?;
/// assert!(secret_arena::MAX_MAPPINGS >= 1);
/// # drop(arena);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const SLOTS: usize = 1024;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const LIVE: u32 = 2;
const DYING: u32 = 3;
/// In a fork child: a slot of the parent, handled by the child handler.
/// Never read (its range is a hole or the parent's read-only heap here),
/// never reused (a later process could get the parent's pid), never freed.
const INHERITED: u32 = 4;

/// One mapping's entry. Fields other than `state` and `readers` are written
/// only while the slot is `CLAIMED` (except `high_water` and `inherited`,
/// which are atomics updated while `LIVE`).
#[repr(align(64))]
struct Slot {
    state: AtomicU32,
    readers: AtomicU32,
    pid: AtomicU32,
    inherited: AtomicBool,
    base: AtomicUsize,
    len: AtomicUsize,
    reservation: AtomicUsize,
    reservation_len: AtomicUsize,
    /// The backing file's descriptor, held for the mapping's life.
    fd: AtomicI32,
    /// Bytes from `base` ever handed out: the end of what a purge wipes.
    high_water: AtomicUsize,
}

impl Slot {
    #[allow(clippy::declare_interior_mutable_const, reason = "only to initialise the static table")]
    const EMPTY: Slot = Slot {
        state: AtomicU32::new(FREE),
        readers: AtomicU32::new(0),
        pid: AtomicU32::new(0),
        inherited: AtomicBool::new(false),
        base: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        reservation: AtomicUsize::new(0),
        reservation_len: AtomicUsize::new(0),
        fd: AtomicI32::new(-1),
        high_water: AtomicUsize::new(0),
    };
}

static TABLE: [Slot; SLOTS] = [Slot::EMPTY; SLOTS];
/// One past the highest slot ever claimed: readers scan `..TOP` only.
static TOP: AtomicUsize = AtomicUsize::new(0);

/// A registered mapping, as [`for_each`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingInfo {
    /// First usable byte.
    pub base: usize,
    /// Usable bytes.
    pub len: usize,
    /// The whole reservation, guard pages included (what `MADV_DONTFORK`
    /// covers).
    pub reservation: usize,
    /// Length of the reservation.
    pub reservation_len: usize,
    /// Bytes from `base` ever handed out.
    pub high_water: usize,
    /// Whether the mapping is inherited by a `fork(2)` child.
    pub inherited: bool,
    /// The process that registered it.
    pub pid: u32,
    /// The backing file's descriptor.
    pub fd: i32,
}

/// The addresses of a mapping being registered.
pub(crate) struct Ranges {
    pub base: usize,
    pub len: usize,
    pub reservation: usize,
    pub reservation_len: usize,
    /// The backing file's descriptor, held by the mapping.
    pub fd: i32,
    /// Whether a `fork(2)` child inherits the mapping (no `MADV_DONTFORK`).
    pub inherited: bool,
}

/// A registered slot, owned by one `Mapping`.
#[derive(Debug)]
pub(crate) struct SlotId(usize);

fn this_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Records a new mapping; its high-water mark starts at zero.
pub(crate) fn register(r: Ranges) -> Result<SlotId, Error> {
    for (i, slot) in TABLE.iter().enumerate() {
        if slot.state.compare_exchange(FREE, CLAIMED, SeqCst, SeqCst).is_err() {
            continue;
        }
        slot.pid.store(this_pid(), SeqCst);
        slot.inherited.store(r.inherited, SeqCst);
        slot.fd.store(r.fd, SeqCst);
        slot.base.store(r.base, SeqCst);
        slot.len.store(r.len, SeqCst);
        slot.reservation.store(r.reservation, SeqCst);
        slot.reservation_len.store(r.reservation_len, SeqCst);
        slot.high_water.store(0, SeqCst);
        TOP.fetch_max(i + 1, SeqCst);
        slot.state.store(LIVE, SeqCst);
        return Ok(SlotId(i));
    }
    Err(Error::MappingRegistryFull { slots: SLOTS })
}

/// Raises the slot's high-water mark to `bytes` (never lowers it).
#[inline]
pub(crate) fn raise_high_water(id: &SlotId, bytes: usize) {
    TABLE[id.0].high_water.fetch_max(bytes, SeqCst);
}

/// Changes whether the slot's mapping counts as inherited (tests only: a
/// mapping's fork behaviour is fixed when it is registered).
#[cfg(test)]
fn set_inherited(id: &SlotId, inherited: bool) {
    TABLE[id.0].inherited.store(inherited, SeqCst);
}

/// Removes the slot; returns once no reader can be touching its range, so
/// the caller may unmap it.
pub(crate) fn deregister(id: SlotId) {
    let slot = &TABLE[id.0];
    slot.state.store(DYING, SeqCst);
    // Readers on other threads finish in bounded time (a wipe of at most the
    // mapping); a reader on this thread cannot be waited for here, since a
    // signal handler runs to completion before the code it interrupted.
    while slot.readers.load(SeqCst) != 0 {
        core::hint::spin_loop();
        rustix::thread::sched_yield();
    }
    slot.state.store(FREE, SeqCst);
}

/// Calls `f` with every live mapping this process registered itself.
/// Mappings a `fork(2)` child inherited (the global allocator's heap) are
/// the parent's live memory, read-only in the child: they are never given
/// to `f`. Async-signal-safe (no allocation, no lock): usable in a signal
/// handler. A mapping `f` is given stays mapped until `f` returns.
pub(crate) fn for_each(mut f: impl FnMut(&MappingInfo)) {
    let pid = this_pid();
    let top = TOP.load(SeqCst).min(SLOTS);
    for slot in &TABLE[..top] {
        slot.readers.fetch_add(1, SeqCst);
        if slot.state.load(SeqCst) == LIVE {
            let info = info_of(slot);
            if info.pid == pid {
                f(&info);
            }
        }
        slot.readers.fetch_sub(1, SeqCst);
    }
}

/// For a `pthread_atfork` child handler: calls `f` with every live mapping
/// registered by the *parent* (`parent_pid`), inherited or not, so the
/// handler can re-reserve the holes `PROT_NONE` and close the inherited
/// descriptors; then marks each such slot `INHERITED`, which nothing reads
/// or reuses again. Runs in the child, where only the forking thread exists
/// (the prepare handler held the gate, so no slot was half registered or
/// half dropped at the fork).
pub(crate) fn for_each_of_parent(parent_pid: u32, mut f: impl FnMut(&MappingInfo)) {
    let top = TOP.load(SeqCst).min(SLOTS);
    for slot in &TABLE[..top] {
        if slot.state.load(SeqCst) == LIVE && slot.pid.load(SeqCst) == parent_pid {
            f(&info_of(slot));
            slot.state.store(INHERITED, SeqCst);
        }
    }
}

fn info_of(slot: &Slot) -> MappingInfo {
    MappingInfo {
        base: slot.base.load(SeqCst),
        len: slot.len.load(SeqCst),
        reservation: slot.reservation.load(SeqCst),
        reservation_len: slot.reservation_len.load(SeqCst),
        high_water: slot.high_water.load(SeqCst),
        inherited: slot.inherited.load(SeqCst),
        pid: slot.pid.load(SeqCst),
        fd: slot.fd.load(SeqCst),
    }
}

/// For a `pthread_atfork` child handler, before anything else touches the
/// table: clears every slot's reader count. A `purge()` on another thread of
/// the parent may have been counted in on some slot when the process forked;
/// that thread does not exist in the child, and a count it left would make
/// the child's own drop of that slot wait forever.
pub(crate) fn reset_readers_in_child() {
    let top = TOP.load(SeqCst).min(SLOTS);
    for slot in &TABLE[..top] {
        slot.readers.store(0, SeqCst);
    }
}

/// Wipes every live block of every arena in the process, without freeing
/// anything: an emergency wipe for signal handlers, panic hooks and
/// watchdogs, when the process is about to die.
///
/// It covers explicit [`SecretArena`](crate::SecretArena)s, the default
/// arena ([`global()`](crate::global()), [`DefaultArena`](crate::DefaultArena),
/// `SecretBox`, `SecretVec`, `SecretString`) and the heap of a program that
/// installs [`SecretGlobalAlloc`](crate::SecretGlobalAlloc): every byte of
/// every arena segment below the segment's high-water mark (the highest
/// page it ever handed out) is overwritten with zeros. Pages never handed
/// out are already zero and are not touched, so a purge faults in no new
/// secret memory.
///
/// It is async-signal-safe: it allocates nothing, takes no lock, and makes
/// one system call (`getpid`). It can run while other threads allocate,
/// free, or create and drop arenas; a segment being dropped is either wiped
/// whole before it is unmapped or skipped.
///
/// # The state afterwards
///
/// - Every live secret reads as zero: `SecretBox`es, `SecretVec`s and
///   `SecretString`s keep their lengths but their bytes are `0`, and a
///   `SecretString` of zeros is still valid UTF-8 (NUL characters).
/// - The arenas' bookkeeping lives outside secret memory and is untouched:
///   allocation, freeing and dropping keep working, and every free byte is
///   still zero.
/// - With `SecretGlobalAlloc`, *all* of the program's heap is zeroed:
///   pointers stored in heap objects become null, so the program must not
///   go on using what it had built (a `Box<Vec<_>>` now holds a null
///   pointer). Write what is needed with stack buffers and leave with
///   `_exit(2)`, or re-raise the fatal signal; fresh allocations work.
/// - Threads using a secret while it is purged may see it change under
///   them; a purge is for a process about to stop using its secrets.
///
/// Ranges of a fork parent's arenas, which the child does not inherit, are
/// skipped in the child.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretBox};
///
/// let key = SecretBox::new([0x42u8; 32]);
/// secret_arena::purge();
/// assert_eq!(key.expose_secret(), &[0u8; 32]);
/// ```
pub fn purge() {
    for_each(|m| {
        let end = m.high_water.min(m.len) / 16 * 16;
        if end > 0 {
            // SAFETY: the range is inside a mapping that `for_each` keeps
            // mapped until we return; it is readable and writable (the
            // usable part, not the guards); `base` is page-aligned and `end`
            // a multiple of 16. Live blocks in it are overwritten while their
            // owners may hold references: that is `purge`'s documented
            // contract, for a process about to stop using its secrets.
            unsafe { crate::wipe::wipe_chunk(m.base as *mut u8, end) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real anonymous mapping of `pages` pages, so that a purge running
    /// meanwhile (none does in the unit tests, but it must stay harmless)
    /// wipes memory that exists.
    fn scratch(pages: usize) -> Ranges {
        let len = pages * crate::backing::os_page_size();
        // SAFETY: a fresh private anonymous mapping; leaked on purpose.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .unwrap() as usize;
        Ranges { base: p, len, reservation: p, reservation_len: len, fd: -1, inherited: false }
    }

    #[test]
    fn register_read_deregister() {
        let r = scratch(4);
        let (base, len) = (r.base, r.len);
        let id = register(r).unwrap();
        raise_high_water(&id, 0x2000);
        raise_high_water(&id, 0x1000);
        let mut seen = None;
        for_each(|m| {
            if m.base == base {
                seen = Some(*m);
            }
        });
        let m = seen.expect("registered mapping is listed");
        assert_eq!((m.len, m.high_water, m.inherited, m.pid), (len, 0x2000, false, this_pid()));
        deregister(id);
        let mut again = false;
        for_each(|m| again |= m.base == base);
        assert!(!again, "a deregistered mapping is still listed");
    }

    /// A fork while an arena is being dropped (here: its slot dying, held
    /// open by a purge that is still reading it) must not give the child the
    /// arena's backing file descriptor, through which it could map the
    /// parent's secrets: the prepare handler waits for the drop to finish
    /// (found in review).
    #[test]
    fn fork_during_an_arena_drop_leaves_no_descriptor_in_the_child() {
        use allocator_api2::alloc::Allocator;
        use core::alloc::Layout;
        use std::sync::mpsc;
        use std::time::Duration;

        let arena = crate::SecretArena::builder().capacity(16 << 10).build().unwrap();
        let p = arena.allocate(Layout::from_size_align(32, 16).unwrap()).unwrap().cast::<u8>().as_ptr();
        // SAFETY: a live block of 32 bytes.
        unsafe { p.write_bytes(0x5a, 32) };
        let mut found = None;
        for_each(|m| {
            if (m.base..m.base + m.len).contains(&(p as usize)) {
                found = Some(*m)
            }
        });
        let m = found.unwrap();
        let off = p as usize - m.base;
        let (started_tx, started_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            // A purge-like reader that stays on the slot for 300 ms.
            for_each(|x| {
                if x.fd == m.fd && x.base == m.base {
                    started_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        });
        started_rx.recv().unwrap();
        let dropper = std::thread::spawn(move || drop(arena)); // waits for the reader
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: the child makes only raw calls, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let open = unsafe { libc::fcntl(m.fd, libc::F_GETFD) } != -1;
            let mut code = i32::from(open);
            if open {
                // SAFETY: a fresh shared read-only mapping of that file.
                let q =
                    unsafe { libc::mmap(core::ptr::null_mut(), 16 << 10, libc::PROT_READ, libc::MAP_SHARED, m.fd, 0) };
                // SAFETY: `off` is inside the 16 KiB just mapped.
                if q != libc::MAP_FAILED && unsafe { *(q as *const u8).add(off) } == 0x5a {
                    code = 2;
                }
            }
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) };
        }
        reader.join().unwrap();
        dropper.join().unwrap();
        let mut status = 0;
        // SAFETY: a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child got the dropped arena's descriptor (1), and read the parent's secret through it (2)"
        );
    }

    #[test]
    fn another_process_slots_are_always_skipped() {
        let r = scratch(1);
        let base = r.base;
        let id = register(r).unwrap();
        TABLE[id.0].pid.store(this_pid().wrapping_add(1), SeqCst);
        let count = || {
            let mut n = 0;
            for_each(|m| n += usize::from(m.base == base));
            n
        };
        assert_eq!(count(), 0, "a parent's non-inherited mapping must be skipped");
        set_inherited(&id, true);
        assert_eq!(count(), 0, "an inherited mapping is the parent's live memory: never purged by a child");
        let r2 = scratch(1);
        let base2 = r2.base;
        let id2 = register(r2).unwrap();
        TABLE[id2.0].pid.store(this_pid().wrapping_add(1), SeqCst);
        let (mut inherited, mut hidden) = (0, 0);
        for_each_of_parent(this_pid(), |m| inherited += usize::from(m.base == base || m.base == base2));
        assert_eq!(inherited, 0, "not this process's own");
        for_each_of_parent(this_pid().wrapping_add(1), |m| {
            inherited += usize::from(m.base == base && m.inherited);
            hidden += usize::from(m.base == base2 && !m.inherited);
        });
        assert_eq!((inherited, hidden), (1, 1), "the child handler sees every mapping of the parent");
        for_each_of_parent(this_pid().wrapping_add(1), |m| inherited += usize::from(m.base == base || m.base == base2));
        assert_eq!(inherited, 1, "once: handled slots are INHERITED and skipped from then on");
        deregister(id);
        deregister(id2);
    }
}
