//! Every fatal condition of `SecretGlobalAlloc` prints one line on stderr
//! that names its cause and what to do, and recoverable callers still get
//! null. Also: the process-wide arenas leave memlock budget for explicit
//! arenas.
//!
//! This binary has no libtest (`harness = false`): each case runs in a
//! re-executed child whose first allocation can be the one under test. The
//! child reads its case with `getenv`, which does not allocate.

mod common;

use std::ffi::CStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use common::{CASE_VAR, Sandbox};
use secret_arena::{ExposeSecret, SecretArena, SecretBox, SecretGlobalAlloc};

/// `SecretGlobalAlloc` in the children, whose cases test it; `System` in
/// the parent, which only runs them and reads their output: under the CI's
/// 64 KiB memlock level a harness on the secret heap runs out of budget
/// itself. Decided once, at the process's first allocation, from the
/// environment (read with `getenv`, which does not allocate).
struct ChildOnSecretHeap;

#[global_allocator]
static ALLOC: ChildOnSecretHeap = ChildOnSecretHeap;
static SECRET: SecretGlobalAlloc = SecretGlobalAlloc::new();
/// 0: undecided; 1: `SecretGlobalAlloc` (a child); 2: `System` (the parent).
static MODE: AtomicU8 = AtomicU8::new(0);

fn on_secret_heap() -> bool {
    let mut mode = MODE.load(Ordering::Relaxed);
    if mode == 0 {
        // SAFETY: a NUL-terminated name; getenv neither allocates nor keeps it.
        let child = !unsafe { libc::getenv(c"SECRET_ARENA_TEST_CASE".as_ptr()) }.is_null();
        mode = if child { 1 } else { 2 };
        MODE.store(mode, Ordering::Relaxed);
    }
    mode == 1
}

