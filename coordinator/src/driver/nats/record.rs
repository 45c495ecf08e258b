//! Run records (for `status` and `watch`) and final reports (for
//! `results` and `submit --wait`), written where failing to write is
//! logged once and the run goes on; and the end of a driven run.

use cascade_proto::RunId;
use cascade_proto::wire::{RunRecord, RunState};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::Shared;
use super::state::Driver;

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

impl Driver {
    /// The record as it stands, to write: a future the run loop polls
    /// (a compare-and-set write may take several rounds).
    pub(super) fn flush_future(&mut self) -> BoxFuture<'static, ()> {
        self.out.record.updated_at = self.shared.now();
        self.out.record_dirty = false;
        let (shared, record) = (self.shared.clone(), self.out.record.clone());
        async move { update_record(&shared, &record).await }.boxed()
    }

    pub(super) async fn flush_record(&mut self) {
        if self.out.record_dirty {
            self.flush_future().await;
        }
    }

    pub(super) async fn finish(&mut self) {
        let report = self.core.engine.report();
        // The end actions (gates, GitHub, notifications, on_run_end) run
        // once: a coordinator that takes over a run whose stored report
        // records them (`integrations`) keeps that report. They run again
        // only if the owner died between acting and writing the report.
        let stored = self.stored_report().await;
        let value = self.core.finish(stored).await;
        write(&self.shared, &self.run_id, &value).await;
        // Gates may have failed the run: the record follows the report.
        let status = value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or(report.status.as_str())
            .to_owned();
        self.out.record.state = match status.as_str() {
            "success" => RunState::Success,
            "partial" => RunState::Partial,
            _ => RunState::Failed,
        };
        self.out.record.error = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.out.record_dirty = true;
        self.flush_record().await;
        tracing::info!(run_id = %self.run_id, status = %status, "run finished");
        crate::driver::metrics::run_finished(&self.run_id, self.out.record.created_at, &status);
    }

    /// The report a previous owner stored for this run, if any.
    async fn stored_report(&self) -> Option<Value> {
        self.shared
            .stores
            .reports
            .get(&self.run_id)
            .await
            .ok()
            .flatten()
    }
}
