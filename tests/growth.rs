//! Growth maps more of the arena's one backing file into its one
//! reservation: it needs no new descriptor, so it works with the descriptor
//! table full (`EMFILE`), and every segment is found in O(1).

mod common;

use allocator_api2::alloc::{Allocator, Layout};
use common::{Kind, Sandbox, arena_growing, assert_child_passed, is_child, secret_block};
use secret_arena::{Error, SecretArena};

/// Fills the descriptor table up to a low `RLIMIT_NOFILE`, then grows an
/// arena by several segments. Control: creating a new arena there fails with
/// `EMFILE`, so the table really is full. Runs in a child: the rlimit and the
/// open descriptors stay there.
fn grow_at_fd_limit(case: &str, kind: Kind) {
    if !is_child(case) {
        assert_child_passed(&Sandbox::new(case).run());
        return;
    }
    // Small steps: the whole run locks 48 KiB, inside a 64 KiB memlock limit.
    let budget = common::budget();
    let Some(arena) = arena_growing(case, &budget, kind, 8 << 10, 48 << 10) else { return };
    let limit = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
    // SAFETY: a valid rlimit struct; lowering our own limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit(RLIMIT_NOFILE)");
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("{case}: open /dev/null: {e}"),
        }
    }
    match SecretArena::builder().capacity(4096).policy(kind.policy()).build() {
        Err(Error::Syscall { errno, .. }) => assert_eq!(errno.raw_os_error(), libc::EMFILE, "control"),
        other => panic!("{case}: control: a new arena at the fd limit gave {other:?}"),
    }
    let before = arena.stats().segments;
    let blocks: Vec<_> = (0..8).map(|i| secret_block(&arena, 4096, i)).collect();
    let after = arena.stats().segments;
    assert!(after >= before + 3, "{case}: grew from {before} to {after} segments only");
    for (i, b) in blocks.iter().enumerate() {
        assert!(arena.contains(b.as_ptr()), "block {i} outside the arena");
        // SAFETY: allocated above with this layout, freed once.
        unsafe { arena.deallocate(*b, Layout::from_size_align(4096, 8).unwrap()) };
    }
    // SAFETY: no other thread uses the arena.
    unsafe { arena.check_invariants() }.expect("arena consistent after growing at the fd limit");
    drop(held);
}

#[test]
fn grows_at_the_fd_limit_secret() {
    grow_at_fd_limit(this_test!(), Kind::Secret);
}

#[test]
fn grows_at_the_fd_limit_fallback() {
    grow_at_fd_limit(this_test!(), Kind::Fallback);
}

/// Blocks in every segment are found and freed, and frees of addresses
/// between blocks, or just past the mapped part of the reservation, are
/// refused: `locate` is a subtraction for all segments.
#[test]
fn every_segment_frees_and_refuses_foreign() {
    let case = this_test!();
    let budget = common::budget();
    let Some(arena) = arena_growing(case, &budget, Kind::Fallback, 4096, 1 << 20) else { return };
    let l = Layout::from_size_align(32, 8).unwrap();
    let big = Layout::from_size_align(8192, 8).unwrap();
    let mut blocks = Vec::new();
    while arena.stats().segments < 6 {
        blocks.push((arena.allocate(big).expect("room").cast::<u8>(), big));
        blocks.push((arena.allocate(l).expect("room").cast::<u8>(), l));
    }
    let end = arena.stats().capacity;
    let past = blocks.iter().map(|(b, _)| b.as_ptr() as usize).min().unwrap() + end + 4096;
    assert!(!arena.contains(past as *const u8));
    for (b, l) in blocks.drain(..) {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { arena.deallocate(b, l) };
    }
    let s = arena.stats();
    // Only this thread's current 32-byte slab stays, empty, for its next
    // allocation.
    assert_eq!(s.in_use, 0, "everything came back: {s:?}");
    assert!(s.committed <= 4096, "only the current slab stays committed: {s:?}");
    // SAFETY: no other thread uses the arena.
    unsafe { arena.check_invariants() }.unwrap();
}

/// Where the address space for `max_capacity` cannot be reserved (here an
/// `RLIMIT_AS` of 8 GiB against a 1 TiB maximum), the arena reserves less,
/// says so in `max_capacity()`, and still grows. Control: a 1 TiB mapping
/// really is refused. Runs in a child, which keeps the rlimit.
#[test]
fn a_maximum_beyond_the_address_space_limit_is_reduced() {
    let case = this_test!();
    if !is_child(case) {
        assert_child_passed(&Sandbox::new(case).run());
        return;
    }
    // 8 GiB more than the process maps already: under AddressSanitizer that
    // is terabytes of shadow memory, which a fixed 8 GiB limit would leave
    // no room beside.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let cap = (vm_kib << 10) + (8 << 30);
    let limit = libc::rlimit { rlim_cur: cap, rlim_max: cap };
    // SAFETY: a valid rlimit struct; lowering our own limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0, "setrlimit(RLIMIT_AS)");
    // SAFETY: an anonymous PROT_NONE mapping aliases nothing; unmapped below.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            1 << 40,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "control: a 1 TiB reservation succeeded under RLIMIT_AS");
    let budget = common::budget();
    let Some(arena) = arena_growing(case, &budget, Kind::Fallback, 8 << 10, 1 << 40) else { return };
    let max = arena.max_capacity();
    assert!((8 << 10..1 << 40).contains(&max), "max_capacity {max:#x}");
    let blocks: Vec<_> = (0..6).map(|i| secret_block(&arena, 4096, i)).collect();
    assert!(arena.stats().segments > 1, "the arena did not grow: {:?}", arena.stats());
    for b in blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { arena.deallocate(b, Layout::from_size_align(4096, 8).unwrap()) };
    }
}
