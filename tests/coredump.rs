//! Core dumps: a child that holds a known secret and aborts leaves a core
//! file without the secret, on both backings. The control puts the same kind
//! of secret in ordinary heap memory and finds it in the core, so the search
//! can fail.
//!
//! Needs a `core_pattern` that writes a file into the crashing process's
//! directory; with a pipe (systemd-coredump, apport) or an absolute path the
//! tests skip and say why.

mod common;

use std::path::PathBuf;

use common::{Kind, Sandbox, arena, assert_child_killed_by, is_child, pattern};

const LEN: usize = 256;

#[derive(Clone, Copy, Debug)]
enum Holder {
    Heap,
    Arena(Kind),
}

fn core_case(case: &str, holder: Holder) {
    if is_child(case) {
        let seed: u64 = std::env::var("SEED").expect("SEED").parse().expect("a number");
        match holder {
            Holder::Heap => {
                let mut heap: Vec<u8> = Vec::with_capacity(LEN);
                // SAFETY: the vector has room for LEN bytes.
                unsafe { common::fill_pattern(heap.as_mut_ptr(), LEN, seed) };
                std::hint::black_box(&heap);
                println!("ABORTING with RLIMIT_CORE {}", core_limit().0);
                std::process::abort();
            }
            Holder::Arena(kind) => {
                let budget = common::budget();
                let Some(arena) = arena(case, &budget, kind, 64 << 10) else {
                    println!("NO-SECRET");
                    return;
                };
                common::secret_block(&arena, LEN, seed);
                std::hint::black_box(&arena);
                println!("ABORTING with RLIMIT_CORE {}", core_limit().0);
                std::process::abort();
            }
        }
    }

    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let core_pattern = core_pattern.trim();
    if core_pattern.starts_with('|') || core_pattern.contains('/') || core_pattern.is_empty() {
        common::skip(
            case,
            &format!(
                "core_pattern is {core_pattern:?}: cores do not land in the child's directory, where this test looks"
            ),
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("secret-arena-core-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the core directory");
    let _cleanup = RemoveOnDrop(dir.clone());
    let seed = common::fresh_seed();
    let out = Sandbox::new(case).core_dumps_in(dir.clone()).env("SEED", seed).run();
    if String::from_utf8_lossy(&out.stdout).contains("NO-SECRET") {
        common::assert_child_passed(&out);
        // The child said why; run() passed it on.
        return;
    }
    assert_child_killed_by(&out, libc::SIGABRT);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let core = match files.as_slice() {
        [core] => std::fs::read(core).expect("read the core file"),
        [] => {
            use std::os::unix::process::ExitStatusExt;
            assert!(!out.status.core_dumped(), "the kernel says it dumped core, but not into {dir:?}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let child_soft: Option<u64> =
                stdout.lines().find_map(|l| l.strip_prefix("ABORTING with RLIMIT_CORE ")).and_then(|v| v.parse().ok());
            let hard = core_limit().1;
            // No core file fits under a page: a soft limit that small under a
            // hard limit that allows cores means something in the child
            // switched dumps off (AddressSanitizer sets 1 unless told
            // disable_coredump=0): not a reason to skip.
            const TOO_SMALL: u64 = 4096;
            assert!(
                hard < TOO_SMALL || child_soft.is_some_and(|soft| soft >= TOO_SMALL),
                "the child aborted with RLIMIT_CORE {child_soft:?} though the hard limit is {hard}: \
                 something turned core dumps off"
            );
            common::skip(
                case,
                &format!(
                    "no core was written (the child's RLIMIT_CORE: {}, hard limit {hard}; core_pattern {core_pattern:?})",
                    child_soft.map_or("?".to_owned(), |v| v.to_string())
                ),
            );
            return;
        }
        more => panic!("expected one core file, found {more:?}"),
    };
    assert!(core.starts_with(b"\x7fELF"), "not an ELF core file");
    let secret = pattern(LEN, seed);
    let found = contains(&core, &secret);
    println!("{holder:?}: core of {} KiB, secret found: {found}", core.len() >> 10);
    match holder {
        Holder::Heap => assert!(found, "the control secret in heap memory is not in the core: the search is broken"),
        Holder::Arena(kind) => assert!(!found, "the {kind:?} arena's secret is in the core dump"),
    }
}

/// This process's `RLIMIT_CORE`, soft and hard.
fn core_limit() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w[0] == needle[0] && w == needle)
}

#[test]
fn core_dump_contains_heap_secret_control() {
    core_case(this_test!(), Holder::Heap);
}

#[test]
fn core_dump_omits_secret_arena() {
    core_case(this_test!(), Holder::Arena(Kind::Secret));
}

#[test]
fn core_dump_omits_fallback_arena() {
    core_case(this_test!(), Holder::Arena(Kind::Fallback));
}
