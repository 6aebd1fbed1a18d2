//! The crate's one error type.
//!
//! Every variant names the step that failed and carries the kernel's answer,
//! and its `Display` text says what to do next. `Debug` starts with the same
//! text, so `fn main() -> Result<(), Error>` prints the advice too. The type
//! is `Copy` and never allocates, because it is built inside the allocator
//! itself, possibly while the arena is the process's global allocator.

use core::fmt;

pub use rustix::io::Errno;

/// The system call or step that failed while setting up secret memory.
///
/// # Examples
///
/// ```
/// use secret_arena::{Error, SecretArena};
///
/// match SecretArena::new(16 << 10) {
///     Ok(_) => {}
///     Err(Error::Syscall { step, errno }) => eprintln!("{step:?} failed: {errno}"),
///     Err(other) => eprintln!("{other}"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// `memfd_secret(2)` itself.
    MemfdSecret,
    /// `memfd_create(2)` for the fallback backing.
    MemfdCreate,
    /// `ftruncate(2)` to size the file.
    Ftruncate,
    /// `fcntl(F_ADD_SEALS)` on the fallback file.
    AddSeals,
    /// The anonymous `PROT_NONE` reservation that holds the guard pages.
    Reserve,
    /// `mmap(MAP_SHARED | MAP_FIXED)` of the file into the reservation.
    Map,
    /// `mlock2(MLOCK_ONFAULT)` of the fallback mapping.
    Lock,
    /// `madvise(MADV_DONTDUMP)`.
    DontDump,
    /// `madvise(MADV_DONTFORK)`.
    DontFork,
    /// The anonymous mapping that holds the arena's out-of-band metadata.
    Metadata,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::MemfdSecret => "memfd_secret(2)",
            Step::MemfdCreate => "memfd_create(2)",
            Step::Ftruncate => "ftruncate(2) of the backing file",
            Step::AddSeals => "sealing the backing file (F_ADD_SEALS)",
            Step::Reserve => "reserving address space for the arena and its guard pages",
            Step::Map => "mapping the backing file",
            Step::Lock => "mlock2(MLOCK_ONFAULT) of the fallback mapping",
            Step::DontDump => "madvise(MADV_DONTDUMP)",
            Step::DontFork => "madvise(MADV_DONTFORK)",
            Step::Metadata => "mapping the arena's metadata",
        }
    }
}

/// Why an arena could not be created or grown.
///
/// `Display` says what failed and what to do about it. `Debug` prints the
/// same advice, then the variant and its fields, so an error returned from
/// `main` (which Rust prints with `Debug`) still tells the user what to do.
///
/// # Examples
///
/// ```
/// use secret_arena::{Errno, Error};
///
/// let e = Error::MemlockBudget {
///     requested: 1 << 20,
///     available: Some(64 << 10),
///     limit: Some(64 << 10),
///     errno: Errno::AGAIN,
/// };
/// let advice = e.to_string();
/// assert!(advice.starts_with("secret memory needs 1 MiB of locked memory but only 64 KiB is left"));
/// assert!(advice.contains("ulimit -l") && advice.contains("CAP_IPC_LOCK"));
/// // What `fn main() -> Result<(), secret_arena::Error>` prints after "Error: ":
/// let debug = format!("{e:?}");
/// assert!(debug.starts_with(&advice));
/// assert!(debug.contains("(MemlockBudget { requested: 1048576, available: Some(65536), limit: Some(65536)"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `memfd_secret(2)` is not available here and the policy was
    /// [`BackingPolicy::RequireSecret`](crate::BackingPolicy::RequireSecret).
    ///
    /// `errno` is `ENOSYS` (kernel older than 5.14, `CONFIG_SECRETMEM=n`,
    /// `secretmem.enable=0`) or `EPERM` (a seccomp profile forbids it).
    SecretMemoryUnavailable {
        /// What the kernel answered.
        errno: Errno,
    },
    /// The mapping does not fit the `RLIMIT_MEMLOCK` budget.
    MemlockBudget {
        /// Bytes of locked memory the arena asked for.
        requested: usize,
        /// Bytes still free under the limit when it failed, if the limit is finite.
        available: Option<usize>,
        /// The soft `RLIMIT_MEMLOCK`, if finite.
        limit: Option<usize>,
        /// What the kernel answered (`EAGAIN` from `mmap`, `ENOMEM` from `mlock2`).
        errno: Errno,
    },
    /// A system call failed for a reason other than the two above.
    Syscall {
        /// Which step failed.
        step: Step,
        /// What the kernel answered.
        errno: Errno,
    },
    /// The requested capacity is zero or too large to map.
    InvalidCapacity {
        /// The capacity that was asked for, in bytes.
        requested: usize,
    },
    /// The process already has as many arena segments as
    /// [`purge`](crate::purge) can track ([`MAX_MAPPINGS`](crate::MAX_MAPPINGS)),
    /// so a new arena or segment would be one that a purge could not wipe.
    MappingRegistryFull {
        /// Slots in the registry.
        slots: usize,
    },
}

