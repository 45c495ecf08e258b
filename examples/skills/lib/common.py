"""Helpers shared by the example skills (stdlib only).

A skill gets its inputs as a JSON object on stdin (and as CASCADE_INPUT_*
variables); it prints one JSON object on stdout, which becomes the stage's
outputs. Skills run with the cascade file's directory as the working
directory, so the repository root is `..` from the examples.
"""

import json
import os
import sys

SKIP_DIRS = {".git", "target", "node_modules", "__pycache__", ".venv"}


def inputs():
    """The stage inputs: the JSON object on stdin ({} when there is none)."""
    text = sys.stdin.read()
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def emit(outputs):
    """Prints the outputs as one JSON object: the stage's outputs."""
    json.dump(outputs, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


def log(message):
    """Progress for humans goes to stderr (kept as the failure tail)."""
    sys.stderr.write(message + "\n")


def root(args):
    """The repository root: input `root`, relative to the cascade directory."""
    return os.path.normpath(args.get("root") or "..")


def walk(base, suffix):
    """Every file under `base` ending in `suffix`, sorted, build dirs skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(suffix):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def crate_of(base, path):
    """The top-level directory of `path` under `base` (the crate)."""
    rel = os.path.relpath(path, base)
    head = rel.split(os.sep, 1)[0]
    return head if head != rel else "."


def rust_files(base):
    """Rust sources of the repository, examples excluded."""
    return [p for p in walk(base, ".rs") if crate_of(base, p) != "examples"]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def as_number(value, default):
    """Inputs may arrive as numbers or numeric strings."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def run_unittest(project):
    """Runs `python3 -m unittest discover` in `project`; returns the counts.

    The test output goes to stderr, so a failing run shows it in the stage
    error.
    """
    import re
    import subprocess

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    sys.stderr.write(proc.stderr)
    ran = re.search(r"^Ran (\d+) tests?", proc.stderr, re.M)
    tests_run = int(ran.group(1)) if ran else 0
    failures = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", proc.stderr))
    passed = max(0, tests_run - failures)
    return {
        "tests_run": tests_run,
        "failures": failures,
        "passed": passed,
        "pass_rate": round(100.0 * passed / tests_run, 1) if tests_run else 0.0,
        "ok": proc.returncode == 0 and tests_run > 0,
    }
