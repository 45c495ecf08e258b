//! Pulling with backpressure: a pull asks for exactly as many messages as
//! this worker holds free permits for, so nothing is ever prefetched that
//! cannot start at once (NATS-NOTES W2PREFETCH: a prefetched message sits
//! in one worker while another is idle).
//!
//! ```text
//!  per queue: await a free permit ─▶ pull n = permits free now
//!             ─▶ each message, as it comes, takes a permit into its handler
//!             ─▶ the pull ends (n messages or expiry) ─▶ pull again
//! ```
//!
//! Permits are not reserved by open pulls: an idle skill queue holds none,
//! so one busy skill can use every slot of a worker with many skills. Several
//! queues pulling at once may receive more messages than free permits (at
//! most one pull's worth each); those wait for a permit in this worker.
//! The worker's own and lead queues are read one message ahead instead
//! ([`Gate::OneAhead`]).

use std::sync::Arc;
use std::time::Duration;

use cascade_swarm::store::{Delivery, TaskQueue, Watch};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

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
    queue: Arc<dyn TaskQueue>,
    kind: QueueKind,
    gate: Gate,
) -> Result<(), RunnerError> {
    match gate {
        Gate::Permits { share } => gated(shared, queue, kind, share).await,
        Gate::OneAhead => one_ahead(shared, queue, kind).await,
    }
}

async fn gated(
    shared: Arc<Shared>,
    queue: Arc<dyn TaskQueue>,
    kind: QueueKind,
    _share: usize,
) -> Result<(), RunnerError> {
    let stop = shared.draining.clone();
    loop {
        // Capacity first: pull only when a task could start now.
        let probe = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()), // closed: shutting down
            },
        };
        let n = 1 + shared.permits.available_permits();
        drop(probe);
        let batch = queue.pull(n, PULL_EXPIRY).await;
        match batch {
            // One open pull per queue; its messages take permits as they
            // come (no queue reserves permits it may not use).
            Ok(batch) => read_batch(&shared, batch, kind, &stop).await,
            Err(e) => {
                tracing::warn!(consumer = queue.name(), "pull request failed: {e}");
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
    queue: Arc<dyn TaskQueue>,
    kind: QueueKind,
) -> Result<(), RunnerError> {
    let stop = shared.draining.clone();
    while !stop.is_cancelled() {
        let mut batch = match queue.pull(1, PULL_EXPIRY).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = queue.name(), "pull request failed: {e}");
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

fn dispatch(shared: &Arc<Shared>, msg: Delivery, permit: OwnedSemaphorePermit, kind: QueueKind) {
    let sh = shared.clone();
    match kind {
        QueueKind::Task => spawn_named(&shared.tasks, "task", task::handle(sh, msg, permit)),
        QueueKind::Batch => spawn_named(&shared.tasks, "batch", lead::handle(sh, msg, permit)),
    }
}

/// Hands each message of one pull to its own handler with one permit,
/// waiting for a permit when the worker is busy (bounded: a pull asks for
/// at most the permits free when it was made).
async fn read_batch(
    shared: &Arc<Shared>,
    mut batch: Watch<Delivery>,
    kind: QueueKind,
    stop: &tokio_util::sync::CancellationToken,
) {
    loop {
        // Draining: stop reading at once; what the open pull still brings
        // is redelivered to another worker after the ack window.
        let item = tokio::select! {
            item = batch.next() => item,
            () = stop.cancelled() => return,
        };
        let Some(item) = item else { return };
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("pull ended: {e}");
                break;
            }
        };
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            // Draining: the handler claims the message and hands it back.
            () = stop.cancelled() => match shared.permits.clone().acquire_many_owned(0).await {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        dispatch(shared, msg, permit, kind);
    }
}
