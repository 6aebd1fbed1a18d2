//! Size classes: which chunk size serves a request, and how a slab of each
//! class is laid out.
//!
//! Classes run from 16 to 4096 bytes. Every size is a multiple of 16, and a
//! chunk's address is a multiple of the largest power of two dividing its
//! size, because slabs start on a page boundary. A request goes to the
//! smallest class that is large enough *and* whose size is a multiple of the
//! requested alignment. Larger requests, or alignments above 4096, are served
//! as runs of whole pages. Page-sized blocks get a class of their own, so a
//! thread that keeps allocating one reuses its shard's slab without taking
//! the page lock.

/// The arena's page: the unit of slabs and runs. Independent of the OS page
/// size, which only decides mapping granularity and guard pages.
pub(crate) const PAGE: usize = 4096;

/// Number of size classes.
///
/// # Examples
///
/// ```
/// let stats = secret_arena::SecretArena::new(16 << 10)?.stats();
/// assert_eq!(stats.classes.len(), secret_arena::CLASS_COUNT);
/// assert_eq!(stats.classes[0].chunk_size, 16);
/// assert_eq!(stats.classes[secret_arena::CLASS_COUNT - 1].chunk_size, 4096);
/// # Ok::<(), secret_arena::Error>(())
/// ```
pub const CLASS_COUNT: usize = 28;

/// Chunk size of each class, in bytes.
pub(crate) const CLASS_SIZES: [u32; CLASS_COUNT] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792,
    2048, 2560, 3072, 3584, 4096,
];

/// Largest size served from a class; anything above is a page run.
pub(crate) const MAX_CLASS_SIZE: usize = 4096;

/// Bitmap words per slab: at most 256 chunks in one slab.
pub(crate) const WORDS: usize = 4;
const MAX_CHUNKS: usize = WORDS * 64;
const MAX_SLAB_PAGES: usize = 8;

/// The geometry of one class.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClassInfo {
    /// Chunk size in bytes.
    pub size: u32,
    /// Pages in one slab.
    pub pages: u32,
    /// Chunks in one slab (≤ 256).
    pub chunks: u32,
    /// Bitmap value of an empty slab: one bit per chunk that exists (1 =
    /// free). Bits past the last chunk stay 0, so they are never handed out.
    pub all_free: [u64; WORDS],
}

/// Picks the fewest pages (1 to 8) whose slab wastes at most 1/16 of itself.
const fn slab_pages(size: usize) -> usize {
    let mut pages = 1;
    let mut best = 1;
    let mut best_waste_ratio = usize::MAX; // waste * 1024 / slab bytes
    while pages <= MAX_SLAB_PAGES {
        let bytes = pages * PAGE;
        let mut chunks = bytes / size;
        if chunks > MAX_CHUNKS {
            chunks = MAX_CHUNKS;
        }
        let waste = bytes - chunks * size;
        if waste * 16 <= bytes {
            return pages;
        }
        let ratio = waste * 1024 / bytes;
        if ratio < best_waste_ratio {
            best_waste_ratio = ratio;
            best = pages;
        }
        pages += 1;
    }
    best
}

const fn build_classes() -> [ClassInfo; CLASS_COUNT] {
    let mut out = [ClassInfo { size: 0, pages: 0, chunks: 0, all_free: [0; WORDS] }; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        let size = CLASS_SIZES[c] as usize;
        let pages = slab_pages(size);
        let mut chunks = pages * PAGE / size;
        if chunks > MAX_CHUNKS {
            chunks = MAX_CHUNKS;
        }
        let mut all_free = [0u64; WORDS];
        let mut w = 0;
        while w < WORDS {
            let first = w * 64;
            all_free[w] = if first >= chunks {
                0
            } else if chunks - first >= 64 {
                u64::MAX
            } else {
                (1u64 << (chunks - first)) - 1
            };
            w += 1;
        }
        out[c] = ClassInfo { size: size as u32, pages: pages as u32, chunks: chunks as u32, all_free };
        c += 1;
    }
    out
}

/// Geometry of every class.
pub(crate) static CLASSES: [ClassInfo; CLASS_COUNT] = build_classes();

const fn build_spans() -> [usize; CLASS_COUNT] {
    let mut out = [0; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        out[c] = CLASSES[c].chunks as usize * CLASSES[c].size as usize;
        c += 1;
    }
    out
}

/// Bytes from a slab's first chunk to the end of its last one, per class.
pub(crate) static SLAB_SPAN: [usize; CLASS_COUNT] = build_spans();

/// 16-byte granules in the largest slab.
pub(crate) const MAX_SLAB_GRANULES: usize = MAX_SLAB_PAGES * PAGE / 16;
/// `CHUNK_OF` entry of a granule where no chunk starts.
pub(crate) const NO_CHUNK: u16 = u16::MAX;

