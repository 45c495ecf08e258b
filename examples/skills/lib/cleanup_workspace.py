"""Cleanup: remove a workspace made by prepare-workspace (and nothing else)."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs  # noqa: E402

args = inputs()
workspace = args.get("workspace") or ""
base = os.path.dirname(os.path.abspath(workspace))
if not os.path.isfile(os.path.join(base, ".cascade-workspace")):
    sys.exit(f"cleanup-workspace: {workspace!r} was not made by prepare-workspace; not removing it")
shutil.rmtree(base)
emit({"removed": base})
