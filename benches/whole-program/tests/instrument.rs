//! The instrument's own checks: each binary really runs on the heap and the
//! backing it claims, the launcher really forces the fallback, a wrong
//! backing is a loud failure, and both heaps do the same work. Tiny inputs.

use std::process::{Command, Output};

const SECRET: &str = env!("CARGO_BIN_EXE_wp-secret");
const SYSTEM: &str = env!("CARGO_BIN_EXE_wp-system");
const SECCOMP: &str = env!("CARGO_BIN_EXE_wp-seccomp");
const SCALE: &str = "0.002";

fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0]).args(&cmd[1..]).env("RUST_BACKTRACE", "0").output().expect("spawn a bench binary")
}

/// The `key=value` field of the RESULT line.
fn field(out: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| {
        panic!("no RESULT line; status {:?}, stderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    let prefix = format!("{key}=");
    line.split(' ').find_map(|f| f.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key} in {line}")).to_string()
}

/// The children lock up to ~1.1 MiB at this scale (sort); under a smaller
/// RLIMIT_MEMLOCK without CAP_IPC_LOCK they would abort on allocation
/// failure, which is what the budget means, not a fault of the instrument.
const BUDGET_NEEDED: usize = 2 << 20;

fn budget_allows(test: &str) -> bool {
    match secret_arena::memlock_budget().available() {
        Some(avail) if avail < BUDGET_NEEDED => {
            println!(
                "SKIPPED {test}: {} KiB of RLIMIT_MEMLOCK left, the children need {} KiB",
                avail >> 10,
                BUDGET_NEEDED >> 10
            );
            false
        }
        _ => true,
    }
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "status {:?}, stderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

#[test]
fn secret_heap_uses_memfd_secret() {
    if !budget_allows("secret_heap_uses_memfd_secret") {
        return;
    }
    if let Err(errno) = secret_arena::memfd_secret_available() {
        // As in the library's suite: where memfd_secret must exist, its absence is a failure.
        assert!(std::env::var_os("SECRET_ARENA_REQUIRE_SECRET").is_none(), "memfd_secret is unavailable: {errno}");
        println!("SKIPPED secret_heap_uses_memfd_secret: memfd_secret is not available here ({errno})");
        return;
    }
    let out = run(&[SECRET, "tokio", "--scale", SCALE, "--expect-backing", "secretmem"]);
    assert_ok(&out);
    assert_eq!(field(&out, "backing"), "secretmem");
    assert_ne!(field(&out, "locked_kib"), "0", "the arena's mapping is locked");
}

#[test]
fn launcher_forces_the_fallback() {
    if !budget_allows("launcher_forces_the_fallback") {
        return;
    }
    for errno in ["ENOSYS", "EPERM"] {
        let out =
            run(&[SECCOMP, "--errno", errno, "--", SECRET, "tokio", "--scale", SCALE, "--expect-backing", "memfd"]);
        assert_ok(&out);
        assert_eq!(field(&out, "backing"), "memfd", "under the {errno} filter");
    }
}

#[test]
fn the_wrong_backing_fails_loudly() {
    if !budget_allows("the_wrong_backing_fails_loudly") {
        return;
    }
    let out = run(&[SECCOMP, "--", SECRET, "tokio", "--scale", SCALE, "--expect-backing", "secretmem"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAIL: expected backing secretmem, but this run used memfd"), "{stderr}");

    let out = run(&[SYSTEM, "tokio", "--scale", SCALE, "--expect-backing", "memfd"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(field(&out, "backing"), "none", "System maps no arena");
}

#[test]
fn both_heaps_do_the_same_work() {
    if !budget_allows("both_heaps_do_the_same_work") {
        return;
    }
    for w in whole_program::workloads::ALL {
        let system = run(&[SYSTEM, w, "--scale", SCALE, "--expect-backing", "none"]);
        let secret = run(&[SECCOMP, "--", SECRET, w, "--scale", SCALE, "--expect-backing", "memfd"]);
        assert_ok(&system);
        assert_ok(&secret);
        assert_eq!(field(&system, "check"), field(&secret, "check"), "{w}");
    }
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(run(&[SECRET, "nonsense"]).status.code(), Some(2));
    assert_eq!(run(&[SECRET, "json", "--scale", "-1"]).status.code(), Some(2));
    assert_eq!(run(&[SECCOMP, "--errno", "EINVAL", "--", SYSTEM, "json"]).status.code(), Some(2));
    assert_eq!(run(&[SECCOMP, SYSTEM]).status.code(), Some(2));
}
