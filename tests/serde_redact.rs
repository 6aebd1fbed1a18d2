//! serde errors for secrets never quote the input (`serde` feature).
//!
//! Each case feeds a mistyped or invalid secret, then scans the error's
//! text (Display and Debug) for the secret, and checks that the expected
//! type and, where serde_json can give one, the position survive.
#![cfg(feature = "serde")]

use secret_arena::{ExposeSecret, SecretBox, SecretString, SecretVec};
use serde::Deserialize;

const SECRET: &str = "hunter2-secret";

/// The error for `json` as `T`, after checking it quotes nothing of the input.
fn error_for<T: for<'de> Deserialize<'de>>(json: &str, needles: &[&str]) -> String {
    let err = match serde_json::from_str::<T>(json) {
        Ok(_) => panic!("{json} deserialized"),
        Err(e) => e,
    };
    let text = format!("{err} / {err:?}");
    for needle in needles {
        assert!(!text.contains(needle), "the error quotes the input {needle:?}: {text}");
    }
    assert!(text.contains("input redacted"), "not the redacted message: {text}");
    text
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialized")]
struct Login {
    user: String,
    password: SecretString,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialized")]
struct Config {
    pin: SecretBox<u32>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "only deserialized")]
struct Keys {
    key: SecretVec,
}

#[derive(Debug, Default, Deserialize, zeroize::Zeroize)]
enum Mode {
    #[default]
    Fast,
    Slow,
}

#[test]
fn a_string_where_a_number_was_expected() {
    let json = format!(r#"{{"pin": "{SECRET}"}}"#);
    let text = error_for::<Config>(&json, &[SECRET, "hunter2"]);
    assert!(text.contains("expected u32"), "the expected type is lost: {text}");
    assert!(text.contains("line 1 column"), "the position is lost: {text}");
}

#[test]
fn a_number_where_a_string_was_expected() {
    let text = error_for::<Login>(r#"{"user": "ann", "password": 31337421}"#, &["31337421"]);
    assert!(text.contains("expected a secret string"), "{text}");
    assert!(text.contains("line 1 column 37"), "the position is lost: {text}");
}

#[test]
fn a_byte_out_of_range() {
    let text = error_for::<Keys>(r#"{"key": [1, 2, 31337]}"#, &["31337"]);
    assert!(text.contains("expected secret bytes"), "{text}");
    assert!(text.contains("line 1 column"), "{text}");
}

#[test]
fn an_unknown_variant() {
    let json = format!(r#""{SECRET}""#);
    let text = error_for::<SecretBox<Mode>>(&json, &[SECRET, "hunter2"]);
    assert!(text.contains("expected"), "{text}");
}

#[test]
fn top_level_secrets() {
    error_for::<SecretString>("424242", &["424242"]);
    error_for::<SecretVec>(&format!("{{\"{SECRET}\": 1}}"), &[SECRET, "hunter2"]);
    error_for::<SecretBox<[u8; 4]>>(&format!("[1, 2, \"{SECRET}\", 4]"), &[SECRET, "hunter2"]);
    error_for::<SecretBox<[u8; 2]>>("[1, 2, 3]", &[]);
    error_for::<SecretBox<bool>>(&format!("\"{SECRET}\""), &[SECRET, "hunter2"]);
}

#[test]
fn the_control_serde_json_would_quote_the_secret() {
    // Without redaction this is what the log would get.
    let err = serde_json::from_str::<u32>(&format!("\"{SECRET}\"")).unwrap_err();
    assert!(err.to_string().contains(SECRET));
}

#[test]
fn valid_input_still_deserializes() {
    let login: Login = serde_json::from_str(r#"{"user": "ann", "password": "p\u00e4ss"}"#).unwrap();
    assert_eq!(login.password.expose_secret(), "päss");
    let keys: Keys = serde_json::from_str(r#"{"key": [1, 2, 255]}"#).unwrap();
    assert_eq!(keys.key.expose_secret(), &[1, 2, 255]);
    let mode: SecretBox<Mode> = serde_json::from_str(r#""Slow""#).unwrap();
    assert!(matches!(mode.expose_secret(), Mode::Slow));
    let opt: SecretBox<[u8; 2]> = serde_json::from_str("[7, 8]").unwrap();
    assert_eq!(opt.expose_secret(), &[7, 8]);
}

#[test]
fn exhaustion_is_reported_as_such() {
    use secret_arena::allocator_api2::alloc::{AllocError, Allocator, Layout};
    use std::ptr::NonNull;

    /// An allocator that has no memory.
    #[derive(Clone, Default)]
    struct Empty;
    // SAFETY: it never hands out a block, so it is never given one back.
    unsafe impl Allocator for Empty {
        fn allocate(&self, _: Layout) -> Result<NonNull<[u8]>, AllocError> {
            Err(AllocError)
        }
        unsafe fn deallocate(&self, _: NonNull<u8>, _: Layout) {
            unreachable!("nothing was allocated")
        }
    }
    let err = serde_json::from_str::<SecretString<Empty>>(r#""abc""#).unwrap_err();
    assert!(err.to_string().contains("secret memory exhausted"), "{err}");
    let err = serde_json::from_str::<SecretVec<Empty>>("[1, 2, 3]").unwrap_err();
    assert!(err.to_string().contains("secret memory exhausted"), "{err}");
}
