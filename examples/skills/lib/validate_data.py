"""Validate: every record is well-formed and names a file that exists."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, root  # noqa: E402

REQUIRED = {"path": str, "crate": str, "lines": int, "code_lines": int,
            "fns": int, "pub_fns": int, "tests": int}

args = inputs()
base = root(args)
records = args.get("records")
if not isinstance(records, list) or not records:
    sys.exit("validate-data: input `records` must be a non-empty list")
problems = []
for i, r in enumerate(records):
    for key, ty in REQUIRED.items():
        if not isinstance(r.get(key), ty):
            problems.append(f"record {i}: `{key}` missing or not {ty.__name__}")
    if isinstance(r.get("lines"), int) and isinstance(r.get("code_lines"), int):
        if not 0 <= r["code_lines"] <= r["lines"]:
            problems.append(f"record {i} ({r.get('path')}): code_lines > lines")
    if isinstance(r.get("path"), str) and not os.path.isfile(os.path.join(base, r["path"])):
        problems.append(f"record {i}: {r['path']} does not exist")
if problems:
    sys.exit("validate-data: " + "; ".join(problems[:10]))
emit({"records": records, "valid": len(records), "model": os.environ.get("CASCADE_MODEL")})
