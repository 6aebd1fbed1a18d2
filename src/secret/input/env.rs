//! `SecretString::from_env`: an environment variable taken into secret
//! memory and wiped where the C library keeps it.

use std::io;

use allocator_api2::alloc::Allocator;

use super::{into_string, no_memory};
use crate::global::DefaultArena;
use crate::secret::string::SecretString;
use crate::secret::vec::SecretVec;

impl SecretString {
    /// Takes the environment variable `name` into secret memory and
    /// removes it from the environment, overwriting its value where it was
    /// stored, so that neither `getenv` nor `/proc/self/environ` show it
    /// any more.
    ///
    /// The value is copied from the C library's `environ` array straight
    /// into secret memory (never through `std::env::var`, which would copy
    /// it into an ordinary `String`), every occurrence of `name=` (up to 8:
    /// an `execve` environment may repeat a name) has its value bytes
    /// zeroed in place, and the variable is then removed with
    /// [`std::env::remove_var`]. The first occurrence is the one taken, as
    /// `getenv` would return it.
    ///
    /// Copies the program made before (with `std::env::var`, or a parent
    /// that still holds the value) are out of its reach.
    ///
    /// # Errors
    ///
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput) when `name` is empty
    ///   or contains `=` or NUL;
    /// - [`NotFound`](io::ErrorKind::NotFound) when the variable is not set;
    /// - [`InvalidData`](io::ErrorKind::InvalidData) when its value is not
    ///   UTF-8 (the variable is then left as it was);
    /// - [`OutOfMemory`](io::ErrorKind::OutOfMemory) when the arena cannot
    ///   hold it (left as it was).
    ///
    /// # Safety
    ///
    /// As [`std::env::remove_var`]: no other thread may read or write the
    /// environment during the call, through std or otherwise (`getenv` in C
    /// code, DNS resolution, locale functions). Call it early in `main`,
    /// before starting threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// // SAFETY: single-threaded doctest.
    /// unsafe { std::env::set_var("DEMO_TOKEN", "t0ken") };
    /// // SAFETY: as above.
    /// let token = unsafe { SecretString::from_env("DEMO_TOKEN") }?;
    /// assert_eq!(token.expose_secret(), "t0ken");
    /// assert!(std::env::var_os("DEMO_TOKEN").is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub unsafe fn from_env(name: &str) -> io::Result<SecretString> {
        // SAFETY: the caller's contract, passed on.
        unsafe { SecretString::from_env_in(name, DefaultArena) }
    }
}

impl<A: Allocator + Clone> SecretString<A> {
    /// As [`from_env`](SecretString::from_env), into memory from `alloc`.
    ///
    /// # Errors
    ///
    /// As [`from_env`](SecretString::from_env).
    ///
    /// # Safety
    ///
    /// As [`from_env`](SecretString::from_env).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretString};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// // SAFETY: single-threaded doctest.
    /// assert!(unsafe { SecretString::from_env_in("SURELY_NOT_SET_1234", &arena) }.is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub unsafe fn from_env_in(name: &str, alloc: A) -> io::Result<SecretString<A>> {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an environment variable name: it must be non-empty, without '=' or NUL"),
            ));
        }
        // SAFETY: the caller guarantees that no other thread touches the
        // environment, so the entries stay valid while we read them.
        let values = unsafe { env_values(name.as_bytes()) };
        let Some(&(first, first_len)) = values.first() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("environment variable {name} is not set")));
        };
        // SAFETY: as above: `first` points at `first_len` bytes of a live
        // environment string.
        let value = unsafe { core::slice::from_raw_parts(first, first_len) };
        if let Err(e) = core::str::from_utf8(value) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "environment variable {name} is not UTF-8 (at byte {}); it was left as it was",
                    e.valid_up_to()
                ),
            ));
        }
        let mut v = SecretVec::new_in(alloc);
        v.try_extend_from_slice(value).map_err(|_| no_memory(first_len))?;
        for (ptr, len) in values {
            // SAFETY: `ptr..ptr + len` are the value bytes of a live
            // environment string (writable: the kernel's initial copy on the
            // stack, or setenv's heap copy); no reference to them exists and,
            // by the caller's contract, no other thread reads them.
            unsafe { crate::wipe::wipe(ptr.cast_mut(), len) };
        }
        // SAFETY: the caller's contract is remove_var's.
        unsafe { std::env::remove_var(name) };
        into_string(v)
    }
}

unsafe extern "C" {
    /// The C library's environment: a null-terminated array of
    /// `NAME=value` strings.
    static environ: *const *const libc::c_char;
}

/// Where the value of every `name=` entry of `environ` is: (first byte,
/// length), in order. Holds at most 8 occurrences (duplicates are legal in
/// an `execve` environment but rare), without allocating.
///
/// # Safety
///
/// No other thread may modify the environment during the call, nor while
/// the returned pointers are used.
unsafe fn env_values(name: &[u8]) -> EnvHits {
    let mut hits = EnvHits { items: [(core::ptr::null(), 0); 8], len: 0 };
    // SAFETY: reading the `environ` pointer; the caller excludes writers.
    let mut entry = unsafe { environ };
    if entry.is_null() {
        return hits;
    }
    loop {
        // SAFETY: `entry` points into the null-terminated environ array.
        let s = unsafe { *entry };
        if s.is_null() {
            break;
        }
        // SAFETY: every environ entry is a NUL-terminated C string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes();
        if bytes.len() > name.len() && bytes.starts_with(name) && bytes[name.len()] == b'=' && hits.len < 8 {
            let value = &bytes[name.len() + 1..];
            hits.items[hits.len] = (value.as_ptr(), value.len());
            hits.len += 1;
        }
        // SAFETY: not yet at the terminating null, so the next slot exists.
        entry = unsafe { entry.add(1) };
    }
    hits
}

/// Up to 8 (pointer, length) pairs.
struct EnvHits {
    items: [(*const u8, usize); 8],
    len: usize,
}

impl EnvHits {
    fn first(&self) -> Option<&(*const u8, usize)> {
        self.items[..self.len].first()
    }
}

impl IntoIterator for EnvHits {
    type Item = (*const u8, usize);
    type IntoIter = core::iter::Take<core::array::IntoIter<(*const u8, usize), 8>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().take(self.len)
    }
}
