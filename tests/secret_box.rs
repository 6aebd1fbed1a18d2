//! SecretBox, SecretVec and SecretString, checked by reading the memory the
//! secret lived in.
//!
//! Reading a freed arena chunk through a raw pointer is defined at the OS
//! level: the arena keeps its mapping until the arena itself is dropped, so
//! the page stays readable; `read_volatile` keeps the compiler from
//! reasoning about the freed allocation.

use zeroize::Zeroize;

use secret_arena::{DefaultArena, ExposeSecret, ExposeSecretMut, SecretArena, SecretBox, SecretString, SecretVec};

mod common;

const PATTERN: u8 = 0xA5;

/// A 256 KiB arena, or what the memlock budget leaves; see [`common::budget`].
fn arena(budget: &common::Budget) -> SecretArena {
    SecretArena::new(budget.fit(256 << 10)).expect("secret arena")
}

/// The bytes at `ptr..ptr + len`, read volatile.
///
/// # Safety
///
/// The range must be mapped and readable (a live or freed arena chunk of
/// a live arena).
unsafe fn read_bytes(ptr: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: the caller guarantees the range is mapped.
    (0..len).map(|i| unsafe { std::ptr::read_volatile(ptr.add(i)) }).collect()
}

#[test]
fn dropped_box_leaves_zeros_in_the_arena() {
    let budget = common::budget();
    let arena = arena(&budget);
    let key = SecretBox::<[u8; 32], _>::init_with_mut_in(|k| k.fill(PATTERN), &arena);
    let at = key.expose_secret().as_ptr();
    assert!(arena.contains(at));
    // SAFETY: a live chunk of `arena`.
    assert_eq!(unsafe { read_bytes(at, 32) }, vec![PATTERN; 32], "the secret is where we look");
    drop(key);
    // SAFETY: the freed chunk stays mapped while `arena` lives.
    assert_eq!(unsafe { read_bytes(at, 32) }, vec![0; 32]);
    assert_eq!(arena.stats().in_use, 0);
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("arena invariants");
}

#[test]
fn dropped_slice_leaves_zeros_in_the_arena() {
    let budget = common::budget();
    let arena = arena(&budget);
    let mut src = vec![PATTERN; 3000];
    let key = SecretBox::take_from_slice_in(&mut src, &arena);
    assert_eq!(src, vec![0; 3000], "the source is zeroized");
    let at = key.expose_secret().as_ptr();
    drop(key);
    // SAFETY: the freed page run stays mapped while `arena` lives.
    assert!(unsafe { read_bytes(at, 3000) }.iter().all(|&b| b == 0));
}

