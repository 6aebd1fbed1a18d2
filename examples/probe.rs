//! What protection does this machine give? Run with `cargo run --example probe`.

use std::process::ExitCode;

use allocator_api2::vec::Vec;
use secret_arena::{Backing, Errno, SecretArena};

fn main() -> ExitCode {
    println!("secret-arena probe\n");

    // 1. The kernel's answer to memfd_secret(2).
    match secret_arena::memfd_secret_available() {
        Ok(()) => println!("memfd_secret(2):     available"),
        Err(Errno::NOSYS) => println!(
            "memfd_secret(2):     missing (ENOSYS): kernel older than 5.14, CONFIG_SECRETMEM=n, \
             or secretmem.enable=0 (it is on by default only since 6.5)"
        ),
        Err(Errno::PERM) => println!("memfd_secret(2):     forbidden (EPERM): a seccomp profile blocks it"),
        Err(e) => println!("memfd_secret(2):     failed: {e}"),
    }

    // 2. The memlock budget.
    let budget = secret_arena::memlock_budget();
    let limit = budget.limit.map_or("unlimited".to_string(), |l| format!("{} KiB", l / 1024));
    let locked = budget.locked.map_or("unknown".to_string(), |l| format!("{} KiB", l / 1024));
    print!("RLIMIT_MEMLOCK:      {limit}, {locked} locked already");
    if budget.cap_ipc_lock {
        print!(" (CAP_IPC_LOCK held: the limit is not enforced)");
    }
    println!();

    // 3. Which backing an arena gets.
    let arena = match SecretArena::new(64 * 1024) {
        Ok(a) => a,
        Err(e) => {
            println!("arena:               cannot be created: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("arena backing:       {}", arena.backing().describe());

    // 4. Can the kernel read the arena? process_vm_readv on ourselves.
    let mut secret = Vec::new_in(&arena);
    secret.extend_from_slice(b"probe-secret-0123456789abcdef!!!");
    let mut out = [0u8; 32];
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: secret.as_mut_ptr().cast(), iov_len: secret.len() };
    // SAFETY: both iovecs describe live buffers of the stated lengths.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    let errno = std::io::Error::last_os_error();
    let blocked = match (n, arena.backing()) {
        (-1, _) if errno.raw_os_error() == Some(libc::EFAULT) => {
            println!("kernel read check:   process_vm_readv gives EFAULT: the kernel cannot read these pages");
            true
        }
        (-1, _) => {
            println!("kernel read check:   process_vm_readv failed unexpectedly: {errno}");
            false
        }
        (_, Backing::MemfdSecret) => {
            println!("kernel read check:   UNEXPECTED: process_vm_readv read {n} bytes of secret memory");
            false
        }
        _ => {
            println!(
                "kernel read check:   process_vm_readv read {n} bytes: the fallback stays in the kernel's direct map"
            );
            false
        }
    };

    // 5. Collections in the arena.
    let mut keys = hashbrown::HashMap::new_in(&arena);
    keys.insert("session", [0x11u8; 32]);
    keys.insert("signing", [0x22u8; 32]);
    let mut v = Vec::new_in(&arena);
    v.extend(0u32..1000);
    let s = arena.stats();
    println!(
        "demo:                a Vec of {} u32 and a HashMap of {} keys in the arena; {} bytes in use, {} committed, {} segment(s)",
        v.len(),
        keys.len(),
        s.in_use,
        s.committed,
        s.segments
    );
    drop((v, keys, secret));

    println!();
    match (arena.backing(), blocked) {
        (Backing::MemfdSecret, true) => {
            println!("verdict: full protection: secrets are locked, never dumped, not inherited by fork,");
            println!("         and removed from the kernel's direct map.");
        }
        (Backing::MlockedMemfd, _) => {
            println!("verdict: degraded: secrets are locked, never dumped and not inherited by fork,");
            println!("         but the kernel, ptrace and root can read them. Use BackingPolicy::RequireSecret");
            println!("         to refuse this.");
        }
        _ => println!("verdict: unexpected results above; please report them."),
    }
    ExitCode::SUCCESS
}
