//! Single-thread latency of secret allocations, side by side with the field.
//!
//! Every row allocates, writes every requested byte, and frees. The write is
//! a `write_bytes` followed by `black_box` of the pointer, so the compiler
//! must assume the bytes are read and cannot drop the stores. Zeroing on
//! free is whatever the allocator does: ours wipes, `System` does not, and
//! "System + zeroize" adds the byte-wise zeroize that secrecy users get.
//!
//! Groups (criterion ids, as `group/function/parameter`):
//! - `awf/<allocator>/<bytes>`: allocate + write + free at 32 B, 256 B, 4 KiB.
//! - `awf_slow/<allocator>/<bytes>`: the same for memsec, whose per-allocation
//!   syscalls cost tens of µs, with fewer samples. The filter `awf` (not
//!   `awf/`) selects both groups: the README's first table.
//! - `secretbox/<impl>`: a boxed `[u8; 32]` secret created and dropped.
//! - `vec_push_64k/<allocator>`: a `Vec<u8>` grown by pushes to 64 KiB.
//! - `hashmap_1000/<allocator>`: insert then remove 1,000 32-byte keys.
//!
//! `scripts/bench-report.sh` turns criterion's output into markdown tables.
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use allocator_api2::alloc::{Allocator, Layout};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use secmem_alloc::sec_alloc::SecStackSinglePageAlloc;
use secmem_alloc::zeroizing_alloc::ZeroizeAlloc;
use secrecy::ExposeSecret;
use secret_arena::{BackingPolicy, SecretArena};
use zeroize::Zeroize;

const SIZES: [usize; 3] = [32, 256, 4096];

/// The arena rows: ours on memfd_secret, and ours forced onto the fallback.
/// A backing that cannot be had here is reported and skipped, never
/// silently replaced by the other.
fn arenas() -> Vec<(&'static str, SecretArena)> {
    let mut out = Vec::new();
    for (name, policy) in
        [("arena-memfd_secret", BackingPolicy::RequireSecret), ("arena-fallback", BackingPolicy::ForceFallback)]
    {
        match SecretArena::builder().capacity(4 << 20).policy(policy).build() {
            Ok(a) => out.push((name, a)),
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    out
}

/// Allocates `layout` from `a`, writes every byte, frees.
#[inline(always)]
fn alloc_write_free<A: Allocator>(a: &A, layout: Layout) {
    let block = a.allocate(layout).expect("allocation failed");
    let p = block.cast::<u8>();
    // SAFETY: the block is fresh and at least `layout.size()` bytes long.
    unsafe { p.as_ptr().write_bytes(0xA5, layout.size()) };
    black_box(p);
    // SAFETY: allocated just above from `a` with `layout`, not yet freed.
    unsafe { a.deallocate(p, layout) };
}

/// `System`, plus the byte-wise `zeroize` a secrecy user pays before free.
#[inline(always)]
fn system_zeroize(layout: Layout) {
    let p = System.allocate(layout).expect("allocation failed").cast::<u8>();
    // SAFETY: the block is fresh and at least `layout.size()` bytes long.
    unsafe { p.as_ptr().write_bytes(0xA5, layout.size()) };
    black_box(p);
    // SAFETY: as above; the slice covers the live block only.
    unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), layout.size()) }.zeroize();
    // SAFETY: allocated just above with `layout`, not yet freed.
    unsafe { System.deallocate(p, layout) };
}

fn awf(c: &mut Criterion) {
    let arenas = arenas();
    let zeroize_system = ZeroizeAlloc::new(System);
    let stack_page = SecStackSinglePageAlloc::new().expect("secmem-alloc: one mlocked page");
    let mut g = c.benchmark_group("awf");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).expect("valid layout");
        for (name, arena) in &arenas {
            g.bench_with_input(BenchmarkId::new(*name, size), &layout, |b, &l| b.iter(|| alloc_write_free(arena, l)));
        }
        g.bench_with_input(BenchmarkId::new("System", size), &layout, |b, &l| b.iter(|| alloc_write_free(&System, l)));
        g.bench_with_input(BenchmarkId::new("System+zeroize", size), &layout, |b, &l| b.iter(|| system_zeroize(l)));
        g.bench_with_input(BenchmarkId::new("secmem-ZeroizeAlloc<System>", size), &layout, |b, &l| {
            b.iter(|| alloc_write_free(&zeroize_system, l))
        });
        g.bench_with_input(BenchmarkId::new("secmem-SecStackSinglePageAlloc", size), &layout, |b, &l| {
            b.iter(|| alloc_write_free(&stack_page, l))
        });
    }
    g.finish();
}

