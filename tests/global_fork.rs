//! `SecretGlobalAlloc` across `fork(2)` and `exec`: this whole test binary,
//! libtest included, runs on it.
//!
//! - Every `std::process::Command` path spawns, while two threads allocate.
//! - A hand-written `fork()` + `execv()` whose argv is on the heap works.
//! - A child that goes on without exec: the heap is read-only there (a write
//!   is SIGSEGV, the parent's bytes stay), its ranges stay reserved, and the
//!   first allocator call aborts with one line that names fork.
//! - `SecretBox`es stay unreadable in the child.
//! - No child hangs in the allocator when another thread allocates at fork.
//!
//! The children make only raw system calls until the step under test.

mod common;
mod fork_support;

use std::ffi::CString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use fork_support::{Churn, assert_fork_abort, errno, in_fork, in_fork_within, maps_perms_at, reserved};
use secret_arena::{ExposeSecret, SecretBox, SecretGlobalAlloc};

#[global_allocator]
static ALLOC: Gate = Gate(AtomicU8::new(UNDECIDED));

/// Spawns per path in `cargo test`; the long run (`--ignored`) does 1,000.
const CI_SPAWNS: usize = 100;

/// Least memlock budget that libtest, the churn threads and the children
/// need on `SecretGlobalAlloc`.
const NEEDED: usize = 4 << 20;

/// `SecretGlobalAlloc`, unless the memlock budget is too small for this
/// test binary to run on it at all (a normal user at 64 KiB): then `System`,
/// and every test prints `SKIPPED`. Decided once, by the first allocation,
/// so every block is freed by the allocator that made it.
struct Gate(AtomicU8);

const UNDECIDED: u8 = 0;
const SECRET: u8 = 1;
const SYSTEM: u8 = 2;

impl Gate {
    fn secret(&self) -> bool {
        match self.0.load(Ordering::Relaxed) {
            UNDECIDED => {
                // Reads /proc/self/status into a stack buffer: no allocation.
                let enough = secret_arena::memlock_budget().available().is_none_or(|a| a >= NEEDED);
                let _ = self.0.compare_exchange(
                    UNDECIDED,
                    if enough { SECRET } else { SYSTEM },
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.0.load(Ordering::Relaxed) == SECRET
            }
            d => d == SECRET,
        }
    }
}

// SAFETY: every call goes to the one allocator chosen before the first
// block was handed out, which made every block this one is given.
unsafe impl std::alloc::GlobalAlloc for Gate {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed through.
        unsafe { if self.secret() { SecretGlobalAlloc::new().alloc(layout) } else { std::alloc::System.alloc(layout) } }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe {
            if self.secret() {
                SecretGlobalAlloc::new().dealloc(ptr, layout)
            } else {
                std::alloc::System.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if self.secret() {
                SecretGlobalAlloc::new().realloc(ptr, layout, new)
            } else {
                std::alloc::System.realloc(ptr, layout, new)
            }
        }
    }
}

/// Whether this binary runs on `SecretGlobalAlloc`; if not, says so.
fn on_secret_heap(case: &str) -> bool {
    if ALLOC.secret() {
        return true;
    }
    let budget = secret_arena::memlock_budget();
    common::skip(
        case,
        &format!(
            "a memlock budget of {:?} bytes is too small to run libtest on SecretGlobalAlloc (needs {NEEDED})",
            budget.available()
        ),
    );
    false
}

fn heap() -> &'static secret_arena::SecretArena {
    SecretGlobalAlloc::arena().expect("the heap exists once anything allocated")
}

// ----- exec after fork -----

