//! Which of the per-class "current slab" hints a thread uses.
//!
//! Threads are spread round-robin over [`SHARDS`] hints, so two threads
//! allocating the same class usually carve from different slabs and do not
//! bounce one cache line between cores. The thread-local is const-initialised
//! and has no destructor, so reading it never allocates and works during
//! thread teardown, which a global allocator needs.

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Number of hint slots per class.
pub(crate) const SHARDS: usize = 8;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// This thread's shard, assigned on first use.
#[inline]
pub(crate) fn current() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != u8::MAX {
            return v as usize;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(n as u8);
        n
    })
}
