//! The only raw FFI in the crate: `memfd_secret(2)`, which neither glibc nor
//! rustix wraps.

use rustix::fd::{FromRawFd, OwnedFd, RawFd};

use crate::error::Errno;

/// `memfd_secret(O_CLOEXEC)`: a new secret-memory file of size zero.
///
/// Only `O_CLOEXEC` is accepted; `FD_CLOEXEC`, which the man page names,
/// gives `EINVAL`. Unavailable means `ENOSYS` (kernel, config or
/// `secretmem.enable=0`) or `EPERM` (a seccomp profile).
///
/// # References
///
/// - [`memfd_secret(2)`](https://man7.org/linux/man-pages/man2/memfd_secret.2.html)
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn memfd_secret() -> Result<OwnedFd, Errno> {
    // SAFETY: memfd_secret takes one integer flags argument and touches no
    // memory of ours; the variadic call passes exactly that.
    let ret = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC as libc::c_uint) };
    if ret < 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    let fd = RawFd::try_from(ret).map_err(|_| Errno::BADF)?;
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns; OwnedFd takes sole ownership and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn last_errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}