#[test]
fn grown_vec_leaves_zeros_where_it_was() {
    let budget = common::budget();
    let arena = arena(&budget);
    let mut v = SecretVec::new_in(&arena);
    v.extend_from_slice(&[PATTERN; 20]);
    let (old_at, old_len) = (v.expose_secret().as_ptr(), v.len());
    let mut moves = 0;
    while moves < 4 {
        let at = v.expose_secret().as_ptr();
        v.push(PATTERN);
        if v.expose_secret().as_ptr() != at {
            moves += 1;
            // SAFETY: freed chunks of a live arena stay mapped.
            let left = unsafe { read_bytes(at, v.len() - 1) };
            assert!(left.iter().all(|&b| b == 0), "old block at {at:p} still holds secret bytes after a move");
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { read_bytes(old_at, old_len) }, vec![0; old_len]);
    let at = v.expose_secret().as_ptr();
    let len = v.len();
    drop(v);
    // SAFETY: as above.
    assert!(unsafe { read_bytes(at, len) }.iter().all(|&b| b == 0));
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("arena invariants");
}

#[test]
fn truncate_and_pop_wipe_the_cut_bytes() {
    let budget = common::budget();
    let arena = arena(&budget);
    let mut s = SecretString::new_in(&arena);
    s.push_str("hunter2!");
    let at = s.expose_secret().as_ptr();
    assert_eq!(s.pop(), Some('!'));
    s.truncate(3);
    assert_eq!(s.expose_secret(), "hun");
    // SAFETY: a live chunk of `arena`, at least 8 bytes long.
    assert_eq!(unsafe { read_bytes(at, 8) }, b"hun\0\0\0\0\0");
}

#[test]
fn string_source_is_zeroized() {
    let budget = common::budget();
    let arena = arena(&budget);
    let mut typed = String::with_capacity(32);
    typed.push_str("correct horse battery");
    let (at, cap) = (typed.as_ptr(), typed.capacity());
    let mut s = SecretString::new_in(&arena);
    s.take_from(&mut typed);
    assert_eq!(s.expose_secret(), "correct horse battery");
    assert_eq!(typed.capacity(), cap, "the String keeps its buffer, so we can look at it");
    // SAFETY: `typed` still owns its `cap`-byte allocation at `at`.
    assert_eq!(unsafe { read_bytes(at, cap) }, vec![0; cap]);
}

#[test]
fn box_zeroizes_with_any_allocator() {
    let rec = common::Recording::default();
    let key = SecretBox::new_in([PATTERN; 64], rec.clone());
    drop(key);
    let slice = SecretBox::from_slice_in(&[PATTERN; 100], rec.clone());
    drop(slice);
    let freed = rec.freed();
    assert_eq!(freed.len(), 2);
    for block in freed {
        assert!(block.iter().all(|&b| b == 0), "freed block still holds {block:02x?}");
    }
}

/// A secret with drop glue: its `Zeroize` must run.
struct Tagged {
    key: [u8; 48],
    label: String,
}

impl Zeroize for Tagged {
    fn zeroize(&mut self) {
        self.key.zeroize();
        self.label.zeroize();
    }
}

#[test]
fn box_zeroizes_and_drops_a_type_with_drop_glue() {
    let rec = common::Recording::default();
    let key = SecretBox::new_in(Tagged { key: [PATTERN; 48], label: String::from("signing key") }, rec.clone());
    drop(key);
    let freed = rec.freed();
    assert_eq!(freed.len(), 1);
    // `zeroize` cleared the key bytes before the box's memory went back.
    // The compiler orders the fields as it likes: find the key by its
    // offset (its bytes, not the String's pointer, which may hold PATTERN).
    let at = core::mem::offset_of!(Tagged, key);
    let key_bytes = &freed[0][at..at + 48];
    assert!(key_bytes.iter().all(|&b| b == 0), "key bytes survived: {key_bytes:02x?}");
}

#[test]
fn vec_growth_wipes_old_blocks_with_any_allocator() {
    let rec = common::Recording::default();
    let mut v = SecretVec::new_in(rec.clone());
    for _ in 0..1000 {
        v.push(PATTERN);
    }
    let moves = rec.freed().len();
    assert!(moves >= 5, "the buffer moved only {moves} times: the test misses the growth path");
    drop(v);
    for block in rec.freed() {
        assert!(block.iter().all(|&b| b == 0), "a freed block of {} bytes holds secret bytes", block.len());
    }
}

#[test]
fn debug_output_is_redacted() {
    if !common::runs_here_with_global(this_test!()) {
        return;
    }
    let key = SecretBox::new([PATTERN; 4]);
    let s = SecretString::from("hunter2");
    let v = SecretVec::from_slice(b"hunter2");
    let printed = format!("{key:?} {s:?} {v:?} {:#?}", SecretBox::<[u8]>::from_slice(b"hunter2"));
    assert_eq!(
        printed,
        "SecretBox<[u8; 4]>([REDACTED]) SecretString([REDACTED]) SecretVec([REDACTED]) SecretBox<[u8]>([REDACTED])"
    );
}

#[test]
fn default_secrets_live_in_the_global_arena() {
    if !common::runs_here_with_global(this_test!()) {
        return;
    }
    let global = secret_arena::global().expect("global arena");
    let key = SecretBox::<[u8; 32]>::init_with_mut(|k| k.fill(1));
    let s = SecretString::from(String::from("pw"));
    assert!(global.contains(key.expose_secret().as_ptr()));
    assert!(global.contains(s.expose_secret().as_ptr()));
}

#[test]
fn failed_init_frees_the_secret() {
    let budget = common::budget();
    let arena = arena(&budget);
    let r = SecretBox::<[u8; 16], _>::try_init_with_mut_in(
        |k| {
            k.fill(PATTERN);
            Err("half way")
        },
        &arena,
    );
    assert_eq!(r.unwrap_err(), "half way");
    assert_eq!(arena.stats().in_use, 0);
    // SAFETY: no other thread uses the arena now.
    unsafe { arena.check_invariants() }.expect("the freed chunk is zero");
}

#[test]
fn try_new_reports_exhaustion() {
    let _budget = common::budget();
    let arena = SecretArena::builder().capacity(4096).max_capacity(4096).build().expect("arena");
    assert!(SecretBox::try_new_in([0u8; 8192], &arena).is_err());
    assert!(SecretBox::try_zeroed_in(8192, &arena).is_err());
    assert!(SecretVec::try_with_capacity_in(8192, &arena).is_err());
    let mut v = SecretVec::from_slice_in(&[1; 100], &arena);
    assert!(v.try_extend_from_slice(&[2; 8192]).is_err());
    assert_eq!(v.expose_secret(), &[1; 100][..], "a failed growth leaves the buffer as it was");
}

#[test]
fn clone_of_cloneable_secret_is_independent() {
    if !common::runs_here_with_global(this_test!()) {
        return;
    }
    let mut a = SecretBox::new([3u32; 4]);
    let b = a.clone();
    a.expose_secret_mut()[0] = 9;
    assert_eq!(b.expose_secret(), &[3; 4]);
    assert_ne!(a.expose_secret().as_ptr(), b.expose_secret().as_ptr());
}

#[test]
fn send_and_sync_follow_the_contents() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SecretBox<[u8; 32]>>();
    send_sync::<SecretBox<[u8], DefaultArena>>();
    send_sync::<SecretBox<[u8], &SecretArena>>();
    send_sync::<SecretVec>();
    send_sync::<SecretString<&SecretArena>>();
}

