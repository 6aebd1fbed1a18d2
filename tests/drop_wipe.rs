//! Dropping an arena wipes what it handed out before the pages go back to
//! the kernel.
//!
//! The memory is unmapped after the drop, so the test holds on to the
//! fallback's memfd through `/proc/self/map_files` (root only) and reads the
//! file afterwards. On secret memory `map_files` is refused (`ENXIO`), which
//! is the point of that backing.

mod common;

use std::io::Read;

use allocator_api2::vec::Vec;
use secret_arena::{BackingPolicy, SecretArena};

const PATTERN: &[u8] = b"drop-wipe-secret-pattern-7f3a91c";

fn mapping_of(addr: usize) -> Option<(usize, usize, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        let (range, rest) = line.split_once(' ')?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
        (a <= addr && addr < b).then(|| (a, b, rest.to_string()))
    })
}

#[test]
fn dropping_the_arena_wipes_leaked_blocks_before_unmapping() {
    let budget = common::budget();
    let arena =
        SecretArena::builder().capacity(budget.fit(64 << 10)).policy(BackingPolicy::ForceFallback).build().unwrap();
    // A leaked secret: never freed, so only the arena's drop can wipe it.
    let mut secret = Vec::new_in(&arena);
    secret.extend_from_slice(PATTERN);
    let addr = secret.as_ptr() as usize;
    std::mem::forget(secret);

    let (start, end, desc) = mapping_of(addr).expect("the arena is mapped");
    assert!(desc.contains("/memfd:secret-arena"), "unexpected mapping: {desc}");
    let path = format!("/proc/self/map_files/{start:x}-{end:x}");
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            common::skip(this_test!(), &format!("opening {path} needs CAP_SYS_ADMIN ({e})"));
            return;
        }
        Err(e) => panic!("open {path}: {e}"),
    };
    let mut before = std::vec::Vec::new();
    file.read_to_end(&mut before).unwrap();
    assert!(before.windows(PATTERN.len()).any(|w| w == PATTERN), "the file shows the live secret");

    drop(arena);
    assert!(mapping_of(addr).is_none(), "the arena is unmapped");
    let mut after = std::vec::Vec::new();
    let mut file = file;
    use std::io::Seek;
    file.rewind().unwrap();
    file.read_to_end(&mut after).unwrap();
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|&b| b == 0), "secret bytes survived the arena's drop");
}
