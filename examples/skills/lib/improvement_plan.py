"""Improvement plan: concrete next steps from a quality analysis."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import as_number, emit, inputs  # noqa: E402

args = inputs()
steps = [f"add a docstring to {name}" for name in args.get("undocumented") or []]
if as_number(args.get("pass_rate"), 100) < 100:
    steps.insert(0, "fix the failing tests first")
if as_number(args.get("markers"), 0) > 0:
    steps.append(f"resolve {int(as_number(args.get('markers'), 0))} TODO/FIXME markers")
emit({"action": "plan", "steps": steps, "step_count": len(steps),
      "model": os.environ.get("CASCADE_MODEL")})
