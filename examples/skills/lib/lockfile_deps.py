"""Dependencies from Cargo.lock: packages, workspace crates, duplicated versions."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, read  # noqa: E402

args = inputs()
lockfile = args.get("lockfile") or "../Cargo.lock"
if not os.path.isfile(lockfile):
    sys.exit(f"lockfile-deps: {lockfile} not found")
packages, current = [], None
for line in read(lockfile).splitlines():
    line = line.strip()
    if line == "[[package]]":
        current = {}
        packages.append(current)
    elif current is not None and " = " in line and not line.startswith("["):
        key, value = line.split(" = ", 1)
        if key in ("name", "version", "source"):
            current[key] = value.strip('"')
versions = {}
for p in packages:
    versions.setdefault(p.get("name"), set()).add(p.get("version"))
emit({
    "lockfile": lockfile,
    "packages": len(packages),
    "workspace_crates": sorted(p["name"] for p in packages if "source" not in p),
    "external": sum(1 for p in packages if "source" in p),
    "duplicated": sorted(n for n, v in versions.items() if len(v) > 1),
    "attempt": int(os.environ.get("CASCADE_ATTEMPT", "1")),
})
