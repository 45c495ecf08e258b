//! Quality gates: thresholds on metrics from stage outputs, or conditions,
//! evaluated with the eval crate against the same context as the run's
//! templates (inputs, memory, cascade, every completed top-level stage's
//! outputs by id, most recent last). Pure.
//!
//! When a gate is checked:
//! - `after: STAGE`: as soon as STAGE succeeds (the driver stops the run on
//!   a failure), and again when the run ends; not evaluated (`passed:
//!   null`) when STAGE never succeeded.
//! - otherwise when the run ends. A run that already failed is not made
//!   more failed: a metric it never produced is `passed: null`.
//!
//! A gate that fails fails a run that would have succeeded (or ended
//! partial), with a message naming the gate, the value and the threshold.

use cascade_eval::{Context, render_value};
use serde::Serialize;
use serde_json::{Map, Value, json};

use cascade_core::plan::Plan;
use cascade_core::spec::{GateCheck, QualityGate};

/// One gate's outcome, as the results list it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub name: String,
    /// `None`: not evaluated (its stage never succeeded, or the run failed
    /// before producing its metric).
    pub passed: Option<bool>,
    /// The metric's value (a condition's: true or false).
    pub value: Value,
    /// `>= 80`, `>= 90 and <= 100`, or the condition as written.
    pub threshold: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The context gates read, rebuilt from a report: the top-level scope's
/// stages that succeeded, in the order they finished.
pub fn context(plan: &Plan, report: &Value, inputs: &Map<String, Value>, run_id: &str) -> Context {
    let root_scope = plan.blocks[plan.root].scope;
    let cascade = json!({
        "name": plan.name,
        "version": plan.scopes.get(root_scope).map(|s| s.version.clone()),
        "run_id": run_id,
    });
    let memory = report
        .get("memory_snapshot")
        .cloned()
        .unwrap_or(Value::Null);
    let mut ctx = Context::new(Value::Object(inputs.clone()), memory, cascade);
    let stages = report.get("stages");
    let mut done: Vec<(String, &str, Value)> = plan
        .nodes
        .iter()
        .filter(|n| n.scope == root_scope)
        .filter_map(|n| {
            let s = stages?.get(&n.id)?;
            if s.get("status").and_then(Value::as_str) != Some("success") {
                return None;
            }
            let at = s
                .get("finished_at")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let out = s.get("output").cloned().unwrap_or(Value::Null);
            Some((at, n.local_id.as_str(), out))
        })
        .collect();
    done.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, id, out) in done {
        ctx.set_stage_output(id, out);
    }
    ctx
}

/// The status of a top-level stage in a report, by its id as written.
fn stage_status<'a>(plan: &Plan, report: &'a Value, local_id: &str) -> Option<&'a str> {
    let root_scope = plan.blocks[plan.root].scope;
    let node = plan
        .nodes
        .iter()
        .find(|n| n.scope == root_scope && n.local_id == local_id)?;
    report.get("stages")?.get(&node.id)?.get("status")?.as_str()
}

/// Evaluates one gate now (its stage, if any, has succeeded).
pub fn check(gate: &QualityGate, ctx: &Context) -> GateResult {
    let mut result = GateResult {
        name: gate.name.clone(),
        passed: Some(false),
        value: Value::Null,
        threshold: String::new(),
        after: gate.after.as_ref().map(|(s, _)| s.clone()),
        message: None,
    };
    match &gate.check {
        GateCheck::Condition(c) => {
            result.threshold = c.text.clone();
            match c.cond.evaluate(ctx) {
                Ok(b) => {
                    result.value = Value::Bool(b);
                    result.passed = Some(b);
                    if !b {
                        result.message = Some(format!(
                            "quality gate `{}` failed: `{}` is false",
                            gate.name, c.text
                        ));
                    }
                }
                Err(e) => {
                    result.message = Some(format!("quality gate `{}` failed: {e}", gate.name))
                }
            }
        }
        GateCheck::Threshold {
            metric,
            value,
            bounds,
        } => {
            let mut rendered = Vec::new();
            let mut problem = None;
            for (op, b) in bounds {
                match render_value(b, ctx)
                    .map_err(|e| e.to_string())
                    .and_then(|v| number(&v).map_err(|e| e.to_string()))
                {
                    Ok(n) => rendered.push((*op, n)),
                    Err(e) => problem = Some(format!("its threshold is not a number: {e}")),
                }
            }
            result.threshold = rendered
                .iter()
                .map(|(op, n)| format!("{} {}", op.symbol(), show(*n)))
                .collect::<Vec<_>>()
                .join(" and ");
            let v = value.render(ctx);
            let outcome = match (v, problem) {
                (_, Some(p)) => Err(p),
                (Err(e), None) => Err(e.to_string()),
                (Ok(v), None) => {
                    result.value = v.clone();
                    number(&v).map_err(|e| e.to_string()).map(|n| {
                        rendered
                            .iter()
                            .all(|(op, b)| op.apply(&json!(n), &json!(b)).unwrap_or(false))
                    })
                }
            };
            match outcome {
                Ok(true) => result.passed = Some(true),
                Ok(false) => {
                    result.message = Some(format!(
                        "quality gate `{}` failed: `{metric}` is {}, needs {}",
                        gate.name,
                        eval_show(&result.value),
                        result.threshold
                    ));
                }
                Err(e) => {
                    result.message = Some(format!(
                        "quality gate `{}` failed: `{metric}`: {e}",
                        gate.name
                    ));
                }
            }
        }
    }
    result
}

