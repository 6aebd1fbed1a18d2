//! Reading secrets in: from any reader, a file, a systemd credential, the
//! environment and the terminal, each straight into secret memory.
//!
//! Every reader here hands the kernel (or the [`Read`] implementation) a
//! slice of secret memory to fill: no intermediate buffer on the heap or the
//! stack ever holds the secret. A buffer grows as [`SecretVec`] does (the
//! old block is wiped before it is freed), and on any error everything read
//! so far is wiped before the error is returned.
//!
//! What these functions cannot control is buffering *inside* the reader: a
//! `BufReader` (and so [`std::io::Stdin`], which has an 8 KiB one) copies
//! the input into its own heap buffer first, and never wipes it. To read
//! stdin without that copy, read its file descriptor:
//! `std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?)`.

use std::io::{self, Read};
use std::path::Path;

use allocator_api2::alloc::Allocator;
use rustix::fs::{Mode, OFlags};

use crate::global::DefaultArena;
use crate::secret::boxed::ExposeSecret;
use crate::secret::boxed::ExposeSecretMut;
use crate::secret::string::SecretString;
use crate::secret::vec::SecretVec;

mod env;
mod tty;

/// Largest file [`SecretVec::read_file`] reads: 16 MiB.
///
/// # Examples
///
/// ```
/// // A larger file is refused with a clear error, never truncated.
/// assert_eq!(secret_arena::READ_FILE_MAX, 16 << 20);
/// ```
pub const READ_FILE_MAX: usize = 16 << 20;

/// Zeros to extend a buffer with before reading into it.
static ZEROS: [u8; 4096] = [0; 4096];

/// An `io::Error` for a secret buffer that could not grow.
pub(super) fn no_memory(len: usize) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, format!("secret memory could not grow to hold {len} bytes of input"))
}

/// Grows `v` by `n` zero bytes (one reallocation at most, which wipes the
/// old block) and returns the index of the first new byte.
pub(super) fn extend_zeroed<A: Allocator + Clone>(v: &mut SecretVec<A>, n: usize) -> io::Result<usize> {
    let start = v.len();
    v.try_reserve(n).map_err(|_| no_memory(start.saturating_add(n)))?;
    let mut left = n;
    while left > 0 {
        let step = left.min(ZEROS.len());
        // Within capacity: cannot reallocate.
        v.try_extend_from_slice(&ZEROS[..step]).map_err(|_| no_memory(start + n))?;
        left -= step;
    }
    Ok(start)
}

