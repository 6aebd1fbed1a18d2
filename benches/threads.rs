//! Allocate/free throughput of 32-byte blocks with 1, 2 and 4 threads on
//! one shared `&SecretArena`, against `System`; prints markdown tables.
//!
//! Each thread does a fixed number of operations; all threads start at a
//! barrier, and the clock runs from the barrier to the last thread's end.
//! Two patterns:
//! - **pair**: allocate, write 32 bytes, free, repeat (the hot path);
//! - **batch**: allocate 64 blocks, writing each, then free all 64 (touches
//!   many chunks, so slab bitmaps and slab switches are exercised).
//!
//! Each configuration runs `ROUNDS` times; the table shows the median
//! aggregate ops/s (one op = one allocate + one free). The machine this was
//! written for has 2 cores, so 4 threads show oversubscription.
//!
//! It also shows CPU time per op (each thread's CLOCK_THREAD_CPUTIME_ID,
//! summed): on a machine shared with other work, wall-clock scaling mostly
//! measures the neighbours, while CPU ns/op still rises when threads fight
//! over cache lines. (Time asleep on a lock is not CPU time, so read both.)
//!
//! Run: `cargo bench --bench threads` (`THREADS_OPS=<n>` sets ops per thread).

use std::alloc::System;
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use allocator_api2::alloc::{Allocator, Layout};
use secret_arena::{BackingPolicy, SecretArena};

const ROUNDS: usize = 5;
const BATCH: usize = 64;
const THREADS: [usize; 3] = [1, 2, 4];

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Pair,
    Batch,
}

fn layout() -> Layout {
    Layout::from_size_align(32, 8).expect("valid layout")
}

fn write(p: NonNull<u8>) {
    // SAFETY: every caller passes a live block of at least 32 bytes.
    unsafe { p.as_ptr().write_bytes(0xA5, 32) };
    black_box(p);
}

/// One thread's work: `ops` allocate+free pairs in the given pattern.
fn work<A: Allocator>(a: &A, ops: usize, pattern: Pattern) {
    let l = layout();
    match pattern {
        Pattern::Pair => {
            for _ in 0..ops {
                let p = a.allocate(l).expect("allocation failed").cast::<u8>();
                write(p);
                // SAFETY: allocated just above from `a` with `l`.
                unsafe { a.deallocate(p, l) };
            }
        }
        Pattern::Batch => {
            let mut held = [NonNull::<u8>::dangling(); BATCH];
            for _ in 0..ops / BATCH {
                for slot in held.iter_mut() {
                    let p = a.allocate(l).expect("allocation failed").cast::<u8>();
                    write(p);
                    *slot = p;
                }
                for &p in held.iter() {
                    // SAFETY: each was allocated above from `a` with `l`, once.
                    unsafe { a.deallocate(p, l) };
                }
            }
        }
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time, and CPU time summed over threads, for `threads` threads doing
/// `ops` each on the shared `a`.
fn run<A: Allocator + Sync>(a: &A, threads: usize, ops: usize, pattern: Pattern) -> (Duration, Duration) {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let cpu = thread_cpu();
                    work(a, ops, pattern);
                    thread_cpu() - cpu
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        let cpu = handles.into_iter().map(|h| h.join().expect("worker panicked")).sum();
        (t.elapsed(), cpu)
    })
}

/// Median aggregate ops/s and median CPU ns per op over `ROUNDS` runs,
/// after one warm-up run.
fn measure<A: Allocator + Sync>(a: &A, threads: usize, ops: usize, pattern: Pattern) -> (f64, f64) {
    run(a, threads, ops / 10, pattern);
    let total = (threads * ops) as f64;
    let (mut rates, mut cpu): (Vec<f64>, Vec<f64>) = (0..ROUNDS)
        .map(|_| {
            let (wall, cpu) = run(a, threads, ops, pattern);
            (total / wall.as_secs_f64(), cpu.as_nanos() as f64 / total)
        })
        .unzip();
    rates.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (rates[ROUNDS / 2], cpu[ROUNDS / 2])
}

fn table<A: Allocator + Sync>(rows: &[(&str, &A)], ops: usize, pattern: Pattern) {
    println!(
        "\n### 32 B {}, {ops} ops per thread, median of {ROUNDS}\n",
        if pattern == Pattern::Pair {
            "allocate + write + free pairs"
        } else {
            "batches of 64 allocations then 64 frees"
        }
    );
    println!(
        "| allocator | 1 thread Mops/s | 2 threads Mops/s | 4 threads Mops/s | 2T / 1T | 4T / 1T | CPU ns/op 1T | 2T | 4T |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, a) in rows {
        let (r, c): (Vec<f64>, Vec<f64>) = THREADS.iter().map(|&t| measure(*a, t, ops, pattern)).unzip();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r[0] / 1e6,
            r[1] / 1e6,
            r[2] / 1e6,
            r[1] / r[0],
            r[2] / r[0],
            c[0],
            c[1],
            c[2]
        );
    }
}

/// `System` and the arenas behind one type, so a table can list them all.
enum Subject<'a> {
    System,
    Arena(&'a SecretArena),
}

// SAFETY: every method forwards to an `Allocator` that upholds the contract;
// blocks are always freed through the same variant that allocated them.
unsafe impl Allocator for Subject<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        match self {
            Subject::System => System.allocate(layout),
            Subject::Arena(a) => a.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match self {
            // SAFETY: the caller's contract, passed on to the same allocator.
            Subject::System => unsafe { System.deallocate(ptr, layout) },
            // SAFETY: as above.
            Subject::Arena(a) => unsafe { a.deallocate(ptr, layout) },
        }
    }
}

fn main() {
    let ops: usize = std::env::var("THREADS_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let mut arenas: Vec<(&str, SecretArena)> = Vec::new();
    for (name, policy) in
        [("arena-memfd_secret", BackingPolicy::RequireSecret), ("arena-fallback", BackingPolicy::ForceFallback)]
    {
        match SecretArena::builder().capacity(4 << 20).policy(policy).build() {
            Ok(a) => arenas.push((name, a)),
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    let mut rows: Vec<(&str, Subject<'_>)> = arenas.iter().map(|(n, a)| (*n, Subject::Arena(a))).collect();
    rows.push(("System", Subject::System));
    let refs: Vec<(&str, &Subject)> = rows.iter().map(|(n, s)| (*n, s)).collect();
    println!(
        "## Threads: one shared allocator ({} CPUs online)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    table(&refs, ops, Pattern::Pair);
    table(&refs, ops, Pattern::Batch);
}
