"""Refactor: document the next undocumented public function (one per run)."""

import ast
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, read, walk  # noqa: E402


def summary(fn):
    """A one-line docstring from the function's name and parameters."""
    words = fn.name.replace("_", " ")
    params = [a.arg for a in fn.args.args]
    if not params:
        return f"Return the {words}."
    text = f"Return the {words} of `{params[0]}`"
    if len(params) > 1:
        text += " (see " + ", ".join(f"`{p}`" for p in params[1:]) + ")"
    return text + "."


args = inputs()
project = args.get("project")
if not project or not os.path.isdir(project):
    sys.exit(f"refactor-code: input `project` must be a directory, got {project!r}")
memory = args.get("memory") or {}
changes = list(memory.get("changes") or [])
todo = []
for path in walk(project, ".py"):
    rel = os.path.relpath(path, project)
    if rel.split(os.sep)[0] == "tests":
        continue
    tree = ast.parse(read(path), filename=path)
    for node in tree.body:
        if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
                and ast.get_docstring(node) is None):
            todo.append((rel, path, node))
changed = None
if todo:
    rel, path, fn = todo[0]
    first = fn.body[0]
    lines = read(path).splitlines(keepends=True)
    indent = " " * first.col_offset
    lines.insert(first.lineno - 1, f'{indent}"""{summary(fn)}"""\n')
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    changed = f"{rel}:{fn.name}"
    changes.append(changed)
emit({
    "changed": changed,
    "changes": changes,
    "remaining": max(0, len(todo) - 1),
    "model": os.environ.get("CASCADE_MODEL"),
})
