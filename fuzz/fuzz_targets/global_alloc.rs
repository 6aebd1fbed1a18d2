//! The `GlobalAlloc` path: `SecretGlobalAlloc`'s methods called directly
//! (it is *not* the fuzzer's global allocator), over the process-wide
//! arena, with pattern checks and `check_invariants` after every action.
//! Every input frees what it allocated, so each starts from an idle arena.

#![no_main]

use core::alloc::GlobalAlloc;
use core::ptr::NonNull;

use arbitrary::Arbitrary;
use fuzz_support::{Block, Live, Size, check_pattern, check_zero, fill, layout};
use libfuzzer_sys::fuzz_target;
use secret_arena::SecretGlobalAlloc;

static ALLOC: SecretGlobalAlloc = SecretGlobalAlloc::new();

/// Largest request and most live blocks: the global arena keeps every page
/// it ever touched, and `check_invariants` scans them all after every
/// action, so a small peak keeps the fuzzer fast.
const MAX_SIZE: usize = 16 << 10;
const MAX_LIVE: usize = 32;

#[derive(Arbitrary, Debug)]
enum Action {
    Alloc { size: Size, align: u8, zeroed: bool },
    Dealloc { pick: u16 },
    Realloc { pick: u16, size: Size },
}

fn step(live: &mut Live, action: &Action) {
    match *action {
        Action::Alloc { size, align, zeroed } => {
            let l = layout(size.bytes().min(MAX_SIZE), align);
            if live.blocks.len() >= MAX_LIVE || l.size() == 0 {
                return; // GlobalAlloc forbids zero-size layouts.
            }
            // SAFETY: `l` has a non-zero size.
            let p = unsafe { if zeroed { ALLOC.alloc_zeroed(l) } else { ALLOC.alloc(l) } };
            let ptr = NonNull::new(p).expect("the global arena grows without limit as root");
            assert_eq!(ptr.as_ptr() as usize % l.align(), 0, "{l:?} got {ptr:p}");
            // SAFETY: `l.size()` bytes; free memory in the arena is zero.
            unsafe { check_zero(ptr.as_ptr(), 0, l.size(), "fresh block") };
            let seed = live.seed();
            // SAFETY: ours.
            unsafe { fill(ptr.as_ptr(), l.size(), seed) };
            live.insert(Block { ptr, layout: l, len: l.size(), seed });
        }
        Action::Dealloc { pick } => {
            let Some(b) = live.take(pick) else { return };
            // SAFETY: live.
            unsafe { check_pattern(b.ptr.as_ptr(), b.len, b.seed, "before dealloc") };
            // SAFETY: from `ALLOC.alloc` with this layout.
            unsafe { ALLOC.dealloc(b.ptr.as_ptr(), b.layout) };
        }
        Action::Realloc { pick, size } => {
            let Some(b) = live.take(pick) else { return };
            let new_size = size.bytes().clamp(1, MAX_SIZE);
            // SAFETY: from `ALLOC.alloc` with `b.layout`; `new_size` is non-zero
            // and far below isize::MAX.
            let p = unsafe { ALLOC.realloc(b.ptr.as_ptr(), b.layout, new_size) };
            let ptr = NonNull::new(p).expect("the global arena grows without limit as root");
            assert_eq!(ptr.as_ptr() as usize % b.layout.align(), 0);
            let kept = b.len.min(new_size);
            // SAFETY: `new_size >= kept` bytes.
            unsafe { check_pattern(ptr.as_ptr(), kept, b.seed, "after realloc") };
            // Past what the owner wrote, the block is zero: a moved block is
            // fresh, a chunk grown in place was zero past its old size, and a
            // block shrunk in place had its tail wiped (the tail is still
            // inside the arena's mapping, so reading it is fine).
            // SAFETY: inside the arena's mapping, as argued above.
            unsafe { check_zero(ptr.as_ptr(), kept, new_size.max(if ptr == b.ptr { b.len } else { 0 }), "realloc") };
            let seed = live.seed();
            // SAFETY: ours.
            unsafe { fill(ptr.as_ptr(), new_size, seed) };
            let l = core::alloc::Layout::from_size_align(new_size, b.layout.align()).expect("valid");
            live.insert(Block { ptr, layout: l, len: new_size, seed });
        }
    }
}

fn check(action: Option<&Action>) {
    // No allocation yet (an empty input): no heap, nothing to check.
    let Some(arena) = SecretGlobalAlloc::arena() else { return };
    // SAFETY: single-threaded here: nothing else uses the arena during the check.
    if let Err(e) = unsafe { arena.check_invariants() } {
        panic!("after {action:?}: {e}");
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let mut live = Live::default();
    for action in actions.iter().take(256) {
        step(&mut live, action);
        check(Some(action));
    }
    for b in live.blocks.drain(..) {
        // SAFETY: live.
        unsafe { check_pattern(b.ptr.as_ptr(), b.len, b.seed, "final dealloc") };
        // SAFETY: from `ALLOC` with this layout.
        unsafe { ALLOC.dealloc(b.ptr.as_ptr(), b.layout) };
    }
    check(None);
    if let Some(arena) = SecretGlobalAlloc::arena() {
        let in_use = arena.stats().in_use;
        assert_eq!(in_use, 0, "the global arena leaks {in_use} bytes after every block was freed");
    }
});
