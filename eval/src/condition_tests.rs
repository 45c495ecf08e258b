//! Table-driven tests of condition parsing and evaluation.

use serde_json::json;

use super::*;

fn ctx() -> Context {
    let mut ctx = Context::new(
        json!({"quality_threshold": 80, "auto_fix_enabled": "false", "mode": "strict"}),
        json!({"last_run": {"ok": true}}),
        json!({"name": "demo"}),
    );
    ctx.set_stage_output(
        "analyze",
        json!({"quality_score": 85, "verdict": "needs-fix"}),
    );
    ctx.set_stage_output("metrics", json!({"error_rate": 0.001, "coverage": "91.5"}));
    ctx.set_stage_output("tests", json!({"pass_rate": 97, "failed": ["lint"]}));
    ctx
}

fn eval(v: Value) -> Result<bool, EvalError> {
    Condition::from_json(&v)?.evaluate(&ctx())
}

#[test]
fn string_and_constant_forms() {
    let cases = [
        (json!("${quality_score} >= 80"), true),
        (
            json!("${tests.pass_rate} >= ${inputs.quality_threshold}"),
            true,
        ),
        (json!("${inputs.auto_fix_enabled}"), false),
        (
            json!("${quality_score} >= 90 AND ${pass_rate} > 3 OR ${inputs.mode}"),
            true,
        ),
        (json!("$.metrics.error_rate"), true),
        (json!(true), true),
        (json!(false), false),
        (json!(["${quality_score} > 1", "${pass_rate} > 99"]), false),
        (json!({"any": ["${quality_score} > 99", true]}), true),
        (json!({"all": []}), true),
    ];
    for (v, want) in cases {
        assert_eq!(eval(v.clone()), Ok(want), "{v}");
    }
}

#[test]
fn structured_forms() {
    let cases = [
        (
            json!({"left": "${analyze.quality_score}", "operator": ">=", "right": 80}),
            true,
        ),
        (
            json!({"type": "comparison", "left": "$.analyze.verdict", "operator": "==", "right": "needs-fix"}),
            true,
        ),
        (
            json!({"left": "$.tests.failed", "operator": "contains", "right": "lint"}),
            true,
        ),
        (
            json!({"left": "${inputs.mode}", "operator": "!=", "right": "strict"}),
            false,
        ),
        (
            json!({"type": "threshold", "metric": "$.metrics.coverage", "threshold": 90}),
            true,
        ),
        (
            json!({"type": "threshold", "metric": "${metrics.error_rate}", "threshold": 0.01, "comparison": "<"}),
            true,
        ),
        (
            json!({"type": "threshold", "metric": 5, "threshold": "5", "comparison": ">="}),
            true,
        ),
        (
            json!({"type": "exists", "path": "$.memory.last_run.ok"}),
            true,
        ),
        (json!({"type": "exists", "path": "$.memory.nothing"}), false),
        (json!({"type": "exists", "path": "analyze.verdict"}), true),
        (json!({"type": "exists", "path": "${review.score}"}), false),
        (json!({"type": "exists", "path": "review"}), false),
        (
            json!({"type": "regex", "value": "${analyze.verdict}", "pattern": "^needs-"}),
            true,
        ),
        (
            json!({"type": "regex", "value": "$.tests.pass_rate", "pattern": "^9\\d$"}),
            true,
        ),
        (
            json!({"type": "custom", "script": "jq '.metrics.error_rate < 0.01'"}),
            true,
        ),
        (
            json!({"type": "custom", "script": "jq -e '.tests.failed | length == 0'"}),
            false,
        ),
        (
            json!({"type": "custom", "script": ".analyze.quality_score >= 80"}),
            true,
        ),
    ];
    for (v, want) in cases {
        assert_eq!(eval(v.clone()), Ok(want), "{v}");
    }
}

