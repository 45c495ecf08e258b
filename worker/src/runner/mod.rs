//! The swarm worker: takes tasks from JetStream, runs them with the
//! [`Executor`], stores results in KV and acks, fenced by claims.
//!
//! ```text
//!              ┌──────────────── one Semaphore (concurrency permits) ────────────────┐
//!  consumers:  skill-<s>… ─┐                                                          │
//!              worker-<me>─┼─ pull loop: await 1 permit, take the free ones (≤ share),│
//!              (own queues: one message ahead, then a permit)                       │
//!              lead-<me> ──┘  pull exactly that many ─▶ one handler per message ──────┘
//!                                                          │ (holds its permit)
//!   handler: decode ─▶ claim (fence) ─▶ execute + progress every ack_wait/3
//!            ─▶ claim still ours? ─▶ create result ─▶ claim still ours? ─▶ double ack
//! ```
//!
//! Modules: [`config`] (what a worker is), [`pull`] (backpressured pulls),
//! [`task`] (one message, start to ack), [`fence`] (claims), [`lead`]
//! (hierarchical batches), [`registry`] (the workers bucket), [`cancel`]
//! (cancel requests), [`spawn`] (the one way to start a task).
//!
//! Shutdown (`run`'s token): stop pulling, announce draining, let in-flight
//! tasks finish within the grace period (progress acks continue), then
//! cancel the rest and nak them with a delay, deregister, drain the
//! connection. `run` returns only when every task it started has ended.

mod cancel;
mod config;
mod fence;
mod lead;
mod pull;
mod registry;
mod runs;
mod task;

use cascade_swarm::clock::now_ms;
use cascade_swarm::spawn_named;
pub use config::{Config, default_name, parse_labels};
pub use registry::Stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cascade_proto::wire::WorkerRole;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use cascade_exec::Executor;
use cascade_swarm::store::{QueueOf, TaskQueue};
use cascade_swarm::{NatsError, Swarm, connect_as};
use pull::{Gate, QueueKind};
use registry::Registration;

/// How long an unfinished task waits before it is offered again after a
/// drain gave it up (long enough for this worker to be gone).
const DRAIN_NAK_DELAY: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("worker name is empty (--name)")]
    EmptyName,
    #[error("no skills given: --skills needs at least one")]
    NoSkills,
    #[error("unknown skill{} {}: this worker knows {known}",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))]
    UnknownSkills { unknown: Vec<String>, known: String },
    #[error("--concurrency must be at least 1")]
    Concurrency,
    #[error("label `{pair}` is not `key=value`")]
    Label { pair: String },
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("{op} `{key}`: {source}")]
    Op {
        op: &'static str,
        key: String,
        source: BoxError,
    },
    #[error("claim `{key}`: too many concurrent writers, giving up on this delivery")]
    ClaimContended { key: String },
    #[error(transparent)]
    Store(#[from] cascade_swarm::store::StoreError),
}

impl RunnerError {
    pub(crate) fn nats(op: &'static str, key: &str, e: impl Into<BoxError>) -> Self {
        RunnerError::Op {
            op,
            key: key.to_owned(),
            source: e.into(),
        }
    }

    /// Whether the broker failed, not the operation: JetStream unavailable
    /// (a timeout, no responders, storage full, no leader), or a store
    /// error retrying may fix. Such a failure is not a delivery.
    pub(crate) fn is_broker_fault(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// A problem with the configuration (exit code 2), as opposed to one
    /// met while running (exit code 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::EmptyName
                | Self::NoSkills
                | Self::UnknownSkills { .. }
                | Self::Concurrency
                | Self::Label { .. }
        )
    }
}

/// Everything the worker's tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub swarm: Swarm,
    /// The typed stores over `swarm` (claims, results, runs, objects, ...).
    pub stores: cascade_swarm::store::Stores,
    pub exec: Executor,
    pub permits: Arc<Semaphore>,
    pub stats: Stats,
    pub running: cancel::Running,
    /// Batch readers and message handlers: drained on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the drain starts: no new pulls.
    pub draining: CancellationToken,
    /// Cancelled when the grace period is over: in-flight work stops and is naked.
    pub hard_stop: CancellationToken,
    pub members: lead::RoundRobin,
    /// Runs that are over or cancelled: their queued attempts are dropped.
    pub live_runs: Arc<runs::LiveRuns>,
}

