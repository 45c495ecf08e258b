//! Attempts running on this worker, by (run, task, attempt), each with the
//! token that stops it; and the listener that applies `CancelRequest`s from
//! `cascade.cancel.>` (core NATS, best effort: fencing is the guarantee).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cascade_proto::wire::CancelRequest;
use cascade_proto::{Attempt, PROTOCOL_VERSION, RunId, TaskId};
use cascade_swarm::store::TaskBus;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::RunnerError;

type Key = (RunId, TaskId, Attempt);

/// The running attempts. The lock is only held for map operations, never
/// across an `.await`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Running {
    map: Arc<Mutex<HashMap<Key, CancellationToken>>>,
}

/// Removes its attempt from [`Running`] when dropped.
pub(crate) struct Registered {
    running: Running,
    key: Key,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.running.lock().remove(&self.key);
    }
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, CancellationToken>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove calls), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn register(&self, key: Key, token: CancellationToken) -> Registered {
        self.lock().insert(key.clone(), token);
        Registered {
            running: self.clone(),
            key,
        }
    }

    /// Cancels every running attempt the request names; returns how many.
    pub fn cancel(&self, req: &CancelRequest) -> usize {
        let map = self.lock();
        let mut n = 0;
        for ((run, task, attempt), token) in map.iter() {
            let hit = *run == req.run_id
                && req.task_id.as_ref().is_none_or(|t| t == task)
                && req.attempt.is_none_or(|a| a == *attempt);
            if hit {
                token.cancel();
                n += 1;
            }
        }
        n
    }
}

/// Subscribes to every cancel request and applies it until `stop`.
pub(crate) async fn listen(
    bus: Arc<dyn TaskBus>,
    running: Running,
    live_runs: std::sync::Arc<super::runs::LiveRuns>,
    stop: CancellationToken,
) -> Result<(), RunnerError> {
    let mut requests = bus.cancels().await?;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = requests.next() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        match next {
            Ok(req) if req.v == PROTOCOL_VERSION => {
                live_runs.forget(&req.run_id);
                let n = running.cancel(&req);
                if n > 0 {
                    tracing::info!(run_id = %req.run_id, cancelled = n, "cancel request applied");
                }
            }
            Ok(req) => {
                tracing::warn!(v = req.v, run_id = %req.run_id, "cancel request of another protocol version ignored")
            }
            Err(e) => {
                tracing::warn!("undecodable cancel request ignored: {e}")
            }
        }
    }
}
