//! What the fuzz targets share: request sizes biased towards the arena's
//! edges, byte patterns that make a block handed out twice (or not wiped)
//! visible, and a model of the live blocks.
//!
//! A new target (for example `SecretBox`) adds a file under `fuzz_targets/`
//! with its own `Arbitrary` action enum, a `[[bin]]` in `Cargo.toml`, and
//! reuses [`Size`], [`Live`] and the pattern helpers from here.

use core::alloc::Layout;
use core::ptr::NonNull;

use arbitrary::Arbitrary;

/// Chunk sizes of the arena's classes; requests near them hit class edges.
pub const CLASS_SIZES: [usize; secret_arena::CLASS_COUNT] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792,
    2048, 2560, 3072, 3584, 4096,
];

/// Most live blocks one input keeps; bounds memory per input.
pub const MAX_LIVE: usize = 64;

/// A request size, biased towards the arena's edge cases.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    /// 0 to 255 bytes.
    Tiny(u8),
    /// A class size, one less, or one more.
    ClassEdge(u8, i8),
    /// Up to a little beyond the largest class.
    Small(u16),
    /// Up to 64 KiB: page runs.
    Large(u16),
}

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Size::Tiny(n) => n as usize,
            Size::ClassEdge(c, d) => {
                let s = CLASS_SIZES[c as usize % CLASS_SIZES.len()];
                s.saturating_add_signed(d.signum() as isize)
            }
            Size::Small(n) => n as usize % 2304,
            Size::Large(n) => n as usize,
        }
    }
}

/// A layout of `size` bytes with alignment `1 << (shift % 17)`: 1 to 4096,
/// and beyond the page up to 64 KiB.
pub fn layout(size: usize, shift: u8) -> Layout {
    Layout::from_size_align(size, 1 << (shift % 17)).expect("sizes here are far below isize::MAX")
}

/// The pattern byte at offset `i` of a block tagged `seed`: never zero, and
/// different for neighbouring blocks.
#[inline]
pub fn pattern(seed: u32, i: usize) -> u8 {
    let x = seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u32).wrapping_mul(0x85EB_CA6B);
    (x >> 24) as u8 | 1
}

/// Writes block `seed`'s pattern over `len` bytes at `ptr`.
///
/// # Safety
///
/// `ptr..ptr + len` must be writable and owned by the caller.
pub unsafe fn fill(ptr: *mut u8, len: usize, seed: u32) {
    for i in 0..len {
        // SAFETY: `i < len`, inside the caller's block.
        unsafe { ptr.add(i).write(pattern(seed, i)) };
    }
}

/// Panics unless the first `len` bytes at `ptr` hold block `seed`'s pattern.
///
/// # Safety
///
/// `ptr..ptr + len` must be readable.
pub unsafe fn check_pattern(ptr: *const u8, len: usize, seed: u32, what: &str) {
    for i in 0..len {
        // SAFETY: `i < len`, inside the caller's range.
        let b = unsafe { ptr.add(i).read() };
        assert_eq!(b, pattern(seed, i), "{what}: block {seed} at {ptr:p} lost its pattern at byte {i}");
    }
}

/// Panics unless `ptr[from..to]` is all zero. Reads with volatile loads,
/// because the bytes may lie past the end of the caller's layout (but
/// always inside the arena's mapping).
///
/// # Safety
///
/// `ptr + from..ptr + to` must be mapped and readable.
pub unsafe fn check_zero(ptr: *const u8, from: usize, to: usize, what: &str) {
    for i in from..to {
        // SAFETY: inside the caller's readable range.
        let b = unsafe { ptr.add(i).read_volatile() };
        assert_eq!(b, 0, "{what}: byte {i} of the block at {ptr:p} is {b:#x}, not zero");
    }
}

/// A live block and what its owner wrote into it.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// Start of the block.
    pub ptr: NonNull<u8>,
    /// The layout it was requested with.
    pub layout: Layout,
    /// Bytes usable (the allocator's returned length, or `layout.size()`).
    pub len: usize,
    /// Its pattern's tag.
    pub seed: u32,
}

/// The live blocks of one input.
#[derive(Debug, Default)]
pub struct Live {
    /// In allocation order.
    pub blocks: Vec<Block>,
    next_seed: u32,
}

impl Live {
    /// A fresh tag for a new block's pattern.
    pub fn seed(&mut self) -> u32 {
        self.next_seed = self.next_seed.wrapping_add(1);
        self.next_seed
    }

    /// Whether no more blocks should be allocated.
    pub fn full(&self) -> bool {
        self.blocks.len() >= MAX_LIVE
    }

    /// Records a block, panicking if it overlaps a live one (a chunk or
    /// page handed out twice).
    pub fn insert(&mut self, b: Block) {
        if b.len > 0 {
            let (s, e) = (b.ptr.as_ptr() as usize, b.ptr.as_ptr() as usize + b.len);
            for o in self.blocks.iter().filter(|o| o.len > 0) {
                let (os, oe) = (o.ptr.as_ptr() as usize, o.ptr.as_ptr() as usize + o.len);
                assert!(e <= os || oe <= s, "new block {s:#x}..{e:#x} overlaps live block {os:#x}..{oe:#x}");
            }
        }
        self.blocks.push(b);
    }

    /// Removes and returns the block `pick` selects, if any.
    pub fn take(&mut self, pick: u16) -> Option<Block> {
        if self.blocks.is_empty() {
            return None;
        }
        let i = pick as usize % self.blocks.len();
        Some(self.blocks.swap_remove(i))
    }
}
