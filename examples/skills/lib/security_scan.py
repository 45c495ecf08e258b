"""Security scan: unsafe blocks, unwrap() outside tests, shell spawns, secrets."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs, read, root, rust_files  # noqa: E402

CHECKS = {
    "unsafe": (re.compile(r"\bunsafe\s*\{"), 5),
    "unwrap_outside_tests": (re.compile(r"\.unwrap\(\)"), 1),
    "shell_spawn": (re.compile(r"Command::new\(\"(sh|bash)\"\)"), 2),
    "hardcoded_secret": (re.compile(
        r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|(password|secret|token)\s*=\s*\"[^\"]{8,}\")",
        re.I), 25),
}

args = inputs()
base = root(args)
counts = {k: 0 for k in CHECKS}
findings = []
penalty = 0
for path in rust_files(base):
    rel = os.path.relpath(path, base)
    if "/tests/" in "/" + rel:
        continue  # integration tests may unwrap freely
    for no, line in enumerate(read(path).splitlines(), 1):
        if line.strip().startswith("#[cfg(test)]"):
            break  # the rest of the file is the unit-test module
        if line.strip().startswith("//"):
            continue
        for kind, (pattern, weight) in CHECKS.items():
            if pattern.search(line):
                counts[kind] += 1
                penalty += weight
                if len(findings) < 10:
                    findings.append(f"{rel}:{no}: {kind}")
emit({"area": "security", "issues": sum(counts.values()), "counts": counts,
      "findings": findings, "score": max(0, 100 - penalty)})
