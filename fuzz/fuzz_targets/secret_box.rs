//! `SecretBox`, `SecretVec` and `SecretString` in a small arena, against a
//! plain model: contents match after every action, failures leave things as
//! they were, and `check_invariants` (every free byte zero) holds throughout,
//! so every drop, truncate and growth move is seen to wipe what it leaves.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use secret_arena::{ExposeSecret, ExposeSecretMut, SecretArena, SecretBox, SecretString, SecretVec};

#[derive(Arbitrary, Debug)]
enum Action {
    NewVec {
        capacity: u16,
    },
    NewString,
    NewBox {
        len: u16,
        fill: u8,
    },
    /// Appends `len` copies of `byte` (to a vec) or of an ASCII char (to a string).
    Extend {
        pick: u8,
        len: u16,
        byte: u8,
    },
    Truncate {
        pick: u8,
        to: u16,
    },
    Clear {
        pick: u8,
    },
    Pop {
        pick: u8,
    },
    /// Overwrites one byte in place through `expose_secret_mut`.
    Poke {
        pick: u8,
        at: u16,
        byte: u8,
    },
    Drop {
        pick: u8,
    },
}

enum Secret<'a> {
    Vec(SecretVec<&'a SecretArena>),
    Str(SecretString<&'a SecretArena>),
    Box(SecretBox<[u8], &'a SecretArena>),
}

impl Secret<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Secret::Vec(v) => v.expose_secret(),
            Secret::Str(s) => s.expose_secret().as_bytes(),
            Secret::Box(b) => b.expose_secret(),
        }
    }
}

fn check(arena: &SecretArena, live: &[(Secret<'_>, Vec<u8>)]) {
    for (secret, model) in live {
        assert_eq!(secret.bytes(), &model[..], "contents differ from the model");
    }
    // SAFETY: single-threaded: nothing else uses the arena during the check.
    if let Err(e) = unsafe { arena.check_invariants() } {
        panic!("{e}");
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let arena = SecretArena::builder().capacity(16 << 10).max_capacity(128 << 10).build().unwrap();
    let mut live: Vec<(Secret<'_>, Vec<u8>)> = Vec::new();
    for action in actions.into_iter().take(256) {
        let n = live.len();
        let pick = |p: u8| (n > 0).then(|| p as usize % n);
        match action {
            Action::NewVec { capacity } => {
                if let Ok(v) = SecretVec::try_with_capacity_in(capacity as usize % 8192, &arena) {
                    live.push((Secret::Vec(v), Vec::new()));
                }
            }
            Action::NewString => live.push((Secret::Str(SecretString::new_in(&arena)), Vec::new())),
            Action::NewBox { len, fill } => {
                let len = len as usize % 8192;
                if let Ok(mut b) = SecretBox::<[u8], _>::try_zeroed_in(len, &arena) {
                    assert!(b.expose_secret().iter().all(|&x| x == 0), "a fresh box is not zero");
                    b.expose_secret_mut().fill(fill);
                    live.push((Secret::Box(b), vec![fill; len]));
                }
            }
            Action::Extend { pick: p, len, byte } => {
                let Some(i) = pick(p) else { continue };
                let len = len as usize % 4096;
                let (secret, model) = &mut live[i];
                match secret {
                    Secret::Vec(v) => {
                        let add = vec![byte; len];
                        if v.try_extend_from_slice(&add).is_ok() {
                            model.extend_from_slice(&add);
                        }
                    }
                    Secret::Str(s) => {
                        let add = String::from(char::from(b'a' + byte % 26)).repeat(len);
                        if s.try_push_str(&add).is_ok() {
                            model.extend_from_slice(add.as_bytes());
                        }
                    }
                    Secret::Box(_) => {}
                }
            }
            Action::Truncate { pick: p, to } => {
                let Some(i) = pick(p) else { continue };
                let (secret, model) = &mut live[i];
                let to = to as usize % (model.len() + 1);
                match secret {
                    Secret::Vec(v) => v.truncate(to),
                    Secret::Str(s) => s.truncate(to),
                    Secret::Box(_) => continue,
                }
                model.truncate(to);
            }
            Action::Clear { pick: p } => {
                let Some(i) = pick(p) else { continue };
                let (secret, model) = &mut live[i];
                match secret {
                    Secret::Vec(v) => v.clear(),
                    Secret::Str(s) => s.clear(),
                    Secret::Box(_) => continue,
                }
                model.clear();
            }
            Action::Pop { pick: p } => {
                let Some(i) = pick(p) else { continue };
                if let (Secret::Str(s), model) = &mut live[i] {
                    assert_eq!(s.pop().map(|c| c as u8), model.pop());
                }
            }
            Action::Poke { pick: p, at, byte } => {
                let Some(i) = pick(p) else { continue };
                let (secret, model) = &mut live[i];
                if model.is_empty() {
                    continue;
                }
                let at = at as usize % model.len();
                match secret {
                    Secret::Vec(v) => v.expose_secret_mut()[at] = byte,
                    Secret::Box(b) => b.expose_secret_mut()[at] = byte,
                    Secret::Str(_) => continue,
                }
                model[at] = byte;
            }
            Action::Drop { pick: p } => {
                let Some(i) = pick(p) else { continue };
                live.swap_remove(i);
            }
        }
        check(&arena, &live);
    }
    drop(live);
    assert_eq!(arena.stats().in_use, 0, "a dropped secret kept its memory");
    // SAFETY: single-threaded, as in `check`.
    unsafe { arena.check_invariants() }.unwrap();
});