/// Reads from `reader` into `v` until end of input, reading at most
/// `limit` bytes in all; retries on `Interrupted`.
fn read_to_end_into<A: Allocator + Clone, R: Read + ?Sized>(
    v: &mut SecretVec<A>,
    reader: &mut R,
    limit: usize,
) -> io::Result<()> {
    while v.len() < limit {
        let spare = v.capacity() - v.len();
        let want = if spare > 0 { spare } else { v.capacity().clamp(256, 1 << 20) };
        let want = want.min(limit - v.len());
        let start = extend_zeroed(v, want)?;
        let got = loop {
            match reader.read(&mut v.expose_secret_mut()[start..]) {
                Ok(n) => break n.min(want),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        v.truncate(start + got);
        if got == 0 {
            return Ok(());
        }
    }
    Ok(())
}

fn too_long(max_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the secret is longer than the limit of {max_len} bytes; nothing was kept"),
    )
}

impl SecretVec {
    /// Reads `reader` to its end straight into secret memory, in chunks.
    ///
    /// # Errors
    ///
    /// - [`InvalidData`](io::ErrorKind::InvalidData) when the input is
    ///   longer than `max_len` bytes;
    /// - [`OutOfMemory`](io::ErrorKind::OutOfMemory) when the arena cannot
    ///   hold it;
    /// - any error of `reader` other than `Interrupted` (which is retried).
    ///
    /// On every error, all bytes read so far are wiped. The reader has then
    /// consumed an unspecified part of the input.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// let mut input: &[u8] = b"api-token-123";
    /// let token = SecretVec::read_from(&mut input, 64)?;
    /// assert_eq!(token.expose_secret(), b"api-token-123");
    ///
    /// let mut long: &[u8] = &[7; 100];
    /// assert!(SecretVec::read_from(&mut long, 64).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_from<R: Read>(reader: R, max_len: usize) -> io::Result<SecretVec> {
        SecretVec::read_from_in(reader, max_len, DefaultArena)
    }

    /// Reads a whole file into secret memory.
    ///
    /// The file is opened `O_CLOEXEC | O_NOCTTY | O_NONBLOCK` (so a FIFO
    /// cannot block the open), checked with `fstat` to be a regular file,
    /// and read straight into a buffer sized from its length. Symbolic links
    /// are followed; what is checked is the file itself.
    ///
    /// # Errors
    ///
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput) when `path` is not a
    ///   regular file (a directory, FIFO, socket or device);
    /// - [`InvalidData`](io::ErrorKind::InvalidData) when it is longer than
    ///   [`READ_FILE_MAX`](crate::READ_FILE_MAX);
    /// - the error of `open(2)` or `read(2)`, with the path in the message.
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretVec};
    ///
    /// # let dir = std::env::temp_dir().join(format!("sa-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let path = dir.join("token");
    /// # std::fs::write(&path, b"s3cr3t")?;
    /// let token = SecretVec::read_file(&path)?;
    /// assert_eq!(token.expose_secret(), b"s3cr3t");
    /// assert!(SecretVec::read_file("/dev/null").is_err()); // not a regular file
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_file(path: impl AsRef<Path>) -> io::Result<SecretVec> {
        SecretVec::read_file_in(path, DefaultArena)
    }

    /// Reads the systemd service credential `name`: the file
    /// `$CREDENTIALS_DIRECTORY/name` (set up by `LoadCredential=`,
    /// `LoadCredentialEncrypted=`, `SetCredential=` or `ImportCredential=`),
    /// as [`read_file`](SecretVec::read_file) does.
    ///
    /// # Errors
    ///
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput) when `name` is
    ///   empty, contains `/`, `..` or a NUL byte;
    /// - [`NotFound`](io::ErrorKind::NotFound) when `CREDENTIALS_DIRECTORY`
    ///   is not set (the process was not started by systemd with a
    ///   credential), or when there is no credential by that name;
    /// - as [`read_file`](SecretVec::read_file).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::SecretVec;
    ///
    /// assert!(SecretVec::from_credential("../etc/shadow").is_err());
    /// match SecretVec::from_credential("db-password") {
    ///     Ok(_password) => println!("running under systemd with the credential"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// ```
    pub fn from_credential(name: &str) -> io::Result<SecretVec> {
        SecretVec::from_credential_in(name, DefaultArena)
    }
}

