//! Model-based property tests: random sequences of every `Allocator` method
//! against a model of the live blocks, on two threads: a helper thread
//! allocates and frees some of the blocks, so blocks cross between two
//! threads' heaps (frees into slabs another thread owns, refills from them).
//!
//! Each live block is filled with its own byte pattern over its whole
//! returned length; the pattern is checked before every free and after every
//! move, fresh blocks must be zero (free memory always is), shrunk-off tails
//! must be wiped, blocks must never overlap, `stats().in_use` must equal the
//! model's sum, and `check_invariants()` runs after every operation.
//!
//! The generators must *provably* reach the arena's edge states (bumpalo's
//! lesson: an out-of-bounds write hid in a growth path its property tests
//! never reached). Every run counts what it reached and asserts at the end.
//!
//! `SECRET_ARENA_PROPTEST_CASES=N` sets the number of cases per test (the
//! default keeps `cargo test` fast); `PROPTEST_RNG_SEED` fixes the seed.

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use secret_arena::allocator_api2::alloc::{AllocError, Allocator};
use secret_arena::{BackingPolicy, SecretArena};

mod common;

const PAGE: usize = 4096;
const CLASS_SIZES: [usize; secret_arena::CLASS_COUNT] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792,
    2048, 2560, 3072, 3584, 4096,
];
const MAX_CLASS: usize = 4096;

/// The smallest class that holds `size` bytes at `align`, as the docs
/// describe it; `None` for a page run.
fn class_for(size: usize, align: usize) -> Option<usize> {
    CLASS_SIZES.iter().position(|&c| c >= size && c % align == 0)
}

// ----- generators -----

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
        zeroed: bool,
    },
    /// `n` allocations of one layout in a row: exhausts a class's slab.
    Burst {
        size: usize,
        align: usize,
        n: usize,
    },
    /// `full`: free (or resize) with the returned length instead of the
    /// requested size; both fit the block.
    Free {
        pick: Index,
        full: bool,
    },
    /// `pick: None` grows the newest block, which is often followed by free
    /// pages, so runs grow in place.
    Grow {
        pick: Option<Index>,
        by: usize,
        align: usize,
        zeroed: bool,
        full: bool,
    },
    Shrink {
        pick: Index,
        to: Shrink,
        align: usize,
        full: bool,
    },
    /// An allocation on the helper thread: its own heap and slabs.
    RemoteAlloc {
        size: usize,
        align: usize,
    },
    /// A free on the helper thread: a cross-thread free when the block came
    /// from this thread's slabs, an owner's free when from the helper's.
    RemoteFree {
        pick: Index,
        full: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Shrink {
    Zero,
    Half,
    Random(Index),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        4 => 1..=64usize,
        4 => 65..=MAX_CLASS,
        // Class edges: exactly a class size, one less, one more.
        3 => (0..CLASS_SIZES.len(), -1isize..=1).prop_map(|(c, d)| CLASS_SIZES[c].saturating_add_signed(d)),
        // Page runs: just past the largest class, a few pages, up to 64 KiB.
        2 => MAX_CLASS + 1..=3 * PAGE,
        1 => 3 * PAGE..=64 * 1024,
    ]
}

fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => (0u32..=4).prop_map(|s| 1usize << s),
        2 => (5u32..=11).prop_map(|s| 1usize << s),
        1 => Just(4096usize),
        // Beyond the page: runs placed at aligned addresses.
        1 => (13u32..=16).prop_map(|s| 1usize << s),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (size(), align(), any::<bool>()).prop_map(|(size, align, zeroed)| Op::Alloc { size, align, zeroed }),
        1 => (size(), align(), 2..40usize).prop_map(|(size, align, n)| Op::Burst { size, align, n }),
        3 => (any::<Index>(), any::<bool>()).prop_map(|(pick, full)| Op::Free { pick, full }),
        2 => (proptest::option::weighted(0.7, any::<Index>()), size(), align(), any::<bool>(), any::<bool>())
            .prop_map(|(pick, by, align, zeroed, full)| Op::Grow { pick, by, align, zeroed, full }),
        2 => (
            any::<Index>(),
            prop_oneof![1 => Just(Shrink::Zero), 1 => Just(Shrink::Half), 2 => any::<Index>().prop_map(Shrink::Random)],
            align(),
            any::<bool>()
        )
            .prop_map(|(pick, to, align, full)| Op::Shrink { pick, to, align, full }),
        2 => (size(), align()).prop_map(|(size, align)| Op::RemoteAlloc { size, align }),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(pick, full)| Op::RemoteFree { pick, full }),
    ]
}

