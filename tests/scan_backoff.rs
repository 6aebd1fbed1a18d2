//! The slow path's back-off (it skips its bounded scan for slabs with room
//! after fruitless ones) must never make the arena carve or grow while an
//! unowned slab of the class has a free chunk: a free into an unowned slab
//! ends the back-off. Both cases failed before that (found in review).

mod common;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use secret_arena::{BackingPolicy, SecretArena};

const SMALL: Layout = match Layout::from_size_align(16, 16) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// Fills the 16-byte class's first slab and takes the first chunk of the
/// second (the slow path disowns the full first slab and scans it in vain,
/// which starts the back-off), then frees one chunk of the first slab, now
/// unowned. Returns how many more allocations exhaust the second slab and
/// need one more chunk.
fn fill_two_slabs_free_one(a: &SecretArena) -> usize {
    let first = a.allocate(SMALL).unwrap().cast::<u8>();
    let mut n = 1;
    loop {
        let p = a.allocate(SMALL).unwrap().cast::<u8>().as_ptr() as usize;
        if p / 4096 != first.as_ptr() as usize / 4096 {
            break;
        }
        n += 1;
    }
    // SAFETY: allocated above with SMALL, freed once.
    unsafe { a.deallocate(first, SMALL) };
    n
}

#[test]
fn a_freed_chunk_of_an_unowned_slab_is_reused_before_growing() {
    let budget = common::budget();
    if !budget.allows(this_test!(), 64 << 10) {
        return;
    }
    let arena = SecretArena::builder()
        .capacity(8 << 10)
        .max_capacity(64 << 10)
        .policy(BackingPolicy::ForceFallback)
        .build()
        .unwrap();
    let n = fill_two_slabs_free_one(&arena);
    let capacity = arena.capacity();
    for _ in 0..n {
        arena.allocate(SMALL).unwrap();
    }
    assert_eq!(arena.stats().classes[0].slabs, 2, "a third slab was carved while the first had a free chunk");
    assert_eq!(arena.capacity(), capacity, "the arena grew while the first slab had a free chunk");
}

#[test]
fn back_off_never_takes_the_page_another_request_needs() {
    let budget = common::budget();
    if !budget.allows(this_test!(), 12 << 10) {
        return;
    }
    // Three pages, no growth: two slabs of the 16-byte class, one free page.
    let arena = SecretArena::builder().capacity(12 << 10).policy(BackingPolicy::ForceFallback).build().unwrap();
    let n = fill_two_slabs_free_one(&arena);
    for _ in 0..n {
        arena.allocate(SMALL).unwrap();
    }
    let page = Layout::from_size_align(4096, 4096).unwrap();
    assert!(arena.allocate(page).is_ok(), "the back-off carved the last page for 16 bytes");
}
