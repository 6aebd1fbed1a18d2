//! `wipe_stack`: the stack below the caller's frame reads as zero
//! afterwards.
//!
//! A function that has returned leaves its locals where its frame was. The
//! test plants a marker there (an `#[inline(never)]` function fills a large
//! local array and returns its address), then reads that region back with
//! `process_vm_readv(2)`: the kernel copies it into a buffer allocated
//! beforehand, so the read is defined for Rust and puts no frame of its
//! own over the region beyond the syscall wrapper's few bytes at the top.
//!
//! The control (no wipe) must find the marker, or the test would prove
//! nothing; with `wipe_stack` it must find none.

mod common;

use std::hint::black_box;

use secret_arena::{ExposeSecret, SecretCell, wipe_stack};

/// Size of the planted array.
const PLANT: usize = 32 << 10;
/// The top of the array (next to the caller's frame) is left unmarked: the
/// read's own call frame lands there.
const HEADROOM: usize = 1024;
const MARK: u8 = 0x5C;

/// Fills a local array with `MARK` (all but its top `HEADROOM` bytes) and
/// returns where the marked part was.
#[inline(never)]
fn plant() -> (usize, usize) {
    let mut buf = [0u8; PLANT];
    for b in &mut buf[..PLANT - HEADROOM] {
        // SAFETY: `b` is a valid `&mut u8`.
        unsafe { std::ptr::write_volatile(b, MARK) };
    }
    black_box(&mut buf);
    (buf.as_ptr() as usize, PLANT - HEADROOM)
}

/// Copies `len` bytes of this process's memory at `addr` into `out`.
#[inline(always)]
fn read_own_memory(addr: usize, out: &mut [u8]) {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: out.len() };
    // SAFETY: `local` describes `out`, writable for its length; `remote` is
    // only read, by the kernel, which reports unmapped ranges as errors.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    assert_eq!(n, out.len() as isize, "process_vm_readv: {}", std::io::Error::last_os_error());
}

#[test]
fn the_control_finds_the_marker_left_on_the_stack() {
    if common::skipped_under_a_sanitizer("the_control_finds_the_marker_left_on_the_stack") {
        return;
    }
    let mut seen = vec![0u8; PLANT];
    let (at, len) = plant();
    read_own_memory(at, &mut seen[..len]);
    let marks = seen[..len].iter().filter(|&&b| b == MARK).count();
    assert!(marks >= len * 9 / 10, "only {marks} of {len} marker bytes found: the test cannot see the stack");
}

#[test]
fn wipe_stack_leaves_zeros_below_the_frame() {
    if common::skipped_under_a_sanitizer("wipe_stack_leaves_zeros_below_the_frame") {
        return;
    }
    let mut seen = vec![0u8; PLANT];
    let (at, len) = plant();
    wipe_stack(64 << 10);
    read_own_memory(at, &mut seen[..len]);
    let marks = seen[..len].iter().filter(|&&b| b == MARK).count();
    assert_eq!(marks, 0, "{marks} of {len} marker bytes survived wipe_stack");
    assert!(seen[..len].iter().all(|&b| b == 0), "the region is not all zero");
}

#[test]
fn wipe_stack_covers_what_was_asked_and_small_requests_round_up() {
    if common::skipped_under_a_sanitizer("wipe_stack_covers_what_was_asked_and_small_requests_round_up") {
        return;
    }
    for ask in [1, 4096, 5000, PLANT] {
        let mut seen = vec![0u8; PLANT];
        let (at, len) = plant();
        wipe_stack(ask);
        read_own_memory(at, &mut seen[..len]);
        // `ask`, rounded up to a power of two of at least 4 KiB, counted
        // from the top of the planted array (just below this frame), less
        // 256 bytes for the wiping frames' own bookkeeping.
        let covered = ask.next_power_of_two().max(4096);
        let lowest = (PLANT - covered.min(PLANT)) + 256;
        let region = &seen[lowest.min(len)..len];
        let marks = region.iter().filter(|&&b| b == MARK).count();
        assert_eq!(marks, 0, "wipe_stack({ask}) left {marks} marker bytes in the {covered} bytes it covers");
        if covered + 1024 < PLANT {
            // And the test can see the difference: below what was covered,
            // the marker is still there.
            let below = &seen[..PLANT - covered - 1024];
            assert!(below.iter().all(|&b| b == MARK), "wipe_stack({ask}) reached deeper than the test expects");
        }
    }
}

#[test]
fn more_than_one_frame_is_chained() {
    if common::skipped_under_a_sanitizer("more_than_one_frame_is_chained") {
        return;
    }
    // 1.5 MiB: one 1 MiB frame and one 512 KiB frame. Run on a thread with
    // a stack large enough for it.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let mut seen = vec![0u8; PLANT];
            let (at, len) = plant();
            wipe_stack(3 << 19);
            read_own_memory(at, &mut seen[..len]);
            assert!(seen[..len].iter().all(|&b| b == 0));
        })
        .expect("spawn")
        .join()
        .expect("the wipe ran");
}

/// A constructor that leaves its key material in its frame, as a key
/// schedule does.
#[inline(never)]
fn expand(seed: u8) -> [u64; 64] {
    let mut scratch = [0u64; 512];
    for w in &mut scratch {
        *w = u64::from_ne_bytes([MARK; 8]);
    }
    black_box(seed);
    black_box(&mut scratch);
    let mut out = [0u64; 64];
    out.copy_from_slice(&scratch[..64]);
    out
}

#[inline(never)]
fn build_cell() -> (SecretCell<[u64; 64]>, usize) {
    let probe = [0u8; 16];
    let top = black_box(&probe).as_ptr() as usize;
    (SecretCell::init_with(|| expand(black_box(1))), top)
}

#[test]
fn init_with_then_wipe_stack_leaves_no_key_material_below() {
    if common::skipped_under_a_sanitizer("init_with_then_wipe_stack_leaves_no_key_material_below") {
        return;
    }
    let mut seen = vec![0u8; 64 << 10];
    let (cell, top) = build_cell();
    assert_eq!(cell.expose_secret()[0], u64::from_ne_bytes([MARK; 8]));
    wipe_stack(128 << 10);
    // 64 KiB below where `build_cell`'s frame was.
    let from = top - seen.len() + 16;
    read_own_memory(from, &mut seen);
    let marks = seen.windows(8).filter(|w| w == &[MARK; 8]).count();
    assert_eq!(marks, 0, "{marks} copies of key words are still on the stack");
}

#[test]
fn without_wipe_stack_the_key_material_is_found_below() {
    if common::skipped_under_a_sanitizer("without_wipe_stack_the_key_material_is_found_below") {
        return;
    }
    let mut seen = vec![0u8; 64 << 10];
    let (cell, top) = build_cell();
    assert_eq!(cell.expose_secret()[0], u64::from_ne_bytes([MARK; 8]));
    let from = top - seen.len() + 16;
    read_own_memory(from, &mut seen);
    let marks = seen.windows(8).filter(|w| w == &[MARK; 8]).count();
    assert!(marks > 0, "the control sees no key words: the test above proves nothing");
}