// ----- coverage: what the generators reached -----

/// How many times each edge state was reached in one test's run.
#[derive(Default, Debug)]
struct Reached {
    /// `allocate` returned `AllocError`: the arena was full.
    alloc_failed: Cell<usize>,
    /// `grow` or `shrink` returned `AllocError` and left the block alone.
    resize_failed: Cell<usize>,
    /// A class carved a second slab because its first was full.
    class_exhausted: Cell<usize>,
    /// A small request was served by a bigger class: its own was exhausted
    /// and no pages were left for a new slab.
    served_by_bigger_class: Cell<usize>,
    /// A request was served as a run of pages.
    page_run: Cell<usize>,
    /// A chunk grew into another class or a run (moved).
    grow_moved: Cell<usize>,
    /// A run grew in place (the pages after it were free).
    run_grown_in_place: Cell<usize>,
    /// A run shrank in place and gave pages back.
    run_shrunk_in_place: Cell<usize>,
    /// `shrink` to size zero.
    shrink_to_zero: Cell<usize>,
    /// The arena added a segment.
    segment_added: Cell<usize>,
    /// An empty slab went back to the page pool.
    slab_released: Cell<usize>,
    /// A block was allocated on the helper thread.
    remote_alloc: Cell<usize>,
    /// A block allocated on one thread was freed on the other.
    cross_thread_free: Cell<usize>,
}

impl Reached {
    fn bump(c: &Cell<usize>) {
        c.set(c.get() + 1);
    }
}

// ----- the model -----

#[derive(Clone, Copy, Debug)]
struct Block {
    ptr: NonNull<u8>,
    /// The layout it was asked for.
    layout: Layout,
    /// The length the arena returned.
    len: usize,
    seed: u32,
}

impl Block {
    fn layout_for(&self, full: bool) -> Layout {
        if full { Layout::from_size_align(self.len, self.layout.align()).unwrap() } else { self.layout }
    }
}

fn pattern(seed: u32, i: usize) -> u8 {
    let x = seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u32).wrapping_mul(0x85EB_CA6B);
    (x >> 24) as u8 | 1
}

/// The block's bytes `from..to`; the range is inside the arena's mapping.
fn bytes<'a>(ptr: NonNull<u8>, from: usize, to: usize) -> &'a [u8] {
    // SAFETY: callers pass ranges inside a live block, or freed bytes that are
    // still inside the arena's mapping, which outlives this short borrow; no
    // one writes them meanwhile (single thread).
    unsafe { core::slice::from_raw_parts(ptr.as_ptr().add(from), to - from) }
}

fn fill(ptr: NonNull<u8>, len: usize, seed: u32) {
    // SAFETY: `ptr..ptr + len` is a live block this test owns.
    let s = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

fn check_pattern(b: &Block, upto: usize, what: &str) -> Result<(), TestCaseError> {
    if let Some(i) = bytes(b.ptr, 0, upto).iter().enumerate().position(|(i, &x)| x != pattern(b.seed, i)) {
        return Err(TestCaseError::fail(format!("{what}: block {b:?} lost its pattern at byte {i}")));
    }
    Ok(())
}

fn check_zero(ptr: NonNull<u8>, from: usize, to: usize, what: &str) -> Result<(), TestCaseError> {
    if let Some(i) = bytes(ptr, from, to).iter().position(|&x| x != 0) {
        return Err(TestCaseError::fail(format!("{what}: byte {} at {ptr:p} is not zero", from + i)));
    }
    Ok(())
}

/// A job for the helper thread: returns an address and a length.
type Job<'a> = Box<dyn FnOnce() -> (usize, usize) + Send + 'a>;

/// A second thread that runs the model's remote ops one at a time, while
/// the main thread waits: the model stays sequential, but blocks move
/// between two threads' heaps.
struct Helper<'a> {
    jobs: std::sync::mpsc::Sender<Job<'a>>,
    done: std::sync::mpsc::Receiver<(usize, usize)>,
}

impl<'a> Helper<'a> {
    fn run(&self, job: Job<'a>) -> (usize, usize) {
        self.jobs.send(job).expect("helper alive");
        self.done.recv().expect("helper answered")
    }
}

struct Model<'a, 'h> {
    arena: &'a SecretArena,
    helper: &'h Helper<'a>,
    /// Blocks allocated on the helper thread (by address).
    remote: std::collections::HashSet<usize>,
    live: Vec<Block>,
    next_seed: u32,
    reached: &'a Reached,
    slabs: [usize; secret_arena::CLASS_COUNT],
}

impl Model<'_, '_> {
    fn seed(&mut self) -> u32 {
        self.next_seed += 1;
        self.next_seed
    }

