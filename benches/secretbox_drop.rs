//! `SecretBox<[u8; 32]>` new + drop: the drop path before and after the
//! contract fix, measured side by side in one criterion run.
//!
//! - `old-wordwise-wipe`: a bench-only copy of the drop path of commit
//!   854faa9 (no `T::zeroize` for a `T` without drop glue; the value's 32
//!   bytes overwritten with volatile 8-byte stores, then freed to the arena,
//!   which wipes the chunk again). It is what the crate did, not what it
//!   does: that path broke the contract for key handles.
//! - `SecretBox`: the crate's `SecretBox` now: `T::zeroize` (32 volatile
//!   byte stores for `[u8; 32]`), then free (the arena wipes the chunk).
//! - `SecretCell`: the sibling for key types that are not `Zeroize`: the
//!   value's drop, its bytes wiped word-wise, then free.
//!
//! Each in the default arena and in an explicit memfd_secret arena.
//!
//! For instruction counts under `valgrind --tool=callgrind` (steady where
//! the machine is busy): `SECRETBOX_DROP_LOOP=old|box|cell` with
//! `SECRETBOX_DROP_ITERS=n` runs n new + drop in the default arena and
//! exits; instructions per op are the difference of two runs divided by
//! the difference in n (see `scripts/bench-report.sh` for running the arena
//! under valgrind, which knows no memfd_secret).
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::hint::black_box;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::Duration;

use allocator_api2::alloc::{Allocator, Layout};
use allocator_api2::boxed::Box;
use criterion::{Criterion, criterion_group};
use secret_arena::{BackingPolicy, DefaultArena, ExposeSecret, SecretArena, SecretBox, SecretCell};

/// The pre-fix `SecretBox` drop for a `[u8; 32]`, copied for comparison.
struct OldBox<A: Allocator> {
    inner: ManuallyDrop<Box<[u8; 32], A>>,
}

impl<A: Allocator> OldBox<A> {
    #[inline]
    fn new_in(value: [u8; 32], alloc: A) -> Self {
        OldBox { inner: ManuallyDrop::new(Box::new_in(value, alloc)) }
    }
}

impl<A: Allocator> Drop for OldBox<A> {
    fn drop(&mut self) {
        // SAFETY: taken once, here.
        let boxed = unsafe { ManuallyDrop::take(&mut self.inner) };
        let layout = Layout::new::<[u8; 32]>();
        let (raw, alloc) = Box::into_raw_with_allocator(boxed);
        // The old `wipe` on a 16-aligned 32-byte value: `wipe_chunk`'s
        // volatile word stores and a compiler fence.
        let words = raw.cast::<u64>();
        for i in 0..4 {
            // SAFETY: four 8-byte words inside the live 32-byte block.
            unsafe { words.add(i).write_volatile(0) };
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: allocated by `alloc` with this layout, freed once.
        unsafe { alloc.deallocate(NonNull::new_unchecked(raw.cast()), layout) };
    }
}

fn secretbox_drop(c: &mut Criterion) {
    let arena = SecretArena::builder().capacity(4 << 20).policy(BackingPolicy::PreferSecret).build().expect("arena");
    let mut g = c.benchmark_group("secretbox_drop");
    g.bench_function("old-wordwise-wipe/global", |b| {
        b.iter(|| {
            let s = OldBox::new_in(black_box([0xA5u8; 32]), DefaultArena);
            black_box(&**s.inner);
        })
    });
    g.bench_function("SecretBox/global", |b| {
        b.iter(|| {
            let s: SecretBox<[u8; 32]> = SecretBox::new(black_box([0xA5u8; 32]));
            black_box(s.expose_secret());
        })
    });
    g.bench_function("SecretCell/global", |b| {
        b.iter(|| {
            let s: SecretCell<[u8; 32]> = SecretCell::new(black_box([0xA5u8; 32]));
            black_box(s.expose_secret());
        })
    });
    g.bench_function("old-wordwise-wipe/arena", |b| {
        b.iter(|| {
            let s = OldBox::new_in(black_box([0xA5u8; 32]), &arena);
            black_box(&**s.inner);
        })
    });
    g.bench_function("SecretBox/arena", |b| {
        b.iter(|| {
            let s = SecretBox::new_in(black_box([0xA5u8; 32]), &arena);
            black_box(s.expose_secret());
        })
    });
    g.bench_function("SecretCell/arena", |b| {
        b.iter(|| {
            let s = SecretCell::new_in(black_box([0xA5u8; 32]), &arena);
            black_box(s.expose_secret());
        })
    });
    g.finish();
}

/// `iters` new + drop of the chosen kind in the default arena.
#[inline(never)]
fn fixed_loop(kind: &str, iters: usize) {
    for _ in 0..iters {
        match kind {
            "old" => {
                let s = OldBox::new_in(black_box([0xA5u8; 32]), DefaultArena);
                black_box(&**s.inner);
            }
            "box" => {
                let s: SecretBox<[u8; 32]> = SecretBox::new(black_box([0xA5u8; 32]));
                black_box(s.expose_secret());
            }
            "cell" => {
                let s: SecretCell<[u8; 32]> = SecretCell::new(black_box([0xA5u8; 32]));
                black_box(s.expose_secret());
            }
            other => panic!("SECRETBOX_DROP_LOOP={other}: expected old, box or cell"),
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = secretbox_drop
}
fn main() {
    if let Ok(kind) = std::env::var("SECRETBOX_DROP_LOOP") {
        let iters = std::env::var("SECRETBOX_DROP_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        fixed_loop(&kind, 1);
        fixed_loop(&kind, iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
