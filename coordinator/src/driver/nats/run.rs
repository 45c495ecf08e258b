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

use cascade_core::models::ModelCatalog;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cascade_proto::wire::{
    self, BatchMessage, CancelRequest, ResultRecord, Route, RunRecord, RunState, Submission,
    TaskMessage,
};
use cascade_proto::{
    Event, EventRecord, Millis, PROTOCOL_VERSION, RunId, TaskId, TaskOutcome, TaskSpec, TimerId,
    encode,
};
use cascade_swarm::store::{AckFuture, Appended, ClaimKey, LeaseHeld, ResultKey, StoreError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::route::{StageAgents, Target, Want};
use crate::integrations::{Env, RunIntegrations, RunSetup};
use cascade_core::engine::{Effect, Engine, StageStatus};
use cascade_core::plan::{self, Plan, PlanOptions};
use cascade_core::spec::{ErrorStrategy, MemoryScope, Operations, Strategy, Topology};

/// Most results taken into one log entry (group commit).
const MAX_BATCH: usize = 1024;
/// Task publishes awaiting their PubAck at once. async-nats allows 5,000
/// unconfirmed publishes; going past that without collecting deadlocks.
const PUBLISH_WINDOW: usize = 1024;

/// An attempt as sent: when, and to which worker if to one only.
#[derive(Debug)]
struct Sent {
    at: Millis,
    to: Option<String>,
}

/// Most straggling attempts one sweep looks at.
const SWEEP_BATCH: usize = 256;

/// The run record is rewritten at most this often while the run goes.
const RECORD_FLUSH: Duration = Duration::from_millis(100);

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

struct Driver {
    shared: Arc<Shared>,
    run_id: RunId,
    engine: Engine,
    last_seq: u64,
    timers: BTreeMap<(Millis, u64), TimerId>,
    timer_seq: u64,
    record: RunRecord,
    record_dirty: bool,
    agents: StageAgents,
    /// Where each task's last attempt failed (swarm-recovery avoids it).
    failed_on: HashMap<TaskId, String>,
    /// GitHub, notifications, quality gates, hooks (see `integrations`).
    ops: RunIntegrations,
    /// When each attempt in flight was sent (for the sweeper).
    dispatched: HashMap<(TaskId, cascade_proto::Attempt), Sent>,
    cancel_sent: bool,
}

fn err(run: &RunId, source: StoreError) -> RunError {
    RunError::Store {
        run: run.clone(),
        source,
    }
}

fn watch_ended(run: &RunId, what: &str) -> RunError {
    err(
        run,
        StoreError::WatchEnded {
            what: what.to_owned(),
        },
    )
}

/// Loads a submission into a plan (no skill check: workers bring skills).
pub(crate) fn plan_of(
    sub: &Submission,
    models: &Arc<ModelCatalog>,
) -> Result<(Plan, Operations), String> {
    let loaded = cascade_core::spec::load_bundle(&sub.main, &sub.files);
    if loaded.has_errors() {
        return Err(loaded.render_diagnostics().join("\n"));
    }
    let cascade = loaded
        .cascade
        .ok_or_else(|| "the cascade did not load".to_owned())?;
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
        return Err(errs.join("\n"));
    }
    Ok((plan, cascade.operations))
}

pub async fn drive(
    shared: Arc<Shared>,
    lease: LeaseHeld,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let run_id = lease.run.clone();
    // Renewed from now on, whatever the driver is busy with (a long replay
    // must not let the lease lapse).
    let lease = super::lease::Keeper::start(shared.clone(), lease);
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
        },
    );
    let mut d = Driver {
        shared: shared.clone(),
        run_id: run_id.clone(),
        engine: Engine::new(plan),
        ops,
        last_seq: 0,
        timers: BTreeMap::new(),
        timer_seq: 0,
        record,
        record_dirty: true,
        agents: StageAgents::default(),
        failed_on: HashMap::new(),
        dispatched: HashMap::new(),
        cancel_sent: false,
    };
    d.record.owner = Some(shared.opts.name.clone());
    d.record.state = RunState::Running;
    let replayed = d.replay().await?;
    if replayed == 0 {
        crate::http::metrics::run_started();
        d.ops.started();
        let memory = super::memory::load(&shared, &run_id, d.engine.plan().memory.scope).await;
        let start = Event::RunStarted {
            run_id: run_id.clone(),
            inputs: sub.inputs.clone(),
            memory,
        };
        d.commit(vec![start]).await?;
    } else {
        d.resend_in_flight().await?;
    }
    let result = d.run_loop(&lease, &cancel).await;
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
        Err(e) => {
            lease.finish(false).await;
            Err(e)
        }
    }
}

