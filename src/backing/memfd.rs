//! The fallback backing: a sealed `memfd_create(2)` file.
//!
//! Locked with `mlock2(MLOCK_ONFAULT)` and marked `MADV_DONTDUMP` by the
//! caller once mapped. Its size is sealed (`SHRINK | GROW | SEAL`), so no one
//! holding the file can truncate it under the arena. `WRITE` is never sealed:
//! a writable shared mapping would then fail with `EPERM`.

use rustix::fd::OwnedFd;
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Errno, Error, Step};

/// Creates, sizes and seals a memfd of `len` bytes.
pub(super) fn open(len: usize) -> Result<OwnedFd, Error> {
    let name = c"secret-arena";
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // NOEXEC_SEAL needs Linux 6.3; older kernels answer EINVAL.
    let fd = match rustix::fs::memfd_create(name, flags | MemfdFlags::NOEXEC_SEAL) {
        Err(Errno::INVAL) => rustix::fs::memfd_create(name, flags),
        other => other,
    }
    .map_err(|errno| Error::Syscall { step: Step::MemfdCreate, errno })?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(|errno| Error::Syscall { step: Step::Ftruncate, errno })?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(|errno| Error::Syscall { step: Step::AddSeals, errno })?;
    Ok(fd)
}
