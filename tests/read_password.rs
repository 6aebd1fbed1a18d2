//! `SecretString::read_password` under a pseudo-terminal.
//!
//! Each case runs in a re-executed child that starts a new session and
//! makes the pty's slave its controlling terminal, so `/dev/tty` is the
//! pty. The parent, on the master side, waits for the prompt, checks that
//! echo is off, types, and afterwards checks that echo is back on: after a
//! normal read, an error, a panic inside the read, and SIGINT (from `^C`
//! and from `kill`) and SIGTERM during it.

mod common;
mod heapscan;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use allocator_api2::alloc::{AllocError, Allocator};
use common::{Sandbox, is_child};
use core::alloc::Layout;
use core::ptr::NonNull;
use heapscan::{Marker, assert_not_in_heap, seed};
use secret_arena::{ExposeSecret, SecretArena, SecretString};

const SEED_VAR: &str = "SECRET_ARENA_TEST_SEED";
const PROMPT: &str = "Password: ";

struct Pty {
    master: OwnedFd,
    slave: CString,
    /// Held open by the parent, so the master does not report a hang-up
    /// before the child opens the slave or after it exits.
    _slave_fd: OwnedFd,
}

fn open_pty() -> Pty {
    // SAFETY: posix_openpt with valid flags.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "posix_openpt: {}", common::last_errno());
    // SAFETY: a fresh fd we own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is a pty master.
    assert_eq!(unsafe { libc::grantpt(fd) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::unlockpt(fd) }, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer of the given length.
    assert_eq!(unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) }, 0);
    // SAFETY: ptsname_r wrote a NUL-terminated string.
    let slave = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_owned();
    // SAFETY: a valid path; O_NOCTTY keeps it from becoming our terminal.
    let sfd = unsafe { libc::open(slave.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(sfd >= 0, "open {slave:?}: {}", common::last_errno());
    // SAFETY: a fresh fd we own.
    let _slave_fd = unsafe { OwnedFd::from_raw_fd(sfd) };
    Pty { master, slave, _slave_fd }
}

fn echo_is_on(pty: &Pty) -> bool {
    // SAFETY: zeroed termios is a valid out-buffer.
    let mut t: libc::termios = unsafe { core::mem::zeroed() };
    // SAFETY: on Linux, tcgetattr on the master reports the slave's settings.
    assert_eq!(unsafe { libc::tcgetattr(pty.master.as_raw_fd(), &mut t) }, 0, "{}", common::last_errno());
    t.c_lflag & libc::ECHO != 0
}

/// Reads what the terminal shows until `until` appears or `timeout` passes.
fn read_master(pty: &Pty, out: &mut Vec<u8>, until: Option<&[u8]>, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        if until.is_some_and(|u| out.windows(u.len()).any(|w| w == u)) {
            return;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = libc::pollfd { fd: pty.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n <= 0 {
            return;
        }
        let mut buf = [0u8; 256];
        // SAFETY: reading into a live buffer.
        let got = unsafe { libc::read(pty.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got <= 0 {
            return; // EIO: no slave is open any more.
        }
        out.extend_from_slice(&buf[..got as usize]);
    }
}

fn type_bytes(pty: &Pty, bytes: &[u8]) {
    for b in bytes {
        // SAFETY: writing one byte from a live buffer.
        assert_eq!(unsafe { libc::write(pty.master.as_raw_fd(), (b as *const u8).cast(), 1) }, 1);
    }
}

/// Starts the child for `case` with the pty as its controlling terminal.
fn spawn_on_pty(case: &str, pty: &Pty, seed: u64) -> Child {
    let mut cmd = Sandbox::new(case).env(SEED_VAR, seed).command();
    let slave = pty.slave.clone();
    // SAFETY: the hook makes only async-signal-safe calls (setsid, open,
    // ioctl, close) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        })
    };
    cmd.spawn().expect("spawn the test binary")
}

/// Runs `case` on a fresh pty: waits for the prompt, checks echo is off,
/// types `input`, and returns the child's status, what the terminal showed
/// after the prompt, and whether echo was on again at the end.
fn session(case: &str, seed: u64, input: impl FnOnce(&Pty, &Child)) -> (ExitStatus, Vec<u8>, bool) {
    let pty = open_pty();
    assert!(echo_is_on(&pty), "a fresh pty echoes");
    let child = spawn_on_pty(case, &pty, seed);
    let mut shown = Vec::new();
    read_master(&pty, &mut shown, Some(PROMPT.as_bytes()), Duration::from_secs(30));
    assert!(shown.ends_with(PROMPT.as_bytes()), "no prompt on the terminal: {:?}", String::from_utf8_lossy(&shown));
    assert!(!echo_is_on(&pty), "echo is still on while the password is read");
    input(&pty, &child);
    let mut after = Vec::new();
    read_master(&pty, &mut after, None, Duration::from_millis(500));
    let out = child.wait_with_output().unwrap();
    println!("--- child stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    println!("--- child stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status, after, echo_is_on(&pty))
}

fn child_marker() -> Marker {
    Marker::new(std::env::var(SEED_VAR).unwrap().parse().unwrap(), 32)
}

#[test]
fn password_is_read_with_echo_off_and_backspaces() {
    let case = this_test!();
    if is_child(case) {
        let marker = child_marker();
        let password = SecretString::read_password(PROMPT).unwrap();
        assert!(marker.matches(password.expose_secret().as_bytes()), "wrong password read");
        assert!(secret_arena::global().unwrap().contains(password.expose_secret().as_ptr()));
        assert_not_in_heap(&marker, "after read_password");
        drop(password);
        assert_not_in_heap(&marker, "after dropping it");
        return;
    }
    let s = seed(11);
    let marker = Marker::new(s, 32);
    let (status, shown, echo) = session(case, s, |pty, _| {
        for i in 0..marker.len() {
            type_bytes(pty, &[marker.byte(i)]);
        }
        // DEL is the terminal's VERASE: the kernel erases 'b'. ^H reaches
        // the program, which erases 'a'; then a two-byte 'é' and ^H.
        type_bytes(pty, b"ab\x7f\x08\xc3\xa9\x08\n");
    });
    assert!(status.success(), "child failed: {status}");
    assert!(!marker.found_in(&shown), "the password was echoed: {:?}", String::from_utf8_lossy(&shown));
    assert!(echo, "echo was not restored");
}

#[test]
fn an_error_restores_the_terminal() {
    let case = this_test!();
    if is_child(case) {
        let err = SecretString::read_password(PROMPT).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        return;
    }
    let (status, _, echo) = session(case, 1, |pty, _| type_bytes(pty, b"ab\xffcd\n"));
    assert!(status.success(), "child failed: {status}");
    assert!(echo, "echo was not restored after an error");
}

/// An allocator that panics when asked for more than 16 bytes: the
/// password buffer's second growth.
#[derive(Clone, Copy)]
struct PanicsOnGrowth<'a>(&'a SecretArena);

// SAFETY: passes every call to the arena, or panics before allocating.
unsafe impl Allocator for PanicsOnGrowth<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        assert!(layout.size() <= 16, "test allocator: no more than 16 bytes");
        self.0.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract, passed through.
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

#[test]
fn a_panic_during_the_read_restores_the_terminal() {
    let case = this_test!();
    if is_child(case) {
        let arena = SecretArena::new(4096).unwrap();
        let r = std::panic::catch_unwind(|| SecretString::read_password_in(PROMPT, PanicsOnGrowth(&arena)).map(drop));
        assert!(r.is_err(), "the allocator should have panicked");
        let tty = std::fs::File::open("/dev/tty").unwrap();
        // SAFETY: zeroed termios is a valid out-buffer.
        let mut t: libc::termios = unsafe { core::mem::zeroed() };
        // SAFETY: a valid terminal fd and out-buffer.
        assert_eq!(unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut t) }, 0);
        assert!(t.c_lflag & libc::ECHO != 0, "echo was not restored after the panic");
        // A second read still works (the lock is not left poisoned).
        let again = SecretString::read_password(PROMPT).unwrap();
        assert_eq!(again.expose_secret(), "second");
        return;
    }
    let (status, shown, echo) = session(case, 1, |pty, _| {
        type_bytes(pty, b"a password longer than sixteen bytes\n");
        let mut more = Vec::new();
        read_master(pty, &mut more, Some(PROMPT.as_bytes()), Duration::from_secs(10));
        type_bytes(pty, b"second\n");
    });
    assert!(status.success(), "child failed: {status}");
    assert!(!String::from_utf8_lossy(&shown).contains("second"), "echo was on in the second read");
    assert!(echo, "echo was not restored");
}

