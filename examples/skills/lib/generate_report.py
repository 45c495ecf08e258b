"""Report: a Markdown table of the transformed data."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs  # noqa: E402

args = inputs()
crates = args.get("crates") or {}
largest = args.get("largest_files") or []
title = args.get("title") or "Code report"
out = [f"# {title}", "", "| crate | files | code lines | fns | tests | tests/kloc |",
       "|---|---:|---:|---:|---:|---:|"]
for name in sorted(crates, key=lambda n: -crates[n]["code_lines"]):
    c = crates[name]
    out.append(f"| {name} | {c['files']} | {c['code_lines']} | {c['fns']} | {c['tests']} | {c['tests_per_kloc']} |")
out += ["", "Largest files:", ""]
out += [f"- `{f['path']}`: {f['code_lines']} code lines" for f in largest]
markdown = "\n".join(out) + "\n"
dest = args.get("write_to")
if dest:
    with open(dest, "w", encoding="utf-8") as f:
        f.write(markdown)
emit({"markdown": markdown, "lines": len(out), "written_to": dest,
      "model": os.environ.get("CASCADE_MODEL")})
