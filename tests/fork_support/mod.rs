//! Helpers for `tests/global_fork.rs`: forked children with a time limit
//! and their stderr, a no-allocation `/proc/self/maps` reader for children,
//! and threads that keep the allocator busy.
#![allow(dead_code, reason = "not every helper is used by every test")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Two threads that allocate, grow and free until dropped.
pub struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Churn {
    pub fn start(n: usize) -> Churn {
        // Live bytes stay under a quarter of the memlock budget (64 slots of
        // up to `cap` bytes per thread), so the churn itself never runs the
        // heap out at 8 MiB; without a limit, blocks go up to 64 KiB.
        const SLOTS: usize = 64;
        let cap =
            secret_arena::memlock_budget().available().map_or(65_536, |a| (a / 4 / (SLOTS * n)).clamp(64, 65_536));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut live: Vec<Vec<u8>> = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Sizes from 1 B to `cap`: chunks of every class,
                        // page runs, and now and then growth.
                        let len = 1 + ((i.wrapping_mul(0x9E37_79B9) >> 7) as usize % cap);
                        let v = vec![t as u8 ^ i as u8; len >> (i % 7)];
                        if live.len() < SLOTS {
                            live.push(v);
                        } else {
                            live[i as usize % SLOTS] = v;
                        }
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        Churn { stop, threads }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().expect("churn thread")).sum()
    }
}

/// What a forked child left behind: its wait status and what it wrote to
/// stderr.
pub struct Child {
    pub raw: i32,
    pub stderr: String,
}

/// Runs `body` in a forked child, its stderr on a pipe, and returns how it
/// ended. `body` must make only raw system calls until the step under test.
pub fn in_fork(body: impl FnOnce() -> i32) -> Child {
    in_fork_within(Duration::from_secs(30), body).expect("the child hung")
}

/// As `in_fork`; `None` if the child did not end within `limit` (it is
/// then killed).
pub fn in_fork_within(limit: Duration, body: impl FnOnce() -> i32) -> Option<Child> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only runs `body` (raw calls) and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The kernel's signal, not a handler inherited from the parent:
        // AddressSanitizer's would turn the SIGSEGV these children must die
        // of into exit code 1.
        let prepared = crate::common::no_core_dumps()
            .and_then(|()| crate::common::default_signal_action(libc::SIGSEGV))
            .and_then(|()| crate::common::default_signal_action(libc::SIGBUS));
        let code = match prepared {
            // SAFETY: plain descriptor calls.
            Ok(()) if unsafe { libc::dup2(fds[1], 2) } == 2 => body(),
            _ => 99,
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: our write end; the child has its own copy.
    unsafe { libc::close(fds[1]) };
    let start = Instant::now();
    let mut raw = 0;
    let ended = loop {
        // SAFETY: `raw` is a valid out-pointer.
        match unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } {
            0 if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(1)),
            0 => {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // SAFETY: as above.
                unsafe { libc::waitpid(pid, &mut raw, 0) };
                break false;
            }
            p => {
                assert_eq!(p, pid, "waitpid failed");
                break true;
            }
        }
    };
    let mut err = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length; the fd is ours.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        err.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: ours.
    unsafe { libc::close(fds[0]) };
    ended.then(|| Child { raw, stderr: String::from_utf8_lossy(&err).into_owned() })
}

pub fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Asserts the child aborted with exactly one line on stderr that names
/// fork and says what to do.
pub fn assert_fork_abort(child: &Child, what: &str) {
    assert!(
        libc::WIFSIGNALED(child.raw) && libc::WTERMSIG(child.raw) == libc::SIGABRT,
        "{what}: the child should abort, status {:#x}, stderr {:?}",
        child.raw,
        child.stderr
    );
    let lines: Vec<&str> = child.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got {:?}", child.stderr);
    for needle in ["secret-arena", "fork", "exec"] {
        assert!(lines[0].contains(needle), "{what}: the line lacks {needle:?}: {}", lines[0]);
    }
}

/// The permissions column of the `/proc/self/maps` line whose range holds
/// `addr`, read with raw calls into stack buffers (no allocation).
pub fn maps_perms_at(addr: usize) -> Option<[u8; 4]> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let (mut line, mut used) = ([0u8; 512], 0);
    let mut buf = [0u8; 4096];
    let mut found = None;
    'read: loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b != b'\n' {
                if used < line.len() {
                    line[used] = b;
                    used += 1;
                }
                continue;
            }
            // "start-end perms ..."
            let l = &line[..used];
            used = 0;
            let (start, rest) = hex(l);
            let (end, rest) = hex(rest.get(1..).unwrap_or_default());
            if start <= addr && addr < end && rest.len() >= 5 {
                found = Some([rest[1], rest[2], rest[3], rest[4]]);
                break 'read;
            }
        }
    }
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    found
}

/// Parses lower-case hex at the start of `s`; returns it and the rest.
pub fn hex(s: &[u8]) -> (usize, &[u8]) {
    let mut v = 0usize;
    for (i, &c) in s.iter().enumerate() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return (v, &s[i..]),
        };
        v = v << 4 | usize::from(d);
    }
    (v, &[])
}

/// Whether nothing can be mapped at `addr` (`MAP_FIXED_NOREPLACE` says
/// `EEXIST`): the range is still reserved.
pub fn reserved(addr: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut _,
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return errno() == libc::EEXIST;
    }
    // SAFETY: we just mapped it.
    unsafe { libc::munmap(p, 4096) };
    // Where the flag is only a hint (kernels before 4.17, valgrind), a free
    // address is honoured and an occupied one is not.
    p as usize != addr
}
