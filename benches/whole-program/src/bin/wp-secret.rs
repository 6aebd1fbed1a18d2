//! The workloads with every heap allocation in the secret arena.

#[global_allocator]
static ALLOC: secret_arena::SecretGlobalAlloc = secret_arena::SecretGlobalAlloc::new();

fn main() -> std::process::ExitCode {
    whole_program::main(whole_program::Heap::Secret)
}
