//! Property tests: no input, however malformed, makes the parsers or evaluators panic, and
//! rendering a literal template is the identity.

use cascade_eval::{Condition, Context, Expr, Template, render_value, value_references};
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
