//! A task (what a worker runs) and its result (what it reports).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Attempt, RunId, SkillName, StageId, TaskId};

/// One attempt of one task, as handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub run_id: RunId,
    pub task_id: TaskId,
    pub stage_id: StageId,
    pub skill: SkillName,
    pub attempt: Attempt,
    /// The task's inputs with every `${...}` already resolved: a JSON object.
    pub inputs: Value,
    /// Hard limit for this attempt in milliseconds; the worker kills the
    /// skill's process when it passes.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The model chosen for this task by the router, if the stage names one.
    #[serde(default)]
    pub model: Option<String>,
    /// Directory the skill runs in (the cascade file's directory).
    #[serde(default)]
    pub workdir: Option<String>,
}

/// How a task attempt ended, as reported by the worker that ran it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: TaskId,
    pub attempt: Attempt,
    /// Who ran it (a worker name; `local` in the embedded mode).
    #[serde(default)]
    pub worker: String,
    /// Wall time of the attempt on the worker.
    #[serde(default)]
    pub duration_ms: u64,
    pub outcome: TaskOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TaskOutcome {
    Succeeded { outputs: Value },
    Failed(Failure),
}

/// A failure as data: classified where it happened, carried across the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The last lines of the skill's stderr (bounded).
    #[serde(default)]
    pub stderr_tail: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Might succeed if tried again (non-zero exit, crash, transient error).
    Retryable,
    /// Will fail the same way every time (unknown skill, bad input): no retry.
    Terminal,
    /// The attempt ran past its time limit and was killed.
    Timeout,
    /// The attempt was cancelled (run cancelled, stage timed out, shutdown).
    Cancelled,
}

impl Failure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Retryable, message)
    }
    pub fn terminal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Terminal, message)
    }
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            exit_code: None,
            stderr_tail: None,
        }
    }
}
