//! Shared harness for the security and environment tests.
//!
//! - [`Sandbox`] re-executes the current test binary to run one test as a
//!   child process, after a `pre_exec` hook has changed process-wide state:
//!   a seccomp filter for `memfd_secret`, no `CAP_IPC_LOCK`, a small
//!   `RLIMIT_MEMLOCK`, core dumps on. The child knows it is the child through
//!   [`CASE_VAR`] and runs only that test (`--exact`).
//! - [`arena`] builds an arena of a given [`Kind`], or skips (with a printed
//!   reason) where the kernel has no `memfd_secret`.
//! - [`budget`] takes this test binary's turn at the `RLIMIT_MEMLOCK`
//!   budget and sizes arenas to it, so the suite runs as a normal user.
//! - [`vma_containing`] reads `/proc/self/smaps`.
//! - [`fill_pattern`] writes a secret that is computed, not stored, so it
//!   never exists anywhere but where it is written.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use secret_arena::{Backing, BackingPolicy, Errno, Error, SecretArena};

/// Names the test a re-executed child is to run.
pub const CASE_VAR: &str = "SECRET_ARENA_TEST_CASE";
/// When set, a test that would skip for lack of `memfd_secret` fails instead
/// (for CI on machines known to have it).
pub const STRICT_VAR: &str = "SECRET_ARENA_REQUIRE_SECRET";
/// Printed by a child as soon as it starts its case; the parent insists on it,
/// so a misspelt case name cannot pass by running nothing.
pub const CHILD_STARTED: &str = "secret-arena child started:";

/// The enclosing test function's path, as libtest names it (`--exact`).
#[macro_export]
macro_rules! this_test {
    () => {{
        fn f() {}
        let name = std::any::type_name_of_val(&f);
        let name = name.strip_suffix("::f").expect("type name of a nested fn");
        name.split_once("::").map_or(name, |(_crate, path)| path)
    }};
}

/// Whether this process is the re-executed child for `case`; if so, says so
/// on stdout for the parent to check.
pub fn is_child(case: &str) -> bool {
    let me = std::env::var(CASE_VAR).is_ok_and(|c| c == case);
    if me {
        println!("{CHILD_STARTED} {case}");
    }
    me
}

/// Prints why a test did not check anything, where `cargo test` shows it
/// even when it captures output.
/// One `write` per line, so that the line stays whole among libtest's
/// output and `grep -c '^SKIPPED'` counts the skips.
pub fn skip(case: &str, reason: &str) {
    say(&format!("SKIPPED {case}: {reason}"));
}

/// Writes `line` to stderr in one piece, on a line of its own.
pub fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("\n{line}\n").as_bytes());
}

// ----- the memlock budget -----

/// Serializes, within one test binary, the tests that map locked memory
/// while a finite `RLIMIT_MEMLOCK` applies: the budget belongs to the whole
/// process, so tests that run in parallel threads would otherwise take each
/// other's share and fail for no fault of the arena.
static BUDGET_TURN: Mutex<()> = Mutex::new(());

/// A test's turn at the process's memlock budget; see [`budget`].
///
/// Declare it before the arenas it sizes, so that it is dropped after them.
pub struct Budget {
    _turn: Option<MutexGuard<'static, ()>>,
    available: Option<usize>,
}

/// Waits for this test's turn at the memlock budget (only when a finite
/// limit applies: with `CAP_IPC_LOCK` or an unlimited rlimit the tests run
/// in parallel) and reads what is left of it.
pub fn budget() -> Budget {
    let turn =
        secret_arena::memlock_budget().available().map(|_| BUDGET_TURN.lock().unwrap_or_else(PoisonError::into_inner));
    Budget { _turn: turn, available: secret_arena::memlock_budget().available() }
}

impl Budget {
    /// Bytes that may still be locked; `None` when no limit applies.
    pub fn available(&self) -> Option<usize> {
        self.available
    }

