//! The allocator interfaces: thin wrappers over the arena.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write as _;
use core::ptr::NonNull;

use core::sync::atomic::{AtomicU64, Ordering};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::arena::{Misuse, SecretArena};
use crate::error::{Bytes, Errno, Error, Step};
use crate::global;

/// `allocate` past the owner's quickest path; out of line, so that path
/// stays small enough to inline.
#[inline(never)]
fn allocate_slow(arena: &SecretArena, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    match arena.alloc_block(layout) {
        Ok(block) => block.ok_or(AllocError),
        Err(Misuse::Forked) => forked_child_abort(false),
        Err(misuse) => panic!("{misuse}"),
    }
}

/// `deallocate` past the owner's quickest path: finds the block through
/// the page table, and panics on misuse.
#[inline(never)]
fn deallocate_slow(arena: &SecretArena, ptr: NonNull<u8>, layout: Layout) {
    match arena.free_block_located(ptr, layout) {
        Ok(()) => {}
        Err(Misuse::Forked) => forked_child_abort(false),
        Err(misuse) => panic!("{misuse}"),
    }
}

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
// - In a fork child, an arena created before the fork is refused (abort)
//   before any lock is taken: its memory is not the child's.
unsafe impl Allocator for SecretArena {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.alloc_fast(layout) {
            Some(block) => Ok(block),
            None => allocate_slow(self, layout),
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
        if !self.free_fast(ptr, layout) {
            deallocate_slow(self, ptr, layout);
        }
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() >= old.size(), "grow to {} from {}", new.size(), old.size());
        refuse_if_inherited(self);
        // SAFETY: the caller's contract for `grow` is the one `resize_block` needs.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, false) })
    }

    unsafe fn grow_zeroed(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() >= old.size(), "grow to {} from {}", new.size(), old.size());
        refuse_if_inherited(self);
        // SAFETY: as in `grow`.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, true) })
    }

    /// Shrinks in place when the block keeps its size class (wiping the
    /// tail), else moves to a smaller block and wipes the old one.
    unsafe fn shrink(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        debug_assert!(new.size() <= old.size(), "shrink to {} from {}", new.size(), old.size());
        refuse_if_inherited(self);
        // SAFETY: as in `grow`.
        resize_or_panic(unsafe { self.resize_block(ptr, old, new, false) })
    }
}

/// Aborts, with one line on stderr, when `arena` was created before a
/// `fork` that made this process: its memory is a hole here (or the parent's
/// read-only heap), and its locks may be held by threads that do not exist
/// in the child. Checked before any lock is taken, so a child never hangs.
#[inline]
fn refuse_if_inherited(arena: &SecretArena) {
    if arena.is_inherited() {
        forked_child_abort(false);
    }
}

#[cold]
fn forked_child_abort(heap: bool) -> ! {
    if heap {
        fatal_line(format_args!(
            "secret-arena: SecretGlobalAlloc used in a fork(2) child that has not called exec: the heap is the \
             parent's, read-only here; between fork and exec call only async-signal-safe functions (as \
             std::process::Command does), exec a program, or fork before installing secrets; aborting"
        ))
    }
    fatal_line(format_args!(
        "secret-arena: an arena created before fork(2) was used in the child: its memory is not inherited \
         (MADV_DONTFORK); create a new arena in the child, or exec; aborting"
    ))
}

fn resize_or_panic(r: Result<Option<NonNull<[u8]>>, Misuse>) -> Result<NonNull<[u8]>, AllocError> {
    match r {
        Ok(block) => block.ok_or(AllocError),
        Err(misuse) => panic!("{misuse}"),
    }
}

/// A `#[global_allocator]` that puts every heap allocation of the program in
/// secret memory.
///
/// The arena is created on the first allocation, grows by segments up to the
/// memlock budget, and returns null (so the program sees an allocation
/// failure, not a panic) when it cannot grow. It never allocates while
/// holding one of its locks or while creating itself, so it cannot recurse.
///
/// A double free or a foreign pointer aborts the process with a message on
/// stderr: a global allocator must not unwind.
///
/// It has an arena of its own (the *heap*, see [`SecretGlobalAlloc::arena`]),
/// separate from [`global()`](crate::global()) and `SecretBox`'s
/// [`DefaultArena`](crate::DefaultArena):
///
/// - **fork and exec work**: every `std::process::Command` path
///   (`posix_spawn`, `.uid()`, `.gid()`, `.pre_exec()`, `.env("PATH", …)`,
///   `.current_dir()`) and a hand-written `fork()` + `execv()` with argv on
///   the heap. The heap is inherited by a fork child, and made read-only
///   there by a `pthread_atfork` child handler.
/// - **a child that goes on without exec** can read the parent's heap
///   (including what the parent writes there later, until the child execs or
///   exits), cannot write it (a write is SIGSEGV), and its first call into
///   the allocator aborts with one line on stderr naming fork. It cannot see
///   `SecretBox`es or explicit arenas at all.
/// - **zero-copy I/O into heap buffers fails**: `O_DIRECT` reads and writes,
///   `vmsplice` and anything else that pins user pages get `EFAULT` on
///   `memfd_secret` memory. Use an ordinary buffer for them.
/// - **every fatal condition says why** on one line of stderr, before std's
///   `memory allocation of N bytes failed`: the memlock limit (with `ulimit
///   -l`, `LimitMEMLOCK=`, `CAP_IPC_LOCK`), `memfd_secret` failing, the fd
///   limit, or use in a fork child.
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static ALLOC: secret_arena::SecretGlobalAlloc = secret_arena::SecretGlobalAlloc::new();
    /// # fn main() {}
    /// ```
    pub const fn new() -> Self {
        SecretGlobalAlloc { _private: () }
    }
}

