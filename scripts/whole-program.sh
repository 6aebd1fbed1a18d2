#!/usr/bin/env bash
# The whole-program benchmark (issue 11): the same workloads built with
# `#[global_allocator] SecretGlobalAlloc` and with `System`, on both backings.
# Prints markdown: wall, user and sys time ratios (SecretGlobalAlloc / System,
# medians of WP_REPS runs), then what happens without CAP_IPC_LOCK at 8 MiB.
#
#   scripts/whole-program.sh                  # every workload, 3 runs each, ~10 min on 2 cores
#   scripts/whole-program.sh json sort        # some workloads
#   WP_REPS=5 scripts/whole-program.sh        # more runs per median
#   WP_SCALE=0.05 scripts/whole-program.sh    # small inputs: a smoke test (~1 min)
#
# Each run is its own process, so each starts with a fresh arena. In every
# round the four configurations run back to back, so they share the noise:
#   system           wp-system                        (glibc malloc)
#   secret           wp-secret                        (memfd_secret backing)
#   system+seccomp   wp-seccomp -- wp-system          (the baseline under the same filter)
#   secret+seccomp   wp-seccomp -- wp-secret          (memfd_secret gets ENOSYS: fallback)
# Every run reads /proc/self/smaps and exits 3 unless its backing is the
# intended one (`--expect-backing`); the script then stops with its stderr.
# The checksums of the two heaps must agree, or the script stops too.
#
# Needs root (the memlock part drops CAP_IPC_LOCK with setpriv) and python3.
# Raw results: benches/whole-program/target/results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${WP_REPS:-3}
scale=${WP_SCALE:-1}
all=(json regex sort tokio hashmap btreemap)
workloads=("${@:-${all[@]}}")
dir=benches/whole-program
bin=$dir/target/release
out=$dir/target/results.tsv

cargo build --quiet --release --manifest-path $dir/Cargo.toml >&2

# Runs one configuration; appends "workload config wall user sys locked_kib check".
run() {
    local w=$1 config=$2 line err
    local cmd
    case $config in
        system) cmd=("$bin/wp-system" "$w" --expect-backing none) ;;
        secret) cmd=("$bin/wp-secret" "$w" --expect-backing secretmem) ;;
        system+seccomp) cmd=("$bin/wp-seccomp" -- "$bin/wp-system" "$w" --expect-backing none) ;;
        secret+seccomp) cmd=("$bin/wp-seccomp" -- "$bin/wp-secret" "$w" --expect-backing memfd) ;;
    esac
    err=$(mktemp)
    if ! line=$("${cmd[@]}" --scale "$scale" 2>"$err"); then
        echo "whole-program: FAILED: ${cmd[*]} --scale $scale" >&2
        cat "$err" >&2
        rm -f "$err"
        exit 1
    fi
    rm -f "$err"
    line=$(grep '^RESULT ' <<<"$line")
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$config" "$(field wall_s)" "$(field user_s)" \
        "$(field sys_s)" "$(field locked_kib)" "$(field check)" >>"$out"
}

