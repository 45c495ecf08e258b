// Shared by the eval and jq targets (included with `include!`): one small
// context with every JSON type, nested stage outputs and a loop variable.

fn context() -> cascade_eval::Context {
    let mut ctx = cascade_eval::Context::new(
        serde_json::json!({
            "n": 3, "s": "text", "f": 1.5, "neg": -7, "big": u64::MAX,
            "list": [1, "two", null, true, {"k": [3]}], "empty": {}, "none": null,
            "files": ["a.rs", "b.py"], "flag": false,
        }),
        serde_json::json!({"notes": {"a": "x"}, "count": 2}),
        serde_json::json!({"name": "fuzz", "version": "1"}),
    );
    ctx.set_stage_output(
        "analyze",
        serde_json::json!({"score": 85, "verdict": "pass", "issues": [{"sev": "high"}]}),
    );
    ctx.set_stage_output("build-x", serde_json::json!({"ok": true, "out": "log\nline"}));
    ctx.set_var("item", serde_json::json!({"path": "src/main.rs", "i": 0}));
    ctx
}
