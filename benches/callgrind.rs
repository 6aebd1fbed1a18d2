//! A fixed amount of 32-byte allocate + write + free work, for counting
//! instructions with `valgrind --tool=callgrind` (reproducible, unlike time).
//!
//! `CALLGRIND_ALLOC=arena|system` picks the allocator (default: both, one
//! after the other), `CALLGRIND_ITERS` the number of operations (default
//! 100,000), `CALLGRIND_SIZE` the block size in bytes (default 32). Instructions per op are the difference between two runs with
//! different `CALLGRIND_ITERS`, divided by the difference in iterations, so
//! start-up and arena creation cancel out; scripts/bench-report.sh does this.
//!
//! Valgrind does not know `memfd_secret`, so under it the arena runs on the
//! mlocked-memfd fallback (`PreferSecret` falls back); natively it prints
//! which backing it got and ns/op, so `cargo bench` also runs it usefully.

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use allocator_api2::alloc::{Allocator, Layout};
use secret_arena::SecretArena;

#[inline(never)]
fn work<A: Allocator>(a: &A, size: usize, iters: usize) {
    let l = Layout::from_size_align(size, 8).expect("valid layout");
    for _ in 0..iters {
        let p = a.allocate(l).expect("allocation failed").cast::<u8>();
        // SAFETY: a fresh block of at least `size` bytes.
        unsafe { p.as_ptr().write_bytes(0xA5, size) };
        black_box(p);
        // SAFETY: allocated just above from `a` with `l`, freed once.
        unsafe { a.deallocate(p, l) };
    }
}

fn timed<A: Allocator>(name: &str, a: &A, size: usize, iters: usize) {
    work(a, size, 1000);
    let t = Instant::now();
    work(a, size, iters);
    println!("{name}: {iters} ops of {size} B, {:.1} ns/op", t.elapsed().as_nanos() as f64 / iters as f64);
}

fn main() {
    let which = std::env::var("CALLGRIND_ALLOC").unwrap_or_default();
    let iters = std::env::var("CALLGRIND_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let size = std::env::var("CALLGRIND_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    if which.is_empty() || which == "arena" {
        let arena = SecretArena::new(1 << 20).expect("arena");
        timed(&format!("arena ({:?})", arena.backing()), &arena, size, iters);
    }
    if which.is_empty() || which == "system" {
        timed("System", &System, size, iters);
    }
}
