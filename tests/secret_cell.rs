//! `SecretCell<T>`: any `T` in secret memory; after drop its bytes are zero,
//! whatever `T` does about it and whatever the allocator.

use std::cell::Cell;
use std::sync::Mutex;

use secret_arena::{ExposeSecret, ExposeSecretMut, SecretArena, SecretCell};

mod common;

const PATTERN: u8 = 0x96;

/// One small arena at a time, so the tests fit in a 64 KiB
/// `RLIMIT_MEMLOCK` (and the global arena is never created here).
static ONE_ARENA: Mutex<()> = Mutex::new(());

fn with_arena(case: &str, f: impl FnOnce(&SecretArena)) {
    let _one = ONE_ARENA.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match SecretArena::new(16 << 10) {
        Ok(arena) => f(&arena),
        Err(e) => common::skip(case, &format!("no 16 KiB arena: {e}")),
    }
}

/// A key type with neither `Zeroize` nor `Drop`, and padding: `SecretBox`
/// would not take it.
#[repr(C)]
struct Schedule {
    rounds: [u32; 15],
    tag: u8,
    // 3 bytes of padding here, then
    more: u64,
}

fn schedule() -> Schedule {
    let w = u32::from_ne_bytes([PATTERN; 4]);
    Schedule { rounds: [w; 15], tag: PATTERN, more: u64::from_ne_bytes([PATTERN; 8]) }
}

#[test]
fn bytes_are_zero_after_drop_with_any_allocator() {
    let rec = common::Recording::default();
    let cell = SecretCell::init_with_in(schedule, rec.clone());
    assert_eq!(cell.expose_secret().rounds[14], u32::from_ne_bytes([PATTERN; 4]));
    drop(cell);
    let freed = rec.freed();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].len(), size_of::<Schedule>());
    assert!(freed[0].iter().all(|&b| b == 0), "freed block still holds {:02x?}", freed[0]);
}

#[test]
fn chunk_is_zero_after_drop_in_the_arena() {
    with_arena("chunk_is_zero_after_drop_in_the_arena", chunk_is_zero_after_drop_in);
}

fn chunk_is_zero_after_drop_in(arena: &SecretArena) {
    let cell = SecretCell::init_with_in(schedule, arena);
    let at = cell.expose_ptr();
    assert!(arena.contains(at));
    drop(cell);
    // SAFETY: the freed chunk stays mapped while `arena` lives.
    let left: Vec<u8> = (0..size_of::<Schedule>()).map(|i| unsafe { std::ptr::read_volatile(at.add(i)) }).collect();
    assert!(left.iter().all(|&b| b == 0));
    assert_eq!(arena.stats().in_use, 0);
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("every free byte zero");
}

/// Counts its drops; its `Drop` wipes nothing, so the zeros after it are
/// the cell's.
struct Counted<'a> {
    key: [u8; 40],
    drops: &'a Cell<u32>,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

#[test]
fn own_drop_runs_once_then_the_bytes_are_wiped() {
    let rec = common::Recording::default();
    let drops = Cell::new(0);
    let mut cell = SecretCell::new_in(Counted { key: [PATTERN; 40], drops: &drops }, rec.clone());
    cell.expose_secret_mut().key[0] = 1;
    drop(cell);
    assert_eq!(drops.get(), 1);
    let freed = rec.freed();
    assert!(freed[0].iter().all(|&b| b == 0));
}

struct PanicsOnDrop([u8; 64]);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        std::hint::black_box(&self.0);
        panic!("drop failed");
    }
}

#[test]
fn memory_is_wiped_and_freed_when_drop_panics() {
    let rec = common::Recording::default();
    let cell = SecretCell::new_in(PanicsOnDrop([PATTERN; 64]), rec.clone());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(cell)));
    assert!(r.is_err());
    let freed = rec.freed();
    assert_eq!(freed.len(), 1, "the block was leaked");
    assert!(freed[0].iter().all(|&b| b == 0));
}

#[test]
fn failed_init_leaves_nothing_allocated() {
    with_arena("failed_init_leaves_nothing_allocated", |arena| {
        let r = SecretCell::<Schedule, _>::try_init_with_in(|| Err("no key"), arena);
        assert_eq!(r.err(), Some("no key"));
        assert_eq!(arena.stats().in_use, 0);
    });
}

#[test]
fn init_with_mut_fills_in_place() {
    with_arena("init_with_mut_fills_in_place", |arena| {
        let src = [PATTERN; 32];
        let key = SecretCell::<[u8; 32], _>::init_with_mut_in(|k| k.copy_from_slice(&src), arena);
        assert_eq!(key.expose_secret(), &src);
        assert!(arena.contains(key.expose_ptr()));
    });
}

#[test]
fn debug_is_redacted_and_send_sync_follow_t() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SecretCell<[u8; 32]>>();
    send_sync::<SecretCell<u64, &SecretArena>>();
    let k = SecretCell::new_in(0xAAu8, common::Recording::default());
    assert_eq!(format!("{k:?}"), "SecretCell<u8>([REDACTED])");
}
