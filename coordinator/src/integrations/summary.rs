//! The words around a run: a one-line headline (notifications, statuses),
//! and the Markdown of pull requests and issues (stages, gates, the fix
//! history of a failed stage's `details`). Pure: reads the results JSON.

use std::fmt::Write;

use serde_json::Value;

/// Longest patch quoted in an issue before it is cut.
const MAX_QUOTED_PATCH: usize = 20_000;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

pub fn status(report: &Value) -> &str {
    s(report, "status")
}

/// `✅ cascade `x` succeeded in 3.5s`, `❌ ... failed in 2.0s: why`.
pub fn headline(report: &Value) -> String {
    let name = s(report, "cascade");
    let secs = report
        .get("duration")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    match status(report) {
        "success" => format!("✅ cascade `{name}` succeeded in {secs:.1}s"),
        "partial" => format!(
            "⚠️ cascade `{name}` ended partial in {secs:.1}s{}",
            reason(report)
        ),
        other => format!(
            "❌ cascade `{name}` {other} in {secs:.1}s{}",
            reason(report)
        ),
    }
}

fn reason(report: &Value) -> String {
    let err = s(report, "error");
    if !err.is_empty() {
        return format!(": {}", one_line(err, 300));
    }
    match failed_stages(report).first() {
        Some((id, e)) => format!(": stage `{id}`: {}", one_line(e, 300)),
        None => String::new(),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Stages that failed, with their errors, in report order.
pub fn failed_stages(report: &Value) -> Vec<(String, String)> {
    report
        .get("stages")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, st)| s(st, "status") == "failed")
                .map(|(id, st)| (id.clone(), s(st, "error").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn stage_table(report: &Value) -> String {
    let mut out = String::from("| stage | status | duration |\n|---|---|---|\n");
    if let Some(stages) = report.get("stages").and_then(Value::as_object) {
        for (id, st) in stages {
            let d = st.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
            let _ = writeln!(out, "| `{id}` | {} | {d:.1}s |", s(st, "status"));
        }
    }
    out
}

fn gates_table(report: &Value) -> String {
    let Some(gates) = report.get("quality_gates").and_then(Value::as_array) else {
        return String::new();
    };
    if gates.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n### Quality gates\n\n| gate | value | threshold | passed |\n|---|---|---|---|\n",
    );
    for g in gates {
        let passed = match g.get("passed").and_then(Value::as_bool) {
            Some(true) => "✅",
            Some(false) => "❌",
            None => "—",
        };
        let value = g.get("value").map(Value::to_string).unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | {value} | `{}` | {passed} |",
            s(g, "name"),
            s(g, "threshold")
        );
    }
    out
}

fn footer(report: &Value, marker: &str) -> String {
    format!(
        "\n---\nCascade `{}` run `{}`, {} → {}.\n{marker}\n",
        s(report, "cascade"),
        s(report, "run_id"),
        s(report, "started_at"),
        s(report, "finished_at"),
    )
}

pub fn pr_title(report: &Value, files: usize) -> String {
    let run = s(report, "run_id");
    let short: String = run.chars().take(8).collect();
    let plural = if files == 1 { "" } else { "s" };
    format!(
        "cascade {}: changes to {files} file{plural} (run {short})",
        s(report, "cascade")
    )
}

/// A pull request's body: what ran, the proposing stage's test results,
/// the files, the gates.
pub fn pr_body(report: &Value, stage: &str, files: &[String], marker: &str) -> String {
    let mut out = format!("{}\n\n", headline(report));
    let output = report
        .get("stages")
        .and_then(|m| m.get(stage))
        .and_then(|st| st.get("output"))
        .cloned()
        .unwrap_or(Value::Null);
    let tests = output.get("tests");
    let passed = tests.and_then(|t| t.get("passed")).and_then(Value::as_u64);
    let total = tests.and_then(|t| t.get("total")).and_then(Value::as_u64);
    let iterations = output.get("iterations").and_then(Value::as_u64);
    let _ = write!(out, "The patch comes from stage `{stage}`");
    if let Some(i) = iterations {
        let _ = write!(
            out,
            " after {i} fix iteration{}",
            if i == 1 { "" } else { "s" }
        );
    }
    if let (Some(p), Some(t)) = (passed, total) {
        let _ = write!(out, "; tests: {p}/{t} passing");
    }
    out.push_str(".\n\n### Files\n\n");
    for f in files {
        let _ = writeln!(out, "- `{f}`");
    }
    if let Some(h) = output.get("history") {
        out.push_str(&history(h));
    }
    out.push_str("\n### Stages\n\n");
    out.push_str(&stage_table(report));
    out.push_str(&gates_table(report));
    out.push_str(&footer(report, marker));
    out
}

pub fn issue_title(report: &Value) -> String {
    let name = s(report, "cascade");
    match failed_stages(report).first() {
        Some((id, _)) => format!("Cascade `{name}` failed at stage `{id}`"),
        None => format!("Cascade `{name}` failed"),
    }
}

/// An issue's body (or a comment on the open one): the failed stages, their
/// errors and each one's fix history.
pub fn issue_body(report: &Value, marker: &str) -> String {
    let mut out = format!("{}\n", headline(report));
    let failed = failed_stages(report);
    for (id, err) in &failed {
        let _ = write!(out, "\n### Stage `{id}`\n\n```\n{}\n```\n", err.trim());
        let details = report
            .get("stages")
            .and_then(|m| m.get(id))
            .and_then(|st| st.get("details"));
        if let Some(d) = details {
            if let Some(h) = d.get("history") {
                out.push_str(&history(h));
            }
            if let Some(e) = d.get("escalation") {
                let _ = writeln!(
                    out,
                    "\nEscalation: {} after {} iteration(s); still failing: {}.",
                    s(e, "reason"),
                    e.get("iterations").and_then(Value::as_u64).unwrap_or(0),
                    list(e.get("failing_tests"))
                );
            }
            let patch = s(d, "patch");
            if !patch.trim().is_empty() {
                let quoted: String = patch.chars().take(MAX_QUOTED_PATCH).collect();
                let _ = write!(
                    out,
                    "\n<details><summary>Last patch tried</summary>\n\n```diff\n{}\n```\n</details>\n",
                    quoted.trim_end()
                );
            }
        }
    }
    if failed.is_empty() && !s(report, "error").is_empty() {
        let _ = write!(out, "\n```\n{}\n```\n", s(report, "error"));
    }
    out.push_str("\n### Stages\n\n");
    out.push_str(&stage_table(report));
    out.push_str(&gates_table(report));
    out.push_str(&footer(report, marker));
    out
}

fn list(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "none".into())
}