/// Runs a worker until `shutdown` is cancelled, then drains. Returns an
/// error only when the worker cannot start (bad config, no server, setup);
/// once running, problems with single messages are logged and survived.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunnerError> {
    config.validate()?;
    let started_at = now_ms();
    let client = connect_as(
        &config.nats,
        &config.name,
        &cascade_proto::wire::inbox_worker(&config.name),
    )
    .await?;
    let swarm = Swarm::setup(client, config.settings.clone()).await?;
    swarm.warn_if_single_node();
    let queues = open_queues(&swarm, &config).await?;
    let stores = swarm.stores();
    let registration = Registration::new(stores.registry.clone(), &config, started_at);
    let shared = Arc::new(Shared {
        exec: Executor::new(config.registry.clone(), config.name.clone())
            .with_models(cascade_exec::model::ModelClient::new(config.models.clone()))
            .with_submitted_commands(config.submitted_commands.clone()),
        permits: Arc::new(Semaphore::new(config.concurrency)),
        stats: Stats::default(),
        running: cancel::Running::default(),
        tasks: TaskTracker::new(),
        draining: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        members: lead::RoundRobin::default(),
        stores,
        swarm,
        config,
        live_runs: Arc::new(runs::LiveRuns::default()),
    });
    registration.beat(&shared.stats).await?;

    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let period = (shared.swarm.settings.worker_ttl / 3).max(Duration::from_millis(100));
    {
        let (reg, sh, stop) = (
            registration.clone(),
            shared.clone(),
            stop_background.clone(),
        );
        spawn_named(&background, "heartbeat", async move {
            reg.heartbeat(&sh.stats, period, stop).await;
            Ok::<(), RunnerError>(())
        });
    }
    spawn_named(
        &background,
        "cancel-listener",
        cancel::listen(
            shared.stores.tasks.clone(),
            shared.running.clone(),
            shared.live_runs.clone(),
            stop_background.clone(),
        ),
    );
    let pullers = TaskTracker::new();
    let share = shared
        .config
        .concurrency
        .div_ceil(shared.config.skills.len().max(1))
        .max(1);
    for (consumer, kind, own) in queues {
        let gate = if own {
            Gate::OneAhead
        } else {
            Gate::Permits { share }
        };
        spawn_named(
            &pullers,
            "pull",
            pull::pull_loop(shared.clone(), consumer, kind, gate),
        );
    }
    tracing::info!(
        worker = %shared.config.name,
        skills = %shared.config.skills.join(","),
        concurrency = shared.config.concurrency,
        role = ?shared.config.role,
        "ready"
    );
    shared.swarm.report_worker_ready(shared.config.concurrency);

    shutdown.cancelled().await;
    drain(&shared, &registration, pullers).await;
    stop_background.cancel();
    background.close();
    background.wait().await;
    if let Err(e) = registration.remove().await {
        tracing::warn!("{e}");
    }
    if let Err(e) = shared.swarm.drain().await {
        tracing::warn!("draining the NATS connection: {e}");
    }
    tracing::info!(worker = %shared.config.name, "drained, exiting");
    Ok(())
}

/// The durable consumers this worker pulls from: one per skill, its own
/// (star), and its lead queue when it leads a team. Created concurrently:
/// the worker must be ready to claim quickly.
async fn open_queues(
    swarm: &Swarm,
    config: &Config,
) -> Result<Vec<(Arc<dyn TaskQueue>, QueueKind, bool)>, RunnerError> {
    let mut wanted: Vec<(QueueOf, QueueKind)> = config
        .skills
        .iter()
        .map(|skill| (QueueOf::Skill(skill.clone()), QueueKind::Task))
        .collect();
    wanted.push((QueueOf::Worker(config.name.clone()), QueueKind::Task));
    if config.role == WorkerRole::Lead {
        wanted.push((QueueOf::Lead(config.name.clone()), QueueKind::Batch));
    }
    let opened =
        futures::future::try_join_all(wanted.iter().map(|(of, _)| swarm.task_queue(of))).await?;
    Ok(opened
        .into_iter()
        .zip(wanted)
        .map(|(q, (of, kind))| (q, kind, of.personal()))
        .collect())
}

/// Stop pulling, announce, wait for in-flight work up to the grace period,
/// then stop what is left (its handlers nak it with a delay).
async fn drain(shared: &Arc<Shared>, registration: &Registration, pullers: TaskTracker) {
    let in_flight = shared.stats.in_flight.load(Ordering::Relaxed);
    tracing::info!(worker = %shared.config.name, in_flight, "draining");
    shared.draining.cancel();
    cascade_swarm::ops::health().not_ready("draining");
    shared.stats.draining.store(true, Ordering::Relaxed);
    if let Err(e) = registration.beat(&shared.stats).await {
        tracing::warn!("announcing the drain: {e}");
    }
    // The grace period counts from the start of the drain, whatever the
    // pull loops still wind down.
    let deadline = tokio::time::Instant::now() + shared.config.grace;
    pullers.close();
    pullers.wait().await;
    shared.tasks.close();
    if tokio::time::timeout_at(deadline, shared.tasks.wait())
        .await
        .is_err()
    {
        let left = shared.stats.in_flight.load(Ordering::Relaxed);
        tracing::warn!(left, grace = ?shared.config.grace, "grace period over: giving the rest back");
        shared.hard_stop.cancel();
        shared.tasks.wait().await;
    }
}

/// Whether the failpoint `name` is set (`CASCADE_FAILPOINT=name`): the
/// fault matrix makes a worker die at that point (read once per process).
pub(crate) fn failpoint(name: &str) -> bool {
    static SET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| std::env::var("CASCADE_FAILPOINT").ok())
        .as_deref()
        == Some(name)
}
