//! Footprint of many live 32-byte secrets, per crate, printed as markdown.
//!
//! For each crate a child process (this binary, re-executed with
//! `SECRET_ARENA_FOOTPRINT_CASE=<subject>:<count>`) allocates up to `count`
//! 32-byte secrets, writes each, and holds them all; then frees them all.
//! It reports the time for both, and at the peak and after freeing: open
//! fds (entries of /proc/self/fd), VmLck and VmRSS (/proc/self/status) and
//! mappings (lines of /proc/self/maps), as differences from a snapshot taken
//! before the allocator was created. Each crate runs in its own child, so
//! one's failure or leak cannot affect another's numbers.
//!
//! Two settings:
//! - **root**, with CAP_IPC_LOCK: N = 10,000 and 100,000. Our arena is sized
//!   to exactly the payload rounded up to pages, plus a growable row.
//! - **unprivileged**: the child drops CAP_IPC_LOCK from its bounding set,
//!   gets RLIMIT_MEMLOCK = 8 MiB and becomes uid/gid 65534 before exec; each
//!   crate holds as many as it can, up to 300,000. Crates that ignore
//!   `mlock` failures keep going: their VmLck shows how many are locked.
//!
//! Run: `cargo bench --bench footprint` (needs root for the second setting).

use std::alloc::System;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::ptr::NonNull;
use std::time::Instant;

use allocator_api2::alloc::{Allocator, Layout};
use secmem_alloc::sec_alloc::SecStackSinglePageAlloc;
use secmem_alloc::zeroizing_alloc::ZeroizeAlloc;
use secret_arena::{BackingPolicy, SecretArena};

const CASE_ENV: &str = "SECRET_ARENA_FOOTPRINT_CASE";
const SECRET: usize = 32;
const PAGE: usize = 4096;
const UNPRIV_CAP: usize = 300_000;
const UNPRIV_MEMLOCK: u64 = 8 << 20;
const NOBODY: u32 = 65534;

/// Every allocator measured, by the name used on the command line.
const ROOT_SUBJECTS: &[&str] = &[
    "arena-memfd_secret-exact",
    "arena-fallback-exact",
    "arena-memfd_secret-grow",
    "arena-fallback-grow",
    "memsec-malloc_sized",
    "memsec-memfd_secret_sized",
    "secmem-SecStackSinglePageAlloc",
    "secmem-ZeroizeAlloc<System>",
    "System",
];
const UNPRIV_SUBJECTS: &[&str] = &[
    "arena-memfd_secret-grow",
    "arena-fallback-grow",
    "arena-global",
    "memsec-malloc_sized",
    "memsec-memfd_secret_sized",
    "secmem-SecStackSinglePageAlloc",
    "secmem-ZeroizeAlloc<System>",
    "System",
];

fn main() {
    match std::env::var(CASE_ENV) {
        Ok(case) => child(&case),
        Err(_) => parent(),
    }
}

// ----- what a child measures -----

#[derive(Clone, Copy, Default)]
struct Snapshot {
    fds: i64,
    vmlck_kib: i64,
    vmrss_kib: i64,
    maps: i64,
}

/// Reads /proc/self without needing a new mapping or a spare fd at the
/// moment of measuring: a crate that exhausted `vm.max_map_count` or
/// RLIMIT_NOFILE must still be measurable.
struct Probe {
    /// Big enough for /proc/self/maps at the 65,530-mapping limit, reserved
    /// before the baseline so that reading never grows it.
    buf: String,
    /// An fd held back and closed just before each read, so one is free.
    spare: Option<std::fs::File>,
}

impl Probe {
    fn new() -> Probe {
        Probe { buf: String::with_capacity(32 << 20), spare: None }
    }

    fn read(&mut self, path: &str) -> &str {
        use std::io::Read;
        self.buf.clear();
        let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        f.read_to_string(&mut self.buf).unwrap_or_else(|e| panic!("read {path}: {e}"));
        &self.buf
    }

    /// Takes a snapshot; the spare fd is not counted.
    fn take(&mut self) -> Snapshot {
        let had_spare = self.spare.take().is_some();
        let status = self.read("/proc/self/status");
        let field = |name: &str| -> i64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1)
        };
        let (vmlck_kib, vmrss_kib) = (field("VmLck:"), field("VmRSS:"));
        let maps = self.read("/proc/self/maps").lines().count() as i64;
        // read_dir's own fd is counted in every snapshot alike.
        let fds = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count() as i64;
        if had_spare || self.spare.is_none() {
            self.spare = std::fs::File::open("/dev/null").ok();
        }
        Snapshot { fds, vmlck_kib, vmrss_kib, maps }
    }
}