#[cfg(feature = "subtle")]
#[test]
fn equality_compares_contents() {
    if !common::runs_here_with_global(this_test!()) {
        return;
    }
    let a = SecretBox::<[u8]>::from_slice(b"same key");
    assert!(a == SecretBox::<[u8]>::from_slice(b"same key"));
    assert!(a != SecretBox::<[u8]>::from_slice(b"same kez"));
    assert!(a != SecretBox::<[u8]>::from_slice(b"same ke"));
    assert!(SecretVec::from_slice(b"x") != SecretVec::from_slice(b"y"));
}

#[cfg(feature = "getrandom")]
#[test]
fn random_fills_in_place() {
    let budget = common::budget();
    let arena = arena(&budget);
    let a = SecretBox::random_in(64, &arena).expect("getrandom");
    let b = SecretBox::random_in(64, &arena).expect("getrandom");
    assert!(arena.contains(a.expose_secret().as_ptr()));
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert_ne!(a.expose_secret(), &[0u8; 64][..]);
}

#[cfg(feature = "serde")]
#[test]
fn deserialize_into_secret_memory() {
    if !common::runs_here_with_global(this_test!()) {
        return;
    }
    let global = secret_arena::global().expect("global arena");
    let s: SecretString = serde_json::from_str(r#""p\u00e4ss""#).unwrap();
    assert_eq!(s.expose_secret(), "päss");
    assert!(global.contains(s.expose_secret().as_ptr()));
    let v: SecretVec = serde_json::from_str("[1, 2, 255]").unwrap();
    assert_eq!(v.expose_secret(), &[1, 2, 255]);
    let k: SecretBox<[u8; 3]> = serde_json::from_str("[7, 8, 9]").unwrap();
    assert_eq!(k.expose_secret(), &[7, 8, 9]);
    assert!(serde_json::from_str::<SecretVec>("[256]").is_err());
    assert!(serde_json::from_str::<SecretString>("12").is_err());
}
