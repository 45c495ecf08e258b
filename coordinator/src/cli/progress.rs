//! Per-stage progress on stderr while a run goes.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::engine::{Effect, Engine, RunReport, StageStatus};

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
        let first = |m: &Option<String>| {
            m.as_deref()
                .and_then(|s| s.lines().next())
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        };
        let text = match status {
            StageStatus::Running if message.is_none() => format!("▶ {stage}"),
            StageStatus::Running => format!("▶ {stage}{}", first(message)),
            StageStatus::Pending => format!("↺ {stage}{}", first(message)),
            StageStatus::Success => format!("✓ {stage}"),
            StageStatus::Failed => format!("✗ {stage} failed{}", first(message)),
            StageStatus::Skipped => format!("↷ {stage} skipped{}", first(message)),
            StageStatus::Cancelled => format!("⊘ {stage} cancelled{}", first(message)),
        };
        self.line(&text);
    }

    /// The closing summary is printed whatever `show` says: it is the
    /// answer to the command.
    pub fn finished(&self, r: &RunReport, output: Option<&Path>) {
        let mut counts = std::collections::BTreeMap::new();
        for s in r.stages.values() {
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
            r.cascade,
            r.status,
            r.duration,
            parts.join(", ")
        );
        if let Some(e) = &r.error {
            let _ = writeln!(err, "  {e}");
        }
        for (id, s) in &r.stages {
            if s.get("status").and_then(|v| v.as_str()) == Some("failed") {
                let msg = s.get("error").and_then(|v| v.as_str()).unwrap_or("");
                let _ = writeln!(
                    err,
                    "  stage {id} failed: {}",
                    msg.lines().next().unwrap_or("")
                );
            }
        }
        if !r.escalations.is_empty() {
            let _ = writeln!(
                err,
                "  {} escalation(s) recorded in the results",
                r.escalations.len()
            );
        }
        if let Some(p) = output {
            let _ = writeln!(err, "  results: {}", p.display());
        }
    }
}
