//! What the swarm client commands share: connecting (with every stream and
//! bucket verified), reading a run's record and its final report, and
//! following a run's record as it changes.
//!
//! Keys and encodings (the contract with `coordinator serve`):
//! - `cascade-runs` / `token(run)`: a msgpack [`RunRecord`];
//! - `cascade-submissions` / `token(run)`: a msgpack [`Submission`];
//! - `cascade-idempotency` / `token(key)`: the run id, UTF-8;
//! - `cascade-reports` / `token(run)`: the report (the JSON `run --output`
//!   writes) as a msgpack `serde_json::Value`, or `{"$ref": NAME}` naming an
//!   object of `cascade-objects` holding that report as JSON text.

use std::collections::BTreeMap;

use async_nats::jetstream::kv::{Entry, Operation};
use cascade_proto::wire::{self, RunRecord, Submission};
use cascade_proto::{RunId, decode};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use cascade_core::engine::StageStatus;

/// Connects and makes sure every stream and bucket exists (idempotent).
pub async fn open(args: &NatsArgs) -> Result<Swarm, String> {
    let client = connect(args, "cascade-cli")
        .await
        .map_err(|e| e.to_string())?;
    // A client never changes the settings of a running swarm.
    Swarm::setup(
        client,
        QueueSettings {
            align_existing: false,
            ..QueueSettings::default()
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// A live value of a bucket (deletes and purges read as absent).
fn live(entry: Option<Entry>) -> Option<Entry> {
    entry.filter(|e| e.operation == Operation::Put)
}

/// The run's record and its revision; `None` when there is none.
pub async fn run_record(swarm: &Swarm, run: &RunId) -> Result<Option<(RunRecord, u64)>, String> {
    let entry = swarm
        .runs
        .entry(wire::token(run.as_str()))
        .await
        .map_err(|e| {
            format!(
                "run `{run}`: cannot read bucket `{}`: {e}",
                wire::BUCKET_RUNS
            )
        })?;
    let Some(entry) = live(entry) else {
        return Ok(None);
    };
    let record = decode_record(run, &entry)?;
    Ok(Some((record, entry.revision)))
}

fn decode_record(run: &RunId, entry: &Entry) -> Result<RunRecord, String> {
    decode(&entry.value).map_err(|e| {
        format!(
            "run `{run}`: the record in bucket `{}` (revision {}) is not a run record: {e}",
            wire::BUCKET_RUNS,
            entry.revision
        )
    })
}

/// The run's submission, when it was submitted.
pub async fn submission(swarm: &Swarm, run: &RunId) -> Result<Option<Submission>, String> {
    let entry = swarm
        .submissions
        .entry(wire::token(run.as_str()))
        .await
        .map_err(|e| {
            format!(
                "run `{run}`: cannot read bucket `{}`: {e}",
                wire::BUCKET_SUBMISSIONS
            )
        })?;
    let Some(entry) = live(entry) else {
        return Ok(None);
    };
    decode(&entry.value).map(Some).map_err(|e| {
        format!(
            "run `{run}`: the value in bucket `{}` is not a submission: {e}",
            wire::BUCKET_SUBMISSIONS
        )
    })
}

/// The run's final report (the JSON `run --output` writes), following a
/// `{"$ref": NAME}` stub into the object store; `None` while there is none.
pub async fn report(swarm: &Swarm, run: &RunId) -> Result<Option<Value>, String> {
    let entry = swarm
        .reports
        .entry(wire::token(run.as_str()))
        .await
        .map_err(|e| {
            format!(
                "run `{run}`: cannot read bucket `{}`: {e}",
                wire::BUCKET_REPORTS
            )
        })?;
    let Some(entry) = live(entry) else {
        return Ok(None);
    };
    let value: Value = decode(&entry.value).map_err(|e| {
        format!(
            "run `{run}`: the report in bucket `{}` cannot be decoded: {e}",
            wire::BUCKET_REPORTS
        )
    })?;
    let Some(name) = object_ref(&value) else {
        return Ok(Some(value));
    };
    let what = || {
        format!(
            "run `{run}`: report object `{name}` in `{}`",
            wire::OBJECT_STORE
        )
    };
    let mut object = swarm
        .objects
        .get(name)
        .await
        .map_err(|e| format!("{}: {e}", what()))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("{}: {e}", what()))?;
    // Objects hold JSON text. JSON first: MessagePack would read JSON's
    // opening `{` as the integer 123 and "succeed".
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => decode::<Value>(&bytes)
            .map(Some)
            .map_err(|_| format!("{} cannot be decoded: {e}", what())),
    }
}

/// The object name of a `{"$ref": NAME}` stub.
fn object_ref(v: &Value) -> Option<&str> {
    let m = v.as_object().filter(|m| m.len() == 1)?;
    m.get("$ref")?.as_str()
}

/// Follows the run's record (its current value first, then each change)
/// until its state is final; `on_change` sees every revision. Returns the
/// final record. A record that does not decode is reported and skipped.
pub async fn follow(
    swarm: &Swarm,
    run: &RunId,
    cancel: &CancellationToken,
    mut on_change: impl FnMut(&RunRecord),
) -> Result<RunRecord, String> {
    let mut watch = swarm
        .runs
        .watch_with_history(wire::token(run.as_str()))
        .await
        .map_err(|e| {
            format!(
                "run `{run}`: cannot watch bucket `{}`: {e}",
                wire::BUCKET_RUNS
            )
        })?;
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => {
                return Err(format!("interrupted: stopped following run `{run}` (the run goes on)"));
            }
            next = watch.next() => next,
        };
        let entry = match next {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(format!("run `{run}`: the watch failed: {e}")),
            None => return Err(format!("run `{run}`: the watch ended")),
        };
        if entry.operation != Operation::Put {
            return Err(format!(
                "run `{run}`: its record was deleted from bucket `{}`",
                wire::BUCKET_RUNS
            ));
        }
        match decode_record(run, &entry) {
            Ok(record) => {
                on_change(&record);
                if record.state.is_final() {
                    return Ok(record);
                }
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
}

/// Which stages changed status between two revisions of a run's record.
#[derive(Debug, Default)]
pub struct StageChanges {
    seen: BTreeMap<String, String>,
}

/// A stage's status as the record spells it: a known one, or the text.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Known(StageStatus),
    Other(String),
}

impl StageChanges {
    /// The stages whose status differs from the last record seen; a stage
    /// first seen pending is not a change (the run has not reached it).
    pub fn diff(&mut self, r: &RunRecord) -> Vec<(String, Status)> {
        let mut out = Vec::new();
        for (stage, status) in &r.stages {
            let before = self.seen.insert(stage.clone(), status.clone());
            if before.as_deref() == Some(status.as_str()) {
                continue;
            }
            let parsed = parse_status(status);
            if before.is_none() && parsed == Status::Known(StageStatus::Pending) {
                continue;
            }
            out.push((stage.clone(), parsed));
        }
        out
    }
}

pub fn parse_status(s: &str) -> Status {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_or_else(|_| Status::Other(s.to_owned()), Status::Known)
}

/// One progress line, with `run`'s symbols.
pub fn change_text(stage: &str, status: &Status) -> String {
    match status {
        Status::Known(s) => super::progress::stage_text(stage, *s, None),
        Status::Other(s) => format!("• {stage} {s}"),
    }
}

pub use crate::text::age;

/// Columns padded to their widest cell (a header row first).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_changes_skip_initial_pending_and_repeats() {
        let mut r = RunRecord {
            v: 1,
            run_id: RunId::new("r"),
            cascade: "c".into(),
            state: wire::RunState::Running,
            created_at: 0,
            updated_at: 0,
            owner: None,
            stages: BTreeMap::from([
                ("a".into(), "running".into()),
                ("b".into(), "pending".into()),
            ]),
            error: None,
            cancel_requested: None,
        };
        let mut ch = StageChanges::default();
        assert_eq!(
            ch.diff(&r),
            [("a".into(), Status::Known(StageStatus::Running))]
        );
        r.stages.insert("a".into(), "success".into());
        r.stages.insert("b".into(), "weird".into());
        let lines: Vec<String> = ch
            .diff(&r)
            .iter()
            .map(|(s, st)| change_text(s, st))
            .collect();
        assert_eq!(lines, ["✓ a", "• b weird"]);
        assert!(ch.diff(&r).is_empty());
    }

    #[test]
    fn tables_align_and_refs_are_recognised() {
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "".into()],
        ]);
        assert_eq!(t, "A     BB  C\nlong  x\n");
        assert_eq!(object_ref(&serde_json::json!({"$ref": "o1"})), Some("o1"));
        assert_eq!(object_ref(&serde_json::json!({"$ref": "o1", "x": 1})), None);
        assert_eq!(age(0, 125_000), "2m ago");
    }
}
