//! Run events: what happened to a run, in the order it happened. The
//! coordinator appends them to a run's log before acting on them, and a
//! coordinator that takes over a run replays them through the same engine.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Attempt, RunId, TaskId, TaskResult};

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

/// One entry of a run's event log: the events that arrived together and
/// the time the coordinator applied them (the engine reads no clock; replay
/// must give it the same time). Several events per entry is group commit:
/// whatever was ready is written at once, never waiting for more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub v: u32,
    pub at: Millis,
    pub events: Vec<Event>,
    /// An entry too large for a message lives in the object store under
    /// this name (an `EventRecord` itself); `events` is then empty.
    #[serde(default)]
    pub object: Option<String>,
}
