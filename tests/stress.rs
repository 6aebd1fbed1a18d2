//! Concurrency stress: more threads than cores share one `&SecretArena`.
//!
//! Every block is stamped with its owner's pattern over its whole length and
//! registered in a set of live addresses. A block handed to two threads at
//! once is caught three ways: the set already holds its address, the fresh
//! block is not zero (the other owner wrote it), or an owner's pattern
//! changes under it. Half the blocks are freed by a different thread from
//! the one that allocated them: they travel round a ring of channels. A
//! quarter of the rounds also grow or shrink a block, in place or by a move.
//! At the end every block is freed and `check_invariants` runs.
//!
//! The thread-owned slabs get their own cases: an idle live thread's empty
//! slab is taken back when pages run out (one `membarrier`), a dead thread's
//! slabs come back (the empty one when pages run out, the other with its
//! last free), and waves of short-lived threads, more than there are thread
//! slots, reuse slots, heaps and slabs.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Barrier, Mutex};
use std::thread;

use secret_arena::SecretArena;

mod common;
use secret_arena::allocator_api2::alloc::Allocator;

const THREADS: usize = 8;
/// Blocks one thread may have waiting in its inbox.
const IN_FLIGHT: usize = 64;

/// A block in flight. Addresses, not pointers, so it can cross threads.
#[derive(Debug)]
struct Block {
    addr: usize,
    len: usize,
    layout: Layout,
    tag: u64,
}

/// Live block addresses, sharded to keep the test's own locking out of the
/// arena's way.
struct Registry([Mutex<HashSet<usize>>; 16]);

impl Registry {
    fn new() -> Self {
        Registry(core::array::from_fn(|_| Mutex::new(HashSet::new())))
    }
    fn shard(&self, addr: usize) -> &Mutex<HashSet<usize>> {
        &self.0[(addr >> 4) % self.0.len()]
    }
    fn add(&self, b: &Block) {
        assert!(self.shard(b.addr).lock().unwrap().insert(b.addr), "{:#x} handed out while live: {b:?}", b.addr);
    }
    fn remove(&self, b: &Block) {
        assert!(self.shard(b.addr).lock().unwrap().remove(&b.addr), "{:#x} freed but not live", b.addr);
    }
}

/// xorshift64*: a fast, seedable generator without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn words(b: &Block) -> &[u64] {
    // SAFETY: `addr..addr + len` is a live block owned by the calling thread
    // (the registry proves no one else holds it); blocks are at least
    // 8-aligned here and `len` is a multiple of 8 (chunks and runs are).
    unsafe { core::slice::from_raw_parts(b.addr as *const u64, b.len / 8) }
}

fn stamp(b: &Block) {
    for i in 0..b.len / 8 {
        // SAFETY: as in `words`; word `i` is inside the block, and no
        // reference into it is live.
        unsafe { (b.addr as *mut u64).add(i).write(b.tag ^ i as u64) };
    }
}

fn check(b: &Block, what: &str) {
    for (i, &w) in words(b).iter().enumerate() {
        assert_eq!(w, b.tag ^ i as u64, "{what}: word {i} of {b:?} was overwritten by another owner");
    }
}

/// A mix: mostly small chunks of every class, some page runs.
fn layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(10) {
        0..=5 => 1 + rng.below(256),
        6..=8 => 1 + rng.below(2048),
        _ => 2049 + rng.below(14 * 1024),
    } as usize;
    let align = 8 << rng.below(4); // 8..64
    Layout::from_size_align(size, align).unwrap()
}

fn alloc(arena: &SecretArena, reg: &Registry, rng: &mut Rng, tag: u64) -> Option<Block> {
    let layout = layout(rng);
    let p = arena.allocate(layout).ok()?;
    let b = Block { addr: p.as_ptr().cast::<u8>() as usize, len: p.len(), layout, tag };
    assert_eq!(b.addr % layout.align(), 0, "{b:?} misaligned");
    reg.add(&b);
    assert!(words(&b).iter().all(|&w| w == 0), "fresh block {b:?} is not zero: another owner is writing it");
    stamp(&b);
    Some(b)
}

fn free(arena: &SecretArena, reg: &Registry, b: Block, what: &str) {
    check(&b, what);
    reg.remove(&b);
    let ptr = NonNull::new(b.addr as *mut u8).unwrap();
    // SAFETY: a live block of `arena`, allocated with `b.layout`, given up
    // by its only owner.
    unsafe { arena.deallocate(ptr, b.layout) };
}

