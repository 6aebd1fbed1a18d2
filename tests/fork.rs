//! Fork: the arena is `MADV_DONTFORK`, so a child has no mapping there.
//! A child that reads or writes it dies with SIGSEGV, the parent's secret
//! stays as it was, and the parent's arena keeps working.
//!
//! What a child can still do is what any process with ptrace rights over
//! its parent can: write through the kernel (`process_vm_writev`,
//! `/proc/<pid>/mem`). That fails on secret memory and succeeds on the
//! fallback, and the test checks both, so it can see a change when there
//! is one.

mod common;
mod fork_support;

use std::ffi::CString;

use common::{Kind, Sandbox, arena, assert_child_passed, is_child, pattern, read_bytes, secret_block};

const LEN: usize = 64;

/// Runs `child` in a forked child and returns its wait status.
///
/// `child` must only make async-signal-safe calls: the test process has
/// other threads, and the child has only a copy of this one.
fn in_fork(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork has no preconditions; the child only runs `child`, which
    // by contract is async-signal-safe, and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", common::last_errno());
    if pid == 0 {
        // The children are meant to crash: no core files, and the kernel's
        // signal, not a handler inherited from the parent (AddressSanitizer
        // installs one that would turn SIGSEGV into exit code 1).
        let prepared = common::no_core_dumps()
            .and_then(|()| common::default_signal_action(libc::SIGSEGV))
            .and_then(|()| common::default_signal_action(libc::SIGBUS));
        let code = match prepared {
            Ok(()) => child(),
            Err(_) => 65,
        };
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", common::last_errno());
    status
}

/// How a child's write attempt went, as two bits of its exit code.
const OK: i32 = 0;
const EFAULT: i32 = 1;
const EIO: i32 = 2;
const OTHER: i32 = 3;

fn outcome(ret: isize) -> i32 {
    if ret >= 0 {
        return OK;
    }
    // SAFETY: __errno_location returns this thread's errno.
    match unsafe { *libc::__errno_location() } {
        libc::EFAULT => EFAULT,
        libc::EIO => EIO,
        _ => OTHER,
    }
}

fn fork_case(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let addr = block.as_ptr();

    // The child has no mapping at the arena: reading or writing kills it.
    let read = in_fork(|| {
        // SAFETY: deliberately invalid in the child, whose fault is the point.
        let byte = unsafe { addr.read_volatile() };
        i32::from(byte == 0)
    });
    assert!(libc::WIFSIGNALED(read), "a child read the arena and lived: status {read:#x}");
    assert_eq!(libc::WTERMSIG(read), libc::SIGSEGV);
    let write = in_fork(|| {
        // SAFETY: as above.
        unsafe { addr.write_bytes(0xA5, LEN) };
        0
    });
    assert!(libc::WIFSIGNALED(write), "a child wrote the arena and lived: status {write:#x}");
    assert_eq!(libc::WTERMSIG(write), libc::SIGSEGV);
    // SAFETY: the block is live and LEN bytes long.
    assert_eq!(unsafe { read_bytes(addr, LEN) }, pattern(LEN, seed), "a child changed the parent's secret");

    // Through the kernel, into the parent.
    if let Some(reason) = common::ptrace_forbidden(true) {
        common::skip(case, &format!("the child cannot write into its parent through the kernel: {reason}"));
    } else {
        kernel_writes_into_parent(kind, block.as_ptr(), seed);
    }

    // The parent's arena keeps working.
    let more: Vec<_> = (0..100).map(|i| secret_block(&arena, 48, seed ^ i)).collect();
    for (i, p) in more.iter().enumerate() {
        // SAFETY: each block is live and 48 bytes long.
        assert_eq!(unsafe { read_bytes(p.as_ptr(), 48) }, pattern(48, seed ^ i as u64));
    }
    let layout = core::alloc::Layout::from_size_align(48, 8).unwrap();
    // SAFETY: each block came from this arena with this layout, freed once.
    unsafe {
        use allocator_api2::alloc::Allocator;
        for p in more {
            arena.deallocate(p, layout);
        }
        arena.deallocate(block, core::alloc::Layout::from_size_align(LEN, 8).unwrap());
    }
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("invariants, including every free byte zero");
}

/// A child writes into its parent's secret with `process_vm_writev` and
/// through `/proc/<ppid>/mem`: refused on secret memory, landing on the
/// fallback (the control).
fn kernel_writes_into_parent(kind: Kind, addr: *mut u8, seed: u64) {
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    let mem_path = CString::new(format!("/proc/{parent}/mem")).unwrap();
    let junk = [0xA5u8; 8];
    let status = in_fork(|| {
        let local = libc::iovec { iov_base: junk.as_ptr().cast_mut().cast(), iov_len: 8 };
        let remote = libc::iovec { iov_base: addr.cast(), iov_len: 8 };
        // SAFETY: `local` describes `junk`; the kernel checks `remote`.
        let vm = outcome(unsafe { libc::process_vm_writev(parent, &local, 1, &remote, 1, 0) });
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(mem_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return 64;
        }
        // SAFETY: `junk` is 8 readable bytes; `fd` is ours.
        let mem = outcome(unsafe { libc::pwrite(fd, junk.as_ptr().cast(), 8, addr as libc::off_t) });
        vm | (mem << 2)
    });
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_ne!(code, 64, "the child could not open its parent's /proc/<pid>/mem");
    // SAFETY: the block is live and LEN bytes long.
    let now = unsafe { read_bytes(addr, LEN) };
    match kind {
        Kind::Secret => {
            assert_eq!((code & 3, code >> 2), (EFAULT, EIO), "process_vm_writev / /proc/<pid>/mem into secret memory");
            assert_eq!(now, pattern(LEN, seed), "a child changed the parent's secret");
        }
        Kind::Fallback => {
            assert_eq!((code & 3, code >> 2), (OK, OK), "the control's writes failed");
            assert_eq!(now[..8], junk, "the control's writes did not land");
        }
    }
}

#[test]
fn fork_child_cannot_touch_secret() {
    fork_case(this_test!(), Kind::Secret);
}

#[test]
fn fork_child_cannot_touch_fallback() {
    fork_case(this_test!(), Kind::Fallback);
}

/// A program that only ever builds an explicit arena (never the
/// process-wide ones) still gets the fork handlers: in a fork child the
/// arena's range is re-reserved, its descriptor is closed, and using it
/// aborts (the fork line) instead of handing out memory that is not there.
/// Runs in a fresh process, so no other test's arena registers the handlers.
#[test]
fn fork_child_refuses_an_explicit_arena_alone() {
    let case = this_test!();
    if !is_child(case) {
        assert_child_passed(&Sandbox::new(case).run());
        return;
    }
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, Kind::Fallback, 16 << 10) else { return };
    let block = secret_block(&arena, LEN, 9);
    let addr = block.as_ptr() as usize & !4095;
    assert_eq!(common::arena_fds(), 1, "control: the parent holds the arena's descriptor");
    let status = in_fork(|| {
        if !fork_support::reserved(addr) {
            return 80;
        }
        if common::arena_fds() != 0 {
            return 81;
        }
        82
    });
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 82, "80: range not re-reserved; 81: descriptor not closed");
    let status = in_fork(|| {
        let layout = allocator_api2::alloc::Layout::from_size_align(32, 8).unwrap();
        let _ = allocator_api2::alloc::Allocator::allocate(&arena, layout);
        83
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
        "allocating from an inherited arena in a fork child: status {status:#x}"
    );
    // The parent's arena and secret are untouched.
    // SAFETY: the block is live and LEN bytes long.
    assert_eq!(unsafe { read_bytes(block.as_ptr(), LEN) }, pattern(LEN, 9));
}