    /// `wanted` bytes, or as many whole pages of it as the budget leaves.
    pub fn fit(&self, wanted: usize) -> usize {
        match self.available {
            None => wanted,
            Some(avail) => wanted.min(avail & !(page_size() - 1)),
        }
    }

    /// Whether `needed` bytes of locked memory are left; if not, says why
    /// `case` skips.
    pub fn allows(&self, case: &str, needed: usize) -> bool {
        match self.available {
            Some(avail) if avail < needed => {
                skip(case, &format!("needs {} of locked memory, RLIMIT_MEMLOCK leaves {}", kib(needed), kib(avail)));
                false
            }
            _ => true,
        }
    }
}

/// The largest `RLIMIT_MEMLOCK`, up to `wanted`, that [`Sandbox::memlock_limit`]
/// can give a child: a process without `CAP_SYS_RESOURCE` cannot raise its
/// hard limit, and children inherit it.
pub fn settable_memlock(wanted: usize) -> usize {
    use rustix::thread::{CapabilitySet, capabilities};
    let raise = capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::SYS_RESOURCE));
    let hard = rustix::process::getrlimit(rustix::process::Resource::Memlock).maximum;
    match hard {
        Some(hard) if !raise => wanted.min(usize::try_from(hard).unwrap_or(usize::MAX)),
        _ => wanted,
    }
}

/// Whether the calling test, which uses the process-wide arena, runs in this
/// process. Where a memlock limit applies, it runs in a child of its own
/// instead (and this returns `false` once the child passed): the
/// process-wide arena lives as long as its process and would keep its share
/// of the budget from every test that runs after it.
pub fn runs_here_with_global(case: &str) -> bool {
    if is_child(case) || secret_arena::memlock_budget().available().is_none() {
        return true;
    }
    assert_child_passed(&Sandbox::new(case).run());
    false
}

/// A byte count for messages.
pub fn kib(bytes: usize) -> String {
    if bytes % 1024 == 0 { format!("{} KiB", bytes / 1024) } else { format!("{bytes} bytes") }
}

pub fn page_size() -> usize {
    rustix::param::page_size()
}

// ----- sanitizers -----

/// `ASAN_OPTIONS` for the re-executed children, some of which are meant to
/// fault or dump core: ASan's own SIGSEGV handler would turn the kernel's
/// SIGSEGV into exit code 1, and ASan sets `RLIMIT_CORE` to 0 at start-up
/// unless told not to. Set for every child, built with ASan or not (a binary
/// without it ignores the variable): ASan's runtime exports no symbol that
/// `dlsym` could find, so detecting it would be guesswork, and a child's
/// fault must never be misreported.
pub fn asan_options_for_children() -> String {
    let mut opts = std::env::var("ASAN_OPTIONS").unwrap_or_default();
    for opt in ["handle_segv=0", "handle_sigbus=0", "disable_coredump=0"] {
        if !opts.is_empty() {
            opts.push(':');
        }
        opts.push_str(opt);
    }
    opts
}