// SAFETY: every block goes back to the allocator that made it: the choice
// is made before the first allocation and never changes.
unsafe impl GlobalAlloc for ChildOnSecretHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed through.
        unsafe { if on_secret_heap() { SECRET.alloc(layout) } else { System.alloc(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from the same allocator.
        unsafe { if on_secret_heap() { SECRET.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if on_secret_heap() { SECRET.realloc(ptr, layout, new_size) } else { System.realloc(ptr, layout, new_size) }
        }
    }
}

const KIB: u64 = 1024;

fn main() {
    // SAFETY: a NUL-terminated name; the result is read before any setenv.
    let case = unsafe { libc::getenv(c"SECRET_ARENA_TEST_CASE".as_ptr()) };
    if !case.is_null() {
        // SAFETY: getenv returns a NUL-terminated string.
        let case = unsafe { CStr::from_ptr(case) }.to_bytes();
        child(case);
        return;
    }
    let cases: [(&str, fn()); 7] = [
        ("memlock_64k_allocation_names_the_limit", memlock_64k_allocation_names_the_limit),
        ("memlock_64k_try_reserve_recovers", memlock_64k_try_reserve_recovers),
        ("memfd_secret_errors_name_the_kernel_setting", memfd_secret_errors_name_the_kernel_setting),
        ("fd_limit_names_rlimit_nofile", fd_limit_names_rlimit_nofile),
        ("budget_shared_at_64k", || budget_shared(64 * KIB)),
        ("budget_shared_at_1m", || budget_shared(1024 * KIB)),
        ("forked_child_line_without_allocating", forked_child_line_without_allocating),
    ];
    // A panic's backtrace would allocate megabytes of symbol tables on a heap
    // that may be limited; std's OOM hook then waits for the backtrace lock
    // its caller holds. Print the message only.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut failed = 0;
    let mut ran = 0;
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match std::panic::catch_unwind(case) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("\ntest result: {}. {} passed; {failed} failed", if failed == 0 { "ok" } else { "FAILED" }, ran - failed);
    if failed > 0 {
        std::process::exit(101);
    }
}

// ----- the children -----

fn child(case: &[u8]) {
    match case {
        b"memlock_64k_allocation_names_the_limit" => {
            assert_limited(64 * KIB);
            let v: Vec<u8> = Vec::with_capacity(1 << 20);
            println!("allocated {} bytes under a 64 KiB limit", v.capacity());
        }
        b"memlock_64k_try_reserve_recovers" => {
            assert_limited(64 * KIB);
            for i in 0..10 {
                let mut v: Vec<u8> = Vec::new();
                assert!(v.try_reserve(1 << (20 + i % 3)).is_err(), "1 MiB fit under a 64 KiB limit");
            }
            println!("recovered");
        }
        b"memfd_secret_errors_name_the_kernel_setting" => {
            let v = Box::new([1u8; 10]);
            println!("allocated {} bytes without memfd_secret", v.len());
        }
        b"fd_limit_names_rlimit_nofile" => fd_limit_child(),
        b"forked_child_line" => forked_child_line_child(),
        b"budget_shared" => {
            // A 32-byte secret first: the default arena is created for it.
            let secret = SecretBox::new([7u8; 32]);
            let arena = SecretArena::new(4096).expect("an explicit 4 KiB arena after a SecretBox");
            let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(4000, &arena);
            assert!(arena.contains(v.as_ptr()));
            let default = secret_arena::global().unwrap().capacity();
            let heap = SecretGlobalAlloc::arena().unwrap().capacity();
            println!("BUDGET default {default} heap {heap} explicit {}", arena.capacity());
            assert_eq!(secret.expose_secret()[0], 7);
        }
        other => panic!("unknown case {:?}", String::from_utf8_lossy(other)),
    }
}

/// The child really is limited: no `CAP_IPC_LOCK`, the limit set.
fn assert_limited(limit: u64) {
    let budget = secret_arena::memlock_budget();
    assert!(!budget.cap_ipc_lock, "the child still has CAP_IPC_LOCK: {budget:?}");
    assert_eq!(budget.limit, Some(limit as usize), "{budget:?}");
}

/// Fills the fd table, then makes the heap need a descriptor: at its
/// creation if nothing allocated before `main`, else to grow by 64 MiB (or
/// by half of what the memlock budget leaves, so that the fd limit, not the
/// budget, is what stops it).
fn fd_limit_child() {
    let exists = SecretGlobalAlloc::arena().is_some();
    let want = secret_arena::memlock_budget().available().map_or(64 << 20, |avail| avail / 2);
    // SAFETY: dup of stderr; no allocation.
    while unsafe { libc::dup(2) } >= 0 {}
    // SAFETY: errno of this thread.
    assert_eq!(unsafe { *libc::__errno_location() }, libc::EMFILE);
    if !exists {
        let b = Box::new(1u8);
        println!("allocated {b} with a full fd table");
    } else {
        let v: Vec<u8> = Vec::with_capacity(want);
        let msg = b"HEAP-EXISTED grew with a full fd table\n";
        // SAFETY: stdout is fd 1, already open; `msg` is readable.
        unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
        drop(v);
    }
}

// ----- the parent side -----

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect()
}

/// Exactly one line of ours, containing every needle; returns it.
fn our_line(out: &Output, needles: &[&str]) -> String {
    let lines = stderr_lines(out);
    let ours: Vec<&String> = lines.iter().filter(|l| l.starts_with("secret-arena:")).collect();
    assert_eq!(ours.len(), 1, "one line of ours expected, stderr: {lines:#?}");
    for n in needles {
        assert!(ours[0].contains(n), "the line lacks {n:?}: {}", ours[0]);
    }
    ours[0].clone()
}

fn assert_aborted(out: &Output) {
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "status {}, stderr {:?}", out.status, stderr_lines(out));
}

fn memlock_64k_allocation_names_the_limit() {
    let out = Sandbox::new("memlock_64k_allocation_names_the_limit").memlock_limit(64 * KIB).run();
    assert_aborted(&out);
    let line =
        our_line(&out, &["1048576 bytes", "RLIMIT_MEMLOCK", "64 KiB", "ulimit -l", "LimitMEMLOCK=", "CAP_IPC_LOCK"]);
    println!("memlock line: {line}");
    // std's own handler follows, as for any allocation failure.
    assert!(stderr_lines(&out).iter().any(|l| l.contains("memory allocation of 1048576 bytes failed")));
}

