//! Events in, effects out: the engine's vocabulary. Both are data, so the
//! driver can log events and replay them, and tests can assert on effects.

use cascade_proto::{Attempt, RunId, TaskId, TaskResult, TaskSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::MemoryScope;

/// Milliseconds since the Unix epoch, as given by the driver.
pub type Millis = u64;

/// Something that happened to a run. Past tense.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: RunId,
        inputs: Map<String, Value>,
        /// The memory visible at start (global memory, or a resumed run's).
        memory: Map<String, Value>,
    },
    TaskFinished(TaskResult),
    TimerFired(TimerId),
    CancelRequested {
        reason: String,
    },
}

/// Something the driver must do. Imperative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    DispatchTask(TaskSpec),
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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum TimerId {
    /// Dispatch the next attempt of a task after its backoff.
    Retry {
        task_id: TaskId,
        attempt: Attempt,
    },
    /// A stage ran past its `timeout` (generation: which run of the stage,
    /// since loops re-run stages).
    StageTimeout {
        stage: String,
        generation: u32,
    },
    /// Backstop for an attempt whose worker never reported.
    TaskTimeout {
        task_id: TaskId,
        attempt: Attempt,
    },
    RunTimeout,
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
