"""Extract: one record of measurements per Rust source file."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import crate_of, emit, inputs, log, read, root, rust_files  # noqa: E402

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+\w+")
PUB_FN = re.compile(r"^\s*pub(\([^)]*\))?\s+(async\s+)?(const\s+)?(unsafe\s+)?fn\s+\w+")
TEST_ATTR = re.compile(r"^\s*#\[(tokio::)?test\b")

args = inputs()
base = root(args)
records = []
for path in rust_files(base):
    lines = read(path).splitlines()
    records.append({
        "path": os.path.relpath(path, base),
        "crate": crate_of(base, path),
        "lines": len(lines),
        "code_lines": sum(1 for l in lines if l.strip() and not l.strip().startswith("//")),
        "fns": sum(1 for l in lines if FN.match(l)),
        "pub_fns": sum(1 for l in lines if PUB_FN.match(l)),
        "tests": sum(1 for l in lines if TEST_ATTR.match(l)),
    })
log(f"extract-data: {len(records)} files under {base}")
emit({"records": records, "count": len(records), "model": os.environ.get("CASCADE_MODEL")})