/// Grows or shrinks one of this thread's blocks to a random layout, in
/// place or by a move, and checks that its contents came along.
fn resize(arena: &SecretArena, reg: &Registry, rng: &mut Rng, b: Block) -> Block {
    check(&b, "before resize");
    // The returned length fits the block too, so all of it is preserved.
    let old = Layout::from_size_align(b.len, b.layout.align()).unwrap();
    let new = layout(rng);
    let ptr = NonNull::new(b.addr as *mut u8).unwrap();
    reg.remove(&b);
    // SAFETY: a live block of `arena` that `old` fits, owned by this thread;
    // `grow` gets a larger and `shrink` a smaller layout.
    let r = unsafe { if new.size() >= old.size() { arena.grow(ptr, old, new) } else { arena.shrink(ptr, old, new) } };
    let Ok(p) = r else {
        reg.add(&b);
        return b;
    };
    let nb = Block { addr: p.as_ptr().cast::<u8>() as usize, len: p.len(), layout: new, tag: b.tag | 0x80 };
    assert_eq!(nb.addr % new.align(), 0, "{nb:?} misaligned");
    reg.add(&nb);
    let kept = old.size().min(new.size()) / 8;
    for (i, &w) in words(&nb)[..kept].iter().enumerate() {
        assert_eq!(w, b.tag ^ i as u64, "word {i} of {b:?} was not carried over to {nb:?}");
    }
    stamp(&nb);
    nb
}

/// One worker: allocates, checks, frees its own blocks, and passes every
/// other block to the next thread, freeing what the previous one sends.
/// Returns its allocation failures and its inbox, which may still hold
/// blocks sent after it stopped reading.
fn worker(
    id: usize,
    arena: &SecretArena,
    reg: &Registry,
    rounds: usize,
    out: SyncSender<Block>,
    inbox: Receiver<Block>,
) -> (usize, Receiver<Block>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut mine: Vec<Block> = Vec::new();
    let mut failures = 0;
    for round in 0..rounds {
        let tag = ((id as u64) << 56) | (round as u64) << 8;
        match alloc(arena, reg, &mut rng, tag) {
            // A full inbox (a slow neighbour) bounds what is in flight.
            Some(b) if round % 2 == 0 => match out.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => mine.push(b),
                Err(TrySendError::Disconnected(_)) => unreachable!("inboxes live until the end"),
            },
            Some(b) => mine.push(b),
            None => failures += 1,
        }
        while let Ok(b) = inbox.try_recv() {
            free(arena, reg, b, "received from another thread");
        }
        if !mine.is_empty() && rng.below(4) == 0 {
            let i = rng.below(mine.len() as u64) as usize;
            let b = mine.swap_remove(i);
            mine.push(resize(arena, reg, &mut rng, b));
        }
        if mine.len() > 48 || (!mine.is_empty() && rng.below(3) == 0) {
            let i = rng.below(mine.len() as u64) as usize;
            free(arena, reg, mine.swap_remove(i), "own block");
        }
        if round % 64 == 0 {
            mine.iter().for_each(|b| check(b, "periodic check"));
        }
    }
    for b in mine {
        free(arena, reg, b, "own block at the end");
    }
    (failures, inbox)
}

