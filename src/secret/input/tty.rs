//! The terminal side of `SecretString::read_password`: echo off, and the
//! terminal's settings restored on every path, signals included.
//!
//! While a read is in progress, the saved settings and the terminal's fd
//! are in statics, so a signal handler can restore them with one
//! `tcsetattr` (an `ioctl`, async-signal-safe). The handler then puts back
//! the program's own disposition of the signal and raises it again; it is
//! delivered when the handler returns, as if the read were not there.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use allocator_api2::alloc::Allocator;
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::termios::{self, LocalModes, OptionalActions, Termios};

use crate::secret::boxed::{ExposeSecret, ExposeSecretMut};
use crate::secret::vec::SecretVec;

/// Signals whose default action ends the process: the terminal is
/// restored before they do.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
/// Longest password: a canonical-mode line holds 4095 characters.
const MAX_PASSWORD: usize = 4096;

/// One read at a time: the statics below belong to it.
static SERIAL: Mutex<()> = Mutex::new(());
/// The terminal while its settings are changed, else -1.
static TTY_FD: AtomicI32 = AtomicI32::new(-1);
/// The signal that interrupted the read, else 0.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// The terminal's settings and the program's signal dispositions from
/// before the read. Written under `SERIAL` before `TTY_FD` is set and
/// before our handler is installed; read by the handler.
struct Saved {
    termios: UnsafeCell<MaybeUninit<Termios>>,
    actions: [UnsafeCell<MaybeUninit<libc::sigaction>>; SIGNALS.len()],
    /// Which of `SIGNALS` have our handler.
    installed: [core::sync::atomic::AtomicBool; SIGNALS.len()],
}

// SAFETY: written only by the thread holding `SERIAL`, before it publishes
// them (SeqCst store of `TTY_FD`, or the sigaction system call); read by the
// handler only after that.
unsafe impl Sync for Saved {}

static SAVED: Saved = Saved {
    termios: UnsafeCell::new(MaybeUninit::uninit()),
    actions: [const { UnsafeCell::new(MaybeUninit::uninit()) }; SIGNALS.len()],
    installed: [const { core::sync::atomic::AtomicBool::new(false) }; SIGNALS.len()],
};

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = TTY_FD.load(SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the open terminal (the guard closes it only after
        // setting TTY_FD to -1), and the saved settings were written before
        // TTY_FD was set.
        let _ = termios::tcsetattr(unsafe { BorrowedFd::borrow_raw(fd) }, OptionalActions::Now, unsafe {
            (*SAVED.termios.get()).assume_init_ref()
        });
    }
    CAUGHT.store(sig, SeqCst);
    if let Some(i) = SIGNALS.iter().position(|&s| s == sig) {
        // SAFETY: the saved action was written before our handler was
        // installed for `sig`; sigaction and raise are async-signal-safe.
        unsafe { libc::sigaction(sig, (*SAVED.actions[i].get()).as_ptr(), core::ptr::null_mut()) };
        // SAFETY: as above. `sig` is blocked while we run, so it is
        // delivered, with the program's disposition, when we return.
        unsafe { libc::raise(sig) };
    }
}

/// Restores the terminal and the signal dispositions when dropped: on
/// return, on error and on unwinding.
struct Restore {
    tty: OwnedFd,
    _serial: MutexGuard<'static, ()>,
}

impl Restore {
    fn saved(&self) -> &Termios {
        // SAFETY: written in `begin` before this guard existed.
        unsafe { (*SAVED.termios.get()).assume_init_ref() }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Terminal first: a signal that comes before the dispositions are
        // back still finds our handler, which restores it again.
        let _ = termios::tcsetattr(&self.tty, OptionalActions::Now, self.saved());
        for (i, &sig) in SIGNALS.iter().enumerate() {
            if SAVED.installed[i].swap(false, SeqCst) {
                // SAFETY: the action saved before ours was installed.
                unsafe { libc::sigaction(sig, (*SAVED.actions[i].get()).as_ptr(), core::ptr::null_mut()) };
            }
        }
        TTY_FD.store(-1, SeqCst);
    }
}

