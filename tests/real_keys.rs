//! Real key types, built in secret memory with `SecretCell`, used, dropped,
//! and the memory they lived in read back through a saved raw pointer.
//!
//! Crates (dev-dependencies, renamed so two majors live side by side):
//! aes-gcm 0.10.3 and 0.11.1, chacha20poly1305 0.10.1 and 0.11.0,
//! x25519-dalek 2.0.1 and 3.0.0, ed25519-dalek 2.2.0. None of their cipher
//! or secret types is `Zeroize`, so none fits in a `SecretBox`.
//!
//! Each test: the key bytes go straight into secret memory
//! (`init_with_mut`), the cipher or secret is built there (`init_with`,
//! then `wipe_stack`), does 1,000 encrypt/decrypt or sign/verify or DH
//! operations, and is dropped. While it lives, its chunk must hold
//! non-zero bytes (the test looks at the right place); after drop, every
//! byte of it must read zero, and the arena must have nothing in use.

use secret_arena::{ExposeSecret, SecretArena, SecretCell, wipe_stack};

mod common;

const ROUNDS: u32 = 1000;

/// One small arena at a time, so the tests fit in a 64 KiB
/// `RLIMIT_MEMLOCK`; the largest key type here is 1,104 bytes.
static ONE_ARENA: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_arena(case: &str, f: impl FnOnce(&SecretArena)) {
    let _one = ONE_ARENA.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match SecretArena::new(16 << 10) {
        Ok(arena) => f(&arena),
        Err(e) => common::skip(case, &format!("no 16 KiB arena: {e}")),
    }
}

/// A key that is computed, not stored, so no copy of it sits in the binary.
fn fill_key(k: &mut [u8]) {
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(0x5B);
    }
}

/// The `size_of::<T>()` bytes at `at`, read volatile.
///
/// # Safety
///
/// `at..at + len` must be a live or freed chunk of a live arena.
unsafe fn read_bytes(at: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: the caller's range is mapped.
    (0..len).map(|i| unsafe { core::ptr::read_volatile(at.add(i)) }).collect()
}

/// Drops `cell` and checks that its chunk reads zero afterwards.
fn assert_wiped_on_drop<T>(cell: SecretCell<T, &SecretArena>, arena: &SecretArena, what: &str) {
    let at = cell.expose_ptr();
    let len = size_of::<T>();
    assert!(arena.contains(at), "{what} is not in the arena");
    // SAFETY: a live chunk of `arena`.
    let live = unsafe { read_bytes(at, len) };
    assert!(live.iter().any(|&b| b != 0), "{what}: the chunk is all zero while the key lives");
    drop(cell);
    // SAFETY: the freed chunk stays mapped while `arena` lives.
    let after = unsafe { read_bytes(at, len) };
    let left = after.iter().filter(|&&b| b != 0).count();
    assert_eq!(left, 0, "{what}: {left} of {len} bytes non-zero after drop");
}

macro_rules! aead_test {
    ($test:ident, $krate:ident, $cipher:ident, $aead:ident) => {
        #[test]
        fn $test() {
            use $krate::aead::{Key, $aead};
            use $krate::{KeyInit, $cipher};

            with_arena(stringify!($test), |arena| {
                let key = SecretCell::<Key<$cipher>, _>::init_with_mut_in(|k| fill_key(k), arena);
                let cipher = SecretCell::init_with_in(|| <$cipher>::new(key.expose_secret()), arena);
                wipe_stack(64 << 10);
                for i in 0..ROUNDS {
                    let mut nonce = [0u8; 12];
                    nonce[..4].copy_from_slice(&i.to_le_bytes());
                    let msg = format!("message number {i}");
                    let sealed = cipher.expose_secret().encrypt((&nonce).into(), msg.as_bytes()).expect("encrypt");
                    assert_ne!(&sealed[..msg.len()], msg.as_bytes());
                    let opened = cipher.expose_secret().decrypt((&nonce).into(), sealed.as_slice()).expect("decrypt");
                    assert_eq!(opened, msg.as_bytes());
                }
                assert_wiped_on_drop(cipher, arena, stringify!($cipher));
                assert_wiped_on_drop(key, arena, "key");
                assert_eq!(arena.stats().in_use, 0);
                // SAFETY: no other thread uses the arena now.
                unsafe { arena.check_invariants() }.expect("every free byte zero");
            });
        }
    };
}

