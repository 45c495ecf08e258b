//! Dead letters. A task message that reaches its delivery limit stays in a
//! work-queue stream for ever; the server only announces it. Every
//! coordinator hears the advisory; the first one moves the message to the
//! DLQ stream with its story, deletes it, and writes a terminal failure as
//! the attempt's result so the stage fails visibly.

use std::sync::Arc;

use cascade_proto::wire::{self, BatchMessage, DeadLetter, ResultRecord, Route, TaskMessage};
use cascade_proto::{Failure, FailureKind, PROTOCOL_VERSION, TaskOutcome, TaskResult, decode};
use cascade_swarm::store::{ResultKey, StoreError};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<(), StoreError> {
    let mut advisories = shared.stores.tasks.max_deliveries().await?;
    loop {
        let adv = tokio::select! {
            a = advisories.next() => a,
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(adv) = adv else { return Ok(()) };
        let Ok((seq, deliveries)) = adv else { continue };
        dead_letter(&shared, seq, deliveries).await;
    }
}

pub async fn dead_letter(shared: &Shared, seq: u64, deliveries: u64) {
    let tasks_bus = &shared.stores.tasks;
    let Ok(Some(raw)) = tasks_bus.queued(seq).await else {
        return;
    }; // already handled
    // A task, or a lead's batch of tasks: each gets a terminal result.
    let (tasks, route): (Vec<cascade_proto::TaskSpec>, Option<Route>) =
        match decode::<TaskMessage>(&raw.payload) {
            Ok(t) => (vec![t.spec], Some(t.route)),
            Err(_) => match decode::<BatchMessage>(&raw.payload) {
                Ok(b) => (b.tasks, None),
                Err(_) => (Vec::new(), None),
            },
        };
    let skill = tasks
        .first()
        .map_or_else(|| "undecodable".to_owned(), |t| t.skill.to_string());
    let reason = reason_text(shared, tasks.first(), deliveries).await;
    let letter = DeadLetter {
        v: PROTOCOL_VERSION,
        stream_seq: seq,
        subject: raw.subject.clone(),
        deliveries,
        task: tasks.first().cloned(),
        raw: tasks.is_empty().then(|| raw.payload.to_vec()),
        reason: reason.clone(),
        at: shared.now(),
    };
    if let Err(e) = tasks_bus
        .dead_letter(
            wire::subject_dlq(&skill),
            &letter,
            Some(format!("dlq:{seq}")),
        )
        .await
    {
        tracing::warn!(stream_seq = seq, error = %e, "cannot store a dead letter; the next advisory retries");
        return;
    }
    let _ = tasks_bus.remove(seq).await;
    for spec in tasks {
        tracing::error!(run_id = %spec.run_id, stage = %spec.stage_id, task_id = %spec.task_id, attempt = %spec.attempt, deliveries, "task dead-lettered");
        crate::driver::metrics::task_dead_lettered(spec.skill.as_str());
        let result = TaskResult {
            task_id: spec.task_id.clone(),
            attempt: spec.attempt,
            worker: String::new(),
            duration_ms: 0,
            outcome: TaskOutcome::Failed(Failure::new(
                FailureKind::Terminal,
                format!("dead-lettered: {reason}"),
            )),
            usage: None,
            model: None,
            notes: Vec::new(),
        };
        let rec = ResultRecord {
            v: PROTOCOL_VERSION,
            run_id: spec.run_id.clone(),
            result,
            outputs_ref: None,
            route: route.clone(),
            // The coordinator's results store proves it.
            proof: None,
        };
        let key = ResultKey::new(&spec.run_id, &spec.task_id, spec.attempt);
        if let Err(e) = shared.stores.results.create(&key, &rec).await {
            tracing::error!(key = %key, error = %e, "cannot store a dead-lettered attempt's result");
        }
    }
}

/// Why a message ran out of deliveries, as far as the claims show: a
/// worker that claimed it and never stored a result (crashed, stopped, or
/// could not write), or no claim at all (no worker got as far as claiming
/// it: the broker refused the claim writes, or the workers lost it).
async fn reason_text(
    shared: &Shared,
    task: Option<&cascade_proto::TaskSpec>,
    deliveries: u64,
) -> String {
    let head = format!("delivered {deliveries} times without a result");
    let Some(t) = task else {
        return format!(
            "{head}: either each worker that took it crashed or lost it, or the broker refused its writes"
        );
    };
    let key = cascade_swarm::store::ClaimKey::attempt(&t.run_id, &t.task_id, t.attempt);
    match shared.stores.claims.entry(&key).await {
        Ok(Some((claim, _))) => format!(
            "{head}: the last claim is delivery {} by worker `{}`, which never stored a result \
             (it crashed or was stopped, or the broker refused its result write)",
            claim.delivered, claim.worker
        ),
        Ok(None) => format!(
            "{head}: no worker holds a claim on it, so none got as far as running it \
             (the broker refused the claim writes, or the workers lost the deliveries)"
        ),
        Err(e) => format!(
            "{head}: either each worker that took it crashed or lost it, or the broker refused \
             its writes (the claims cannot be read: {e})"
        ),
    }
}