echo "## Machine"
echo
echo "- $(uname -srm); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "- $(rustc --version); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- command: \`WP_REPS=$reps WP_SCALE=$scale scripts/whole-program.sh ${workloads[*]}\`"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

: >"$out"
for w in "${workloads[@]}"; do
    for ((r = 1; r <= reps; r++)); do
        for config in system secret system+seccomp secret+seccomp; do
            echo "$w round $r/$reps: $config" >&2
            run "$w" "$config"
        done
    done
done
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

python3 - "$out" "$reps" <<'PY'
import statistics, sys
from collections import defaultdict

path, reps = sys.argv[1], sys.argv[2]
runs = defaultdict(list)
checks = defaultdict(set)
order = []
for line in open(path):
    w, config, wall, user, sys_, locked, check = line.rstrip("\n").split("\t")
    if w not in order:
        order.append(w)
    runs[w, config].append((float(wall), float(user), float(sys_), int(locked)))
    checks[w].add(check)
bad = [w for w in order if len(checks[w]) != 1]
if bad:
    sys.exit(f"whole-program: checksums differ between the heaps for {bad}: the workloads did different work")

def med(w, config, i):
    return statistics.median(r[i] for r in runs[w, config])

def ratio(a, b):
    return f"{a / b:.2f}×" if b > 0 else "—"

def table(title, base, ours, note, target=None):
    print(f"### {title}")
    print()
    print(note)
    print()
    print("| workload | wall, System | wall, arena | wall × | wall × per round | user × | sys × | CPU (user+sys) × "
          "| sys, System → arena | kernel share of arena CPU | locked |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in order:
        bw, bu, bs = (med(w, base, i) for i in range(3))
        aw, au, as_ = (med(w, ours, i) for i in range(3))
        locked = max(r[3] for r in runs[w, ours]) / 1024
        share = as_ / (au + as_) if au + as_ > 0 else 0
        # The two runs of one round ran back to back: their ratio shows the noise.
        rounds = sorted(a[0] / b[0] for a, b in zip(runs[w, ours], runs[w, base]) if b[0] > 0)
        spread = f"{rounds[0]:.2f}–{rounds[-1]:.2f}" if rounds else "—"
        verdict = "" if target is None else (" (met)" if aw <= target * bw else " (**missed**)")
        print(f"| {w} | {bw:.3f} s | {aw:.3f} s | **{ratio(aw, bw)}**{verdict} | {spread} | {ratio(au, bu)} | {ratio(as_, bs)} "
              f"| {ratio(au + as_, bu + bs)} | {bs:.3f} → {as_:.3f} s | {share:.0%} | {locked:.0f} MiB |")
    print()

table("memfd_secret backing", "system", "secret",
      f"Medians of {reps} runs; \"per round\": the lowest and highest ratio of two runs made back to back. Kernel share = sys / (user + sys) of the arena run: "
      "the first touch of each secret page takes it out of the direct map (a TLB shootdown).")
table("mlocked-memfd fallback (seccomp: memfd_secret → ENOSYS)", "system+seccomp", "secret+seccomp",
      f"Medians of {reps} runs; the System baseline runs under the same seccomp filter. Target: wall ≤ 1.10×.", 1.10)
PY

# Without CAP_IPC_LOCK the global arena may lock only RLIMIT_MEMLOCK bytes.
echo "### Unprivileged, RLIMIT_MEMLOCK 8 MiB, no CAP_IPC_LOCK"
echo
if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: dropping CAP_IPC_LOCK from the bounding set needs root; run the script as root."
    exit 0
fi
echo "| workload | backing | exit | what happened |"
echo "|---|---|---:|---|"
for w in "${workloads[@]}"; do
    for config in secret secret+seccomp; do
        cmd=("$bin/wp-secret" "$w" --scale "$scale")
        backing=memfd_secret
        if [ "$config" = secret+seccomp ]; then
            cmd=("$bin/wp-seccomp" -- "${cmd[@]}")
            backing=fallback
        fi
        set +e
        result=$(RUST_BACKTRACE=0 prlimit --memlock=8388608:8388608 \
            setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock "${cmd[@]}" 2>&1)
        rc=$?
        set -e
        when="while generating its input"
        grep -q '^timed phase starts' <<<"$result" && when="in the timed phase"
        if [ $rc -eq 0 ]; then
            locked=$(sed -n 's/.* locked_kib=\([0-9]*\).*/\1/p' <<<"$result")
            what="ran to completion, $((locked / 1024)) MiB locked"
        else
            what="\`$(grep -m1 -E 'memory allocation of|FAIL|panicked' <<<"$result" || tail -n1 <<<"$result")\` $when"
        fi
        if [ $rc -gt 128 ]; then rc="$rc (signal $((rc - 128)))"; fi
        echo "| $w | $backing | $rc | ${what//|/\\|} |"
    done
done
echo