impl<A: Allocator + Clone> SecretVec<A> {
    /// As [`read_from`](SecretVec::read_from), into memory from `alloc`.
    ///
    /// # Errors
    ///
    /// As [`read_from`](SecretVec::read_from).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let key = SecretVec::read_from_in(&[1u8, 2, 3][..], 32, &arena)?;
    /// assert!(arena.contains(key.expose_secret().as_ptr()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_from_in<R: Read>(mut reader: R, max_len: usize, alloc: A) -> io::Result<SecretVec<A>> {
        let mut v = SecretVec::new_in(alloc);
        read_to_end_into(&mut v, &mut reader, max_len.saturating_add(1))?;
        if v.len() > max_len {
            return Err(too_long(max_len));
        }
        Ok(v)
    }

    /// As [`read_file`](SecretVec::read_file), into memory from `alloc`.
    ///
    /// # Errors
    ///
    /// As [`read_file`](SecretVec::read_file).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// assert!(SecretVec::read_file_in("/nonexistent", &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn read_file_in(path: impl AsRef<Path>, alloc: A) -> io::Result<SecretVec<A>> {
        let path = path.as_ref();
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| with_path(e.into()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| with_path(e.into()))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file; secrets are read only from regular files", path.display()),
            ));
        }
        let size = usize::try_from(stat.st_size).unwrap_or(usize::MAX);
        let mut v = SecretVec::new_in(alloc);
        // Room for the whole file and the zero-byte read that ends it, so
        // the secret is never moved.
        v.try_reserve(size.min(READ_FILE_MAX).saturating_add(1)).map_err(|_| no_memory(size))?;
        let mut file = std::fs::File::from(fd);
        read_to_end_into(&mut v, &mut file, READ_FILE_MAX + 1).map_err(with_path)?;
        if v.len() > READ_FILE_MAX {
            return Err(with_path(too_long(READ_FILE_MAX)));
        }
        Ok(v)
    }

    /// As [`from_credential`](SecretVec::from_credential), into memory
    /// from `alloc`.
    ///
    /// # Errors
    ///
    /// As [`from_credential`](SecretVec::from_credential).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{SecretArena, SecretVec};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// assert!(SecretVec::from_credential_in("a/b", &arena).is_err());
    /// # Ok::<(), secret_arena::Error>(())
    /// ```
    pub fn from_credential_in(name: &str, alloc: A) -> io::Result<SecretVec<A>> {
        if name.is_empty() || name.contains('/') || name.contains("..") || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a credential name: it must be non-empty, without '/', \"..\" or NUL"),
            ));
        }
        let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "credential {name:?}: CREDENTIALS_DIRECTORY is not set; the process must be started by \
                     systemd with LoadCredential=, SetCredential= or ImportCredential= for it"
                ),
            ));
        };
        let path = Path::new(&dir).join(name);
        SecretVec::read_file_in(&path, alloc).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                io::ErrorKind::NotFound,
                format!("no credential {name:?} in CREDENTIALS_DIRECTORY ({}): {e}", Path::new(&dir).display()),
            ),
            _ => e,
        })
    }
}

/// Removes the last UTF-8 character (or stray byte) of `v`, wiping it.
pub(super) fn pop_char<A: Allocator>(v: &mut SecretVec<A>) {
    let bytes = v.expose_secret();
    let mut end = bytes.len();
    while end > 0 {
        end -= 1;
        // Stop at the first byte that is not a continuation byte.
        if bytes[end] & 0xC0 != 0x80 {
            break;
        }
    }
    v.truncate(end);
}

pub(super) fn into_string<A: Allocator>(v: SecretVec<A>) -> io::Result<SecretString<A>> {
    SecretString::from_utf8_secret(v).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the secret is not valid UTF-8 (at byte {}); nothing was kept", e.valid_up_to()),
        )
    })
}

