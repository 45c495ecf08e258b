#!/usr/bin/env python3
"""Module-level import cycles in one crate.

Usage: scripts/modcycles.py [-v] <crate>/src [<crate>/src ...]   (-v: print every edge)

Reads every `.rs` file under each src dir, maps it to its module path
(`lib.rs` is the crate root, `a/b.rs` and `a/b/mod.rs` are `a::b`; `main.rs`
and `bin/NAME.rs` are roots of their own binary crates) and follows every
`crate::`, `super::` and `self::` path in the code (in `use` items, braces
expanded, and inline, as in `super::check::check(..)`), comments and string
literals removed. Inline `mod NAME { .. }` blocks (tests) are modules of their
own. A path naming an item a module re-exports (`pub use compile::Options`)
counts as a dependency on the module that defines it.

A module using one of its own descendants is fine (that is what a parent is
for) and is not an edge; every other dependency is. Prints each cycle found
(strongly connected components of more than one module, shown as one cycle
through them) and exits 1 when there is one, 0 otherwise.
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(src):
    """The source with comments, strings and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if src[i] == "\n":
                        out.append("\n")
                    i += 1
        elif re.match(r'b?r#*"', src[i:i + 260]) and (i == 0 or not re.match(r"\w", src[i - 1])):
            m = re.match(r'b?r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", src[i:], re.S)
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    tree = re.sub(r"\s+", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def go(s):
        i = s.find("{")
        if i < 0:
            return [s.split("::")]
        prefix = s[:i].rstrip(":")
        inner = s[i + 1:s.rfind("}")]
        out = []
        for part in split_top(inner):
            for tail in go(part):
                out.append(([p for p in prefix.split("::") if p]) + tail)
        return out

    paths = []
    for p in go(tree):
        p = [re.sub(r"^(" + IDENT + r")as" + IDENT + "$", r"\1", seg) for seg in p]
        paths.append([seg for seg in p if seg])
    return paths


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> stripped text of its file
        self.modules = set()
        self.reexports = defaultdict(dict)  # module -> name -> absolute path (tuple)
        self.uses = defaultdict(list)  # module -> [(path segments, is_pub_use)]
        self.inline_paths = defaultdict(list)  # module -> [path segments]

    def load(self):
        for dirpath, _, names in os.walk(self.src):
            for name in sorted(names):
                if name.endswith(".rs"):
                    full = os.path.join(dirpath, name)
                    mod = self.module_of(os.path.relpath(full, self.src))
                    with open(full, encoding="utf-8") as f:
                        self.files[mod] = strip(f.read())
        for mod, text in self.files.items():
            self.scan(mod, text)

    @staticmethod
    def module_of(rel):
        parts = rel[:-3].split(os.sep)
        if parts[0] == "bin":
            root = ("bin:" + parts[1],)
            rest = parts[2:]
            if rest and rest[-1] == "main":
                rest = rest[:-1]
            return root + tuple(rest)
        if parts == ["lib"]:
            return ("crate",)
        if parts == ["main"]:
            return ("main",)
        if parts[-1] == "mod":
            parts = parts[:-1]
        return ("crate",) + tuple(parts)

    def scan(self, mod, text):
        """Records the modules, `use` items and inline paths of one file."""
        self.modules.add(mod)
        # Inline modules: `mod NAME {` opens a child scope until its brace closes.
        scopes = [(mod, -1)]
        depth = 0
        token = re.compile(
            r"(?P<mod>\bmod\s+(?P<name>" + IDENT + r")\s*\{)"
            r"|(?P<use>\b(?P<pub>pub(\([^)]*\))?\s+)?use\s+(?P<tree>[^;]*);)"
            r"|(?P<path>(?<![\w:])(?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)"
            r"|(?P<open>\{)|(?P<close>\})"
        )
        for m in token.finditer(text):
            cur = scopes[-1][0]
            if m.group("mod"):
                child = cur + (m.group("name"),)
                self.modules.add(child)
                depth += 1
                scopes.append((child, depth))
            elif m.group("use"):
                for p in expand_use(m.group("tree")):
                    self.uses[cur].append((p, bool(m.group("pub"))))
            elif m.group("path"):
                segs = [s.strip() for s in m.group("path").split("::")]
                self.inline_paths[cur].append(segs)
            elif m.group("open"):
                depth += 1
            elif m.group("close"):
                if scopes[-1][1] == depth:
                    scopes.pop()
                depth -= 1

    def absolute(self, mod, segs):
        """Segments of a `crate::`/`super::`/`self::` path made absolute; None otherwise."""
        if not segs:
            return None
        root = mod[:1]
        if segs[0] == "crate":
            return root + tuple(segs[1:])
        if segs[0] in ("super", "self"):
            base = list(mod)
            i = 0
            while i < len(segs) and segs[i] in ("super", "self"):
                if segs[i] == "super":
                    if len(base) == 1:
                        return None
                    base.pop()
                i += 1
            return tuple(base) + tuple(segs[i:])
        return None

    def resolve(self, path, seen=None):
        """The module an absolute path depends on: the longest module prefix,
        followed through that module's re-exports of the next segment."""
        seen = seen or set()
        k = len(path)
        while k > 1 and path[:k] not in self.modules:
            k -= 1
        mod = path[:k]
        if k < len(path) and (mod, path[k]) not in seen:
            target = self.reexports.get(mod, {}).get(path[k])
            if target is not None:
                seen.add((mod, path[k]))
                return self.resolve(target + path[k + 1:], seen)
        return mod

    def graph(self):
        # Re-exports first, so paths through them reach the defining module.
        for mod, uses in self.uses.items():
            for segs, is_pub in uses:
                if not is_pub or not segs or segs[-1] == "*":
                    continue
                absolute = self.absolute(mod, segs)
                if absolute is None:
                    # `pub use child::Item` in 2018 style: relative to `mod`.
                    if mod + (segs[0],) in self.modules:
                        absolute = mod + tuple(segs)
                    else:
                        continue
                name = segs[-1]
                if name == "self":
                    continue
                self.reexports[mod][name] = tuple(absolute)
        edges = defaultdict(set)
        for mod in self.modules:
            paths = [s for s, _ in self.uses.get(mod, [])] + self.inline_paths.get(mod, [])
            for segs in paths:
                segs = [s for s in segs if s not in ("*",)]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                absolute = self.absolute(mod, segs)
                if absolute is None:
                    if segs and mod + (segs[0],) in self.modules:
                        absolute = mod + tuple(segs)
                    else:
                        continue
                target = self.resolve(tuple(absolute))
                if target == mod or target[: len(mod)] == mod:
                    continue  # itself, or one of its own descendants
                edges[mod].add(target)
        return edges


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def one_cycle(comp, edges):
    """A cycle through the component's first module, by breadth-first search."""
    members = set(comp)
    start = min(comp)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def name(mod):
    return "::".join(mod)


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    found = False
    for src in argv[1:]:
        if not os.path.isdir(src):
            print(f"{src}: not a directory", file=sys.stderr)
            return 2
        crate = Crate(src)
        crate.load()
        edges = crate.graph()
        comps = cycles(edges)
        if verbose:
            for m in sorted(edges):
                print(f"{name(m)} -> {', '.join(name(t) for t in sorted(edges[m]))}")
        if not comps:
            print(f"{src}: no module cycles ({len(crate.modules)} modules)")
            continue
        found = True
        for comp in sorted(comps, key=lambda c: sorted(c)):
            path = one_cycle(comp, edges)
            print(f"{src}: cycle: {' -> '.join(name(m) for m in path)}")
            if len(comp) > len(path) - 1:
                others = sorted(set(comp) - set(path))
                print(f"{src}:   (same cycle group: {', '.join(name(m) for m in others)})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