/// Opens the terminal, saves its settings, installs the handlers and turns
/// echo off.
fn begin() -> io::Result<Restore> {
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let tty = rustix::fs::open("/dev/tty", OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty()).map_err(
        |e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot open the controlling terminal /dev/tty to read a password ({e}); read it with SecretString::read_line_from instead"),
            )
        },
    )?;
    let saved = termios::tcgetattr(&tty)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("/dev/tty is not a terminal ({e})")))?;
    // SAFETY: we hold SERIAL, and TTY_FD is -1, so no handler reads it now.
    unsafe { (*SAVED.termios.get()).write(saved.clone()) };
    CAUGHT.store(0, SeqCst);
    let guard = Restore { tty, _serial: serial };
    TTY_FD.store(guard.tty.as_raw_fd(), SeqCst);
    for (i, &sig) in SIGNALS.iter().enumerate() {
        let old = SAVED.actions[i].get().cast::<libc::sigaction>();
        // SAFETY: query only; `old` is valid for writes and no handler of
        // ours for `sig` is installed yet, so nobody reads it.
        if unsafe { libc::sigaction(sig, core::ptr::null(), old) } != 0 {
            continue;
        }
        // SAFETY: just written by the kernel.
        if unsafe { (*old).sa_sigaction } == libc::SIG_IGN {
            // The program ignores it: it cannot end the process.
            continue;
        }
        // SAFETY: a zeroed sigaction is "no flags, empty mask".
        let mut ours: libc::sigaction = unsafe { core::mem::zeroed() };
        ours.sa_sigaction = on_signal as *const () as usize;
        // No SA_RESTART: the read returns EINTR when the handler has run.
        // SAFETY: `ours` is valid; the handler only makes async-signal-safe
        // calls.
        if unsafe { libc::sigaction(sig, &ours, core::ptr::null_mut()) } == 0 {
            SAVED.installed[i].store(true, SeqCst);
        }
    }
    let mut quiet = saved;
    quiet.local_modes.remove(LocalModes::ECHO | LocalModes::ECHOE | LocalModes::ECHOK);
    quiet.local_modes.insert(LocalModes::ECHONL | LocalModes::ICANON);
    termios::tcsetattr(&guard.tty, OptionalActions::Flush, &quiet)?;
    Ok(guard)
}

fn interrupted() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        format!("password entry interrupted by signal {}; nothing was kept", CAUGHT.load(SeqCst)),
    )
}

/// Prompts on the terminal and reads one line into `v` with echo off.
pub(super) fn read_password_into<A: Allocator + Clone>(prompt: &str, v: &mut SecretVec<A>) -> io::Result<()> {
    let guard = begin()?;
    let mut prompt = prompt.as_bytes();
    while !prompt.is_empty() {
        match rustix::io::write(&guard.tty, prompt) {
            Ok(n) => prompt = &prompt[n..],
            Err(Errno::INTR) if CAUGHT.load(SeqCst) == 0 => {}
            Err(Errno::INTR) => return Err(interrupted()),
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        if v.len() >= MAX_PASSWORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the password is longer than {MAX_PASSWORD} bytes; nothing was kept"),
            ));
        }
        // A process-directed signal may run its handler on another thread
        // and leave this read blocked: wait in slices, and look.
        if CAUGHT.load(SeqCst) != 0 {
            return Err(interrupted());
        }
        let mut pfd = libc::pollfd { fd: guard.tty.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        match unsafe { libc::poll(&mut pfd, 1, 50) } {
            0 => continue,
            n if n < 0 => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            },
            _ => {}
        }
        let at = super::extend_zeroed(v, 1)?;
        match rustix::io::read(&guard.tty, &mut v.expose_secret_mut()[at..]) {
            Ok(0) => {
                v.truncate(at);
                // End of input (^D): the kernel echoed no newline.
                let _ = rustix::io::write(&guard.tty, b"\n");
                if at == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of input before a password"));
                }
                return Ok(());
            }
            Ok(_) => match v.expose_secret()[at] {
                b'\n' | b'\r' => {
                    v.truncate(at);
                    return Ok(());
                }
                // A backspace the terminal did not handle itself.
                0x7f | 0x08 => {
                    v.truncate(at);
                    super::pop_char(v);
                }
                _ => {}
            },
            Err(Errno::INTR) => {
                v.truncate(at);
                if CAUGHT.load(SeqCst) != 0 {
                    return Err(interrupted());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
