//! The operations side of a process (`worker --http ADDR`, and the
//! coordinator's `serve --http ADDR`, which adds its dashboard): Prometheus
//! metrics, liveness and readiness, and (feature `otlp`) trace export.
//!
//! ```text
//!  GET /metrics   Prometheus text of the process-wide recorder (metrics 0.24)
//!  GET /healthz   200 while the process runs
//!  GET /readyz    200 once `Health::ready` was called and NATS is connected;
//!                 503 with the reason otherwise (starting, draining, disconnected)
//! ```
//!
//! Metrics are recorded through the `metrics` facade from the points that
//! count things (the runner's handlers here, the coordinator's run driver);
//! without an installed recorder (no `--http`, the embedded mode, tests)
//! every call is a no-op. The recorder and the health state are per
//! process (globals): there is one of each per binary.
//!
//! Names follow Prometheus conventions: `cascade_` prefix, counters end in
//! `_total`, durations are `_seconds` histograms. The worker records:
//! `cascade_tasks_received_total{skill}`, `cascade_tasks_redelivered_total{skill}`,
//! `cascade_tasks_completed_total{skill}`, `cascade_tasks_failed_total{skill,kind}`,
//! `cascade_tasks_dead_lettered_total{skill,reason}`,
//! `cascade_task_duration_seconds{skill,outcome}`, `cascade_tasks_in_flight`,
//! `cascade_task_slots`, `cascade_model_tokens_total{model,direction}`,
//! `cascade_model_cost_usd{model}` (a running sum), `cascade_model_calls_total{model}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cascade_proto::{TaskOutcome, TaskResult};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Upper bounds of the duration histograms, in seconds: from a noop skill
/// to a long model call or sandbox loop.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// How often histogram samples are folded in when nobody scrapes, so an
/// unscraped process does not accumulate them.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The line a process prints once its HTTP listener is bound (tests and
/// operators read the port from it when `ADDR` asked for port 0).
pub const LISTENING: &str = "http listening on";

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle). `None` when another recorder was installed first.
pub fn install_metrics(process: &'static str) -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .map_err(|e| tracing::warn!("metrics buckets: {e}"))
                .ok()?;
            let handle = builder
                .install_recorder()
                .map_err(|e| tracing::warn!("cannot install the metrics recorder: {e}"))
                .ok()?;
            describe();
            gauge!("cascade_build_info", "process" => process, "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "cascade_tasks_received_total",
        "Task deliveries taken from a queue by this worker."
    );
    describe_counter!(
        "cascade_tasks_redelivered_total",
        "Task deliveries that were not the message's first (a worker died or timed out)."
    );
    describe_counter!(
        "cascade_tasks_completed_total",
        "Attempts this worker ran to success."
    );
    describe_counter!(
        "cascade_tasks_failed_total",
        "Attempts this worker ran that failed, by failure kind."
    );
    describe_counter!(
        "cascade_tasks_dead_lettered_total",
        "Task messages moved to the dead-letter stream."
    );
    describe_histogram!(
        "cascade_task_duration_seconds",
        metrics::Unit::Seconds,
        "Wall time of an attempt on the worker."
    );
    describe_gauge!(
        "cascade_tasks_in_flight",
        "Task and batch messages this worker holds now."
    );
    describe_gauge!("cascade_task_slots", "This worker's --concurrency.");
    describe_counter!(
        "cascade_model_tokens_total",
        "Model tokens spent, by model and direction (input, output)."
    );
    describe_gauge!(
        "cascade_model_cost_usd",
        "Model cost in US dollars since the process started (prices from the models file)."
    );
    describe_counter!("cascade_model_calls_total", "Model calls made.");
    describe_counter!(
        "cascade_security_events_total",
        "Writes refused as forged (a result or claim without a valid proof of delivery, a replaced object), by kind."
    );
}

/// Something written with the swarm's credentials that its writer had no
/// right to (a result for an attempt it was not delivered): refused,
/// logged once here and counted.
pub fn security_event(kind: &'static str, key: &str, why: &str) {
    counter!("cascade_security_events_total", "kind" => kind).increment(1);
    tracing::warn!(
        security_event = kind,
        key,
        "security: refused {kind} `{key}`: {why}"
    );
}

/// A task message was taken from a queue (its `delivered` count from the
/// server: above 1 is a redelivery).
pub fn task_received(skill: &str, delivered: u64) {
    counter!("cascade_tasks_received_total", "skill" => skill.to_owned()).increment(1);
    if delivered > 1 {
        counter!("cascade_tasks_redelivered_total", "skill" => skill.to_owned()).increment(1);
    }
}

