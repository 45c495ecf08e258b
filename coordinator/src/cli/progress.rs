//! Per-stage progress on stderr while a run goes.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value};

use cascade_core::engine::{Effect, Engine, StageStatus};

pub struct Progress {
    show: bool,
    start: Instant,
}

impl Progress {
    pub fn new(show: bool) -> Self {
        Progress {
            show,
            start: Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        if self.show {
            let t = self.start.elapsed().as_secs_f64();
            let _ = writeln!(std::io::stderr().lock(), "[{t:7.2}s] {text}");
        }
    }

    pub fn started(&self, cascade: &str, run_id: &str) {
        self.line(&format!("cascade {cascade}: run {run_id}"));
    }

    pub fn effect(&mut self, fx: &Effect, _engine: &Engine) {
        let Effect::StageChanged {
            stage,
            status,
            message,
        } = fx
        else {
            return;
        };
        let text = stage_text(stage, *status, message.as_deref());
        self.line(&text);
    }

    /// Progress of a run followed over the swarm (`submit --wait`).
    pub fn stage(&self, stage: &str, status: StageStatus) {
        self.line(&stage_text(stage, status, None));
    }

    /// The closing summary (of a report as JSON) is printed whatever
    /// `show` says: it is the answer to the command.
    pub fn finished(&self, r: &Value, output: Option<&Path>) {
        let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?");
        let empty = Map::new();
        let stages = r.get("stages").and_then(Value::as_object).unwrap_or(&empty);
        let mut counts = std::collections::BTreeMap::new();
        for s in stages.values() {
            let status = s
                .get("status")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_owned();
            *counts.entry(status).or_insert(0) += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "cascade {}: {} in {:.2}s ({})",
            field("cascade"),
            field("status"),
            r.get("duration").and_then(Value::as_f64).unwrap_or(0.0),
            parts.join(", ")
        );
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            let _ = writeln!(err, "  {e}");
        }
        for (id, s) in stages {
            if s.get("status").and_then(|v| v.as_str()) == Some("failed") {
                let msg = s.get("error").and_then(|v| v.as_str()).unwrap_or("");
                let _ = writeln!(
                    err,
                    "  stage {id} failed: {}",
                    msg.lines().next().unwrap_or("")
                );
            }
        }
        let escalations = r
            .get("escalations")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if escalations > 0 {
            let _ = writeln!(err, "  {escalations} escalation(s) recorded in the results");
        }
        if let Some(p) = output {
            let _ = writeln!(err, "  results: {}", p.display());
        }
    }
}

/// One line of progress for a stage's new status: the symbols `run`,
/// `submit --wait` and `watch` share.
pub fn stage_text(stage: &str, status: StageStatus, message: Option<&str>) -> String {
    let first = message
        .and_then(|s| s.lines().next())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    match status {
        StageStatus::Running => format!("▶ {stage}{first}"),
        StageStatus::Pending => format!("↺ {stage}{first}"),
        StageStatus::Success => format!("✓ {stage}"),
        StageStatus::Failed => format!("✗ {stage} failed{first}"),
        StageStatus::Skipped => format!("↷ {stage} skipped{first}"),
        StageStatus::Cancelled => format!("⊘ {stage} cancelled{first}"),
    }
}
