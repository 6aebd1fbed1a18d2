//! The preferred backing: a `memfd_secret(2)` file.
//!
//! The kernel locks and un-dumps its pages by itself (`VM_LOCKED |
//! VM_DONTDUMP`), and removes each page from its direct map on first touch.
//! It must not be `mlock`ed (that gives `ENOMEM`), its size can be set once
//! only, and it is charged to `RLIMIT_MEMLOCK` at `mmap` time.

use rustix::fd::OwnedFd;

use super::sys;
use crate::error::{Errno, Error, Step};

/// Creates a secret-memory file of `len` bytes.
///
/// `ENOSYS` and `EPERM` become [`Error::SecretMemoryUnavailable`], which the
/// caller may answer by falling back.
pub(super) fn open(len: usize) -> Result<OwnedFd, Error> {
    let fd = sys::memfd_secret().map_err(|errno| match errno {
        Errno::NOSYS | Errno::PERM => Error::SecretMemoryUnavailable { errno },
        _ => Error::Syscall { step: Step::MemfdSecret, errno },
    })?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(|errno| Error::Syscall { step: Step::Ftruncate, errno })?;
    Ok(fd)
}
