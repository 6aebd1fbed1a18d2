#!/usr/bin/env bash
# Runs every bench of issue 6 and prints the README's Performance tables.
#
#   scripts/bench-report.sh            # everything, ~5 minutes on 2 cores
#   scripts/bench-report.sh latency    # one part: latency|footprint|threads|callgrind
#
# Needs root for the unprivileged footprint table (the child drops
# CAP_IPC_LOCK and becomes uid 65534) and valgrind for the instruction
# counts. Numbers are medians in one run on this machine; an idle machine
# gives steadier ones. Output: markdown on stdout; criterion's raw data
# stays in target/criterion.
set -euo pipefail
cd "$(dirname "$0")/.."

parts=("${@:-latency footprint threads callgrind}")
parts=(${parts[*]})

machine() {
    echo "## Machine"
    echo
    echo "- $(uname -srm); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "- $(rustc --version); $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- RLIMIT_MEMLOCK $(ulimit -l) KiB, RLIMIT_NOFILE $(ulimit -n), vm.max_map_count $(cat /proc/sys/vm/max_map_count)"
    echo
}

latency() {
    # Criterion's defaults for this bench are set in benches/latency.rs
    # (0.5 s warm-up, 1.5 s measurement; memsec rows 10 samples in 1 s).
    cargo bench --bench latency >&2
    echo "## Single-thread latency"
    echo
    python3 scripts/criterion-table.py target/criterion
}

footprint() {
    cargo bench --bench footprint 2>/dev/null
    echo
}

threads() {
    cargo bench --bench threads 2>/dev/null
    echo
}

# Instructions per 32-byte allocate + write + free, from two runs whose only
# difference is the number of operations, so start-up cancels out.
callgrind() {
    # rustix's raw backend reads the vDSO through /proc/self/auxv, which is
    # not mapped under valgrind (SIGSEGV in check_elf_base); its libc
    # backend works. A separate target dir keeps the normal build intact.
    local dir=target/valgrind
    RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR=$dir cargo bench --no-run --bench callgrind >&2
    local bin
    bin=$(find "$dir/release/deps" -maxdepth 1 -type f -executable -name 'callgrind-*' | head -n1)
    # Valgrind 3.19 knows neither memfd_secret (447) nor mlock2 (325) and
    # answers ENOSYS, so the arena cannot even take its fallback. This shim
    # turns mlock2(MLOCK_ONFAULT) into mlock: the arena is populated up
    # front instead of on fault, which changes no instruction of an op.
    printf '%s\n' '#include <sys/mman.h>' '#include <stddef.h>' \
        'int mlock2(const void *a, size_t n, unsigned int f) { (void)f; return mlock(a, n); }' >"$dir/mlock2-shim.c"
    cc -shared -fPIC -O2 -o "$dir/mlock2-shim.so" "$dir/mlock2-shim.c"
    local lo=100000 hi=200000
    echo "## Instructions per allocate + write + free (valgrind --tool=callgrind)"
    echo
    echo "| allocator | size | Ir at $lo ops | Ir at $hi ops | instructions / op |"
    echo "|---|---:|---:|---:|---:|"
    for size in 32 4096; do
        for alloc in arena system; do
            local ir=()
            for n in $lo $hi; do
                local out
                out=$(CALLGRIND_ALLOC=$alloc CALLGRIND_SIZE=$size CALLGRIND_ITERS=$n \
                    LD_PRELOAD="$PWD/$dir/mlock2-shim.so" valgrind --tool=callgrind \
                    --callgrind-out-file="$dir/callgrind.$alloc.$size.$n.out" "$bin" 2>&1)
                ir+=("$(echo "$out" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')")
            done
            local name=$alloc
            [ "$alloc" = arena ] && name="arena (fallback backing: valgrind has no memfd_secret)"
            [ "$alloc" = system ] && name="System (glibc malloc)"
            echo "| $name | $size B | ${ir[0]} | ${ir[1]} | $(((ir[1] - ir[0]) / (hi - lo))) |"
        done
    done
    echo
    echo "Per-function profile: \`callgrind_annotate $dir/callgrind.arena.32.$hi.out\`."
    echo
}

machine
for p in "${parts[@]}"; do
    "$p"
done
