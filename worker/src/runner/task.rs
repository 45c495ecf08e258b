//! One task message, from delivery to ack.
//!
//! ```text
//!  decode ──garbage──▶ dead-letter, term (never retried)
//!    │
//!  claim ──lost──▶ drop (no ack: the newer delivery owns the message)
//!    │ won
//!  draining? ──▶ nak(delay)        result already stored? ──▶ ack
//!    │
//!  execute ═══ progress every ack_wait/3 (claim lost ─▶ cancel, drop)
//!    │           grace over ─▶ nak(delay)
//!  claim still ours? ─▶ create result (first wins; lost: discard, count)
//!    ─▶ double ack (if the claim is still ours)
//! ```
//!
//! A skill that failed is a completed attempt: its Failed result is stored
//! and the message acked; retries are the coordinator's decision, while
//! redelivery is for workers that crashed.

use cascade_swarm::clock::now_ms;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cascade_proto::wire::{self, DeadLetter, ResultRecord, TaskMessage};
use cascade_proto::{PROTOCOL_VERSION, TaskOutcome, TaskResult, TaskSpec, decode};
use cascade_swarm::store::{ClaimKey, Created, Delivery, Position, ResultKey};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::fence::{self, Claimed, Fence};
use super::registry::InFlight;
use super::{DRAIN_NAK_DELAY, RunnerError, Shared};

pub(crate) async fn handle(
    shared: Arc<Shared>,
    msg: Delivery,
    _permit: OwnedSemaphorePermit,
) -> Result<(), RunnerError> {
    let _in_flight = InFlight::enter(&shared.stats);
    let delivery = msg.position();
    let tm = match decode::<TaskMessage>(msg.payload()) {
        Ok(tm) if tm.v == PROTOCOL_VERSION => tm,
        Ok(tm) => {
            return reject(
                &shared,
                &msg,
                delivery,
                format!(
                    "protocol version {} (this worker speaks {PROTOCOL_VERSION})",
                    tm.v
                ),
            )
            .await;
        }
        Err(e) => return reject(&shared, &msg, delivery, e.to_string()).await,
    };
    let spec = &tm.spec;
    let span = tracing::info_span!("attempt", run_id = %spec.run_id, stage = %spec.stage_id,
        task_id = %spec.task_id, attempt = %spec.attempt, delivered = delivery.delivered);
    cascade_swarm::ops::task_received(spec.skill.as_str(), delivery.delivered);
    cascade_swarm::ops::trace::set_parent(&span, &msg, &spec.run_id);
    attempt(&shared, &msg, delivery, tm).instrument(span).await
}

async fn attempt(
    shared: &Shared,
    msg: &Delivery,
    delivery: Position,
    tm: TaskMessage,
) -> Result<(), RunnerError> {
    let spec = &tm.spec;
    let claim_key = ClaimKey::attempt(&spec.run_id, &spec.task_id, spec.attempt);
    let result_key =
        ResultKey::new(&spec.run_id, &spec.task_id, spec.attempt).with_grant(tm.grant.clone());
    let key = result_key.to_string();
    // A message that arrived after the drain began is handed back; one
    // claimed before is in flight and gets the grace period.
    let arrived_draining = shared.draining.is_cancelled();
    let claimed = through_outage(shared, msg, "claim", &key, Persist::UntilGraceEnds, || {
        fence::claim(
            shared.stores.claims.as_ref(),
            claim_key.clone(),
            &shared.config.name,
            delivery,
            tm.grant.as_deref(),
        )
    })
    .await?;
    let fence = match claimed {
        Claimed::Won(f) => f,
        Claimed::Lost { holder, delivered } => {
            shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                key,
                holder,
                their_delivery = delivered,
                mine = delivery.delivered,
                "a newer delivery holds this task: dropping mine without acking"
            );
            return Ok(());
        }
    };
    if arrived_draining {
        fence.nak(msg, DRAIN_NAK_DELAY).await?;
        return Ok(());
    }
    if !shared
        .live_runs
        .wants(shared.stores.runs.as_ref(), &spec.run_id)
        .await
    {
        tracing::debug!(key, "the run is over or cancelled: dropping the task unrun");
        shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
        fence.ack(msg).await?;
        return Ok(());
    }
    // An earlier delivery may have stored the result and died before its ack.
    if delivery.delivered > 1 {
        let stored = through_outage(
            shared,
            msg,
            "read result",
            &key,
            Persist::UntilGraceEnds,
            || async { Ok(shared.stores.results.get(&result_key).await?) },
        )
        .await?;
        if stored.is_some() {
            tracing::debug!(key, "result already stored by an earlier delivery: acking");
            fence.ack(msg).await?;
            return Ok(());
        }
    }
    let run_id = tm.spec.run_id.clone();
    let spec = match prepare(shared, tm.spec, tm.inputs_ref.as_deref()).await {
        Ok(spec) => spec,
        Err(e) => {
            // The inputs object is missing or unreadable: let the queue retry
            // (and dead-letter it at max_deliver) rather than run without inputs.
            tracing::warn!(key, "cannot load inputs: {e}");
            fence.nak(msg, DRAIN_NAK_DELAY).await?;
            return Ok(());
        }
    };
    let Some(result) = execute(shared, msg, &fence, &spec).await else {
        return Ok(());
    };
    cascade_swarm::ops::task_executed(spec.skill.as_str(), &result);
    if shared.hard_stop.is_cancelled() {
        if fence.nak(msg, DRAIN_NAK_DELAY).await? {
            tracing::info!(key, "unfinished at the end of the grace period: naked");
        }
        return Ok(());
    }
    complete(shared, msg, &fence, (run_id, tm.route), result_key, result).await
}