/// The run's submission; the inner error is final (none stored, or
/// undecodable), the outer one passing (try again later).
async fn load_submission(
    shared: &Shared,
    run_id: &RunId,
) -> Result<Result<Submission, String>, RunError> {
    match shared.stores.submissions.get(run_id).await {
        Ok(Some(sub)) => Ok(Ok(sub)),
        Ok(None) => Ok(Err("no submission is stored for this run".to_owned())),
        Err(e @ StoreError::Decode { .. }) => {
            Ok(Err(format!("the stored submission does not decode: {e}")))
        }
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
    }
}

async fn fail_unplannable(shared: &Shared, run_id: &RunId, mut record: RunRecord, msg: String) {
    tracing::error!(run_id = %run_id, error = %msg, "submitted cascade does not plan");
    record.state = RunState::Failed;
    record.error = Some(msg.clone());
    record.updated_at = shared.now();
    let report = serde_json::json!({"run_id": run_id.as_str(), "status": "failed", "error": msg, "stages": {}});
    super::report::write(shared, run_id, &report).await;
    super::report::update_record(shared, &record).await;
}

impl Driver {
    /// Rebuilds the engine from the run's log; returns how many entries.
    async fn replay(&mut self) -> Result<u64, RunError> {
        let mut count = 0;
        loop {
            let next = self
                .shared
                .stores
                .events
                .next_after(&self.run_id, self.last_seq)
                .await
                .map_err(|e| err(&self.run_id, e))?;
            let Some((seq, rec)) = next else { break };
            self.last_seq = seq;
            count += 1;
            for event in rec.events {
                if let Event::TimerFired(t) = &event {
                    self.timers.retain(|_, pending| pending != t);
                }
                if let Event::TaskFinished(r) = &event {
                    self.ops.result(r);
                }
                let fx = self.engine.apply(event, rec.at);
                self.absorb_replayed(fx).await;
            }
        }
        if count > 0 {
            tracing::info!(run_id = %self.run_id, entries = count, "replayed the run's event log");
        }
        Ok(count)
    }

    /// Effects seen during replay: timers and state are rebuilt, memory
    /// writes re-done (idempotent, in order); tasks are not re-sent here.
    async fn absorb_replayed(&mut self, fx: Vec<Effect>) {
        for effect in fx {
            match effect {
                Effect::StartTimer { timer, at } => self.add_timer(timer, at),
                Effect::StageChanged { stage, status, .. } => self.stage_changed(stage, status),
                // Global memory is shared with other runs, which may have
                // written since: replaying this run's old writes would undo
                // theirs. The run's own memory is replayed.
                Effect::PutMemory {
                    scope: MemoryScope::Global,
                    ..
                }
                | Effect::DeleteMemory {
                    scope: MemoryScope::Global,
                    ..
                } => {}
                Effect::PutMemory { .. } | Effect::DeleteMemory { .. } | Effect::ClearRunMemory => {
                    super::memory::perform(&self.shared, &self.run_id, &effect).await;
                }
                Effect::DispatchTask(_) | Effect::CancelTask { .. } | Effect::FinishRun { .. } => {}
            }
        }
    }

    /// After a takeover: an attempt the log says is in flight is sent again
    /// only when it has no result and no live worker holds it (a claimed
    /// attempt whose holder still beats is left to it: resending would
    /// pre-empt it). Same message id: deduplicated when the first send is
    /// recent, fenced by attempt when it is not.
    async fn resend_in_flight(&mut self) -> Result<(), RunError> {
        let mut fx = Vec::new();
        let ttl_ms = self.shared.stores.settings.worker_ttl.as_millis() as u64;
        for (task_id, attempt) in self.engine.in_flight_keys() {
            let key = ResultKey::new(&self.run_id, &task_id, attempt);
            if matches!(self.shared.stores.results.get(&key).await, Ok(Some(_))) {
                continue; // the watch will deliver it
            }
            let claim_key = ClaimKey::attempt(&self.run_id, &task_id, attempt);
            let claim = self
                .shared
                .stores
                .claims
                .entry(&claim_key)
                .await
                .ok()
                .flatten()
                .map(|(c, _)| c);
            let held = claim.is_some_and(|c| {
                self.shared
                    .registry
                    .workers
                    .get(&c.worker)
                    .is_some_and(|w| self.shared.now().saturating_sub(w.heartbeat_at) <= ttl_ms)
            });
            if held {
                self.dispatched.insert(
                    (task_id, attempt),
                    Sent {
                        at: self.shared.now(),
                        to: None,
                    },
                );
                continue;
            }
            if let Some(spec) = self.engine.spec_of(&task_id) {
                fx.push(Effect::DispatchTask(Box::new(spec)));
            }
        }
        self.perform(fx).await
    }

