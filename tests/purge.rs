//! `purge()` from a SIGTERM handler wipes every secret in the process: in
//! `SecretBox`es (the default arena), explicit arenas on both backings, and
//! the global heap, on `SecretGlobalAlloc`.
//!
//! The binary's `#[global_allocator]` is `SecretGlobalAlloc` behind a
//! switch: the child turns it on before it builds its secrets, so every
//! heap allocation from then on is `SecretGlobalAlloc`'s, while libtest's
//! own start-up heap stays on `System`. That keeps the binary runnable at a
//! 64 KiB memlock limit, where libtest alone would not fit in the arena.
//!
//! Each case runs in a re-executed child, because a purge zeroes the heap of
//! the whole process (libtest's included). The child saves raw pointers to
//! its secrets, says "ready", waits for the parent's SIGTERM, then reads the
//! secrets back through the pointers, allocates again, and leaves with
//! `_exit` (its heap objects are all zero now, so it does not return into
//! libtest). The control case runs the same child with a handler that does
//! not purge, and finds every secret intact, so the check can fail.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};

use allocator_api2::alloc::Allocator;
use common::{fill_pattern, is_child, pattern};
use core::alloc::Layout;
use std::alloc::{GlobalAlloc, System};

use secret_arena::{
    BackingPolicy, ExposeSecret, ExposeSecretMut, SecretArena, SecretBox, SecretGlobalAlloc, SecretString, SecretVec,
};
use std::process::{Command, Stdio};

/// `SecretGlobalAlloc` once `SECRET_HEAP` is on, `System` before; each
/// block is freed by the allocator that owns it.
struct SwitchableHeap;

static SECRET_HEAP: AtomicBool = AtomicBool::new(false);
static SECRET: SecretGlobalAlloc = SecretGlobalAlloc::new();

fn in_secret_heap(ptr: *mut u8) -> bool {
    // The heap exists once the switch is on; before, nothing is in it.
    SECRET_HEAP.load(Ordering::SeqCst) && SecretGlobalAlloc::arena().is_some_and(|a| a.contains(ptr))
}