/// Dead-letters a message that cannot be a task, then terms it.
pub(crate) async fn reject(
    shared: &Shared,
    msg: &Delivery,
    delivery: Position,
    reason: String,
) -> Result<(), RunnerError> {
    shared.stats.undecodable.fetch_add(1, Ordering::Relaxed);
    cascade_swarm::ops::task_undecodable();
    tracing::warn!(
        subject = msg.subject(),
        stream_seq = delivery.stream_seq,
        "undecodable task message dead-lettered: {reason}"
    );
    let letter = DeadLetter {
        v: PROTOCOL_VERSION,
        stream_seq: delivery.stream_seq,
        subject: msg.subject().to_owned(),
        deliveries: delivery.delivered,
        task: None,
        raw: Some(msg.payload().to_vec()),
        reason,
        at: now_ms(),
    };
    shared
        .stores
        .tasks
        .dead_letter(wire::subject_dlq("undecodable"), &letter, None)
        .await?;
    // Nothing can claim garbage, so nothing can fence it: term it directly.
    Ok(msg.term().await?)
}

/// The spec as this worker runs it: inputs loaded by reference, and a
/// working directory that exists here.
async fn prepare(
    shared: &Shared,
    mut spec: TaskSpec,
    inputs_ref: Option<&str>,
) -> Result<TaskSpec, RunnerError> {
    if let Some(name) = inputs_ref {
        spec.inputs = shared.stores.objects.get_json(name).await?;
    }
    let usable = spec
        .workdir
        .as_deref()
        .is_some_and(|d| Path::new(d).is_dir());
    if !usable {
        if let Some(dir) = &spec.workdir {
            tracing::debug!(
                workdir = dir,
                "task workdir does not exist here: using the worker's"
            );
        }
        spec.workdir = Some(shared.config.workdir.to_string_lossy().into_owned());
    }
    Ok(spec)
}

/// Runs the attempt, sending progress every ack_wait/3 while the claim is
/// ours. `None` when the claim was lost meanwhile (the result is dropped).
async fn execute(
    shared: &Shared,
    msg: &Delivery,
    fence: &Fence<'_>,
    spec: &TaskSpec,
) -> Option<TaskResult> {
    let token = shared.hard_stop.child_token();
    let _registered = shared.running.register(
        (spec.run_id.clone(), spec.task_id.clone(), spec.attempt),
        token.clone(),
    );
    let period = shared.swarm.settings.ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let run = shared.exec.execute(spec, &token);
    tokio::pin!(run);
    let mut lost = false;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick(), if !lost => match fence.progress(msg).await {
                Ok(true) => {
                    // A cancel request can arrive before this attempt was
                    // registered and be missed: the run's record is the
                    // authority, checked at every progress tick.
                    if !token.is_cancelled() && !shared.live_runs.wants(shared.stores.runs.as_ref(), &spec.run_id).await {
                        tracing::info!(key = %fence.key, "the run is over or cancelled: stopping");
                        token.cancel();
                    }
                }
                Ok(false) => {
                    tracing::info!(key = %fence.key, "claim taken over by a newer delivery: stopping");
                    lost = true;
                    token.cancel();
                }
                Err(e) => {
                    // The claim cannot be touched (the broker is down):
                    // keep the delivery alive anyway, or the outage turns
                    // into a redelivery that counts toward max_deliver.
                    tracing::warn!(key = %fence.key, "progress: {e}");
                    if e.is_broker_fault()
                        && let Err(e) = msg.progress().await
                    {
                        tracing::warn!(key = %fence.key, "progress ack: {e}");
                    }
                }
            },
        }
    };
    if lost {
        shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(result)
}