    fn add_timer(&mut self, timer: TimerId, at: Millis) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
    }

    fn stage_changed(&mut self, stage: String, status: StageStatus) {
        self.record.stages.insert(stage, status.as_str().to_owned());
        self.record_dirty = true;
    }

    /// Appends events to the log (single writer), then applies them.
    async fn commit(&mut self, events: Vec<Event>) -> Result<(), RunError> {
        if events.is_empty() {
            return Ok(());
        }
        let at = self.shared.now();
        let rec = EventRecord {
            v: PROTOCOL_VERSION,
            at,
            events,
            object: None,
        };
        let appended = self
            .shared
            .stores
            .events
            .append(
                &self.run_id,
                rec.clone(),
                self.last_seq,
                &self.shared.opts.name,
            )
            .await
            .map_err(|e| err(&self.run_id, e))?;
        match appended {
            Appended::At(seq) => self.last_seq = seq,
            Appended::Superseded => return Err(RunError::Superseded(self.run_id.clone())),
            Appended::TooLarge(rec) => {
                // Split the group; each half is appended (and applied) in order.
                let mut events = rec.events;
                let second = events.split_off(events.len() / 2);
                Box::pin(self.commit(events)).await?;
                return Box::pin(self.commit(second)).await;
            }
        }
        let mut fx = Vec::new();
        for event in rec.events {
            fx.extend(self.engine.apply(event, at));
        }
        self.perform(fx).await
    }

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
        let mut sweep = tokio::time::interval(stores.settings.ack_wait.max(Duration::from_secs(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = tokio::time::Instant::now();
        self.flush_record().await;
        while !self.engine.is_finished() {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let flush_at = self.record_dirty.then_some(last_flush + RECORD_FLUSH);
            tokio::select! {
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
                    self.commit(batch).await?;
                }
                () = sleep_until_ms(next_timer, self.shared.now()), if next_timer.is_some() => {
                    let due: Vec<TimerId> = {
                        let t = self.shared.now();
                        let keys: Vec<(Millis, u64)> = self.timers.range(..=(t, u64::MAX)).map(|(k, _)| *k).collect();
                        keys.into_iter().filter_map(|k| self.timers.remove(&k)).collect()
                    };
                    self.commit(due.into_iter().map(Event::TimerFired).collect()).await?;
                }
                update = run_watch.next() => {
                    let Some(update) = update else { return Err(watch_ended(&self.run_id, "the run record")) };
                    if let Ok(r) = update
                            && let (Some(reason), false) = (r.cancel_requested.clone(), self.cancel_sent) {
                                self.cancel_sent = true;
                                self.record.cancel_requested = Some(reason.clone());
                                self.commit(vec![Event::CancelRequested { reason }]).await?;
                            }
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or(last_flush)), if flush_at.is_some() => {
                    self.flush_record().await;
                    last_flush = tokio::time::Instant::now();
                }
                () = lease.lost.cancelled() => return Err(RunError::LeaseLost(self.run_id.clone())),
                _ = sweep.tick() => self.sweep().await?,
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
        if !self.engine.accepts(&result) {
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
                self.failed_on
                    .insert(result.task_id.clone(), result.worker.clone());
            }
        }
        crate::http::metrics::result_taken(&result);
        self.ops.result(&result);
        batch.push(Event::TaskFinished(result));
    }

    async fn perform(&mut self, fx: Vec<Effect>) -> Result<(), RunError> {
        // A failed quality gate stops the run: logged like any event.
        let raised = self.ops.observe(&fx, &self.engine);
        let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        let mut batches: BTreeMap<(String, String), Vec<TaskSpec>> = BTreeMap::new();
        for effect in fx {
            match effect {
                Effect::DispatchTask(spec) => {
                    self.dispatch(*spec, &mut acks, &mut batches).await?;
                    while acks.len() >= PUBLISH_WINDOW {
                        if let Some(Err(e)) = acks.next().await {
                            return Err(err(&self.run_id, e));
                        }
                    }
                }
                Effect::CancelTask { task_id, attempt } => {
                    let req = CancelRequest {
                        v: PROTOCOL_VERSION,
                        run_id: self.run_id.clone(),
                        task_id: Some(task_id),
                        attempt: Some(attempt),
                    };
                    // Best effort: fencing is the guarantee.
                    let _ = self.shared.stores.tasks.cancel(&req).await;
                }
                Effect::StartTimer { timer, at } => self.add_timer(timer, at),
                Effect::StageChanged { stage, status, .. } => {
                    crate::http::metrics::stage_changed(status);
                    self.stage_changed(stage, status)
                }
                Effect::PutMemory { .. } | Effect::DeleteMemory { .. } | Effect::ClearRunMemory => {
                    super::memory::perform(&self.shared, &self.run_id, &effect).await;
                }
                Effect::FinishRun { .. } => {}
            }
        }
        for ((lead, stage), tasks) in batches {
            for chunk in chunk_batch(tasks) {
                // The id names exactly these attempts: two batches of one
                // stage never collide in the duplicate window, and a
                // re-sent batch deduplicates.
                let batch_id = format!("{}:{stage}:{:016x}", self.run_id, batch_hash(&chunk));
                let batch = BatchMessage {
                    v: PROTOCOL_VERSION,
                    batch: batch_id,
                    run_id: self.run_id.clone(),
                    tasks: chunk,
                    dispatched_at: self.shared.now(),
                };
                let ack = self
                    .shared
                    .stores
                    .tasks
                    .publish_batch(
                        wire::subject_task_lead(&lead),
                        &batch,
                        wire::token(&batch.batch),
                    )
                    .await
                    .map_err(|e| err(&self.run_id, e))?;
                acks.push(ack);
            }
        }
        while let Some(ack) = acks.next().await {
            ack.map_err(|e| err(&self.run_id, e))?;
        }
        if !raised.is_empty() {
            Box::pin(self.commit(raised)).await?;
        }
        Ok(())
    }

    /// Publishes one task where its topology sends it (or adds it to a
    /// lead's batch).
    async fn dispatch(
        &mut self,
        mut spec: TaskSpec,
        acks: &mut FuturesUnordered<AckFuture>,
        batches: &mut BTreeMap<(String, String), Vec<TaskSpec>>,
    ) -> Result<(), RunError> {
        self.ops.prepare(&mut spec);
        let plan = self.engine.plan().clone();
        let node = plan
            .node_by_id(spec.stage_id.as_str())
            .map(|n| &plan.nodes[n]);
        let (topology, strategy, max_agents) = node
            .and_then(|n| n.swarm.as_ref())
            .map_or((Topology::Mesh, Strategy::Balanced, None), |s| {
                (s.topology, s.strategy, s.max_agents)
            });
        let recovering = node.is_some_and(|n| n.error.strategy == ErrorStrategy::SwarmRecovery)
            && spec.attempt.0 > 1;
        let avoid = if recovering {
            self.failed_on.get(&spec.task_id).cloned()
        } else {
            None
        };
        let labels = BTreeMap::new();
        let want = Want {
            stage: spec.stage_id.as_str(),
            skill: spec.skill.as_str(),
            topology,
            strategy,
            max_agents,
            labels: &labels,
            avoid: avoid.as_deref(),
            model: spec.model.as_deref(),
        };
        let ttl_ms = self.shared.stores.settings.worker_ttl.as_millis() as u64;
        let inputs_size = serde_json::to_vec(&spec.inputs).map_or(0, |b| b.len());
        let mut target =
            self.shared
                .registry
                .route(&want, &mut self.agents, self.shared.now(), ttl_ms);
        if matches!(target, Target::Lead(_)) && inputs_size > wire::INLINE_LIMIT / BATCH_TASKS {
            // Too large to share a batch message: straight to the queue,
            // inputs by reference.
            target = Target::Mesh;
        }
        let (subject, route) = match target {
            Target::Mesh => (wire::subject_task_skill(spec.skill.as_str()), Route::Mesh),
            Target::Worker(w) => (wire::subject_task_worker(&w), Route::Direct { worker: w }),
            Target::Lead(lead) => {
                self.dispatched.insert(
                    (spec.task_id.clone(), spec.attempt),
                    Sent {
                        at: self.shared.now(),
                        to: Some(lead.clone()),
                    },
                );
                crate::http::metrics::task_dispatched(&spec, "lead");
                batches
                    .entry((lead.clone(), spec.stage_id.to_string()))
                    .or_default()
                    .push(spec);
                return Ok(());
            }
        };
        let to = match &route {
            Route::Direct { worker } => Some(worker.clone()),
            _ => None,
        };
        self.dispatched.insert(
            (spec.task_id.clone(), spec.attempt),
            Sent {
                at: self.shared.now(),
                to,
            },
        );
        let msg_id = format!("{}:{}:{}", self.run_id, spec.task_id, spec.attempt);
        crate::http::metrics::task_dispatched(&spec, crate::http::metrics::route_label(&route));
        let ack = self.publish_task(spec, subject, route, msg_id).await?;
        acks.push(ack);
        Ok(())
    }

    /// Publishes a task message; inputs over the inline limit go to the
    /// object store first.
    async fn publish_task(
        &self,
        mut spec: TaskSpec,
        subject: String,
        route: Route,
        msg_id: String,
    ) -> Result<AckFuture, RunError> {
        let mut inputs_ref = None;
        let size = serde_json::to_vec(&spec.inputs).map_or(0, |b| b.len());
        if size > wire::INLINE_LIMIT {
            let name = format!(
                "inputs.{}",
                ResultKey::new(&self.run_id, &spec.task_id, spec.attempt)
            );
            self.shared
                .stores
                .objects
                .put_json(&name, &spec.inputs)
                .await
                .map_err(|e| err(&self.run_id, e))?;
            spec.inputs = Value::Null;
            inputs_ref = Some(name);
        }
        let message = TaskMessage {
            v: PROTOCOL_VERSION,
            spec,
            route,
            dispatched_at: self.shared.now(),
            inputs_ref,
        };
        self.shared
            .stores
            .tasks
            .publish_task(subject, &message, msg_id)
            .await
            .map_err(|e| err(&self.run_id, e))
    }

    /// A task is lost when it was claimed, its message is gone (a late ack
    /// from a worker that had lost it deleted the redelivery) and no result
    /// was written: send it again. Only attempts in flight for more than
    /// two ack windows are looked at, a bounded number per sweep, each
    /// with O(1) lookups: the sweep is for stragglers, not a scan.
    async fn sweep(&mut self) -> Result<(), RunError> {
        let stores = self.shared.stores.clone();
        let t = self.shared.now();
        let stale_after = 2 * stores.settings.ack_wait.as_millis() as u64;
        // Keys only: rendering every attempt in flight each sweep would cost
        // the whole fan-out every ack window.
        let in_flight: std::collections::HashSet<(TaskId, cascade_proto::Attempt)> =
            self.engine.in_flight_keys().into_iter().collect();
        self.dispatched.retain(|k, _| in_flight.contains(k));
        let old: Vec<(TaskId, cascade_proto::Attempt)> = self
            .dispatched
            .iter()
            .filter(|(_, sent)| t.saturating_sub(sent.at) > stale_after)
            .map(|(k, _)| k.clone())
            .take(SWEEP_BATCH)
            .collect();
        let ttl_ms = stores.settings.worker_ttl.as_millis() as u64;
        let alive = |name: &str| {
            self.shared
                .registry
                .workers
                .get(name)
                .is_some_and(|w| !w.draining && t.saturating_sub(w.heartbeat_at) <= ttl_ms)
        };
        let mut lost = Vec::new();
        for key in old {
            if !in_flight.contains(&key) {
                continue;
            }
            let (task_id, attempt) = (&key.0, key.1);
            let sent_to = self.dispatched.get(&key).and_then(|s| s.to.clone());
            let result_key = ResultKey::new(&self.run_id, task_id, attempt);
            if matches!(stores.results.get(&result_key).await, Ok(Some(_))) {
                continue; // the results watch delivers it
            }
            let claim_key = ClaimKey::attempt(&self.run_id, task_id, attempt);
            let claim = stores
                .claims
                .entry(&claim_key)
                .await
                .ok()
                .flatten()
                .map(|(c, _)| c);
            // Sent to one worker (star, max_agents, recovery, a lead) that
            // is gone or draining: only its consumer could ever take it.
            let stranded = sent_to.as_deref().is_some_and(|w| !alive(w))
                && claim.as_ref().is_none_or(|c| !alive(&c.worker));
            // Claimed, its message gone (a late ack deleted a redelivery),
            // and its holder dead: nobody will finish it.
            let orphaned = match &claim {
                Some(c) => {
                    let message_exists = match c.stream_seq {
                        // On a read error, assume it is there: never re-send on doubt.
                        Some(seq) => !matches!(stores.tasks.queued(seq).await, Ok(None)),
                        None => true,
                    };
                    !message_exists && !alive(&c.worker)
                }
                None => false,
            };
            if stranded || orphaned {
                tracing::warn!(run_id = %self.run_id, task_id = %task_id, %attempt, stranded, orphaned, "re-enqueueing a task nobody will finish");
                // Rendered only now, for the few that are re-sent.
                if let Some(mut spec) = self.engine.spec_of(task_id) {
                    crate::http::metrics::task_reenqueued(spec.skill.as_str());
                    self.ops.prepare(&mut spec);
                    lost.push(spec);
                }
            }
            // Checked: look again only after another two windows.
            if let Some(sent) = self.dispatched.get_mut(&key) {
                sent.at = t;
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        for spec in lost {
            let msg_id = format!(
                "{}:{}:{}:swept{}",
                self.run_id, spec.task_id, spec.attempt, t
            );
            let subject = wire::subject_task_skill(spec.skill.as_str());
            let ack = self
                .publish_task(spec, subject, Route::Mesh, msg_id)
                .await?;
            acks.push(ack);
        }
        while let Some(a) = acks.next().await {
            a.map_err(|e| err(&self.run_id, e))?;
        }
        Ok(())
    }

    async fn flush_record(&mut self) {
        if !self.record_dirty {
            return;
        }
        self.record.updated_at = self.shared.now();
        super::report::update_record(&self.shared, &self.record).await;
        self.record_dirty = false;
    }

    async fn finish(&mut self) {
        let report = self.engine.report();
        let mut value = serde_json::to_value(&report).unwrap_or(Value::Null);
        if !self.ops.is_empty() {
            // The end actions (gates, GitHub, notifications, on_run_end) run
            // once: a coordinator that takes over a run whose stored report
            // records them (`integrations`) keeps that report. They run again
            // only if the owner died between acting and writing the report.
            match self.stored_report().await {
                Some(stored) if stored.get("integrations").is_some() => value = stored,
                _ => self.ops.finish(&mut value).await,
            }
        }
        super::report::write(&self.shared, &self.run_id, &value).await;
        // Gates may have failed the run: the record follows the report.
        let status = value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or(report.status.as_str())
            .to_owned();
        self.record.state = match status.as_str() {
            "success" => RunState::Success,
            "partial" => RunState::Partial,
            _ => RunState::Failed,
        };
        self.record.error = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.record_dirty = true;
        self.flush_record().await;
        tracing::info!(run_id = %self.run_id, status = %status, "run finished");
        crate::http::metrics::run_finished(&self.run_id, self.record.created_at, &status);
    }

    /// The report a previous owner stored for this run, if any.
    async fn stored_report(&self) -> Option<Value> {
        self.shared
            .stores
            .reports
            .get(&self.run_id)
            .await
            .ok()
            .flatten()
    }
}

/// Most tasks in one batch for a lead.
const BATCH_TASKS: usize = 64;

/// Splits a lead's tasks into batches that stay well under a message's
/// size (tasks with large inputs never reach here: they go to the mesh).
fn chunk_batch(tasks: Vec<TaskSpec>) -> Vec<Vec<TaskSpec>> {
    let mut out: Vec<Vec<TaskSpec>> = Vec::new();
    let mut size = 0;
    for t in tasks {
        let len = encode(&t).map_or(0, |b| b.len());
        let full = out
            .last()
            .is_none_or(|c| c.len() >= BATCH_TASKS || size + len > wire::INLINE_LIMIT);
        if full {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(c) = out.last_mut() {
            c.push(t);
        }
    }
    out
}

/// A stable hash of a batch's attempts (FNV-1a: same in every process).
fn batch_hash(tasks: &[TaskSpec]) -> u64 {
    let mut ids: Vec<String> = tasks
        .iter()
        .map(|t| format!("{}@{}", t.task_id, t.attempt))
        .collect();
    ids.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.join("\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

async fn sleep_until_ms(at: Option<Millis>, now: Millis) {
    if let Some(at) = at {
        let wait = at.saturating_sub(now);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}
