//! Running one attempt of one task.
//!
//! [`Executor::execute`] looks the task's skill up in the registry, runs it and always
//! returns a [`TaskResult`]: every problem (unknown skill, bad input, spawn error, non-zero
//! exit, timeout, cancellation) becomes a classified [`Failure`], never a panic or an `Err`.
//!
//! ```text
//!   TaskSpec ─► lookup ─┬─ builtin ──► builtins::run   (in-process)
//!                       └─ file ─────► process::run    (child in its own process group)
//!                                            │
//!            timeout (min of task and skill) ┤  cancel token
//!                                            ▼
//!                          killpg(SIGKILL) ─► Failed(Timeout | Cancelled)
//! ```
//!
//! Classification: unknown skill, bad input and spawn errors are `Terminal` (retrying cannot
//! help); non-zero exits, signals and `fail` are `Retryable`.

mod ai;
mod builtins;
mod process;

pub use process::{MAX_ENV_INPUT_BYTES, MAX_STDOUT_BYTES};

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_proto::{Failure, FailureKind, TaskOutcome, TaskResult, TaskSpec};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::model::{ModelCatalog, ModelClient};
use crate::skills::{Builtin, SkillDef, SkillKind, SkillRegistry};

/// Runs task attempts against a shared skill registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    registry: Arc<SkillRegistry>,
    worker_name: String,
    models: ModelClient,
}

impl Executor {
    /// An executor whose model skills use the built-in models file.
    pub fn new(registry: Arc<SkillRegistry>, worker_name: impl Into<String>) -> Self {
        Executor {
            registry,
            worker_name: worker_name.into(),
            models: ModelClient::new(Arc::new(ModelCatalog::builtin())),
        }
    }

    /// Model skills call models through this client (its models file, keys,
    /// rate limits and circuit breakers).
    pub fn with_models(mut self, client: ModelClient) -> Self {
        self.models = client;
        self
    }

    pub fn registry(&self) -> &SkillRegistry {
        &self.registry
    }

    pub fn models(&self) -> &ModelClient {
        &self.models
    }

    /// Runs one attempt. Never panics; every problem becomes a Failed outcome.
    pub async fn execute(&self, task: &TaskSpec, cancel: &CancellationToken) -> TaskResult {
        let started = Instant::now();
        let (result, usage, model) = self.run(task, cancel).await;
        let outcome = match result {
            Ok(outputs) => TaskOutcome::Succeeded { outputs },
            Err(failure) => TaskOutcome::Failed(failure),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let TaskOutcome::Failed(f) = &outcome {
            tracing::debug!(
                run_id = %task.run_id, stage = %task.stage_id, task_id = %task.task_id,
                attempt = %task.attempt, skill = %task.skill, kind = ?f.kind,
                "attempt failed: {}", f.message
            );
        }
        TaskResult {
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            worker: self.worker_name.clone(),
            duration_ms,
            outcome,
            model,
            usage,
        }
    }

    async fn run(&self, task: &TaskSpec, cancel: &CancellationToken) -> ai::AiOutcome {
        let name = task.skill.as_str();
        let Some(skill) = self.registry.get(name) else {
            return (
                Err(Failure::terminal(format!("unknown skill `{name}`"))),
                None,
                None,
            );
        };
        let inputs = match inputs_object(task) {
            Ok(i) => i,
            Err(f) => return (Err(f), None, None),
        };
        if cancel.is_cancelled() {
            return (Err(cancelled(name)), None, None);
        }
        let limit = Limit {
            timeout: effective_timeout(task, skill),
            cancel,
            skill: name,
        };
        match &skill.kind {
            SkillKind::Builtin(Builtin::Judge) => {
                self.bounded(&limit, ai::judge(&self.models, task, &inputs, cancel))
                    .await
            }
            SkillKind::Builtin(Builtin::Sandbox) => {
                let run = ai::sandbox(&self.registry, &self.models, task, &inputs, cancel);
                self.bounded(&limit, run).await
            }
            SkillKind::Builtin(b) => (builtins::run(*b, task, &inputs, &limit).await, None, None),
            SkillKind::Shell { .. } | SkillKind::Command { .. } => {
                (process::run(skill, task, &inputs, &limit).await, None, None)
            }
            SkillKind::Model(spec) => {
                let run =
                    crate::model::skill::run(skill, spec, task, &inputs, &self.models, cancel);
                self.bounded(&limit, run).await
            }
        }
    }

    /// Runs an in-process AI skill under the attempt's time limit: at the
    /// limit (or on cancellation) the child token stops the model call,
    /// CLI agent or sandbox loop, and the attempt fails as such.
    async fn bounded(
        &self,
        limit: &Limit<'_>,
        run: impl std::future::Future<Output = ai::AiOutcome>,
    ) -> ai::AiOutcome {
        tokio::select! {
            out = run => out,
            stopped = limit.reached() => (Err(limit.failure(stopped)), None, None),
        }
    }
}

/// What may end an attempt early: its time limit and its cancellation token.
struct Limit<'a> {
    timeout: Option<Duration>,
    cancel: &'a CancellationToken,
    skill: &'a str,
}

