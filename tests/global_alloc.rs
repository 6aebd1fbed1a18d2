//! This whole test binary, libtest included, runs on `SecretGlobalAlloc`.

use std::collections::HashMap;

use secret_arena::SecretGlobalAlloc;

#[global_allocator]
static ALLOC: SecretGlobalAlloc = SecretGlobalAlloc::new();

fn in_arena<T: ?Sized>(p: *const T) -> bool {
    SecretGlobalAlloc::arena().expect("the heap exists").contains(p as *const u8)
}

#[test]
fn heap_allocations_land_in_secret_memory() {
    let s = String::from("hunter2");
    let v = vec![1u64; 1000];
    let b = Box::new([0u8; 10_000]);
    assert!(in_arena(s.as_ptr()) && in_arena(v.as_ptr()) && in_arena(b.as_ptr()));
    let arena = SecretGlobalAlloc::arena().unwrap();
    println!("the global allocator's heap: {:?}", arena);
}

#[test]
fn multithreaded_vec_string_hashmap_workload() {
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut map: HashMap<String, Vec<u8>> = HashMap::new();
                for i in 0..3000u32 {
                    let key = format!("t{t}-k{i}");
                    let value = vec![(t as u8).wrapping_add(i as u8); (i as usize * 7) % 700 + 1];
                    map.insert(key, value);
                    if i % 3 == 0 {
                        map.remove(&format!("t{t}-k{}", i / 2));
                    }
                }
                for (k, v) in &map {
                    let i: u32 = k.rsplit('k').next().unwrap().parse().unwrap();
                    assert_eq!(v.len(), (i as usize * 7) % 700 + 1, "{k}");
                    assert!(v.iter().all(|&b| b == (t as u8).wrapping_add(i as u8)), "{k} damaged");
                    assert!(in_arena(v.as_ptr()));
                }
                // Hand the map to another thread to free.
                map
            })
        })
        .collect();
    let maps: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total: usize = maps.iter().map(HashMap::len).sum();
    assert!(total > 8 * 1500, "{total}");
    std::thread::spawn(move || drop(maps)).join().unwrap();
}

#[test]
fn realloc_keeps_contents() {
    let mut s = String::new();
    for i in 0..20_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    assert!(s.bytes().enumerate().all(|(i, b)| b == b'a' + (i % 26) as u8));
    s.truncate(10);
    s.shrink_to_fit();
    assert_eq!(s, "abcdefghij");
    assert!(in_arena(s.as_ptr()));
}