impl Snapshot {
    fn minus(self, base: Snapshot) -> Snapshot {
        Snapshot {
            fds: self.fds - base.fds,
            vmlck_kib: self.vmlck_kib - base.vmlck_kib,
            vmrss_kib: self.vmrss_kib - base.vmrss_kib,
            maps: self.maps - base.maps,
        }
    }

    fn encode(self, tag: &str) -> String {
        format!(
            "{tag}_fds={}\t{tag}_lck={}\t{tag}_rss={}\t{tag}_maps={}",
            self.fds, self.vmlck_kib, self.vmrss_kib, self.maps
        )
    }
}

/// Holds 32-byte secrets of one crate.
trait Holder {
    /// Allocates and writes one more secret; `Err` says why it could not.
    fn push(&mut self) -> Result<(), String>;
    /// Frees every secret held, keeping the allocator itself.
    fn clear(&mut self);
}

fn layout() -> Layout {
    Layout::from_size_align(SECRET, 8).expect("valid layout")
}

/// Writes a whole secret, so its page is really touched.
fn fill(p: NonNull<u8>, seed: usize) {
    // SAFETY: every caller passes a live block of at least SECRET bytes.
    unsafe { p.as_ptr().write_bytes(seed as u8 | 1, SECRET) };
    std::hint::black_box(p);
}

/// Any allocator-api2 allocator; `arena` adds its `last_error` to failures.
struct ApiHolder<A: Allocator> {
    a: A,
    arena: Option<&'static SecretArena>,
    live: Vec<NonNull<u8>>,
}

impl<A: Allocator> Holder for ApiHolder<A> {
    fn push(&mut self) -> Result<(), String> {
        match self.a.allocate(layout()) {
            Ok(b) => {
                let p = b.cast::<u8>();
                fill(p, self.live.len());
                self.live.push(p);
                Ok(())
            }
            Err(_) => Err(match self.arena.and_then(SecretArena::last_error) {
                Some(e) => format!("AllocError: {e}"),
                None => "AllocError".to_string(),
            }),
        }
    }

    fn clear(&mut self) {
        for p in self.live.drain(..) {
            // SAFETY: allocated from `self.a` with `layout()`, freed once.
            unsafe { self.a.deallocate(p, layout()) };
        }
    }
}

#[derive(Clone, Copy)]
enum MemsecKind {
    Malloc,
    Memfd,
}

struct MemsecHolder {
    kind: MemsecKind,
    live: Vec<NonNull<u8>>,
}

impl Holder for MemsecHolder {
    fn push(&mut self) -> Result<(), String> {
        // SAFETY: memsec's contract: each block is freed once, by its own free.
        let got = unsafe {
            match self.kind {
                MemsecKind::Malloc => memsec::malloc_sized(SECRET),
                MemsecKind::Memfd => memsec::memfd_secret_sized(SECRET),
            }
        };
        match got {
            Some(b) => {
                let p = b.cast::<u8>();
                fill(p, self.live.len());
                self.live.push(p);
                Ok(())
            }
            // memsec returns None right after the failing syscall.
            None => Err(format!("None ({})", io::Error::last_os_error())),
        }
    }

    fn clear(&mut self) {
        for p in self.live.drain(..) {
            // SAFETY: returned by the matching memsec allocation, freed once.
            unsafe {
                match self.kind {
                    MemsecKind::Malloc => memsec::free(p),
                    MemsecKind::Memfd => memsec::free_memfd_secret(p),
                }
            }
        }
    }
}

/// secmem-alloc's locked allocator holds one page; a user with more secrets
/// needs one more allocator (one more mmap + mlock) per full page.
struct SecmemPages {
    pages: Vec<SecStackSinglePageAlloc>,
    live: Vec<NonNull<u8>>,
    /// `owner[i]`: index in `pages` of the allocator that holds `live[i]`.
    owner: Vec<u32>,
}

