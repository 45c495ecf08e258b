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
    /// The run's context (inputs, memory, earlier stages' outputs) for a
    /// model skill's prompt template; sent only for AI stages.
    #[serde(default)]
    pub context: Option<Value>,
    /// What this attempt may still spend; a model skill refuses to call a
    /// model whose estimated cost would pass it.
    #[serde(default)]
    pub budget: Option<TaskBudget>,
    /// The cascade's `hooks.pre_task` / `post_task` commands, run by
    /// whoever runs the attempt (around the skill, in `workdir`).
    #[serde(default)]
    pub hooks: Option<TaskHooks>,
}

/// Shell commands run around every attempt of a cascade's tasks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskHooks {
    /// Run before the skill; one that fails fails the attempt (retryable).
    #[serde(default)]
    pub pre_task: Vec<TaskHook>,
    /// Run after the skill, whatever its outcome; a failure is only noted.
    #[serde(default)]
    pub post_task: Vec<TaskHook>,
}

impl TaskHooks {
    pub fn is_empty(&self) -> bool {
        self.pre_task.is_empty() && self.post_task.is_empty()
    }
}

/// One hook: a command for `sh -c`, with the attempt as JSON on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskHook {
    pub run: String,
    /// Killed (with its process group) past this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Tokens and money an attempt may still spend (the stage's and the
/// run's budgets minus what is already spent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskBudget {
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
}

/// What model calls cost: tokens and money, summed over an attempt's calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// US dollars, from the models file's prices.
    #[serde(default)]
    pub cost_usd: f64,
    /// Model calls made.
    #[serde(default)]
    pub calls: u32,
}

impl Usage {
    /// Input and output tokens; saturates (a worker's report is not trusted
    /// to be small: a wrapped sum would pass any budget).
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Adds `other`'s counts, saturating like [`Usage::tokens`].
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
        self.calls = self.calls.saturating_add(other.calls);
    }

    pub fn is_empty(&self) -> bool {
        self.calls == 0 && self.tokens() == 0 && self.cost_usd == 0.0
    }
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
    /// Model usage of the attempt (success or failure), if it called any.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The model that answered (after any switch inside the worker).
    #[serde(default)]
    pub model: Option<String>,
    /// Things the results should say that are not a failure (a `post_task`
    /// hook that failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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
    /// A finer cause, for strategies that react to it (model switch on a
    /// context overflow, waiting out a rate limit).
    #[serde(default)]
    pub class: Option<FailureClass>,
    /// The provider asked to wait this long before trying again.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Structured detail kept in the results (the sandbox loop's fix
    /// history, an escalation record).
    #[serde(default)]
    pub details: Option<Box<Value>>,
}

/// Why a model call (or the sandbox loop) failed, beyond retry/terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// 429: too many requests.
    RateLimited,
    /// The provider is overloaded (529, 503 with overload).
    Overloaded,
    /// Another 5xx or a transport error.
    Server,
    /// The prompt does not fit the model's context window.
    ContextOverflow,
    /// The key is missing or refused.
    Auth,
    /// The model declined to answer.
    Refusal,
    /// The answer did not parse as the output the skill asked for.
    Malformed,
    /// The worker's circuit breaker for the provider is open.
    CircuitOpen,
    /// The model cannot be served here (no key, no CLI, unknown name).
    Unavailable,
    /// A token or cost budget would be or was exceeded.
    Budget,
    /// The sandbox loop ran out of iterations or stalled.
    Exhausted,
    /// A class this build does not know (sent by a newer peer).
    #[serde(other)]
    Other,
}

impl FailureClass {
    /// Failures that another model may not repeat: `model-switch` moves on.
    pub fn switches_model(self) -> bool {
        matches!(
            self,
            Self::ContextOverflow
                | Self::Refusal
                | Self::Malformed
                | Self::CircuitOpen
                | Self::Unavailable
                | Self::Overloaded
                | Self::RateLimited
                | Self::Server
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server",
            Self::ContextOverflow => "context_overflow",
            Self::Auth => "auth",
            Self::Refusal => "refusal",
            Self::Malformed => "malformed",
            Self::CircuitOpen => "circuit_open",
            Self::Unavailable => "unavailable",
            Self::Budget => "budget",
            Self::Exhausted => "exhausted",
            Self::Other => "other",
        }
    }
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
            class: None,
            retry_after_ms: None,
            details: None,
        }
    }

    pub fn with_class(mut self, class: FailureClass) -> Self {
        self.class = Some(class);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing the wire decoder (`fuzz/`, target `wire`): a result whose usage
    /// says `u64::MAX` input tokens overflowed the sum (a panic in debug builds, a wrapped
    /// total that passes any budget in release).
    #[test]
    fn usage_sums_saturate() {
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: 20,
            cost_usd: 0.0,
            calls: u32::MAX,
        };
        assert_eq!(huge.tokens(), u64::MAX);
        let mut total = Usage::default();
        total.add(&huge);
        total.add(&huge);
        assert_eq!(total.input_tokens, u64::MAX);
        assert_eq!(total.output_tokens, 40);
        assert_eq!(total.calls, u32::MAX);
        assert_eq!(total.tokens(), u64::MAX);
    }
}
