//! The results of a run, in the seed-compatible shape of CASCADE-FORMAT.md
//! (`cascade, status, duration, stages, memory_snapshot`) plus our own
//! fields (run_id, attempts, branch_taken, errors, escalations, ...).
//!
//! The run's `notes` are [`EngineNote`]s up to the report, rendered as
//! their text; at most [`MAX_NOTES`] distinct ones are kept and a last note
//! counts the rest.

use serde::Serialize;
use serde_json::{Map, Value};

use cascade_proto::Usage;

use super::{Engine, EngineNote, MAX_NOTES, Millis, RunStatus, StageNote, StageStatus, Stats};
use crate::plan::NodeKind;
use crate::plan::render::model_of;

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub cascade: String,
    pub status: String,
    /// Seconds.
    pub duration: f64,
    pub stages: Map<String, Value>,
    pub memory_snapshot: Map<String, Value>,
    pub run_id: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub escalations: Vec<Value>,
    /// Model tokens and cost of the whole run.
    pub usage: Usage,
    pub stats: Stats,
    /// What the engine ignored or refused; each serializes as its text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<EngineNote>,
}

/// The run's notes: distinct, bounded, and counted past the bound.
#[derive(Clone, Debug, Default)]
pub(super) struct Notes {
    kept: Vec<EngineNote>,
    /// Repeats of a kept note, and notes past [`MAX_NOTES`].
    dropped: u64,
}

impl Notes {
    pub(super) fn push(&mut self, note: EngineNote) {
        // A linear scan: the list is bounded, and notes are rare.
        if self.kept.len() < MAX_NOTES && !self.kept.contains(&note) {
            self.kept.push(note);
        } else {
            self.dropped += 1;
        }
    }

    /// The kept notes, then how many were dropped (when any were).
    pub(super) fn to_vec(&self) -> Vec<EngineNote> {
        let mut all = self.kept.clone();
        if self.dropped > 0 {
            all.push(EngineNote::Dropped(self.dropped));
        }
        all
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub stage_id: String,
    pub status: StageStatus,
    pub output: Value,
    pub error: Option<String>,
    pub duration: f64,
    pub model_used: Option<String>,
    pub iterations: u32,
    /// Model tokens (input + output) and cost in US dollars.
    pub tokens: u64,
    pub cost: f64,
    #[serde(skip_serializing_if = "Usage::is_empty")]
    pub usage: Usage,
    /// Structured detail of a failure (the sandbox loop's fix history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_taken: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<StageNote>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl Engine {
    pub fn report(&self) -> RunReport {
        let plan = &self.plan;
        let mut stages = Map::new();
        for (n, node) in plan.nodes.iter().enumerate() {
            let st = &self.nodes[n];
            let duration = match (st.started_at, st.finished_at) {
                (Some(a), Some(b)) => secs(b.saturating_sub(a)),
                (Some(a), None) => secs(self.now.saturating_sub(a)),
                _ => 0.0,
            };
            let model_used = match st.models.len() {
                0 => (st.runs > 0)
                    .then(|| model_of(plan, n).map(|(m, _)| m))
                    .flatten()
                    .filter(|_| matches!(node.kind, NodeKind::Tasks { .. })),
                _ => Some(st.models.iter().cloned().collect::<Vec<_>>().join(", ")),
            };
            let skills = match &node.kind {
                NodeKind::Tasks { skills, .. } => skills.iter().map(|s| s.skill.clone()).collect(),
                _ => Vec::new(),
            };
            let report = StageReport {
                stage_id: node.id.clone(),
                status: st.status,
                output: st.outputs.clone().unwrap_or(Value::Null),
                error: st.error.clone(),
                duration,
                model_used,
                iterations: if node.repeat.is_some() {
                    st.loop_iterations.max(st.runs.min(1))
                } else if let Some(i) = self.loop_iterations(n) {
                    i
                } else {
                    st.runs
                },
                tokens: st.usage.tokens(),
                cost: (st.usage.cost_usd * 1e6).round() / 1e6,
                usage: st.usage.clone(),
                details: st.details.clone(),
                ty: node.ty.as_str(),
                attempts: st.attempts,
                branch_taken: st.branch_taken.clone(),
                skills,
                workers: st.workers.iter().cloned().collect(),
                errors: st.errors.clone(),
                notes: st.notes.clone(),
                started_at: st.started_at.map(rfc3339),
                finished_at: st.finished_at.map(rfc3339),
            };
            stages.insert(
                node.id.clone(),
                serde_json::to_value(report).unwrap_or(Value::Null),
            );
        }
        let end = self.finished_at.unwrap_or(self.now);
        RunReport {
            cascade: plan.name.clone(),
            status: self.status.map_or("running", RunStatus::as_str).to_owned(),
            duration: self.started_at.map_or(0.0, |s| secs(end.saturating_sub(s))),
            stages,
            memory_snapshot: self.memory.clone(),
            run_id: self.run_id.to_string(),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
            error: self.run_error.clone(),
            escalations: self.escalations.clone(),
            usage: self.usage.clone(),
            stats: self.stats.clone(),
            notes: self.notes.to_vec(),
        }
    }
}

fn secs(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// `2026-11-22T01:02:03.456Z` from milliseconds since the epoch (no clock
/// read here: the time is the driver's).
pub fn rfc3339(ms: Millis) -> String {
    let at = i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use cascade_proto::{Attempt, TaskId};

    use super::{EngineNote, MAX_NOTES, Notes};

    #[test]
    fn notes_are_distinct_bounded_and_counted() {
        let mut notes = Notes::default();
        notes.push(EngineNote::AfterFinish);
        notes.push(EngineNote::AfterFinish);
        for i in 0..MAX_NOTES as u32 + 5 {
            notes.push(EngineNote::StaleResult(TaskId::new("s#0"), Attempt(i)));
        }
        let all = notes.to_vec();
        assert_eq!(all.len(), MAX_NOTES + 1);
        assert_eq!(all[0], EngineNote::AfterFinish);
        // One repeat, and the six stale results past the cap.
        assert_eq!(all[MAX_NOTES], EngineNote::Dropped(7));
        let text = serde_json::to_value(&all[MAX_NOTES]).expect("a string");
        assert_eq!(
            text,
            "7 more note(s) dropped (repeats of a note above, or past the first 1000)"
        );
    }

    #[test]
    fn notes_serialize_as_their_text() {
        let note = EngineNote::UnknownTask(TaskId::new("nope#0"));
        let v = serde_json::to_value(vec![note]).expect("strings");
        assert_eq!(
            v,
            serde_json::json!(["result for unknown task `nope#0` ignored"])
        );
        assert!(Notes::default().to_vec().is_empty());
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_309_323_456),
            "2026-11-22T01:02:03.456Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
