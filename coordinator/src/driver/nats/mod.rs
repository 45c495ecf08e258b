//! The NATS JetStream driver: `coordinator serve`.
//!
//! ```text
//!  serve ─┬─ intake      submissions ─▶ run records ─▶ own them
//!         ├─ owner       every lease_ttl/3: runs not final and not owned ─▶ try the lease;
//!         │              lease watch: a revision unchanged for a TTL (monotonic) ─▶ take it over
//!         │     └─ run driver per owned run (run.rs): replay, then events ⇄ engine ⇄ effects
//!         ├─ registry    watch of the workers bucket (routing, sweeping)
//!         └─ dlq         max-deliveries advisories ─▶ dead-letter stream + terminal result
//! ```
//! Several coordinators may serve the same swarm: they compete for
//! submissions, and a run is driven by whoever holds its lease; a
//! coordinator that dies stops renewing and another one replays the run's
//! log and carries on.

mod dispatch;
mod dlq;
mod intake;
mod lease;
mod log;
mod memory;
mod record;
mod route;
mod run;
mod state;
mod sweep;
#[cfg(test)]
mod tests;

pub use run::PlanError;
pub(crate) use run::plan_of;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cascade_proto::{Millis, RunId};
use cascade_swarm::Swarm;
use cascade_swarm::store::{Acquired, LeaseChange, StoreError, Stores, WorkerChange};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use route::{Registry, Target};

/// Registry updates between two prunings of long-silent workers.
const PRUNE_EVERY: u64 = 256;

/// Run ids waiting to be tried for ownership. Intake adds one per
/// submission; the owner loop drains it; a full queue only delays a run
/// until the next periodic scan.
const OWN_QUEUE: usize = 1024;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// This coordinator's name (lease owner, logs).
    pub name: String,
    /// How long a run's lease lasts without renewal (renewed every third).
    pub lease_ttl: Duration,
    /// The models file runs are planned with (routing, prices, fallbacks).
    pub models: std::sync::Arc<cascade_core::models::ModelCatalog>,
    /// Whether submitted cascades' `on_run_end` hooks run here.
    pub allow_submitted_commands: bool,
}

/// What every task of a coordinator shares: the stores (NATS in
/// production, in memory in the driver's tests), options, the registry.
pub(crate) struct Shared {
    pub stores: Stores,
    pub opts: ServeOptions,
    pub registry: Registry,
    /// Wall-clock milliseconds ([`now_ms`]; tests run on tokio's clock).
    pub clock: fn() -> Millis,
    /// Runs whose driving failed on an unavailable broker: since when
    /// (milliseconds) and the last error, until a drive gets through.
    pub degraded: std::sync::Mutex<std::collections::HashMap<RunId, (Millis, String)>>,
}

impl Shared {
    pub fn now(&self) -> Millis {
        (self.clock)()
    }
}

pub use cascade_swarm::clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Intake(#[from] intake::IntakeError),
}

/// Serves until `cancel`: returns once every task it started has ended.
pub async fn serve(
    swarm: Swarm,
    opts: ServeOptions,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let shared = Arc::new(Shared {
        stores: swarm.coordinator_stores(),
        opts,
        registry: Registry::default(),
        clock: now_ms,
        degraded: Default::default(),
    });
    // Fail at start, not later, if the submit consumer cannot exist.
    intake::consumer(&swarm).await?;
    let tracker = TaskTracker::new();
    let (own_tx, own_rx) = mpsc::channel(OWN_QUEUE);
    spawn(
        &tracker,
        "intake",
        intake::run(shared.clone(), swarm, own_tx, cancel.clone()),
    );
    spawn(
        &tracker,
        "registry",
        watch_registry(shared.clone(), cancel.clone()),
    );
    spawn(
        &tracker,
        "dead-letters",
        dlq::run(shared.clone(), cancel.clone()),
    );
    spawn(
        &tracker,
        "owner",
        own_runs(shared.clone(), own_rx, tracker.clone(), cancel.clone()),
    );
    tracing::info!(name = %shared.opts.name, "coordinator serving");
    cancel.cancelled().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The one way this driver starts a background task: named, traced, its
/// error logged once where it ends.
fn spawn<F, E>(tracker: &TaskTracker, name: &'static str, fut: F)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tracker.spawn(async move {
        if let Err(e) = fut.await {
            tracing::error!(task = name, error = %e, "background task failed");
        }
    });
}