/// The sandbox loop's iterations as a table.
fn history(h: &Value) -> String {
    let Some(items) = h.as_array().filter(|a| !a.is_empty()) else {
        return String::new();
    };
    let mut out = String::from(
        "\n### Fix history\n\n| iteration | failing before | outcome | tests after |\n|---|---|---|---|\n",
    );
    for it in items {
        let n = it.get("iteration").and_then(Value::as_u64).unwrap_or(0);
        let failures = it
            .get("failures")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let tests = it.get("tests");
        let after = match (
            tests.and_then(|t| t.get("passed")).and_then(Value::as_u64),
            tests.and_then(|t| t.get("total")).and_then(Value::as_u64),
        ) {
            (Some(p), Some(t)) => format!("{p}/{t} passing"),
            _ => "—".into(),
        };
        let _ = writeln!(out, "| {n} | {failures} | {} | {after} |", s(it, "outcome"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn failed_report() -> Value {
        json!({
            "cascade": "fix", "status": "failed", "duration": 2.3, "run_id": "0123456789",
            "error": null,
            "stages": {
                "audit": {"status": "failed", "duration": 2.0,
                          "error": "2 tests still failing after 1 iteration(s): a, b",
                          "details": {
                              "history": [{"iteration": 1, "failures": [{}, {}, {}], "outcome": "improved",
                                           "tests": {"passed": 4, "total": 6}}],
                              "patch": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
                              "escalation": {"reason": "exhausted", "iterations": 1, "failing_tests": ["a", "b"]}
                          }},
                "report": {"status": "cancelled", "duration": 0.0, "error": null}
            },
            "quality_gates": [{"name": "cov", "passed": null, "value": null, "threshold": ">= 80"}]
        })
    }

    #[test]
    fn headlines() {
        let r = failed_report();
        assert_eq!(
            headline(&r),
            "❌ cascade `fix` failed in 2.3s: stage `audit`: 2 tests still failing after 1 iteration(s): a, b"
        );
        let ok = json!({"cascade": "c", "status": "success", "duration": 1.0});
        assert_eq!(headline(&ok), "✅ cascade `c` succeeded in 1.0s");
    }

    #[test]
    fn issue_body_has_the_failure_and_its_fix_history() {
        let r = failed_report();
        assert_eq!(issue_title(&r), "Cascade `fix` failed at stage `audit`");
        let body = issue_body(&r, "<!-- m -->");
        for want in [
            "### Stage `audit`",
            "2 tests still failing",
            "| 1 | 3 | improved | 4/6 passing |",
            "Escalation: exhausted after 1 iteration(s); still failing: `a`, `b`.",
            "```diff\n--- a/x",
            "| `report` | cancelled | 0.0s |",
            "| `cov` | null | `>= 80` | — |",
            "<!-- m -->",
        ] {
            assert!(body.contains(want), "missing {want:?} in\n{body}");
        }
    }

    #[test]
    fn pull_request_text() {
        let r = json!({"cascade": "fix", "status": "success", "duration": 3.0, "run_id": "0123456789",
            "stages": {"audit": {"status": "success", "duration": 3.0,
                "output": {"iterations": 2, "tests": {"passed": 6, "total": 6}, "history": []}}}});
        assert_eq!(
            pr_title(&r, 1),
            "cascade fix: changes to 1 file (run 01234567)"
        );
        let body = pr_body(&r, "audit", &["a.py".into()], "<!-- m -->");
        assert!(
            body.contains("after 2 fix iterations; tests: 6/6 passing."),
            "{body}"
        );
        assert!(body.contains("- `a.py`"), "{body}");
    }
}
