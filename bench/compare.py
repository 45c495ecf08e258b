#!/usr/bin/env python3
"""Compares alternated rounds of variants of Cascade measured in one sitting.

    bench/compare.py DIR        # DIR holds base-1, new-1, base-2, ... (bench/run.sh results)

Variants are the directory names without their `-N` round; `base` is the
reference. A round's cell is the median of its measured runs; a variant's
value is the median of its round medians, [min-max] over every run of every
round; X/base compares those medians (tasks/s: above 1 is faster; times:
below 1 is faster). Prints a Markdown table."""
import json
import re
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
        if "workload" in r and "value_median" in r:
            out[(r["variant"], r["workload"], r.get("metric", ""))] = r
    return out


def fmt(x):
    return f"{x:.4g}"


def main():
    root = Path(sys.argv[1])
    rounds = {}
    for d in sorted(root.iterdir()):
        m = re.fullmatch(r"(.+)-(\d+)", d.name)
        if d.is_dir() and m:
            rounds.setdefault(m.group(1), []).append(rows(d))
    names = sorted(rounds, key=lambda v: (v != "base", v))
    keys = sorted({k for v in rounds.values() for r in v for k in r})
    head = ["variant", "workload"] + [f"{v} rounds" for v in names] + names
    head += [f"{v}/base" for v in names if v != "base"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in keys:
        med, rcells, vcells = {}, [], []
        for v in names:
            meds = [r[k]["value_median"] for r in rounds[v] if k in r]
            if not meds:
                rcells.append("-")
                vcells.append("-")
                continue
            lo = min(r[k]["value_min"] for r in rounds[v] if k in r)
            hi = max(r[k]["value_max"] for r in rounds[v] if k in r)
            med[v] = statistics.median(meds)
            rcells.append(" / ".join(fmt(m) for m in meds))
            vcells.append(f"{fmt(med[v])} [{fmt(lo)}-{fmt(hi)}]")
        ratios = []
        for v in names:
            if v == "base":
                continue
            ok = v in med and med.get("base")
            ratios.append(fmt(med[v] / med["base"]) if ok else "-")
        variant, workload, metric = k
        print("| " + " | ".join([variant, f"{workload} ({metric})"] + rcells + vcells + ratios) + " |")


if __name__ == "__main__":
    main()
