//! The allocator interfaces: thin wrappers over the arena.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write as _;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::arena::{Misuse, SecretArena};
use crate::global;

// SAFETY: (the Allocator contract)
// - Blocks returned by `allocate` are valid for reads and writes of the
//   returned length: they are chunks or page runs inside a mapping that
//   stays mapped until the arena is dropped, and a block is handed to one
//   caller at a time (the owning thread's bitmaps, a class lock or the page
//   lock decide who).
// - They stay valid until deallocated, or until the arena is dropped, which
//   the borrow checker keeps after every `&SecretArena` user; moving the
//   arena does not move the mapping.
// - `deallocate`, `grow` and `shrink` accept any layout that fits the block:
//   the block is found from the pointer, and a size up to the returned
//   length is accepted.
// - Zero-size requests get an aligned dangling pointer that is never freed.
unsafe impl Allocator for SecretArena {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.alloc_block(layout) {
            Ok(block) => block.ok_or(AllocError),
            Err(misuse) => panic!("{misuse}"),
        }
    }

    /// Free memory in the arena is always zero, so this costs nothing more
    /// than [`allocate`](Allocator::allocate).
    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.allocate(layout)
    }

    /// Wipes the whole block, then frees it.
    ///
    /// # Panics
    ///
    /// If `ptr` was not handed out by this arena, was already freed, or
    /// `layout` is larger than the block: a broken contract, never a state
    /// the arena can recover from silently.
    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Err(misuse) = self.free_block(ptr, layout) {
            panic!("{misuse}");
        }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() >= old.size(), "grow to {} from {}", new.size(), old.size());
        // SAFETY: the caller's contract for `grow` is the one `resize_block` needs.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, false) })
    }

    unsafe fn grow_zeroed(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() >= old.size(), "grow to {} from {}", new.size(), old.size());
        // SAFETY: as in `grow`.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, true) })
    }

    /// Shrinks in place when the block keeps its size class (wiping the
    /// tail), else moves to a smaller block and wipes the old one.
    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() <= old.size(), "shrink to {} from {}", new.size(), old.size());
        // SAFETY: as in `grow`.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, false) })
    }
}

fn resize_or_panic(r: Result<Option<NonNull<[u8]>>, Misuse>) -> Result<NonNull<[u8]>, AllocError> {
    match r {
        Ok(block) => block.ok_or(AllocError),
        Err(misuse) => panic!("{misuse}"),
    }
}

/// A `#[global_allocator]` that puts every heap allocation of the program in
/// the process-wide secret arena ([`global()`](crate::global())).
///
/// The arena is created on the first allocation, grows by segments up to the
/// memlock budget, and returns null (so the program sees an allocation
/// failure, not a panic) when it cannot grow. It never allocates while
/// holding one of its locks or while creating itself, so it cannot recurse.
///
/// A double free or a foreign pointer aborts the process with a message on
/// stderr: a global allocator must not unwind.
///
/// Note that a child created by `fork(2)` does not inherit the arena, so it
/// cannot allocate; `exec` right after `fork` (as `std::process::Command`
/// does) is fine.
///
/// # Examples
///
/// ```no_run
/// use secret_arena::SecretGlobalAlloc;
///
/// #[global_allocator]
/// static ALLOC: SecretGlobalAlloc = SecretGlobalAlloc::new();
///
/// fn main() {
///     let password = String::from("hunter2"); // lives in secret memory
///     # drop(password);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretGlobalAlloc {
    _private: (),
}

impl SecretGlobalAlloc {
    /// The allocator; usable in a `static`.
    pub const fn new() -> Self {
        SecretGlobalAlloc { _private: () }
    }
}

// SAFETY: (the GlobalAlloc contract)
// - `alloc` returns null or a block of at least `layout.size()` bytes with
//   `layout.align()`, from the same arena as every other call;
// - `dealloc` and `realloc` are given blocks from `alloc` with their layout;
//   the arena checks both and aborts rather than corrupt itself;
// - nothing here unwinds: misuse aborts.
unsafe impl GlobalAlloc for SecretGlobalAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match global::global() {
            Ok(arena) => match arena.alloc_block(layout) {
                Ok(block) => block.map_or(core::ptr::null_mut(), |b| b.as_ptr().cast()),
                Err(misuse) => abort_with(misuse),
            },
            Err(_) => core::ptr::null_mut(),
        }
    }

    /// Same as `alloc`: free memory in the arena is always zero.
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract.
        unsafe { self.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = NonNull::new(ptr) else { return };
        let Some(arena) = global::existing() else {
            abort_with(Misuse::Foreign(ptr.as_ptr() as usize));
        };
        if let Err(misuse) = arena.free_block(ptr, layout) {
            abort_with(misuse);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let (Some(arena), Some(ptr)) = (global::existing(), NonNull::new(ptr)) else {
            abort_with(Misuse::Foreign(ptr as usize));
        };
        // SAFETY: the caller's realloc contract: `ptr` is a live block of
        // `layout` from `alloc`.
        match unsafe { arena.resize_block(ptr, layout, new, false) } {
            Ok(block) => block.map_or(core::ptr::null_mut(), |b| b.as_ptr().cast()),
            Err(misuse) => abort_with(misuse),
        }
    }
}

/// Writes the misuse to stderr without allocating, then aborts.
#[cold]
fn abort_with(misuse: Misuse) -> ! {
    struct StackBuf {
        buf: [u8; 256],
        len: usize,
    }
    impl core::fmt::Write for StackBuf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut out = StackBuf { buf: [0; 256], len: 0 };
    let _ = writeln!(out, "{misuse}; aborting");
    let _ = rustix::io::write(rustix::stdio::stderr(), &out.buf[..out.len]);
    std::process::abort()
}
