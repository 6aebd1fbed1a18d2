#!/usr/bin/env python3
"""Lists public items of the crate whose docs have no example.

Reads the rustdoc JSON that
    RUSTC_BOOTSTRAP=1 cargo rustdoc --all-features --lib -- -Zunstable-options --output-format json
writes to target/doc/secret_arena.json (rustdoc's own `missing_doc_code_examples`
lint stays silent on stable-with-bootstrap, so this does its job). Exits 1 if
any item lacks a fenced code block in its docs.

Checked: every public struct, enum, trait, function, constant and static
reachable from the crate root, every inherent public method and associated
constant of those types, and every method a public trait declares. Trait
implementations are exempt (the trait's docs carry the example), and so are
enum variants and struct fields (the type's example shows them).
"""
import json
import os
import sys

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "doc", "secret_arena.json")
doc = json.load(open(path))
index, paths = doc["index"], doc["paths"]


def has_example(item):
    return "```" in (item.get("docs") or "")


def kind_of(item):
    return next(iter(item["inner"]))


missing = []
seen = set()


def need(item_id, name):
    if item_id in seen:
        return
    seen.add(item_id)
    item = index.get(str(item_id))
    if item is None or item.get("visibility") != "public":
        return
    if not has_example(item):
        missing.append(f"{kind_of(item)} {name}")


for item_id, p in paths.items():
    if p["crate_id"] != 0 or item_id not in index:
        continue
    item = index[item_id]
    kind = kind_of(item)
    name = "::".join(p["path"])
    if kind in ("struct", "enum", "trait", "function", "constant", "static"):
        need(item_id, name)
    if kind in ("struct", "enum"):
        for impl_id in item["inner"][kind]["impls"]:
            impl = index[str(impl_id)]["inner"]["impl"]
            if impl["trait"] is not None or impl.get("is_synthetic") or impl.get("blanket_impl"):
                continue
            for member in impl["items"]:
                m = index[str(member)]
                need(member, f"{name}::{m['name']}")
    if kind == "trait":
        for member in item["inner"]["trait"]["items"]:
            need(member, f"{name}::{index[str(member)]['name']}")

for line in sorted(missing):
    print("no example:", line)
print(f"{len(seen)} public items checked, {len(missing)} without an example")
sys.exit(1 if missing else 0)
