//! AES-256-GCM with the key and the expanded cipher in secret memory.
//!
//! `aes_gcm::Aes256Gcm` is not `Zeroize` (it is `ZeroizeOnDrop` with the
//! crate's `zeroize` feature), so it goes in a [`SecretCell`], which wipes
//! its bytes after its own `Drop` has run. The idiom:
//!
//! 1. the key bytes are read straight into secret memory
//!    (`try_init_with_mut`: no `Key` value ever exists on the stack);
//! 2. the cipher is built into secret memory (`init_with`), and
//!    `wipe_stack` clears what its constructor left below our frame;
//! 3. the raw key is dropped as soon as the cipher holds the schedule.
//!
//! The same code works with `chacha20poly1305::ChaCha20Poly1305`.
//!
//! Run: `cargo run --example aead`

use std::io::Read;

use aes_gcm_011::aead::{Aead, Key};
use aes_gcm_011::{Aes256Gcm, KeyInit};
use secret_arena::{ExposeSecret, SecretCell, wipe_stack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. 32 random key bytes, read in place into the default arena. In a
    //    real program: from a key file or a KMS, the same way.
    let key = SecretCell::<Key<Aes256Gcm>>::try_init_with_mut(|k| {
        std::fs::File::open("/dev/urandom")?.read_exact(k.as_mut_slice())
    })?;

    // 2. The expanded cipher (round keys and GHASH key), built in secret
    //    memory; then wipe the constructor's leftovers on the stack.
    let cipher = SecretCell::init_with(|| Aes256Gcm::new(key.expose_secret()));
    wipe_stack(64 << 10);

    // 3. The cipher holds all it needs; the raw key can go.
    drop(key);

    let arena = secret_arena::global()?;
    println!("cipher: {} bytes in {:?} memory", size_of::<Aes256Gcm>(), arena.backing());
    assert!(arena.contains(cipher.expose_ptr()));

    // Use: every call borrows the cipher where it lives.
    for counter in 0u64..3 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let message = format!("message {counter}");
        let sealed = cipher.expose_secret().encrypt((&nonce).into(), message.as_bytes()).map_err(|_| "encrypt")?;
        let opened = cipher.expose_secret().decrypt((&nonce).into(), sealed.as_slice()).map_err(|_| "decrypt")?;
        assert_eq!(opened, message.as_bytes());
        println!("{message:?}: {} bytes sealed, opened again", sealed.len());
    }

    // Drop: Aes256Gcm's own ZeroizeOnDrop runs, then the cell wipes all of
    // its bytes, then the arena frees (and wipes) the chunk.
    drop(cipher);
    Ok(())
}
