//! Allocator conformance, on both backings: sizes, alignments, zeroing,
//! resizing, exhaustion and misuse.
//!
//! Every test sizes its arenas to the memlock budget it finds
//! ([`common::budget`]), so the file passes as a normal user at 8 MiB and at
//! 64 KiB; where a budget forces a smaller workload, the test says so.

mod common;

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use secret_arena::{Backing, BackingPolicy, SecretArena};

use common::{Budget, budget};

/// The default backing, then the fallback: one at a time, so each may take
/// the whole budget, each of `capacity` bytes or as much as the budget allows.
fn arenas(budget: &Budget, capacity: usize) -> impl Iterator<Item = SecretArena> + '_ {
    [BackingPolicy::PreferSecret, BackingPolicy::ForceFallback].into_iter().map(move |policy| {
        let arena = SecretArena::builder().capacity(budget.fit(capacity)).policy(policy).build().expect("arena");
        if policy == BackingPolicy::ForceFallback {
            assert_eq!(arena.backing(), Backing::MlockedMemfd);
        }
        arena
    })
}

/// One arena of the default backing, of `capacity` bytes or what the budget allows.
fn arena(budget: &Budget, capacity: usize) -> SecretArena {
    SecretArena::new(budget.fit(capacity)).expect("arena")
}

/// Says which part of `case` a small budget leaves out, if any.
fn note_smaller(case: &str, arena: &SecretArena, what: &str, dropped: bool) {
    if dropped {
        common::skip(
            case,
            &format!(
                "{what} left out: above a quarter of the {} arena the memlock budget allows, they do not fit \
                 beside the blocks this test keeps live",
                common::kib(arena.capacity())
            ),
        );
    }
}

/// No two blocks overlap, and each still holds its tag.
fn assert_disjoint_and_intact(live: &[(NonNull<[u8]>, Layout)]) {
    let mut ranges: std::vec::Vec<(usize, usize, u8)> = live
        .iter()
        .filter(|(_, l)| l.size() > 0)
        .map(|(b, _)| (b.as_ptr() as *mut u8 as usize, b.len(), bytes(*b)[0]))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {:x?} and {:x?}", w[0], w[1]);
    }
    for (block, layout) in live {
        if layout.size() > 0 {
            let tag = bytes(*block)[0];
            assert!(bytes(*block).iter().all(|&b| b == tag), "{layout:?} pattern damaged");
        }
    }
}

/// Every invariant of the arena, "every free byte is zero" included.
fn check(arena: &SecretArena) {
    // SAFETY: the tests call this only while no other thread uses `arena`.
    unsafe { arena.check_invariants() }.unwrap();
}

fn bytes<'a>(p: NonNull<[u8]>) -> &'a mut [u8] {
    // SAFETY: a live block of the arena, used by this test alone.
    unsafe { &mut *p.as_ptr() }
}

/// Reads `len` bytes at `p`, even after the block is freed: the arena keeps
/// its memory mapped, so this observes what the allocator left there.
fn peek(p: *const u8, len: usize) -> std::vec::Vec<u8> {
    // SAFETY: `p..p + len` is inside a live mapping of the arena.
    (0..len).map(|i| unsafe { p.add(i).read_volatile() }).collect()
}

#[test]
fn every_size_and_alignment_is_honoured_zeroed_and_disjoint() {
    let budget = budget();
    for arena in arenas(&budget, 8 << 20) {
        let mut live: std::vec::Vec<(NonNull<[u8]>, Layout)> = std::vec::Vec::new();
        let max = arena.capacity() / 4;
        let all = (0..=64).chain((65..=4096).step_by(61)).chain([2048, 2049, 4095, 4096, 4097, 8192, 65536]);
        let sizes: std::vec::Vec<usize> = all.clone().filter(|&s| s <= max).collect();
        note_smaller(this_test!(), &arena, &format!("sizes above {}", common::kib(max)), sizes.len() < all.count());
        for size in sizes {
            for shift in 0..=12 {
                let layout = Layout::from_size_align(size, 1 << shift).unwrap();
                let block = match arena.allocate(layout) {
                    Ok(b) => b,
                    // A small arena fills up: check what it holds, empty it, go on.
                    Err(_) if !live.is_empty() => {
                        assert_disjoint_and_intact(&live);
                        for (block, layout) in live.drain(..) {
                            // SAFETY: allocated above with `layout`, freed once.
                            unsafe { arena.deallocate(block.cast(), layout) };
                        }
                        check(&arena);
                        arena.allocate(layout).expect("room in an empty arena")
                    }
                    Err(_) => panic!("{layout:?} does not fit an empty arena: {:?}", arena.stats()),
                };
                assert!(block.len() >= size, "{layout:?} got {} bytes", block.len());
                assert_eq!(block.as_ptr() as *mut u8 as usize % layout.align(), 0, "{layout:?} misaligned");
                if size > 0 {
                    assert!(arena.contains(block.as_ptr() as *const u8));
                    assert!(bytes(block).iter().all(|&b| b == 0), "{layout:?} not zero on allocate");
                    let tag = (live.len() % 251 + 1) as u8;
                    bytes(block).fill(tag);
                }
                live.push((block, layout));
            }
            // Free some as we go so slabs are reused, not only carved.
            if size % 3 == 0 {
                for (block, layout) in live.drain(..live.len() / 2) {
                    // SAFETY: allocated above with `layout`, freed once.
                    unsafe { arena.deallocate(block.cast(), layout) };
                }
            }
        }
        assert_disjoint_and_intact(&live);
        check(&arena);
        for (block, layout) in live {
            // SAFETY: allocated above with `layout`, freed once.
            unsafe { arena.deallocate(block.cast(), layout) };
        }
        check(&arena);
        assert_eq!(arena.stats().in_use, 0);
    }
}