/// Runs `THREADS` workers on `arena`, `rounds` allocations each; frees
/// everything; returns the allocation failures.
fn hammer(arena: &SecretArena, rounds: usize) -> usize {
    let reg = Registry::new();
    let (mut senders, mut receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| sync_channel::<Block>(IN_FLIGHT)).unzip();
    // Thread i reads inbox i and sends to inbox i + 1.
    senders.rotate_right(1);
    let start = Barrier::new(THREADS);
    let results: Vec<(usize, Receiver<Block>)> = thread::scope(|s| {
        let handles: Vec<_> = senders
            .into_iter()
            .zip(receivers.drain(..))
            .enumerate()
            .map(|(id, (out, inbox))| {
                let (reg, start) = (&reg, &start);
                s.spawn(move || {
                    start.wait();
                    worker(id, arena, reg, rounds, out, inbox)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    let mut failures = 0;
    for (f, inbox) in results {
        failures += f;
        for b in inbox.try_iter() {
            free(arena, &reg, b, "left in an inbox");
        }
    }
    failures
}

fn rounds(default: usize) -> usize {
    std::env::var("SECRET_ARENA_STRESS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Plenty of room, one segment: the lock-free fast path and cross-thread
/// frees, with slabs released and re-carved as threads free into them.
#[test]
fn eight_threads_share_one_arena_and_free_each_others_blocks() {
    let budget = common::budget();
    let arena = SecretArena::builder().capacity(budget.fit(4 << 20)).build().unwrap();
    let failures = hammer(&arena, rounds(30_000));
    // SAFETY: single-threaded here: nothing else uses the arena during the check.
    unsafe { arena.check_invariants() }.expect("invariants after the stress run");
    let stats = arena.stats();
    assert_eq!(stats.in_use, 0, "blocks leaked: {stats:?}");
    if arena.capacity() == 4 << 20 {
        assert_eq!(failures, 0, "a 4 MiB arena should never be full here");
        assert!(stats.classes.iter().filter(|c| c.slabs > 0).count() > 10, "too few classes exercised: {stats:?}");
    } else {
        // Eight threads with 64 blocks in flight each fill a small arena:
        // races at the full boundary, invariants and leaks are still checked.
        common::skip(
            this_test!(),
            &format!(
                "\"never full, most classes used\" needs a 4 MiB arena; the memlock budget allows {}, \
                 which ran full {failures} times",
                common::kib(arena.capacity())
            ),
        );
    }
}

/// Starts at 16 KiB and grows to 512 KiB while eight threads race for it:
/// segments are added concurrently and the arena runs full.
#[test]
fn eight_threads_grow_a_small_arena_and_run_it_full() {
    let budget = common::budget();
    let arena = SecretArena::builder().capacity(16 << 10).max_capacity(budget.fit(512 << 10)).build().unwrap();
    let failures = hammer(&arena, rounds(20_000));
    // SAFETY: single-threaded here: nothing else uses the arena during the check.
    unsafe { arena.check_invariants() }.expect("invariants after the stress run");
    let stats = arena.stats();
    assert_eq!(stats.in_use, 0, "blocks leaked: {stats:?}");
    assert!(stats.segments > 1, "the arena never grew: {stats:?}");
    assert!(failures > 0, "the arena never ran full: {stats:?}");
}

/// Whether `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` is offered here:
/// without it the arena cannot take slabs from idle live threads.
fn private_expedited_membarrier() -> bool {
    // SAFETY: MEMBARRIER_CMD_QUERY (0) takes no pointers.
    let cmds = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    cmds > 0 && cmds & (1 << 3) != 0
}

const WHOLE: usize = 64 << 10;

/// Whether at least `bytes` may still be locked; else prints why the test
/// skips (these tests are about threads, not the budget).
fn budget_allows(case: &str, bytes: usize) -> bool {
    match secret_arena::memlock_budget().available() {
        Some(avail) if avail < bytes => {
            println!("SKIPPED {case}: needs {bytes} bytes of memlock budget, {avail} available");
            false
        }
        _ => true,
    }
}

/// A page run as large as the whole 64 KiB arena: it fits only when every
/// page is free, including those of other threads' current slabs.
fn whole_arena() -> Layout {
    Layout::from_size_align(WHOLE, 4096).unwrap()
}

fn small(arena: &SecretArena, size: usize) -> NonNull<u8> {
    let p = arena.allocate(Layout::from_size_align(size, 8).unwrap()).expect("room for a small block");
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe { p.cast::<u8>().as_ptr().write_bytes(0x5A, size) };
    p.cast()
}

/// A live thread that allocated and freed, then went idle, keeps its
/// current slab; when pages run out the arena takes the empty slab back
/// (one `membarrier`), and the idle thread allocates again afterwards.
#[test]
fn an_idle_threads_empty_slab_is_reclaimed() {
    if !budget_allows("an_idle_threads_empty_slab_is_reclaimed", 1 << 20) {
        return;
    }
    if !private_expedited_membarrier() {
        println!("SKIPPED an_idle_threads_empty_slab_is_reclaimed: no membarrier(PRIVATE_EXPEDITED) here");
        return;
    }
    let arena = SecretArena::builder().capacity(WHOLE).build().unwrap();
    let (to_idle, idle_rx) = sync_channel::<()>(0);
    let (to_main, main_rx) = sync_channel::<()>(0);
    thread::scope(|s| {
        let arena = &arena;
        s.spawn(move || {
            let p = small(arena, 32);
            // SAFETY: allocated just above with this layout.
            unsafe { arena.deallocate(p, Layout::from_size_align(32, 8).unwrap()) };
            to_main.send(()).unwrap();
            // Idle, alive, holding its (empty) slab, until told.
            idle_rx.recv().unwrap();
            let q = small(arena, 32);
            // SAFETY: allocated just above with this layout.
            unsafe { arena.deallocate(q, Layout::from_size_align(32, 8).unwrap()) };
        });
        main_rx.recv().unwrap();
        assert_eq!(arena.stats().committed, 4096, "the idle thread holds its slab");
        let all = arena.allocate(whole_arena());
        if let Ok(all) = all {
            // SAFETY: allocated just above with this layout.
            unsafe { arena.deallocate(all.cast(), whole_arena()) };
        }
        to_idle.send(()).unwrap();
        assert!(all.is_ok(), "the idle thread's empty slab was not reclaimed");
    });
    // SAFETY: every thread that used the arena has finished.
    unsafe { arena.check_invariants() }.expect("invariants after reclaiming from an idle thread");
    assert_eq!(arena.stats().in_use, 0);
}

/// A thread exits holding slabs: an empty one and one with a live block
/// it handed to another thread. Its empty slab comes back when pages run
/// out (no barrier needed), and the other is released by the free of its
/// last block.
#[test]
fn a_dead_threads_slabs_come_back() {
    if !budget_allows("a_dead_threads_slabs_come_back", 1 << 20) {
        return;
    }
    let arena = SecretArena::builder().capacity(WHOLE).build().unwrap();
    let handed = thread::scope(|s| {
        // `join` returns after the thread's exit destructors ran.
        s.spawn(|| {
            // Page 0: a slab with a block that outlives the thread.
            let kept = small(&arena, 64).as_ptr() as usize;
            // Page 1: a slab left empty.
            let p = small(&arena, 32);
            // SAFETY: allocated just above with this layout.
            unsafe { arena.deallocate(p, Layout::from_size_align(32, 8).unwrap()) };
            kept
        })
        .join()
        .unwrap()
    });
    assert_eq!(arena.stats().committed, 2 * 4096, "the dead thread's two slabs");
    // Pages 1 to 15: needs the empty slab's page back.
    let most = Layout::from_size_align(WHOLE - 4096, 4096).unwrap();
    let p = arena.allocate(most).expect("the dead thread's empty slab was not reclaimed");
    // SAFETY: allocated just above with this layout.
    unsafe { arena.deallocate(p.cast(), most) };
    // SAFETY: the block the dead thread allocated, freed once, here.
    unsafe { arena.deallocate(NonNull::new(handed as *mut u8).unwrap(), Layout::from_size_align(64, 8).unwrap()) };
    let all = arena.allocate(whole_arena()).expect("the last free did not release the dead thread's slab");
    // SAFETY: allocated just above with this layout.
    unsafe { arena.deallocate(all.cast(), whole_arena()) };
    // SAFETY: no other thread uses the arena any more.
    unsafe { arena.check_invariants() }.expect("invariants after reclaiming a dead thread's slabs");
}

/// Waves of short-lived threads, more than there are thread slots in all,
/// allocate small blocks, free some, and hand the rest to a long-lived
/// thread that frees them: slots and heaps of dead threads are reused and
/// their slabs taken back, and a small arena never runs out.
#[test]
fn waves_of_short_lived_threads_reuse_slots_and_slabs() {
    if !budget_allows("waves_of_short_lived_threads_reuse_slots_and_slabs", 4 << 20) {
        return;
    }
    let arena = SecretArena::builder().capacity(64 << 10).max_capacity(2 << 20).build().unwrap();
    let (tx, rx) = sync_channel::<(usize, usize)>(1024);
    let waves = std::env::var("SECRET_ARENA_STRESS_WAVES").ok().and_then(|v| v.parse().ok()).unwrap_or(80);
    thread::scope(|s| {
        let arena = &arena;
        let collector = s.spawn(move || {
            let mut n = 0;
            for (addr, size) in rx {
                let b = Block { addr, len: size, layout: Layout::from_size_align(size, 8).unwrap(), tag: addr as u64 };
                check(&b, "handed to the collector");
                // SAFETY: a live block handed over by its allocating thread.
                unsafe { arena.deallocate(NonNull::new(addr as *mut u8).unwrap(), b.layout) };
                n += 1;
            }
            n
        });
        for wave in 0..waves {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let tx = tx.clone();
                    s.spawn(move || {
                        let mut rng =
                            Rng(0xA5A5_5A5A_1234_5678 ^ ((wave * 8 + t) as u64 + 1).wrapping_mul(0x9E37_79B9));
                        let mut mine = Vec::new();
                        for i in 0..200 {
                            let size = 16 * (1 + rng.below(16) as usize);
                            let p = arena.allocate(Layout::from_size_align(size, 8).unwrap()).expect("room");
                            let b = Block {
                                addr: p.cast::<u8>().as_ptr() as usize,
                                len: size,
                                layout: Layout::from_size_align(size, 8).unwrap(),
                                tag: p.cast::<u8>().as_ptr() as u64,
                            };
                            stamp(&b);
                            if i % 2 == 0 { tx.send((b.addr, size)).unwrap() } else { mine.push(b) }
                        }
                        for b in mine {
                            check(&b, "own block of a short-lived thread");
                            // SAFETY: a live block of this thread.
                            unsafe { arena.deallocate(NonNull::new(b.addr as *mut u8).unwrap(), b.layout) };
                        }
                    })
                })
                .collect();
            handles.into_iter().for_each(|h| h.join().expect("short-lived thread panicked"));
        }
        drop(tx);
        assert_eq!(collector.join().unwrap(), waves * 8 * 100);
    });
    // SAFETY: every thread that used the arena has finished.
    unsafe { arena.check_invariants() }.expect("invariants after waves of threads");
    let stats = arena.stats();
    assert_eq!(stats.in_use, 0, "blocks leaked: {stats:?}");
}