/// Spawns `/bin/true` `n` times on each `Command` path while two threads
/// allocate; every spawn must start and exit 0.
fn spawn_every_path(n: usize) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Read by the pre_exec hook in the child: it lives on the heap.
    let marker: Arc<Vec<u8>> = Arc::new(vec![0x5A; 4096]);
    type Make = Box<dyn Fn() -> Command>;
    let paths: Vec<(&str, Make)> = vec![
        ("posix_spawn", Box::new(|| Command::new("/bin/true"))),
        (
            ".uid()",
            Box::new(move || {
                let mut c = Command::new("/bin/true");
                c.uid(uid);
                c
            }),
        ),
        (
            ".gid()",
            Box::new(move || {
                let mut c = Command::new("/bin/true");
                c.gid(gid);
                c
            }),
        ),
        (
            ".pre_exec()",
            Box::new(move || {
                let marker = marker.clone();
                let mut c = Command::new("/bin/true");
                // SAFETY: the hook only reads memory and makes no call.
                unsafe {
                    c.pre_exec(move || {
                        if marker.iter().all(|&b| b == 0x5A) {
                            Ok(())
                        } else {
                            Err(std::io::Error::from_raw_os_error(libc::EBADMSG))
                        }
                    })
                };
                c
            }),
        ),
        (
            ".env(PATH) + bare name",
            Box::new(|| {
                let mut c = Command::new("true");
                c.env("PATH", "/usr/bin:/bin");
                c
            }),
        ),
        (
            ".current_dir()",
            Box::new(|| {
                let mut c = Command::new("/bin/true");
                c.current_dir("/");
                c
            }),
        ),
    ];
    let churn = Churn::start(2);
    let mut failures = Vec::new();
    for (name, make) in &paths {
        let t = Instant::now();
        let mut ok = 0;
        for i in 0..n {
            match make().stdin(Stdio::null()).status() {
                Ok(s) if s.success() => ok += 1,
                Ok(s) => failures.push(format!("{name} #{i}: {s} (signal {:?})", s.signal())),
                Err(e) => failures.push(format!("{name} #{i}: spawn failed: {e}")),
            }
        }
        println!("{name}: {ok} of {n} spawns succeeded in {:.2?}", t.elapsed());
    }
    let allocations = churn.stop();
    println!("the two churn threads made {allocations} allocations meanwhile");
    assert!(
        failures.is_empty(),
        "{} failed spawns, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn every_command_path_spawns() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    spawn_every_path(CI_SPAWNS);
}

/// The proof at full size; about 1,000 spawns × 6 paths.
#[test]
#[ignore = "long: 6,000 spawns; run with --ignored"]
fn every_command_path_spawns_1000() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    spawn_every_path(1000);
}

#[test]
fn fork_then_execv_with_heap_argv() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    // argv and its strings are on the heap, built before the fork.
    let strings: Vec<CString> = ["/bin/sh", "-c", "exit 7"].iter().map(|s| CString::new(*s).unwrap()).collect();
    let mut argv: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    argv.push(core::ptr::null());
    assert!(heap().contains(argv.as_ptr().cast()) && heap().contains(strings[0].as_ptr().cast()));
    let status = in_fork(|| {
        // SAFETY: argv is a null-terminated array of C strings, all alive.
        unsafe { libc::execv(argv[0], argv.as_ptr()) };
        100 + errno()
    });
    assert!(libc::WIFEXITED(status.raw), "status {:#x}", status.raw);
    assert_eq!(libc::WEXITSTATUS(status.raw), 7, "execv failed in the child (100 + errno)");
}

// ----- a child that goes on without exec -----

/// The child sees the heap read-only and still mapped at the same place;
/// its first allocation aborts with one line naming fork.
#[test]
fn child_without_exec_heap_is_read_only_and_reserved_then_allocation_aborts() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let block = vec![0xC3u8; 1000];
    let addr = block.as_ptr() as usize;
    assert!(heap().contains(block.as_ptr()));
    let vma = common::vma_containing(addr).expect("the block is mapped");
    assert!(vma.perms.starts_with("rw") && vma.perms.ends_with('s'), "parent: {:?}", vma);
    assert_eq!(maps_perms_at(addr), Some(*b"rw-s"), "the parser disagrees with smaps");
    let start = vma.start;
    let child = in_fork(|| {
        if maps_perms_at(addr) != Some(*b"r--s") {
            return 10;
        }
        if !reserved(start) || !reserved(addr & !4095) {
            return 11;
        }
        // Reading works: exec needs exactly this.
        // SAFETY: the block is mapped read-only in the child.
        if unsafe { core::ptr::read_volatile(addr as *const u8) } != 0xC3 {
            return 12;
        }
        let b = Box::new(7u64);
        i32::from(*b == 7) + 20
    });
    assert_ne!(libc::WIFEXITED(child.raw).then(|| libc::WEXITSTATUS(child.raw)), Some(10), "heap not r--s in child");
    assert_ne!(libc::WIFEXITED(child.raw).then(|| libc::WEXITSTATUS(child.raw)), Some(11), "range not reserved");
    assert_ne!(libc::WIFEXITED(child.raw).then(|| libc::WEXITSTATUS(child.raw)), Some(12), "child read wrong bytes");
    assert_fork_abort(&child, "Box::new in a fork child");
    assert!(block.iter().all(|&b| b == 0xC3));
}

/// A free in the child (dropping a pre-fork Box) aborts the same way, and a
/// realloc too.
#[test]
fn child_free_and_realloc_abort() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let boxed = Box::new([0x11u8; 64]);
    let child = in_fork(move || {
        drop(boxed);
        30
    });
    assert_fork_abort(&child, "drop in a fork child");
    let mut v = vec![1u8; 100];
    let child = in_fork(move || {
        v.reserve(10_000);
        31
    });
    assert_fork_abort(&child, "realloc in a fork child");
}

