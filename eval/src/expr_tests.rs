//! Table-driven tests of expression parsing and evaluation.

use serde_json::json;

use super::*;

fn ctx() -> Context {
    let mut ctx = Context::new(
        json!({"quality_threshold": 80, "auto_fix_enabled": true, "name": "x", "tags": ["a", "b"]}),
        json!({"key": {"path": [1, 2]}}),
        json!({"name": "demo"}),
    );
    ctx.set_stage_output("analyze", json!({"quality_score": 85, "verdict": "good"}));
    ctx.set_stage_output("functionality_testing", json!({"pass_rate": 92.5}));
    ctx.set_stage_output("quality-checks", json!({"issues": 2}));
    ctx.set_stage_output(
        "stage",
        json!({"branch_taken": "fix", "fix": {"field": "fixed"}, "output": [{"x": 7}]}),
    );
    ctx.set_var("timestamp", json!("2024-05-01T00:00:00Z"));
    ctx.set_var("threshold", json!(90));
    ctx
}

fn eval(src: &str) -> Result<Value, EvalError> {
    Expr::parse(src)?.eval(&ctx())
}

#[test]
fn seed_examples() {
    let cases = [
        ("${quality_score} >= 80", json!(true)),
        (
            "${functionality_testing.pass_rate} >= ${inputs.quality_threshold}",
            json!(true),
        ),
        ("${inputs.auto_fix_enabled}", json!(true)),
        (
            "${quality_score} >= 80 AND ${pass_rate} < 3 OR ${inputs.auto_fix_enabled}",
            json!(true),
        ),
        ("${quality_score < threshold}", json!(true)),
        ("${analyze.verdict}", json!("good")),
        ("${stage.*.field}", json!("fixed")),
        ("${stage.branch_taken}", json!("fix")),
        ("${memory.key.path}", json!([1, 2])),
        ("${stage.output[0].x}", json!(7)),
        ("${cascade.name}", json!("demo")),
        ("${timestamp}", json!("2024-05-01T00:00:00Z")),
        ("quality-checks.issues", json!(2)),
    ];
    for (src, want) in cases {
        assert_eq!(eval(src), Ok(want), "{src}");
    }
}

#[test]
fn operator_table() {
    let cases = [
        ("1 + 2 * 3", json!(7)),
        ("(1 + 2) * 3", json!(9)),
        ("10 - 4 - 3", json!(3)),
        ("7 % 4", json!(3)),
        ("-2.5 * 2", json!(-5.0)),
        ("- -3", json!(3)),
        ("'a' + \"b\"", json!("ab")),
        ("1 == 1.0", json!(true)),
        ("'80' < 100", json!(true)),
        ("'abc' < 'abd'", json!(true)),
        ("'hello' contains 'ell'", json!(true)),
        ("inputs.tags contains 'b'", json!(true)),
        ("inputs contains 'name'", json!(true)),
        ("'a' in inputs.tags", json!(true)),
        ("3 in [1, 2, 3,]", json!(true)),
        ("analyze.verdict matches '^go+d$'", json!(true)),
        ("analyze.verdict matches inputs.name", json!(false)),
        ("NOT 1 == 2", json!(true)),
        ("not false and true", json!(true)),
        ("!0 && 'yes'", json!(true)),
        ("false || null or 'off'", json!(false)),
        ("true AND false OR true", json!(true)),
        ("true and (false or true)", json!(true)),
        ("[1, 'a', null]", json!([1, "a", null])),
        ("analyze.\"quality_score\"", json!(85)),
        ("stage[\"output\"][0][\"x\"]", json!(7)),
        ("memory.key.path.1", json!(2)),
        ("${${quality_score}} + 1", json!(86)),
    ];
    for (src, want) in cases {
        assert_eq!(eval(src), Ok(want), "{src}");
    }
}

#[test]
fn short_circuit_skips_undefined() {
    assert_eq!(eval("false AND nope.x"), Ok(json!(false)));
    assert_eq!(eval("true OR nope.x"), Ok(json!(true)));
    assert!(eval("true AND nope.x").is_err_and(|e| e.is_undefined()));
}

#[test]
fn runtime_errors() {
    let cases = [
        (
            "${analyze.missing}",
            "undefined reference `${analyze.missing}`: `analyze` has no field `missing`",
        ),
        (
            "${review.score} > 1",
            "undefined reference `${review.score}`: no stage output `review` yet",
        ),
        (
            "null > 1",
            "cannot compare null null with number 1 using `>`",
        ),
        (
            "inputs.tags > 1",
            "cannot compare array [\"a\",\"b\"] with number 1 using `>`",
        ),
        ("1 / 0", "division by zero in `1 / 0`"),
        ("'a' - 1", "cannot apply `-` to string \"a\" and number 1"),
        (
            "analyze.verdict matches 3",
            "`matches` needs a string pattern, not number",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(
            eval(src).map_err(|e| e.to_string()),
            Err(want.to_owned()),
            "{src}"
        );
    }
}

#[test]
fn parse_errors_carry_offsets() {
    let cases = [
        ("", 0),
        ("a >", 3),
        ("a b", 2),
        ("(a", 2),
        ("a = 1", 2),
        ("and", 0),
        ("a.", 2),
        ("a[-1]", 2),
        ("${a", 3),
        ("[1 2]", 3),
        ("a matches '('", 2),
    ];
    for (src, offset) in cases {
        match Expr::parse(src) {
            Err(EvalError::Parse { offset: got, .. }) => assert_eq!(got, offset, "{src}"),
            Err(EvalError::Regex { .. }) if src.contains("matches") => {}
            other => panic!("{src}: {other:?}"),
        }
    }
}

#[test]
fn depth_is_bounded() {
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(Expr::parse(&deep).is_err());
    let long_chain = vec!["1"; 500].join(" + ");
    assert!(Expr::parse(&long_chain).is_err());
    let ok_chain = vec!["1"; 30].join(" + ");
    assert_eq!(
        Expr::parse(&ok_chain).and_then(|e| e.eval(&ctx())),
        Ok(json!(30))
    );
    assert!(Expr::parse(&"!".repeat(100)).is_err());
}

#[test]
fn references_table() {
    let refs = Expr::parse("${a.b[0].c} >= ${inputs.t} AND name AND stage.*.f")
        .expect("parses")
        .references();
    let got: Vec<(String, String, Vec<String>, bool)> = refs
        .into_iter()
        .map(|r| (r.text, r.root, r.rest, r.bare))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("a.b[0].c".into(), "a".into(), s(&["b", "c"]), false),
            ("inputs.t".into(), "inputs".into(), s(&["t"]), false),
            ("name".into(), "name".into(), vec![], true),
            ("stage.*.f".into(), "stage".into(), s(&["*", "f"]), false),
        ]
    );
}