// SAFETY: every block is allocated by one of the two allocators and
// returned to the same one: `SecretGlobalAlloc` blocks are exactly those
// inside its heap arena.
unsafe impl GlobalAlloc for SwitchableHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if SECRET_HEAP.load(Ordering::SeqCst) {
            // SAFETY: the caller's contract, passed through.
            unsafe { SECRET.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_secret_heap(ptr) {
            // SAFETY: the block came from SECRET.
            unsafe { SECRET.dealloc(ptr, layout) }
        } else {
            // SAFETY: the block came from System.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if in_secret_heap(ptr) {
            // SAFETY: the block came from SECRET.
            unsafe { SECRET.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: the block came from System.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOC: SwitchableHeap = SwitchableHeap;

const PURGE_VAR: &str = "SECRET_ARENA_TEST_PURGE";
static DO_PURGE: AtomicBool = AtomicBool::new(false);
static GOT_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_sig: libc::c_int) {
    if DO_PURGE.load(Ordering::SeqCst) {
        secret_arena::purge();
    }
    GOT_SIGNAL.store(true, Ordering::SeqCst);
}

/// Writes `msg` to stdout without touching the heap.
fn say(msg: &str) {
    // SAFETY: writes from a live buffer.
    unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
}

/// One secret: where it is and what it held.
#[derive(Clone, Copy)]
struct Saved {
    name: &'static str,
    ptr: *const u8,
    len: usize,
    seed: u64,
}

fn check(saved: &[Saved], purged: bool) -> bool {
    let mut ok = true;
    for s in saved {
        let mut zero = true;
        let mut intact = true;
        let mut state = s.seed | 1;
        for i in 0..s.len {
            // SAFETY: the secret is still live (nothing was freed), so its
            // `len` bytes are readable.
            let b = unsafe { s.ptr.add(i).read_volatile() };
            zero &= b == 0;
            // Recompute the pattern byte by byte (the heap is gone).
            intact &= b == common_next(&mut state);
        }
        let good = if purged { zero } else { intact };
        if !good {
            say("FAILED: ");
            say(s.name);
            say(if purged { " is not zero after purge\n" } else { " changed without a purge\n" });
            ok = false;
        }
    }
    ok
}

/// `common::pattern`'s generator, with no allocation.
fn common_next(state: &mut u64) -> u8 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
}

fn install_handler() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = on_sigterm as *const () as usize;
    // SAFETY: `sa` is valid; the handler only calls purge (async-signal-safe)
    // and stores an atomic.
    assert_eq!(unsafe { libc::sigaction(libc::SIGTERM, &sa, core::ptr::null_mut()) }, 0);
}

/// Builds secrets everywhere, waits for SIGTERM, checks, allocates, exits.
fn child_body(case: &str, purge: bool) -> ! {
    // Explicit arenas on both backings, a chunk and a page run each.
    let budget = secret_arena::memlock_budget().available();
    // Under a small memlock limit, small arenas leave the default arena
    // room for the heap.
    let small = budget.is_some_and(|b| b < 1 << 20);
    let (capacity, run) = if small { (8 << 10, 4096) } else { (64 << 10, 20_000) };
    // On the stack, not in a Vec: the purge zeroes the heap, and with it
    // any arena struct kept there.
    let arenas = [BackingPolicy::PreferSecret, BackingPolicy::ForceFallback].map(|policy| {
        SecretArena::builder()
            .capacity(capacity)
            .policy(policy)
            .build()
            .inspect_err(|e| common::skip(case, &format!("no {policy:?} arena under budget {budget:?}: {e}")))
            .ok()
    });
    // From here on, the heap is SecretGlobalAlloc's.
    SECRET_HEAP.store(true, Ordering::SeqCst);
    DO_PURGE.store(purge, Ordering::SeqCst);
    install_handler();
    let mut saved: Vec<Saved> = Vec::new();
    let mut seed = 0x5EED_0001u64;
    let mut next_seed = || {
        seed += 2;
        seed
    };

    // The default arena: a SecretBox, a SecretVec, a SecretString.
    let mut key = SecretBox::new([0u8; 32]);
    let s = next_seed();
    // SAFETY: 32 writable bytes.
    unsafe { fill_pattern(key.expose_secret_mut().as_mut_ptr(), 32, s) };
    saved.push(Saved { name: "SecretBox<[u8; 32]>", ptr: key.expose_secret().as_ptr(), len: 32, seed: s });
    let s = next_seed();
    let vec = SecretVec::from_slice(&pattern(300, s));
    saved.push(Saved { name: "SecretVec", ptr: vec.expose_secret().as_ptr(), len: 300, seed: s });
    let text = SecretString::from("purge me, I am a password");
    let text_ptr = text.expose_secret().as_ptr();

    let mut blocks = Vec::new();
    for arena in arenas.iter().flatten() {
        for len in [48usize, run] {
            let block = arena.allocate(Layout::from_size_align(len, 16).unwrap()).expect("arena has room");
            let s = next_seed();
            // SAFETY: the block has at least `len` writable bytes.
            unsafe { fill_pattern(block.as_ptr().cast(), len, s) };
            saved.push(Saved { name: "explicit arena block", ptr: block.as_ptr().cast(), len, seed: s });
            blocks.push(block);
        }
    }

    // The global heap: a plain Box and a plain Vec.
    let s = next_seed();
    let heap_box: Box<[u8]> = pattern(64, s).into_boxed_slice();
    saved.push(Saved { name: "global-heap Box", ptr: heap_box.as_ptr(), len: 64, seed: s });
    let s = next_seed();
    let heap_vec: Vec<u8> = pattern(6000, s);
    saved.push(Saved { name: "global-heap Vec", ptr: heap_vec.as_ptr(), len: 6000, seed: s });
    let heap = SecretGlobalAlloc::arena().expect("the heap exists once the switch is on");
    assert!(heap.contains(heap_vec.as_ptr()) && heap.contains(heap_box.as_ptr()), "not on SecretGlobalAlloc");

    // Everything the checks need is on the stack from here on.
    let mut list = [Saved { name: "", ptr: core::ptr::null(), len: 0, seed: 0 }; 16];
    let n = saved.len();
    list[..n].copy_from_slice(&saved);
    let text_len = text.len();
    assert!(check(&list[..n], false), "secrets were not written");

    say("ready\n");
    while !GOT_SIGNAL.load(Ordering::SeqCst) {
        // SAFETY: usleep has no preconditions.
        unsafe { libc::usleep(1000) };
    }

    let mut ok = check(&list[..n], purge);
    // SAFETY: the string is live; its bytes are readable.
    let text_zero = (0..text_len).all(|i| unsafe { text_ptr.add(i).read_volatile() } == 0);
    if text_zero != purge {
        say("FAILED: SecretString\n");
        ok = false;
    }
    // Allocation keeps working: the global heap, the default arena and the
    // explicit arenas.
    let fresh = Box::new([0xA5u8; 100]);
    let fresh_key = SecretBox::new([0x5Au8; 64]);
    ok &= core::hint::black_box(&fresh).iter().all(|&b| b == 0xA5);
    ok &= fresh_key.expose_secret().iter().all(|&b| b == 0x5A);
    for arena in arenas.iter().flatten() {
        // The size of a block already there, so a small arena has room.
        match arena.allocate(Layout::from_size_align(48, 16).unwrap()) {
            // SAFETY: a fresh 48-byte block: free arena memory is zero.
            Ok(b) => ok &= (0..48).all(|i| unsafe { b.cast::<u8>().as_ptr().add(i).read_volatile() } == 0),
            Err(_) => {
                say("FAILED: an explicit arena no longer allocates\n");
                ok = false;
            }
        }
    }
    if ok {
        say(if purge { "purged ok\n" } else { "intact ok\n" });
    }
    // Nothing is freed or returned: the heap's objects are zero now.
    core::mem::forget((key, vec, text, arenas, blocks, heap_box, heap_vec, fresh, fresh_key, saved));
    // SAFETY: _exit ends the process without running destructors.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// Runs the case in a child, sends SIGTERM once it is ready, and returns
/// its stdout.
fn run_child(case: &str, purge: bool) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(common::CASE_VAR, case)
        .env(PURGE_VAR, u8::from(purge).to_string())
        // A backtrace would allocate far more than a small heap holds.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line == "ready\n" {
            // SAFETY: kill with a valid pid and signal.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        }
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    println!("child ({status}) stdout:\n{seen}\nchild stderr:\n{err}");
    common::relay_skips(err.as_bytes());
    assert!(seen.contains("ready\n"), "the child never got ready");
    assert!(status.success(), "child failed: {status}\n{seen}\n{err}");
    seen
}

#[test]
fn purge_in_sigterm_handler_zeroes_every_secret() {
    if is_child(this_test!()) {
        child_body(this_test!(), std::env::var(PURGE_VAR).as_deref() == Ok("1"));
    }
    let out = run_child(this_test!(), true);
    assert!(out.contains("purged ok"), "{out}");
}

/// The control: the same child and signal, without purge, finds every
/// secret intact through the same pointers.
#[test]
fn without_purge_the_secrets_survive_the_signal() {
    if is_child(this_test!()) {
        child_body(this_test!(), std::env::var(PURGE_VAR).as_deref() == Ok("1"));
    }
    let out = run_child(this_test!(), false);
    assert!(out.contains("intact ok"), "{out}");
}