#[test]
fn freed_memory_is_zero_at_once() {
    let budget = budget();
    for arena in arenas(&budget, 1 << 20) {
        for size in [1, 16, 32, 100, 2048, 4096, 10_000] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let block = arena.allocate(layout).unwrap();
            bytes(block).fill(0xA5);
            let (p, len) = (block.as_ptr() as *const u8, block.len());
            // SAFETY: allocated above, freed once.
            unsafe { arena.deallocate(block.cast(), layout) };
            assert_eq!(peek(p, len), vec![0u8; len], "size {size}: secret left behind after free");
        }
    }
}

#[test]
fn grow_and_shrink_keep_contents_and_wipe_what_they_leave() {
    let budget = budget();
    for arena in arenas(&budget, 4 << 20) {
        // A move needs the old and the new block at once.
        let max = arena.capacity() / 4;
        let all = [1usize, 20, 33, 200, 2000, 3000, 5000, 40_000, 64 << 10];
        let mut sizes: std::vec::Vec<usize> = all.iter().copied().filter(|&s| s <= max).collect();
        note_smaller(this_test!(), &arena, &format!("sizes above {}", common::kib(max)), sizes.len() < all.len());
        let mut layout = Layout::from_size_align(8, 8).unwrap();
        let mut block = arena.allocate(layout).unwrap();
        bytes(block)[..8].copy_from_slice(b"SECRET!!");
        // Up through every regime, then back down.
        let down: std::vec::Vec<usize> = sizes.iter().rev().copied().collect();
        sizes.extend(down);
        for &size in &sizes {
            let new = Layout::from_size_align(size.max(8), 8).unwrap();
            let (old_ptr, old_len) = (block.as_ptr() as *const u8, block.len());
            block = if new.size() >= layout.size() {
                // SAFETY: `block` is live with `layout`.
                unsafe { arena.grow_zeroed(block.cast(), layout, new) }.unwrap()
            } else {
                // SAFETY: as above.
                unsafe { arena.shrink(block.cast(), layout, new) }.unwrap()
            };
            let data = bytes(block);
            assert_eq!(&data[..8], b"SECRET!!", "{} -> {}", layout.size(), new.size());
            if new.size() > layout.size() {
                assert!(data[layout.size()..new.size()].iter().all(|&b| b == 0), "grow_zeroed left garbage");
            }
            let new_ptr = block.as_ptr() as *const u8;
            if new_ptr != old_ptr {
                assert_eq!(peek(old_ptr, old_len), vec![0; old_len], "moved block left a copy behind");
            } else if new.size() < layout.size() {
                let tail = peek(new_ptr.wrapping_add(new.size()), old_len - new.size());
                assert!(tail.iter().all(|&b| b == 0), "shrink in place left the tail");
            }
            // Dirty the whole new block beyond the secret, so later checks mean something.
            data[8..new.size()].fill(0x5A);
            layout = new;
            check(&arena);
        }
        // SAFETY: live with `layout`.
        unsafe { arena.deallocate(block.cast(), layout) };
        check(&arena);
    }
}

