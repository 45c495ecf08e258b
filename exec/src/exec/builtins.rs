//! The built-in skills, run inside the worker process: `noop`, `sleep`, `echo`, `fail`.
//!
//! They exist for tests, demos and cascade plumbing (`echo` forwards values, `fail` with
//! `times` exercises retries). `sleep` is the only one that waits, and it honours the
//! attempt's timeout and cancellation like a process would.

use std::time::Duration;

use cascade_proto::{Failure, TaskSpec};
use serde_json::{Map, Number, Value, json};

use super::Limit;
use crate::skills::Builtin;

pub(super) async fn run(
    builtin: Builtin,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
    limit: &Limit<'_>,
) -> Result<Value, Failure> {
    match builtin {
        Builtin::Noop => Ok(json!({})),
        Builtin::Echo => Ok(Value::Object(inputs.clone())),
        Builtin::Sleep => {
            let seconds = number_input(inputs, "sleep", "seconds")?;
            let duration = seconds
                .as_f64()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| bad_input("sleep", "seconds", "is out of range"))?;
            tokio::select! {
                () = tokio::time::sleep(duration) => Ok(json!({ "slept": seconds })),
                stopped = limit.reached() => Err(limit.failure(stopped)),
            }
        }
        Builtin::Fail => fail(task, inputs),
        // Run by the executor itself (they need its model client).
        Builtin::Judge | Builtin::Sandbox => Err(Failure::terminal(format!(
            "skill `{}` runs in the executor",
            task.skill
        ))),
    }
}

fn fail(task: &TaskSpec, inputs: &Map<String, Value>) -> Result<Value, Failure> {
    let message = match inputs.get("message") {
        None | Some(Value::Null) => "failed on purpose".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let times = match inputs.get("times") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let n = number_input(inputs, "fail", "times")?;
            Some(
                n.as_u64()
                    .ok_or_else(|| bad_input("fail", "times", "must be an integer"))?,
            )
        }
    };
    match times {
        Some(n) if u64::from(task.attempt.0) > n => Ok(json!({ "attempt": task.attempt.0 })),
        _ => Err(Failure::retryable(message)),
    }
}

/// A non-negative number given as a JSON number or a numeric string.
fn number_input(inputs: &Map<String, Value>, skill: &str, name: &str) -> Result<Number, Failure> {
    let n = match inputs.get(name) {
        None | Some(Value::Null) => return Err(bad_input(skill, name, "is missing")),
        Some(Value::Number(n)) => n.clone(),
        Some(Value::String(s)) => s
            .trim()
            .parse::<Number>()
            .map_err(|_| bad_input(skill, name, &format!("is not a number: {s:?}")))?,
        Some(other) => return Err(bad_input(skill, name, &format!("is not a number: {other}"))),
    };
    if n.as_f64().is_some_and(|f| f.is_sign_negative()) {
        return Err(bad_input(
            skill,
            name,
            &format!("must not be negative, got {n}"),
        ));
    }
    Ok(n)
}

fn bad_input(skill: &str, input: &str, why: &str) -> Failure {
    Failure::terminal(format!("skill `{skill}`: input `{input}` {why}"))
}
