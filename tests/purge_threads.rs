//! `purge()` beside other threads, on both backings: it never touches an
//! unmapped range while arenas come and go (also when it runs in a signal
//! handler that interrupts an arena's drop on the same thread), it faults in
//! no page that was never handed out, and a full registry is an error at
//! arena creation.
//!
//! Every case runs in a re-executed child: a purge wipes every arena of the
//! process, which would disturb tests running beside it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use allocator_api2::alloc::Allocator;
use common::{Kind, Sandbox, arena, assert_child_passed, is_child, read_bytes, secret_block};
use core::alloc::Layout;
use secret_arena::{BackingPolicy, Error, SecretArena};

/// Bytes of the mapping at `addr` that are resident, from /proc/self/smaps.
fn rss_of(addr: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = a <= addr && addr < b;
            continue;
        }
        if inside && let Some(kb) = line.strip_prefix("Rss:") {
            return kb.trim().trim_end_matches(" kB").trim().parse::<usize>().unwrap() * 1024;
        }
    }
    panic!("no mapping contains {addr:#x}");
}

fn purge_faults_in_nothing(kind: Kind, case: &str) {
    let avail = secret_arena::memlock_budget().available();
    let capacity = avail.map_or(1 << 20, |a| (a / 2 / 4096 * 4096).min(1 << 20));
    if capacity < 32 << 10 {
        common::skip(case, &format!("needs 64 KiB of memlock budget, has {avail:?}"));
        return;
    }
    let touch = capacity / 4;
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, capacity) else { return };
    let block = secret_block(&arena, 64, 7);
    let base = block.as_ptr() as usize;
    let before = rss_of(base);
    assert!(before >= 4096, "the block's page is resident");
    secret_arena::purge();
    // SAFETY: the block is live and 64 bytes long.
    assert_eq!(unsafe { read_bytes(block.as_ptr(), 64) }, vec![0; 64], "{kind:?}: the block was not purged");
    let after = rss_of(base);
    assert_eq!(after, before, "{kind:?}: purge faulted in pages never handed out");
    // Control: touching pages does show up in Rss.
    let run = arena.allocate(Layout::from_size_align(touch, 4096).unwrap()).unwrap();
    // SAFETY: a live block of `touch` bytes.
    unsafe { run.cast::<u8>().as_ptr().write_bytes(1, touch) };
    assert!(rss_of(base) >= before + touch, "{kind:?}: Rss does not see touched pages");
}

#[test]
fn purge_faults_in_no_untouched_page_secret() {
    let case = this_test!();
    if is_child(case) {
        return purge_faults_in_nothing(Kind::Secret, case);
    }
    assert_child_passed(&Sandbox::new(case).run());
}

#[test]
fn purge_faults_in_no_untouched_page_fallback() {
    let case = this_test!();
    if is_child(case) {
        return purge_faults_in_nothing(Kind::Fallback, case);
    }
    assert_child_passed(&Sandbox::new(case).run());
}

static PURGES: AtomicUsize = AtomicUsize::new(0);
static IDS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

extern "C" fn purge_on_signal(_sig: libc::c_int) {
    secret_arena::purge();
    PURGES.fetch_add(1, Ordering::Relaxed);
}

