"""Lines of Rust per crate: files, lines, code lines, test functions."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import crate_of, emit, inputs, read, root, rust_files  # noqa: E402

TEST_ATTR = re.compile(r"^\s*#\[(tokio::)?test\b")

args = inputs()
base = root(args)
only = args.get("crate")
crates = {}
for path in rust_files(base):
    crate = crate_of(base, path)
    if only and crate != only:
        continue
    c = crates.setdefault(crate, {"files": 0, "lines": 0, "code_lines": 0, "tests": 0})
    lines = read(path).splitlines()
    c["files"] += 1
    c["lines"] += len(lines)
    c["code_lines"] += sum(1 for l in lines if l.strip() and not l.strip().startswith("//"))
    c["tests"] += sum(1 for l in lines if TEST_ATTR.match(l))

if only and only not in crates:
    sys.exit(f"rust-loc: no Rust files in crate `{only}` under {base}")
total = sum(c["lines"] for c in crates.values())
largest = max(crates, key=lambda k: crates[k]["lines"]) if crates else None
emit({
    "crate": only,
    "crates": crates,
    "crate_count": len(crates),
    "total_files": sum(c["files"] for c in crates.values()),
    "total_lines": total,
    "total_code_lines": sum(c["code_lines"] for c in crates.values()),
    "total_tests": sum(c["tests"] for c in crates.values()),
    "largest_crate": largest,
})
