//! Effects into I/O: what the swarm driver does for the effects of a step
//! (routing, bookkeeping), and the sends it plans.
//!
//! ```text
//!  effects ─▶ RunCore::step ─▶ Out (sync: stage changes, routing, bookkeeping)
//!                 ─▶ Vec<Send> ─▶ send_all (a future the run loop polls:
//!                                 publishes pipelined, acks awaited in a window)
//! ```
//! Replay interprets the same effects with `Mode::Replay` (the rules are
//! in `driver::effects`, shared with the embedded driver): state, timers
//! and the run's own memory come back; nothing is sent to workers and
//! global memory (shared with other runs, which may have written since)
//! is left alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::engine::{Effect, Engine, StageStatus};
use cascade_core::spec::{ErrorStrategy, Strategy, Topology};
use cascade_proto::wire::{self, BatchMessage, CancelRequest, Route, TaskMessage};
use cascade_proto::{Attempt, Millis, PROTOCOL_VERSION, RunId, TaskId, TaskSpec};
use cascade_swarm::store::{AckFuture, ResultKey, StoreError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;

use super::Shared;
use super::route::{Target, Want};
use super::state::{Out, Send, Sent};
use crate::driver::effects::{Effects, Mode};

/// Task publishes awaiting their PubAck at once. async-nats allows 5,000
/// unconfirmed publishes; going past that without collecting deadlocks.
const PUBLISH_WINDOW: usize = 1024;

/// Most tasks in one batch for a lead.
const BATCH_TASKS: usize = 64;

impl Out {
    /// Turns the tasks gathered for team leads by the last steps into batch
    /// sends, after the sends those steps queued.
    pub(super) fn gather_batches(&mut self) {
        let batches = std::mem::take(&mut self.batches);
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
                    // Stamped by the coordinator's task bus (cascade_swarm::grant).
                    grants: Default::default(),
                    grant: None,
                };
                self.sends.push(Send::Batch {
                    lead: lead.clone(),
                    batch,
                });
            }
        }
    }

    /// Routes one task where its topology sends it (or adds it to a lead's
    /// batch) and notes it as sent.
    fn route(&mut self, spec: TaskSpec, engine: &Engine) -> Option<Send> {
        let plan = engine.plan();
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
        let now = self.shared.now();
        let mut target = self
            .shared
            .registry
            .route(&want, &mut self.agents, now, ttl_ms);
        if matches!(target, Target::Lead(_)) && inputs_size > wire::INLINE_LIMIT / BATCH_TASKS {
            // Too large to share a batch message: straight to the queue,
            // inputs by reference.
            target = Target::Mesh;
        }
        if matches!(target, Target::Mesh) {
            self.note_unserved(spec.stage_id.as_str(), spec.skill.as_str(), now, ttl_ms);
        }
        let (subject, route) = match target {
            Target::Mesh => (wire::subject_task_skill(spec.skill.as_str()), Route::Mesh),
            Target::Worker(w) => (wire::subject_task_worker(&w), Route::Direct { worker: w }),
            Target::Lead(lead) => {
                self.dispatched.insert(
                    (spec.task_id.clone(), spec.attempt),
                    Sent {
                        at: now,
                        to: Some(lead.clone()),
                    },
                );
                crate::driver::metrics::task_dispatched(&spec, "lead");
                self.batches
                    .entry((lead.clone(), spec.stage_id.to_string()))
                    .or_default()
                    .push(spec);
                return None;
            }
        };
        let to = match &route {
            Route::Direct { worker } => Some(worker.clone()),
            _ => None,
        };
        self.dispatched
            .insert((spec.task_id.clone(), spec.attempt), Sent { at: now, to });
        let msg_id = format!("{}:{}:{}", self.run_id, spec.task_id, spec.attempt);
        crate::driver::metrics::task_dispatched(&spec, crate::driver::metrics::route_label(&route));
        Some(Send::Task {
            spec: Box::new(spec),
            subject,
            route,
            msg_id,
        })
    }
}

impl Out {
    /// Says in the record that a stage's tasks wait for a worker, when no
    /// live one offers the skill (the task waits in the queue for one).
    fn note_unserved(&mut self, stage: &str, skill: &str, now: Millis, ttl_ms: u64) {
        if self.unserved.contains_key(stage) || self.served.contains(stage) {
            return;
        }
        if self.shared.registry.offers(skill, now, ttl_ms) {
            self.served.insert(stage.to_owned());
            return;
        }
        let why = format!("a worker with skill `{skill}`: none is registered");
        tracing::warn!(run_id = %self.run_id, stage, skill, "queued, waiting for {why}");
        self.unserved.insert(stage.to_owned(), skill.to_owned());
        self.record.waiting.insert(stage.to_owned(), why);
        self.record_dirty = true;
    }