aead_test!(aes_gcm_0_10, aes_gcm_010, Aes256Gcm, Aead);
aead_test!(aes_gcm_0_11, aes_gcm_011, Aes256Gcm, Aead);
aead_test!(chacha20poly1305_0_10, chacha20poly1305_010, ChaCha20Poly1305, Aead);
aead_test!(chacha20poly1305_0_11, chacha20poly1305_011, ChaCha20Poly1305, Aead);

macro_rules! x25519_test {
    ($test:ident, $krate:ident) => {
        #[test]
        fn $test() {
            use $krate::{PublicKey, StaticSecret};

            with_arena(stringify!($test), |arena| {
                let seed = SecretCell::<[u8; 32], _>::init_with_mut_in(|k| fill_key(k), arena);
                let ours = SecretCell::init_with_in(|| StaticSecret::from(*seed.expose_secret()), arena);
                wipe_stack(64 << 10);
                let our_public = PublicKey::from(ours.expose_secret());
                // A few peers; each agreement is checked against the peer's side.
                let peers: Vec<(PublicKey, [u8; 32])> = (1..=8u8)
                    .map(|p| {
                        let peer = StaticSecret::from([p; 32]);
                        (PublicKey::from(&peer), *peer.diffie_hellman(&our_public).as_bytes())
                    })
                    .collect();
                for i in 0..ROUNDS as usize {
                    let (their_public, expected) = &peers[i % peers.len()];
                    let shared = ours.expose_secret().diffie_hellman(their_public);
                    assert_eq!(shared.as_bytes(), expected);
                }
                assert_wiped_on_drop(ours, arena, "StaticSecret");
                assert_wiped_on_drop(seed, arena, "seed");
                assert_eq!(arena.stats().in_use, 0);
            });
        }
    };
}

x25519_test!(x25519_dalek_2, x25519_dalek_2);
x25519_test!(x25519_dalek_3, x25519_dalek_3);

#[test]
fn ed25519_dalek_2_signing_key() {
    use ed25519_dalek_2::{Signer, SigningKey, Verifier};

    with_arena("ed25519_dalek_2_signing_key", |arena| {
        let seed = SecretCell::<[u8; 32], _>::init_with_mut_in(|k| fill_key(k), arena);
        let signing = SecretCell::init_with_in(|| SigningKey::from_bytes(seed.expose_secret()), arena);
        wipe_stack(64 << 10);
        let verifying = signing.expose_secret().verifying_key();
        for i in 0..ROUNDS {
            let msg = format!("message number {i}");
            let sig = signing.expose_secret().sign(msg.as_bytes());
            verifying.verify(msg.as_bytes(), &sig).expect("verify");
            assert!(verifying.verify(b"another message", &sig).is_err());
        }
        assert_wiped_on_drop(signing, arena, "SigningKey");
        assert_wiped_on_drop(seed, arena, "seed");
        assert_eq!(arena.stats().in_use, 0);
    });
}

/// `SecretBox<Key<…>>` compiles once the array crate's `zeroize` feature
/// is on (the dev-dependencies turn it on, as the README tells users to);
/// the key bytes go straight in with `init_with_mut`.
#[test]
fn key_arrays_in_a_secret_box_with_the_zeroize_feature() {
    use secret_arena::SecretBox;
    with_arena("key_arrays_in_a_secret_box_with_the_zeroize_feature", |arena| {
        let k10 = SecretBox::<aes_gcm_010::Key<aes_gcm_010::Aes256Gcm>, _>::init_with_mut_in(|k| fill_key(k), arena);
        let k11 = SecretBox::<aes_gcm_011::Key<aes_gcm_011::Aes256Gcm>, _>::init_with_mut_in(|k| fill_key(k), arena);
        assert_eq!(k10.expose_secret().as_slice(), k11.expose_secret().as_slice());
        let (at10, at11) = (k10.expose_secret().as_ptr(), k11.expose_secret().as_ptr());
        assert!(arena.contains(at10) && arena.contains(at11));
        drop((k10, k11));
        // SAFETY: freed chunks of a live arena stay mapped.
        assert!(unsafe { read_bytes(at10, 32) }.iter().all(|&b| b == 0));
        // SAFETY: as above.
        assert!(unsafe { read_bytes(at11, 32) }.iter().all(|&b| b == 0));
    });
}

