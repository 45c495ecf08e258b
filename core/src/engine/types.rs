//! Events in, effects out: the engine's vocabulary. Both are data, so the
//! driver can log events and replay them, and tests can assert on effects.
//! Notes (run and stage) are data too, rendered as text only in the results.

use cascade_eval::EvalError;
use cascade_proto::{Attempt, TaskId, TaskSpec};
pub use cascade_proto::{Event, Millis, TimerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::MemoryScope;

/// Something the driver must do. Imperative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    DispatchTask(Box<TaskSpec>),
    CancelTask {
        task_id: TaskId,
        attempt: Attempt,
    },
    StartTimer {
        timer: TimerId,
        at: Millis,
    },
    PutMemory {
        scope: MemoryScope,
        key: String,
        value: Value,
    },
    DeleteMemory {
        scope: MemoryScope,
        key: String,
    },
    /// Drop the run's cascade-scoped memory (`cleanup_on_exit`).
    ClearRunMemory,
    StageChanged {
        stage: String,
        status: StageStatus,
        message: Option<String>,
    },
    FinishRun {
        status: RunStatus,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    Running,
    Success,
    Failed,
    Skipped,
    Cancelled,
}

impl StageStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    /// Every failure was in a stage marked `continue_on_failure`.
    Partial,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }
}

/// Something the engine ignored or could not do, kept for the run's
/// results (`notes`): counted and reported, never a panic. Rendered with
/// `Display`, which is also its serialized form.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EngineNote {
    #[error("result for unknown task `{0}` ignored")]
    UnknownTask(TaskId),
    #[error("stale result for task `{0}` attempt {1} ignored (not the attempt in flight)")]
    StaleResult(TaskId, Attempt),
    #[error("event after the run finished ignored")]
    AfterFinish,
    #[error("run started twice; second start ignored")]
    StartedTwice,
    #[error("{0}")]
    IllegalTransition(IllegalTransition),
    /// The last note of a list that was cut: repeats of a note already
    /// kept, and notes past the cap, are counted here.
    #[error("{0} more note(s) dropped (repeats of a note above, or past the first {MAX_NOTES})")]
    Dropped(u64),
}

/// Why the engine failed a stage itself (not a task's failure): the stage's
/// `error` in the results, rendered with `Display`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StageError {
    /// A template or condition of the stage did not evaluate.
    #[error("stage `{stage}`: {what}: {source}")]
    Eval {
        stage: String,
        /// What was being evaluated: `inputs`, `condition`, `for_each`, ...
        what: String,
        #[source]
        source: EvalError,
    },
    #[error("stage `{stage}`: no branch selected and no default branch")]
    NoBranch { stage: String },
    /// The task to send is not in the engine's table (a bug, noted rather
    /// than a panic).
    #[error("task `{0}` vanished")]
    TaskVanished(TaskId),
    #[error(
        "budget exceeded (estimated): stage `{stage}` would send ~{tokens} tokens to `{model}` but {left} remain of {whose} token budget"
    )]
    TokenBudget {
        stage: String,
        model: String,
        tokens: u64,
        left: u64,
        /// `the stage's` or `the run's`.
        whose: &'static str,
    },
    #[error(
        "budget exceeded (estimated): stage `{stage}` would cost ~${cost:.4} on `{model}` but ${left:.4} remain of {whose} cost budget"
    )]
    CostBudget {
        stage: String,
        model: String,
        cost: f64,
        left: f64,
        /// `the stage's` or `the run's`.
        whose: &'static str,
    },
    #[error("memory holds {size} bytes, over max_memory_mb = {max_mb}")]
    MemoryFull { size: u64, max_mb: u64 },
}

