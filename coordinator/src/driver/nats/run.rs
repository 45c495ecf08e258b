//! Driving one run over NATS: the engine, fed from the run's event log and
//! the results bucket, its effects performed on JetStream.
//!
//! ```text
//!  start: replay cascade.event.<run> through the engine (same effects,
//!         dispatches not re-sent unless the task has no result) ─┐
//!  loop:  results watch ─┐                                        │
//!         timers ────────┼─▶ events ─▶ append to the log (expected ▼
//!         cancel flag ───┘   sequence: single writer) ─▶ engine.apply
//!                                        ─▶ effects: publish tasks, KV memory,
//!                                           run record, report
//! ```
//! The log entry is written before the engine acts on it, so a coordinator
//! killed at any point is replaced by one that replays the same decisions
//! and re-sends only what may not have been sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cascade_core::engine::Engine;
use cascade_core::models::ModelCatalog;
use cascade_core::plan::{self, Plan, PlanOptions};
use cascade_core::spec::Operations;
use cascade_proto::wire::{ResultRecord, RunRecord, RunState, Submission};
use cascade_proto::{Event, Millis, PROTOCOL_VERSION, RunId, TaskOutcome};
use cascade_swarm::store::{LeaseHeld, StoreError};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::route::StageAgents;
use super::state::{Driver, Io, MAX_BATCH, Out, RunError, Sweep, err};
use crate::driver::effects::RunCore;
use crate::integrations::{Env, RunIntegrations, RunSetup};

/// The run record is rewritten at most this often while the run goes.
const RECORD_FLUSH: Duration = Duration::from_millis(100);

fn watch_ended(run: &RunId, what: &str) -> RunError {
    err(
        run,
        StoreError::WatchEnded {
            what: what.to_owned(),
        },
    )
}

/// Why a run can never run (it fails at once, visibly).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no submission is stored for this run")]
    NoSubmission,
    #[error("the stored submission does not decode: {0}")]
    Undecodable(#[source] StoreError),
    /// Every problem, rendered with its file, line and column.
    #[error("{}", .0.join("\n"))]
    Load(Vec<String>),
    #[error("the cascade did not load")]
    NoCascade,
    #[error("{}", .0.join("\n"))]
    Plan(Vec<String>),
}

/// Loads a submission into a plan (no skill check: workers bring skills).
pub(crate) fn plan_of(
    sub: &Submission,
    models: &Arc<ModelCatalog>,
) -> Result<(Plan, Operations), PlanError> {
    let loaded = cascade_core::spec::load_bundle(&sub.main, &sub.files);
    if loaded.has_errors() {
        return Err(PlanError::Load(loaded.render_diagnostics()));
    }
    let cascade = loaded.cascade.ok_or(PlanError::NoCascade)?;
    let plan = plan::compile(
        &cascade,
        &PlanOptions {
            skills: None,
            inputs: Some(sub.inputs.clone()),
            models: Some(models.clone()),
            model_skills: Default::default(),
        },
    );
    if plan.has_errors() {
        let errs: Vec<String> = plan
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        return Err(PlanError::Plan(errs));
    }
    Ok((plan, cascade.operations))
}