fn killed_during_read(case: &str, how: impl FnOnce(&Pty, &Child), signal: i32) {
    if is_child(case) {
        let r = SecretString::read_password(PROMPT);
        panic!("read_password returned {:?} instead of dying", r.map(drop));
    }
    let (status, _, echo) = session(case, 1, |pty, child| {
        type_bytes(pty, b"half a pass");
        how(pty, child);
    });
    assert_eq!(status.signal(), Some(signal), "the child should die of signal {signal}: {status}");
    assert!(echo, "echo was not restored after signal {signal}");
}

#[test]
fn ctrl_c_during_the_read_restores_the_terminal() {
    killed_during_read(this_test!(), |pty, _| type_bytes(pty, b"\x03"), libc::SIGINT);
}

#[test]
fn sigint_from_kill_during_the_read_restores_the_terminal() {
    let kill = |_: &Pty, child: &Child| {
        // SAFETY: kill with a valid pid and signal.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    };
    killed_during_read(this_test!(), kill, libc::SIGINT);
}

#[test]
fn sigterm_during_the_read_restores_the_terminal() {
    let kill = |_: &Pty, child: &Child| {
        // SAFETY: kill with a valid pid and signal.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    };
    killed_during_read(this_test!(), kill, libc::SIGTERM);
}

#[test]
fn no_controlling_terminal_is_a_clear_error() {
    let case = this_test!();
    if is_child(case) {
        let err = SecretString::read_password(PROMPT).unwrap_err();
        assert!(err.to_string().contains("/dev/tty"), "{err}");
        return;
    }
    let mut cmd = Sandbox::new(case).command();
    // SAFETY: setsid is async-signal-safe; the new session has no terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    common::assert_child_passed(&cmd.output().unwrap());
}

#[test]
fn sighup_during_the_read_restores_the_terminal() {
    let kill = |_: &Pty, child: &Child| {
        // SAFETY: kill with a valid pid and signal.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    };
    killed_during_read(this_test!(), kill, libc::SIGHUP);
}

#[test]
fn sigquit_during_the_read_restores_the_terminal() {
    // ^\ is VQUIT: the kernel sends SIGQUIT (no core file: the sandbox sets
    // RLIMIT_CORE to 0).
    killed_during_read(this_test!(), |pty, _| type_bytes(pty, b"\x1c"), libc::SIGQUIT);
}

static PROGRAM_HANDLER_RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn program_sigint_handler(_: libc::c_int) {
    PROGRAM_HANDLER_RAN.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A program that handles SIGINT itself: its handler runs, the read
/// returns `Interrupted`, and the handler is its own again afterwards.
#[test]
fn a_handled_sigint_interrupts_the_read_and_reaches_the_program() {
    let case = this_test!();
    if is_child(case) {
        // SAFETY: a zeroed sigaction is "no flags, empty mask".
        let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
        sa.sa_sigaction = program_sigint_handler as *const () as usize;
        // SAFETY: a valid action; the handler stores an atomic.
        assert_eq!(unsafe { libc::sigaction(libc::SIGINT, &sa, core::ptr::null_mut()) }, 0);
        let err = SecretString::read_password(PROMPT).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "{err}");
        assert!(PROGRAM_HANDLER_RAN.load(std::sync::atomic::Ordering::SeqCst), "the program's handler did not run");
        // SAFETY: zeroed out-buffer for the current action.
        let mut now: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: query only.
        assert_eq!(unsafe { libc::sigaction(libc::SIGINT, core::ptr::null(), &mut now) }, 0);
        assert_eq!(now.sa_sigaction, program_sigint_handler as *const () as usize, "the disposition was not restored");
        return;
    }
    let (status, _, echo) = session(case, 1, |pty, _| type_bytes(pty, b"half\x03"));
    assert!(status.success(), "child failed: {status}");
    assert!(echo, "echo was not restored");
}
