//! Templates, expressions and conditions (string and structured forms):
//! parse, list references, evaluate against a small context.
//!
//! Input: UTF-8 text, tried as a template, an expression and a condition;
//! when it is JSON, also as a condition object and a templated value.
#![no_main]

use cascade_eval::{Condition, Expr, Template, render_value, value_references};
use libfuzzer_sys::fuzz_target;

include!("context.rs");

/// `JqFilter::evaluate` turns a panic inside jaq into an error (`catch_unwind`), as the
/// coordinator needs; libFuzzer's hook would abort on it all the same. A panic that
/// escapes the target still fails the run: libfuzzer-sys aborts on it.
fn quiet_caught_panics() {
    std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
}

fuzz_target!(init: quiet_caught_panics(), |data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = context();
    if let Ok(t) = Template::parse(src) {
        let _ = t.references();
        let _ = t.render(&ctx);
    }
    if let Ok(e) = Expr::parse(src) {
        let _ = e.references();
        let _ = e.eval(&ctx);
        let _ = e.eval_bool(&ctx);
    }
    if let Ok(c) = Condition::parse_str(src) {
        let _ = c.references();
        let _ = c.evaluate(&ctx);
        let _ = c.evaluate_value(&ctx);
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(src) {
        if let Ok(c) = Condition::from_json(&v) {
            let _ = c.references();
            let _ = c.evaluate(&ctx);
            let _ = c.evaluate_value(&ctx);
        }
        if value_references(&v).is_ok() {
            let _ = render_value(&v, &ctx);
        }
    }
});