#[test]
fn shrink_in_place_wipes_the_rest_of_the_chunk() {
    let budget = budget();
    for arena in arenas(&budget, 64 << 10) {
        // 30 and 20 bytes share the 32-byte class, and 9000 and 5000 bytes are
        // page runs: both shrink in place.
        for (from, to) in [(30usize, 20usize), (9000, 5000)] {
            let old = Layout::from_size_align(from, 8).unwrap();
            let new = Layout::from_size_align(to, 8).unwrap();
            let b = arena.allocate(old).unwrap();
            let len = b.len();
            bytes(b).fill(0xEE);
            // SAFETY: `b` is live with `old`.
            let s = unsafe { arena.shrink(b.cast(), old, new) }.unwrap();
            assert_eq!(s.as_ptr() as *const u8, b.as_ptr() as *const u8, "{from} -> {to} moved");
            let after = peek(s.as_ptr() as *const u8, len);
            assert!(after[..to].iter().all(|&x| x == 0xEE), "{from} -> {to} lost data");
            assert!(after[to..].iter().all(|&x| x == 0), "{from} -> {to} left the tail");
            // SAFETY: `s` is live with `new`.
            unsafe { arena.deallocate(s.cast(), new) };
            check(&arena);
        }
    }
}

#[test]
fn shrink_to_zero_and_grow_from_zero() {
    let budget = budget();
    let arena = arena(&budget, 64 << 10);
    let l0 = Layout::from_size_align(0, 16).unwrap();
    let l64 = Layout::from_size_align(64, 16).unwrap();
    let z = arena.allocate(l0).unwrap();
    assert_eq!(z.len(), 0);
    // SAFETY: `z` is a zero-size block with `l0`.
    let b = unsafe { arena.grow(z.cast(), l0, l64) }.unwrap();
    assert!(arena.contains(b.as_ptr() as *const u8));
    bytes(b).fill(1);
    let p = b.as_ptr() as *const u8;
    // SAFETY: `b` is live with `l64`.
    let z = unsafe { arena.shrink(b.cast(), l64, l0) }.unwrap();
    assert_eq!(z.len(), 0);
    assert_eq!(peek(p, 64), vec![0; 64]);
    // SAFETY: zero-size block.
    unsafe { arena.deallocate(z.cast(), l0) };
    assert_eq!(arena.stats().in_use, 0);
}

#[test]
fn exhaustion_is_an_alloc_error_and_frees_make_room_again() {
    let budget = budget();
    for arena in arenas(&budget, 64 << 10) {
        let cap = arena.capacity();
        let layout = Layout::new::<[u8; 32]>();
        let mut live = std::vec::Vec::new();
        while let Ok(b) = arena.allocate(layout) {
            live.push(b);
            assert!(live.len() <= cap, "more 32-byte chunks than fit");
        }
        // The whole capacity is used by 32-byte chunks (some may be larger
        // fallback classes at the very end).
        assert!(live.len() >= cap / 32 - 256, "only {} chunks fit in {cap} bytes", live.len());
        assert!(arena.allocate(Layout::from_size_align(4096, 8).unwrap()).is_err());
        for b in live.drain(..) {
            // SAFETY: each allocated above with its own layout; we free with a
            // layout that fits it (the chunk may be a larger class).
            unsafe { arena.deallocate(b.cast(), layout) };
        }
        check(&arena);
        // Empty slabs went back to the page pool: one block of almost the
        // whole arena fits again (a shard may keep its current slab).
        assert!(arena.stats().committed <= 4096, "{:?}", arena.stats());
        let big = Layout::from_size_align(cap - 4096, 4096).unwrap();
        let b = arena.allocate(big).expect("freed slabs return their pages");
        // SAFETY: just allocated.
        unsafe { arena.deallocate(b.cast(), big) };
        assert!(arena.allocate(Layout::from_size_align(cap + 4096, 8).unwrap()).is_err(), "larger than the arena");
    }
}

