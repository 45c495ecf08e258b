//! The state of one driven run, shared by the files that implement it: the
//! `Driver` (its methods live by concern in `run` (the loop), `log` (replay,
//! group commits), `dispatch` (the effect interpreter and sends), `sweep`,
//! `record`), the writes it queues and the futures the loop polls. Data
//! only, so that those files import this one and never each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cascade_core::engine::Effect;
use cascade_proto::wire::{BatchMessage, CancelRequest, Route, RunRecord};
use cascade_proto::{Attempt, Event, Millis, RunId, TaskId, TaskSpec};
use cascade_swarm::store::{Appended, StoreError};
use futures::future::BoxFuture;

use super::Shared;
use super::route::StageAgents;
use crate::driver::effects::RunCore;

/// An attempt as sent: when, and to which worker if to one only.
#[derive(Debug)]
pub(super) struct Sent {
    pub at: Millis,
    pub to: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("run {run}: {source}")]
    Store {
        run: RunId,
        #[source]
        source: StoreError,
    },
    #[error("run {0}: another coordinator wrote its event log; giving it up")]
    Superseded(RunId),
    #[error("run {0}: lease lost")]
    LeaseLost(RunId),
    #[error("run {0}: coordinator shutting down")]
    ShuttingDown(RunId),
}

impl RunError {
    /// Whether driving the run again (replaying its log) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Store { source, .. } => source.is_retryable(),
            RunError::Superseded(_) | RunError::LeaseLost(_) | RunError::ShuttingDown(_) => true,
        }
    }
}

impl Driver {
    /// Now on the run's clock.
    pub(super) fn now(&self) -> Millis {
        self.clock.now(&self.shared)
    }
}

pub(super) fn err(run: &RunId, source: StoreError) -> RunError {
    RunError::Store {
        run: run.clone(),
        source,
    }
}

/// One driven run: the run core both drivers share (engine, timers,
/// integrations), the log position, and what its effects write ([`Out`]).
/// Its methods live by concern: `log` (replay, group commits), `dispatch`
/// (routing and sends), `sweep`, `record` (record, report).
pub(super) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) run_id: RunId,
    pub(super) core: RunCore,
    /// The run's clock: what its log's times and its timers are on.
    pub(super) clock: super::lease::RunClock,
    pub(super) last_seq: u64,
    pub(super) cancel_sent: bool,
    /// Events waiting for the next log entry.
    pub(super) pending: Vec<Event>,
    pub(super) out: Out,
}

/// What the effects of a step write to: the run record, the routing
/// state and the sends they queue (the [`Effects`](crate::driver::effects::Effects)
/// of this driver).
pub(super) struct Out {
    pub(super) shared: Arc<Shared>,
    pub(super) run_id: RunId,
    pub(super) record: RunRecord,
    pub(super) record_dirty: bool,
    pub(super) agents: StageAgents,
    /// Where each task's last attempt failed (swarm-recovery avoids it).
    pub(super) failed_on: HashMap<TaskId, String>,
    /// When each attempt in flight was sent (for the sweeper).
    pub(super) dispatched: HashMap<(TaskId, Attempt), Sent>,
    /// Writes that effects of entries already logged still need.
    pub(super) sends: Vec<Send>,
    /// Tasks for team leads, gathered while effects are interpreted.
    pub(super) batches: BTreeMap<(String, String), Vec<TaskSpec>>,
    /// Stages whose tasks no live worker can take, with the skill: said in
    /// the record (`waiting`) until a worker offers it or the stage ends.
    pub(super) unserved: BTreeMap<String, String>,
    /// Stages found served since the last sweep: not looked at again per
    /// task (a fan-out would scan the registry once for each of its tasks).
    pub(super) served: std::collections::HashSet<String>,
}

/// One write an effect needs, in the order the effects came.
pub(super) enum Send {
    Task {
        spec: Box<TaskSpec>,
        subject: String,
        route: Route,
        msg_id: String,
    },
    Batch {
        lead: String,
        batch: BatchMessage,
    },
    Memory(Effect),
    Cancel(CancelRequest),
}

/// Most events taken into one log entry (group commit).
pub(super) const MAX_BATCH: usize = 1024;

/// The write in progress.
pub(super) type Io = BoxFuture<'static, Done>;

/// What a write came to.
pub(super) enum Done {
    Appended {
        result: Result<Appended, StoreError>,
        events: Vec<Event>,
        at: Millis,
    },
    Sent(Result<(), StoreError>),
}

/// A sweep under way: the attempts found lost, and when it started.
pub(super) type Sweep = BoxFuture<'static, (Vec<(TaskId, Attempt)>, Millis)>;
