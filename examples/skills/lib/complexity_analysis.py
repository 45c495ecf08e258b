"""Complexity: length and nesting depth of every Rust function (brace matching)."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import as_number, emit, inputs, read, root, rust_files  # noqa: E402

FN = re.compile(r"\bfn\s+(\w+)")
STRINGS = re.compile(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])\'')


def functions(text):
    """(name, first line, length in lines, max brace depth inside) per fn."""
    lines = [STRINGS.sub('""', l.split("//", 1)[0]) for l in text.splitlines()]
    out = []
    i = 0
    while i < len(lines):
        m = FN.search(lines[i])
        if not m:
            i += 1
            continue
        depth, deepest, started, j = 0, 0, False, i
        while j < len(lines):
            for ch in lines[j]:
                if ch == "{":
                    depth += 1
                    started = True
                    deepest = max(deepest, depth)
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not started:
                    break  # a declaration without a body
            if started and depth <= 0:
                break
            if not started and ";" in lines[j]:
                break
            j += 1
        if started:
            out.append((m.group(1), i + 1, j - i + 1, deepest))
            i = j + 1
        else:
            i += 1
    return out


args = inputs()
base = root(args)
limit = int(as_number(args.get("max_function_lines"), 60))
fns = []
for path in rust_files(base):
    rel = os.path.relpath(path, base)
    fns += [(f"{rel}:{line} {name}", length, depth)
            for name, line, length, depth in functions(read(path))]
long_fns = [f for f in fns if f[1] > limit]
longest = sorted(fns, key=lambda f: -f[1])[:5]
avg = sum(f[1] for f in fns) / len(fns) if fns else 0.0
share_long = len(long_fns) / len(fns) if fns else 0.0
emit({
    "area": "complexity",
    "functions": len(fns),
    "average_length": round(avg, 1),
    "max_nesting": max((f[2] for f in fns), default=0),
    "issues": len(long_fns),
    "findings": [f"{where}: {length} lines" for where, length, _ in longest],
    "score": round(max(0.0, 100 - 400 * share_long), 1),
})