#[test]
fn growable_arena_adds_segments_up_to_its_maximum() {
    let budget = budget();
    let max = budget.fit(256 << 10);
    let case = this_test!();
    if !budget.allows(case, 64 << 10) {
        return;
    }
    let arena = SecretArena::builder().capacity(16 << 10).max_capacity(max).build().unwrap();
    let layout = Layout::from_size_align(1000, 8).unwrap();
    let mut live = std::vec::Vec::new();
    while let Ok(b) = arena.allocate(layout) {
        live.push(b);
    }
    let stats = arena.stats();
    assert!(stats.segments > 1, "{stats:?}");
    assert_eq!(stats.capacity, max, "{stats:?}");
    // 200 blocks of 1000 bytes in 256 KiB, in proportion below.
    assert!(live.len() >= max * 200 / (256 << 10), "{} blocks of 1000 bytes in {max} bytes", live.len());
    check(&arena);
    for b in live {
        // SAFETY: allocated above with `layout`.
        unsafe { arena.deallocate(b.cast(), layout) };
    }
    check(&arena);
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let layout = Layout::new::<u64>();
    let b = arena.allocate(layout).unwrap();
    // Keep another chunk live so the slab is not released in between.
    let _other = arena.allocate(layout).unwrap();
    // SAFETY: first free is valid; the second is the misuse under test.
    unsafe {
        arena.deallocate(b.cast(), layout);
        arena.deallocate(b.cast(), layout);
    }
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_of_a_page_run_panics() {
    let budget = budget();
    let arena = arena(&budget, 64 << 10);
    let layout = Layout::from_size_align(10_000, 8).unwrap();
    let b = arena.allocate(layout).unwrap();
    // SAFETY: first free is valid; the second is the misuse under test.
    unsafe {
        arena.deallocate(b.cast(), layout);
        arena.deallocate(b.cast(), layout);
    }
}

#[test]
#[should_panic(expected = "was not allocated by this arena")]
fn foreign_pointer_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let mut local = 0u64;
    // SAFETY: deliberately broken contract: a pointer the arena never gave.
    unsafe { arena.deallocate(NonNull::from(&mut local).cast(), Layout::new::<u64>()) };
}

#[test]
#[should_panic(expected = "interior pointer")]
fn interior_pointer_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let layout = Layout::new::<[u8; 64]>();
    let b = arena.allocate(layout).unwrap();
    // SAFETY: deliberately broken contract: 8 bytes into a live block.
    unsafe { arena.deallocate(b.cast::<u8>().add(8), Layout::new::<u64>()) };
}

/// The owner's quickest free finds a block in its current slab from the
/// layout's class: an interior pointer freed with a layout of the block's
/// own class must still be refused, 8 bytes in (inside the chunk's first
/// 16-byte granule) and 16 bytes in (a granule where no chunk starts).
#[test]
#[should_panic(expected = "interior pointer")]
fn interior_pointer_into_the_current_slab_with_the_blocks_class_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let b = arena.allocate(Layout::new::<[u8; 64]>()).unwrap();
    // SAFETY: deliberately broken contract: 8 bytes into a live block, with
    // a layout of the block's class (56 bytes round up to the 64-byte class).
    unsafe { arena.deallocate(b.cast::<u8>().add(8), Layout::new::<[u8; 56]>()) };
}

#[test]
#[should_panic(expected = "interior pointer")]
fn granule_inside_a_block_of_the_current_slab_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let b = arena.allocate(Layout::new::<[u8; 64]>()).unwrap();
    // SAFETY: deliberately broken contract: 16 bytes into a live block,
    // with a layout of its class.
    unsafe { arena.deallocate(b.cast::<u8>().add(16), Layout::new::<[u8; 56]>()) };
}

#[test]
#[should_panic(expected = "whose block has only")]
fn oversized_layout_on_free_panics() {
    let budget = budget();
    let arena = arena(&budget, 16 << 10);
    let b = arena.allocate(Layout::new::<[u8; 32]>()).unwrap();
    // SAFETY: deliberately broken contract: a layout larger than the block.
    unsafe { arena.deallocate(b.cast(), Layout::new::<[u8; 4096]>()) };
}

#[test]
fn vec_box_and_hashmap_live_in_the_arena() {
    let budget = budget();
    for arena in arenas(&budget, 1 << 20) {
        // 50,000 bytes and 1,000 keys in 1 MiB, in proportion below.
        let scale = arena.capacity().min(1 << 20);
        let (bytes_n, keys_n) = (scale as u32 / 21, scale as u32 / 1024);
        let mut v: Vec<u8, &SecretArena> = Vec::new_in(&arena);
        for i in 0..bytes_n {
            v.push(i as u8);
        }
        assert!(arena.contains(v.as_ptr()));
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));

        let b = Box::new_in([7u64; 4], &arena);
        assert!(arena.contains(b.as_ptr() as *const u8));

        let mut keys = hashbrown::HashMap::new_in(&arena);
        for i in 0..keys_n {
            keys.insert(format!("key-{i}"), [i as u8; 32]);
        }
        for i in (0..keys_n).step_by(2) {
            keys.remove(&format!("key-{i}"));
        }
        assert_eq!(keys.len() as u32, keys_n / 2);
        let odd = (keys_n / 2) | 1;
        assert_eq!(keys[&format!("key-{odd}")], [odd as u8; 32]);
        drop((v, b, keys));
        check(&arena);
        assert_eq!(arena.stats().in_use, 0);
    }
}

