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

/// An illegal or stale input: counted and reported, never a panic.
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
}