/// Gives `signal` its default action in this process: a forked child of an
/// ASan binary inherits ASan's handler, which reports a fault as exit code 1
/// instead of dying by the signal the kernel sent. Async-signal-safe.
pub fn default_signal_action(signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: SIG_DFL is a valid disposition for any catchable signal.
    if unsafe { libc::signal(signal, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Which backing a test wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `memfd_secret`; tests skip where the kernel lacks it.
    Secret,
    /// The mlocked memfd fallback (`BackingPolicy::ForceFallback`): the control.
    Fallback,
}

impl Kind {
    pub fn policy(self) -> BackingPolicy {
        match self {
            Kind::Secret => BackingPolicy::RequireSecret,
            Kind::Fallback => BackingPolicy::ForceFallback,
        }
    }

    pub fn backing(self) -> Backing {
        match self {
            Kind::Secret => Backing::MemfdSecret,
            Kind::Fallback => Backing::MlockedMemfd,
        }
    }

    /// The mapping's path in `/proc/self/smaps` and `/proc/self/fd`.
    pub fn smaps_path(self) -> &'static str {
        match self {
            Kind::Secret => "/secretmem (deleted)",
            Kind::Fallback => "/memfd:secret-arena (deleted)",
        }
    }
}

/// An arena of the given kind, of `capacity` bytes or as many as `budget`
/// leaves; `None` (after printing why) where the kernel gives no
/// `memfd_secret` and `kind` is `Secret`.
///
/// Only `ENOSYS` and `EPERM` count as "not here"; any other error fails.
pub fn arena(case: &str, budget: &Budget, kind: Kind, capacity: usize) -> Option<SecretArena> {
    match SecretArena::builder().capacity(budget.fit(capacity)).policy(kind.policy()).build() {
        Ok(a) => {
            assert_eq!(a.backing(), kind.backing(), "{case}: wrong backing");
            Some(a)
        }
        Err(Error::SecretMemoryUnavailable { errno }) if kind == Kind::Secret => {
            assert!(errno == Errno::NOSYS || errno == Errno::PERM, "{case}: undocumented errno {errno:?}");
            skip_no_secret(case, errno);
            None
        }
        Err(e) => panic!("{case}: building a {kind:?} arena failed: {e}"),
    }
}

/// As [`arena`], with room to grow from `capacity` to `max_capacity`.
pub fn arena_growing(
    case: &str,
    budget: &Budget,
    kind: Kind,
    capacity: usize,
    max_capacity: usize,
) -> Option<SecretArena> {
    let (capacity, max_capacity) = (budget.fit(capacity), budget.fit(max_capacity));
    match SecretArena::builder().capacity(capacity).max_capacity(max_capacity).policy(kind.policy()).build() {
        Ok(a) => {
            assert_eq!(a.backing(), kind.backing(), "{case}: wrong backing");
            Some(a)
        }
        Err(Error::SecretMemoryUnavailable { errno }) if kind == Kind::Secret => {
            skip_no_secret(case, errno);
            None
        }
        Err(e) => panic!("{case}: building a growing {kind:?} arena failed: {e}"),
    }
}

/// Skips a secret-backing case, or fails under [`STRICT_VAR`].
pub fn skip_no_secret(case: &str, errno: Errno) {
    let reason = format!("memfd_secret is not available here ({errno}): nothing to check on secret backing");
    assert!(std::env::var_os(STRICT_VAR).is_none(), "{case}: {STRICT_VAR} is set, but {reason}");
    skip(case, &reason);
}

/// Allocates `len` bytes from `arena`, writes the secret for `seed` into
/// them and returns the block.
pub fn secret_block(arena: &SecretArena, len: usize, seed: u64) -> NonNull<u8> {
    let block = arena.allocate(Layout::from_size_align(len, 8).expect("valid layout")).expect("arena has room");
    let ptr = block.cast::<u8>();
    // SAFETY: the block is live, at least `len` bytes and ours alone.
    unsafe { fill_pattern(ptr.as_ptr(), len, seed) };
    ptr
}

/// The secret for `seed`: pseudo-random bytes that appear nowhere in the
/// binary, so finding them somewhere means they were copied there.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len).map(|_| next_byte(&mut state)).collect()
}

/// Writes [`pattern`]`(len, seed)` to `dst` byte by byte with volatile
/// stores, so no complete copy of it passes through a buffer or a register.
///
/// # Safety
///
/// `dst..dst + len` must be valid for writes.
pub unsafe fn fill_pattern(dst: *mut u8, len: usize, seed: u64) {
    let mut state = seed | 1;
    for i in 0..len {
        // SAFETY: `i < len`, inside the range the caller vouched for.
        unsafe { dst.add(i).write_volatile(next_byte(&mut state)) };
    }
}

fn next_byte(state: &mut u64) -> u8 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
}