    /// Records a new block after checking it against every live one.
    fn insert(&mut self, b: Block) -> Result<(), TestCaseError> {
        prop_assert!(b.ptr.as_ptr() as usize % b.layout.align() == 0, "misaligned: {b:?}");
        prop_assert!(b.len >= b.layout.size(), "too short: {b:?}");
        if b.len > 0 {
            prop_assert!(self.arena.contains(b.ptr.as_ptr()), "outside the arena: {b:?}");
            let (s, e) = (b.ptr.as_ptr() as usize, b.ptr.as_ptr() as usize + b.len);
            for o in self.live.iter().filter(|o| o.len > 0) {
                let (os, oe) = (o.ptr.as_ptr() as usize, o.ptr.as_ptr() as usize + o.len);
                prop_assert!(e <= os || oe <= s, "{b:?} overlaps live {o:?}");
            }
            if b.len > MAX_CLASS || b.layout.align() > MAX_CLASS {
                Reached::bump(&self.reached.page_run);
            } else if class_for(b.layout.size(), b.layout.align()).is_some_and(|c| CLASS_SIZES[c] < b.len) {
                Reached::bump(&self.reached.served_by_bigger_class);
            }
        }
        self.live.push(b);
        Ok(())
    }

    fn take(&mut self, pick: Index) -> Option<Block> {
        (!self.live.is_empty()).then(|| self.live.swap_remove(pick.index(self.live.len())))
    }

    fn take_or_newest(&mut self, pick: Option<Index>) -> Option<Block> {
        match pick {
            Some(pick) => self.take(pick),
            None => self.live.pop(),
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Alloc { size, align, zeroed } => {
                self.alloc(Layout::from_size_align(size, align).unwrap(), zeroed)?;
            }
            Op::Burst { size, align, n } => {
                let layout = Layout::from_size_align(size, align).unwrap();
                for _ in 0..n {
                    if !self.alloc(layout, false)? {
                        break;
                    }
                }
            }
            Op::Free { pick, full } => {
                let Some(b) = self.take(pick) else { return Ok(()) };
                if self.remote.remove(&(b.ptr.as_ptr() as usize)) {
                    Reached::bump(&self.reached.cross_thread_free);
                }
                check_pattern(&b, b.len, "before free")?;
                // SAFETY: a live block of this arena; the layout fits it.
                unsafe { self.arena.deallocate(b.ptr, b.layout_for(full)) };
            }
            Op::Grow { pick, by, align, zeroed, full } => {
                let Some(b) = self.take_or_newest(pick) else { return Ok(()) };
                let old = b.layout_for(full);
                let new = Layout::from_size_align(old.size() + by, align).unwrap();
                // SAFETY: a live block, `old` fits it, `new` is not smaller.
                let r = unsafe {
                    if zeroed { self.arena.grow_zeroed(b.ptr, old, new) } else { self.arena.grow(b.ptr, old, new) }
                };
                self.resized(b, old, new, r, zeroed)?;
            }
            Op::Shrink { pick, to, align, full } => {
                let Some(b) = self.take(pick) else { return Ok(()) };
                let old = b.layout_for(full);
                let size = match to {
                    Shrink::Zero => 0,
                    Shrink::Half => old.size() / 2,
                    Shrink::Random(i) => i.index(old.size() + 1),
                };
                let new = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a live block, `old` fits it, `new` is not larger.
                let r = unsafe { self.arena.shrink(b.ptr, old, new) };
                if size == 0 && r.is_ok() {
                    Reached::bump(&self.reached.shrink_to_zero);
                }
                self.resized(b, old, new, r, false)?;
            }
            Op::RemoteAlloc { size, align } => {
                let layout = Layout::from_size_align(size, align).unwrap();
                let arena = self.arena;
                let (addr, len) = self.helper.run(Box::new(move || match arena.allocate(layout) {
                    Ok(p) => (p.cast::<u8>().as_ptr() as usize, p.len()),
                    Err(_) => (0, 0),
                }));
                let Some(ptr) = NonNull::new(addr as *mut u8) else {
                    Reached::bump(&self.reached.alloc_failed);
                    return Ok(());
                };
                Reached::bump(&self.reached.remote_alloc);
                check_zero(ptr, 0, len, "fresh block from the helper")?;
                let seed = self.seed();
                fill(ptr, len, seed);
                self.remote.insert(addr);
                self.insert(Block { ptr, layout, len, seed })?;
            }
            Op::RemoteFree { pick, full } => {
                let Some(b) = self.take(pick) else { return Ok(()) };
                check_pattern(&b, b.len, "before a free on the helper")?;
                let addr = b.ptr.as_ptr() as usize;
                if !self.remote.remove(&addr) {
                    Reached::bump(&self.reached.cross_thread_free);
                }
                let (arena, layout) = (self.arena, b.layout_for(full));
                self.helper.run(Box::new(move || {
                    // SAFETY: a live block of this arena; the layout fits it.
                    unsafe { arena.deallocate(NonNull::new(addr as *mut u8).unwrap(), layout) };
                    (0, 0)
                }));
            }
        }
        Ok(())
    }