/// The trap: the heap is the parent's live `MAP_SHARED` memory. A child's
/// write must fault, never reach the parent.
#[test]
fn child_write_into_heap_faults_and_parent_keeps_its_bytes() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let block = vec![0x3Cu8; 4096];
    let addr = block.as_ptr() as usize;
    let child = in_fork(|| {
        // SAFETY: deliberately wrong in the child: the fault is the point.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0xEE, 4096) };
        40
    });
    assert!(
        libc::WIFSIGNALED(child.raw) && libc::WTERMSIG(child.raw) == libc::SIGSEGV,
        "the child's write should fault: status {:#x}",
        child.raw
    );
    assert!(block.iter().all(|&b| b == 0x3C), "a child's write reached the parent's heap");
}

/// `SecretBox` (the default arena) is not inherited: reading it is SIGSEGV,
/// its range is re-reserved `PROT_NONE` in the child, and allocating a new
/// one aborts with the fork line instead of hanging or aliasing.
#[test]
fn secret_box_stays_unreadable_in_child() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let secret = SecretBox::new([0x77u8; 32]);
    let addr = secret.expose_secret().as_ptr() as usize;
    assert!(!heap().contains(addr as *const u8), "a SecretBox must not live on the heap");
    let read = in_fork(|| {
        // SAFETY: deliberately wrong in the child.
        i32::from(unsafe { core::ptr::read_volatile(addr as *const u8) } == 0x77) + 50
    });
    assert!(
        libc::WIFSIGNALED(read.raw) && libc::WTERMSIG(read.raw) == libc::SIGSEGV,
        "a child read a SecretBox: status {:#x}",
        read.raw
    );
    let arena = secret_arena::global().unwrap();
    let seg = common::vma_containing(addr).expect("mapped in the parent").start;
    let child = in_fork(|| {
        if maps_perms_at(seg) != Some(*b"---p") || !reserved(seg) {
            return 60;
        }
        let fresh = arena.stats().capacity; // reads metadata only
        let b = SecretBox::new([fresh as u8; 8]);
        i32::from(b.expose_secret()[0] == 0) + 61
    });
    assert_ne!(libc::WIFEXITED(child.raw).then(|| libc::WEXITSTATUS(child.raw)), Some(60), "not re-reserved");
    assert!(
        libc::WIFSIGNALED(child.raw) && libc::WTERMSIG(child.raw) == libc::SIGABRT,
        "SecretBox::new in a child: status {:#x}, {:?}",
        child.raw,
        child.stderr
    );
    assert!(child.stderr.contains("fork"), "{:?}", child.stderr);
    assert_eq!(secret.expose_secret(), &[0x77; 32]);
}

/// An explicit arena is not inherited either, and its whole reservation
/// (guard pages included) is re-reserved `PROT_NONE` in the child, found
/// through the process-wide mapping registry: nothing the child maps can
/// land where the parent's pointers into it point.
#[test]
fn explicit_arena_is_re_reserved_in_child() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let arena = secret_arena::SecretArena::new(16 << 10).expect("a 16 KiB arena");
    let secret = allocator_api2::boxed::Box::new_in([0x5Au8; 32], &arena);
    let addr = secret.as_ptr() as usize;
    let seg = common::vma_containing(addr).expect("mapped in the parent");
    let (start, end) = (seg.start, seg.end);
    assert!(common::arena_fds() >= 1, "control: the parent holds its arenas' descriptors");
    let child = in_fork(|| {
        // The data pages, and the guard page on each side.
        for probe in [start - 4096, start, end - 4096, end] {
            if maps_perms_at(probe) != Some(*b"---p") || !reserved(probe) {
                return 70;
            }
        }
        // No backing file descriptor survives into the child: it could map
        // the parent's secret files with one.
        if common::arena_fds() != 0 {
            return 72;
        }
        71
    });
    assert_eq!(
        libc::WIFEXITED(child.raw).then(|| libc::WEXITSTATUS(child.raw)),
        Some(71),
        "an explicit arena's range was not re-reserved, or its descriptor not closed, in the child \
         (70: range, 72: descriptor): status {:#x}, {:?}",
        child.raw,
        child.stderr
    );
    assert_eq!(*secret, [0x5A; 32]);
}

// ----- no child hangs -----

