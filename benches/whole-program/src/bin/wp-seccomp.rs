//! `wp-seccomp [--errno ENOSYS|EPERM] -- PROGRAM [ARGS...]`
//!
//! Installs a seccomp filter that answers `memfd_secret(2)` with an error,
//! then execs PROGRAM. A seccomp filter survives `execve`, so the program is
//! filtered from its first instruction: its global allocator, which creates
//! the secret arena on the first allocation (before `main`), sees
//! `memfd_secret` fail and takes the mlocked-memfd fallback. Every other
//! system call is allowed. The launcher itself uses the System allocator.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64; libc lacks it
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Offsets in `struct seccomp_data { int nr; __u32 arch; ... }`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump_eq(k: u32, if_true: u8, if_false: u8) -> libc::sock_filter {
    libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: if_true, jf: if_false, k }
}

/// `memfd_secret` of this architecture gets `errno`; everything else runs.
/// A system call of another architecture (none is made here) is allowed.
fn filter(errno: i32) -> [libc::sock_filter; 6] {
    [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_ARCH),
        jump_eq(AUDIT_ARCH, 0, 3),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFFSET_NR),
        jump_eq(libc::SYS_memfd_secret as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

fn install(errno: i32) -> std::io::Result<()> {
    let program = filter(errno);
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
    // SAFETY: prctl with integer arguments only; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points to `program`, which outlives the call; the
    // kernel copies the filter before returning.
    let ret = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog as *const libc::sock_fprog)
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Prove the filter is live before handing over: a direct call must now fail with `errno`.
    // SAFETY: memfd_secret takes one integer flags argument; a success
    // (which would be a bug here) returns a descriptor we close at once.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC as libc::c_ulong) };
    let got = std::io::Error::last_os_error().raw_os_error();
    if fd >= 0 || got != Some(errno) {
        if fd >= 0 {
            // SAFETY: `fd` is a descriptor this process owns and nothing else uses.
            unsafe { libc::close(fd as i32) };
        }
        return Err(std::io::Error::other(format!(
            "the seccomp filter is installed but memfd_secret returned {fd} (errno {got:?}), not errno {errno}"
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let mut errno = libc::ENOSYS;
    if args.peek().map(String::as_str) == Some("--errno") {
        args.next();
        errno = match args.next().as_deref() {
            Some("ENOSYS") => libc::ENOSYS,
            Some("EPERM") => libc::EPERM,
            other => {
                eprintln!("wp-seccomp: --errno takes ENOSYS or EPERM, not {other:?}");
                return ExitCode::from(2);
            }
        };
    }
    if args.next().as_deref() != Some("--") {
        eprintln!("usage: wp-seccomp [--errno ENOSYS|EPERM] -- PROGRAM [ARGS...]");
        return ExitCode::from(2);
    }
    let Some(program) = args.next() else {
        eprintln!("usage: wp-seccomp [--errno ENOSYS|EPERM] -- PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = install(errno) {
        eprintln!("wp-seccomp: cannot install the memfd_secret filter: {e}");
        return ExitCode::from(1);
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!("wp-seccomp: cannot exec {program}: {err}");
    ExitCode::from(127)
}
