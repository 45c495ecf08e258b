"""Merge the reports of a fan-out stage into one quality score."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, inputs  # noqa: E402

args = inputs()
reports = args.get("reports")
if not isinstance(reports, dict) or not reports:
    sys.exit("merge-quality-reports: input `reports` must be the fan-out stage's outputs")
areas = {}
for skill, report in sorted(reports.items()):
    if not isinstance(report, dict) or "score" not in report:
        sys.exit(f"merge-quality-reports: report `{skill}` has no score")
    areas[report.get("area", skill)] = {"score": report["score"],
                                        "issues": report.get("issues", 0),
                                        "skill": skill}
scores = [a["score"] for a in areas.values()]
worst = min(areas, key=lambda k: areas[k]["score"])
quality = round(sum(scores) / len(scores), 1)
emit({
    "quality_score": quality,
    "areas": areas,
    "total_issues": sum(a["issues"] for a in areas.values()),
    "worst_area": worst,
    "summary": f"quality {quality}/100 over {len(areas)} checks; weakest: {worst} ({areas[worst]['score']})",
})
