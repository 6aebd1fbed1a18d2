#!/usr/bin/env python3
"""Prints criterion's medians for benches/latency.rs as markdown tables.

Reads target/criterion/<group>/<function>[/<param>]/new/{benchmark,estimates}.json
(criterion's own output after `cargo bench --bench latency`).
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = {}  # group -> function -> param -> median ns
for est in root.glob("**/new/estimates.json"):
    meta = json.loads((est.parent / "benchmark.json").read_text())
    median = json.loads(est.read_text())["median"]["point_estimate"]
    group = meta["group_id"]
    if group == "awf_slow":
        group = "awf"
    rows.setdefault(group, {}).setdefault(meta["function_id"], {})[meta.get("value_str") or ""] = median


def fmt(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} µs"
    return f"{ns:,.1f} ns"


def ratio(ns, base):
    return "-" if ns is None or not base else f"{ns / base:.2f}×"


awf = rows.get("awf", {})
if awf:
    sizes = ["32", "256", "4096"]
    system = awf.get("System", {})
    print("### Allocate + write + free (median; ratio to `System` in the same run)\n")
    print("| allocator | " + " | ".join(f"{s} B | ×System" for s in sizes) + " |")
    print("|---|" + "---:|---:|" * len(sizes))
    for name in sorted(awf, key=lambda n: awf[n].get("32", 0)):
        cells = []
        for s in sizes:
            ns = awf[name].get(s)
            cells += [fmt(ns), ratio(ns, system.get(s))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()

for group, title, base in [
    ("secretbox", "`[u8; 32]` secret box, create + drop", "secrecy::SecretBox"),
    ("vec_push_64k", "`Vec<u8>` grown by pushes to 64 KiB (the realloc path)", "System"),
    ("hashmap_1000", "hashbrown `HashMap`: insert then remove 1,000 32-byte keys", "System"),
]:
    g = rows.get(group, {})
    if not g:
        continue
    b = g.get(base, {}).get("")
    print(f"### {title} (median; ratio to `{base}`)\n")
    print(f"| implementation | median | ×{base} |")
    print("|---|---:|---:|")
    for name in sorted(g, key=lambda n: g[n].get("", 0)):
        ns = g[name].get("")
        print(f"| {name} | {fmt(ns)} | {ratio(ns, b)} |")
    print()
