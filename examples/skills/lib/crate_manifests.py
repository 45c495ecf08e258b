"""Crate manifests: the workspace members of Cargo.toml and their dependencies."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, read, root  # noqa: E402


def parse_toml(text):
    """Sections -> {key: raw value}. Enough for Cargo manifests (tomllib when present)."""
    try:
        import tomllib  # Python 3.11+
        return tomllib.loads(text)
    except ImportError:
        pass
    data, table = {}, {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("[["):
            table = {}  # an array of tables ([[bin]]): not needed here
            continue
        m = re.match(r"^\[([^\]]+)\]$", line)
        if m:
            table = data.setdefault(m.group(1), {})
        elif "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            table[key.split(".")[0].strip('"')] = value.strip('"')
    for dotted in [k for k in data if "." in k]:
        head, tail = dotted.split(".", 1)
        data.setdefault(head, {})[tail] = data.pop(dotted)
    members = data.get("workspace", {}).get("members")
    if isinstance(members, str):
        data["workspace"]["members"] = re.findall(r'"([^"]+)"', members)
    return data


args = inputs()
base = root(args)
workspace = parse_toml(read(os.path.join(base, "Cargo.toml")))
members = workspace.get("workspace", {}).get("members") or []
if not members:
    sys.exit(f"crate-manifests: {base}/Cargo.toml lists no workspace members")
crates = []
for member in members:
    manifest = parse_toml(read(os.path.join(base, member, "Cargo.toml")))
    deps = set(manifest.get("dependencies", {}))
    dev = set(manifest.get("dev-dependencies", {}))
    crates.append({"dir": member, "name": manifest["package"]["name"],
                   "dependencies": sorted(deps), "dev_dependencies": sorted(dev - deps)})
names = {c["name"] for c in crates}
for c in crates:
    c["internal"] = sorted(d for d in c["dependencies"] if d in names)
emit({"crates": crates, "dirs": [c["dir"] for c in crates], "count": len(crates)})
