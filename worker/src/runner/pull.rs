//! Pulling with backpressure: a pull asks for exactly as many messages as
//! this worker holds free permits for, so nothing is ever prefetched that
//! cannot start at once (NATS-NOTES W2PREFETCH: a prefetched message sits
//! in one worker while another is idle).
//!
//! ```text
//!  loop: await 1 permit ─▶ take more free permits (up to `share`)
//!        ─▶ pull request for n = permits held ─▶ reader task (holds the n)
//!  reader: each message takes 1 permit into its handler; at the end of
//!          the batch (n messages or expiry) the unused permits return.
//! ```
//!
//! The loop does not wait for a batch to finish before the next pull: a
//! freed permit leads to a new pull request at once (no timer on the
//! latency path). `share` (concurrency / number of skill queues, rounded
//! up) bounds the permits one queue holds in open pulls, so an idle skill
//! queue cannot hold every permit in a long poll. The worker's own and
//! lead queues are read one message ahead instead ([`Gate::OneAhead`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{RunnerError, Shared, lead, spawn_named, task};

/// How long the server keeps a pull request open. Bounds how long an idle
/// queue holds its permits and how long a drain waits for open pulls.
const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// Back-off after a failed pull request (server unreachable, consumer gone).
const PULL_RETRY: Duration = Duration::from_millis(250);

/// What the messages of a queue are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueKind {
    /// A `TaskMessage` (mesh or star).
    Task,
    /// A `BatchMessage` for a team lead.
    Batch,
}

/// How a queue's pulls are gated.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Gate {
    /// A competing queue (a skill's): pulls only for free permits, at most
    /// `share` of them waiting in open pulls at a time.
    Permits { share: usize },
    /// A queue only this worker reads (its own, its lead queue): one
    /// message at a time is pulled without a permit and then waits for one.
    /// No other worker could run it, so holding it idles nobody, and an
    /// idle own queue holds no permit the skill queues need.
    OneAhead,
}

pub(crate) async fn pull_loop(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    kind: QueueKind,
    gate: Gate,
) -> Result<(), RunnerError> {
    match gate {
        Gate::Permits { share } => gated(shared, consumer, kind, share).await,
        Gate::OneAhead => one_ahead(shared, consumer, kind).await,
    }
}

async fn gated(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    kind: QueueKind,
    share: usize,
) -> Result<(), RunnerError> {
    let stop = shared.draining.clone();
    // Permits this queue may hold in open pulls (not counting running tasks).
    let slots = Arc::new(Semaphore::new(share));
    loop {
        let (mut slot, mut permits) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            pair = async {
                let slot = slots.clone().acquire_owned().await;
                let permit = shared.permits.clone().acquire_owned().await;
                (slot, permit)
            } => match pair {
                (Ok(s), Ok(p)) => (s, p),
                _ => return Ok(()), // closed: shutting down
            },
        };
        while let Ok(s) = slots.clone().try_acquire_owned() {
            match shared.permits.clone().try_acquire_owned() {
                Ok(p) => {
                    slot.merge(s);
                    permits.merge(p);
                }
                Err(_) => break,
            }
        }
        let n = permits.num_permits();
        match consumer
            .batch()
            .max_messages(n)
            .expires(PULL_EXPIRY)
            .messages()
            .await
        {
            Ok(batch) => {
                let sh = shared.clone();
                spawn_named(
                    &shared.tasks,
                    "batch-reader",
                    read_batch(sh, batch, permits, slot, kind),
                );
            }
            Err(e) => {
                drop((slot, permits));
                tracing::warn!(consumer = ?consumer.cached_info().name, "pull request failed: {e}");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(PULL_RETRY) => {}
                }
            }
        }
    }
}

async fn one_ahead(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    kind: QueueKind,
) -> Result<(), RunnerError> {
    let stop = shared.draining.clone();
    while !stop.is_cancelled() {
        let mut batch = match consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRY)
            .messages()
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = ?consumer.cached_info().name, "pull request failed: {e}");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(PULL_RETRY) => {}
                }
                continue;
            }
        };
        let Some(Ok(msg)) = batch.next().await else {
            continue; // expired empty, or ended: pull again
        };
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => p,
            // Draining: the handler gives the message back (claim, nak);
            // it needs no capacity for that.
            () = stop.cancelled() => shared.permits.clone().acquire_many_owned(0).await,
        };
        let Ok(permit) = permit else { return Ok(()) };
        dispatch(&shared, msg, permit, kind);
    }
    Ok(())
}

fn dispatch(
    shared: &Arc<Shared>,
    msg: jetstream::Message,
    permit: OwnedSemaphorePermit,
    kind: QueueKind,
) {
    let sh = shared.clone();
    match kind {
        QueueKind::Task => spawn_named(&shared.tasks, "task", task::handle(sh, msg, permit)),
        QueueKind::Batch => spawn_named(&shared.tasks, "batch", lead::handle(sh, msg, permit)),
    }
}

/// Hands each message of one pull to its own handler with one permit.
async fn read_batch(
    shared: Arc<Shared>,
    mut batch: async_nats::jetstream::consumer::pull::Batch,
    mut permits: OwnedSemaphorePermit,
    mut slots: OwnedSemaphorePermit,
    kind: QueueKind,
) -> Result<(), RunnerError> {
    while let Some(item) = batch.next().await {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("pull ended: {e}");
                break;
            }
        };
        // The server never sends more than asked; if it did, the extra
        // message still gets a permit (waiting for one) rather than none.
        let permit = match permits.split(1) {
            Some(p) => p,
            None => match shared.permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        // The message no longer waits in an open pull: its slot is free.
        drop(slots.split(1));
        dispatch(&shared, msg, permit, kind);
    }
    Ok(())
}
