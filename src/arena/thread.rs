//! Who is allocating: a process-wide slot and token per thread.
//!
//! A thread that allocates gets a *slot* (an index below [`MAX_SLOTS`]) and a
//! *token*, a number no other thread of the process ever gets (a counter in
//! the high bits, the slot in the low bits). Each arena keeps one heap per
//! slot (`heap::Heap`), and a slab's `owner` field holds the token of the
//! thread that owns it.
//!
//! - The token lives in a `thread_local!` with a `const` initialiser and no
//!   drop glue: reading it is one `%fs`-relative load, it never allocates,
//!   and it works before `main` and during thread exit.
//! - Thread exit is seen by a `pthread_key_create(3)` destructor, which does
//!   not allocate: it clears the slot's token (so every arena can tell that
//!   heap is dead) and frees the slot. After that, and for a thread that
//!   found no free slot, the token is a `NO_SLOT` value that matches no heap,
//!   and the thread uses the arena's shared path, which is correct at any
//!   time.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Size of a heap table: 511 thread slots and the spare heap at index
/// [`SPARE`]. More threads than that at one time use the shared path.
pub(crate) const MAX_SLOTS: usize = 512;
/// The heap no thread owns (never armed), named by the marker tokens.
pub(crate) const SPARE: usize = MAX_SLOTS - 1;
/// Low bits of a token: the slot. Every value they can take is a valid
/// index into a heap table, so the fast paths need no bounds check.
const SLOT_BITS: u32 = 9;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// A thread that has not asked for a slot yet. Its slot bits name the spare
/// heap at index [`SPARE`], which no thread owns, so the fast paths need no
/// extra test; bit 63 is never set in a real token.
pub(crate) const UNASSIGNED: u64 = 1 << 63 | SPARE as u64;
/// A thread past its exit destructor, or one that found every slot taken.
pub(crate) const NO_SLOT: u64 = 3 << 62 | SPARE as u64;

static NEXT: AtomicU64 = AtomicU64::new(1);
/// Bit `s` set: slot `s` is taken by a live thread. The spare's bit is
/// always set, so it is never given out.
static SLOT_USED: [AtomicU64; MAX_SLOTS / 64] = {
    let mut used = [const { AtomicU64::new(0) }; MAX_SLOTS / 64];
    used[SPARE / 64] = AtomicU64::new(1 << (SPARE % 64));
    used
};
/// The token of the live thread in each slot; 0 when free. Written with
/// `Release` after the thread's last heap access, so a reader that sees a
/// heap's token gone sees all that thread did to its slabs.
static SLOT_TOKEN: [AtomicU64; MAX_SLOTS] = [const { AtomicU64::new(0) }; MAX_SLOTS];
/// `pthread_key_t + 1`; 0 before the key exists.
static KEY: AtomicU32 = AtomicU32::new(0);
static KEY_INIT: Mutex<()> = Mutex::new(());

thread_local! {
    static TOKEN: Cell<u64> = const { Cell::new(UNASSIGNED) };
}

/// This thread's token (or [`UNASSIGNED`] / [`NO_SLOT`]).
#[inline(always)]
pub(crate) fn token() -> u64 {
    TOKEN.with(Cell::get)
}

/// The heap index a token names: its slot, or [`SPARE`]. Always below
/// [`MAX_SLOTS`].
#[inline(always)]
pub(crate) fn slot_of(token: u64) -> usize {
    (token & SLOT_MASK) as usize
}

/// Whether `token` is a real thread's token (not one of the markers).
#[inline]
pub(crate) fn is_real(token: u64) -> bool {
    token >> 62 == 0 && token != 0
}

/// Whether the thread that got `token` is still alive.
pub(crate) fn is_alive(token: u64) -> bool {
    is_real(token) && SLOT_TOKEN[slot_of(token)].load(Ordering::Acquire) == token
}

/// Gives this thread a slot and token if it has none and one is free;
/// returns its token (possibly still not real).
#[cold]
pub(crate) fn assign() -> u64 {
    let t = token();
    if t != UNASSIGNED {
        return t;
    }
    let Some(key) = key() else {
        TOKEN.set(NO_SLOT);
        return NO_SLOT;
    };
    for (w, word) in SLOT_USED.iter().enumerate() {
        let mut v = word.load(Ordering::Relaxed);
        while v != u64::MAX {
            let bit = (!v).trailing_zeros();
            match word.compare_exchange_weak(v, v | 1 << bit, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    let slot = w * 64 + bit as usize;
                    let t = NEXT.fetch_add(1, Ordering::Relaxed) << SLOT_BITS | slot as u64;
                    SLOT_TOKEN[slot].store(t, Ordering::Release);
                    // SAFETY: `key` came from pthread_key_create; the value is
                    // a non-null integer cast, never dereferenced. glibc keeps
                    // the first 32 keys inside the thread descriptor; beyond
                    // them it uses libc's calloc, never the Rust allocator.
                    if unsafe {
                        libc::pthread_setspecific(key, core::ptr::without_provenance::<libc::c_void>(slot + 1))
                    } != 0
                    {
                        SLOT_TOKEN[slot].store(0, Ordering::Release);
                        word.fetch_and(!(1 << bit), Ordering::Release);
                        TOKEN.set(NO_SLOT);
                        return NO_SLOT;
                    }
                    TOKEN.set(t);
                    return t;
                }
                Err(now) => v = now,
            }
        }
    }
    // Every slot is taken: try again on a later slow path.
    UNASSIGNED
}