/// memsec: guard pages, canary and mlock (or a whole memfd_secret file) per
/// allocation, so tens of µs each; fewer samples keep the run short.
fn awf_slow(c: &mut Criterion) {
    let mut g = c.benchmark_group("awf_slow");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for size in SIZES {
        g.bench_with_input(BenchmarkId::new("memsec-malloc_sized", size), &size, |b, &n| {
            b.iter(|| {
                // SAFETY: memsec's contract: free what malloc_sized returned, once.
                let p = unsafe { memsec::malloc_sized(n) }.expect("memsec malloc_sized").cast::<u8>();
                // SAFETY: the block holds `n` writable bytes.
                unsafe { p.as_ptr().write_bytes(0xA5, n) };
                black_box(p);
                // SAFETY: returned by malloc_sized above, freed once.
                unsafe { memsec::free(p) };
            })
        });
        g.bench_with_input(BenchmarkId::new("memsec-memfd_secret_sized", size), &size, |b, &n| {
            b.iter(|| {
                // SAFETY: memsec's contract: free what memfd_secret_sized returned, once.
                let p = unsafe { memsec::memfd_secret_sized(n) }.expect("memsec memfd_secret_sized").cast::<u8>();
                // SAFETY: the block holds `n` writable bytes.
                unsafe { p.as_ptr().write_bytes(0xA5, n) };
                black_box(p);
                // SAFETY: returned by memfd_secret_sized above, freed once.
                unsafe { memsec::free_memfd_secret(p) };
            })
        });
    }
    g.finish();
}

fn secretbox(c: &mut Criterion) {
    use secret_arena::{ExposeSecret as _, SecretBox};
    let arenas = arenas();
    let mut g = c.benchmark_group("secretbox");
    g.bench_function("secrecy::SecretBox", |b| {
        b.iter(|| {
            let s = secrecy::SecretBox::new(Box::new(black_box([0xA5u8; 32])));
            black_box(s.expose_secret());
        })
    });
    // Until our SecretBox lands: the same 32 bytes boxed in the arena, which
    // wipes on free. This is the floor under our SecretBox.
    for (name, arena) in &arenas {
        g.bench_function(format!("allocator_api2::Box-in-{name}"), |b| {
            b.iter(|| {
                let s = allocator_api2::boxed::Box::new_in(black_box([0xA5u8; 32]), arena);
                black_box(&*s);
            })
        });
    }
    g.bench_function("secret_arena::SecretBox-global", |b| {
        b.iter(|| {
            let s: SecretBox<[u8; 32]> = SecretBox::new(black_box([0xA5u8; 32]));
            black_box(s.expose_secret());
        })
    });
    for (name, arena) in &arenas {
        g.bench_function(format!("secret_arena::SecretBox-in-{name}"), |b| {
            b.iter(|| {
                let s = SecretBox::new_in(black_box([0xA5u8; 32]), arena);
                black_box(s.expose_secret());
            })
        });
    }
    g.finish();
}

/// Grows a `Vec<u8>` one push at a time to 64 KiB: every doubling is a
/// grow (realloc) through the allocator.
#[inline(always)]
fn vec_push<A: Allocator>(a: A) {
    let mut v = allocator_api2::vec::Vec::new_in(a);
    for i in 0..(64 << 10) {
        v.push(i as u8);
    }
    black_box(v.as_ptr());
}

fn vec_push_64k(c: &mut Criterion) {
    let arenas = arenas();
    let mut g = c.benchmark_group("vec_push_64k");
    for (name, arena) in &arenas {
        g.bench_function(*name, |b| b.iter(|| vec_push(arena)));
    }
    g.bench_function("System", |b| b.iter(|| vec_push(System)));
    g.bench_function("secmem-ZeroizeAlloc<System>", |b| b.iter(|| vec_push(ZeroizeAlloc::new(System))));
    g.finish();
}

/// 1,000 distinct 32-byte keys.
fn keys() -> Vec<[u8; 32]> {
    (0..1000u64)
        .map(|i| {
            let mut k = [0u8; 32];
            for (j, w) in k.chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j as u64).to_le_bytes());
            }
            k
        })
        .collect()
}

/// Inserts every key into a fresh map, then removes every key.
#[inline(always)]
fn map_insert_remove<A: Allocator + Clone>(a: A, keys: &[[u8; 32]]) {
    let mut m = hashbrown::HashMap::new_in(a);
    for k in keys {
        m.insert(*k, ());
    }
    for k in keys {
        black_box(m.remove(k));
    }
    black_box(&m);
}

fn hashmap_1000(c: &mut Criterion) {
    let arenas = arenas();
    let keys = keys();
    let mut g = c.benchmark_group("hashmap_1000");
    for (name, arena) in &arenas {
        g.bench_function(*name, |b| b.iter(|| map_insert_remove(arena, &keys)));
    }
    g.bench_function("System", |b| b.iter(|| map_insert_remove(System, &keys)));
    g.finish();
}

criterion_group! {
    name = benches;
    // Modest defaults so `cargo bench` finishes in minutes; override on the
    // command line (e.g. `-- --measurement-time 5`) for a careful run.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50);
    targets = awf, awf_slow, secretbox, vec_push_64k, hashmap_1000
}
criterion_main!(benches);
