//! Events in, effects out: the engine's vocabulary. Both are data, so the
//! driver can log events and replay them, and tests can assert on effects.

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