/// Drives a run whose lease is held; `sent`: when the write that took the
/// lease was sent (the lease is ours for a TTL from then, unless renewed).
pub async fn drive(
    shared: Arc<Shared>,
    lease: LeaseHeld,
    sent: tokio::time::Instant,
    offset: i64,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let run_id = lease.run.clone();
    let clock = super::lease::RunClock::new(offset);
    // Renewed from now on, whatever the driver is busy with (a long replay
    // must not let the lease lapse).
    let lease = super::lease::Keeper::start(shared.clone(), lease, sent, clock.clone());
    let sub = match load_submission(&shared, &run_id).await? {
        Ok(sub) => sub,
        Err(msg) => {
            // A run record without its submission can never run: say so
            // instead of retrying for ever.
            let mut record = RunRecord {
                v: PROTOCOL_VERSION,
                run_id: run_id.clone(),
                cascade: String::new(),
                state: RunState::Failed,
                created_at: shared.now(),
                updated_at: shared.now(),
                owner: Some(shared.opts.name.clone()),
                stages: BTreeMap::new(),
                error: None,
                cancel_requested: None,
                waiting: Default::default(),
                degraded: None,
            };
            if let Ok(Some(r)) = shared.stores.runs.get(&run_id).await {
                record = r;
            }
            fail_unplannable(&shared, &run_id, record, msg).await;
            lease.finish(true).await;
            return Ok(());
        }
    };
    let record = load_record(&shared, &run_id, &sub).await;
    let (plan, operations) = match plan_of(&sub, &shared.opts.models) {
        Ok((p, o)) => (Arc::new(p), o),
        Err(msg) => {
            fail_unplannable(&shared, &run_id, record, msg).await;
            lease.finish(true).await;
            return Ok(());
        }
    };
    // `on_run_end` hooks run where this coordinator runs: the submitter's
    // directory is not here.
    let ops = RunIntegrations::new(
        plan.clone(),
        RunSetup {
            operations,
            run_id: run_id.clone(),
            inputs: sub.inputs.clone(),
            dir: std::env::current_dir().unwrap_or_default(),
            env: Env::process(),
            commands: shared.opts.allow_submitted_commands,
        },
    );
    let mut d = Driver {
        shared: shared.clone(),
        run_id: run_id.clone(),
        core: RunCore::new(Engine::new(plan), ops),
        clock,
        last_seq: 0,
        cancel_sent: false,
        pending: Vec::new(),
        out: Out {
            shared: shared.clone(),
            run_id: run_id.clone(),
            record,
            record_dirty: true,
            agents: StageAgents::default(),
            failed_on: HashMap::new(),
            dispatched: HashMap::new(),
            sends: Vec::new(),
            batches: BTreeMap::new(),
            unserved: BTreeMap::new(),
            served: Default::default(),
        },
    };
    d.out.record.owner = Some(shared.opts.name.clone());
    d.out.record.state = RunState::Running;
    let result = async {
        let replayed = d.replay().await?;
        if replayed == 0 {
            crate::driver::metrics::run_started();
            let scope = d.core.engine.plan().memory.scope;
            let memory = super::memory::load(&shared, &run_id, scope)
                .await
                .map_err(|e| err(&run_id, e))?;
            let start = Event::RunStarted {
                run_id: run_id.clone(),
                inputs: sub.inputs.clone(),
                memory,
            };
            // Logged before it is applied, like every event; the
            // integrations see the start now (it has no history).
            d.core.started();
            d.pending.push(start);
        } else {
            d.resend_in_flight().await?;
        }
        d.settle().await?;
        // The log took our writes: the broker is back (or never left).
        let was = shared
            .degraded
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&run_id));
        if d.out.record.degraded.take().is_some() || was.is_some() {
            tracing::info!(run_id = %run_id, "the broker takes writes again: the run goes on");
            d.out.record_dirty = true;
            d.flush_record().await;
        }
        d.run_loop(&lease, &cancel).await
    }
    .await;
    match result {
        Ok(()) => {
            d.finish().await;
            lease.finish(true).await;
            Ok(())
        }
        // Shutting down: hand the run over at once instead of after a TTL.
        Err(RunError::ShuttingDown(id)) => {
            lease.finish(true).await;
            Err(RunError::LeaseLost(id))
        }
        // Trying again cannot help (a corrupt log entry, a key or a
        // message the server refuses): fail the run, visibly.
        Err(e) if !e.is_retryable() && matches!(e, RunError::Store { .. }) => {
            tracing::error!(run_id = %run_id, error = %e, "run failed on an error retrying cannot fix");
            fail_run(&shared, &run_id, d.out.record.clone(), e.to_string()).await;
            lease.finish(true).await;
            Err(e)
        }
        // Passing: the lease stays ours until it expires, and the owner
        // loop tries the run again (replaying its log) at its next tick.
        Err(e) => {
            if let RunError::Store { source, .. } = &e
                && source.is_broker_unavailable()
            {
                mark_degraded(&shared, &run_id, d.out.record.clone(), source).await;
            }
            lease.finish(false).await;
            Err(e)
        }
    }
}