/// An attempt ran to its end on this worker (whether or not its result is
/// the one kept): outcome, duration and model usage.
pub fn task_executed(skill: &str, result: &TaskResult) {
    let outcome = match &result.outcome {
        TaskOutcome::Succeeded { .. } => {
            counter!("cascade_tasks_completed_total", "skill" => skill.to_owned()).increment(1);
            "success"
        }
        TaskOutcome::Failed(f) => {
            let kind = match f.kind {
                cascade_proto::FailureKind::Retryable => "retryable",
                cascade_proto::FailureKind::Terminal => "terminal",
                cascade_proto::FailureKind::Timeout => "timeout",
                cascade_proto::FailureKind::Cancelled => "cancelled",
            };
            counter!("cascade_tasks_failed_total", "skill" => skill.to_owned(), "kind" => kind)
                .increment(1);
            "failure"
        }
    };
    histogram!("cascade_task_duration_seconds", "skill" => skill.to_owned(), "outcome" => outcome)
        .record(result.duration_ms as f64 / 1000.0);
    if let Some(usage) = result.usage.as_ref().filter(|u| !u.is_empty()) {
        let model = result.model.clone().unwrap_or_else(|| "unknown".into());
        counter!("cascade_model_tokens_total", "model" => model.clone(), "direction" => "input")
            .increment(usage.input_tokens);
        counter!("cascade_model_tokens_total", "model" => model.clone(), "direction" => "output")
            .increment(usage.output_tokens);
        counter!("cascade_model_calls_total", "model" => model.clone())
            .increment(u64::from(usage.calls));
        cost_add(&model, usage.cost_usd);
    }
}

/// Running cost per model: money needs fractions, which `metrics`
/// counters (integers) cannot hold, so the sum is kept here and exported
/// as a gauge that only grows.
fn cost_add(model: &str, usd: f64) {
    static COST: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());
    let total = {
        let mut all = COST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sum = all.entry(model.to_owned()).or_insert(0.0);
        *sum += usd;
        *sum
    };
    gauge!("cascade_model_cost_usd", "model" => model.to_owned()).set(total);
}

/// A message that cannot be a task was dead-lettered by this worker.
pub fn task_undecodable() {
    counter!("cascade_tasks_dead_lettered_total", "skill" => "unknown", "reason" => "undecodable")
        .increment(1);
}

/// A handler took (+1) or released (-1) a message.
pub fn in_flight(delta: f64) {
    gauge!("cascade_tasks_in_flight").increment(delta);
}

/// What `/readyz` answers.
#[derive(Debug)]
pub struct Health {
    state: Mutex<Readiness>,
}

#[derive(Debug)]
enum Readiness {
    NotReady(String),
    Ready(async_nats::Client),
}

static HEALTH: OnceLock<Health> = OnceLock::new();

/// The process's health state (not ready until told otherwise).
pub fn health() -> &'static Health {
    HEALTH.get_or_init(|| Health {
        state: Mutex::new(Readiness::NotReady("starting".into())),
    })
}

impl Health {
    /// Set up and serving over `client`: ready while it stays connected.
    pub fn ready(&self, client: &async_nats::Client) {
        *self.lock() = Readiness::Ready(client.clone());
    }

