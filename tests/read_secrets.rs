//! The readers take secrets straight into secret memory: after each call,
//! and after the secret is dropped, a scan of the ordinary heap, stacks and
//! anonymous mappings (`heapscan`) does not find it. The control puts the
//! same kind of marker in a `String` and finds it, so the scan can fail.
//!
//! Error paths: nothing read is left behind. A recording allocator checks
//! every block the reader frees for the marker, independently of the
//! arena's own wipe.

mod common;
mod heapscan;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator, Global};
use common::{Sandbox, assert_child_passed, is_child};
use core::alloc::Layout;
use core::ptr::NonNull;
use heapscan::{Marker, assert_in_heap, assert_not_in_heap, find_in_heap, seed};
use secret_arena::{ExposeSecret, SecretString, SecretVec};

/// A socket whose peer has sent `prefix`, the marker, `suffix`, and closed.
fn socket_with(marker: &Marker, prefix: &[u8], suffix: &[u8]) -> UnixStream {
    let (mut tx, rx) = UnixStream::pair().unwrap();
    tx.write_all(prefix).unwrap();
    marker.write_to(&mut tx);
    tx.write_all(suffix).unwrap();
    drop(tx);
    rx
}

#[test]
fn control_the_scan_finds_a_marker_in_a_string() {
    let marker = Marker::new(seed(1), 40);
    assert_not_in_heap(&marker, "before the control");
    let mut s = marker.on_heap();
    assert_in_heap(&marker, "a String holding the marker");
    zeroize::Zeroize::zeroize(&mut s);
    assert_not_in_heap(&marker, "after zeroizing the control");
}

#[test]
fn read_from_leaves_no_heap_copy() {
    let marker = Marker::new(seed(2), 40);
    // 5000 bytes of filler first, so the buffer grows (and moves) several times.
    let filler = vec![b'.'; 5000];
    let v = SecretVec::read_from(socket_with(&marker, &filler, b""), 1 << 20).unwrap();
    assert_eq!(v.len(), 5040);
    assert!(marker.matches(&v.expose_secret()[5000..]));
    assert!(secret_arena::global().unwrap().contains(v.expose_secret().as_ptr()));
    assert_not_in_heap(&marker, "after SecretVec::read_from");
    drop(v);
    assert_not_in_heap(&marker, "after dropping it");
}

#[test]
fn read_line_from_stops_at_the_newline_and_leaves_no_heap_copy() {
    let marker = Marker::new(seed(3), 32);
    let mut rx = socket_with(&marker, b"", b"\r\nthe rest");
    let line = SecretString::read_line_from(&mut rx, 64).unwrap();
    assert!(marker.matches(line.expose_secret().as_bytes()));
    let mut rest = String::new();
    rx.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "the rest", "read past the newline");
    assert_not_in_heap(&marker, "after SecretString::read_line_from");
    drop(line);
    assert_not_in_heap(&marker, "after dropping it");
}

/// An allocator over the global heap that counts freed blocks that still
/// hold the marker.
struct ScanOnFree<'m> {
    marker: &'m Marker,
    dirty: AtomicUsize,
    live: AtomicUsize,
}

// SAFETY: every call is passed to `Global`; `deallocate` only reads the
// block before freeing it.
unsafe impl Allocator for ScanOnFree<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.live.fetch_add(1, Ordering::Relaxed);
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller hands back a live block of `layout.size()` bytes.
        let block = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), layout.size()) };
        if self.marker.found_in(block) {
            self.dirty.fetch_add(1, Ordering::Relaxed);
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed through.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

fn scan_on_free(marker: &Marker) -> ScanOnFree<'_> {
    ScanOnFree { marker, dirty: AtomicUsize::new(0), live: AtomicUsize::new(0) }
}

#[test]
fn over_long_input_is_an_error_and_leaves_nothing_behind() {
    let marker = Marker::new(seed(4), 40);
    let alloc = scan_on_free(&marker);
    let err = SecretVec::read_from_in(socket_with(&marker, &[b'.'; 600], b"tail"), 620, &alloc).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("limit of 620 bytes"), "{err}");
    assert_eq!(alloc.live.load(Ordering::Relaxed), 0, "a block was kept");
    assert_eq!(alloc.dirty.load(Ordering::Relaxed), 0, "a freed block still held the secret");

    // Exactly at the limit is fine.
    let ok = SecretVec::read_from_in(socket_with(&marker, b"", b""), 40, &alloc).unwrap();
    assert!(marker.matches(ok.expose_secret()));
    drop(ok);

    // The same for a line; and the control: a Vec freed unwiped is seen.
    let err = SecretString::read_line_from_in(socket_with(&marker, b"", b"\n"), 39, &alloc).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(alloc.dirty.load(Ordering::Relaxed), 0, "a freed line buffer still held the secret");
    let mut plain = allocator_api2::vec::Vec::new_in(&alloc);
    for i in 0..marker.len() {
        plain.push(marker.byte(i));
    }
    drop(plain);
    assert_eq!(alloc.dirty.load(Ordering::Relaxed), 1, "the control: an unwiped block must be seen");
}