/// Forks `n` times while another thread allocates in a tight loop; each
/// child allocates. Returns (hung, aborted with the fork line, other).
fn fork_while_allocating(n: usize) -> (usize, usize, Vec<String>) {
    let churn = Churn::start(1);
    let (mut hung, mut aborted, mut other) = (0, 0, Vec::new());
    for i in 0..n {
        match in_fork_within(Duration::from_secs(5), || {
            let v = vec![i as u8; 100 + i];
            i32::from(v[0] == i as u8)
        }) {
            None => hung += 1,
            Some(c) if libc::WIFSIGNALED(c.raw) && libc::WTERMSIG(c.raw) == libc::SIGABRT => {
                if c.stderr.lines().count() == 1 && c.stderr.contains("fork") {
                    aborted += 1;
                } else {
                    other.push(format!("#{i}: aborted with {:?}", c.stderr));
                }
            }
            Some(c) => other.push(format!("#{i}: status {:#x}, {:?}", c.raw, c.stderr)),
        }
    }
    churn.stop();
    (hung, aborted, other)
}

/// The proof: 200 forks while another thread allocates; every child
/// ends within 5 s (here: aborting with the fork line on its allocation).
#[test]
fn no_child_hangs_when_forking_during_allocation() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let n = 200;
    let t = Instant::now();
    let (hung, aborted, other) = fork_while_allocating(n);
    println!("{n} forks in {:.2?}: {hung} hung, {aborted} aborted with the fork line", t.elapsed());
    assert_eq!(hung, 0, "{hung} of {n} children hung in the allocator");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(aborted, n);
}

// ----- zero-copy I/O -----

/// `vmsplice` pins the pages it is given; secret memory cannot be pinned,
/// so zero-copy I/O from a heap buffer fails with `EFAULT` (the
/// documented consequence of putting the heap in secret memory).
#[test]
fn zero_copy_io_from_heap_is_efault() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let buf = vec![0x61u8; 4096];
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let iov = libc::iovec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, alive across the call; the fd is ours.
    let n = unsafe { libc::vmsplice(fds[1], &iov, 1, 0) };
    let err = errno();
    // SAFETY: ours.
    unsafe { (libc::close(fds[0]), libc::close(fds[1])) };
    match heap().backing() {
        secret_arena::Backing::MemfdSecret => {
            assert_eq!((n, err), (-1, libc::EFAULT), "vmsplice from a secret heap buffer")
        }
        _ => assert_eq!(n, 4096, "vmsplice from the fallback heap (the control): errno {err}"),
    }
}

/// The flags behind all of the above, as the kernel shows them: the heap is
/// shared and inherited (no `dc`), `global()` is `MADV_DONTFORK` (`dc`).
#[test]
fn heap_is_inherited_and_default_arena_is_not() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let on_heap = Box::new([1u8; 64]);
    let secret = SecretBox::new([2u8; 64]);
    let heap_vma = common::vma_containing(on_heap.as_ptr() as usize).expect("heap mapped");
    let default_vma = common::vma_containing(secret.expose_secret().as_ptr() as usize).expect("global() mapped");
    assert!(heap_vma.has_flag("sh") && !heap_vma.has_flag("dc"), "heap: {heap_vma:?}");
    assert!(default_vma.has_flag("sh") && default_vma.has_flag("dc"), "global(): {default_vma:?}");
}

/// An arena the child creates after the fork is its own and works: only
/// arenas inherited from before the fork are refused.
#[test]
fn child_can_use_an_arena_it_creates() {
    if !on_secret_heap(this_test!()) {
        return;
    }
    let child = in_fork(|| {
        use allocator_api2::alloc::Allocator;
        // Builds without touching the heap: the arena lives on the stack,
        // its metadata and memory in mappings of its own.
        let Ok(arena) = secret_arena::SecretArena::new(8192) else { return 70 };
        let layout = core::alloc::Layout::new::<[u8; 64]>();
        let Ok(block) = arena.allocate(layout) else { return 71 };
        let p = block.cast::<u8>().as_ptr();
        // SAFETY: a fresh block of 64 bytes, ours alone.
        unsafe { p.write_bytes(0x5E, 64) };
        // SAFETY: as above.
        let ok = (0..64).all(|i| unsafe { p.add(i).read_volatile() } == 0x5E);
        // SAFETY: allocated just above with this layout, freed once.
        unsafe { arena.deallocate(block.cast(), layout) };
        drop(arena);
        if ok { 72 } else { 73 }
    });
    assert!(libc::WIFEXITED(child.raw), "status {:#x}, {:?}", child.raw, child.stderr);
    assert_eq!(libc::WEXITSTATUS(child.raw), 72, "{:?}", child.stderr);
}