/// Says in the run record that the broker is unavailable, and since when
/// (the first failure of this coordinator's drives of the run). Best
/// effort: the write itself may fail while the broker refuses writes.
async fn mark_degraded(
    shared: &Shared,
    run_id: &RunId,
    mut record: RunRecord,
    error: &cascade_swarm::store::StoreError,
) {
    let now = shared.now();
    let since = match shared.degraded.lock() {
        Ok(mut m) => {
            let entry = m
                .entry(run_id.clone())
                .or_insert_with(|| (now, String::new()));
            entry.1 = error.to_string();
            entry.0
        }
        Err(_) => now,
    };
    let text = format!("broker unavailable since {}: {error}", rfc3339(since));
    tracing::warn!(run_id = %run_id, "{text}; the run goes on when the broker is back");
    if record.degraded.as_deref() == Some(text.as_str()) {
        return;
    }
    record.degraded = Some(text);
    record.updated_at = now;
    super::record::update_record(shared, &record).await;
}

/// `2026-11-22T01:02:03.456Z`.
pub(crate) fn rfc3339(ms: cascade_proto::Millis) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| ms.to_string(), |t| format!("{t:.3}"))
}

/// The run's submission; the inner error is final (none stored, or
/// undecodable), the outer one passing (try again later).
async fn load_submission(
    shared: &Shared,
    run_id: &RunId,
) -> Result<Result<Submission, PlanError>, RunError> {
    match shared.stores.submissions.get(run_id).await {
        Ok(Some(sub)) => Ok(Ok(sub)),
        Ok(None) => Ok(Err(PlanError::NoSubmission)),
        // Retrying cannot help: the run fails, visibly.
        Err(e) if !e.is_retryable() => Ok(Err(PlanError::Undecodable(e))),
        Err(e) => Err(err(run_id, e)),
    }
}

async fn load_record(shared: &Shared, run_id: &RunId, sub: &Submission) -> RunRecord {
    if let Ok(Some(r)) = shared.stores.runs.get(run_id).await {
        return r;
    }
    RunRecord {
        v: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        cascade: sub.main.clone(),
        state: RunState::Queued,
        created_at: sub.submitted_at,
        updated_at: shared.now(),
        owner: None,
        stages: BTreeMap::new(),
        error: None,
        cancel_requested: None,
        waiting: Default::default(),
        degraded: None,
    }
}

async fn fail_unplannable(shared: &Shared, run_id: &RunId, record: RunRecord, e: PlanError) {
    let msg = e.to_string();
    tracing::error!(run_id = %run_id, error = %msg, "submitted cascade does not plan");
    fail_run(shared, run_id, record, msg).await;
}

/// Ends a run as failed with `msg`: its record and a report saying so.
async fn fail_run(shared: &Shared, run_id: &RunId, mut record: RunRecord, msg: String) {
    record.state = RunState::Failed;
    record.error = Some(msg.clone());
    record.updated_at = shared.now();
    let report = serde_json::json!({"run_id": run_id.as_str(), "status": "failed", "error": msg, "stages": {}});
    super::record::write(shared, run_id, &report).await;
    super::record::update_record(shared, &record).await;
}