/// The process's thread-exit key, created once.
fn key() -> Option<libc::pthread_key_t> {
    let k = KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(k - 1);
    }
    let _g = KEY_INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let k = KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some(k - 1);
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out-pointer and an `extern "C"` destructor that lives
    // for the whole program.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
        return None;
    }
    KEY.store(key + 1, Ordering::Release);
    Some(key)
}

/// Runs at thread exit (after the thread's TLS destructors). Allocates
/// nothing: it only stores atomics and this thread's token cell.
///
/// The slot is given back only if it is still this thread's: in a fork
/// child the forking thread starts over without a token (`enter_child`)
/// while its key value still names its old slot, which a new thread of the
/// child may hold by now.
extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    let slot = value as usize - 1;
    let mine = token();
    TOKEN.set(NO_SLOT);
    if !is_real(mine) || slot_of(mine) != slot {
        return;
    }
    if SLOT_TOKEN[slot].compare_exchange(mine, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
        SLOT_USED[slot / 64].fetch_and(!(1 << (slot % 64)), Ordering::Release);
    }
}

/// For the `pthread_atfork` child handler (the child has one thread, this
/// one): every other thread of the parent is gone, so every slot is free
/// again, and this thread starts over without a token. No heap of any arena
/// then matches this thread, so its every call reaches an arena's slow
/// path, where an arena inherited across the fork is refused
/// (`Misuse::Forked`); tokens handed out later in the child are new
/// (`NEXT` goes on), so they never match a slab the parent's threads own.
/// Async-signal-safe: atomics and this thread's token cell only.
pub(crate) fn enter_child() {
    TOKEN.set(UNASSIGNED);
    for (i, word) in SLOT_USED.iter().enumerate() {
        word.store(if i == SPARE / 64 { 1 << (SPARE % 64) } else { 0 }, Ordering::Relaxed);
    }
    for token in &SLOT_TOKEN {
        token.store(0, Ordering::Relaxed);
    }
}

/// `membarrier(2)` commands (`linux/membarrier.h`).
#[cfg_attr(all(loom, test), allow(dead_code))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
#[cfg_attr(all(loom, test), allow(dead_code))]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
/// 0: not tried; 1: registered; 2: unavailable (old kernel, seccomp, valgrind).
static MEMBARRIER: AtomicU32 = AtomicU32::new(0);

/// Makes every thread of the process execute a full memory barrier, as if
/// each had run `fence(SeqCst)` at some point during this call. `false`
/// where the kernel does not offer `membarrier(2)`: then idle threads'
/// slabs cannot be taken from them, only dead threads'.
#[cfg_attr(all(loom, test), allow(dead_code))]
pub(crate) fn membarrier() -> bool {
    let run = || {
        // SAFETY: membarrier takes integer arguments only.
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
    };
    match MEMBARRIER.load(Ordering::Acquire) {
        1 => run(),
        2 => false,
        _ => {
            // SAFETY: as above.
            let ok = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) }
                == 0
                && run();
            MEMBARRIER.store(if ok { 1 } else { 2 }, Ordering::Release);
            ok
        }
    }
}

/// Whether `membarrier(2)` is known not to work here.
pub(crate) fn membarrier_usable() -> bool {
    MEMBARRIER.load(Ordering::Relaxed) != 2
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A thread that forked keeps its `pthread_setspecific` value (its old
    /// slot) in the child, while `enter_child` frees every slot there. When
    /// it exits, its destructor must not free the slot from under the live
    /// child thread that holds it now (found in review).
    #[test]
    fn forking_threads_exit_in_the_child_keeps_a_live_threads_slot() {
        let status = std::thread::spawn(|| {
            crate::global::register_fork_handlers(); // as every SecretArena::build does
            let t = assign();
            assert!(is_real(t));
            let slot = slot_of(t);
            // SAFETY: the child makes only raw calls and spawns threads
            // (glibc's malloc is fork-safe), then leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // Child threads take slots 0, 1, ... until one has the
                // forking thread's old slot.
                loop {
                    let (tx, rx) = mpsc::channel();
                    std::thread::spawn(move || {
                        let ty = assign();
                        let mine = slot_of(ty) == slot;
                        tx.send(slot_of(ty)).unwrap();
                        if !mine {
                            loop {
                                std::thread::sleep(Duration::from_secs(10));
                            }
                        }
                        // By now the forking thread has exited.
                        std::thread::sleep(Duration::from_millis(300));
                        let code = if is_alive(ty) { 0 } else { 3 };
                        // SAFETY: ends the child at once.
                        unsafe { libc::_exit(code) };
                    });
                    let ys = rx.recv().unwrap();
                    if ys == slot {
                        break;
                    }
                    if ys > slot {
                        // SAFETY: as above.
                        unsafe { libc::_exit(9) };
                    }
                }
                return -1; // the thread exits: its key destructor runs
            }
            let mut st = 0;
            // SAFETY: a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            libc::WEXITSTATUS(st)
        })
        .join()
        .unwrap();
        assert_eq!(status, 0, "3: the forking thread's exit freed a live child thread's slot; 9: inconclusive");
    }
}