/// What a stage did that its results should say (`stages.<id>.notes`),
/// each once. Rendered with `Display`, which is also its serialized form.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StageNote {
    #[error("declared output `{0}` is missing")]
    MissingOutput(String),
    #[error("stopped after max_iterations = {0} with the loop condition still true")]
    LoopCapped(u32),
    #[error("`{from}` ran out of context; switched to `{to}`, which has a larger one")]
    LargerContext { from: String, to: String },
    #[error("model-switch: `{from}` {cause}; switched to `{to}`")]
    ModelSwitched {
        from: String,
        cause: &'static str,
        to: String,
    },
    /// A strategy without its own executor ran as a plain retry.
    #[error("strategy `{strategy}` retried the attempt: {reason}")]
    RetriedInstead {
        strategy: &'static str,
        reason: &'static str,
    },
    #[error("fell back to skill `{to}` after `{from}` failed {failures} time(s)")]
    FellBack {
        to: String,
        from: String,
        failures: u32,
    },
    #[error("escalated after {0} failed attempt(s)")]
    Escalated(u32),
    #[error(
        "codex-auto-fix needs a fixer (`fix_strategy.fix_command`, `fixer` or the stage's `model`); retried instead"
    )]
    FixNeedsFixer,
    #[error("codex-auto-fix: `{skill}` failed ({error}); running the test-and-fix loop")]
    FixStarted { skill: String, error: String },
    #[error("codex-auto-fix: green after {iterations} iteration(s){}; retrying `{task}`", patch_text(.applied))]
    FixGreen {
        iterations: u64,
        applied: bool,
        task: TaskId,
    },
}

fn patch_text(applied: &bool) -> &'static str {
    if *applied {
        ", patch applied"
    } else {
        " (patch not applied)"
    }
}

impl Serialize for StageNote {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Notes kept per run; the rest are counted in [`EngineNote::Dropped`].
pub const MAX_NOTES: usize = 1000;

impl Serialize for EngineNote {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A phase change the state machine does not allow: refused, counted in
/// `stats.illegal_transitions` and noted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: illegal transition {from} -> {to} ignored")]
pub struct IllegalTransition {
    pub what: Subject,
    pub from: &'static str,
    pub to: &'static str,
}

/// What an [`IllegalTransition`] tried to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Stage(String),
    Task(TaskId),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stage(id) => write!(f, "stage `{id}`"),
            Self::Task(id) => write!(f, "task `{id}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stage notes read exactly as the strings they replaced.
    #[test]
    fn stage_notes_render_as_before() {
        let s = String::from;
        for (note, text) in [
            (
                StageNote::MissingOutput(s("summary")),
                "declared output `summary` is missing",
            ),
            (
                StageNote::LoopCapped(3),
                "stopped after max_iterations = 3 with the loop condition still true",
            ),
            (
                StageNote::LargerContext {
                    from: s("small"),
                    to: s("big"),
                },
                "`small` ran out of context; switched to `big`, which has a larger one",
            ),
            (
                StageNote::ModelSwitched {
                    from: s("a"),
                    cause: "rate_limited",
                    to: s("b"),
                },
                "model-switch: `a` rate_limited; switched to `b`",
            ),
            (
                StageNote::RetriedInstead {
                    strategy: "swarm-recovery",
                    reason: "why",
                },
                "strategy `swarm-recovery` retried the attempt: why",
            ),
            (
                StageNote::FellBack {
                    to: s("echo"),
                    from: s("fail"),
                    failures: 2,
                },
                "fell back to skill `echo` after `fail` failed 2 time(s)",
            ),
            (
                StageNote::Escalated(4),
                "escalated after 4 failed attempt(s)",
            ),
            (
                StageNote::FixNeedsFixer,
                "codex-auto-fix needs a fixer (`fix_strategy.fix_command`, `fixer` or the stage's `model`); retried instead",
            ),
            (
                StageNote::FixStarted {
                    skill: s("test"),
                    error: s("exit 1"),
                },
                "codex-auto-fix: `test` failed (exit 1); running the test-and-fix loop",
            ),
            (
                StageNote::FixGreen {
                    iterations: 2,
                    applied: true,
                    task: TaskId::new("b#0"),
                },
                "codex-auto-fix: green after 2 iteration(s), patch applied; retrying `b#0`",
            ),
            (
                StageNote::FixGreen {
                    iterations: 1,
                    applied: false,
                    task: TaskId::new("b#0"),
                },
                "codex-auto-fix: green after 1 iteration(s) (patch not applied); retrying `b#0`",
            ),
        ] {
            assert_eq!(note.to_string(), text);
            assert_eq!(serde_json::to_value(&note).expect("a string"), text);
        }
    }
}