const fn build_chunk_of() -> [[u16; MAX_SLAB_GRANULES]; CLASS_COUNT] {
    let mut table = [[NO_CHUNK; MAX_SLAB_GRANULES]; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        let info = &CLASSES[c];
        let mut i = 0;
        while i < info.chunks as usize {
            table[c][i * info.size as usize / 16] = i as u16;
            i += 1;
        }
        c += 1;
    }
    table
}

/// `CHUNK_OF[class][offset / 16]`: the index of the chunk that starts at
/// byte `offset` of a slab of `class`, or [`NO_CHUNK`]. One load instead of
/// a division (a dependent multiply chain on the free path).
pub(crate) static CHUNK_OF: [[u16; MAX_SLAB_GRANULES]; CLASS_COUNT] = build_chunk_of();

const fn build_lookup() -> [u8; MAX_CLASS_SIZE / 16] {
    let mut table = [0u8; MAX_CLASS_SIZE / 16];
    let mut i = 0;
    let mut c = 0;
    while i < table.len() {
        let size = (i + 1) * 16;
        while (CLASS_SIZES[c] as usize) < size {
            c += 1;
        }
        table[i] = c as u8;
        i += 1;
    }
    table
}

/// `LOOKUP[(size - 1) / 16]` is the smallest class of at least `size` bytes.
static LOOKUP: [u8; MAX_CLASS_SIZE / 16] = build_lookup();

/// The class of a `layout` of 1 to 4096 bytes aligned to at most 16, else
/// `None`: the common case of [`class_for`], with no loop. Every size
/// between a request's and its chunk's maps to the same class, so a block
/// freed with either size finds the class it came from.
#[inline(always)]
pub(crate) fn small_class(size: usize, align: usize) -> Option<usize> {
    if size.wrapping_sub(1) >= MAX_CLASS_SIZE || align > 16 {
        return None;
    }
    let c = LOOKUP[(size - 1) / 16] as usize;
    // SAFETY: every entry of LOOKUP is a class (`build_lookup` stops at the
    // last, 4096 bytes, which every size here fits). Knowing it lets the
    // compiler drop the callers' bounds checks on per-class tables.
    unsafe { core::hint::assert_unchecked(c < CLASS_COUNT) };
    Some(c)
}

/// The class for a request, or `None` if it must be a page run.
#[inline]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > MAX_CLASS_SIZE || align > MAX_CLASS_SIZE {
        return None;
    }
    let mut c = LOOKUP[size.saturating_sub(1) / 16] as usize;
    if align > 16 {
        while CLASS_SIZES[c] as usize % align != 0 {
            c += 1;
            if c == CLASS_COUNT {
                return None;
            }
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_fits_its_bitmap_and_slab() {
        for (c, info) in CLASSES.iter().enumerate() {
            assert!(info.chunks as usize <= MAX_CHUNKS, "class {c}: {info:?}");
            assert!(info.chunks as usize * info.size as usize <= info.pages as usize * PAGE, "class {c}");
            let free_bits: u32 = info.all_free.iter().map(|w| w.count_ones()).sum();
            assert_eq!(free_bits, info.chunks, "class {c}: all_free mask {:x?}", info.all_free);
        }
    }

    #[test]
    fn chunk_of_finds_exactly_the_chunk_starts() {
        for (c, info) in CLASSES.iter().enumerate() {
            for (g, &got) in CHUNK_OF[c].iter().enumerate() {
                let off = g * 16;
                let starts = off % info.size as usize == 0 && off / (info.size as usize) < info.chunks as usize;
                let want = if starts { (off / info.size as usize) as u16 } else { NO_CHUNK };
                assert_eq!(got, want, "class {c} (size {}) offset {off}", info.size);
            }
        }
    }

    #[test]
    fn class_choice_honours_size_and_alignment() {
        for size in 0..=MAX_CLASS_SIZE + 1 {
            for shift in 0..13 {
                let align = 1usize << shift;
                match class_for(size, align) {
                    Some(c) => {
                        let s = CLASS_SIZES[c] as usize;
                        assert!(s >= size && s % align == 0, "size {size} align {align} -> {s}");
                        // Smallest such class.
                        assert!(
                            CLASS_SIZES[..c].iter().all(|&o| (o as usize) < size || o as usize % align != 0),
                            "size {size} align {align} -> {s} is not the smallest"
                        );
                    }
                    None => assert!(size > MAX_CLASS_SIZE || align > MAX_CLASS_SIZE, "size {size} align {align}"),
                }
            }
        }
    }
}
