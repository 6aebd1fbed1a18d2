//! Scanning the ordinary memory of this process for a secret.
//!
//! [`find_in_heap`] reads every private writable mapping that is `[heap]`,
//! `[stack]` or anonymous (malloc arenas, thread stacks, mmap'd blocks)
//! through `/proc/self/mem`, which reports unreadable pages as errors
//! instead of faulting, and looks for a [`Marker`].
//!
//! The marker must never exist in ordinary memory except where the code
//! under test puts it, so the test holds it only *inverted* (every bit
//! flipped) and produces its bytes one at a time: writing it to a socket or
//! file byte by byte, or comparing a byte at a time. The scan buffer is a
//! fresh mapping made after the list of mappings was read, so it is never
//! scanned itself.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// A secret that appears nowhere in the program image: random letters and
/// digits, held inverted.
pub struct Marker {
    inverted: Vec<u8>,
}

impl Marker {
    /// `len` random characters from `[A-Za-z0-9]` drawn from `seed`.
    pub fn new(seed: u64, len: usize) -> Marker {
        const LETTERS: usize = 62;
        let mut state = seed | 1;
        let inverted = (0..len)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let k = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % LETTERS;
                let c = match k {
                    0..26 => b'A' + k as u8,
                    26..52 => b'a' + (k - 26) as u8,
                    _ => b'0' + (k - 52) as u8,
                };
                !c
            })
            .collect();
        Marker { inverted }
    }

    pub fn len(&self) -> usize {
        self.inverted.len()
    }

    /// Byte `i` of the marker.
    pub fn byte(&self, i: usize) -> u8 {
        !self.inverted[i]
    }

    /// Whether `bytes` is the marker, compared a byte at a time.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len() && bytes.iter().enumerate().all(|(i, &b)| b == self.byte(i))
    }

    /// Whether `bytes` contains the marker.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        let n = self.len();
        let first = self.byte(0);
        bytes.len() >= n
            && (0..=bytes.len() - n).any(|i| bytes[i] == first && (1..n).all(|j| bytes[i + j] == self.byte(j)))
    }

    /// Writes the marker to `w` one byte per call.
    pub fn write_to(&self, w: &mut impl Write) {
        for i in 0..self.len() {
            w.write_all(&[self.byte(i)]).expect("write a marker byte");
        }
    }

    /// The control: the marker in an ordinary `String` on the heap.
    pub fn on_heap(&self) -> String {
        let mut s = String::with_capacity(self.len());
        for i in 0..self.len() {
            s.push(char::from(self.byte(i)));
        }
        s
    }
}

/// Where the marker was found: address and mapping.
#[derive(Debug)]
pub struct Hit {
    pub addr: usize,
    pub mapping: String,
}

/// Mappings larger than this are not scanned (see `find_in_heap`).
const HUGE: usize = 64 << 30;

/// Every place in `[heap]`, `[stack]` and anonymous private writable
/// mappings where the marker is.
pub fn find_in_heap(marker: &Marker) -> Vec<Hit> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let regions: Vec<(usize, usize, String)> = maps
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let range = cols.next()?;
            let perms = cols.next()?;
            let path = cols.nth(3).unwrap_or("");
            let scanned = path.is_empty() || path == "[heap]" || path == "[stack]";
            if !(perms.starts_with("rw") && perms.ends_with('p') && scanned) {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            // Terabytes of reserved address space are a sanitizer's shadow
            // memory (AddressSanitizer maps ~16 TiB), not a heap: reading it
            // through /proc/self/mem would take hours. Said, not hidden.
            if b - a > HUGE {
                println!("heap scan: not scanning {} GiB of reserved address space: {line}", (b - a) >> 30);
                return None;
            }
            Some((a, b, line.to_owned()))
        })
        .collect();
    let mem = File::open("/proc/self/mem").expect("open /proc/self/mem");
    let n = marker.len();
    let first = marker.byte(0);
    const WINDOW: usize = 4 << 20;
    let len = WINDOW + n;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let buf = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(buf, libc::MAP_FAILED, "mmap a scan buffer of {len} bytes");
    // SAFETY: the mapping is `len` bytes, readable and writable, and ours.
    let scratch = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let mut hits = Vec::new();
    let (count, bytes) = (regions.len(), regions.iter().map(|(a, b, _)| b - a).sum::<usize>());
    for (start, end, line) in regions {
        let mut off = 0;
        while off < end - start {
            // This window, plus the next n - 1 bytes for a marker that
            // straddles its end.
            let want = (WINDOW + n - 1).min(end - start - off);
            let mut done = 0;
            while done < want {
                match mem.read_at(&mut scratch[done..want], (start + off + done) as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(got) => done += got,
                }
            }
            if done >= n {
                for i in 0..=(done - n).min(WINDOW - 1) {
                    if scratch[i] == first && (1..n).all(|j| scratch[i + j] == marker.byte(j)) {
                        hits.push(Hit { addr: start + off + i, mapping: line.clone() });
                    }
                }
            }
            off += WINDOW;
        }
    }
    println!("heap scan: {count} mappings, {} KiB, {} hits", bytes >> 10, hits.len());
    // Leave no copy behind in the scratch.
    scratch.fill(0);
    // SAFETY: unmapping the scratch mapping made above.
    unsafe { libc::munmap(buf, len) };
    hits
}

/// Asserts the scan finds nothing, naming where it did.
pub fn assert_not_in_heap(marker: &Marker, when: &str) {
    println!("{when}:");
    let hits = find_in_heap(marker);
    assert!(hits.is_empty(), "{when}: the secret is in ordinary memory at {hits:#x?}");
}

/// Asserts the scan finds the marker (the control).
pub fn assert_in_heap(marker: &Marker, when: &str) {
    println!("{when} (control):");
    assert!(!find_in_heap(marker).is_empty(), "{when}: the scan missed a secret that is there");
}

/// A seed for this test run and this call site.
pub fn seed(salt: u64) -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 20) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
