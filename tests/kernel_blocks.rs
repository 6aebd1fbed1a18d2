//! The kernel cannot read secret memory: every path that goes through the
//! kernel's page tables (get-user-pages) fails on secret backing, and reads
//! the secret on the fallback, which is the control that shows each check can
//! fail. The owner's own plain system calls are not blocked, and a test says
//! so.

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use common::{Kind, Sandbox, arena, is_child, last_errno, pattern, read_bytes, secret_block};
use secret_arena::Errno;

const LEN: usize = 256;
const NULL: *mut libc::c_void = core::ptr::null_mut();

/// `process_vm_readv` of our own secret: EFAULT, or the secret on the fallback.
fn process_vm_readv_self(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let got = vm_readv(std::process::id() as libc::pid_t, block.as_ptr() as usize, LEN);
    match kind {
        Kind::Secret => assert_eq!(got, Err(Errno::FAULT), "process_vm_readv read secret memory"),
        Kind::Fallback => assert_eq!(got, Ok(pattern(LEN, seed)), "the control read wrong bytes"),
    }
}

#[test]
fn process_vm_readv_self_secret_efault() {
    process_vm_readv_self(this_test!(), Kind::Secret);
}

#[test]
fn process_vm_readv_self_fallback_reads() {
    process_vm_readv_self(this_test!(), Kind::Fallback);
}