fn memlock_64k_try_reserve_recovers() {
    let out = Sandbox::new("memlock_64k_try_reserve_recovers").memlock_limit(64 * KIB).run();
    assert!(out.status.success(), "status {}, stderr {:?}", out.status, stderr_lines(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("recovered"));
    // Ten failures in a row, rate-limited to one line a second: one line,
    // or two if the clock ticked over in between.
    let ours = stderr_lines(&out).iter().filter(|l| l.starts_with("secret-arena:")).count();
    assert!((1..=2).contains(&ours), "{ours} lines for 10 failures: {:?}", stderr_lines(&out));
}

fn memfd_secret_errors_name_the_kernel_setting() {
    if !common::seccomp_supported() {
        common::skip("memfd_secret_errors_name_the_kernel_setting", "no seccomp filter for this architecture");
        return;
    }
    for (errno, name) in [(libc::EACCES, "EACCES"), (libc::EINVAL, "EINVAL"), (libc::ENOMEM, "ENOMEM")] {
        let out = Sandbox::new("memfd_secret_errors_name_the_kernel_setting").seccomp_memfd_secret(errno).run();
        assert_aborted(&out);
        let line = our_line(&out, &["memfd_secret(2) failed", name, "6.5", "secretmem.enable=1"]);
        println!("{name}: {line}");
    }
}

fn fd_limit_names_rlimit_nofile() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CASE_VAR, "fd_limit_names_rlimit_nofile")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let hook = || {
        let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
        // SAFETY: a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        common::no_core_dumps()
    };
    // SAFETY: the hook makes only async-signal-safe calls.
    unsafe { cmd.pre_exec(hook) };
    let out = cmd.output().unwrap();
    println!("fd child: {} {:?} {:?}", out.status, String::from_utf8_lossy(&out.stdout), stderr_lines(&out));
    if String::from_utf8_lossy(&out.stdout).contains("HEAP-EXISTED") {
        // An arena that grows without a new descriptor: nothing fatal left.
        assert!(out.status.success());
        return;
    }
    assert_aborted(&out);
    let line = our_line(&out, &["EMFILE", "RLIMIT_NOFILE is 64", "ulimit -n", "LimitNOFILE="]);
    println!("fd line: {line}");
}

/// At `limit`, under `SecretGlobalAlloc`: a `SecretBox`, then an explicit
/// 4 KiB arena, both fit, and each process-wide arena took at most a
/// quarter of the budget for its first segment.
fn budget_shared(limit: u64) {
    if let Some(reason) = memlock_unreachable(limit) {
        common::skip("budget_shared", &reason);
        return;
    }
    let out = Sandbox::new("budget_shared").memlock_limit(limit).run();
    assert!(out.status.success(), "status {}, stderr {:?}", out.status, stderr_lines(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("BUDGET")).expect("the child reports its arenas");
    println!("at {limit}: {line}");
}

/// The fork line is printed by a child whose heap is read-only: it cannot
/// have allocated to print it.
/// Runs in a re-executed child, on the secret heap (the parent is on
/// `System`): forks, and the fork child's first allocation must abort with
/// the one fork line.
fn forked_child_line_without_allocating() {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CASE_VAR, "forked_child_line")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("fork line: "), "{stdout}");
    print!("{stdout}");
}

fn forked_child_line_child() {
    let probe = Box::new(0u8);
    let heap = SecretGlobalAlloc::arena().expect("the child runs on the secret heap");
    assert!(heap.contains(&*probe as *const u8), "the child's heap is not SecretGlobalAlloc's");
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let v = Box::new([0u8; 100]);
    // SAFETY: the child makes raw calls, then allocates, which aborts.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: descriptor calls only.
        unsafe { libc::dup2(fds[1], 2) };
        let _ = common::no_core_dumps();
        let w = Box::new([1u8; 10]);
        // SAFETY: not reached when the allocation aborts.
        unsafe { libc::_exit(i32::from(w[0]) + v.len() as i32) };
    }
    // SAFETY: ours.
    unsafe { libc::close(fds[1]) };
    let mut status = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let mut buf = [0u8; 2048];
    // SAFETY: `buf` is writable.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    let text = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT, "{status:#x} {text:?}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("fork(2) child") && text.contains("exec"), "{text:?}");
    println!("fork line: {}", text.trim_end());
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
