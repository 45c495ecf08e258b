//! The coordinator's metrics: counters the run driver records
//! (`driver::metrics`, which this module only describes and renders), and
//! gauges of the whole swarm computed when `/metrics` is scraped (at most once a [`COLLECT_EVERY`]): queue depth
//! per skill from the skill consumers' info, live workers from the
//! registry, runs by state from the runs index.
//!
//! ```text
//!  cascade_runs_started_total                 runs this coordinator started
//!  cascade_runs_finished_total{status}        success | partial | failed
//!  cascade_runs_driven                        runs this coordinator drives now
//!  cascade_runs{state}                        swarm-wide, from cascade-runs
//!  cascade_stages_finished_total{status}      success | failed | skipped | cancelled
//!  cascade_tasks_dispatched_total{skill,route}  mesh | worker | lead (every attempt)
//!  cascade_tasks_retried_total{skill}         dispatches of attempt 2 and later
//!  cascade_task_results_total{outcome}        results the engine took: success | failure
//!  cascade_tasks_dead_lettered_total{skill,reason}
//!  cascade_tasks_reenqueued_total{skill}      lost attempts the sweeper sent again
//!  cascade_queue_depth{skill}                 messages waiting in the skill's queue
//!  cascade_queue_unacked{skill}               delivered, not yet acknowledged
//!  cascade_workers / cascade_workers_draining live registrations
//!  cascade_worker_slots / cascade_worker_slots_busy  their concurrency, in use
//! ```
//! Task durations, outcomes per skill and model usage are recorded by the
//! workers (see `cascade_swarm::ops`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use cascade_proto::wire::RunState;
use metrics::gauge;

use super::App;

/// Swarm gauges are recomputed at most this often, however often scraped.
const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// A scrape waits at most this long for the swarm gauges.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn describe() {
    use metrics::describe_gauge;
    crate::driver::metrics::describe();
    describe_gauge!(
        "cascade_runs",
        "Runs of the swarm by state (the cascade-runs bucket)."
    );
    describe_gauge!(
        "cascade_queue_depth",
        "Task messages waiting in a skill's queue."
    );
    describe_gauge!(
        "cascade_queue_unacked",
        "Task messages of a skill's queue delivered and not yet acknowledged."
    );
    describe_gauge!("cascade_workers", "Live worker registrations.");
    describe_gauge!(
        "cascade_workers_draining",
        "Live workers that are draining."
    );
    describe_gauge!("cascade_worker_slots", "Concurrency of the live workers.");
    describe_gauge!(
        "cascade_worker_slots_busy",
        "Tasks the live workers hold, as they last reported."
    );
}

/// When the swarm gauges were last computed.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    last: tokio::sync::Mutex<Option<Instant>>,
}

/// `GET /metrics`: refreshes the swarm gauges (rate limited), then renders.
pub(crate) async fn scrape(State(app): State<Arc<App>>) -> impl IntoResponse {
    {
        let mut last = app.collector.last.lock().await;
        if last.is_none_or(|t| t.elapsed() >= COLLECT_EVERY) {
            if tokio::time::timeout(COLLECT_TIMEOUT, collect(&app))
                .await
                .is_err()
            {
                tracing::warn!("metrics: reading the swarm's queues timed out");
            }
            *last = Some(Instant::now());
        }
    }
    cascade_swarm::ops::metrics_text().await
}

async fn collect(app: &App) {
    let Some(swarm) = app.swarm() else { return };
    let ttl_ms = swarm.settings.worker_ttl.as_millis() as u64;
    let now = crate::driver::nats::now_ms();
    let live: Vec<_> = app
        .workers
        .values()
        .into_iter()
        .filter(|w| now.saturating_sub(w.heartbeat_at) <= ttl_ms)
        .collect();
    gauge!("cascade_workers").set(live.len() as f64);
    gauge!("cascade_workers_draining").set(live.iter().filter(|w| w.draining).count() as f64);
    gauge!("cascade_worker_slots").set(live.iter().map(|w| f64::from(w.concurrency)).sum::<f64>());
    gauge!("cascade_worker_slots_busy")
        .set(live.iter().map(|w| f64::from(w.in_flight)).sum::<f64>());

    let mut states: BTreeMap<&'static str, usize> = [
        RunState::Queued,
        RunState::Running,
        RunState::Success,
        RunState::Partial,
        RunState::Failed,
    ]
    .into_iter()
    .map(|s| (state_label(s), 0))
    .collect();
    for r in app.runs.values() {
        *states.entry(state_label(r.state)).or_default() += 1;
    }
    for (state, n) in states {
        gauge!("cascade_runs", "state" => state).set(n as f64);
    }

    // A listing that fails sets nothing (the gauges keep their values).
    if let Ok(depths) = swarm.stores().tasks.queue_depths().await {
        for d in depths {
            gauge!("cascade_queue_depth", "skill" => d.skill.clone()).set(d.pending as f64);
            gauge!("cascade_queue_unacked", "skill" => d.skill).set(d.unacked as f64);
        }
    }
}

pub(crate) fn state_label(s: RunState) -> &'static str {
    match s {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Success => "success",
        RunState::Partial => "partial",
        RunState::Failed => "failed",
    }
}
