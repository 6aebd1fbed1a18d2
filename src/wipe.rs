//! Zeroing that the compiler cannot remove.
//!
//! A plain `write_bytes` just before memory is released may legally be
//! deleted by the optimiser. [`wipe_chunk`] zeroes small chunks with volatile
//! word stores (about 7× faster than zeroize's byte-wise volatile writes at
//! 4 KiB) and large ones with `memset` behind an optimisation barrier;
//! [`wipe`] handles unaligned ends with zeroize's byte-wise writes.

use zeroize::Zeroize;

/// Overwrites `len` bytes at `ptr` with zeros.
///
/// # Safety
///
/// `ptr..ptr + len` must be valid for writes and not aliased by any live
/// reference.
#[inline]
pub(crate) unsafe fn wipe(ptr: *mut u8, len: usize) {
    let head = ptr.align_offset(16).min(len);
    let middle = (len - head) / 16 * 16;
    let tail = len - head - middle;
    if head > 0 {
        // SAFETY: `ptr..ptr + head` is inside the caller's writable range.
        unsafe { core::slice::from_raw_parts_mut(ptr, head) }.zeroize();
    }
    if middle > 0 {
        // SAFETY: `ptr + head` is 16-aligned (middle > 0 implies head is the
        // full alignment offset) and `middle` a multiple of 16, inside the
        // caller's writable, unaliased range.
        unsafe { wipe_chunk(ptr.add(head), middle) };
    }
    if tail > 0 {
        // SAFETY: the last `tail` bytes are inside the caller's range.
        unsafe { core::slice::from_raw_parts_mut(ptr.add(len - tail), tail) }.zeroize();
    }
}

/// Chunks larger than this are wiped with `memset`. At 4 KiB memset is
/// several times faster than volatile words; at 256 bytes it takes 190
/// instructions per allocate + write + free against 215 with 16-byte
/// volatile stores (callgrind), as it stores 32 bytes at a time where the
/// CPU can. Up to 64 bytes, two or four stores need no call.
const WIPE_MEMSET_ABOVE: usize = 64;

/// Overwrites a chunk with zeros.
///
/// Up to [`WIPE_MEMSET_ABOVE`] bytes: volatile 16-byte stores (words off x86-64). Above: `write_bytes` (the libc
/// `memset`, several times faster than volatile words at 4 KiB) followed by
/// an empty `asm!` that takes the pointer and may read any memory, so the
/// compiler must assume the zeros are observed and cannot delete them.
///
/// # Safety
///
/// As [`wipe`], and `ptr` is 16-aligned and `len` a nonzero multiple of 16.
#[inline]
pub(crate) unsafe fn wipe_chunk(ptr: *mut u8, len: usize) {
    debug_assert!(ptr as usize % 16 == 0 && len % 16 == 0 && len > 0, "chunk {ptr:p}+{len} not 16-aligned");
    if len > WIPE_MEMSET_ABOVE {
        // SAFETY: the caller's range is writable and unaliased.
        unsafe { ptr.write_bytes(0, len) };
        // SAFETY: an empty instruction sequence; it touches no register
        // other than the input, and no stack.
        unsafe { core::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags)) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__m128i, _mm_setzero_si128};
        // SAFETY: SSE2 is part of the x86-64 baseline, so always present.
        let zero = unsafe { _mm_setzero_si128() };
        let at = |off: usize| ptr.wrapping_add(off).cast::<__m128i>();
        // 16 to 64 bytes: the first and last 16, and for more than 32 also
        // the 16 after the first and before the last. Stores may overlap;
        // there is no loop, and one branch.
        // SAFETY: `16 <= len <= 64`, a multiple of 16: every offset below
        // is in `0..=len - 16`, so each 16 bytes are inside the caller's
        // writable range, and 16-aligned.
        unsafe {
            at(0).write_volatile(zero);
            at(len - 16).write_volatile(zero);
            if len > 32 {
                at(16).write_volatile(zero);
                at(len - 32).write_volatile(zero);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let words = ptr.cast::<u64>();
        let mut i = 0;
        while i < len / 8 {
            // SAFETY: `i + 1 < len / 8`, so both words are inside the caller's
            // writable range, and they are 8-aligned.
            unsafe {
                words.add(i).write_volatile(0);
                words.add(i + 1).write_volatile(0);
            }
            i += 2;
        }
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::{wipe, wipe_chunk};

    #[test]
    fn wipes_exactly_the_range() {
        for start in 0..17 {
            for len in (0..80).chain([255, 256, 257, 300, 600]) {
                let mut buf = [0xAAu8; 640];
                // SAFETY: start + len < 640, inside `buf`.
                unsafe { wipe(buf.as_mut_ptr().add(start), len) };
                for (i, &b) in buf.iter().enumerate() {
                    let inside = i >= start && i < start + len;
                    assert_eq!(b, if inside { 0 } else { 0xAA }, "start {start} len {len} byte {i}");
                }
            }
        }
    }
    /// Every chunk size of every class and run length up to 8 KiB, on both
    /// sides of the inline and memset paths: exactly the chunk, nothing around it.
    #[test]
    fn wipe_chunk_zeroes_the_chunk_and_nothing_else() {
        #[repr(C, align(64))]
        struct Buf([u8; 8192 + 128]);
        let mut buf = Buf([0xAA; 8192 + 128]);
        for start in [0usize, 16, 32, 48] {
            for len in (16..=8192).step_by(16) {
                buf.0.fill(0xAA);
                // SAFETY: 64 + start + len <= 64 + 48 + 8192, inside `buf`;
                // the chunk is 16-aligned and a multiple of 16.
                unsafe { wipe_chunk(buf.0.as_mut_ptr().add(64 + start), len) };
                let (from, to) = (64 + start, 64 + start + len);
                assert!(buf.0[from..to].iter().all(|&b| b == 0), "start {start} len {len}: not all zero");
                assert!(buf.0[..from].iter().all(|&b| b == 0xAA), "start {start} len {len}: wrote before");
                assert!(buf.0[to..].iter().all(|&b| b == 0xAA), "start {start} len {len}: wrote after");
            }
        }
    }
}
