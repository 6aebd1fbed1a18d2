//! Keys in secret memory, used with a real MAC.
//!
//! A passphrase arrives as an ordinary `String` (an environment variable),
//! is moved into a `SecretString` (the `String` is zeroized), a master key
//! is extracted from it with HMAC-SHA256, and per-purpose subkeys are
//! expanded from the master key (the two steps of HKDF, RFC 5869). Every
//! key is written by the MAC straight into its `SecretBox` with
//! `init_with_mut` + `finalize_into`, so no key bytes pass through the
//! stack. One subkey then authenticates a request.
//!
//! What this does not cover: the HMAC state itself (its padded key blocks)
//! lives on the stack while it is in use; and a real passphrase wants a
//! slow password hash (argon2, scrypt), not one HMAC.
//!
//! Run with `cargo run --example keys`; set `KEYS_PASSPHRASE` to change the
//! passphrase.

use std::error::Error;

use hmac::digest::FixedOutput;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use secret_arena::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
/// A 256-bit key in the process-wide secret arena.
type Key = SecretBox<[u8; 32]>;

/// HKDF-Extract: `master = HMAC(salt, passphrase)`.
fn extract(salt: &[u8], passphrase: &SecretString) -> Key {
    Key::init_with_mut(|master| {
        let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes keys of any length");
        mac.update(passphrase.expose_secret().as_bytes());
        mac.finalize_into(GenericArray::from_mut_slice(master));
    })
}

/// HKDF-Expand for one 32-byte block: `subkey = HMAC(master, info || 0x01)`.
fn expand(master: &Key, info: &str) -> Key {
    Key::init_with_mut(|subkey| {
        let mut mac = HmacSha256::new_from_slice(master.expose_secret()).expect("32-byte key");
        mac.update(info.as_bytes());
        mac.update(&[1]);
        mac.finalize_into(GenericArray::from_mut_slice(subkey));
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let arena = secret_arena::global()?;
    println!("secret memory backing: {:?}", arena.backing());

    let from_env = std::env::var("KEYS_PASSPHRASE").unwrap_or_else(|_| "correct horse battery staple".to_owned());
    // `From<String>` copies into the arena and zeroizes the String's buffer.
    let passphrase = SecretString::from(from_env);

    let master = extract(b"secret-arena keys example v1", &passphrase);
    drop(passphrase); // wiped now; only the master key is needed from here.
    let signing = expand(&master, "request signing");
    let encryption = expand(&master, "storage encryption");

    let request = b"GET /v1/accounts/42/balance";
    let mut mac = HmacSha256::new_from_slice(signing.expose_secret())?;
    mac.update(request);
    let tag = mac.finalize().into_bytes(); // a tag is public
    println!("request tag: {}", hex(&tag));

    // The receiver recomputes it with the same key; `verify_slice` is constant-time.
    let mut check = HmacSha256::new_from_slice(signing.expose_secret())?;
    check.update(request);
    check.verify_slice(&tag)?;
    println!("tag verified");

    // What a log line or a panic message would show:
    let shown = format!("{master:?} {signing:?} {encryption:?}");
    println!("{shown}");
    assert!(!shown.contains(&hex(signing.expose_secret())));
    assert_eq!(shown.matches("[REDACTED]").count(), 3);

    let in_use = arena.stats().in_use;
    drop((master, signing, encryption));
    println!("secret bytes in use: {in_use} before drop, {} after", arena.stats().in_use);
    Ok(())
}
