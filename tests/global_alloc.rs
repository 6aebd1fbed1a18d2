//! This whole test binary, libtest included, runs on `SecretGlobalAlloc`,
//! where the memlock budget can hold it.
//!
//! Every heap allocation of the process lands in the process-wide arena, so
//! the arena has to hold libtest's own allocations as well as the tests'. The
//! tests size their workload to the budget; below [`NEEDED`] bytes of locked
//! memory the binary runs on `System` instead, and every test says it skipped
//! and why. (The decision is made once, before the first allocation, so
//! every block is freed by the allocator that made it.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use secret_arena::SecretGlobalAlloc;

/// Locked memory this binary needs: libtest, its threads and the smallest
/// workload below, in slabs of eight shards. Measured: at an RLIMIT_MEMLOCK
/// of 512 KiB an allocation fails (and the process aborts, as a global
/// allocator must); at 1 MiB everything passes.
const NEEDED: usize = 1 << 20;

const UNDECIDED: u8 = 0;
const SECRET: u8 = 1;
const SYSTEM: u8 = 2;

/// `SecretGlobalAlloc`, or `System` where the budget is below [`NEEDED`].
struct Harness {
    mode: AtomicU8,
    secret: SecretGlobalAlloc,
}

impl Harness {
    fn mode(&self) -> u8 {
        match self.mode.load(Ordering::Acquire) {
            UNDECIDED => {
                // memlock_budget() does not allocate.
                let fits = secret_arena::memlock_budget().available().is_none_or(|a| a >= NEEDED);
                let mode = if fits { SECRET } else { SYSTEM };
                match self.mode.compare_exchange(UNDECIDED, mode, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => mode,
                    Err(decided) => decided,
                }
            }
            decided => decided,
        }
    }
}

// SAFETY: every call goes to one of two sound allocators, the same one for
// the whole life of the process (the mode never changes once decided), so a
// block is always freed or resized by the allocator that made it.
unsafe impl GlobalAlloc for Harness {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `GlobalAlloc::alloc`'s contract.
        unsafe { if self.mode() == SECRET { self.secret.alloc(layout) } else { System.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { if self.mode() == SECRET { self.secret.alloc_zeroed(layout) } else { System.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from the same allocator.
        unsafe { if self.mode() == SECRET { self.secret.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if self.mode() == SECRET {
                self.secret.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Harness = Harness { mode: AtomicU8::new(UNDECIDED), secret: SecretGlobalAlloc::new() };

/// Whether this process runs on the secret arena; if not, says why `case`
/// checks nothing.
fn on_secret_arena(case: &str) -> bool {
    if ALLOC.mode() == SECRET {
        return true;
    }
    let available = secret_arena::memlock_budget().available().unwrap_or(0);
    let line = format!(
        "\nSKIPPED {case}: RLIMIT_MEMLOCK leaves {} KiB, and this binary needs {} KiB of locked memory \
         to put libtest and its tests on SecretGlobalAlloc, so it runs on System\n",
        available >> 10,
        NEEDED >> 10
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// How much of the full workload fits: all of it (8.3 MiB at its peak) with
/// no limit, half at 8 MiB.
fn share() -> f64 {
    match secret_arena::global().expect("global arena").max_capacity() {
        max if max >= 16 << 20 => 1.0,
        max => max as f64 / (16 << 20) as f64,
    }
}

fn in_arena<T: ?Sized>(p: *const T) -> bool {
    SecretGlobalAlloc::arena().expect("the heap exists").contains(p as *const u8)
}

#[test]
fn heap_allocations_land_in_secret_memory() {
    if !on_secret_arena("heap_allocations_land_in_secret_memory") {
        return;
    }
    let s = String::from("hunter2");
    let v = vec![1u64; 1000];
    let b = Box::new([0u8; 10_000]);
    assert!(in_arena(s.as_ptr()) && in_arena(v.as_ptr()) && in_arena(b.as_ptr()));
    let arena = SecretGlobalAlloc::arena().unwrap();
    println!("the global allocator's heap: {:?}", arena);
}

#[test]
fn multithreaded_vec_string_hashmap_workload() {
    if !on_secret_arena("multithreaded_vec_string_hashmap_workload") {
        return;
    }
    // 3,000 entries per thread with room to spare; in proportion below.
    let entries = ((3000.0 * share()) as u32).max(100);
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut map: HashMap<String, Vec<u8>> = HashMap::new();
                for i in 0..entries {
                    let key = format!("t{t}-k{i}");
                    let value = vec![(t as u8).wrapping_add(i as u8); (i as usize * 7) % 700 + 1];
                    map.insert(key, value);
                    if i % 3 == 0 {
                        map.remove(&format!("t{t}-k{}", i / 2));
                    }
                }
                for (k, v) in &map {
                    let i: u32 = k.rsplit('k').next().unwrap().parse().unwrap();
                    assert_eq!(v.len(), (i as usize * 7) % 700 + 1, "{k}");
                    assert!(v.iter().all(|&b| b == (t as u8).wrapping_add(i as u8)), "{k} damaged");
                    assert!(in_arena(v.as_ptr()));
                }
                // Hand the map to another thread to free.
                map
            })
        })
        .collect();
    let maps: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total: usize = maps.iter().map(HashMap::len).sum();
    assert!(total > 8 * entries as usize / 2, "{total}");
    std::thread::spawn(move || drop(maps)).join().unwrap();
    let stats = secret_arena::global().unwrap().stats();
    println!("{entries} entries per thread; peak committed {} KiB", stats.peak_committed >> 10);
}

#[test]
fn realloc_keeps_contents() {
    if !on_secret_arena("realloc_keeps_contents") {
        return;
    }
    let mut s = String::new();
    for i in 0..20_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    assert!(s.bytes().enumerate().all(|(i, b)| b == b'a' + (i % 26) as u8));
    s.truncate(10);
    s.shrink_to_fit();
    assert_eq!(s, "abcdefghij");
    assert!(in_arena(s.as_ptr()));
}
