//! Moving a secret from the ordinary heap into secret memory must not leave
//! it in freed heap memory.
//!
//! A global allocator over `System` scans every block it frees for a marker
//! string and counts the hits. Each test takes `SERIAL`, so no other
//! thread's frees are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use secret_arena::{ExposeSecret, SecretBox, SecretSlice, SecretString, SecretVec};

const MARKER: &[u8] = b"Tr0ub4dor&3-marker";

static LEAKS: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

struct ScanOnFree;

// SAFETY: every call is passed to `System` unchanged; `dealloc` only reads
// the block it is handed before freeing it.
unsafe impl GlobalAlloc for ScanOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller hands back a live block of `layout.size()` bytes.
        let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
        if block.windows(MARKER.len()).any(|w| w == MARKER) {
            LEAKS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: ScanOnFree = ScanOnFree;

fn owned_marker() -> String {
    String::from_utf8(MARKER.to_vec()).unwrap()
}

/// Freed blocks holding the marker while `f` ran.
fn leaks_during(f: impl FnOnce()) -> usize {
    let before = LEAKS.load(Ordering::Relaxed);
    f();
    LEAKS.load(Ordering::Relaxed) - before
}

fn marker_array() -> [u8; 64] {
    let mut a = [b'.'; 64];
    a[..MARKER.len()].copy_from_slice(MARKER);
    a
}

#[test]
fn moving_heap_secrets_in_wipes_the_heap_copy() {
    let _serial = SERIAL.lock().unwrap();
    // Controls: the scanner sees plain heap copies being freed.
    assert_eq!(leaks_during(|| drop(owned_marker())), 1, "the scanner must see a dropped String");
    assert_eq!(leaks_during(|| drop(Box::new(marker_array()))), 1, "the scanner must see a dropped Box");

    let n = leaks_during(|| {
        let key = SecretBox::from(Box::new(marker_array()));
        assert_eq!(key.expose_secret()[..MARKER.len()], *MARKER);
    });
    assert_eq!(n, 0, "SecretBox::from(Box) left the heap block unwiped");

    let n = leaks_during(|| {
        let key = SecretSlice::from(MARKER.to_vec());
        assert_eq!(key.expose_secret(), MARKER);
    });
    assert_eq!(n, 0, "SecretSlice::from(Vec) left the Vec unwiped");

    let n = leaks_during(|| {
        let mut v = SecretVec::new();
        v.take_from(&mut MARKER.to_vec());
        assert_eq!(v.expose_secret(), MARKER);
    });
    assert_eq!(n, 0, "SecretVec::take_from left the Vec unwiped");

    // From<String> wipes the String it consumes.
    let n = leaks_during(|| drop(SecretString::from(owned_marker())));
    assert_eq!(n, 0, "SecretString::from(String) left the String in freed memory");
}

#[cfg(feature = "serde")]
#[test]
fn deserialized_secrets_leave_no_copy_in_freed_memory() {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StringDeserializer};

    let _serial = SERIAL.lock().unwrap();

    // An owned String handed over by the deserializer is zeroized after the copy.
    let n = leaks_during(|| {
        let de: StringDeserializer<ValueError> = owned_marker().into_deserializer();
        let s: SecretString = SecretString::deserialize(de).unwrap();
        assert_eq!(s.expose_secret().as_bytes(), MARKER);
    });
    assert_eq!(n, 0, "SecretString::deserialize left the owned String in freed memory");

    let n = leaks_during(|| {
        let de: StringDeserializer<ValueError> = owned_marker().into_deserializer();
        let v: SecretVec = SecretVec::deserialize(de).unwrap();
        assert_eq!(v.expose_secret(), MARKER);
    });
    assert_eq!(n, 0, "SecretVec::deserialize left the owned String in freed memory");

    // serde_json borrows unescaped strings straight from the input.
    let json = format!("{{\"password\": \"{}\"}}", std::str::from_utf8(MARKER).unwrap());
    let n = leaks_during(|| {
        #[derive(Deserialize)]
        struct Login {
            password: SecretString,
        }
        let login: Login = serde_json::from_str(&json).unwrap();
        assert_eq!(login.password.expose_secret().as_bytes(), MARKER);
    });
    assert_eq!(n, 0, "serde_json::from_str into SecretString left a copy in freed memory");
}
