"""Runs a Python project's unit tests (python3 -m unittest) and reports the counts."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, run_unittest  # noqa: E402

args = inputs()
project = args.get("project") or "sample-project"
if not os.path.isdir(os.path.join(project, "tests")):
    sys.exit(f"run-unit-tests: {project}/tests is not a directory")
result = run_unittest(project)
result["project"] = project
emit(result)
if not result["ok"] and not args.get("allow_failures"):
    sys.exit(f"run-unit-tests: {result['failures']} of {result['tests_run']} tests failed")
