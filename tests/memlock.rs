//! The memlock budget, as an unprivileged process sees it: each case runs in
//! a child without `CAP_IPC_LOCK` (dropped from the bounding set, so root
//! cannot regain it at exec) and with a small `RLIMIT_MEMLOCK`. As root with
//! the capability, the kernel would skip the limit and these tests would
//! prove nothing; each child checks first that the limit applies.
//!
//! The 1 MiB cases run at a lower limit where this process may not raise its
//! hard `RLIMIT_MEMLOCK` (no `CAP_SYS_RESOURCE`): every size in them is a
//! fraction of the limit, so they prove the same at 64 KiB.

mod common;

use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use secret_arena::{Errno, Error, SecretArena};

use common::{Kind, Sandbox, assert_child_passed, is_child, skip_no_secret};

const MIB: usize = 1 << 20;
/// Tells the child the limit its parent gave it.
const LIMIT_VAR: &str = "SECRET_ARENA_TEST_MEMLOCK";

/// Runs `case` in a child limited to `limit` bytes of locked memory.
fn run_limited(case: &str, limit: usize) -> std::process::Output {
    Sandbox::new(case).memlock_limit(limit as u64).env(LIMIT_VAR, limit).run()
}

/// The limit the parent set for this child.
fn child_limit() -> usize {
    std::env::var(LIMIT_VAR).expect(LIMIT_VAR).parse().expect("a number")
}

/// Checks the child really is limited: no `CAP_IPC_LOCK`, the limit set,
/// nothing locked yet.
fn assert_limited(limit: usize) {
    let budget = secret_arena::memlock_budget();
    assert!(!budget.cap_ipc_lock, "the child still has CAP_IPC_LOCK: {budget:?}");
    assert_eq!(budget.limit, Some(limit), "{budget:?}");
    assert_eq!(budget.available(), Some(limit), "something is locked already: {budget:?}");
}