    /// Allocates and fills a block; `false` when the arena is full.
    fn alloc(&mut self, layout: Layout, zeroed: bool) -> Result<bool, TestCaseError> {
        let r = if zeroed { self.arena.allocate_zeroed(layout) } else { self.arena.allocate(layout) };
        let Ok(p) = r else {
            Reached::bump(&self.reached.alloc_failed);
            return Ok(false);
        };
        let (ptr, len) = (p.cast::<u8>(), p.len());
        // Free memory is always zero, so even `allocate` is.
        check_zero(ptr, 0, len, "fresh block")?;
        let seed = self.seed();
        fill(ptr, len, seed);
        self.insert(Block { ptr, layout, len, seed })?;
        Ok(true)
    }

    fn resized(
        &mut self,
        b: Block,
        old: Layout,
        new: Layout,
        r: Result<NonNull<[u8]>, AllocError>,
        zeroed: bool,
    ) -> Result<(), TestCaseError> {
        let Ok(p) = r else {
            Reached::bump(&self.reached.resize_failed);
            check_pattern(&b, b.len, "after a failed resize")?;
            return self.insert(b);
        };
        let (ptr, len) = (p.cast::<u8>(), p.len());
        let kept = old.size().min(new.size());
        let moved = Block { ptr, len, ..b };
        check_pattern(&moved, kept, "after resize")?;
        if ptr != b.ptr {
            if new.size() > old.size() && b.len <= MAX_CLASS && b.len > 0 {
                Reached::bump(&self.reached.grow_moved);
            }
            // A move lands in free, hence zero, memory: only the copy is not.
            check_zero(ptr, kept, len, "moved block")?;
        } else if new.size() < old.size() {
            if len < b.len && b.len > MAX_CLASS {
                Reached::bump(&self.reached.run_shrunk_in_place);
            }
            // Shrunk in place: every byte cut off is wiped, whether it stayed
            // in the block or went back to the arena.
            check_zero(ptr, new.size(), len.max(b.len), "shrunk-off tail")?;
        } else {
            if len > b.len && b.len > MAX_CLASS {
                Reached::bump(&self.reached.run_grown_in_place);
            }
            if zeroed {
                check_zero(ptr, old.size(), new.size(), "grow_zeroed bytes")?;
            }
        }
        let seed = self.seed();
        fill(ptr, len, seed);
        self.insert(Block { ptr, layout: new, len, seed })
    }

    /// Checks the arena against the model and notes what state it is in.
    fn check(&mut self, op: &Op) -> Result<(), TestCaseError> {
        // SAFETY: single-threaded here: nothing else uses the arena during the check.
        if let Err(e) = unsafe { self.arena.check_invariants() } {
            return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
        }
        let stats = self.arena.stats();
        let in_use: usize = self.live.iter().map(|b| b.len).sum();
        prop_assert_eq!(stats.in_use, in_use, "after {:?}: stats disagree with the model", op);
        if stats.segments > 1 {
            Reached::bump(&self.reached.segment_added);
        }
        for (c, cs) in stats.classes.iter().enumerate() {
            // Single-threaded, a class carves a second slab only when the
            // ones it has are full.
            if cs.slabs > self.slabs[c] && cs.slabs >= 2 {
                Reached::bump(&self.reached.class_exhausted);
            }
            if cs.slabs < self.slabs[c] {
                Reached::bump(&self.reached.slab_released);
            }
            self.slabs[c] = cs.slabs;
        }
        Ok(())
    }

    /// Frees everything, checking patterns; the arena must end up idle.
    fn finish(mut self) -> Result<(), TestCaseError> {
        for b in core::mem::take(&mut self.live) {
            check_pattern(&b, b.len, "final free")?;
            // SAFETY: a live block of this arena with the layout it was given.
            unsafe { self.arena.deallocate(b.ptr, b.layout) };
        }
        // SAFETY: single-threaded here: nothing else uses the arena during the check.
        unsafe { self.arena.check_invariants() }.map_err(|e| TestCaseError::fail(format!("after freeing all: {e}")))?;
        prop_assert_eq!(self.arena.stats().in_use, 0);
        Ok(())
    }
}