fn vm_readv(pid: libc::pid_t, addr: usize, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` describes `buf`, which we own; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Reading and writing our own secret through `/proc/self/mem`: EIO both
/// ways, or on the fallback the secret read and a write that lands.
fn proc_self_mem(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let addr = block.as_ptr() as u64;
    let mem = OpenOptions::new().read(true).write(true).open("/proc/self/mem").expect("open /proc/self/mem");
    let mut buf = vec![0u8; LEN];
    let read = mem.read_at(&mut buf, addr).map_err(|e| Errno::from_io_error(&e));
    let write = mem.write_at(&[0x5A; 8], addr).map_err(|e| Errno::from_io_error(&e));
    // SAFETY: the block is live and LEN bytes long.
    let now = unsafe { read_bytes(block.as_ptr(), LEN) };
    match kind {
        Kind::Secret => {
            assert_eq!(read, Err(Some(Errno::IO)), "/proc/self/mem read secret memory");
            assert_eq!(write, Err(Some(Errno::IO)), "/proc/self/mem wrote secret memory");
            assert_eq!(now, pattern(LEN, seed), "the secret changed");
        }
        Kind::Fallback => {
            assert_eq!(read, Ok(LEN));
            assert_eq!(buf, pattern(LEN, seed), "the control read wrong bytes");
            assert_eq!(write, Ok(8));
            assert_eq!(now[..8], [0x5A; 8], "the control's write did not land");
        }
    }
}

#[test]
fn proc_self_mem_secret_eio() {
    proc_self_mem(this_test!(), Kind::Secret);
}

#[test]
fn proc_self_mem_fallback_reads_and_writes() {
    proc_self_mem(this_test!(), Kind::Fallback);
}

/// `/proc/self/map_files/<range>` as root: ENXIO on secret memory; on the
/// fallback it opens the memfd itself, which reads the secret, has its size
/// sealed, and cannot be resized or sealed further.
fn map_files(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let vma = common::vma_containing(block.as_ptr() as usize).expect("the block is mapped");
    let path = format!("/proc/self/map_files/{:x}-{:x}", vma.start, vma.end);
    let file = OpenOptions::new().read(true).write(true).open(&path);
    let file = match (kind, file) {
        (_, Err(e)) if e.raw_os_error() == Some(libc::EPERM) && !is_root() => {
            common::skip(case, "map_files needs CAP_SYS_ADMIN, and this test is not root");
            return;
        }
        (Kind::Secret, Err(e)) => {
            assert_eq!(Errno::from_io_error(&e), Some(Errno::NXIO), "{path}: {e}");
            return;
        }
        (Kind::Secret, Ok(_)) => panic!("{path}: secret memory opened through map_files"),
        (Kind::Fallback, file) => file.unwrap_or_else(|e| panic!("{path}: {e}")),
    };
    let offset = (block.as_ptr() as usize - vma.start) as u64;
    let mut buf = vec![0u8; LEN];
    file.read_exact_at(&mut buf, offset).expect("read the memfd");
    assert_eq!(buf, pattern(LEN, seed), "the memfd does not hold the secret");

    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    assert!(seals >= 0, "F_GET_SEALS: {}", last_errno());
    let must = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    assert_eq!(seals & must, must, "seals {seals:#x} lack SEAL|SHRINK|GROW");
    assert_eq!(seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE), 0, "seals {seals:#x} forbid writing");
    // SAFETY: as above.
    let truncate = unsafe { libc::ftruncate(fd, 0) };
    assert_eq!((truncate, last_errno()), (-1, Errno::PERM), "the sealed memfd could be shrunk");
    let len = file.metadata().expect("fstat").len();
    // SAFETY: as above.
    let grow = unsafe { libc::ftruncate(fd, (len * 2) as libc::off_t) };
    assert_eq!((grow, last_errno()), (-1, Errno::PERM), "the sealed memfd could be grown");
    // SAFETY: as above.
    let add = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
    assert_eq!((add, last_errno()), (-1, Errno::PERM), "seals could still be added");
    assert_eq!(file.metadata().expect("fstat").len(), len);
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn map_files_secret_enxio() {
    map_files(this_test!(), Kind::Secret);
}

#[test]
fn map_files_fallback_sealed() {
    map_files(this_test!(), Kind::Fallback);
}

/// `vmsplice` of the secret into a pipe: the kernel would have to pin the
/// pages, which it cannot for secret memory (EFAULT); the fallback's pages
/// go into the pipe.
fn vmsplice(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let (reader, writer) = pipe();
    let iov = libc::iovec { iov_base: block.as_ptr().cast(), iov_len: LEN };
    // SAFETY: `iov` describes the live block; the kernel checks it.
    let n = unsafe { libc::vmsplice(writer.as_raw_fd(), &iov, 1, 0) };
    match kind {
        Kind::Secret => assert_eq!((n, last_errno()), (-1, Errno::FAULT), "vmsplice took secret pages"),
        Kind::Fallback => {
            assert_eq!(n, LEN as isize, "vmsplice control: {}", last_errno());
            let mut buf = vec![0u8; LEN];
            assert_eq!(rustix::io::read(&reader, &mut buf), Ok(LEN));
            assert_eq!(buf, pattern(LEN, seed), "vmsplice control read wrong bytes");
        }
    }
}

#[test]
fn vmsplice_secret_efault() {
    vmsplice(this_test!(), Kind::Secret);
}

#[test]
fn vmsplice_fallback_reads() {
    vmsplice(this_test!(), Kind::Fallback);
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2: {}", last_errno());
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Not a protection: the owner can still copy its secret out with an
/// ordinary system call. `write(2)` to a pipe works on both backings.
fn owner_write(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let seed = common::fresh_seed();
    let block = secret_block(&arena, LEN, seed);
    let (reader, writer) = pipe();
    // SAFETY: the block is live and LEN bytes long.
    let n = unsafe { libc::write(writer.as_raw_fd(), block.as_ptr().cast(), LEN) };
    assert_eq!(n, LEN as isize, "write(2) of the owner's own secret memory: {}", last_errno());
    let mut buf = vec![0u8; LEN];
    assert_eq!(rustix::io::read(&reader, &mut buf), Ok(LEN));
    assert_eq!(buf, pattern(LEN, seed));
}

#[test]
fn owner_write_is_not_blocked_secret() {
    owner_write(this_test!(), Kind::Secret);
}

#[test]
fn owner_write_is_not_blocked_fallback() {
    owner_write(this_test!(), Kind::Fallback);
}

/// Another process (our parent test, as root) looks at a child's secret:
/// `PTRACE_PEEKDATA` from the tracing parent, `process_vm_readv` and
/// `/proc/<pid>/mem`. Each fails on secret backing; each reads the secret on
/// the fallback.
fn other_process(case: &str, kind: Kind) {
    if let Some(reason) = common::ptrace_forbidden(false) {
        common::skip(case, &reason);
        return;
    }
    if is_child(case) {
        let budget = common::budget();
        let Some(arena) = arena(case, &budget, kind, 64 << 10) else {
            println!("NO-SECRET");
            return;
        };
        let seed: u64 = std::env::var("SEED").expect("SEED").parse().expect("a number");
        let block = secret_block(&arena, LEN, seed);
        println!("ADDR {:x}", block.as_ptr() as usize);
        // Wait for the parent to finish looking.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("read stdin");
        // SAFETY: the block is live and LEN bytes long.
        assert_eq!(unsafe { read_bytes(block.as_ptr(), LEN) }, pattern(LEN, seed), "the secret changed");
        return;
    }
    let seed = common::fresh_seed();
    let mut child = Sandbox::new(case).env("SEED", seed).command().stdin(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if let Some(hex) = line.trim().strip_prefix("ADDR ") {
            addr = Some(usize::from_str_radix(hex, 16).unwrap());
            break;
        }
        if line.trim() == "NO-SECRET" {
            break;
        }
        line.clear();
    }
    let Some(addr) = addr else {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "child failed: {seen}{}", String::from_utf8_lossy(&out.stderr));
        assert!(kind == Kind::Secret && seen.contains("NO-SECRET"), "child printed no address:\n{seen}");
        common::relay_skips(&out.stderr);
        return;
    };
    let secret = pattern(LEN, seed);

    let readv = vm_readv(pid, addr, LEN);
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buf = vec![0u8; LEN];
    let mem_read = mem.read_at(&mut buf, addr as u64).map_err(|e| Errno::from_io_error(&e));

    // SAFETY: ptrace with integer arguments; the kernel checks permissions.
    let attached = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, NULL, NULL) };
    assert_eq!(attached, 0, "PTRACE_ATTACH: {}", last_errno());
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(waited, pid, "waitpid: {}", last_errno());
    assert!(libc::WIFSTOPPED(status), "the child did not stop for the tracer: {status:#x}");
    // SAFETY: __errno_location is this thread's errno; PEEKDATA returns the
    // word, or -1 with errno set, so errno must be cleared first.
    let peek = unsafe {
        *libc::__errno_location() = 0;
        libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr as *mut libc::c_void, NULL)
    };
    let peek_errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: as for PTRACE_ATTACH; the child is stopped and traced by us.
    let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, NULL, NULL) };
    assert_eq!(detached, 0, "PTRACE_DETACH: {}", last_errno());

    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    println!("child output:\n{seen}{rest}");
    assert!(status.success() && rest.contains("1 passed"), "child failed: {status}\n{seen}{rest}");

    let word = i64::from_le_bytes(secret[..8].try_into().unwrap()) as libc::c_long;
    match kind {
        Kind::Secret => {
            assert_eq!(readv, Err(Errno::FAULT), "process_vm_readv read another process's secret");
            assert_eq!(mem_read, Err(Some(Errno::IO)), "/proc/<pid>/mem read another process's secret");
            assert_eq!((peek, peek_errno), (-1, libc::EIO), "PTRACE_PEEKDATA read a secret word");
        }
        Kind::Fallback => {
            assert_eq!(readv, Ok(secret.clone()), "process_vm_readv control");
            assert_eq!(mem_read, Ok(LEN), "/proc/<pid>/mem control");
            assert_eq!(buf, secret, "/proc/<pid>/mem control");
            assert_eq!((peek, peek_errno), (word, 0), "PTRACE_PEEKDATA control read the wrong word");
        }
    }
}

#[test]
fn other_process_secret_blocked() {
    other_process(this_test!(), Kind::Secret);
}

#[test]
fn other_process_fallback_reads() {
    other_process(this_test!(), Kind::Fallback);
}