impl Driver {
    /// Until the run ends: events from the results watch, timers and the
    /// run record (cancel requests) join the pending entry; writes (log
    /// entries, their sends, record flushes) and sweeps are futures polled
    /// here, so nothing that needs the loop waits behind them.
    async fn run_loop(
        &mut self,
        lease: &super::lease::Keeper,
        cancel: &CancellationToken,
    ) -> Result<(), RunError> {
        let stores = self.shared.stores.clone();
        let mut results = stores
            .results
            .watch_run(&self.run_id)
            .await
            .map_err(|e| err(&self.run_id, e))?;
        let mut run_watch = stores
            .runs
            .watch(&self.run_id)
            .await
            .map_err(|e| err(&self.run_id, e))?;
        let mut sweep_tick =
            tokio::time::interval(stores.settings.ack_wait.max(Duration::from_secs(1)));
        sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut io: Option<Io> = None;
        let mut sweep: Option<Sweep> = None;
        let mut flush: Option<BoxFuture<'static, ()>> = None;
        let mut last_flush = tokio::time::Instant::now();
        self.flush_record().await;
        loop {
            if self.core.engine.is_finished() {
                // Nothing more is logged; what the last entries need is sent.
                self.pending.clear();
                if io.is_none() && self.out.sends.is_empty() {
                    break;
                }
            }
            if io.is_none() {
                io = self.next_io();
            }
            let next_timer = self.core.timers.next_at();
            let flush_at =
                (self.out.record_dirty && flush.is_none()).then_some(last_flush + RECORD_FLUSH);
            tokio::select! {
                done = poll_slot(&mut io) => {
                    io = self.on_io(done)?;
                }
                (lost, t) = poll_slot(&mut sweep) => {
                    sweep = None;
                    self.on_swept(lost, t);
                }
                () = poll_slot(&mut flush) => {
                    flush = None;
                    last_flush = tokio::time::Instant::now();
                }
                entry = results.next() => {
                    let Some(entry) = entry else { return Err(watch_ended(&self.run_id, "results")) };
                    let mut batch = Vec::new();
                    match entry {
                        Ok(r) => self.take_result(r, &mut batch).await,
                        Err(e) => tracing::warn!(run_id = %self.run_id, error = %e, "results watch error"),
                    }
                    // Group commit: everything already arrived, never waiting for more.
                    while batch.len() < MAX_BATCH {
                        match futures::FutureExt::now_or_never(results.next()) {
                            Some(Some(Ok(r))) => self.take_result(r, &mut batch).await,
                            Some(Some(Err(e))) => tracing::warn!(run_id = %self.run_id, error = %e, "results watch error"),
                            Some(None) => return Err(watch_ended(&self.run_id, "results")),
                            None => break,
                        }
                    }
                    self.pending.extend(batch);
                }
                () = sleep_until_ms(next_timer, self.now()), if next_timer.is_some() => {
                    let due = self.core.due(self.now());
                    self.pending.extend(due);
                }
                update = run_watch.next() => {
                    let Some(update) = update else { return Err(watch_ended(&self.run_id, "the run record")) };
                    if let Ok(r) = update
                        && let (Some(reason), false) = (r.cancel_requested.clone(), self.cancel_sent) {
                            self.cancel_sent = true;
                            self.out.record.cancel_requested = Some(reason.clone());
                            self.pending.push(Event::CancelRequested { reason });
                        }
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or(last_flush)), if flush_at.is_some() => {
                    flush = Some(self.flush_future());
                }
                () = lease.lost.cancelled() => return Err(RunError::LeaseLost(self.run_id.clone())),
                _ = sweep_tick.tick(), if sweep.is_none() => sweep = Some(self.start_sweep()),
                () = cancel.cancelled() => {
                    // Shutting down: leave the run to another coordinator.
                    self.flush_record().await;
                    return Err(RunError::ShuttingDown(self.run_id.clone()));
                }
            }
        }
        Ok(())
    }

    /// A result from the bucket, as an event if the engine wants it.
    async fn take_result(&mut self, rec: ResultRecord, batch: &mut Vec<Event>) {
        let mut result = rec.result;
        if !self.core.engine.accepts(&result) {
            return;
        }
        if let (Some(name), TaskOutcome::Succeeded { outputs }) =
            (&rec.outputs_ref, &mut result.outcome)
        {
            match self.shared.stores.objects.get_json(name).await {
                Ok(v) => *outputs = v,
                Err(e) => {
                    tracing::warn!(run_id = %self.run_id, error = %e, "cannot read an attempt's outputs");
                    result.outcome = TaskOutcome::Failed(cascade_proto::Failure::retryable(
                        format!("outputs object `{name}` is missing"),
                    ));
                }
            }
        }
        let ok = matches!(result.outcome, TaskOutcome::Succeeded { .. });
        if !result.worker.is_empty() {
            self.shared
                .registry
                .record(&result.worker, ok, result.duration_ms);
            if !ok {
                self.out
                    .failed_on
                    .insert(result.task_id.clone(), result.worker.clone());
            }
        }
        crate::driver::metrics::result_taken(&result);
        batch.push(Event::TaskFinished(result));
    }
}

/// Polls the future in a slot; never ready while the slot is empty (the
/// select! arm is then idle). Empties the slot when it is ready.
async fn poll_slot<T>(slot: &mut Option<BoxFuture<'static, T>>) -> T {
    match slot {
        Some(f) => {
            let out = f.await;
            *slot = None;
            out
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_ms(at: Option<Millis>, now: Millis) {
    if let Some(at) = at {
        let wait = at.saturating_sub(now);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}
