"""Test coverage (by presence): #[test] functions per public function, per crate."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import crate_of, emit, inputs, read, root, rust_files  # noqa: E402

PUB_FN = re.compile(r"^\s*pub(\([^)]*\))?\s+(async\s+)?(const\s+)?fn\s+\w+")
TEST_ATTR = re.compile(r"^\s*#\[(tokio::)?test\b")

args = inputs()
base = root(args)
crates = {}
for path in rust_files(base):
    c = crates.setdefault(crate_of(base, path), {"pub_fns": 0, "tests": 0, "files": 0,
                                                  "files_with_tests": 0})
    lines = read(path).splitlines()
    tests = sum(1 for l in lines if TEST_ATTR.match(l))
    c["pub_fns"] += sum(1 for l in lines if PUB_FN.match(l))
    c["tests"] += tests
    c["files"] += 1
    c["files_with_tests"] += 1 if tests else 0
for c in crates.values():
    c["ratio"] = round(c["tests"] / c["pub_fns"], 2) if c["pub_fns"] else 1.0
untested = sorted(name for name, c in crates.items() if c["tests"] == 0)
pub_fns = sum(c["pub_fns"] for c in crates.values())
tests = sum(c["tests"] for c in crates.values())
ratio = tests / pub_fns if pub_fns else 1.0
emit({"area": "tests", "crates": crates, "tests": tests, "pub_fns": pub_fns,
      "issues": len(untested), "findings": [f"crate `{n}` has no #[test]" for n in untested],
      "score": round(min(100.0, 100 * ratio), 1)})