/// `SecretGlobalAlloc::alloc` past the owner's quickest path (and the
/// first call, which creates the heap); out of line, so that path inlines.
#[inline(never)]
fn global_alloc_slow(layout: Layout) -> *mut u8 {
    match global::heap() {
        Ok(arena) => match arena.alloc_block(layout) {
            Ok(Some(b)) => b.as_ptr().cast(),
            Ok(None) => failed(layout.size(), arena.last_error(), Some(arena)),
            Err(Misuse::Forked) => forked_child_abort(true),
            Err(misuse) => abort_with(misuse),
        },
        Err(e) => failed(layout.size(), Some(e), None),
    }
}

/// `SecretGlobalAlloc::dealloc` past the owner's quickest path.
#[inline(never)]
fn global_dealloc_slow(arena: &SecretArena, ptr: NonNull<u8>, layout: Layout) {
    match arena.free_block_located(ptr, layout) {
        Ok(()) => {}
        Err(Misuse::Forked) => forked_child_abort(true),
        Err(misuse) => abort_with(misuse),
    }
}

// SAFETY: (the GlobalAlloc contract)
// - `alloc` returns null or a block of at least `layout.size()` bytes with
//   `layout.align()`, from the same arena as every other call;
// - `dealloc` and `realloc` are given blocks from `alloc` with their layout;
//   the arena checks both and aborts rather than corrupt itself;
// - nothing here unwinds: misuse aborts;
// - in a fork child, the inherited heap is refused before any lock is taken.
unsafe impl GlobalAlloc for SecretGlobalAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(b) = global::existing_heap().and_then(|arena| arena.alloc_fast(layout)) {
            return b.as_ptr().cast();
        }
        global_alloc_slow(layout)
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
        let Some(arena) = global::existing_heap() else {
            abort_with(Misuse::Foreign(ptr.as_ptr() as usize));
        };
        if !arena.free_fast(ptr, layout) {
            global_dealloc_slow(arena, ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let (Some(arena), Some(ptr)) = (global::existing_heap(), NonNull::new(ptr)) else {
            abort_with(Misuse::Foreign(ptr as usize));
        };
        if arena.is_inherited() {
            forked_child_abort(true);
        }
        // SAFETY: the caller's realloc contract: `ptr` is a live block of
        // `layout` from `alloc`.
        match unsafe { arena.resize_block(ptr, layout, new, false) } {
            Ok(Some(block)) => block.as_ptr().cast(),
            Ok(None) => failed(new_size, arena.last_error(), Some(arena)),
            Err(misuse) => abort_with(misuse),
        }
    }
}

impl SecretGlobalAlloc {
    /// The arena behind the global allocator, once the first allocation
    /// created it: for [`contains`](SecretArena::contains),
    /// [`stats`](SecretArena::stats) and
    /// [`last_error`](SecretArena::last_error).
    ///
    /// It is not [`global()`](crate::global()): `SecretBox` and
    /// [`DefaultArena`](crate::DefaultArena) use that one, which a fork child
    /// does not inherit. Keep secrets there, not here.
    ///
    /// # Examples
    ///
    /// ```
    /// // In a program that does not install it, there is no heap.
    /// assert!(secret_arena::SecretGlobalAlloc::arena().is_none());
    /// ```
    pub fn arena() -> Option<&'static SecretArena> {
        global::existing_heap()
    }
}

/// When the last allocation-failure line was printed (coarse seconds + 1).
static LAST_REPORT: AtomicU64 = AtomicU64::new(0);

/// The heap could not serve `size` bytes. Prints why on one line of stderr,
/// at most once a second, then returns null: std's handler then prints its
/// own `memory allocation of N bytes failed` and aborts, while a caller that
/// can recover (`try_reserve`) does.
#[cold]
fn failed(size: usize, error: Option<Error>, arena: Option<&SecretArena>) -> *mut u8 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; the vDSO call allocates nothing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let now = ts.tv_sec as u64 + 1;
    let last = LAST_REPORT.load(Ordering::Relaxed);
    if last != now && LAST_REPORT.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        print_line(format_args!(
            "secret-arena: SecretGlobalAlloc cannot allocate {size} bytes: {}",
            Cause(error, arena)
        ));
    }
    core::ptr::null_mut()
}