async fn watch_registry(shared: Arc<Shared>, cancel: CancellationToken) -> Result<(), StoreError> {
    // With history: the workers registered already, then every change.
    let mut watch = shared.stores.registry.watch().await?;
    let mut updates: u64 = 0;
    loop {
        let change = tokio::select! {
            e = watch.next() => e,
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(Ok(change)) = change else { continue };
        match change {
            WorkerChange::Up(mut info) => {
                // Liveness is judged on this process's clock: when the
                // heartbeat was heard, not the worker's own stamp (another
                // machine's clock may be off by an hour).
                info.heartbeat_at = shared.now();
                shared.registry.workers.insert(info.name.clone(), info);
                // Expiry in the bucket tells watchers nothing: forget workers
                // silent for many TTLs here, or names that come and go
                // (`<host>-<pid>`) would pile up.
                updates += 1;
                if updates.is_multiple_of(PRUNE_EVERY) {
                    let horizon = 10 * shared.stores.settings.worker_ttl.as_millis() as u64;
                    let now = shared.now();
                    shared
                        .registry
                        .workers
                        .retain(|_, w| now.saturating_sub(w.heartbeat_at) <= horizon);
                    shared
                        .registry
                        .observed
                        .retain(|name, _| shared.registry.workers.contains_key(name));
                }
            }
            WorkerChange::Gone(name) => {
                shared.registry.workers.remove(&name);
            }
        }
    }
}

/// Tries to own runs: new ones from intake at once, and every lease_ttl/3
/// every run that is not final (a released or never-written lease is
/// free). A lease someone else holds is taken over only once its holder
/// stopped renewing: the lease watch shows each revision as it is written,
/// and one unchanged for a whole TTL on this process's monotonic clock is
/// stale. No wall clock of another machine is ever compared, so a
/// coordinator whose clock is off neither steals live leases nor waits an
/// hour to take over a dead one.
async fn own_runs(
    shared: Arc<Shared>,
    mut new_runs: mpsc::Receiver<RunId>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) -> Result<(), StoreError> {
    let ttl = shared.opts.lease_ttl;
    let mut tick = tokio::time::interval(ttl / 3);
    let mut watch = shared.stores.leases.watch().await?;
    let mut seen = Observed::default();
    let driving: Arc<dashmap::DashSet<RunId>> = Arc::new(dashmap::DashSet::new());
    loop {
        let stale_at = seen.next_stale(ttl);
        let candidates: Vec<(RunId, Option<u64>)> = tokio::select! {
            Some(id) = new_runs.recv() => vec![(id, None)],
            _ = tick.tick() => open_runs(&shared).await.into_iter().map(|r| (r, None)).collect(),
            change = watch.next() => {
                match change {
                    Some(Ok(LeaseChange::Written { run, owner, revision, clock })) => {
                        if owner == shared.opts.name {
                            seen.forget(&run);
                        } else {
                            seen.saw(run, revision, Some(clock), shared.now());
                        }
                    }
                    Some(Ok(LeaseChange::Gone(run))) => seen.forget(&run),
                    Some(Err(e)) => tracing::warn!(error = %e, "lease watch error"),
                    None => {
                        return Err(StoreError::WatchEnded {
                            what: "leases".into(),
                        });
                    }
                }
                continue;
            }
            () = sleep_until(stale_at), if stale_at.is_some() => seen.stale(ttl),
            () = cancel.cancelled() => return Ok(()),
        };
        for (run_id, stale) in candidates {
            if driving.contains(&run_id) {
                continue;
            }
            // The run's clock as the last owner kept it (a takeover), else ours.
            let offset = stale.and_then(|_| seen.offset(&run_id)).unwrap_or(0);
            let clock = shared.now().saturating_add_signed(offset);
            let sent = tokio::time::Instant::now();
            let acquired = shared
                .stores
                .leases
                .acquire(&run_id, &shared.opts.name, stale, clock, ttl)
                .await;
            let held = match acquired {
                Ok(Acquired::Held(held)) => held,
                Ok(Acquired::Busy { owner, revision }) => {
                    if owner != shared.opts.name {
                        seen.saw(run_id, revision, None, shared.now());
                    }
                    continue;
                }
                // Looked at again when the watch or the scan sees it (a
                // stale entry left here would be tried again at once).
                Ok(Acquired::Contended) => {
                    seen.forget(&run_id);
                    continue;
                }
                Err(e) => {
                    seen.forget(&run_id);
                    tracing::warn!(run_id = %run_id, error = %e, "cannot take the lease; trying again later");
                    continue;
                }
            };
            seen.forget(&run_id);
            if stale.is_some() {
                tracing::info!(run_id = %run_id, "taking the run over: its lease was not renewed for {ttl:?}");
            }
            tracing::info!(run_id = %run_id, "driving run");
            driving.insert(run_id.clone());
            crate::driver::metrics::runs_driven(driving.len());
            let (shared, driving, cancel) = (shared.clone(), driving.clone(), cancel.clone());
            tracker.spawn(async move {
                let id = held.run.clone();
                match run::drive(shared, held, sent, offset, cancel).await {
                    Ok(()) => {}
                    Err(state::RunError::LeaseLost(_)) => tracing::info!(run_id = %id, "stopped driving run"),
                    Err(e) => tracing::error!(run_id = %id, error = %e, "run driver failed; another coordinator may take over"),
                }
                driving.remove(&id);
                crate::driver::metrics::runs_driven(driving.len());
            });
        }
    }
}

/// Other holders' leases: the revision last seen of each, when (on the
/// monotonic clock) it was first seen, and how far the run's clock in it
/// was from ours then.
#[derive(Debug, Default)]
struct Observed(HashMap<RunId, Seen>);

#[derive(Debug)]
struct Seen {
    revision: u64,
    at: tokio::time::Instant,
    /// The run's clock minus ours, when the lease carried its clock.
    offset: Option<i64>,
}

impl Observed {
    /// A revision seen now (with the run's clock it carries, if known, and
    /// our wall clock); the clock restarts only when it changed.
    fn saw(&mut self, run: RunId, revision: u64, clock: Option<Millis>, now: Millis) {
        let offset = clock
            .filter(|c| *c > 0)
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0));
        let at = tokio::time::Instant::now();
        let e = self.0.entry(run).or_insert(Seen {
            revision,
            at,
            offset,
        });
        if e.revision != revision {
            *e = Seen {
                revision,
                at,
                offset,
            };
        } else if e.offset.is_none() {
            e.offset = offset;
        }
    }

    fn forget(&mut self, run: &RunId) {
        self.0.remove(run);
    }

    /// The run's clock minus ours, as its last owner kept it.
    fn offset(&self, run: &RunId) -> Option<i64> {
        self.0.get(run).and_then(|s| s.offset)
    }

    /// When the oldest revision becomes stale.
    fn next_stale(&self, ttl: Duration) -> Option<tokio::time::Instant> {
        self.0.values().map(|s| s.at + ttl).min()
    }

    /// The runs whose revision has not changed for `ttl`, with it.
    fn stale(&self, ttl: Duration) -> Vec<(RunId, Option<u64>)> {
        let now = tokio::time::Instant::now();
        self.0
            .iter()
            .filter(|(_, s)| now >= s.at + ttl)
            .map(|(run, s)| (run.clone(), Some(s.revision)))
            .collect()
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn open_runs(shared: &Shared) -> BTreeSet<RunId> {
    match shared.stores.runs.list().await {
        Ok(records) => records
            .into_iter()
            .filter(|r| !r.state.is_final())
            .map(|r| r.run_id)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list runs");
            BTreeSet::new()
        }
    }
}