impl SecretString {
    /// Reads one line from `reader` straight into secret memory, byte by
    /// byte so that nothing past the newline is consumed. The newline (and
    /// a `\r` before it) is not kept. End of input ends the line too.
    ///
    /// # Errors
    ///
    /// - [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) when the input
    ///   ends before any byte;
    /// - [`InvalidData`](io::ErrorKind::InvalidData) when the line is longer
    ///   than `max_len` bytes or not UTF-8;
    /// - as [`SecretVec::read_from`].
    ///
    /// On every error, the bytes read so far are wiped (and the rest of an
    /// over-long line is left unread).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let mut input: &[u8] = b"hunter2\r\nnext line";
    /// let password = SecretString::read_line_from(&mut input, 64)?;
    /// assert_eq!(password.expose_secret(), "hunter2");
    /// assert_eq!(input, b"next line");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_line_from<R: Read>(reader: R, max_len: usize) -> io::Result<SecretString> {
        SecretString::read_line_from_in(reader, max_len, DefaultArena)
    }

    /// Reads a password from the controlling terminal (`/dev/tty`) with
    /// echo off, after writing `prompt` to it.
    ///
    /// Line editing is the terminal's: backspace (`VERASE`), kill-line
    /// (`VKILL`); a `^H` or `DEL` that reaches the program anyway also
    /// deletes the last character. The bytes go from the kernel straight
    /// into secret memory, one at a time.
    ///
    /// The terminal's settings are restored on every path: success, error,
    /// a panic (through a drop guard), and a `SIGINT`, `SIGTERM`, `SIGHUP`
    /// or `SIGQUIT` during the read: a handler installed for the duration
    /// restores the terminal, puts the program's own disposition of that
    /// signal back and raises it again, so the program sees the signal as
    /// if this function were not there (by default: it dies, with its
    /// terminal echoing again). A signal the program handles makes this
    /// function return [`Interrupted`](io::ErrorKind::Interrupted).
    /// Concurrent calls are serialised.
    ///
    /// Not handled: `SIGTSTP` (`^Z`) stops the program with echo still off
    /// until it is continued; `SIGKILL` cannot be handled.
    ///
    /// # Errors
    ///
    /// - the error of opening `/dev/tty` (`ENXIO`: no controlling terminal),
    ///   with a message saying so;
    /// - [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) on end of input
    ///   (`^D`) before any character;
    /// - [`Interrupted`](io::ErrorKind::Interrupted), see above;
    /// - [`InvalidData`](io::ErrorKind::InvalidData) for input that is not
    ///   UTF-8 or longer than 4096 bytes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use secret_arena::{ExposeSecret, SecretString};
    ///
    /// let password = SecretString::read_password("Password: ")?;
    /// println!("{} characters", password.expose_secret().chars().count());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_password(prompt: &str) -> io::Result<SecretString> {
        SecretString::read_password_in(prompt, DefaultArena)
    }
}

impl<A: Allocator + Clone> SecretString<A> {
    /// As [`read_line_from`](SecretString::read_line_from), into memory
    /// from `alloc`.
    ///
    /// # Errors
    ///
    /// As [`read_line_from`](SecretString::read_line_from).
    ///
    /// # Examples
    ///
    /// ```
    /// use secret_arena::{ExposeSecret, SecretArena, SecretString};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let pin = SecretString::read_line_from_in(&b"1234\n"[..], 8, &arena)?;
    /// assert_eq!(pin.expose_secret(), "1234");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_line_from_in<R: Read>(mut reader: R, max_len: usize, alloc: A) -> io::Result<SecretString<A>> {
        let mut v = SecretVec::new_in(alloc);
        let mut any = false;
        loop {
            let at = extend_zeroed(&mut v, 1)?;
            let got = match reader.read(&mut v.expose_secret_mut()[at..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    v.truncate(at);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if got == 0 {
                v.truncate(at);
                if !any {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of input before a line"));
                }
                break;
            }
            any = true;
            if v.expose_secret()[at] == b'\n' {
                v.truncate(at);
                if v.expose_secret().last() == Some(&b'\r') {
                    v.truncate(at - 1);
                }
                break;
            }
            if v.len() > max_len.saturating_add(1) {
                return Err(too_long(max_len));
            }
        }
        if v.len() > max_len {
            return Err(too_long(max_len));
        }
        into_string(v)
    }

    /// As [`read_password`](SecretString::read_password), into memory from
    /// `alloc`.
    ///
    /// # Errors
    ///
    /// As [`read_password`](SecretString::read_password).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use secret_arena::{SecretArena, SecretString};
    ///
    /// let arena = SecretArena::new(64 << 10)?;
    /// let password = SecretString::read_password_in("Password: ", &arena)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_password_in(prompt: &str, alloc: A) -> io::Result<SecretString<A>> {
        let mut v = SecretVec::new_in(alloc);
        tty::read_password_into(prompt, &mut v)?;
        into_string(v)
    }
}
