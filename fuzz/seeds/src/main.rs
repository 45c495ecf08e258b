//! Writes the `wire` target's seed corpus: one valid message of each wire
//! type (written as JSON here, checked by decoding it into the type, then
//! MessagePack-encoded as the swarm sends it), prefixed by its selector byte.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml -p cascade-fuzz-seeds` from the
//! repository root; rerun when a wire type gains a field.

use std::path::Path;

use serde_json::{Value, json};

include!("../../fuzz_targets/wire_types.rs");

fn task_spec() -> Value {
    json!({
        "run_id": "0190a0f2-7c3e-7000-8000-000000000001", "task_id": "build#0",
        "stage_id": "build", "skill": "echo", "attempt": 1,
        "inputs": {"path": "src", "n": 3, "list": [1, "a", null, true, 1.5]},
        "timeout_ms": 60000, "model": "claude", "workdir": "/tmp/w",
        "context": {"inputs": {"n": 3}, "memory": {}},
        "budget": {"max_tokens": 1000, "max_cost_usd": 0.5},
        "hooks": {"pre_task": [{"run": "true", "timeout_ms": 1000}], "post_task": []},
    })
}

fn task_result(failed: bool) -> Value {
    let outcome = if failed {
        json!({"status": "failed", "kind": "retryable", "message": "exit 1", "exit_code": 1,
               "stderr_tail": "boom", "class": "rate_limited", "retry_after_ms": 5,
               "details": {"fixes": []}})
    } else {
        json!({"status": "succeeded", "outputs": {"ok": true, "score": 85}})
    };
    json!({
        "task_id": "build#0", "attempt": 2, "worker": "w1", "duration_ms": 12,
        "outcome": outcome,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cost_usd": 0.01, "calls": 1},
        "model": "claude", "notes": ["post_task hook failed"],
    })
}

/// (file name, selector, the message as JSON)
fn samples() -> Vec<(&'static str, u8, Value)> {
    let run = "0190a0f2-7c3e-7000-8000-000000000001";
    vec![
        (
            "submission",
            0,
            json!({
                "v": 1, "run_id": run, "idempotency_key": "k1", "main": "main.yaml",
                "files": {"main.yaml": "cascade: x\nstages:\n  - stage: a\n    skill: echo\n"},
                "inputs": {"n": 1}, "submitted_at": 1_700_000_000_000u64, "submitted_by": "me",
            }),
        ),
        (
            "run_record",
            1,
            json!({
                "v": 1, "run_id": run, "cascade": "x", "state": "running",
                "created_at": 1, "updated_at": 2, "owner": "c1",
                "stages": {"a": "success", "b": "pending"}, "error": null,
                "cancel_requested": "user",
            }),
        ),
        (
            "lease",
            2,
            json!({"v": 1, "owner": "c1", "expires_at": 1_700_000_010_000u64}),
        ),
        (
            "worker_info",
            3,
            json!({
                "v": 1, "name": "w1", "skills": ["echo", "lint"], "labels": {"zone": "a"},
                "role": "lead", "concurrency": 4, "in_flight": 1, "draining": false,
                "started_at": 1, "heartbeat_at": 2, "completed": 10, "failed": 1,
                "version": "0.1.0", "models": ["claude"], "capabilities": ["sandbox:bwrap"],
            }),
        ),
        (
            "task_message_mesh",
            4,
            json!({
                "v": 1, "spec": task_spec(), "route": {"route": "mesh"}, "dispatched_at": 3,
            }),
        ),
        (
            "task_message_lead",
            4,
            json!({
                "v": 1, "spec": task_spec(), "route": {"route": "via_lead", "lead": "l", "batch": "b1"},
                "dispatched_at": 3, "inputs_ref": "obj-1",
            }),
        ),
        (
            "batch_message",
            5,
            json!({
                "v": 1, "batch": "b1", "run_id": run, "tasks": [task_spec()], "dispatched_at": 4,
            }),
        ),
        (
            "claim",
            6,
            json!({"v": 1, "worker": "w1", "delivered": 2, "at": 5, "stream_seq": 77}),
        ),
        (
            "result_record_ok",
            7,
            json!({
                "v": 1, "run_id": run, "result": task_result(false),
                "route": {"route": "direct", "worker": "w1"},
            }),
        ),
        (
            "result_record_failed",
            7,
            json!({
                "v": 1, "run_id": run, "result": task_result(true), "outputs_ref": "obj-2",
            }),
        ),
        (
            "cancel_request",
            8,
            json!({"v": 1, "run_id": run, "task_id": "build#0", "attempt": 1}),
        ),
        (
            "batch_report",
            9,
            json!({
                "v": 1, "batch": "b1", "run_id": run, "lead": "l", "assigned": {"build#0": "w1"},
                "succeeded": 1, "failed": 0, "at": 6,
            }),
        ),
        (
            "dead_letter",
            10,
            json!({
                "v": 1, "stream_seq": 9, "subject": "cascade.tasks.echo", "deliveries": 5,
                "task": task_spec(), "raw": [193, 255, 0], "reason": "max deliveries", "at": 7,
            }),
        ),
        (
            "event_record",
            11,
            json!({
                "v": 1, "at": 8, "events": [
                    {"event": "run_started", "run_id": run, "inputs": {"n": 1}, "memory": {}},
                    {"event": "task_finished", "task_id": "build#0", "attempt": 1,
                     "outcome": {"status": "succeeded", "outputs": {}}},
                    {"event": "timer_fired", "timer": "retry", "task_id": "build#0", "attempt": 2},
                    {"event": "timer_fired", "timer": "stage_timeout", "stage": "a", "generation": 1},
                    {"event": "timer_fired", "timer": "run_timeout"},
                    {"event": "cancel_requested", "reason": "user"},
                ],
            }),
        ),
        ("task_spec", 12, task_spec()),
        ("task_result", 13, task_result(true)),
        (
            "value",
            14,
            json!({"a": [1, -2, 3.5, "x", null, true, {"b": {}}]}),
        ),
    ]
}

/// The sample as the swarm encodes it, after checking that it is a `T`.
fn encode_as<T: serde::Serialize + serde::de::DeserializeOwned>(name: &str, v: &Value) -> Vec<u8> {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("seed `{name}` is not its type: {e}"));
    cascade_proto::encode(&typed).expect("a wire type encodes")
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/wire");
    std::fs::create_dir_all(&dir).expect("create the corpus folder");
    for (name, selector, value) in samples() {
        assert!(selector < WIRE_TYPES);
        let mut bytes = vec![selector];
        macro_rules! encode_if {
            ($i:expr, $t:ty) => {
                if selector == $i {
                    bytes.extend(encode_as::<$t>(name, &value));
                }
            };
        }
        wire_types!(encode_if);
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).expect("write a seed");
        println!("{}", path.display());
    }
}
