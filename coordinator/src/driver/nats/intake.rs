//! Submissions: consumed durably from the submit queue by every
//! coordinator (they compete), recorded as runs, then owned.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use cascade_proto::wire::{self, DeadLetter, RunRecord, RunState, Submission};
use cascade_proto::{PROTOCOL_VERSION, RunId, decode_current};
use cascade_swarm::Swarm;
use cascade_swarm::store::StoreError;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("submit consumer `{}`: {source}", wire::CONSUMER_SUBMIT)]
    Consumer {
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("submit consumer `{}`: {source}", wire::CONSUMER_SUBMIT)]
    Messages {
        #[source]
        source: async_nats::jetstream::consumer::StreamError,
    },
}

pub async fn consumer(swarm: &Swarm) -> Result<PullConsumer, IntakeError> {
    let cfg = consumer::pull::Config {
        durable_name: Some(wire::CONSUMER_SUBMIT.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    };
    swarm
        .submit
        .get_or_create_consumer(wire::CONSUMER_SUBMIT, cfg)
        .await
        .map_err(|source| IntakeError::Consumer { source })
}

/// Takes submissions until cancelled; every new run id goes to `owned`
/// so this coordinator tries to drive it at once.
pub async fn run(
    shared: Arc<Shared>,
    swarm: Swarm,
    owned: mpsc::Sender<RunId>,
    cancel: CancellationToken,
) -> Result<(), IntakeError> {
    let consumer = consumer(&swarm).await?;
    let messages_of = async |c: &PullConsumer| {
        c.messages()
            .await
            .map_err(|source| IntakeError::Messages { source })
    };
    let mut messages = messages_of(&consumer).await?;
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(Ok(msg)) = msg else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            messages = messages_of(&consumer).await?;
            continue;
        };
        match decode_current::<Submission>(&msg.payload) {
            Ok(sub) => {
                let run_id = sub.run_id.clone();
                match record(&shared, &sub).await {
                    Ok(()) => {
                        let _ = msg.ack().await;
                        let _ = owned.send(run_id).await;
                    }
                    Err(e) => {
                        // Not stored: let it come back rather than lose it.
                        tracing::warn!(run_id = %run_id, error = %e, "cannot record a submission; it will be redelivered");
                        let _ = msg
                            .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                                Duration::from_secs(1),
                            )))
                            .await;
                    }
                }
            }
            Err(e) => {
                // Garbage, or a protocol version this coordinator does not
                // speak (workers would refuse its tasks), is never retried:
                // kept in the dead-letter stream with the reason, then
                // dropped from the queue.
                let reason = if e.is_version() {
                    format!("refused submission: {e}")
                } else {
                    format!("undecodable submission: {e}")
                };
                tracing::warn!(error = %e, "{reason}; dead-lettered");
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                let letter = DeadLetter {
                    v: PROTOCOL_VERSION,
                    stream_seq: seq,
                    subject: msg.subject.to_string(),
                    deliveries: msg.info().map(|i| i.delivered as u64).unwrap_or(1),
                    task: None,
                    raw: Some(msg.payload.to_vec()),
                    reason,
                    at: shared.now(),
                };
                if let Err(e) = shared
                    .stores
                    .tasks
                    .dead_letter(wire::subject_dlq("submissions"), &letter, None)
                    .await
                {
                    tracing::warn!(error = %e, "cannot store the dead letter");
                }
                let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
            }
        }
    }
}

/// The submission and a queued run record, unless they exist already (a
/// redelivered submission changes nothing; a record that exists, queued
/// and maybe with a cancel request, is never overwritten).
async fn record(shared: &Shared, sub: &Submission) -> Result<(), StoreError> {
    shared.stores.submissions.create(sub).await?;
    let rec = RunRecord {
        v: PROTOCOL_VERSION,
        run_id: sub.run_id.clone(),
        cascade: sub.main.clone(),
        state: RunState::Queued,
        created_at: sub.submitted_at,
        updated_at: shared.now(),
        owner: None,
        stages: Default::default(),
        error: None,
        cancel_requested: None,
        waiting: Default::default(),
        degraded: None,
    };
    shared.stores.runs.create(&rec).await?;
    Ok(())
}