/// Reads `len` bytes at `ptr` with volatile loads.
///
/// # Safety
///
/// `ptr..ptr + len` must be valid for reads.
pub unsafe fn read_bytes(ptr: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: `i < len`, inside the range the caller vouched for.
    (0..len).map(|i| unsafe { ptr.add(i).read_volatile() }).collect()
}

/// A seed that differs from run to run and from process to process.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
}

/// The errno of the last failed libc call.
pub fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).expect("an OS error")
}

/// Why this process may not ptrace (or `process_vm_readv`, or open
/// `/proc/<pid>/mem` of) a process: its child (`toward_parent == false`) or
/// its parent. `None` when it may. Only Yama's documented `ptrace_scope`
/// levels are taken into account: 1 allows descendants only, 2 admins only,
/// 3 nobody; `CAP_SYS_PTRACE` (root) passes 1 and 2.
pub fn ptrace_forbidden(toward_parent: bool) -> Option<String> {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?;
    let scope: u32 = scope.trim().parse().ok()?;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let forbidden = match scope {
        0 => false,
        1 => toward_parent && !root,
        2 => !root,
        _ => true,
    };
    forbidden.then(|| format!("Yama ptrace_scope is {scope}, which forbids this (root: {root})"))
}

// ----- /proc/self/smaps -----

/// One mapping of `/proc/self/smaps`.
#[derive(Clone, Debug)]
pub struct Vma {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    /// The path column, empty for anonymous mappings.
    pub path: String,
    pub flags: Vec<String>,
}

impl Vma {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Every mapping of this process.
pub fn vmas() -> Vec<Vma> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut out: Vec<Vma> = Vec::new();
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let vma = out.last_mut().expect("VmFlags after a header");
            vma.flags = flags.split_whitespace().map(str::to_owned).collect();
            continue;
        }
        let mut cols = line.splitn(6, ' ');
        let Some(range) = cols.next() else { continue };
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        let perms = cols.next().unwrap_or_default().to_owned();
        let path = cols.nth(3).unwrap_or_default().trim_start().to_owned();
        out.push(Vma { start, end, perms, path, flags: Vec::new() });
    }
    out
}

/// The mapping that contains `addr`, if any.
pub fn vma_containing(addr: usize) -> Option<Vma> {
    vmas().into_iter().find(|v| v.start <= addr && addr < v.end)
}

// ----- re-executing the test binary -----

/// How to run one test as a child process.
#[derive(Clone, Debug)]
pub struct Sandbox {
    case: String,
    seccomp_errno: Option<i32>,
    memlock: Option<u64>,
    core_dumps: bool,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new(case: &str) -> Sandbox {
        Sandbox {
            case: case.to_owned(),
            seccomp_errno: None,
            memlock: None,
            core_dumps: false,
            dir: None,
            env: Vec::new(),
        }
    }

    /// `memfd_secret` fails with `errno` in the child (a seccomp filter).
    pub fn seccomp_memfd_secret(mut self, errno: i32) -> Sandbox {
        self.seccomp_errno = Some(errno);
        self
    }

    /// The child runs without `CAP_IPC_LOCK` (dropped from the bounding set,
    /// so an exec as root cannot regain it) and with `RLIMIT_MEMLOCK` at
    /// `bytes`, soft and hard.
    pub fn memlock_limit(mut self, bytes: u64) -> Sandbox {
        self.memlock = Some(bytes);
        self
    }