#[test]
fn load_errors_name_the_field() {
    let cases = [
        (
            json!({"left": 1, "opertor": "==", "right": 1}),
            "unknown field `opertor`; did you mean `operator`?",
        ),
        (json!({"left": 1, "right": 1}), "missing field `operator`"),
        (
            json!({"left": 1, "operator": "=~", "right": 1}),
            "field `operator`: operator `=~`: expected one of == != > < >= <= contains",
        ),
        (
            json!({"type": "threshold", "metric": 1, "threshold": 2, "comparison": "=="}),
            "field `comparison`: operator `==`: expected one of > < >= <=",
        ),
        (
            json!({"metric": 1, "threshold": 2}),
            "unknown field `metric`; did you mean `type: threshold`?",
        ),
        (
            json!({"type": "thresold", "metric": 1}),
            "field `type`: condition type `thresold`: expected one of comparison, threshold, exists, regex, custom; did you mean `threshold`?",
        ),
        (
            json!({"type": "regex", "value": "x", "pattern": "(unclosed"}),
            "field `pattern`: invalid regex `(unclosed`: error: unclosed group",
        ),
        (
            json!({"type": "custom", "script": "jq '.a' | wc -l"}),
            "field `script`: jq filter `jq '.a' | wc -l`: custom conditions take one jq filter; shell syntax is not evaluated",
        ),
        (
            json!({"type": "custom", "script": "jq '.a |'"}),
            "field `script`: jq filter `.a |`: expected term at byte 4",
        ),
        (
            json!({"type": "exists", "path": 3}),
            "field `path`: number value: expected a string",
        ),
        (
            json!({"left": "${oops", "operator": "==", "right": 1}),
            "field `left`: cannot parse `${oops` at byte 0: unclosed `${`",
        ),
        (
            json!([true, {"type": 1}]),
            "field `[1]`: field `type`: number value: expected a condition type name",
        ),
        (
            json!({"all": true}),
            "field `all`: boolean value: expected a list of conditions",
        ),
        (json!({"all": [], "type": "exists"}), "unknown field `type`"),
        (
            json!(3),
            "condition: expected a string, a boolean, a list or an object, not number",
        ),
        (
            json!("${a} >="),
            "cannot parse `${a} >=` at byte 7: expected a value, found end of input",
        ),
    ];
    for (v, want) in cases {
        let got = Condition::from_json(&v)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, Err(want.to_owned()), "{v}");
    }
}

#[test]
fn runtime_errors_are_strict() {
    let undefined = eval(json!("${review.score} > 1")).expect_err("should fail");
    assert_eq!(
        undefined.to_string(),
        "undefined reference `${review.score}`: no stage output `review` yet"
    );
    let typed = eval(json!({"left": "$.tests.failed", "operator": ">", "right": 1}))
        .expect_err("should fail");
    assert_eq!(
        typed.to_string(),
        "cannot compare array [\"lint\"] with number 1 using `>`"
    );
    let jq = eval(json!({"type": "custom", "script": "error(\"nope\")"}));
    assert!(matches!(jq, Err(EvalError::Jq { .. })), "{jq:?}");
}

#[test]
fn evaluate_value_keeps_selector_values() {
    let c = Condition::parse_str("${analyze.verdict}").expect("parses");
    assert_eq!(c.evaluate_value(&ctx()), Ok(json!("needs-fix")));
    let c =
        Condition::from_json(&json!({"left": 1, "operator": "==", "right": 1})).expect("parses");
    assert_eq!(c.evaluate_value(&ctx()), Ok(json!(true)));
}

#[test]
fn references_for_load_time_checks() {
    let c = Condition::from_json(&json!([
        "${analyze.quality_score} > ${inputs.quality_threshold}",
        {"left": "$.tests.pass_rate", "operator": ">", "right": "${memory.min}"},
        {"type": "exists", "path": "$.maybe.there"},
        {"type": "regex", "value": "${verdict}", "pattern": "x"},
    ]))
    .expect("parses");
    let roots: Vec<String> = c.references().into_iter().map(|r| r.root).collect();
    assert_eq!(roots, ["analyze", "inputs", "tests", "memory", "verdict"]);
}

#[test]
fn suggestions() {
    let fields = ["left", "operator", "right"];
    assert_eq!(
        crate::suggest::did_you_mean("oprator", fields),
        Some("operator")
    );
    assert_eq!(crate::suggest::did_you_mean("Left", fields), Some("left"));
    assert_eq!(crate::suggest::did_you_mean("banana", fields), None);
}