impl Holder for SecmemPages {
    fn push(&mut self) -> Result<(), String> {
        if let Some(a) = self.pages.last() {
            if let Ok(b) = a.allocate(layout()) {
                fill(b.cast(), self.live.len());
                self.live.push(b.cast());
                self.owner.push(self.pages.len() as u32 - 1);
                return Ok(());
            }
        }
        let a = SecStackSinglePageAlloc::new().map_err(|e| format!("new page: {e}"))?;
        let b = a.allocate(layout()).map_err(|_| "AllocError on a fresh page".to_string())?;
        fill(b.cast(), self.live.len());
        self.pages.push(a);
        self.live.push(b.cast());
        self.owner.push(self.pages.len() as u32 - 1);
        Ok(())
    }

    fn clear(&mut self) {
        for (p, i) in self.live.drain(..).zip(self.owner.drain(..)) {
            // SAFETY: allocated from `pages[i]` with `layout()`, freed once.
            unsafe { self.pages[i as usize].deallocate(p, layout()) };
        }
    }
}

fn leak_arena(builder: secret_arena::SecretArenaBuilder) -> Result<&'static SecretArena, String> {
    builder.build().map(|a| &*Box::leak(Box::new(a))).map_err(|e| format!("build: {e}"))
}

fn arena_holder(arena: &'static SecretArena, live: Vec<NonNull<u8>>) -> Box<dyn Holder> {
    Box::new(ApiHolder { a: arena, arena: Some(arena), live })
}

/// An empty vector with room for `n` whose pages are already touched, so
/// that bookkeeping does not show up as the allocator's memory.
/// `v` must not be all-zero bytes, or `vec!` would get lazily zeroed
/// (untouched) pages from calloc.
fn touched<T: Copy>(n: usize, v: T) -> Vec<T> {
    let mut out = vec![v; n];
    out.clear();
    out
}

/// Creates the subject's allocator, sized for `n` secrets where that
/// applies. `live` and `owner` are the holder's pre-touched bookkeeping.
fn make(
    subject: &str,
    n: usize,
    unprivileged: bool,
    live: Vec<NonNull<u8>>,
    owner: Vec<u32>,
) -> Result<Box<dyn Holder>, String> {
    let payload_pages = (n * SECRET).div_ceil(PAGE) * PAGE;
    let grow_max = if unprivileged { UNPRIV_MEMLOCK as usize } else { 64 << 20 };
    let grow = |policy| SecretArena::builder().capacity(256 << 10).max_capacity(grow_max).policy(policy);
    let exact = |policy| SecretArena::builder().capacity(payload_pages).policy(policy);
    Ok(match subject {
        "arena-memfd_secret-exact" => arena_holder(leak_arena(exact(BackingPolicy::RequireSecret))?, live),
        "arena-fallback-exact" => arena_holder(leak_arena(exact(BackingPolicy::ForceFallback))?, live),
        "arena-memfd_secret-grow" => arena_holder(leak_arena(grow(BackingPolicy::RequireSecret))?, live),
        "arena-fallback-grow" => arena_holder(leak_arena(grow(BackingPolicy::ForceFallback))?, live),
        "arena-global" => arena_holder(secret_arena::global().map_err(|e| format!("global: {e}"))?, live),
        "memsec-malloc_sized" => Box::new(MemsecHolder { kind: MemsecKind::Malloc, live }),
        "memsec-memfd_secret_sized" => Box::new(MemsecHolder { kind: MemsecKind::Memfd, live }),
        "secmem-SecStackSinglePageAlloc" => {
            Box::new(SecmemPages { pages: Vec::with_capacity(n / 128 + 1), live, owner })
        }
        "secmem-ZeroizeAlloc<System>" => Box::new(ApiHolder { a: ZeroizeAlloc::new(System), arena: None, live }),
        "System" => Box::new(ApiHolder { a: System, arena: None, live }),
        other => return Err(format!("unknown subject {other}")),
    })
}

/// Runs one case and prints one tab-separated `key=value` line.
fn child(case: &str) {
    let mut parts = case.splitn(3, ':');
    let subject = parts.next().unwrap_or_default();
    let n: usize = parts.next().and_then(|s| s.parse().ok()).expect("case is subject:count:mode");
    let unprivileged = parts.next() == Some("unpriv");
    let (live, owner) = (touched(n, NonNull::<u8>::dangling()), touched(n, u32::MAX));
    // Before the allocator exists: its own mappings and locked memory count.
    let mut probe = Probe::new();
    probe.take();
    let base = probe.take();
    let mut holder = match make(subject, n, unprivileged, live, owner) {
        Ok(h) => h,
        Err(e) => {
            println!("held=0\terr={}", e.replace('\t', " "));
            return;
        }
    };
    let mut err = String::new();
    let t = Instant::now();
    let mut held = 0;
    while held < n {
        match holder.push() {
            Ok(()) => held += 1,
            Err(e) => {
                err = e;
                break;
            }
        }
    }
    let alloc_time = t.elapsed();
    let peak = probe.take().minus(base);
    let t = Instant::now();
    holder.clear();
    let free_time = t.elapsed();
    let after = probe.take().minus(base);
    println!(
        "held={held}\talloc_ms={:.3}\tfree_ms={:.3}\t{}\t{}\terr={}",
        alloc_time.as_secs_f64() * 1e3,
        free_time.as_secs_f64() * 1e3,
        peak.encode("peak"),
        after.encode("after"),
        err.replace('\t', " ")
    );
}

