#!/usr/bin/env python3
"""Compares alternated rounds of two variants of Cascade in one sitting.

    bench/compare.py DIR        # DIR holds base-1, new-1, base-2, new-2, ... (bench/run.sh results)

A round's cell is the median of its measured runs; the summary is the median
of the round medians, [min-max] over every run of every round; new/base
compares those medians (tasks/s: above 1 is faster; times: below 1 is faster).
Prints a Markdown table."""
import json
import statistics
import sys
from pathlib import Path


def rows(d: Path):
    out = {}
    f = d / "cascade.jsonl"
    if not f.exists():
        return out
    for line in f.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "workload" not in r or "value_median" not in r:
            continue
        key = (r["variant"], r["workload"], r.get("metric", ""))
        out[key] = r
    return out


def fmt(x):
    return f"{x:.4g}"


def main():
    root = Path(sys.argv[1])
    rounds = {"base": [], "new": []}
    for d in sorted(root.iterdir()):
        for v in rounds:
            if d.is_dir() and d.name.startswith(v + "-"):
                rounds[v].append(rows(d))
    keys = sorted({k for v in rounds.values() for r in v for k in r})
    print("| variant | workload | base rounds | new rounds | base | new | new/base |")
    print("|---|---|---|---|---|---|---|")
    for k in keys:
        cells = []
        med = {}
        for v in ("base", "new"):
            meds = [r[k]["value_median"] for r in rounds[v] if k in r]
            lo = [r[k]["value_min"] for r in rounds[v] if k in r]
            hi = [r[k]["value_max"] for r in rounds[v] if k in r]
            if not meds:
                cells += ["-", "-"]
                continue
            med[v] = statistics.median(meds)
            cells.append(" / ".join(fmt(m) for m in meds))
            cells.append(f"{fmt(med[v])} [{fmt(min(lo))}-{fmt(max(hi))}]")
        ratio = fmt(med["new"] / med["base"]) if len(med) == 2 and med["base"] else "-"
        variant, workload, metric = k
        print(f"| {variant} | {workload} ({metric}) | {cells[0]} | {cells[2]} | {cells[1]} | {cells[3]} | {ratio} |")


if __name__ == "__main__":
    main()
