"""Build order: topological layers of the workspace crates, with sizes, as rows and CSV."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs  # noqa: E402

args = inputs()
crates = {c["name"]: c for c in args.get("crates") or []}
sizes = {}
for item in (args.get("sizes") or {}).get("items", []):
    sizes[item["crate"]] = item["total_code_lines"]
layers, done = [], set()
while len(done) < len(crates):
    ready = sorted(n for n, c in crates.items()
                   if n not in done and set(c["internal"]) <= done)
    if not ready:
        sys.exit("dependency-order: the workspace crates depend on each other in a cycle: "
                 + ", ".join(sorted(set(crates) - done)))
    layers.append(ready)
    done.update(ready)
rows = []
for depth, layer in enumerate(layers):
    for name in layer:
        c = crates[name]
        rows.append({"layer": depth, "crate": name, "dir": c["dir"],
                     "code_lines": sizes.get(c["dir"], 0),
                     "internal_deps": len(c["internal"]),
                     "external_deps": len(c["dependencies"]) - len(c["internal"])})
header = ["layer", "crate", "dir", "code_lines", "internal_deps", "external_deps"]
csv = "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n"
dest = args.get("write_to")
if dest:
    with open(dest, "w", encoding="utf-8") as f:
        f.write(csv)
emit({"layers": layers, "build_order": [r["crate"] for r in rows], "rows": rows,
      "csv": csv, "written_to": dest})
