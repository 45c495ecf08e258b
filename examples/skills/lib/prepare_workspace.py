"""Prepare workspace: copy a project into a fresh temporary directory to work on."""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SKIP_DIRS, emit, inputs  # noqa: E402

MARKER = ".cascade-workspace"

args = inputs()
project = args.get("project") or "sample-project"
if not os.path.isdir(project):
    sys.exit(f"prepare-workspace: {project} is not a directory")
base = tempfile.mkdtemp(prefix="cascade-refine-")
with open(os.path.join(base, MARKER), "w") as f:
    f.write(os.environ.get("CASCADE_RUN_ID", "") + "\n")
workspace = os.path.join(base, os.path.basename(os.path.abspath(project)))
shutil.copytree(project, workspace, ignore=shutil.ignore_patterns(*SKIP_DIRS))
emit({"workspace": workspace, "changes": []})
