//! The whole-program benchmark of secret-arena: each workload runs in its
//! own process, built once with `SecretGlobalAlloc` (`wp-secret`) and once
//! with `System` (`wp-system`). A run prints one `RESULT` line with the
//! timed phase's wall, user and sys time and the backing that was actually
//! used, read from `/proc/self/smaps`; `--expect-backing` turns a different
//! backing into a loud failure. `scripts/whole-program.sh` drives it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

pub mod data;
pub mod workloads;

/// Which global allocator the binary was built with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Heap {
    /// `#[global_allocator] SecretGlobalAlloc`.
    Secret,
    /// `#[global_allocator] System`.
    System,
}

/// Wall, user and sys time of one phase; user and sys count every thread
/// of the process (`getrusage(RUSAGE_SELF)`).
#[derive(Default)]
pub struct Timer {
    start: Option<(Instant, Duration, Duration)>,
    /// (wall, user, sys) of the phase, once stopped.
    pub elapsed: Option<(Duration, Duration, Duration)>,
}

fn cpu_times() -> (Duration, Duration) {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call.
    let ret = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(ret, 0, "getrusage(RUSAGE_SELF) failed: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

impl Timer {
    pub fn start(&mut self) {
        assert!(self.start.is_none(), "a workload starts its timer once");
        // The memlock report tells an abort while preparing from one in the phase by this line.
        eprintln!("timed phase starts");
        let (user, sys) = cpu_times();
        self.start = Some((Instant::now(), user, sys));
    }

    pub fn stop(&mut self) {
        let wall = Instant::now();
        let (user, sys) = cpu_times();
        let (w0, u0, s0) = self.start.expect("timer started before it stops");
        self.elapsed = Some((wall - w0, user - u0, sys - s0));
    }
}

/// The backing of the secret arena's mappings in `/proc/self/smaps`.
fn smaps_backing() -> Result<(&'static str, usize, u64), String> {
    let smaps =
        std::fs::read_to_string("/proc/self/smaps").map_err(|e| format!("cannot read /proc/self/smaps: {e}"))?;
    let (mut secret, mut memfd, mut locked_kib) = (0usize, 0usize, 0u64);
    let mut in_arena = false;
    for line in smaps.lines() {
        // A mapping's header: "start-end perms offset dev inode [path]".
        let is_header = line.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':'));
        if is_header {
            in_arena = false;
            if line.ends_with("/secretmem (deleted)") {
                secret += 1;
                in_arena = true;
            } else if line.ends_with("/memfd:secret-arena (deleted)") {
                memfd += 1;
                in_arena = true;
            }
        } else if in_arena && let Some(rest) = line.strip_prefix("Locked:") {
            locked_kib += rest.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(match (secret, memfd) {
        (0, 0) => ("none", 0, 0),
        (n, 0) => ("secretmem", n, locked_kib),
        (0, n) => ("memfd", n, locked_kib),
        _ => return Err(format!("both backings mapped: {secret} /secretmem and {memfd} /memfd:secret-arena segments")),
    })
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const USAGE: &str = "usage: wp-secret|wp-system WORKLOAD [--scale F] [--expect-backing secretmem|memfd|none]
workloads: json regex sort tokio hashmap btreemap";

/// Runs the workload named on the command line; exit status 3 if the
/// backing is not the one expected.
pub fn main(heap: Heap) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut name = None;
    let mut scale = 1.0f64;
    let mut expect = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => match it.next().and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0) {
                Some(s) => scale = s,
                None => return usage("--scale takes a positive number"),
            },
            "--expect-backing" => match it.next().map(String::as_str) {
                Some(b @ ("secretmem" | "memfd" | "none")) => expect = Some(b.to_string()),
                _ => return usage("--expect-backing takes secretmem, memfd or none"),
            },
            w if name.is_none() && workloads::ALL.contains(&w) => name = Some(w.to_string()),
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let Some(name) = name else { return usage("no workload named") };

    // The heap must be the one the binary claims: a block from `Box::new`
    // lies in SecretGlobalAlloc's heap arena exactly when built with it.
    let probe = Box::new(0x5eu8);
    if heap == Heap::Secret {
        match secret_arena::SecretGlobalAlloc::arena() {
            Some(arena) if arena.contains(&*probe) => {}
            Some(_) => return fail("a Box is not in the secret heap: SecretGlobalAlloc is not the global allocator"),
            None => return fail("SecretGlobalAlloc's heap does not exist: it is not the global allocator"),
        }
    }
    drop(probe);

    let mut timer = Timer::default();
    let Some(check) = workloads::run(&name, scale, &mut timer) else { return usage("unknown workload") };
    let Some((wall, user, sys)) = timer.elapsed else { return fail("the workload never stopped its timer") };

    let (backing, segments, locked_kib) = match smaps_backing() {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    // The arena's own answer must agree with the kernel's.
    if heap == Heap::Secret {
        let arena = secret_arena::SecretGlobalAlloc::arena().expect("checked above");
        let said = match arena.backing() {
            secret_arena::Backing::MemfdSecret => "secretmem",
            _ => "memfd",
        };
        if said != backing {
            return fail(&format!("the arena says {said} but /proc/self/smaps shows {backing}"));
        }
        eprintln!(
            "{name}: arena capacity {} MiB in {} segments, {} KiB locked",
            arena.capacity() >> 20,
            segments,
            locked_kib
        );
    }
    let heap_name = if heap == Heap::Secret { "secret" } else { "system" };
    println!(
        "RESULT workload={name} heap={heap_name} backing={backing} wall_s={:.4} user_s={:.4} sys_s={:.4} \
         segments={segments} locked_kib={locked_kib} vmhwm_kib={} check={check}",
        wall.as_secs_f64(),
        user.as_secs_f64(),
        sys.as_secs_f64(),
        status_kib("VmHWM"),
    );
    if let Some(expect) = expect
        && expect != backing
    {
        return fail(&format!("expected backing {expect}, but this run used {backing}"));
    }
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!("{why}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(why: &str) -> ExitCode {
    eprintln!("FAIL: {why}");
    ExitCode::from(3)
}
