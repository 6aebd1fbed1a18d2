//! Which backing is in use is visible, and its protections are in place:
//! the mapping's name and VmFlags in `/proc/self/smaps`, the guard pages
//! (present, and fatal to touch), one close-on-exec descriptor held and
//! closed on drop, and hibernation
//! refused while secret memory exists.

mod common;

use common::{
    Kind, Sandbox, arena, assert_child_killed_by, assert_child_passed, is_child, secret_block, vma_containing,
};

/// The arena's mapping: named after its backing, shared, read-write, locked
/// (`lo`), not dumped (`dd`), not inherited by fork (`dc`), never executable.
fn flags(case: &str, kind: Kind) {
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let block = secret_block(&arena, 64, 1);
    let vma = vma_containing(block.as_ptr() as usize).expect("the block is mapped");
    println!("{vma:?}");
    assert_eq!(vma.path, kind.smaps_path(), "mapping name");
    assert_eq!(vma.end - vma.start, arena.capacity(), "the whole arena is one mapping");
    assert_eq!(vma.perms, "rw-s", "permissions");
    for flag in ["rd", "wr", "sh", "lo", "dd", "dc"] {
        assert!(vma.has_flag(flag), "VmFlags lack {flag:?}: {:?}", vma.flags);
    }
    assert!(!vma.has_flag("ex"), "executable: {:?}", vma.flags);
}

#[test]
fn smaps_flags_secret() {
    flags(this_test!(), Kind::Secret);
}

#[test]
fn smaps_flags_fallback() {
    flags(this_test!(), Kind::Fallback);
}

/// A `PROT_NONE` page lies right before and right after the arena, and it
/// is the arena's own: it goes away with the arena. (A neighbour that merely
/// happens to be `PROT_NONE`, such as a malloc heap's reserve, would stay.)
/// Runs in a child, so no other test maps anything into the hole meanwhile.
fn guards_present(case: &str, kind: Kind) {
    if !is_child(case) {
        assert_child_passed(&Sandbox::new(case).run());
        return;
    }
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, kind, 64 << 10) else { return };
    let block = secret_block(&arena, 64, 1);
    let vma = vma_containing(block.as_ptr() as usize).expect("the block is mapped");
    let sides = [("before", vma.start - 1), ("after", vma.end)];
    let mut guards = Vec::new();
    for (side, addr) in sides {
        let guard = vma_containing(addr).unwrap_or_else(|| panic!("nothing mapped {side} the arena"));
        println!("{side}: {guard:?}");
        assert_eq!(guard.perms, "---p", "the page {side} the arena is no guard: {guard:?}");
        assert!(guard.has_flag("dc"), "the guard {side} the arena is inherited by fork: {guard:?}");
        guards.push((guard.start, guard.end));
    }
    drop(arena);
    for ((side, addr), was) in sides.into_iter().zip(guards) {
        // Gone, or replaced by something else (a sanitizer's allocator may
        // map into the hole at once): never the same guard mapping.
        if let Some(now) = vma_containing(addr) {
            assert!(
                (now.start, now.end) != was || now.perms != "---p",
                "the page {side} the arena outlived it: not its guard ({now:?})"
            );
        }
    }
}

#[test]
fn guard_pages_present_secret() {
    guards_present(this_test!(), Kind::Secret);
}

#[test]
fn guard_pages_present_fallback() {
    guards_present(this_test!(), Kind::Fallback);
}