    /// The child may dump core (`RLIMIT_CORE` raised to its hard limit) and
    /// runs in `dir`.
    pub fn core_dumps_in(mut self, dir: PathBuf) -> Sandbox {
        self.core_dumps = true;
        self.dir = Some(dir);
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Sandbox {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// The command that runs the child; stdout and stderr are piped.
    pub fn command(&self) -> Command {
        let exe = std::env::current_exe().expect("current test binary");
        let mut cmd = Command::new(exe);
        cmd.args([self.case.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CASE_VAR, &self.case)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env("ASAN_OPTIONS", asan_options_for_children());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let filter = self.seccomp_errno.map(seccomp_filter);
        let memlock = self.memlock;
        let core_dumps = self.core_dumps;
        let hook = move || {
            if let Some(memlock) = memlock {
                drop_ipc_lock()?;
                set_rlimit(libc::RLIMIT_MEMLOCK, memlock, memlock)?;
            }
            if core_dumps {
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                // SAFETY: `lim` is a valid out-pointer.
                check(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) })?;
                set_rlimit(libc::RLIMIT_CORE, lim.rlim_max, lim.rlim_max)?;
            } else {
                // Children that are meant to crash leave no core files behind.
                no_core_dumps()?;
            }
            if let Some(filter) = &filter {
                install_seccomp(filter)?;
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec and makes only
        // async-signal-safe system calls (prctl, setrlimit, getrlimit); the
        // filter was built before the fork and is only read.
        unsafe { cmd.pre_exec(hook) };
        cmd
    }

    /// Runs the child to the end.
    pub fn run(&self) -> Output {
        let out = self.command().output().expect("spawn the test binary");
        // Shown by `cargo test` when the parent test fails, or with --nocapture.
        println!("--- child {} ({}) stdout:\n{}", self.case, out.status, String::from_utf8_lossy(&out.stdout));
        println!("--- child {} stderr:\n{}", self.case, String::from_utf8_lossy(&out.stderr));
        relay_skips(&out.stderr);
        out
    }
}

/// Passes a child's "SKIPPED" lines on to where `cargo test` shows them.
pub fn relay_skips(child_stderr: &[u8]) {
    for line in String::from_utf8_lossy(child_stderr).lines().filter(|l| l.starts_with("SKIPPED ")) {
        say(line);
    }
}

/// Asserts that the child started its case and its test passed.
pub fn assert_child_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(CHILD_STARTED), "the child never started its case:\n{stdout}");
    assert!(out.status.success(), "the child failed ({}):\n{stdout}\n{}", out.status, stderr(out));
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
}

/// Asserts that the child started its case and was killed by `signal`.
pub fn assert_child_killed_by(out: &Output, signal: i32) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(CHILD_STARTED), "the child never started its case:\n{stdout}");
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "the child should have been killed by signal {signal}, but {}:\n{stdout}\n{}",
        out.status,
        stderr(out)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Sets `RLIMIT_CORE` to 0 (soft), so a crash writes no core file.
/// Async-signal-safe.
pub fn no_core_dumps() -> std::io::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer.
    check(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) })?;
    set_rlimit(libc::RLIMIT_CORE, 0, lim.rlim_max)
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    check(unsafe { libc::setrlimit(resource, &lim) })
}

/// Removes `CAP_IPC_LOCK` from the bounding set, so that executing the test
/// binary as root does not grant it. A process that may not change the
/// bounding set (no `CAP_SETPCAP`) is not root and does not have the
/// capability to begin with; the child checks that it lacks it.
/// `CAP_IPC_LOCK` from `<linux/capability.h>` (libc lacks it).
const CAP_IPC_LOCK: libc::c_ulong = 14;

fn drop_ipc_lock() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) };
    if ret == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: geteuid cannot fail.
    if err.raw_os_error() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 { Ok(()) } else { Err(err) }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Whether [`Sandbox::seccomp_memfd_secret`] knows this architecture.
pub fn seccomp_supported() -> bool {
    AUDIT_ARCH.is_some()
}

/// A classic-BPF seccomp program: `memfd_secret` returns `errno`, every
/// other system call is allowed.
fn seccomp_filter(errno: i32) -> Vec<libc::sock_filter> {
    let arch = AUDIT_ARCH.expect("seccomp_supported() was checked");
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    // struct seccomp_data { int nr; __u32 arch; ... }
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, ARCH),
        jeq(arch, 0, 3),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR),
        jeq(libc::SYS_memfd_secret as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

fn install_seccomp(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) })?;
    // SAFETY: `prog` points to `filter`, which lives across the call; the
    // kernel copies the program.
    check(unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog as *const libc::sock_fprog)
    })
}

