//! Run records (for `status` and `watch`) and final reports (for
//! `results` and `submit --wait`), written where failing to write is
//! logged once and the run goes on.

use cascade_proto::RunId;
use cascade_proto::wire::RunRecord;
use serde_json::Value;

use super::Shared;

/// Stores the final report (by reference when large: the `Reports` store).
pub async fn write(shared: &Shared, run: &RunId, report: &Value) {
    if let Err(e) = shared.stores.reports.put(run, report).await {
        tracing::error!(run_id = %run, error = %e, "cannot store the report");
    }
}

/// Writes the run record, keeping a cancel request that `coordinator
/// cancel` may have added meanwhile.
pub async fn update_record(shared: &Shared, record: &RunRecord) {
    if let Err(e) = shared.stores.runs.write(record).await {
        tracing::warn!(run_id = %record.run_id, error = %e, "run record update skipped");
    }
}