#[test]
fn threads_share_one_arena() {
    let budget = budget();
    let arena = arena(&budget, 8 << 20);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..6u8 {
            let (arena, failed) = (&arena, &failed);
            s.spawn(move || {
                for round in 0..200 {
                    let mut v: Vec<u8, &SecretArena> = Vec::new_in(arena);
                    let n = 1 + (round * 37 + t as usize * 11) % 3000;
                    if v.try_reserve_exact(n).is_err() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    v.resize(n, t + 1);
                    std::thread::yield_now();
                    assert!(v.iter().all(|&b| b == t + 1), "thread {t} saw another's data");
                }
            });
        }
    });
    let failed = failed.into_inner();
    if arena.capacity() == 8 << 20 {
        assert_eq!(failed, 0, "an 8 MiB arena ran full");
    } else if failed > 0 {
        // Six threads each carving slabs of several pages can fill a small
        // arena; what this test proves (no thread sees another's data) holds.
        common::skip(
            this_test!(),
            &format!(
                "\"never full\" needs an 8 MiB arena; the {} one the budget allows ran full {failed} of 1200 times",
                common::kib(arena.capacity())
            ),
        );
    }
    check(&arena);
    assert_eq!(arena.stats().in_use, 0);
}

#[test]
fn default_arena_is_lazy_and_shared() {
    // In a child: the process-wide arena lives as long as its process and
    // would keep its share of the memlock budget from the other tests.
    let case = this_test!();
    if !common::is_child(case) {
        common::assert_child_passed(&common::Sandbox::new(case).run());
        return;
    }
    let a = secret_arena::global().unwrap();
    let b = secret_arena::global().unwrap();
    assert!(std::ptr::eq(a, b));
    let boxed = Box::new_in(*b"0123456789abcdef", secret_arena::DefaultArena);
    assert!(a.contains(boxed.as_ptr()));
}

#[test]
fn zero_capacity_is_an_error() {
    let e = SecretArena::new(0).unwrap_err();
    assert!(matches!(e, secret_arena::Error::InvalidCapacity { requested: 0 }), "{e:?}");
    assert!(e.to_string().contains("must be non-zero"), "{e}");
}

#[test]
fn empty_slabs_owned_by_idle_threads_are_reclaimed_before_failing() {
    // Each thread leaves an (empty) current slab in every class; together
    // they would pin more pages than the arena has.
    let budget = budget();
    let arena = arena(&budget, 1 << 20);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for size in (16..=4096).step_by(16) {
                    let layout = Layout::from_size_align(size, 16).unwrap();
                    let b = arena.allocate(layout).unwrap();
                    // SAFETY: just allocated with `layout`.
                    unsafe { arena.deallocate(b.cast(), layout) };
                }
            });
        }
    });
    assert_eq!(arena.stats().in_use, 0);
    let half = Layout::from_size_align((arena.capacity() / 2) & !4095, 4096).unwrap();
    let b = arena.allocate(half).expect("empty slabs are reclaimed when pages run out");
    // SAFETY: just allocated.
    unsafe { arena.deallocate(b.cast(), half) };
    check(&arena);
}

#[test]
fn shrinking_a_run_on_a_full_arena_cuts_it_in_place() {
    let budget = budget();
    let arena = arena(&budget, 64 << 10);
    let big = Layout::from_size_align(arena.capacity() - 4096, 8).unwrap();
    let b = arena.allocate(big).unwrap();
    let filler = Layout::from_size_align(4096, 4096).unwrap();
    let mut rest = std::vec::Vec::new();
    while let Ok(f) = arena.allocate(filler) {
        rest.push(f);
    }
    bytes(b)[..100].fill(3);
    let small = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: `b` is live with `big`.
    let s = unsafe { arena.shrink(b.cast(), big, small) }.expect("no room to move, so it shrinks in place");
    assert_eq!(s.as_ptr() as *const u8, b.as_ptr() as *const u8);
    assert!(bytes(s)[..100].iter().all(|&x| x == 3));
    assert_eq!(peek(s.as_ptr() as *const u8, 4096)[100..], [0u8; 3996]);
    // SAFETY: live blocks with their layouts.
    unsafe {
        arena.deallocate(s.cast(), small);
        for f in rest {
            arena.deallocate(f.cast(), filler);
        }
    }
    check(&arena);
}
