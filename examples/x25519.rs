//! X25519 key agreement with the static secret and the shared secret in
//! secret memory.
//!
//! `x25519_dalek::StaticSecret` 3 is `ZeroizeOnDrop` but not `Zeroize`, so
//! `SecretBox` does not take it; [`SecretCell`] does. `StaticSecret::from`
//! takes the 32 bytes by value, so a copy passes the stack: `wipe_stack`
//! clears it right after.
//!
//! Run: `cargo run --example x25519`

use std::io::Read;

use secret_arena::{ExposeSecret, SecretCell, wipe_stack};
use x25519_dalek_3::{PublicKey, StaticSecret};

/// A static secret built in secret memory from 32 random bytes that are
/// read straight into secret memory first.
fn static_secret() -> Result<SecretCell<StaticSecret>, std::io::Error> {
    let seed = SecretCell::<[u8; 32]>::try_init_with_mut(|k| std::fs::File::open("/dev/urandom")?.read_exact(k))?;
    let secret = SecretCell::init_with(|| StaticSecret::from(*seed.expose_secret()));
    // The by-value copy of the seed and the constructor's temporaries.
    wipe_stack(16 << 10);
    Ok(secret)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = static_secret()?;
    let bob = static_secret()?;
    let alice_public = PublicKey::from(alice.expose_secret());
    let bob_public = PublicKey::from(bob.expose_secret());

    // The shared secrets are `ZeroizeOnDrop` too: build them in place.
    let alice_shared = SecretCell::init_with(|| alice.expose_secret().diffie_hellman(&bob_public));
    let bob_shared = SecretCell::init_with(|| bob.expose_secret().diffie_hellman(&alice_public));
    wipe_stack(16 << 10);

    assert_eq!(alice_shared.expose_secret().as_bytes(), bob_shared.expose_secret().as_bytes());
    let arena = secret_arena::global()?;
    assert!(arena.contains(alice.expose_ptr()) && arena.contains(alice_shared.expose_ptr()));
    println!("both sides agree; secrets live in {:?} memory", arena.backing());
    // Each drop: the type's own zeroize, then the cell's wipe, then the
    // arena's wipe of the chunk.
    Ok(())
}