/// Copies `out.len()` bytes of this process's memory at `addr` into `out`
/// (the kernel reads it: defined for Rust, and no frame of ours lands in
/// the region but the syscall wrapper's few bytes at its top).
fn read_own_memory(addr: usize, out: &mut [u8]) {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: out.len() };
    // SAFETY: `local` describes `out`, writable for its length; `remote` is
    // only read, by the kernel, which reports unmapped ranges as errors.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    assert_eq!(n, out.len() as isize, "process_vm_readv: {}", std::io::Error::last_os_error());
}

/// Builds a cell in a frame of its own and returns it with the address of
/// that frame's top (the stack below it is what the constructor used).
#[inline(never)]
fn build_in<T>(arena: &SecretArena, ctr: impl FnOnce() -> T) -> (SecretCell<T, &SecretArena>, usize) {
    let marker = 0u8;
    let top = std::hint::black_box(&marker) as *const u8 as usize;
    (SecretCell::init_with_in(ctr, arena), top + 64)
}

/// How much stack below the constructor's frame is scanned: four times
/// what `wipe_stack` is asked to clear, so a constructor that went deeper
/// than the README's 64 KiB would show.
const SCAN: usize = 256 << 10;

/// Copies of either 16-byte half of `key` in `seen`.
fn copies_of(key: &[u8; 32], seen: &[u8]) -> usize {
    seen.windows(16).filter(|w| *w == &key[..16] || *w == &key[16..]).count()
}

macro_rules! stack_case {
    ($arena:expr, $wipe:expr, $key:expr, $ctr:expr) => {{
        let mut seen = vec![0u8; SCAN];
        let (cell, top) = build_in($arena, $ctr);
        if $wipe {
            wipe_stack(64 << 10);
        }
        read_own_memory(top - SCAN, &mut seen);
        drop(cell);
        copies_of($key, &seen)
    }};
}

/// Each real constructor, with and without `wipe_stack(64 KiB)`; counts the
/// copies of the key bytes left in the 256 KiB of stack below.
fn leftovers(arena: &SecretArena, wipe: bool) -> Vec<(&'static str, usize)> {
    let key = SecretCell::<[u8; 32], _>::init_with_mut_in(|k| fill_key(k), arena);
    let k = key.expose_secret();
    vec![
        (
            "aes-gcm 0.10",
            stack_case!(arena, wipe, k, || <aes_gcm_010::Aes256Gcm as aes_gcm_010::KeyInit>::new(k.into())),
        ),
        (
            "aes-gcm 0.11",
            stack_case!(arena, wipe, k, || <aes_gcm_011::Aes256Gcm as aes_gcm_011::KeyInit>::new(k.into())),
        ),
        (
            "chacha20poly1305 0.10",
            stack_case!(arena, wipe, k, || {
                <chacha20poly1305_010::ChaCha20Poly1305 as chacha20poly1305_010::KeyInit>::new(k.into())
            }),
        ),
        (
            "chacha20poly1305 0.11",
            stack_case!(arena, wipe, k, || {
                <chacha20poly1305_011::ChaCha20Poly1305 as chacha20poly1305_011::KeyInit>::new(k.into())
            }),
        ),
        ("x25519-dalek 2", stack_case!(arena, wipe, k, || x25519_dalek_2::StaticSecret::from(*k))),
        ("x25519-dalek 3", stack_case!(arena, wipe, k, || x25519_dalek_3::StaticSecret::from(*k))),
        ("ed25519-dalek 2", stack_case!(arena, wipe, k, || ed25519_dalek_2::SigningKey::from_bytes(k))),
    ]
}

#[test]
fn wipe_stack_clears_what_real_constructors_leave_behind() {
    if common::skipped_under_a_sanitizer("wipe_stack_clears_what_real_constructors_leave_behind") {
        return;
    }
    with_arena("wipe_stack_clears_what_real_constructors_leave_behind", |arena| {
        let before = leftovers(arena, false);
        eprintln!("key copies on the stack after construction, without wipe_stack: {before:?}");
        assert!(
            before.iter().any(|&(_, n)| n > 0),
            "no constructor left a copy of the key on the stack: the scan cannot see the stack"
        );
        let after = leftovers(arena, true);
        eprintln!("key copies on the stack after wipe_stack(64 KiB): {after:?}");
        for (name, n) in after {
            assert_eq!(n, 0, "{name}: {n} copies of key bytes survived wipe_stack(64 KiB)");
        }
    });
}
