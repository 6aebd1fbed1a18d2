//! The process-wide default arena leaves memlock budget for explicit
//! arenas: under a 64 KiB or 1 MiB `RLIMIT_MEMLOCK` (without
//! `CAP_IPC_LOCK`), one small `SecretBox` makes `global()` take at most a
//! quarter of it, and `SecretArena::new(4096)` afterwards succeeds. The
//! default arena still grows on demand to the rest of the budget.

mod common;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use secret_arena::{ExposeSecret, SecretArena, SecretBox};

use common::{Sandbox, assert_child_passed, is_child};

fn shared(case: &str, limit: usize) {
    if !is_child(case) {
        if let Some(reason) = memlock_unreachable(limit as u64) {
            common::skip(case, &reason);
            return;
        }
        assert_child_passed(&Sandbox::new(case).memlock_limit(limit as u64).run());
        return;
    }
    let budget = secret_arena::memlock_budget();
    assert!(!budget.cap_ipc_lock && budget.limit == Some(limit), "not limited: {budget:?}");
    let secret = SecretBox::new([0x42u8; 32]);
    let global = secret_arena::global().unwrap();
    assert!(global.capacity() <= limit / 4, "global() took {} of {limit}", global.capacity());
    let explicit = SecretArena::new(4096).expect("an explicit arena after a SecretBox");
    let block = explicit.allocate(Layout::new::<[u8; 4096]>()).expect("its 4 KiB");
    assert!(explicit.contains(block.cast::<u8>().as_ptr()));
    // SAFETY: allocated just above with this layout.
    unsafe { explicit.deallocate(block.cast(), Layout::new::<[u8; 4096]>()) };
    drop(explicit);
    // Growth on demand: the default arena reaches the rest of the budget.
    let mut boxes = Vec::new();
    while let Ok(b) = secret_arena::DefaultArena.allocate(Layout::new::<[u8; 1024]>()) {
        boxes.push(b);
        assert!(boxes.len() <= limit / 1024, "more than the budget");
    }
    println!(
        "global() grew to {} of {limit} in {} segments ({} KiB blocks)",
        global.capacity(),
        global.stats().segments,
        boxes.len()
    );
    assert!(global.capacity() > limit / 2, "global() stopped growing at {}", global.capacity());
    assert_eq!(secret.expose_secret()[0], 0x42);
}

#[test]
fn budget_shared_at_64k() {
    shared(this_test!(), 64 << 10);
}

#[test]
fn budget_shared_at_1m() {
    shared(this_test!(), 1 << 20);
}

/// Why a child cannot be given a memlock limit of `limit` bytes: the hard
/// limit is lower and may not be raised here (a normal user at 64 KiB).
fn memlock_unreachable(limit: u64) -> Option<String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_max < limit)
        .then(|| format!("the hard RLIMIT_MEMLOCK is {} bytes, below the {limit} this case needs", lim.rlim_max))
}
