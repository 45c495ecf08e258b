//! Run records (for `status` and `watch`) and final reports (for
//! `results` and `submit --wait`).

use cascade_proto::wire::{self, RunRecord};
use cascade_proto::{RunId, decode, encode};
use serde_json::{Value, json};

use super::Shared;

/// Stores the final report: inline when small, else in the object store
/// with a `{"$ref": NAME}` stub in the bucket.
pub async fn write(shared: &Shared, run: &RunId, report: &Value) {
    let key = wire::token(run.as_str());
    let Ok(bytes) = encode(report) else { return };
    let bytes = if bytes.len() > wire::INLINE_LIMIT {
        let name = format!("report.{key}");
        if let Err(e) = super::objects::put_json(shared, &name, report).await {
            tracing::error!(run_id = %run, error = %e, "cannot store the report");
            return;
        }
        match encode(&json!({ "$ref": name })) {
            Ok(b) => b,
            Err(_) => return,
        }
    } else {
        bytes
    };
    if let Err(e) = shared.swarm.reports.put(&key, bytes.into()).await {
        tracing::error!(run_id = %run, error = %e, "cannot store the report");
    }
}

/// Writes the run record by compare-and-set, keeping a cancel request that
/// `coordinator cancel` may have added meanwhile.
pub async fn update_record(shared: &Shared, record: &RunRecord) {
    let key = wire::token(record.run_id.as_str());
    for _ in 0..10 {
        let current = shared.swarm.runs.entry(&key).await.ok().flatten();
        let mut merged = record.clone();
        let outcome = match current {
            Some(entry) => {
                if let Ok(stored) = decode::<RunRecord>(&entry.value) {
                    merged.cancel_requested = stored.cancel_requested.or(merged.cancel_requested);
                }
                let Ok(bytes) = encode(&merged) else { return };
                shared
                    .swarm
                    .runs
                    .update(&key, bytes.into(), entry.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            None => {
                let Ok(bytes) = encode(&merged) else { return };
                shared
                    .swarm
                    .runs
                    .create(&key, bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        if outcome.is_ok() {
            return;
        }
    }
    tracing::warn!(run_id = %record.run_id, "run record update kept conflicting; skipped");
}