// ----- runner -----

fn cases(default: u32) -> u32 {
    std::env::var("SECRET_ARENA_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `cases` random op sequences of up to `max_ops` on fresh arenas of
/// `capacity` growing to `max_capacity` (or what the memlock budget leaves);
/// returns what they reached.
fn run(capacity: usize, max_capacity: usize, policy: BackingPolicy, default_cases: u32, max_ops: usize) -> Reached {
    let budget = common::budget();
    let (capacity, max_capacity) = (budget.fit(capacity), budget.fit(max_capacity));
    let config = Config {
        cases: cases(default_cases),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/model.proptest-regressions"))),
        ..Config::default()
    };
    let reached = Reached::default();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..max_ops), |ops| {
        let arena = SecretArena::builder()
            .capacity(capacity)
            .max_capacity(max_capacity)
            .policy(policy)
            .build()
            .expect("test arena");
        std::thread::scope(|s| {
            let (jobs, inbox) = std::sync::mpsc::channel::<Job<'_>>();
            let (reply, done) = std::sync::mpsc::channel();
            s.spawn(move || {
                for job in inbox {
                    reply.send(job()).expect("model alive");
                }
            });
            let helper = Helper { jobs, done };
            let mut model = Model {
                arena: &arena,
                helper: &helper,
                remote: Default::default(),
                live: Vec::new(),
                next_seed: 0,
                reached: &reached,
                slabs: [0; secret_arena::CLASS_COUNT],
            };
            for op in &ops {
                model.apply(*op)?;
                model.check(op)?;
            }
            model.finish()
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("reached: {reached:?}");
    reached
}

fn assert_reached(what: &str, n: &Cell<usize>) {
    assert!(n.get() > 0, "the generators never reached: {what}");
}

/// Four pages, no growth: full after a few requests, so failures, bigger
/// classes standing in, and failed grows are common.
#[test]
fn tiny_fixed_arena_matches_the_model() {
    let r = run(16 << 10, 16 << 10, BackingPolicy::PreferSecret, 128, 120);
    assert_reached("arena full (allocate failed)", &r.alloc_failed);
    assert_reached("resize failed, block kept", &r.resize_failed);
    assert_reached("class exhausted (second slab carved)", &r.class_exhausted);
    assert_reached("request served by a bigger class", &r.served_by_bigger_class);
    assert_reached("page-run allocation", &r.page_run);
    assert_reached("grow moved a chunk", &r.grow_moved);
    assert_reached("shrink to zero", &r.shrink_to_zero);
    assert_reached("empty slab released", &r.slab_released);
    assert_reached("allocation on the helper thread", &r.remote_alloc);
    assert_reached("cross-thread free", &r.cross_thread_free);
}

/// One 64 KiB segment: room for runs to grow and shrink in place.
#[test]
fn fixed_arena_matches_the_model() {
    let r = run(64 << 10, 64 << 10, BackingPolicy::PreferSecret, 96, 200);
    assert_reached("arena full (allocate failed)", &r.alloc_failed);
    assert_reached("class exhausted (second slab carved)", &r.class_exhausted);
    assert_reached("page-run allocation", &r.page_run);
    assert_reached("grow moved a chunk", &r.grow_moved);
    assert_reached("run grown in place", &r.run_grown_in_place);
    assert_reached("run shrunk in place", &r.run_shrunk_in_place);
    assert_reached("shrink to zero", &r.shrink_to_zero);
}

/// 8 KiB growing to 256 KiB: segments are added until the limit, then the
/// arena is full.
#[test]
fn growable_arena_matches_the_model() {
    let r = run(8 << 10, 256 << 10, BackingPolicy::PreferSecret, 96, 200);
    assert_reached("new segment added", &r.segment_added);
    assert_reached("arena full at max_capacity", &r.alloc_failed);
    assert_reached("class exhausted (second slab carved)", &r.class_exhausted);
    assert_reached("page-run allocation", &r.page_run);
    assert_reached("grow moved a chunk", &r.grow_moved);
    assert_reached("shrink to zero", &r.shrink_to_zero);
    assert_reached("cross-thread free", &r.cross_thread_free);
}

/// The same on the mlocked-memfd fallback backing.
#[test]
fn growable_fallback_arena_matches_the_model() {
    let r = run(8 << 10, 128 << 10, BackingPolicy::ForceFallback, 48, 150);
    assert_reached("new segment added", &r.segment_added);
    assert_reached("arena full at max_capacity", &r.alloc_failed);
    assert_reached("page-run allocation", &r.page_run);
}
