//! Team lead (hierarchical topology): a `BatchMessage` is fanned out to the
//! live members that have each task's skill (round-robin, on each member's
//! own subject; the skill's mesh queue when no member has it), the lead
//! waits until every task has a result in the results bucket, publishes one
//! [`BatchReport`] and acks the batch. The batch message is fenced like a
//! task (claim `key_claim_batch`) and kept alive with progress acks.
//!
//! A redelivered batch re-publishes its tasks with the same message ids
//! (`run:task:attempt`), so the stream's duplicate window drops the copies.

use cascade_swarm::clock::now_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cascade_proto::wire::{
    self, BatchMessage, BatchReport, Route, TaskMessage, WorkerInfo, WorkerRole,
};
use cascade_proto::{PROTOCOL_VERSION, TaskOutcome, decode};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use cascade_swarm::store::{AckFuture, ClaimKey, Delivery, ResultKey};

use super::fence::{self, Claimed, Fence};
use super::registry::InFlight;
use super::{DRAIN_NAK_DELAY, RunnerError, Shared, task};

/// Spreads a lead's tasks over its members.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin(AtomicUsize);

pub(crate) async fn handle(
    shared: Arc<Shared>,
    msg: Delivery,
    _permit: OwnedSemaphorePermit,
) -> Result<(), RunnerError> {
    let _in_flight = InFlight::enter(&shared.stats);
    let delivery = msg.position();
    let batch = match decode::<BatchMessage>(msg.payload()) {
        Ok(b) if b.v == PROTOCOL_VERSION => b,
        Ok(b) => {
            let reason = format!(
                "batch of protocol version {} (this worker speaks {PROTOCOL_VERSION})",
                b.v
            );
            return task::reject(&shared, &msg, delivery, reason).await;
        }
        Err(e) => return task::reject(&shared, &msg, delivery, e.to_string()).await,
    };
    let claim_key = ClaimKey::batch(&batch.run_id, &batch.batch);
    let key = claim_key.to_string();
    let fence = match fence::claim(
        shared.stores.claims.as_ref(),
        claim_key,
        &shared.config.name,
        delivery,
        batch.grant.as_deref(),
    )
    .await?
    {
        Claimed::Won(f) => f,
        Claimed::Lost { holder, .. } => {
            shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                key,
                holder,
                "a newer delivery holds this batch: dropping mine"
            );
            return Ok(());
        }
    };
    if shared.draining.is_cancelled() {
        fence.nak(&msg, DRAIN_NAK_DELAY).await?;
        return Ok(());
    }
    let assigned = fan_out(&shared, &batch).await?;
    tracing::info!(run_id = %batch.run_id, batch = batch.batch, tasks = batch.tasks.len(), "batch fanned out");
    let Some((succeeded, failed)) = await_results(&shared, &msg, &fence, &batch).await? else {
        return Ok(());
    };
    let report = BatchReport {
        v: PROTOCOL_VERSION,
        batch: batch.batch.clone(),
        run_id: batch.run_id.clone(),
        lead: shared.config.name.clone(),
        assigned,
        succeeded,
        failed,
        at: now_ms(),
    };
    shared.stores.tasks.report_batch(&report).await?;
    fence.ack(&msg).await?;
    tracing::info!(run_id = %batch.run_id, batch = batch.batch, succeeded, failed, "batch done");
    Ok(())
}

/// Live members of the swarm (fresh heartbeat, not draining).
async fn members(shared: &Shared) -> Result<Vec<WorkerInfo>, RunnerError> {
    let ttl = u64::try_from(shared.stores.settings.worker_ttl.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms();
    let mut out: Vec<WorkerInfo> = shared
        .stores
        .registry
        .list()
        .await?
        .into_iter()
        .filter(|info| {
            info.role == WorkerRole::Member
                && !info.draining
                && now.saturating_sub(info.heartbeat_at) <= ttl
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Publishes every task of the batch to a member; returns task -> member.
async fn fan_out(
    shared: &Shared,
    batch: &BatchMessage,
) -> Result<BTreeMap<String, String>, RunnerError> {
    let members = members(shared).await?;
    let mut assigned = BTreeMap::new();
    let mut acks: Vec<AckFuture> = Vec::new();
    for spec in &batch.tasks {
        let able: Vec<&WorkerInfo> = members
            .iter()
            .filter(|w| w.skills.iter().any(|s| s == spec.skill.as_str()))
            .collect();
        let (subject, member) = if able.is_empty() {
            (wire::subject_task_skill(spec.skill.as_str()), String::new())
        } else {
            let i = shared.members.0.fetch_add(1, Ordering::Relaxed) % able.len();
            (
                wire::subject_task_worker(&able[i].name),
                able[i].name.clone(),
            )
        };
        assigned.insert(spec.task_id.to_string(), member);
        let message = TaskMessage {
            v: PROTOCOL_VERSION,
            spec: spec.clone(),
            route: Route::ViaLead {
                lead: shared.config.name.clone(),
                batch: batch.batch.clone(),
            },
            dispatched_at: now_ms(),
            inputs_ref: None,
            // The member proves its result with the attempt's grant.
            grant: batch.grants.get(spec.task_id.as_str()).cloned(),
        };
        let msg_id = format!("{}:{}:{}", spec.run_id, spec.task_id, spec.attempt);
        let ack = shared
            .stores
            .tasks
            .publish_task(subject, &message, msg_id)
            .await?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(assigned)
}

/// Waits (progress-acking the batch) until every task has a result;
/// `None` when the batch was lost to a newer delivery or given back on drain.
async fn await_results(
    shared: &Shared,
    msg: &Delivery,
    fence: &Fence<'_>,
    batch: &BatchMessage,
) -> Result<Option<(u32, u32)>, RunnerError> {
    let mut waiting: BTreeSet<ResultKey> = batch
        .tasks
        .iter()
        .map(|t| ResultKey::new(&t.run_id, &t.task_id, t.attempt))
        .collect();
    let pattern = wire::key_results_of_run(&batch.run_id);
    let mut watch = shared.stores.results.watch_run(&batch.run_id).await?;
    let period = shared.swarm.settings.ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let (mut succeeded, mut failed) = (0, 0);
    while !waiting.is_empty() {
        tokio::select! {
            () = shared.hard_stop.cancelled() => {
                fence.nak(msg, DRAIN_NAK_DELAY).await?;
                return Ok(None);
            }
            _ = tick.tick() => if !fence.progress(msg).await? {
                tracing::info!(key = %fence.key, "batch taken over by a newer delivery");
                return Ok(None);
            },
            entry = watch.next() => {
                let Some(entry) = entry else {
                    return Err(RunnerError::nats("watch results", &pattern, "watch ended"));
                };
                // An undecodable result still ends its attempt, as a failure.
                let (key, ok) = match entry {
                    Ok(r) => (
                        ResultKey::new(&r.run_id, &r.result.task_id, r.result.attempt),
                        matches!(r.result.outcome, TaskOutcome::Succeeded { .. }),
                    ),
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(_) => continue,
                };
                if !waiting.remove(&key) {
                    continue;
                }
                if ok { succeeded += 1 } else { failed += 1 }
            }
        }
    }
    Ok(Some((succeeded, failed)))
}
