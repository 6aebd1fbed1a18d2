//! [`wipe_stack`]: overwrite the stack below the caller, where returned
//! functions left their temporaries (libsodium's `sodium_stackzero`).

use core::mem::MaybeUninit;

use crate::wipe::wipe_chunk;

/// The largest single frame [`wipe_stack`] uses; larger requests chain
/// such frames.
const MAX_FRAME: usize = 1 << 20;

/// Overwrites at least `bytes` bytes of this thread's stack below the
/// caller's frame with zeros.
///
/// Functions that have returned leave their locals on the stack, below
/// the caller's frame, until something else is called there: a key
/// schedule being expanded, the key bytes passed to a constructor, spilled
/// registers. Call this right after building a key (for example with
/// [`SecretCell::init_with`](crate::SecretCell::init_with)) to overwrite
/// them. How deep the constructor went is up to it; 16–64 KiB covers the
/// RustCrypto and dalek constructors with room to spare.
///
/// It rounds `bytes` up to a power of two of at least 4 KiB and wipes one
/// local array of that size, in one frame just below the caller's, so
/// there are no gaps: only the few bytes of that frame's own bookkeeping
/// (return address, saved registers) next to the caller's frame are not
/// zeroed, and they hold this call's values, not old ones. Above 1 MiB it
/// chains 1 MiB frames, with such bookkeeping between them. The stack must
/// have that much free: asking for more than the thread's stack has left
/// overflows it, as any deep call would (Rust then aborts with "stack
/// overflow"); threads spawned by `std` have 2 MiB, the main thread
/// usually 8 MiB. It reaches only the current thread's stack, not copies
/// in registers, in other threads, in signal frames or on the heap.
///
/// # Examples
///
/// ```
/// use secret_arena::{ExposeSecret, SecretCell, wipe_stack};
///
/// let key = SecretCell::init_with(|| {
///     let mut k = [0u8; 32];
///     k.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
///     k
/// });
/// wipe_stack(32 << 10);
/// assert_eq!(key.expose_secret()[31], 31);
/// ```
#[inline(never)]
pub fn wipe_stack(bytes: usize) {
    match bytes {
        0 => {}
        1..=4096 => wipe_frame::<4096>(),
        4097..=8192 => wipe_frame::<8192>(),
        8193..=16384 => wipe_frame::<16384>(),
        16385..=32768 => wipe_frame::<32768>(),
        32769..=65536 => wipe_frame::<65536>(),
        65537..=131_072 => wipe_frame::<131_072>(),
        131_073..=262_144 => wipe_frame::<262_144>(),
        262_145..=524_288 => wipe_frame::<524_288>(),
        524_289..=MAX_FRAME => wipe_frame::<MAX_FRAME>(),
        _ => wipe_chain(bytes),
    }
}

/// Wipes `bytes` (more than [`MAX_FRAME`]) in chained frames, each below
/// the last.
#[inline(never)]
fn wipe_chain(bytes: usize) {
    let mut frame = MaybeUninit::<Aligned<MAX_FRAME>>::uninit();
    let at = frame.as_mut_ptr().cast::<u8>();
    // SAFETY: `frame` is a 16-aligned local of `MAX_FRAME` bytes that only
    // this function refers to.
    unsafe { wipe_chunk(at, MAX_FRAME) };
    wipe_stack(bytes - MAX_FRAME);
    // Keeps `frame` alive across the call above, so that call is not made
    // a jump that reuses this frame.
    core::hint::black_box(at);
}

/// Wipes one local array of `N` bytes, in a frame of its own.
#[inline(never)]
fn wipe_frame<const N: usize>() {
    let mut frame = MaybeUninit::<Aligned<N>>::uninit();
    let at = frame.as_mut_ptr().cast::<u8>();
    // SAFETY: `frame` is a 16-aligned local of `N` bytes (`N` a multiple
    // of 16) that only this function refers to.
    unsafe { wipe_chunk(at, N) };
}

/// `N` bytes of stack, aligned for `wipe_chunk`.
#[repr(C, align(16))]
struct Aligned<const N: usize>([u8; N]);
