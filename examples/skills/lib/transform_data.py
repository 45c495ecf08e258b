"""Transform: per-crate totals, test density, the five largest files."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import as_number, emit, inputs  # noqa: E402

args = inputs()
records = args.get("records") or []
top_n = int(as_number(args.get("top"), 5))
crates = {}
for r in records:
    c = crates.setdefault(r["crate"], {"files": 0, "code_lines": 0, "fns": 0,
                                       "pub_fns": 0, "tests": 0})
    c["files"] += 1
    for key in ("code_lines", "fns", "pub_fns", "tests"):
        c[key] += r[key]
for c in crates.values():
    c["tests_per_kloc"] = round(1000 * c["tests"] / c["code_lines"], 1) if c["code_lines"] else 0.0
largest = sorted(records, key=lambda r: (-r["code_lines"], r["path"]))[:top_n]
emit({
    "crates": crates,
    "largest_files": [{"path": r["path"], "code_lines": r["code_lines"]} for r in largest],
    "total_code_lines": sum(c["code_lines"] for c in crates.values()),
    "total_tests": sum(c["tests"] for c in crates.values()),
    "model": os.environ.get("CASCADE_MODEL"),
})
