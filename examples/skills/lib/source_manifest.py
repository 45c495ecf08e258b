"""Source manifest: every file of a project with its size and sha256, plus one digest of all."""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SKIP_DIRS, emit, inputs  # noqa: E402

args = inputs()
project = args.get("project") or "sample-project"
entries = []
for dirpath, dirnames, filenames in os.walk(project):
    dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
            data = f.read()
        entries.append({"path": os.path.relpath(path, project), "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
whole = hashlib.sha256("".join(f"{e['sha256']}  {e['path']}\n" for e in entries).encode())
emit({"files": len(entries), "total_bytes": sum(e["bytes"] for e in entries),
      "manifest_sha256": whole.hexdigest(), "entries": entries})