/// A reader that fails after handing over some bytes.
struct FailingAfter<'m> {
    marker: &'m Marker,
    sent: usize,
}

impl Read for FailingAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent == self.marker.len() {
            return Err(std::io::Error::new(ErrorKind::ConnectionReset, "peer went away"));
        }
        buf[0] = self.marker.byte(self.sent);
        self.sent += 1;
        Ok(1)
    }
}

#[test]
fn reader_errors_are_passed_on_and_leave_nothing_behind() {
    let marker = Marker::new(seed(5), 24);
    let alloc = scan_on_free(&marker);
    let err = SecretVec::read_from_in(FailingAfter { marker: &marker, sent: 0 }, 100, &alloc).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    let err = SecretString::read_line_from_in(FailingAfter { marker: &marker, sent: 0 }, 100, &alloc).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!(alloc.live.load(Ordering::Relaxed), 0);
    assert_eq!(alloc.dirty.load(Ordering::Relaxed), 0, "a freed block still held the secret");
}

#[test]
fn read_line_errors() {
    // The plain heap: these check parsing, not memory, and need no budget.
    let arena = Global;
    let eof = SecretString::read_line_from_in(&b""[..], 10, arena).unwrap_err();
    assert_eq!(eof.kind(), ErrorKind::UnexpectedEof);
    let bad = SecretString::read_line_from_in(&b"ab\xffcd\n"[..], 10, arena).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidData);
    assert!(bad.to_string().contains("UTF-8"), "{bad}");
    let last = SecretString::read_line_from_in(&b"no newline"[..], 10, arena).unwrap();
    assert_eq!(last.expose_secret(), "no newline");
    let empty = SecretString::read_line_from_in(&b"\n"[..], 10, arena).unwrap();
    assert_eq!(empty.expose_secret(), "");
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("secret-arena-{tag}-{}-{}", std::process::id(), seed(9)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn read_file_leaves_no_heap_copy() {
    let marker = Marker::new(seed(6), 48);
    let dir = temp_dir("read-file");
    let path = dir.join("token");
    marker.write_to(&mut std::fs::File::create(&path).unwrap());
    let v = SecretVec::read_file(&path).unwrap();
    assert!(marker.matches(v.expose_secret()));
    assert!(v.capacity() <= marker.len() + 16, "sized from the file: {}", v.capacity());
    assert_not_in_heap(&marker, "after SecretVec::read_file");
    drop(v);
    assert_not_in_heap(&marker, "after dropping it");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_file_refuses_what_is_not_a_regular_file() {
    let dir = temp_dir("not-regular");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A FIFO without a writer would block a plain open: this must return.
    for path in [dir.as_path(), fifo.as_path(), std::path::Path::new("/dev/null")] {
        let err = SecretVec::read_file(path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}: {err}", path.display());
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    let missing = SecretVec::read_file(dir.join("missing")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert!(missing.to_string().contains("missing"), "the path is named: {missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const CRED_SEED: &str = "SECRET_ARENA_TEST_SEED";

#[test]
fn from_credential_reads_the_systemd_credential() {
    let case = this_test!();
    if is_child(case) {
        let marker = Marker::new(std::env::var(CRED_SEED).unwrap().parse().unwrap(), 40);
        let v = SecretVec::from_credential("api-token").unwrap();
        assert!(marker.matches(v.expose_secret()));
        assert_not_in_heap(&marker, "after SecretVec::from_credential");
        drop(v);
        assert_not_in_heap(&marker, "after dropping it");
        let missing = SecretVec::from_credential("nope").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(missing.to_string().contains("no credential \"nope\""), "{missing}");
        return;
    }
    let s = seed(7);
    let marker = Marker::new(s, 40);
    let dir = temp_dir("credentials");
    marker.write_to(&mut std::fs::File::create(dir.join("api-token")).unwrap());
    let out = Sandbox::new(case).env("CREDENTIALS_DIRECTORY", dir.display()).env(CRED_SEED, s).run();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_child_passed(&out);
}

#[test]
fn from_credential_errors_are_clear() {
    for bad in ["", "a/b", "..", "x..y", "/etc/shadow"] {
        let err = SecretVec::from_credential(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    let case = this_test!();
    if is_child(case) {
        let err = SecretVec::from_credential("token").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
        return;
    }
    let mut cmd = Sandbox::new(case).command();
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    let out = cmd.output().unwrap();
    println!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_child_passed(&out);
}

const ENV_NAME: &str = "SECRET_ARENA_TEST_TOKEN";

#[test]
fn from_env_takes_the_value_and_wipes_the_original() {
    let case = this_test!();
    if is_child(case) {
        let marker = Marker::new(std::env::var(CRED_SEED).unwrap().parse().unwrap(), 40);
        let environ = || std::fs::read("/proc/self/environ").unwrap();
        // Controls: the value is where the kernel put it, and the scan sees
        // it there (the top of the main thread's stack).
        assert!(marker.found_in(&environ()), "the control: /proc/self/environ shows the value");
        let before = find_in_heap(&marker);
        assert!(before.iter().any(|h| h.mapping.ends_with("[stack]")), "the control: scan sees it");
        // A runtime that copied the environment before main (AddressSanitizer
        // keeps /proc/self/environ in a buffer of its own) leaves copies no
        // library can reach: then nothing here can be proved.
        if let Some(copy) = before.iter().find(|h| !h.mapping.ends_with("[stack]")) {
            common::skip(
                case,
                &format!("the environment was copied before main, outside this crate's reach: {}", copy.mapping),
            );
            return;
        }
        // SAFETY: libtest's main thread only waits for this test; nothing
        // else reads the environment now.
        let token = unsafe { SecretString::from_env(ENV_NAME) }.unwrap();
        assert!(marker.matches(token.expose_secret().as_bytes()));
        assert!(secret_arena::global().unwrap().contains(token.expose_secret().as_ptr()));
        assert!(!marker.found_in(&environ()), "/proc/self/environ still shows the value");
        assert!(std::env::var_os(ENV_NAME).is_none(), "the variable was not removed");
        assert_not_in_heap(&marker, "after SecretString::from_env");
        drop(token);
        assert_not_in_heap(&marker, "after dropping it");
        // SAFETY: as above.
        let missing = unsafe { SecretString::from_env(ENV_NAME) }.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        // SAFETY: as above.
        let bad = unsafe { SecretString::from_env("A=B") }.unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
        return;
    }
    let s = seed(8);
    let marker = Marker::new(s, 40);
    let out = Sandbox::new(case).env(ENV_NAME, marker.on_heap()).env(CRED_SEED, s).run();
    assert_child_passed(&out);
}

#[test]
fn from_env_leaves_a_non_utf8_value_alone() {
    let case = this_test!();
    if is_child(case) {
        // SAFETY: as in the test above.
        let err = unsafe { SecretString::from_env(ENV_NAME) }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(std::env::var_os(ENV_NAME).is_some(), "a value that was not taken must stay");
        return;
    }
    let mut cmd = Sandbox::new(case).command();
    cmd.env(ENV_NAME, <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"ab\xffcd"));
    let out = cmd.output().unwrap();
    assert_child_passed(&out);
}

/// A seccomp filter for this thread: `open`/`openat` without `O_CLOEXEC`
/// fail with EPERM, everything else is allowed.
fn forbid_opens_without_cloexec() {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    // struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }:
    // args[1] is at 24, args[2] at 32 (low halves, little-endian).
    #[cfg(target_arch = "x86_64")]
    let open_nr = libc::SYS_open as u32;
    #[cfg(not(target_arch = "x86_64"))]
    let open_nr = u32::MAX;
    let filter = [
        stmt(ld, 4),                                                                      // 0: arch
        jump(jeq, ARCH, 0, 8),                                                            // 1: else allow
        stmt(ld, 0),                                                                      // 2: nr
        jump(jeq, libc::SYS_openat as u32, 0, 2),                                         // 3: openat?
        stmt(ld, 32),                                                                     // 4: its flags
        stmt(libc::BPF_JMP | libc::BPF_JA, 2),                                            // 5: to the check
        jump(jeq, open_nr, 0, 3),                                                         // 6: open? else allow
        stmt(ld, 24),                                                                     // 7: its flags
        jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, libc::O_CLOEXEC as u32, 1, 0), // 8
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),  // 9
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),                       // 10
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: prctl with integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) }, 0);
    // SAFETY: `prog` points to `filter`, alive across the call; the kernel
    // copies it.
    let ret = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog as *const libc::sock_fprog)
    };
    assert_eq!(ret, 0, "install the seccomp filter: {}", common::last_errno());
}

/// `read_file` opens with `O_CLOEXEC`: under a filter that refuses any open
/// without it, a plain `open(2)` fails (the control) and `read_file` works.
#[test]
fn read_file_opens_with_cloexec() {
    let case = this_test!();
    if is_child(case) {
        let path = std::env::var("SECRET_ARENA_TEST_FILE").unwrap();
        forbid_opens_without_cloexec();
        let c = std::ffi::CString::new(path.clone()).unwrap();
        // SAFETY: a valid C path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        assert_eq!((fd, common::last_errno()), (-1, secret_arena::Errno::PERM), "the control open was allowed");
        let v = SecretVec::read_file(&path).expect("read_file under the filter");
        assert_eq!(v.expose_secret(), b"cloexec");
        return;
    }
    if !common::seccomp_supported() {
        return common::skip(case, "no seccomp filter for this architecture");
    }
    let dir = temp_dir("cloexec");
    let path = dir.join("secret");
    std::fs::write(&path, b"cloexec").unwrap();
    let out = Sandbox::new(case).env("SECRET_ARENA_TEST_FILE", path.display()).run();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_child_passed(&out);
}
