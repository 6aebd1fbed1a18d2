//! Where `memfd_secret` is refused, with `ENOSYS` (old kernel, disabled) or
//! `EPERM` (a container's seccomp profile), the arena falls back to the
//! mlocked memfd and works, and says so; under `RequireSecret` it fails with
//! a clear error instead. The refusal is made real with a seccomp filter in
//! a child process.

mod common;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use secret_arena::{Backing, BackingPolicy, Errno, Error, SecretArena};

use common::{Sandbox, assert_child_passed, is_child, vma_containing};

fn refused(case: &str, errno: i32) {
    if is_child(case) {
        in_child(errno);
        return;
    }
    if !common::seccomp_supported() {
        common::skip(case, "no seccomp audit arch for this target in the test harness");
        return;
    }
    assert_child_passed(&Sandbox::new(case).seccomp_memfd_secret(errno).run());
}

fn in_child(errno: i32) {
    let errno = Errno::from_raw_os_error(errno);
    assert_eq!(secret_arena::memfd_secret_available(), Err(errno), "the seccomp filter is not in force");

    // The default policy falls back, and says which backing it got. The
    // workload is sized to the memlock budget: 2,000 keys and a 40 KiB run
    // in 256 KiB, in proportion below.
    let budget = common::budget();
    let max = budget.fit(256 << 10);
    let (keys_n, big_len) = (max / 128, (max * 40 / 256) & !4095);
    let arena = SecretArena::builder().capacity(16 << 10).max_capacity(max).build().expect("the fallback should work");
    assert_eq!(arena.backing(), Backing::MlockedMemfd);
    assert_eq!(arena.stats().backing, Backing::MlockedMemfd);

    // It works: small chunks, a page run, growth into further segments.
    let mut keys = AVec::new_in(&arena);
    for i in 0..keys_n {
        let mut key = AVec::with_capacity_in(32, &arena);
        key.extend((0..32).map(|j| (i as u8) ^ j));
        keys.push(key);
    }
    let big_layout = Layout::from_size_align(big_len, 4096).unwrap();
    let big = arena.allocate(big_layout).expect("a page run");
    assert!(arena.stats().segments > 1, "the test should reach growth: {:?}", arena.stats());
    for (i, key) in keys.iter().enumerate() {
        assert!(key.iter().enumerate().all(|(j, &b)| b == (i as u8) ^ j as u8), "key {i} corrupted");
    }
    let vma = vma_containing(keys[keys_n - 1].as_ptr() as usize).expect("mapped");
    assert_eq!(vma.path, "/memfd:secret-arena (deleted)");
    assert!(["lo", "dd", "dc"].iter().all(|f| vma.has_flag(f)), "{vma:?}");
    // SAFETY: `big` came from this arena with this layout and is freed once.
    unsafe { arena.deallocate(big.cast(), big_layout) };
    drop(keys);
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("invariants, including every free byte zero");
    assert_eq!(arena.stats().in_use, 0);
    // Its budget goes back for the process-wide arena.
    drop(arena);

    // The process-wide arena falls back too.
    assert_eq!(secret_arena::global().expect("global arena").backing(), Backing::MlockedMemfd);

    // Requiring secret memory gives a clear error, not a silent downgrade.
    let err = SecretArena::builder().policy(BackingPolicy::RequireSecret).build().expect_err("must refuse");
    assert_eq!(err, Error::SecretMemoryUnavailable { errno });
    let text = err.to_string();
    for needle in ["memfd_secret", "5.14", "secretmem.enable", "seccomp", "PreferSecret"] {
        assert!(text.contains(needle), "error text lacks {needle:?}: {text}");
    }
}

#[test]
fn enosys_falls_back_to_mlocked_memfd() {
    refused(this_test!(), libc::ENOSYS);
}

#[test]
fn eperm_falls_back_to_mlocked_memfd() {
    refused(this_test!(), libc::EPERM);
}

/// Any other error from `memfd_secret` is not "unavailable": the arena must
/// report it, not fall back.
#[test]
fn other_errno_is_an_error_not_a_fallback() {
    let case = this_test!();
    if is_child(case) {
        let err = SecretArena::builder().build().expect_err("EACCES must not fall back");
        assert_eq!(err, Error::Syscall { step: secret_arena::Step::MemfdSecret, errno: Errno::ACCESS });
        return;
    }
    if !common::seccomp_supported() {
        common::skip(case, "no seccomp audit arch for this target in the test harness");
        return;
    }
    assert_child_passed(&Sandbox::new(case).seccomp_memfd_secret(libc::EACCES).run());
}