/// Why an attempt was stopped before it finished.
enum Stopped {
    TimedOut(Duration),
    Cancelled,
}

impl Limit<'_> {
    /// Resolves when the attempt must stop.
    async fn reached(&self) -> Stopped {
        let deadline = async {
            match self.timeout {
                Some(t) => {
                    tokio::time::sleep(t).await;
                    t
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            t = deadline => Stopped::TimedOut(t),
            () = self.cancel.cancelled() => Stopped::Cancelled,
        }
    }

    fn failure(&self, stopped: Stopped) -> Failure {
        match stopped {
            Stopped::TimedOut(t) => Failure::new(
                FailureKind::Timeout,
                format!(
                    "skill `{}` timed out after {:.1}s",
                    self.skill,
                    t.as_secs_f64()
                ),
            ),
            Stopped::Cancelled => cancelled(self.skill),
        }
    }
}

fn cancelled(skill: &str) -> Failure {
    Failure::new(
        FailureKind::Cancelled,
        format!("skill `{skill}` was cancelled"),
    )
}

/// The smaller of the task's and the skill's time limits, if either is set.
fn effective_timeout(task: &TaskSpec, skill: &SkillDef) -> Option<Duration> {
    let from_task = task.timeout_ms.map(Duration::from_millis);
    match (from_task, skill.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The task's inputs as an object; `null` counts as no inputs.
fn inputs_object(task: &TaskSpec) -> Result<Map<String, Value>, Failure> {
    match &task.inputs {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        other => Err(Failure::terminal(format!(
            "skill `{}`: inputs must be a JSON object, got {}",
            task.skill,
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skills::SkillKind;
    use std::collections::BTreeMap;

    fn task(timeout_ms: Option<u64>) -> TaskSpec {
        TaskSpec {
            run_id: "r".into(),
            task_id: "t".into(),
            stage_id: "s".into(),
            skill: "x".into(),
            attempt: cascade_proto::Attempt::FIRST,
            inputs: Value::Null,
            timeout_ms,
            model: None,
            workdir: None,
            context: None,
            budget: None,
        }
    }

    fn skill(timeout: Option<Duration>) -> SkillDef {
        SkillDef {
            name: "x".into(),
            description: None,
            kind: SkillKind::Shell { run: "true".into() },
            timeout,
            env: BTreeMap::new(),
            inputs: vec![],
            outputs: vec![],
            source: None,
        }
    }

    #[test]
    fn timeout_is_the_smaller_of_task_and_skill() {
        let s = |x| Some(Duration::from_secs(x));
        let table = [
            (None, None, None),
            (Some(5_000), None, s(5)),
            (None, s(7), s(7)),
            (Some(5_000), s(7), s(5)),
            (Some(9_000), s(7), s(7)),
        ];
        for (t, k, want) in table {
            assert_eq!(effective_timeout(&task(t), &skill(k)), want, "{t:?} {k:?}");
        }
    }

    #[test]
    fn inputs_must_be_an_object() {
        let mut t = task(None);
        assert!(inputs_object(&t).expect("null is empty").is_empty());
        t.inputs = serde_json::json!([1]);
        let f = inputs_object(&t).expect_err("array refused");
        assert_eq!(f.kind, FailureKind::Terminal);
        assert!(f.message.contains("an array"), "{}", f.message);
    }
}