// ----- the parent: one child per case, then the tables -----

/// Drops CAP_IPC_LOCK for good, caps locked memory at 8 MiB, and becomes
/// nobody; runs in the forked child just before exec.
fn unprivileged(cmd: &mut Command) {
    // SAFETY: the closure only makes raw syscalls (prctl, setrlimit,
    // setgroups, setgid, setuid), which are async-signal-safe, and touches
    // no lock or allocation of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::thread::remove_capability_from_bounding_set(rustix::thread::CapabilitySet::IPC_LOCK)?;
            let lim = libc::rlimit { rlim_cur: UNPRIV_MEMLOCK, rlim_max: UNPRIV_MEMLOCK };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0
                || libc::setgroups(0, core::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

struct Row {
    subject: String,
    fields: Vec<(String, String)>,
}

impl Row {
    fn get(&self, k: &str) -> &str {
        self.fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    fn num(&self, k: &str) -> i64 {
        self.get(k).parse().unwrap_or(0)
    }
}

fn run_case(subject: &str, n: usize, unpriv: bool) -> Row {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.env(CASE_ENV, format!("{subject}:{n}:{}", if unpriv { "unpriv" } else { "root" }));
    if unpriv {
        unprivileged(&mut cmd);
    }
    let fields = match cmd.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .split('\t')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or_default().to_string();
            vec![("held".into(), "?".into()), ("err".into(), format!("child died: {} {last}", out.status))]
        }
        Err(e) => vec![("held".into(), "?".into()), ("err".into(), format!("spawn: {e}"))],
    };
    Row { subject: subject.to_string(), fields }
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    println!(
        "| crate | held | alloc all ms | free all ms | peak fds | peak VmLck KiB | VmLck / payload pages | peak VmRSS KiB | peak maps | after free: fds / VmLck / VmRSS / maps | stopped by |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let held = r.num("held").max(0) as usize;
        let payload_kib = ((held * SECRET).div_ceil(PAGE) * PAGE / 1024) as f64;
        let ratio = if held > 0 { format!("{:.2}", r.num("peak_lck") as f64 / payload_kib) } else { "-".into() };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} |",
            r.subject,
            r.get("held"),
            r.get("alloc_ms"),
            r.get("free_ms"),
            r.get("peak_fds"),
            r.get("peak_lck"),
            ratio,
            r.get("peak_rss"),
            r.get("peak_maps"),
            r.get("after_fds"),
            r.get("after_lck"),
            r.get("after_rss"),
            r.get("after_maps"),
            if r.get("err").is_empty() { "-" } else { r.get("err") },
        );
    }
}

fn parent() {
    let uid = rustix::process::getuid();
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    println!("## Footprint of live 32-byte secrets");
    println!(
        "\nValues are differences from a snapshot taken before the allocator was created. RLIMIT_NOFILE soft limit: {:?}. \"after free\" keeps the allocator alive.",
        nofile.current
    );
    for n in [10_000, 100_000] {
        let rows: Vec<Row> = ROOT_SUBJECTS.iter().map(|s| run_case(s, n, false)).collect();
        print_table(&format!("N = {n}, as uid {} (CAP_IPC_LOCK as inherited)", uid.as_raw()), &rows);
    }
    if !uid.is_root() {
        println!("\n(not root: the unprivileged table needs root to drop to uid {NOBODY}; skipped)");
        return;
    }
    let rows: Vec<Row> = UNPRIV_SUBJECTS.iter().map(|s| run_case(s, UNPRIV_CAP, true)).collect();
    print_table(
        &format!(
            "Unprivileged (uid {NOBODY}, no CAP_IPC_LOCK, RLIMIT_MEMLOCK 8 MiB): how many of {UNPRIV_CAP} each holds"
        ),
        &rows,
    );
}
