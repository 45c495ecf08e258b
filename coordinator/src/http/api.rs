//! The dashboard's JSON API (for the run page's live updates and for
//! scripts). Errors are `{"error": "..."}` with 404 (no such run) or 503
//! (not connected to NATS yet, or the server could not be read).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cascade_proto::RunId;
use cascade_proto::wire::{RunRecord, WorkerInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::view::{RunView, ViewError};

/// Runs listed when the request names no limit.
const DEFAULT_LIMIT: usize = 200;

#[derive(Debug, Deserialize)]
pub(crate) struct Since {
    #[serde(default)]
    pub since: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("not connected to NATS yet")]
    NotConnected,
    #[error(transparent)]
    View(#[from] ViewError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::View(ViewError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::NotConnected | Self::View(ViewError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The run's view, brought up to date.
pub(crate) async fn view(
    app: &App,
    id: &str,
) -> Result<tokio::sync::OwnedMutexGuard<RunView>, ApiError> {
    let (Some(swarm), Some(models)) = (app.swarm(), app.models.get()) else {
        return Err(ApiError::NotConnected);
    };
    Ok(app.views.get(swarm, models, &RunId::new(id)).await?)
}

/// Runs, newest first.
pub(crate) fn run_list(app: &App, limit: usize) -> Vec<RunRecord> {
    let mut runs = app.runs.values();
    runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    runs.truncate(limit);
    runs
}

/// Stages per status of a run record.
pub(crate) fn stage_counts(r: &RunRecord) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for s in r.stages.values() {
        *counts.entry(s.clone()).or_default() += 1;
    }
    counts
}

/// Workers by name, with whether each is live (heartbeat within the TTL).
pub(crate) fn worker_list(app: &App) -> Vec<(WorkerInfo, bool, f64)> {
    let ttl = app
        .swarm()
        .map_or(0, |s| s.settings.worker_ttl.as_millis() as u64);
    let now = crate::driver::nats::now_ms();
    let mut out: Vec<(WorkerInfo, bool, f64)> = app
        .workers
        .values()
        .into_iter()
        .map(|w| {
            let age = now.saturating_sub(w.heartbeat_at);
            (w, age <= ttl, age as f64 / 1000.0)
        })
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

pub(crate) async fn runs(State(app): State<Arc<App>>, Query(l): Query<Limit>) -> Response {
    if app.swarm().is_none() {
        return ApiError::NotConnected.into_response();
    }
    let list: Vec<Value> = run_list(&app, l.limit.unwrap_or(DEFAULT_LIMIT))
        .iter()
        .map(|r| {
            json!({
                "run_id": r.run_id.as_str(),
                "cascade": r.cascade,
                "state": r.state,
                "owner": r.owner,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "error": r.error,
                "stages": r.stages.len(),
                "counts": stage_counts(r),
            })
        })
        .collect();
    Json(list).into_response()
}

pub(crate) async fn run(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(s): Query<Since>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&app, &id).await?.to_json(s.since)))
}

pub(crate) async fn report(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = view(&app, &id).await?;
    Ok(Json(v.report().unwrap_or_else(
        || json!({"run_id": id, "state": v.header.state, "note": v.note}),
    )))
}

pub(crate) async fn memory(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = view(&app, &id).await?;
    Ok(Json(
        json!({"run_id": id, "state": v.header.state, "memory": v.memory}),
    ))
}

pub(crate) async fn workers(State(app): State<Arc<App>>) -> Response {
    if app.swarm().is_none() {
        return ApiError::NotConnected.into_response();
    }
    let list: Vec<Value> = worker_list(&app)
        .into_iter()
        .map(|(w, live, age)| {
            let mut v = serde_json::to_value(&w).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("live".into(), json!(live));
                m.insert("heartbeat_age_s".into(), json!(age));
            }
            v
        })
        .collect();
    Json(list).into_response()
}
