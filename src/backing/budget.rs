//! How much locked memory this process may still map.
//!
//! Nothing here allocates: it runs inside the allocator when a segment
//! cannot be mapped, possibly while the arena is the global allocator.

use rustix::process::{Resource, getrlimit};
use rustix::thread::{CapabilitySet, capabilities};

use crate::error::{Errno, Error};

/// This process's `RLIMIT_MEMLOCK` budget, as [`memlock_budget`] reads it.
///
/// # Examples
///
/// ```
/// use secret_arena::{SecretArena, memlock_budget};
///
/// // An arena of 256 KiB, or smaller where the budget is smaller.
/// let budget = memlock_budget();
/// let capacity = budget.available().map_or(256 << 10, |left| left.min(256 << 10));
/// if capacity >= 4096 {
///     let arena = SecretArena::new(capacity)?;
///     assert!(budget.cap_ipc_lock || budget.limit.is_none() || arena.capacity() <= budget.limit.unwrap());
/// }
/// # Ok::<(), secret_arena::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemlockBudget {
    /// The soft `RLIMIT_MEMLOCK` in bytes; `None` means unlimited.
    pub limit: Option<usize>,
    /// Bytes this process already has locked (`VmLck` in `/proc/self/status`),
    /// if it could be read.
    pub locked: Option<usize>,
    /// Whether this thread holds `CAP_IPC_LOCK`, which makes the kernel skip
    /// the limit entirely.
    pub cap_ipc_lock: bool,
}

impl MemlockBudget {
    /// Bytes that may still be locked, or `None` when there is no limit
    /// (unlimited rlimit or `CAP_IPC_LOCK`).
    ///
    /// # Examples
    ///
    /// ```
    /// let before = secret_arena::memlock_budget();
    /// let arena = secret_arena::SecretArena::new(16 << 10)?;
    /// if let (Some(was), Some(now)) = (before.available(), secret_arena::memlock_budget().available()) {
    ///     assert_eq!(was - now, 16 << 10); // the whole segment is charged when it is mapped
    /// }
    /// # drop(arena);
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn available(&self) -> Option<usize> {
        if self.cap_ipc_lock {
            return None;
        }
        let limit = self.limit?;
        Some(limit.saturating_sub(self.locked.unwrap_or(0)))
    }
}

/// Reads this process's memlock budget.
///
/// # Examples
///
/// ```
/// let budget = secret_arena::memlock_budget();
/// match budget.available() {
///     None => println!("no memlock limit applies"),
///     Some(bytes) => println!("{bytes} bytes may still be locked"),
/// }
/// ```
pub fn memlock_budget() -> MemlockBudget {
    let limit = getrlimit(Resource::Memlock).current.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let cap_ipc_lock = capabilities(None).map(|c| c.effective.contains(CapabilitySet::IPC_LOCK)).unwrap_or(false);
    MemlockBudget { limit, locked: locked_bytes(), cap_ipc_lock }
}

/// The error for a mapping of `requested` bytes that the budget refused.
pub(super) fn error(requested: usize, errno: Errno) -> Error {
    let budget = memlock_budget();
    Error::MemlockBudget { requested, available: budget.available(), limit: budget.limit, errno }
}

/// `VmLck` from `/proc/self/status`, in bytes, read into a stack buffer.
fn locked_bytes() -> Option<usize> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(c"/proc/self/status", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buf = [0u8; 8192];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::read(&fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    parse_kib_field(&buf[..filled], b"VmLck:").map(|kib| kib * 1024)
}

/// Finds `field` at the start of a line and parses the number after it.
fn parse_kib_field(status: &[u8], field: &[u8]) -> Option<usize> {
    status.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(field)?;
        let digits = rest.iter().skip_while(|b| b.is_ascii_whitespace()).take_while(|b| b.is_ascii_digit());
        let mut value: usize = 0;
        let mut any = false;
        for &d in digits {
            value = value.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
            any = true;
        }
        any.then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmlck() {
        let status = b"Name:\tx\nVmLck:\t     132 kB\nVmPin:\t 0 kB\n";
        assert_eq!(parse_kib_field(status, b"VmLck:"), Some(132));
        assert_eq!(parse_kib_field(status, b"VmFoo:"), None);
    }

    #[test]
    fn reads_own_status() {
        assert!(locked_bytes().is_some());
    }
}
