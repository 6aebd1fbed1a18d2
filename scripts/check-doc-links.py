#!/usr/bin/env python3
"""Fails on links that render as literal brackets somewhere.

1. README.md is shown by GitHub, crates.io and (as the crate docs) rustdoc.
   Only rustdoc resolves intra-doc shortcut links like [`SecretArena::builder`];
   elsewhere they stay as text. So every reference-style link in the README
   needs a definition, and no inline link may point at a Rust path
   (`[says so](SecretArena::backing)`).
2. The rendered docs (target/doc/secret_arena). A shortcut link whose path
   resolves, but to an item rustdoc has no URL for (a dependency's item,
   under `cargo doc --no-deps` without `-Zrustdoc-map`), renders as
   `[AllocError]` without any warning: `rustdoc::broken_intra_doc_links`
   fires only for paths that do not resolve. This looks for that text.
"""
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
errors = []

# --- 1. README.md ---
readme = open(os.path.join(root, "README.md")).read()
# Drop fenced code blocks and inline code spans that are not link text.
text = re.sub(r"```.*?```", "", readme, flags=re.S)
defined = {m.group(1).lower() for m in re.finditer(r"^\[([^\]]+)\]:\s*\S+", text, flags=re.M)}
for m in re.finditer(r"\[([^\]]+)\](?:\[([^\]]*)\])?(?!\(|:)", text):
    label = (m.group(2) or m.group(1)).lower()
    if m.group(2) is None and not m.group(1).startswith("`"):
        continue  # plain brackets in prose, e.g. "[REDACTED]"
    if label not in defined:
        line = text[: m.start()].count("\n") + 1
        errors.append(f"README.md: link [{m.group(0)}] has no definition (dead on GitHub and crates.io), near line {line}")
for m in re.finditer(r"\]\(([^)\s]+)\)", text):
    target = m.group(1)
    if "::" in target or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
        errors.append(f"README.md: link target {target!r} is a Rust path, which only rustdoc resolves")

# --- 2. rendered docs ---
doc = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "doc", "secret_arena")
if not os.path.isdir(doc):
    errors.append(f"{doc}: no rendered docs; run cargo doc first")
else:
    for dirpath, _, files in os.walk(doc):
        for name in files:
            if not name.endswith(".html"):
                continue
            path = os.path.join(dirpath, name)
            html = open(path, encoding="utf-8").read()
            html = re.sub(r"<pre.*?</pre>", "", html, flags=re.S)
            for m in re.finditer(r"\[<code>([^<]*)</code>\]", html):
                errors.append(f"{os.path.relpath(path, doc)}: [`{m.group(1)}`] rendered as text, not a link")

for e in errors:
    print(e)
print(f"doc links: {len(errors)} problems")
sys.exit(1 if errors else 0)