/// Builds an arena of `kind` under the limit; `Ok(None)` where secret memory
/// is not available (after printing why).
fn build(case: &str, kind: Kind, capacity: usize, max: usize) -> Result<Option<SecretArena>, Error> {
    match SecretArena::builder().capacity(capacity).max_capacity(max).policy(kind.policy()).build() {
        Err(Error::SecretMemoryUnavailable { errno }) if kind == Kind::Secret => {
            assert!(errno == Errno::NOSYS || errno == Errno::PERM, "{errno:?}");
            skip_no_secret(case, errno);
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// The errno each backing documents for "over the budget": `EAGAIN` from
/// `mmap` of secret memory, `ENOMEM` from `mlock2` of the fallback.
fn budget_errno(kind: Kind) -> Errno {
    match kind {
        Kind::Secret => Errno::AGAIN,
        Kind::Fallback => Errno::NOMEM,
    }
}

fn assert_budget_error(err: Error, kind: Kind, requested: usize, available: usize, limit: usize) {
    assert_eq!(
        err,
        Error::MemlockBudget { requested, available: Some(available), limit: Some(limit), errno: budget_errno(kind) }
    );
    let text = err.to_string();
    for needle in ["RLIMIT_MEMLOCK", "ulimit -l", "LimitMEMLOCK=", "CAP_IPC_LOCK"] {
        assert!(text.contains(needle), "error text lacks {needle:?}: {text}");
    }
    println!("{kind:?}: {text}");
}

/// At 1 MiB (or the hard limit, if lower): an arena that fits works; one
/// that does not is refused with the documented error, before and after the
/// first one took its share; the process carries on.
fn fixed(case: &str, kind: Kind) {
    if !is_child(case) {
        assert_child_passed(&run_limited(case, common::settable_memlock(MIB)));
        return;
    }
    let limit = child_limit();
    assert_limited(limit);
    let err = match build(case, kind, 2 * limit, 0) {
        Ok(None) => return,
        Ok(Some(a)) => panic!("an arena of twice the limit was created under it: {:?}", a.stats()),
        Err(e) => e,
    };
    assert_budget_error(err, kind, 2 * limit, limit, limit);

    let half = limit / 2;
    let arena = build(case, kind, half, 0).expect("half the limit fits").expect("checked above");
    let block = common::secret_block(&arena, 1024, 7);
    // SAFETY: the block is live and 1024 bytes long.
    assert_eq!(unsafe { common::read_bytes(block.as_ptr(), 1024) }, common::pattern(1024, 7));

    let err = build(case, kind, 3 * limit / 4, 0).expect_err("three quarters more do not fit");
    assert_budget_error(err, kind, 3 * limit / 4, half, limit);

    // Still running, and the budget is there for what fits.
    let second = build(case, kind, half, 0).expect("the other half fits").expect("checked above");
    common::secret_block(&second, 4096, 8);
    drop(arena);
    drop(second);
    assert_limited(limit);
}

#[test]
fn memlock_1mib_fixed_secret() {
    fixed(this_test!(), Kind::Secret);
}

#[test]
fn memlock_1mib_fixed_fallback() {
    fixed(this_test!(), Kind::Fallback);
}

/// Fills `arena` with 32-byte secrets until it reports `AllocError`, or
/// until it holds more than `limit` bytes of them: then the budget was not
/// enforced, and stopping keeps a broken build from eating the machine.
fn fill(arena: &SecretArena, limit: usize) -> Vec<NonNull<u8>> {
    let layout = Layout::from_size_align(32, 8).unwrap();
    let mut held = Vec::new();
    while held.len() <= limit / 32 {
        let Ok(block) = arena.allocate(layout) else { break };
        let p = block.cast::<u8>();
        // SAFETY: the block is live, ours, and at least 32 bytes.
        unsafe { p.as_ptr().cast::<[u64; 4]>().write_volatile([held.len() as u64; 4]) };
        held.push(p);
    }
    held
}

/// A growable arena with no practical maximum stops at the budget with
/// `AllocError` (not a crash), says why in `last_error`, and keeps working.
fn growable(case: &str, kind: Kind) {
    if !is_child(case) {
        assert_child_passed(&run_limited(case, common::settable_memlock(MIB)));
        return;
    }
    let limit = child_limit();
    assert_limited(limit);
    let Some(arena) = build(case, kind, limit / 16, 1 << 40).expect("a sixteenth fits") else { return };
    let held = fill(&arena, limit);
    let stats = arena.stats();
    println!("{kind:?}: {} secrets of 32 bytes under {limit} bytes, {stats:?}", held.len());
    assert!(held.len() <= limit / 32, "more secrets than the budget holds: {stats:?}");
    assert!(stats.capacity <= limit, "the arena outgrew the budget: {stats:?}");
    assert!(stats.capacity > limit / 2, "the arena stopped well short of the budget: {stats:?}");
    assert!(stats.segments > 1, "the arena never grew: {stats:?}");
    match arena.last_error() {
        Some(Error::MemlockBudget { errno, limit: Some(l), .. }) if l == limit => {
            assert_eq!(errno, budget_errno(kind))
        }
        other => panic!("last_error should be the memlock budget, is {other:?}"),
    }
    for (i, p) in held.iter().enumerate() {
        // SAFETY: each block is live and holds four u64s.
        let got = unsafe { p.as_ptr().cast::<[u64; 4]>().read_volatile() };
        assert_eq!(got, [i as u64; 4], "secret {i} corrupted");
    }
    // Still working: a freed chunk is reused.
    let layout = Layout::from_size_align(32, 8).unwrap();
    // SAFETY: `held[0]` came from this arena with this layout and is freed once.
    unsafe { arena.deallocate(held[0], layout) };
    let again = arena.allocate(layout).expect("a freed chunk is reused");
    // SAFETY: as above, for `again` and the rest of `held`.
    unsafe {
        arena.deallocate(again.cast(), layout);
        for p in &held[1..] {
            arena.deallocate(*p, layout);
        }
    }
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("invariants, including every free byte zero");
}

#[test]
fn memlock_1mib_growable_secret() {
    growable(this_test!(), Kind::Secret);
}

#[test]
fn memlock_1mib_growable_fallback() {
    growable(this_test!(), Kind::Fallback);
}

/// How many 32-byte secrets an unprivileged process with the common 8 MiB
/// limit can hold (memsec's per-allocation memfd_secret path: 512).
fn held_at_8mib(case: &str, kind: Kind) {
    const LIMIT: usize = 8 * MIB;
    if !is_child(case) {
        let settable = common::settable_memlock(LIMIT);
        if settable < LIMIT {
            common::skip(
                case,
                &format!(
                    "the hard RLIMIT_MEMLOCK is {} and this process lacks CAP_SYS_RESOURCE to raise it to 8 MiB; \
                     memlock_1mib_growable_* prove the same fill-the-budget property at {}",
                    common::kib(settable),
                    common::kib(settable)
                ),
            );
            return;
        }
        let out = run_limited(case, LIMIT);
        assert_child_passed(&out);
        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("HELD")) {
            common::say(&format!("{case}: {line}"));
        }
        return;
    }
    assert_limited(LIMIT);
    let Some(arena) = build(case, kind, 64 << 10, 1 << 40).expect("64 KiB fits") else { return };
    let held = fill(&arena, LIMIT);
    let stats = arena.stats();
    println!(
        "HELD {} secrets of 32 bytes in a {kind:?} arena of {} KiB ({} segments)",
        held.len(),
        stats.capacity >> 10,
        stats.segments
    );
    assert!(held.len() <= LIMIT / 32, "more secrets than the budget holds: {stats:?}");
    assert!(held.len() >= 200_000, "only {} secrets of 32 bytes under 8 MiB", held.len());
    assert!(matches!(arena.last_error(), Some(Error::MemlockBudget { .. })), "{:?}", arena.last_error());
    drop(held);
    drop(arena);

    if kind == Kind::Secret {
        // The process-wide arena sizes itself to the budget.
        let global = secret_arena::global().expect("the global arena");
        let held = fill(global, LIMIT);
        println!("HELD {} secrets of 32 bytes in the global() arena ({:?})", held.len(), global.backing());
        assert!(held.len() >= 200_000, "only {} secrets of 32 bytes in global()", held.len());
    }
}

#[test]
fn secrets_held_at_8mib_secret() {
    held_at_8mib(this_test!(), Kind::Secret);
}

#[test]
fn secrets_held_at_8mib_fallback() {
    held_at_8mib(this_test!(), Kind::Fallback);
}
