"""Lint: long lines, trailing whitespace, tabs and leftover dbg! in Rust sources."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import as_number, emit, inputs, read, root, rust_files  # noqa: E402

args = inputs()
base = root(args)
max_len = int(as_number(args.get("max_line_length"), 100))
counts = {"long_lines": 0, "trailing_whitespace": 0, "tabs": 0, "dbg_macros": 0}
findings = []
code_lines = 0
for path in rust_files(base):
    rel = os.path.relpath(path, base)
    for no, line in enumerate(read(path).splitlines(), 1):
        if line.strip():
            code_lines += 1
        hits = []
        if len(line) > max_len:
            hits.append(("long_lines", f"{len(line)} chars"))
        if line != line.rstrip():
            hits.append(("trailing_whitespace", "trailing whitespace"))
        if "\t" in line:
            hits.append(("tabs", "tab character"))
        if "dbg!(" in line and not line.strip().startswith("//"):
            hits.append(("dbg_macros", "dbg!"))
        for kind, what in hits:
            counts[kind] += 1
            if len(findings) < 10:
                findings.append(f"{rel}:{no}: {what}")
issues = sum(counts.values())
per_kloc = 1000 * issues / code_lines if code_lines else 0.0
emit({"area": "lint", "issues": issues, "counts": counts, "findings": findings,
      "score": round(max(0.0, 100 - 10 * per_kloc), 1)})
