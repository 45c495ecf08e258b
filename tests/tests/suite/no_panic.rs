//! Property tests: no input, however malformed, makes the parsers or evaluators panic, and
//! rendering a literal template is the identity.

use std::path::Path;

use cascade_eval::{Condition, Context, Expr, JqFilter, Template, render_value, value_references};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z0-9 _-]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn context() -> impl Strategy<Value = Context> {
    (
        json_value(),
        json_value(),
        prop::collection::vec(("[a-z_-]{1,6}", json_value()), 0..4),
    )
        .prop_map(|(inputs, memory, stages)| {
            let mut ctx = Context::new(
                json!({"a": inputs, "n": 3}),
                json!({"m": memory}),
                json!({"name": "p"}),
            );
            for (id, out) in stages {
                ctx.set_stage_output(&id, out);
            }
            ctx
        })
}

/// Token soup: more likely than random text to get deep into the parsers.
fn soup() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("${"),
        Just("}"),
        Just("$${"),
        Just("$."),
        Just("."),
        Just("*"),
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just("0"),
        Just("1.5"),
        Just("-"),
        Just("+"),
        Just("/"),
        Just("%"),
        Just("=="),
        Just(">="),
        Just("<"),
        Just("!"),
        Just(" AND "),
        Just(" or "),
        Just(" NOT "),
        Just(" contains "),
        Just(" in "),
        Just(" matches "),
        Just("'x'"),
        Just("\"y\""),
        Just("'"),
        Just("a"),
        Just("inputs"),
        Just("memory"),
        Just("n"),
        Just("m"),
        Just("x-y"),
        Just(" "),
        Just(","),
        Just("true"),
        Just("null"),
        Just("\\"),
        Just("é"),
    ];
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

fn jq_soup() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("."),
        Just("a"),
        Just("n"),
        Just("|"),
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just("{"),
        Just("}"),
        Just(" < "),
        Just(" and "),
        Just("length"),
        Just("keys"),
        Just("map(.)"),
        Just("select(.)"),
        Just("'"),
        Just("\""),
        Just("jq "),
        Just("-e "),
        Just("1"),
        Just(","),
        Just("$"),
        Just(";"),
        Just("?"),
        Just("//"),
        Just(" as $x | "),
        Just("tostring"),
        Just("has(\"a\")"),
        Just("error"),
        Just("halt"),
        Just("env"),
    ];
    prop::collection::vec(pieces, 0..16).prop_map(|v| v.concat())
}

fn exercise(src: &str, ctx: &Context) {
    if let Ok(t) = Template::parse(src) {
        let _ = t.render(ctx);
        let _ = t.references();
    }
    if let Ok(e) = Expr::parse(src) {
        let _ = e.eval_bool(ctx);
        let _ = e.references();
    }
    if let Ok(c) = Condition::parse_str(src) {
        let _ = c.evaluate(ctx);
        let _ = c.evaluate_value(ctx);
    }
    let structured = [
        json!({"left": src, "operator": ">", "right": src}),
        json!({"type": "exists", "path": src}),
        json!({"type": "regex", "value": src, "pattern": src}),
        json!({"type": "threshold", "metric": src, "threshold": 1}),
    ];
    for v in structured {
        if let Ok(c) = Condition::from_json(&v) {
            let _ = c.evaluate(ctx);
            let _ = c.references();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(src in any::<String>(), ctx in context()) {
        exercise(&src, &ctx);
    }

    #[test]
    fn token_soup_never_panics(src in soup(), ctx in context()) {
        exercise(&src, &ctx);
    }

    #[test]
    fn jq_scripts_never_panic(script in jq_soup(), ctx in context()) {
        if let Ok(c) = Condition::from_json(&json!({"type": "custom", "script": script})) {
            let _ = c.evaluate(&ctx);
        }
    }

    #[test]
    fn arbitrary_condition_json_never_panics(v in json_value(), ctx in context()) {
        if let Ok(c) = Condition::from_json(&v) {
            let _ = c.evaluate(&ctx);
        }
        if value_references(&v).is_ok() {
            let _ = render_value(&v, &ctx);
        }
    }

    #[test]
    fn literal_templates_render_to_themselves(src in "[^$]{0,40}", ctx in context()) {
        let t = Template::parse(&src).expect("text without `$` always parses");
        prop_assert!(t.is_literal());
        prop_assert_eq!(t.render(&ctx), Ok(Value::String(src)));
    }

    #[test]
    fn inputs_render_with_their_type(v in json_value()) {
        let ctx = Context::new(json!({"v": v.clone()}), Value::Null, Value::Null);
        prop_assert_eq!(Template::parse("${inputs.v}").and_then(|t| t.render(&ctx)), Ok(v));
    }
}

/// The inputs a fuzz target (`fuzz/`, `scripts/fuzz`) failed on, checked in beside its seeds
/// as `fuzz/corpus/<target>/crash-*`.
fn fuzz_findings(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("crash-").then(|| {
                let bytes = std::fs::read(e.path()).expect("read a fuzz finding");
                (name, bytes)
            })
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no findings in {}", dir.display());
    found
}

/// Each jq script that hung, overflowed the stack or panicked under the `jq` target is now
/// refused at parse time or fails as a filter, promptly.
#[test]
fn fuzz_findings_jq_are_refused_or_fail() {
    let ctx = Context::new(json!({"n": 3}), Value::Null, Value::Null);
    for (name, bytes) in fuzz_findings("jq") {
        let script = std::str::from_utf8(&bytes).expect("jq findings are text");
        if let Ok(filter) = JqFilter::parse(script) {
            let got = filter.evaluate(&ctx);
            assert!(got.is_err(), "{name} `{script}` evaluated to {got:?}");
        }
    }
}

/// The wire result whose usage overflowed the engine's sums: it decodes, and summing it
/// saturates.
#[test]
fn fuzz_findings_wire_usage_saturates() {
    for (name, bytes) in fuzz_findings("wire") {
        let (selector, message) = bytes.split_first().expect("a selector byte");
        assert_eq!(
            *selector, 13,
            "{name}: a TaskResult (fuzz/fuzz_targets/wire_types.rs)"
        );
        let result: cascade_proto::TaskResult = cascade_proto::decode(message).expect(&name);
        let usage = result.usage.expect("the finding carries usage");
        let mut total = cascade_proto::Usage::default();
        total.add(&usage);
        total.add(&usage);
        assert_eq!(usage.tokens(), u64::MAX, "{name}");
        assert_eq!(total.tokens(), u64::MAX, "{name}");
    }
}
