"""Quality of a Python project from real measurements: tests, docstrings, markers."""

import ast
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import as_number, emit, inputs, read, run_unittest, walk  # noqa: E402


def public_functions(project):
    """(qualified name, has docstring) for every public top-level function."""
    found = []
    for path in walk(project, ".py"):
        rel = os.path.relpath(path, project)
        if rel.split(os.sep)[0] == "tests":
            continue
        tree = ast.parse(read(path), filename=path)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                found.append((f"{rel}:{node.name}", ast.get_docstring(node) is not None))
    return found


args = inputs()
project = args.get("project") or "sample-project"
threshold = as_number(args.get("threshold"), 80)
tests = run_unittest(project)
fns = public_functions(project)
documented = sum(1 for _, doc in fns if doc)
coverage = round(100.0 * documented / len(fns), 1) if fns else 100.0
markers = sum(read(p).count("TODO") + read(p).count("FIXME") for p in walk(project, ".py"))
score = round(0.6 * tests["pass_rate"] + 0.4 * coverage - 2 * markers, 1)
emit({
    "project": project,
    "tests_run": tests["tests_run"],
    "pass_rate": tests["pass_rate"],
    "functions": len(fns),
    "documented": documented,
    "doc_coverage": coverage,
    "undocumented": [name for name, doc in fns if not doc],
    "markers": markers,
    "marker_density": round(markers / len(fns), 3) if fns else 0.0,
    "quality_score": score,
    "verdict": "high_quality" if score >= threshold else "low_quality",
    "model": os.environ.get("CASCADE_MODEL"),
})