    /// Forgets what stages no longer wait for: a worker offers the skill
    /// now, or the stage is no longer running.
    pub(super) fn recheck_unserved(&mut self, now: Millis) {
        // Workers come and go: a stage served then is looked at again.
        self.served.clear();
        let ttl_ms = self.shared.stores.settings.worker_ttl.as_millis() as u64;
        let before = self.unserved.len();
        let (registry, stages) = (&self.shared.registry, &self.record.stages);
        self.unserved.retain(|stage, skill| {
            stages
                .get(stage)
                .is_some_and(|s| s == StageStatus::Running.as_str())
                && !registry.offers(skill, now, ttl_ms)
        });
        if self.unserved.len() != before {
            let unserved = &self.unserved;
            self.record
                .waiting
                .retain(|stage, _| unserved.contains_key(stage));
            self.record_dirty = true;
        }
    }
}

impl Effects for Out {
    fn dispatch(&mut self, spec: TaskSpec, engine: &Engine) {
        if let Some(send) = self.route(spec, engine) {
            self.sends.push(send);
        }
    }

    fn cancel(&mut self, task: TaskId, attempt: Attempt) {
        self.sends.push(Send::Cancel(CancelRequest {
            v: PROTOCOL_VERSION,
            run_id: self.run_id.clone(),
            task_id: Some(task),
            attempt: Some(attempt),
        }));
    }

    fn memory(&mut self, effect: Effect) {
        self.sends.push(Send::Memory(effect));
    }

    fn stage_changed(&mut self, stage: String, status: StageStatus, mode: Mode) {
        if mode == Mode::Live {
            crate::driver::metrics::stage_changed(status);
        }
        if status != StageStatus::Running && self.unserved.remove(&stage).is_some() {
            self.record.waiting.remove(&stage);
        }
        self.record.stages.insert(stage, status.as_str().to_owned());
        self.record_dirty = true;
    }
}

/// Performs the sends in order: task publishes pipelined (at most
/// [`PUBLISH_WINDOW`] acks outstanding), memory writes and cancels as
/// they come; returns once every publish is acknowledged. Owns what it
/// needs, so the run loop can poll it beside timers and cancellation.
pub(super) async fn send_all(
    shared: Arc<Shared>,
    run_id: RunId,
    sends: Vec<Send>,
) -> Result<(), StoreError> {
    let stores = &shared.stores;
    let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    for send in sends {
        match send {
            Send::Task {
                spec,
                subject,
                route,
                msg_id,
            } => {
                let now = shared.now();
                let ack = publish_task(&shared, *spec, subject, route, msg_id, now).await?;
                acks.push(ack);
            }
            Send::Batch { lead, batch } => {
                let msg_id = wire::token(&batch.batch);
                let subject = wire::subject_task_lead(&lead);
                let ack = stores.tasks.publish_batch(subject, &batch, msg_id).await?;
                acks.push(ack);
            }
            Send::Memory(effect) => super::memory::perform(&shared, &run_id, &effect).await?,
            // Best effort: fencing is the guarantee.
            Send::Cancel(req) => {
                let _ = stores.tasks.cancel(&req).await;
            }
        }
        while acks.len() >= PUBLISH_WINDOW {
            if let Some(Err(e)) = acks.next().await {
                return Err(e);
            }
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(())
}

/// Publishes a task message; inputs over the inline limit go to the
/// object store first.
async fn publish_task(
    shared: &Shared,
    mut spec: TaskSpec,
    subject: String,
    route: Route,
    msg_id: String,
    now: Millis,
) -> Result<AckFuture, StoreError> {
    let mut inputs_ref = None;
    let size = serde_json::to_vec(&spec.inputs).map_or(0, |b| b.len());
    if size > wire::INLINE_LIMIT {
        let name = format!(
            "inputs.{}",
            ResultKey::new(&spec.run_id, &spec.task_id, spec.attempt)
        );
        let name = cascade_swarm::store::content_name(&name, &spec.inputs)?; // a replaced object reads as an error
        shared.stores.objects.put_json(&name, &spec.inputs).await?;
        spec.inputs = Value::Null;
        inputs_ref = Some(name);
    }
    let message = TaskMessage {
        v: PROTOCOL_VERSION,
        spec,
        route,
        dispatched_at: now,
        inputs_ref,
        // Stamped by the coordinator's task bus (cascade_swarm::grant).
        grant: None,
    };
    shared
        .stores
        .tasks
        .publish_task(subject, &message, msg_id)
        .await
}

/// Splits a lead's tasks into batches that stay well under a message's
/// size (tasks with large inputs never reach here: they go to the mesh).
fn chunk_batch(tasks: Vec<TaskSpec>) -> Vec<Vec<TaskSpec>> {
    let mut out: Vec<Vec<TaskSpec>> = Vec::new();
    let mut size = 0;
    for t in tasks {
        let len = cascade_proto::encode(&t).map_or(0, |b| b.len());
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
    let mut h = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut h, ids.join("\n").as_bytes());
    std::hash::Hasher::finish(&h)
}
