"""Deploy (fast path): package a project as a reproducible .tar.gz with its sha256."""

import hashlib
import io
import os
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SKIP_DIRS, emit, inputs  # noqa: E402

args = inputs()
project = args.get("project") or "sample-project"
dest = args.get("dest") or os.path.join(tempfile.gettempdir(), "cascade-deploy")
os.makedirs(dest, exist_ok=True)
buf = io.BytesIO()
files = 0
# Fixed order, owner and mtime: the same sources give the same archive.
with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
    for dirpath, dirnames, filenames in os.walk(project):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, os.path.dirname(os.path.abspath(project))))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
            files += 1
data = buf.getvalue()
digest = hashlib.sha256(data).hexdigest()
artifact = os.path.join(dest, f"{os.path.basename(os.path.abspath(project))}-{digest[:12]}.tar.gz")
with open(artifact, "wb") as f:
    f.write(data)
emit({"action": "deployed", "artifact": artifact, "sha256": digest, "bytes": len(data),
      "files": files, "model": os.environ.get("CASCADE_MODEL")})
