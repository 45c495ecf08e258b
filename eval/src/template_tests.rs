//! Table-driven tests of template parsing and rendering.

use serde_json::json;

use super::*;

fn ctx() -> Context {
    let mut ctx = Context::new(
        json!({"repo": "cascade", "threshold": 80}),
        json!({"plan": {"steps": 3}}),
        json!({"name": "demo"}),
    );
    ctx.set_stage_output(
        "analyze",
        json!({"quality_score": 85, "report": {"ok": true}}),
    );
    ctx.set_var("timestamp", json!("2024-05-01T00:00:00Z"));
    ctx
}

fn render(src: &str) -> Result<Value, EvalError> {
    Template::parse(src)?.render(&ctx())
}

#[test]
fn render_table() {
    let cases = [
        ("plain text", json!("plain text")),
        ("", json!("")),
        ("${analyze.quality_score}", json!(85)),
        ("${analyze.report}", json!({"ok": true})),
        (
            "${ analyze.quality_score >= inputs.threshold }",
            json!(true),
        ),
        (
            "score: ${analyze.quality_score}/100",
            json!("score: 85/100"),
        ),
        ("${inputs.repo}-${cascade.name}", json!("cascade-demo")),
        ("report=${analyze.report}", json!("report={\"ok\":true}")),
        ("at ${timestamp}", json!("at 2024-05-01T00:00:00Z")),
        ("cost $${HOME} and $5", json!("cost ${HOME} and $5")),
        ("${'}'}", json!("}")),
        ("${repo}", json!("cascade")),
        ("$.analyze.quality_score", json!(85)),
        ("$.memory.plan", json!({"steps": 3})),
        ("héllo ${inputs.repo} wörld", json!("héllo cascade wörld")),
    ];
    for (src, want) in cases {
        assert_eq!(render(src), Ok(want), "{src}");
    }
}

#[test]
fn literal_detection() {
    let cases = [
        ("plain", true),
        ("$5 and {braces}", true),
        ("${x}", false),
        ("a $${x}", false),
        ("$.a.b", false),
    ];
    for (src, want) in cases {
        assert_eq!(
            Template::parse(src).map(|t| t.is_literal()),
            Ok(want),
            "{src}"
        );
    }
}

#[test]
fn parse_errors() {
    let cases = [
        ("abc ${inputs.x", 4, "unclosed `${`"),
        ("ab ${}", 5, "empty expression"),
        ("x ${a b}", 6, "unexpected `b` after a complete expression"),
        ("x ${a = b}", 6, "`=` is not an operator; use `==`"),
    ];
    for (src, offset, message) in cases {
        match Template::parse(src) {
            Err(EvalError::Parse {
                src: s,
                offset: o,
                message: m,
            }) => {
                assert_eq!((s.as_str(), o, m.as_str()), (src, offset, message), "{src}");
            }
            other => panic!("{src}: {other:?}"),
        }
    }
    assert!(Template::parse("$.a[").is_err());
}

#[test]
fn undefined_is_an_error() {
    let err = render("value: ${analyze.nope}").expect_err("should fail");
    assert_eq!(
        err.to_string(),
        "undefined reference `${analyze.nope}`: `analyze` has no field `nope`"
    );
    assert!(render("$.nothing.here").is_err_and(|e| e.is_undefined()));
}

#[test]
fn render_value_walks_strings_only() {
    let v = json!({
        "prompt": "review ${inputs.repo}",
        "score": "${analyze.quality_score}",
        "${not_a_template_key}": [1, "${cascade.name}", {"n": null}],
    });
    assert_eq!(
        render_value(&v, &ctx()),
        Ok(json!({
            "prompt": "review cascade",
            "score": 85,
            "${not_a_template_key}": [1, "demo", {"n": null}],
        }))
    );
    let err = render_value(&json!({"a": [1, "${nope}"]}), &ctx())
        .expect_err("should fail")
        .to_string();
    assert!(
        err.starts_with("field `a`: field `[1]`: undefined reference `${nope}`"),
        "{err}"
    );
}

#[test]
fn value_references_and_load_errors() {
    let v = json!({"a": "${inputs.x} and ${build.out[0].y}", "b": ["$.memory.k.z", 3]});
    let refs = value_references(&v).expect("parses");
    let roots: Vec<(&str, bool)> = refs.iter().map(|r| (r.root.as_str(), r.bare)).collect();
    assert_eq!(
        roots,
        [("inputs", false), ("build", false), ("memory", false)]
    );
    assert_eq!(refs[2].rest, ["k", "z"]);
    let err = value_references(&json!({"x": {"y": "${oops"}}))
        .expect_err("should fail")
        .to_string();
    assert_eq!(
        err,
        "field `x`: field `y`: cannot parse `${oops` at byte 0: unclosed `${`"
    );
}