/// Formats a byte count as KiB/MiB/GiB when it divides evenly, else bytes.
pub(crate) struct Bytes(pub usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, name) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{} {name}", self.0 / size);
            }
        }
        if self.0 >= 1 << 20 {
            return write!(f, "{:.1} MiB", self.0 as f64 / (1u64 << 20) as f64);
        }
        if self.0 >= 1 << 10 {
            return write!(f, "{:.1} KiB", self.0 as f64 / 1024.0);
        }
        write!(f, "{} bytes", self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::SecretMemoryUnavailable { errno } => write!(
                f,
                "memfd_secret(2) is not available here ({errno}) and the policy requires it; \
                 it needs Linux 5.14+ (on by default since 6.5, else boot with secretmem.enable=1) \
                 and a seccomp profile that allows it, or choose BackingPolicy::PreferSecret \
                 to accept the mlocked memfd fallback"
            ),
            Error::MemlockBudget { requested, available, limit, errno } => {
                write!(f, "secret memory needs {} of locked memory", Bytes(requested))?;
                match (available, limit) {
                    (Some(avail), Some(limit)) => {
                        write!(f, " but only {} is left under RLIMIT_MEMLOCK ({} in all)", Bytes(avail), Bytes(limit))?
                    }
                    _ => write!(f, " and the kernel refused it")?,
                }
                write!(
                    f,
                    " ({errno}); raise the limit with `ulimit -l` or LimitMEMLOCK= in a systemd \
                     unit, grant CAP_IPC_LOCK, or create a smaller arena"
                )
            }
            Error::Syscall { step, errno } => {
                write!(f, "{} failed: {errno}", step.describe())
            }
            Error::InvalidCapacity { requested } => write!(
                f,
                "an arena capacity of {requested} bytes is invalid: it must be non-zero \
                 and small enough to map"
            ),
            Error::MappingRegistryFull { slots } => write!(
                f,
                "the process already has {slots} secret-memory segments, as many as purge() can \
                 track; drop arenas that are no longer needed, or use fewer, larger arenas"
            ),
        }
    }
}

/// The `Display` advice first, then the fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} (")?;
        match *self {
            Error::SecretMemoryUnavailable { errno } => {
                f.debug_struct("SecretMemoryUnavailable").field("errno", &errno).finish()?
            }
            Error::MemlockBudget { requested, available, limit, errno } => f
                .debug_struct("MemlockBudget")
                .field("requested", &requested)
                .field("available", &available)
                .field("limit", &limit)
                .field("errno", &errno)
                .finish()?,
            Error::Syscall { step, errno } => {
                f.debug_struct("Syscall").field("step", &step).field("errno", &errno).finish()?
            }
            Error::InvalidCapacity { requested } => {
                f.debug_struct("InvalidCapacity").field("requested", &requested).finish()?
            }
            Error::MappingRegistryFull { slots } => {
                f.debug_struct("MappingRegistryFull").field("slots", &slots).finish()?
            }
        }
        f.write_str(")")
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let errno = match e {
            Error::SecretMemoryUnavailable { errno }
            | Error::MemlockBudget { errno, .. }
            | Error::Syscall { errno, .. } => errno,
            Error::InvalidCapacity { .. } => Errno::INVAL,
            Error::MappingRegistryFull { .. } => Errno::NOMEM,
        };
        std::io::Error::new(std::io::Error::from(errno).kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_message_says_what_to_do() {
        let e = Error::MemlockBudget {
            requested: 4 << 20,
            available: Some(1 << 20),
            limit: Some(8 << 20),
            errno: Errno::AGAIN,
        };
        let s = e.to_string();
        assert!(s.contains("needs 4 MiB"), "{s}");
        assert!(s.contains("only 1 MiB is left"), "{s}");
        assert!(s.contains("ulimit -l") && s.contains("LimitMEMLOCK=") && s.contains("CAP_IPC_LOCK"), "{s}");
    }

    #[test]
    fn debug_carries_the_advice() {
        let e = Error::MemlockBudget {
            requested: 4 << 20,
            available: Some(1 << 20),
            limit: Some(8 << 20),
            errno: Errno::AGAIN,
        };
        let debug = format!("{e:?}");
        assert!(debug.starts_with(&e.to_string()), "{debug}");
        assert!(debug.contains("MemlockBudget { requested: 4194304"), "{debug}");
        let e = Error::Syscall { step: Step::Map, errno: Errno::NOMEM };
        assert_eq!(format!("{e:?}"), format!("{e} (Syscall {{ step: Map, errno: {:?} }})", Errno::NOMEM));
    }

    #[test]
    fn bytes_format() {
        assert_eq!(Bytes(4096).to_string(), "4 KiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3 GiB");
        assert_eq!(Bytes(100).to_string(), "100 bytes");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
    }
}