/// A gate's value or threshold that is not a number.
#[derive(Debug, thiserror::Error)]
enum NotANumber {
    #[error("{0} is out of range")]
    OutOfRange(serde_json::Number),
    #[error("`{0}` is not a number")]
    Text(String),
    #[error("{0} is not a number")]
    Other(String),
}

fn number(v: &Value) -> Result<f64, NotANumber> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| NotANumber::OutOfRange(n.clone())),
        Value::String(s) => s
            .trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .map_err(|_| NotANumber::Text(s.clone())),
        other => Err(NotANumber::Other(eval_show(other))),
    }
}

fn show(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn eval_show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every gate at the end of a run, by the rules in the module comment.
pub fn evaluate_all(
    gates: &[QualityGate],
    plan: &Plan,
    report: &Value,
    ctx: &Context,
) -> Vec<GateResult> {
    let run_failed = report.get("status").and_then(Value::as_str) == Some("failed");
    gates
        .iter()
        .map(|g| {
            if let Some((stage, _)) = &g.after {
                let status = stage_status(plan, report, stage).unwrap_or("pending");
                if status != "success" {
                    return not_evaluated(g, format!("stage `{stage}` ended {status}"));
                }
            }
            let r = check(g, ctx);
            if run_failed && r.passed == Some(false) && r.value.is_null() {
                return not_evaluated(g, "the run failed before producing it".into());
            }
            r
        })
        .collect()
}

fn not_evaluated(g: &QualityGate, why: String) -> GateResult {
    let threshold = match &g.check {
        GateCheck::Condition(c) => c.text.clone(),
        GateCheck::Threshold { bounds, .. } => bounds
            .iter()
            .map(|(op, b)| format!("{} {}", op.symbol(), eval_show(b)))
            .collect::<Vec<_>>()
            .join(" and "),
    };
    GateResult {
        name: g.name.clone(),
        passed: None,
        value: Value::Null,
        threshold,
        after: g.after.as_ref().map(|(s, _)| s.clone()),
        message: Some(format!("not evaluated: {why}")),
    }
}

/// Writes `quality_gates` into the report; a failed gate fails a run that
/// had not failed (its error names every failed gate). `stopped_by` is the
/// gate message a run was stopped with mid-way (its engine error reads
/// "cancelled: ..."): the gate's message replaces it.
pub fn apply(report: &mut Value, results: &[GateResult], stopped_by: Option<&str>) {
    let Some(map) = report.as_object_mut() else {
        return;
    };
    map.insert(
        "quality_gates".into(),
        serde_json::to_value(results).unwrap_or(Value::Null),
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.passed == Some(false))
        .filter_map(|r| r.message.as_deref())
        .collect();
    let status = map
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(msg) = stopped_by {
        map.insert("status".into(), json!("failed"));
        map.insert("error".into(), json!(msg));
        return;
    }
    if failed.is_empty() || status == "failed" {
        return;
    }
    map.insert("status".into(), json!("failed"));
    map.insert("error".into(), json!(failed.join("; ")));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use cascade_core::plan::{PlanOptions, compile};
    use cascade_core::spec::load_str;

    fn setup(gates: &str) -> (Plan, Vec<QualityGate>) {
        let text = format!(
            "name: g\nstages:\n  - {{stage_id: tests, skill: echo}}\n  - {{stage_id: lint, skill: echo}}\nquality_gates:\n{gates}"
        );
        let l = load_str(Path::new("g.yaml"), &text);
        assert!(!l.has_errors(), "{:#?}", l.diagnostics);
        let c = l.cascade.expect("cascade");
        let plan = compile(&c, &PlanOptions::default());
        (plan, c.operations.quality_gates)
    }

    fn report(status: &str, tests: Value, lint_status: &str) -> Value {
        json!({"status": status, "stages": {
            "tests": {"status": "success", "output": tests, "finished_at": "2026-01-01T00:00:01.000Z"},
            "lint": {"status": lint_status, "output": {"warnings": 2}, "finished_at": "2026-01-01T00:00:02.000Z"},
        }, "memory_snapshot": {}})
    }

    fn run(gates: &str, r: &Value) -> Vec<GateResult> {
        let (plan, gates) = setup(gates);
        let ctx = context(&plan, r, &Map::new(), "r1");
        evaluate_all(&gates, &plan, r, &ctx)
    }

    #[test]
    fn thresholds_and_conditions() {
        let r = report(
            "success",
            json!({"coverage": 72.5, "passed": "12"}),
            "success",
        );
        let out = run(
            "  - {metric: coverage, min: 80}
  - {name: pass, metric: tests.passed, min: 10, max: 12}
  - {name: warn, condition: '${lint.warnings} < 3'}
  - {name: strict, condition: '${lint.warnings} == 0'}
  - {name: missing, metric: tests.nope, min: 1}
",
            &r,
        );
        let got: Vec<(&str, Option<bool>, &str)> = out
            .iter()
            .map(|g| (g.name.as_str(), g.passed, g.threshold.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("coverage", Some(false), ">= 80"),
                ("pass", Some(true), ">= 10 and <= 12"),
                ("warn", Some(true), "${lint.warnings} < 3"),
                ("strict", Some(false), "${lint.warnings} == 0"),
                ("missing", Some(false), ">= 1"),
            ]
        );
        assert_eq!(out[0].value, json!(72.5));
        assert_eq!(
            out[0].message.as_deref(),
            Some("quality gate `coverage` failed: `coverage` is 72.5, needs >= 80")
        );
        assert!(
            out[4]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("tests.nope"),
            "{:?}",
            out[4].message
        );
        let mut rep = r.clone();
        apply(&mut rep, &out, None);
        assert_eq!(rep["status"], json!("failed"));
        let err = rep["error"].as_str().unwrap_or_default();
        assert!(
            err.starts_with("quality gate `coverage` failed") && err.contains("`strict`"),
            "{err}"
        );
        assert_eq!(rep["quality_gates"][1]["passed"], json!(true));
    }

    #[test]
    fn not_evaluated_when_the_stage_or_run_never_got_there() {
        let r = report("failed", json!({}), "cancelled");
        let out = run(
            "  - {name: after-lint, metric: lint.warnings, max: 0, after: lint}
  - {metric: coverage, min: 80}
",
            &r,
        );
        assert_eq!(out[0].passed, None);
        assert_eq!(
            out[0].message.as_deref(),
            Some("not evaluated: stage `lint` ended cancelled")
        );
        assert_eq!(out[1].passed, None);
        let mut rep = r.clone();
        rep["error"] = json!("stage `lint` was cancelled");
        apply(&mut rep, &out, None);
        assert_eq!(
            rep["error"],
            json!("stage `lint` was cancelled"),
            "a failed run keeps its error"
        );
    }

    #[test]
    fn a_passing_run_stays_passed_and_a_stop_names_the_gate() {
        let r = report("success", json!({"coverage": 91}), "success");
        let out = run("  - {metric: coverage, min: 80}\n", &r);
        let mut rep = r.clone();
        apply(&mut rep, &out, None);
        assert_eq!(rep["status"], json!("success"));
        assert!(rep.get("error").is_none());
        let mut stopped = report("failed", json!({}), "cancelled");
        stopped["error"] = json!("cancelled: quality gate `x` failed: ...");
        apply(
            &mut stopped,
            &out,
            Some("quality gate `x` failed: `x` is 1, needs >= 2"),
        );
        assert_eq!(
            stopped["error"],
            json!("quality gate `x` failed: `x` is 1, needs >= 2")
        );
    }
}
