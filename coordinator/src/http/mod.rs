//! `coordinator serve --http ADDR`: the operations endpoint of the
//! worker crate (`/metrics`, `/healthz`, `/readyz`) plus the dashboard and
//! its JSON API, all read from the swarm's buckets and the runs' event logs.
//!
//! ```text
//!  GET /                       runs (index of cascade-runs, kept by a KV watch)
//!  GET /runs/{id}              the run's DAG as a layered table, live (polls the API)
//!  GET /runs/{id}/memory       the run's memory
//!  GET /workers                live workers, skills and load (cascade-workers watch)
//!  GET /api/runs               runs as JSON                ?limit=N
//!  GET /api/runs/{id}          header + stage rows         ?since=VERSION: changed rows only
//!  GET /api/runs/{id}/report   the report (final, or the live one)
//!  GET /api/runs/{id}/memory   the run's memory as JSON
//!  GET /api/workers            workers as JSON
//!  GET /metrics /healthz /readyz
//!  GET /login?token=T          sets the dashboard's cookie (see `auth`)
//! ```
//! Off loopback every route but the operations ones needs the token
//! (`auth`).
//!
//! The endpoint binds before the coordinator connects (liveness answers
//! while it connects; readiness and the dashboard say 503 until
//! [`Server::connected`]). A run's page is built by [`view`]: the plan from
//! its submission, its state by replaying its event log through the same
//! engine the driver runs (read only), or its final report once it has one.

mod api;
pub mod auth;
mod index;
pub mod metrics;
mod pages;
mod view;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::routing::get;
use cascade_core::models::ModelCatalog;
use cascade_proto::wire;
use cascade_swarm::Swarm;
use cascade_swarm::ops::{Endpoint, health};
use tokio_util::sync::CancellationToken;

pub use cascade_swarm::ops::LISTENING;

/// What every handler reads.
pub(crate) struct App {
    /// Set once connected; the dashboard answers 503 before.
    swarm: OnceLock<Swarm>,
    /// The models file runs are planned with (as the driver plans them).
    models: OnceLock<Arc<ModelCatalog>>,
    runs: Arc<index::Index<cascade_proto::wire::RunRecord>>,
    workers: Arc<index::Index<cascade_proto::wire::WorkerInfo>>,
    views: view::Cache,
    collector: metrics::Collector,
}

impl App {
    fn swarm(&self) -> Option<&Swarm> {
        self.swarm.get()
    }
}

/// The coordinator's HTTP endpoint.
pub struct Server {
    endpoint: Endpoint,
    app: Arc<App>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.endpoint.addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` and serves; not ready until [`Server::connected`].
    /// `access`: who may read the dashboard and the API ([`auth`]).
    pub async fn start(
        addr: SocketAddr,
        access: auth::Access,
    ) -> Result<Server, cascade_swarm::ops::EndpointError> {
        let app = Arc::new(App {
            swarm: OnceLock::new(),
            models: OnceLock::new(),
            runs: Arc::default(),
            workers: Arc::default(),
            views: view::Cache::default(),
            collector: metrics::Collector::default(),
        });
        health().not_ready("connecting to NATS");
        let endpoint =
            Endpoint::start(Some(addr), "coordinator", router(app.clone(), access)).await?;
        metrics::describe();
        Ok(Server { endpoint, app })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.endpoint.addr()
    }

    /// Connected and set up: the dashboard reads `swarm`, readiness
    /// follows its connection until `shutdown` starts.
    pub fn connected(&self, swarm: &Swarm, models: Arc<ModelCatalog>, shutdown: CancellationToken) {
        let _ = self.app.swarm.set(swarm.clone());
        let _ = self.app.models.set(models);
        let stores = swarm.stores();
        let (open, runs) = (index::runs(stores.runs.clone()), self.app.runs.clone());
        self.endpoint.spawn("runs-index", move |stop| {
            index::follow(wire::BUCKET_RUNS, open, runs, stop)
        });
        let (open, workers) = (
            index::workers(stores.registry.clone()),
            self.app.workers.clone(),
        );
        self.endpoint.spawn("workers-index", move |stop| {
            index::follow(wire::BUCKET_WORKERS, open, workers, stop)
        });
        self.endpoint.spawn("readiness", move |stop| async move {
            tokio::select! {
                () = shutdown.cancelled() => health().not_ready("shutting down"),
                () = stop.cancelled() => {}
            }
            Ok::<(), std::convert::Infallible>(())
        });
        swarm.report_ready();
    }

    /// Stops serving; returns when every task of the endpoint has ended.
    pub async fn stop(self) {
        health().not_ready("stopped");
        self.endpoint.stop().await;
    }
}

fn router(app: Arc<App>, access: auth::Access) -> Router {
    use cascade_swarm::ops::{healthz, readyz};
    let login = Router::new()
        .route("/login", get(auth::login))
        .with_state(access.clone());
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(pages::runs))
        .route("/workers", get(pages::workers))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/memory", get(pages::memory))
        .route("/api/runs", get(api::runs))
        .route("/api/workers", get(api::workers))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/report", get(api::report))
        .route("/api/runs/{id}/memory", get(api::memory))
        .with_state(app)
        .merge(login)
        .layer(axum::middleware::from_fn_with_state(access, auth::guard))
}