/// Stores the result (first completion wins) and acks.
async fn complete(
    shared: &Shared,
    msg: &Delivery,
    fence: &Fence<'_>,
    (run_id, route): (cascade_proto::RunId, wire::Route),
    result_key: ResultKey,
    mut result: TaskResult,
) -> Result<(), RunnerError> {
    let key = result_key.to_string();
    // From here on the task has run: its result is retried through a
    // broker outage for as long as it takes (never re-run, never dropped
    // silently), the delivery kept alive with progress acks meanwhile.
    let ours = through_outage(shared, msg, "touch claim", &key, Persist::Always, || {
        fence.still_ours()
    })
    .await?;
    if !ours {
        shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            key,
            "finished, but a newer delivery holds the task: result dropped"
        );
        return Ok(());
    }
    let failed = matches!(result.outcome, TaskOutcome::Failed(_));
    let mut outputs_ref = None;
    if let TaskOutcome::Succeeded { outputs } = &mut result.outcome {
        let json = serde_json::to_vec(outputs)
            .map_err(|e| RunnerError::nats("encode outputs", &key, e))?;
        if json.len() > wire::INLINE_LIMIT {
            // Objects are named after this worker's result key: no two
            // workers write one name.
            let name =
                cascade_swarm::store::content_name(&result_key.of_writer(&result.worker), outputs)?;
            through_outage(
                shared,
                msg,
                "store outputs",
                &key,
                Persist::Always,
                || async { Ok(shared.stores.objects.put_json(&name, outputs).await?) },
            )
            .await?;
            *outputs = Value::Null;
            outputs_ref = Some(name);
        }
    }
    // Proof that this worker was delivered the attempt.
    let proof = result_key
        .grant()
        .map(|g| cascade_swarm::grant::proof(g, &result.worker));
    let record = ResultRecord {
        v: PROTOCOL_VERSION,
        run_id,
        result,
        outputs_ref,
        route: Some(route),
        proof,
    };
    let created = through_outage(
        shared,
        msg,
        "store result",
        &key,
        Persist::Always,
        || async { Ok(shared.stores.results.create(&result_key, &record).await?) },
    )
    .await?;
    match created {
        Created::Written => {
            shared.stats.completed.fetch_add(1, Ordering::Relaxed);
            if failed {
                shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            // Ours is the attempt's result: the message may go without a
            // claim check. Should a newer delivery hold it, that worker finds
            // the stored result and stops; nothing is lost (the danger of a
            // late ack is deleting work that has no result yet).
            if super::failpoint("after-result-before-ack") {
                std::process::abort();
            }
            msg.ack().await?;
        }
        Created::Exists => {
            shared.stats.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                key,
                "another worker stored this attempt's result first: ours discarded"
            );
            if !fence.ack(msg).await? {
                tracing::info!(
                    key,
                    "result stored by another, and a newer delivery holds the message: not acking"
                );
            }
        }
    }
    Ok(())
}

/// How long a write is retried through a broker outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    /// Until the worker's shutdown grace ends (nothing has run yet).
    UntilGraceEnds,
    /// Until it is written (the task ran: its result must not be lost).
    Always,
}

/// The first and the longest pause between tries of a write the broker
/// could not take.
const OUTAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Runs `op` until it succeeds or fails for a reason of its own. While the
/// broker is unavailable ([`RunnerError::is_broker_fault`]) it backs off
/// (bounded exponential, never beyond a third of the ack window) and keeps
/// the delivery alive with progress acks: an outage is not a delivery and
/// must not count toward max_deliver.
async fn through_outage<T, F, Fut>(
    shared: &Shared,
    msg: &Delivery,
    what: &'static str,
    key: &str,
    persist: Persist,
    mut op: F,
) -> Result<T, RunnerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RunnerError>>,
{
    let cap = OUTAGE_BACKOFF
        .1
        .min(shared.swarm.settings.ack_wait / 3)
        .max(OUTAGE_BACKOFF.0);
    let mut pause = OUTAGE_BACKOFF.0;
    let mut tries = 0u32;
    loop {
        let e = match op().await {
            Ok(v) => {
                if tries > 0 {
                    tracing::info!(key, tries, "{what}: the broker is back");
                }
                return Ok(v);
            }
            Err(e) => e,
        };
        let grace_over = shared.hard_stop.is_cancelled();
        if !e.is_broker_fault() || (persist == Persist::UntilGraceEnds && grace_over) {
            return Err(e);
        }
        tries += 1;
        if persist == Persist::Always && grace_over {
            tracing::error!(
                key,
                tries,
                "{what}: the broker is unavailable; the task ran, so shutdown waits until its result is stored: {e}"
            );
        } else {
            tracing::warn!(
                key,
                tries,
                "{what}: the broker is unavailable, retrying in {pause:?}: {e}"
            );
        }
        if let Err(e) = msg.progress().await {
            tracing::debug!(key, "progress ack during the outage: {e}");
        }
        if persist == Persist::UntilGraceEnds {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shared.hard_stop.cancelled() => {}
            }
        } else {
            tokio::time::sleep(pause).await;
        }
        pause = (pause * 2).min(cap);
    }
}