    /// Not ready, saying why (draining, shutting down, ...).
    pub fn not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Readiness::NotReady(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), NotReady> {
        match &*self.lock() {
            Readiness::NotReady(why) => Err(NotReady::Said(why.clone())),
            Readiness::Ready(client) => match client.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(NotReady::Connection(other.to_string())),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readiness> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A worker is registered and pulling: ready, with its capacity.
pub fn worker_ready(client: &async_nats::Client, concurrency: usize) {
    gauge!("cascade_task_slots").set(concurrency as f64);
    health().ready(client);
}

/// What a process does with its connection around readiness and exit.
impl crate::Swarm {
    /// Readiness (`/readyz`) follows this connection from now on.
    pub fn report_ready(&self) {
        health().ready(&self.client);
    }

    /// A worker with `concurrency` task slots is ready (readiness follows
    /// this connection).
    pub fn report_worker_ready(&self, concurrency: usize) {
        worker_ready(&self.client, concurrency);
    }

    /// Warns when the server is a single node (see [`crate::warn_if_single_node`]).
    pub fn warn_if_single_node(&self) {
        crate::warn_if_single_node(&self.client);
    }

    /// Sends everything still buffered and closes the connection.
    pub async fn drain(&self) -> Result<(), crate::store::StoreError> {
        self.client
            .drain()
            .await
            .map_err(|e| crate::store::StoreError::Nats {
                op: "drain",
                key: "the NATS connection".into(),
                class: crate::store::Class::Retryable,
                source: Box::new(e),
            })
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The Prometheus text of every metric recorded so far (empty without a
/// recorder).
pub fn render_metrics() -> String {
    RECORDER
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

pub async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(),
    )
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz() -> impl IntoResponse {
    match health().check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why a process is not ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("{0}")]
    Said(String),
    #[error("NATS connection is {0}")]
    Connection(String),
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("--http {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--http {addr}: {source}")]
    Address {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A process's HTTP endpoint: serves a router until stopped. Inert (no
/// listener, nothing recorded) when the process was given no address.
#[derive(Debug, Default)]
pub struct Endpoint {
    addr: Option<SocketAddr>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Endpoint {
    /// With `addr`: installs the metrics recorder, binds and serves
    /// `router`. The error names the address.
    pub async fn start(
        addr: Option<SocketAddr>,
        process: &'static str,
        router: Router,
    ) -> Result<Endpoint, EndpointError> {
        let mut endpoint = Endpoint::default();
        let Some(addr) = addr else {
            return Ok(endpoint);
        };
        install_metrics(process);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Listen { addr, source })?;
        endpoint.addr = Some(
            listener
                .local_addr()
                .map_err(|source| EndpointError::Address { addr, source })?,
        );
        let stop = endpoint.stop.clone();
        crate::spawn_named(&endpoint.tracker, "http", async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        let stop = endpoint.stop.clone();
        crate::spawn_named(&endpoint.tracker, "metrics-upkeep", upkeep(stop));
        Ok(endpoint)
    }

    /// The bound address (the port the system chose when asked for 0).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Another task to end with the endpoint (the coordinator's watchers).
    pub fn spawn<F, E>(&self, name: &'static str, fut: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        crate::spawn_named(&self.tracker, name, fut(self.stop.clone()));
    }

    /// Stops serving and waits for every task of the endpoint.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Folds histogram samples in when nobody scrapes.
async fn upkeep(stop: CancellationToken) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if let Some(Some(handle)) = RECORDER.get() {
                    handle.run_upkeep();
                }
            }
        }
    }
}

/// Trace context across processes: the coordinator puts a W3C
/// `traceparent` header on each task message it publishes, the worker
/// makes its attempt span a child of it; a run is one trace whose id is
/// derived from the run id. Without the `otlp` feature all of it is no-ops
/// that compile away.
pub mod trace {
    #[cfg(not(feature = "otlp"))]
    use async_nats::jetstream::message::PublishMessage;
    #[cfg(not(feature = "otlp"))]
    use cascade_proto::{RunId, TaskSpec};

    /// Adds the trace context of a dispatch span for `spec` to `msg`.
    #[cfg(not(feature = "otlp"))]
    #[inline]
    pub fn inject(msg: PublishMessage, _spec: &TaskSpec) -> PublishMessage {
        msg
    }

    /// Makes `span` a child of the context the delivered message carries
    /// (or of the run's trace when it carries none).
    #[cfg(not(feature = "otlp"))]
    #[inline]
    pub fn set_parent(_span: &tracing::Span, _delivery: &crate::store::Delivery, _run: &RunId) {}

    /// Emits the run's root span (from `started_ms` to now).
    #[cfg(not(feature = "otlp"))]
    #[inline]
    pub fn run_finished(_run: &RunId, _started_ms: u64, _status: &str) {}

    #[cfg(feature = "otlp")]
    pub use super::otlp::{inject, run_finished, set_parent};
}

/// OpenTelemetry over OTLP/HTTP (feature `otlp`), on when the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set: spans
/// of the `tracing` instrumentation at info and above are exported in
/// batches; `shutdown` flushes them.
///
/// One trace per run: its trace id is the run id's 16 bytes when the run id
/// is a UUID (else a hash of it), and its root span id a hash, so every
/// coordinator that drives the run (takeovers included) and every worker
/// put their spans in the same trace; the coordinator that finishes the
/// run emits the root span `run` itself.
#[cfg(feature = "otlp")]
pub mod otlp {
    use std::cell::Cell;
    use std::time::{Duration, UNIX_EPOCH};

    use async_nats::jetstream::message::PublishMessage;
    use cascade_proto::{RunId, TaskSpec};
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
    use std::sync::OnceLock;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    thread_local! {
        /// Ids the next span started on this thread takes (the run's root).
        static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
    }

    /// Random ids, except for a run's root span.
    #[derive(Debug, Default)]
    struct RunIds(RandomIdGenerator);

    impl IdGenerator for RunIds {
        fn new_trace_id(&self) -> TraceId {
            NEXT_IDS
                .with(Cell::get)
                .map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
        }
        fn new_span_id(&self) -> SpanId {
            NEXT_IDS
                .with(Cell::get)
                .map_or_else(|| self.0.new_span_id(), |(_, s)| s)
        }
    }

    /// Sets up logging with span export when an OTLP endpoint is
    /// configured; otherwise gives `filter` back for the plain setup.
    pub fn init(filter: EnvFilter, json: bool, service: &'static str) -> Option<EnvFilter> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        if !configured {
            return Some(filter);
        }
        // reqwest is built without a crypto provider of its own: the one
        // stack is rustls with ring (an Err means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                return Some(filter);
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(RunIds::default())
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("cascade");
        let _ = PROVIDER.set(provider);
        // Spans are exported at info whatever the log level on stderr.
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(LevelFilter::INFO);
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let registry = tracing_subscriber::registry().with(otel);
        if json {
            registry.with(fmt.json().with_filter(filter)).init();
        } else {
            registry.with(fmt.with_filter(filter)).init();
        }
        None
    }

    /// Flushes and stops the exporter (at the end of `main`).
    pub fn shutdown() {
        if let Some(p) = PROVIDER.get()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces: {e}");
        }
    }

    /// The run's trace id and root span id.
    fn run_ids(run: &RunId) -> (TraceId, SpanId) {
        let hex: String = run.as_str().chars().filter(|c| *c != '-').collect();
        let trace = u128::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == 32)
            .unwrap_or_else(|| {
                (u128::from(fnv(run.as_str(), 0)) << 64) | u128::from(fnv(run.as_str(), 1))
            });
        let span = fnv(run.as_str(), 2).max(1);
        (
            TraceId::from_bytes(trace.max(1).to_be_bytes()),
            SpanId::from_bytes(span.to_be_bytes()),
        )
    }

    /// FNV-1a of `s`, seeded: the same in every process.
    fn fnv(s: &str, seed: u8) -> u64 {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        h.write(&[seed]);
        h.write(s.as_bytes());
        h.finish()
    }

    /// The run's root as a remote parent.
    fn run_context(run: &RunId) -> Context {
        let (trace, span) = run_ids(run);
        Context::new().with_remote_span_context(SpanContext::new(
            trace,
            span,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    struct Headers<'a>(&'a mut Vec<(String, String)>);

    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }

    struct Carried<'a>(&'a async_nats::HeaderMap);

    impl Extractor for Carried<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(async_nats::HeaderValue::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_ref()).collect()
        }
    }

    pub fn inject(mut msg: PublishMessage, spec: &TaskSpec) -> PublishMessage {
        if PROVIDER.get().is_none() {
            return msg;
        }
        let span = tracing::info_span!("dispatch", run_id = %spec.run_id, stage = %spec.stage_id,
            task_id = %spec.task_id, attempt = %spec.attempt, skill = %spec.skill);
        let _ = span.set_parent(run_context(&spec.run_id));
        let mut headers = Vec::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(&mut headers));
        for (k, v) in headers {
            msg = msg.header(k.as_str(), v.as_str());
        }
        msg
    }

    pub fn set_parent(span: &tracing::Span, delivery: &crate::store::Delivery, run: &RunId) {
        if PROVIDER.get().is_none() {
            return;
        }
        let carried = delivery
            .message()
            .and_then(|m| m.headers.as_ref())
            .map(|h| TraceContextPropagator::new().extract(&Carried(h)))
            .filter(|cx| cx.span().span_context().is_valid());
        let _ = span.set_parent(carried.unwrap_or_else(|| run_context(run)));
    }

    pub fn run_finished(run: &RunId, started_ms: u64, status: &str) {
        let Some(provider) = PROVIDER.get() else {
            return;
        };
        let tracer = provider.tracer("cascade");
        NEXT_IDS.with(|n| n.set(Some(run_ids(run))));
        let mut span = tracer
            .span_builder("run")
            .with_start_time(UNIX_EPOCH + Duration::from_millis(started_ms))
            .with_attributes([
                KeyValue::new("run_id", run.to_string()),
                KeyValue::new("status", status.to_owned()),
            ])
            .start_with_context(&tracer, &Context::new());
        NEXT_IDS.with(|n| n.set(None));
        span.end();
    }
}
