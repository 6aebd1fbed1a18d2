//! The `SecretBox` drop contract: `T::zeroize` runs for every `T`, with
//! every allocator, before the memory goes back.
//!
//! Commit 854faa9 skipped `T::zeroize` for a `T` without drop glue and only
//! overwrote the value's own bytes. A handle that points at key bytes
//! elsewhere has no drop glue, so its key survived the drop: these tests
//! failed on that commit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use zeroize::Zeroize;

use secret_arena::allocator_api2::alloc::{AllocError, Allocator};
use secret_arena::{ExposeSecret, SecretBox};

const PATTERN: u8 = 0xC3;

/// A key handle: the key bytes live elsewhere, and its `Zeroize` clears
/// them. `&mut` has no drop glue, so neither has the handle.
struct KeyHandle<'a>(&'a mut [u8; 32]);

impl Zeroize for KeyHandle<'_> {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[test]
fn key_handle_without_drop_glue_is_zeroized_in_the_default_arena() {
    assert!(!core::mem::needs_drop::<KeyHandle<'_>>(), "the case this test is about");
    let mut key = [PATTERN; 32];
    let handle = SecretBox::new(KeyHandle(&mut key));
    drop(handle);
    assert_eq!(key, [0; 32], "SecretBox's drop did not call T::zeroize");
}

/// A plain allocator over `System` that counts frees: the contract holds
/// with allocators that wipe nothing themselves.
#[derive(Clone, Copy, Default)]
struct Counting<'a>(Option<&'a AtomicUsize>);

// SAFETY: blocks come from `System` with the requested layout and go back to
// it with the same layout.
unsafe impl Allocator for Counting<'_> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        assert!(layout.size() > 0, "this test allocator does not do zero-size blocks");
        // SAFETY: non-zero size, checked above.
        let ptr = NonNull::new(unsafe { System.alloc(layout) }).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some(n) = self.0 {
            n.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.dealloc(ptr.as_ptr(), layout) }
    }
}

#[test]
fn key_handle_is_zeroized_with_any_allocator() {
    let frees = AtomicUsize::new(0);
    let mut key = [PATTERN; 32];
    drop(SecretBox::new_in(KeyHandle(&mut key), Counting(Some(&frees))));
    assert_eq!(key, [0; 32]);
    assert_eq!(frees.load(Ordering::Relaxed), 1, "the box's memory went back once");
}

/// Zeroize, then the type's own drop, in that order, once each.
struct Ordered<'a> {
    log: &'a std::cell::RefCell<Vec<&'static str>>,
}

impl Zeroize for Ordered<'_> {
    fn zeroize(&mut self) {
        self.log.borrow_mut().push("zeroize");
    }
}

impl Drop for Ordered<'_> {
    fn drop(&mut self) {
        self.log.borrow_mut().push("drop");
    }
}

#[test]
fn zeroize_runs_before_drop_once_each() {
    let log = std::cell::RefCell::new(Vec::new());
    drop(SecretBox::new_in(Ordered { log: &log }, Counting::default()));
    assert_eq!(*log.borrow(), ["zeroize", "drop"]);
}

/// A `Zeroize` that panics: the memory is still freed (and so, in the
/// arena, wiped), not leaked.
struct Panicky([u8; 64]);

impl Zeroize for Panicky {
    fn zeroize(&mut self) {
        std::hint::black_box(&self.0);
        panic!("zeroize failed");
    }
}

#[test]
fn memory_is_freed_when_zeroize_panics() {
    let frees = AtomicUsize::new(0);
    let boxed = SecretBox::new_in(Panicky([PATTERN; 64]), Counting(Some(&frees)));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(boxed)));
    assert!(r.is_err(), "the panic reaches the caller");
    assert_eq!(frees.load(Ordering::Relaxed), 1, "the block was leaked");

    // In the default arena, freeing wipes: the chunk reads zero.
    let boxed = SecretBox::new(Panicky([PATTERN; 64]));
    let at = boxed.expose_secret().0.as_ptr();
    assert!(secret_arena::global().expect("global arena").contains(at));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(boxed)));
    assert!(r.is_err());
    // SAFETY: the freed chunk stays mapped: the global arena lives as long
    // as the process.
    let left: Vec<u8> = (0..64).map(|i| unsafe { std::ptr::read_volatile(at.add(i)) }).collect();
    assert_eq!(left, vec![0; 64], "the arena wiped the chunk on free");
}