/// How many open descriptors are arena backing files (`/secretmem` or the
/// fallback's `/memfd:secret-arena`), without allocating: usable in a fork
/// child, where the heap refuses to.
pub fn arena_fds() -> usize {
    let mut n = 0;
    for fd in 0..4096 {
        let mut path = [0u8; 32];
        let mut len = 0;
        for &b in b"/proc/self/fd/" {
            path[len] = b;
            len += 1;
        }
        let mut digits = [0u8; 8];
        let digits = fd.to_string_in(&mut digits);
        for &b in digits {
            path[len] = b;
            len += 1;
        }
        let mut target = [0u8; 64];
        // SAFETY: `path` is NUL-terminated (zero-filled), `target` writable.
        let r = unsafe { libc::readlink(path.as_ptr().cast(), target.as_mut_ptr().cast(), target.len()) };
        if r > 0 {
            let t = &target[..r as usize];
            n += usize::from(t.starts_with(b"/secretmem") || t.starts_with(b"/memfd:secret-arena"));
        }
    }
    n
}

/// Decimal digits of a small number into a stack buffer.
pub trait ToStringIn {
    fn to_string_in(self, buf: &mut [u8; 8]) -> &[u8];
}

impl ToStringIn for i32 {
    fn to_string_in(self, buf: &mut [u8; 8]) -> &[u8] {
        let mut v = self;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        &buf[i..]
    }
}

/// AddressSanitizer moves locals to fake stacks and pads frames with
/// redzones, so the bytes below a frame are not where an uninstrumented
/// build leaves them: these stack tests prove nothing there. Detected by its
/// shadow memory, terabytes of reserved address space. Says so and returns
/// `true` when the test is to be skipped.
pub fn skipped_under_a_sanitizer(case: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let shadow = maps.lines().find(|l| {
        l.split_whitespace().next().and_then(|r| r.split_once('-')).is_some_and(|(a, b)| {
            let (a, b) = (usize::from_str_radix(a, 16).unwrap_or(0), usize::from_str_radix(b, 16).unwrap_or(0));
            b.saturating_sub(a) > 1 << 40
        })
    });
    if let Some(line) = shadow {
        eprintln!(
            "\nSKIPPED {case}: a sanitizer's shadow memory is mapped ({line}); its instrumented frames leave the stack in another shape"
        );
        return true;
    }
    false
}

/// An allocator over `System` that records the contents of every block it
/// frees: for tests that a secret type wipes its value itself, whatever the
/// allocator.
#[derive(Clone, Default)]
pub struct Recording {
    freed: std::sync::Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recording {
    /// The contents of every block freed so far, in order.
    pub fn freed(&self) -> Vec<Vec<u8>> {
        self.freed.lock().unwrap().clone()
    }
}

// SAFETY: blocks come from `System` with the requested layout and go back to
// it with the same layout; recording only reads the block before freeing.
unsafe impl Allocator for Recording {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        use std::alloc::GlobalAlloc as _;
        assert!(layout.size() > 0, "this test allocator does not do zero-size blocks");
        // SAFETY: non-zero size, checked above.
        let ptr = NonNull::new(unsafe { std::alloc::System.alloc(layout) }).ok_or(allocator_api2::alloc::AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        use std::alloc::GlobalAlloc as _;
        // SAFETY: the caller hands back a live block of `layout.size()` bytes.
        let contents = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), layout.size()) }.to_vec();
        self.freed.lock().unwrap().push(contents);
        // SAFETY: allocated by `System` with this layout.
        unsafe { std::alloc::System.dealloc(ptr.as_ptr(), layout) }
    }
}
