"""A deterministic fixer for the test-and-fix example (a stand-in for a model).

The loop runs this in its sandbox copy of the project with the current
failures in $CASCADE_FAILURES_FILE (JSON: {"failures": [{"name": ...}, ...]}).
It applies the first fix from tools/fixes.json that targets a failing test
and whose text is still there: one change per iteration. It exits 1 when it
knows no fix for the failures, which the loop records as a failed attempt.
"""

import json
import os
import sys
from pathlib import Path


def main() -> int:
    request = json.loads(Path(os.environ["CASCADE_FAILURES_FILE"]).read_text())
    failing = {f.get("name", "") for f in request.get("failures", [])}
    fixes = json.loads(Path(__file__).with_name("fixes.json").read_text())
    for fix in fixes:
        if not any(any(t in name for name in failing) for t in fix["tests"]):
            continue
        path = Path(fix["file"])
        text = path.read_text()
        if fix["find"] not in text:
            continue
        path.write_text(text.replace(fix["find"], fix["replace"], 1))
        print(f"fixed {path} for {', '.join(fix['tests'])}")
        return 0
    print(f"no known fix for: {', '.join(sorted(failing)) or 'nothing'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
