//! The workloads on the System allocator (glibc malloc): the baseline.

#[global_allocator]
static ALLOC: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    whole_program::main(whole_program::Heap::System)
}