/// Threads create, use and drop arenas while the main thread purges, both
/// directly and through a signal handler that runs on the churning threads
/// (so it interrupts their drops).
fn churn_while_purging(case: &str) {
    // SAFETY: a zeroed sigaction is "no flags, empty mask".
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = purge_on_signal as *const () as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa` is valid; the handler is async-signal-safe.
    assert_eq!(unsafe { libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut()) }, 0);
    // Large blocks make each purge's wipe long, so that a drop racing it
    // would unmap the range mid-wipe if deregistration did not wait.
    let (capacity, block) = match secret_arena::memlock_budget().available() {
        Some(a) if a < 256 << 10 => (4096, 256),
        Some(a) if a < 2 << 20 => (64 << 10, 32 << 10),
        _ => (512 << 10, 256 << 10),
    };
    let done = AtomicBool::new(false);
    let created = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (done, created) = (&done, &created);
                s.spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    IDS[t].store(unsafe { libc::pthread_self() } as usize, Ordering::SeqCst);
                    let policy = if t == 0 { BackingPolicy::PreferSecret } else { BackingPolicy::ForceFallback };
                    for i in 0..150u64 {
                        let arena = SecretArena::builder()
                            .capacity(capacity)
                            .policy(policy)
                            .build()
                            .unwrap_or_else(|e| panic!("{case}: {e}"));
                        let b = secret_block(&arena, block, i);
                        // SAFETY: a live block of `block` bytes.
                        let _ = unsafe { read_bytes(b.as_ptr(), 64) };
                        created.fetch_add(1, Ordering::Relaxed);
                        drop(arena);
                    }
                    done.store(true, Ordering::Relaxed);
                })
            })
            .collect();
        let mut direct = 0;
        while !done.load(Ordering::Relaxed) {
            secret_arena::purge();
            direct += 1;
            for (w, id) in workers.iter().zip(&IDS) {
                let id = id.load(Ordering::SeqCst);
                if id != 0 && !w.is_finished() {
                    // SAFETY: the thread has started and is joined only when
                    // the scope ends, so its pthread_t is still valid.
                    unsafe { libc::pthread_kill(id as libc::pthread_t, libc::SIGUSR1) };
                }
            }
        }
        for w in workers {
            w.join().unwrap();
        }
        println!("{direct} direct purges, {} in handlers", PURGES.load(Ordering::Relaxed));
    });
    assert_eq!(created.load(Ordering::Relaxed), 300);
    assert!(PURGES.load(Ordering::Relaxed) > 0, "no purge ran in a handler");
}

#[test]
fn purge_races_arena_creation_and_drop() {
    let case = this_test!();
    if is_child(case) {
        return churn_while_purging(case);
    }
    assert_child_passed(&Sandbox::new(case).run());
}

/// Fills the registry with one-page arenas: the next creation is a clear
/// error, and dropping one makes room again.
fn fill_registry(case: &str) {
    let need = secret_arena::MAX_MAPPINGS * 4096;
    if secret_arena::memlock_budget().available().is_some_and(|a| a < need + (64 << 10)) {
        common::skip(case, &format!("needs {need} bytes of memlock budget"));
        return;
    }
    let mut arenas = Vec::new();
    let err = loop {
        match SecretArena::builder().capacity(4096).policy(BackingPolicy::PreferSecret).build() {
            Ok(a) => arenas.push(a),
            Err(e) => break e,
        }
        assert!(arenas.len() <= secret_arena::MAX_MAPPINGS, "more arenas than registry slots");
    };
    assert_eq!(err, Error::MappingRegistryFull { slots: secret_arena::MAX_MAPPINGS }, "{err}");
    assert!(err.to_string().contains("purge()"), "{err}");
    assert_eq!(arenas.len(), secret_arena::MAX_MAPPINGS, "no other arena exists in this child");
    // An arena registers its one reservation when it is built, so growing
    // into it needs no new slot: growth still works with the table full, and
    // what it adds is still purged.
    arenas.pop();
    let growing = SecretArena::builder().capacity(4096).max_capacity(64 << 10).build().expect("room for one");
    assert!(SecretArena::new(4096).is_err(), "the table is full again");
    let blocks: Vec<_> =
        (0..4).map(|_| growing.allocate(Layout::from_size_align(4096, 4096).unwrap()).expect("growth")).collect();
    assert!(growing.capacity() > 4096, "the arena did not grow");
    for b in &blocks {
        // SAFETY: a live block of 4096 bytes.
        unsafe { b.cast::<u8>().as_ptr().write_bytes(0x5A, 4096) };
    }
    secret_arena::purge();
    for b in &blocks {
        // SAFETY: a live block of 4096 bytes.
        let bytes = unsafe { core::slice::from_raw_parts(b.cast::<u8>().as_ptr(), 4096) };
        assert!(bytes.iter().all(|&x| x == 0), "purge missed memory added by growth");
    }
    drop(growing);
    arenas.truncate(10);
    assert!(SecretArena::new(4096).is_ok(), "dropped arenas free their slots");
}

#[test]
fn full_registry_is_an_error_at_creation() {
    let case = this_test!();
    if is_child(case) {
        return fill_registry(case);
    }
    assert_child_passed(&Sandbox::new(case).run());
}

/// A fork child has the registry but not the parent's segments (they are
/// MADV_DONTFORK): its purge must skip them instead of faulting.
#[test]
fn purge_in_a_fork_child_skips_the_parents_segments() {
    let case = this_test!();
    if is_child(case) {
        let budget = common::budget();
        let Some(arena) = arena(case, &budget, Kind::Fallback, 64 << 10) else { return };
        let block = secret_block(&arena, 64, 3);
        // SAFETY: the child makes only async-signal-safe calls (purge,
        // _exit); this process has a single test thread running.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", common::last_errno());
        if pid == 0 {
            secret_arena::purge();
            // SAFETY: _exit ends the child without running destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child's purge crashed: {status:#x}");
        // SAFETY: the block is live; the parent's copy is untouched.
        assert_eq!(unsafe { read_bytes(block.as_ptr(), 64) }, common::pattern(64, 3));
        return;
    }
    assert_child_passed(&Sandbox::new(case).run());
}
