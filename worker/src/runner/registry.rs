//! The worker's entry in the workers bucket: registered at start,
//! re-written every `worker_ttl / 3` with live counters (the bucket's
//! max_age removes a worker that stops beating), marked draining on
//! shutdown and deleted at the end of a clean drain.

use cascade_swarm::clock::now_ms;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use std::sync::Arc;

use cascade_proto::wire::WorkerInfo;
use cascade_proto::{Millis, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use super::{Config, RunnerError};

/// Counters shared by every task of the worker; read by the heartbeat.
#[derive(Debug, Default)]
pub struct Stats {
    pub in_flight: AtomicU32,
    /// Attempts whose result this worker stored (succeeded or failed).
    pub completed: AtomicU64,
    /// Of those, the ones whose skill failed.
    pub failed: AtomicU64,
    /// Results discarded because another worker stored one first.
    pub discarded: AtomicU64,
    /// Messages dropped because a newer delivery held the claim.
    pub fenced: AtomicU64,
    /// Messages that did not decode (dead-lettered and termed).
    pub undecodable: AtomicU64,
    pub draining: AtomicBool,
}

/// Decrements `in_flight` when dropped, so no return path forgets it.
pub(crate) struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    pub fn enter(stats: &'a Stats) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        cascade_swarm::ops::in_flight(1.0);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        cascade_swarm::ops::in_flight(-1.0);
    }
}

/// Writes this worker's registration.
#[derive(Clone)]
pub(crate) struct Registration {
    store: Arc<dyn cascade_swarm::store::Registry>,
    info: WorkerInfo,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Registration {
    pub fn new(
        store: Arc<dyn cascade_swarm::store::Registry>,
        config: &Config,
        started_at: Millis,
    ) -> Self {
        Registration {
            store,
            info: WorkerInfo {
                v: PROTOCOL_VERSION,
                name: config.name.clone(),
                skills: config.skills.clone(),
                labels: config.labels.clone(),
                role: config.role,
                concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
                in_flight: 0,
                draining: false,
                started_at,
                heartbeat_at: started_at,
                completed: 0,
                failed: 0,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                capabilities: config
                    .skills
                    .iter()
                    .any(|s| s == "codex-sandbox")
                    .then(cascade_exec::sandbox::capability)
                    .into_iter()
                    .collect(),
                models: config.models.available(),
            },
        }
    }

    /// Puts the current state (counters from `stats`).
    pub async fn beat(&self, stats: &Stats) -> Result<(), RunnerError> {
        let mut info = self.info.clone();
        info.in_flight = stats.in_flight.load(Ordering::Relaxed);
        info.completed = stats.completed.load(Ordering::Relaxed);
        info.failed = stats.failed.load(Ordering::Relaxed);
        info.draining = stats.draining.load(Ordering::Relaxed);
        info.heartbeat_at = now_ms();
        self.store.put(&info).await?;
        Ok(())
    }

    /// Beats every `worker_ttl / 3` until `stop`; a failed beat is logged and
    /// retried at the next tick (the bucket TTL is the safety net).
    pub async fn heartbeat(
        &self,
        stats: &Stats,
        period: std::time::Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: registration just happened
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.beat(stats).await {
                tracing::warn!("worker heartbeat: {e}");
            }
        }
    }

    pub async fn remove(&self) -> Result<(), RunnerError> {
        Ok(self.store.remove(&self.info.name).await?)
    }
}
