//! Smoke test: allocates from a fresh arena and prints what it got.
use allocator_api2::vec::Vec;
use secret_arena::SecretArena;
fn main() {
    let arena = SecretArena::new(1 << 20).unwrap();
    println!("{:?}", arena);
    let mut v = Vec::new_in(&arena);
    for i in 0..100_000u32 {
        v.push(i as u8);
    }
    let mut m = hashbrown::HashMap::new_in(&arena);
    for i in 0..1000 {
        m.insert(i, [i as u8; 32]);
    }
    for i in 0..500 {
        m.remove(&i);
    }
    println!("{:?}", arena.stats().in_use);
    drop(v);
    drop(m);
    arena.check_invariants().unwrap();
    println!("{:?}", arena.stats());
}
