//! The arena through allocator-api2's `Allocator`: every method, on small
//! fixed and growable arenas, with pattern checks on every block and
//! `check_invariants` after every action.

#![no_main]

use arbitrary::Arbitrary;
use fuzz_support::{Block, Live, Size, check_pattern, check_zero, fill, layout};
use libfuzzer_sys::fuzz_target;
use secret_arena::allocator_api2::alloc::Allocator;
use secret_arena::{BackingPolicy, SecretArena};

#[derive(Arbitrary, Debug)]
enum Config {
    /// One 16 KiB segment: full quickly.
    Tiny,
    /// One 64 KiB segment.
    Fixed,
    /// 8 KiB growing to 256 KiB: adds segments.
    Growable,
    /// As `Growable`, on the mlocked-memfd fallback.
    GrowableFallback,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Alloc {
        size: Size,
        align: u8,
        zeroed: bool,
    },
    /// `full`: free with the returned length instead of the requested size.
    Free {
        pick: u16,
        full: bool,
    },
    Grow {
        pick: u16,
        by: Size,
        align: u8,
        zeroed: bool,
        full: bool,
    },
    Shrink {
        pick: u16,
        to: u16,
        align: u8,
        full: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    actions: Vec<Action>,
}

fn arena(config: &Config) -> SecretArena {
    let (cap, max, policy) = match config {
        Config::Tiny => (16 << 10, 16 << 10, BackingPolicy::PreferSecret),
        Config::Fixed => (64 << 10, 64 << 10, BackingPolicy::PreferSecret),
        Config::Growable => (8 << 10, 256 << 10, BackingPolicy::PreferSecret),
        Config::GrowableFallback => (8 << 10, 256 << 10, BackingPolicy::ForceFallback),
    };
    SecretArena::builder().capacity(cap).max_capacity(max).policy(policy).build().expect("arena for fuzzing")
}

/// The layout a block may be freed or resized with: anything from the
/// requested size to the returned length fits.
fn fitting(b: &Block, full: bool) -> core::alloc::Layout {
    if full { layout_of(b.len, b.layout.align()) } else { b.layout }
}

fn layout_of(size: usize, align: usize) -> core::alloc::Layout {
    core::alloc::Layout::from_size_align(size, align).expect("valid")
}

fn run(input: &Input) {
    let arena = arena(&input.config);
    let mut live = Live::default();
    for action in input.actions.iter().take(256) {
        step(&arena, &mut live, action);
        // SAFETY: single-threaded here: nothing else uses the arena during the check.
        if let Err(e) = unsafe { arena.check_invariants() } {
            panic!("after {action:?}: {e}");
        }
        let in_use: usize = live.blocks.iter().map(|b| b.len).sum();
        assert_eq!(arena.stats().in_use, in_use, "after {action:?}: stats disagree with the live blocks");
    }
    for b in live.blocks.drain(..) {
        // SAFETY: a live block of `b.len` readable bytes.
        unsafe { check_pattern(b.ptr.as_ptr(), b.len, b.seed, "final free") };
        // SAFETY: allocated by `arena` with a layout that fits.
        unsafe { arena.deallocate(b.ptr, b.layout) };
    }
    // SAFETY: single-threaded here: nothing else uses the arena during the check.
    unsafe { arena.check_invariants() }.expect("invariants after freeing everything");
    assert_eq!(arena.stats().in_use, 0);
}

fn step(arena: &SecretArena, live: &mut Live, action: &Action) {
    match *action {
        Action::Alloc { size, align, zeroed } => {
            if live.full() {
                return;
            }
            let l = layout(size.bytes(), align);
            let r = if zeroed { arena.allocate_zeroed(l) } else { arena.allocate(l) };
            let Ok(p) = r else { return };
            let (ptr, len) = (p.cast::<u8>(), p.len());
            assert!(
                len >= l.size() && (ptr.as_ptr() as usize).is_multiple_of(l.align()),
                "{l:?} got {ptr:p} len {len}"
            );
            // SAFETY: the fresh block is `len` bytes; free memory is always zero.
            unsafe { check_zero(ptr.as_ptr(), 0, len, "fresh block") };
            let seed = live.seed();
            // SAFETY: ours, `len` bytes.
            unsafe { fill(ptr.as_ptr(), len, seed) };
            live.insert(Block { ptr, layout: l, len, seed });
        }
        Action::Free { pick, full } => {
            let Some(b) = live.take(pick) else { return };
            // SAFETY: live, `b.len` bytes.
            unsafe { check_pattern(b.ptr.as_ptr(), b.len, b.seed, "before free") };
            // SAFETY: allocated by `arena`; the layout fits the block.
            unsafe { arena.deallocate(b.ptr, fitting(&b, full)) };
        }
        Action::Grow { pick, by, align, zeroed, full } => {
            let Some(b) = live.take(pick) else { return };
            let old = fitting(&b, full);
            let new = layout(old.size().saturating_add(by.bytes()).min(96 << 10), align);
            // SAFETY: live block, `old` fits it, `new.size() >= old.size()`.
            let r = unsafe { if zeroed { arena.grow_zeroed(b.ptr, old, new) } else { arena.grow(b.ptr, old, new) } };
            resized(live, b, old, new, r, zeroed);
        }
        Action::Shrink { pick, to, align, full } => {
            let Some(b) = live.take(pick) else { return };
            let old = fitting(&b, full);
            let new = layout(to as usize % (old.size() + 1), align);
            // SAFETY: live block, `old` fits it, `new.size() <= old.size()`.
            let r = unsafe { arena.shrink(b.ptr, old, new) };
            resized(live, b, old, new, r, false);
        }
    }
}

/// Checks a resize's result and records the block under its new layout.
fn resized(
    live: &mut Live,
    b: Block,
    old: core::alloc::Layout,
    new: core::alloc::Layout,
    r: Result<core::ptr::NonNull<[u8]>, secret_arena::allocator_api2::alloc::AllocError>,
    zeroed: bool,
) {
    let Ok(p) = r else {
        // Failed: the old block is untouched and still live.
        // SAFETY: still live.
        unsafe { check_pattern(b.ptr.as_ptr(), b.len, b.seed, "after a failed resize") };
        live.insert(b);
        return;
    };
    let (ptr, len) = (p.cast::<u8>(), p.len());
    assert!(len >= new.size() && (ptr.as_ptr() as usize).is_multiple_of(new.align()), "{new:?} got {ptr:p} len {len}");
    let kept = old.size().min(new.size());
    // SAFETY: the new block is `len >= kept` bytes.
    unsafe { check_pattern(ptr.as_ptr(), kept, b.seed, "after resize") };
    if ptr != b.ptr {
        // A move lands in zeroed memory: nothing but the copied bytes.
        // SAFETY: inside the new block.
        unsafe { check_zero(ptr.as_ptr(), kept, len, "moved block") };
    } else if new.size() < old.size() {
        // Shrunk in place: the bytes cut off must have been wiped, whether
        // they are still in the block or went back to the arena.
        // SAFETY: `ptr..ptr + max(len, b.len)` is inside the arena's mapping.
        unsafe { check_zero(ptr.as_ptr(), new.size(), len.max(b.len), "shrunk tail") };
    } else if zeroed {
        // SAFETY: inside the new block.
        unsafe { check_zero(ptr.as_ptr(), old.size(), new.size(), "grow_zeroed bytes") };
    }
    // Refill under a new tag so stale copies are told apart.
    let seed = b.seed.wrapping_add(0x1000_0000);
    // SAFETY: ours, `len` bytes.
    unsafe { fill(ptr.as_ptr(), len, seed) };
    live.insert(Block { ptr, layout: new, len, seed });
}

fuzz_target!(|input: Input| run(&input));