/// Why the heap could not grow, with what to do about it. Formats without
/// allocating: no `Errno` or `Error` `Display` (std's error text allocates).
struct Cause<'a>(Option<Error>, Option<&'a SecretArena>);

const LIMIT_ADVICE: &str = "raise the limit with `ulimit -l` or LimitMEMLOCK= in a systemd unit, or grant CAP_IPC_LOCK";

impl core::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(Error::MemlockBudget { requested, available, limit, errno }) => {
                write!(f, "secret memory needs {} of locked memory", Bytes(requested))?;
                if let (Some(avail), Some(limit)) = (available, limit) {
                    write!(f, " but only {} is left under RLIMIT_MEMLOCK ({} in all)", Bytes(avail), Bytes(limit))?;
                }
                write!(f, " ({}); {LIMIT_ADVICE}", ErrnoName(errno))
            }
            Some(Error::Syscall { step: Step::MemfdSecret | Step::MemfdCreate, errno })
                if errno == Errno::MFILE || errno == Errno::NFILE =>
            {
                write!(f, "no file descriptor left for secret memory ({}", ErrnoName(errno))?;
                if errno == Errno::MFILE {
                    if let Some(n) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
                        write!(f, ", RLIMIT_NOFILE is {n}")?;
                    }
                }
                write!(f, "); raise it with `ulimit -n` or LimitNOFILE= in a systemd unit, or close descriptors")
            }
            Some(Error::Syscall { step: Step::MemfdSecret, errno }) => write!(
                f,
                "memfd_secret(2) failed ({}), and only ENOSYS or EPERM fall back to an mlocked memfd; \
                 secret memory needs Linux 5.14+ with secretmem enabled (on by default since 6.5, else \
                 boot with secretmem.enable=1)",
                ErrnoName(errno)
            ),
            Some(Error::Syscall { step, errno }) => write!(f, "step {step:?} failed ({})", ErrnoName(errno)),
            Some(Error::SecretMemoryUnavailable { errno }) => {
                write!(f, "memfd_secret(2) is not available ({})", ErrnoName(errno))
            }
            Some(Error::InvalidCapacity { requested }) => write!(f, "a segment of {requested} bytes cannot be mapped"),
            Some(Error::MappingRegistryFull { slots }) => write!(
                f,
                "the process already has {slots} secret-memory segments, as many as purge() can track; \
                 drop arenas that are no longer needed"
            ),
            None => {
                let Some(arena) = self.1 else { return write!(f, "unknown cause") };
                write!(
                    f,
                    "the heap holds {} of its limit of {}",
                    Bytes(arena.capacity()),
                    Bytes(arena.max_capacity())
                )?;
                let budget = crate::backing::memlock_budget();
                match (budget.available(), budget.limit) {
                    (Some(avail), Some(limit)) => write!(
                        f,
                        ", set by RLIMIT_MEMLOCK ({} in all, {} left); {LIMIT_ADVICE}",
                        Bytes(limit),
                        Bytes(avail)
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// An errno as its symbolic name and number, formatted without allocating.
pub(crate) struct ErrnoName(pub Errno);

impl core::fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [(Errno, &str); 12] = [
            (Errno::AGAIN, "EAGAIN"),
            (Errno::NOMEM, "ENOMEM"),
            (Errno::ACCESS, "EACCES"),
            (Errno::INVAL, "EINVAL"),
            (Errno::PERM, "EPERM"),
            (Errno::NOSYS, "ENOSYS"),
            (Errno::MFILE, "EMFILE"),
            (Errno::NFILE, "ENFILE"),
            (Errno::NOSPC, "ENOSPC"),
            (Errno::FAULT, "EFAULT"),
            (Errno::BADF, "EBADF"),
            (Errno::EXIST, "EEXIST"),
        ];
        let name = NAMES.iter().find(|(e, _)| *e == self.0).map_or("errno", |(_, n)| n);
        write!(f, "{name} {}", self.0.raw_os_error())
    }
}

/// Writes one line to stderr, without allocating.
pub(crate) fn print_line(args: core::fmt::Arguments<'_>) {
    let mut out = StackLine { buf: [0; 1024], len: 0 };
    let _ = out.write_fmt(args);
    // Always end with a newline, even when the text was cut.
    let len = out.len.min(out.buf.len() - 1);
    out.buf[len] = b'\n';
    let mut rest = &out.buf[..=len];
    while !rest.is_empty() {
        match rustix::io::write(rustix::stdio::stderr(), rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
}

/// Writes one line to stderr without allocating, then aborts.
#[cold]
pub(crate) fn fatal_line(args: core::fmt::Arguments<'_>) -> ! {
    print_line(args);
    std::process::abort()
}

/// A line formatted on the stack; text past the buffer is cut.
struct StackLine {
    buf: [u8; 1024],
    len: usize,
}

impl core::fmt::Write for StackLine {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes the misuse to stderr without allocating, then aborts.
#[cold]
fn abort_with(misuse: Misuse) -> ! {
    fatal_line(format_args!("{misuse}; aborting"))
}