/// A child that writes one byte just outside the arena dies with SIGSEGV.
fn guard_fault(case: &str, kind: Kind, before: bool) {
    if is_child(case) {
        let budget = common::budget();
        let Some(arena) = arena(case, &budget, kind, 64 << 10) else {
            println!("NO-SECRET");
            return;
        };
        let block = secret_block(&arena, 64, 1);
        let vma = vma_containing(block.as_ptr() as usize).expect("the block is mapped");
        assert_eq!(vma.path, kind.smaps_path());
        let target = if before { vma.start - 1 } else { vma.end };
        println!("TOUCHING {target:#x}");
        // SAFETY: deliberately not valid: the guard page must make the
        // kernel kill this process here, which the parent checks.
        unsafe { (target as *mut u8).write_volatile(1) };
        println!("SURVIVED");
        return;
    }
    let out = Sandbox::new(case).run();
    if String::from_utf8_lossy(&out.stdout).contains("NO-SECRET") {
        assert_child_passed(&out);
        // The child said why; run() passed it on.
        return;
    }
    assert_child_killed_by(&out, libc::SIGSEGV);
    assert!(String::from_utf8_lossy(&out.stdout).contains("TOUCHING"));
}

#[test]
fn guard_before_faults_secret() {
    guard_fault(this_test!(), Kind::Secret, true);
}

#[test]
fn guard_after_faults_secret() {
    guard_fault(this_test!(), Kind::Secret, false);
}

#[test]
fn guard_before_faults_fallback() {
    guard_fault(this_test!(), Kind::Fallback, true);
}

#[test]
fn guard_after_faults_fallback() {
    guard_fault(this_test!(), Kind::Fallback, false);
}

/// Descriptors in `/proc/self/fd` that point at a file named like `kind`'s.
fn fds_named(kind: Kind) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.to_string_lossy() == kind.smaps_path()).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// The arena holds exactly one descriptor of its one backing file, with
/// close-on-exec, however many segments it grows by, and closes it when
/// dropped. Runs in a child, so no other test's arena is seen meanwhile.
fn one_fd(case: &str, kind: Kind) {
    if !is_child(case) {
        assert_child_passed(&Sandbox::new(case).run());
        return;
    }
    let budget = common::budget();
    assert_eq!(fds_named(kind), Vec::<i32>::new(), "a file of this kind was open before the arena");
    // Small steps: it all fits a 64 KiB memlock limit.
    let Some(arena) = common::arena_growing(case, &budget, kind, 8 << 10, 48 << 10) else { return };
    let _block = secret_block(&arena, 64, 1);
    let fds = fds_named(kind);
    assert_eq!(fds.len(), 1, "the arena holds one descriptor of its file: {fds:?}");
    // SAFETY: F_GETFD on a descriptor we just listed reads its flags only.
    let flags = unsafe { libc::fcntl(fds[0], libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "the arena's descriptor is not close-on-exec");
    // Grow by several segments: still the same one descriptor.
    let blocks: Vec<_> = (0..6).map(|i| secret_block(&arena, 4096, i)).collect();
    assert!(arena.stats().segments >= 3, "the arena did not grow: {:?}", arena.stats());
    assert_eq!(fds_named(kind), fds, "growth opened another descriptor");
    drop(blocks);
    drop(arena);
    assert_eq!(fds_named(kind), Vec::<i32>::new(), "the dropped arena left its file open");
}

#[test]
fn one_fd_held_and_closed_secret() {
    one_fd(this_test!(), Kind::Secret);
}

#[test]
fn one_fd_held_and_closed_fallback() {
    one_fd(this_test!(), Kind::Fallback);
}

/// While any secret-memory file exists the kernel offers no hibernation
/// (`hibernation_available()` is false), so `disk` leaves `/sys/power/state`.
#[test]
fn live_secret_arena_blocks_hibernation() {
    let case = this_test!();
    let offered =
        || std::fs::read_to_string("/sys/power/state").unwrap_or_default().split_whitespace().any(|s| s == "disk");
    if !offered() {
        let state = std::fs::read_to_string("/sys/power/state");
        common::skip(case, &format!("this system offers no hibernation to block (/sys/power/state: {state:?})"));
        return;
    }
    let budget = common::budget();
    let Some(arena) = arena(case, &budget, Kind::Secret, 4096) else { return };
    let _block = secret_block(&arena, 64, 1);
    assert!(!offered(), "hibernation is still offered while secret memory exists");
}
