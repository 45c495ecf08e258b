//! What the swarm client commands share: connecting (with every stream and
//! bucket verified), reading a run's record, submission and final report,
//! and following a run's record as it changes. The keys, encodings and
//! compare-and-set rules are the typed stores' (`cascade_swarm::store`).

use std::collections::BTreeMap;

use cascade_proto::RunId;
use cascade_proto::wire::{RunRecord, Submission};
use cascade_swarm::store::{StoreError, Stores};
use cascade_swarm::{NatsArgs, NatsError, QueueSettings, Swarm, connect};
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use cascade_core::engine::StageStatus;

/// Why a client command could not talk to the swarm.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("interrupted: stopped following run `{0}` (the run goes on)")]
    Interrupted(RunId),
    #[error("run `{0}`: its record was deleted")]
    Deleted(RunId),
    #[error("run `{0}`: its record kept changing; cancel not recorded, try again")]
    CancelContended(RunId),
}

/// A connected client: the swarm's typed stores.
pub struct Client {
    pub stores: Stores,
}

/// Connects and makes sure every stream and bucket exists (idempotent).
pub async fn open(args: &NatsArgs) -> Result<Client, ClientError> {
    let client = connect(args, "cascade-cli").await?;
    // A client never changes the settings of a running swarm.
    let swarm = Swarm::setup(
        client,
        QueueSettings {
            align_existing: false,
            replicas: args.replicas(),
            ..QueueSettings::default()
        },
    )
    .await?;
    Ok(Client {
        stores: swarm.stores(),
    })
}

/// The run's record; `None` when there is none.
pub async fn run_record(c: &Client, run: &RunId) -> Result<Option<RunRecord>, ClientError> {
    Ok(c.stores.runs.get(run).await?)
}

/// The run's submission, when it was submitted.
pub async fn submission(c: &Client, run: &RunId) -> Result<Option<Submission>, ClientError> {
    Ok(c.stores.submissions.get(run).await?)
}

/// The run's final report (the JSON `run --output` writes); `None` while
/// there is none.
pub async fn report(c: &Client, run: &RunId) -> Result<Option<Value>, ClientError> {
    Ok(c.stores.reports.get(run).await?)
}

/// Follows the run's record (its current value first, then each change)
/// until its state is final; `on_change` sees every revision. Returns the
/// final record. A record that does not decode is reported and skipped.
pub async fn follow(
    c: &Client,
    run: &RunId,
    cancel: &CancellationToken,
    mut on_change: impl FnMut(&RunRecord),
) -> Result<RunRecord, ClientError> {
    let mut watch = c.stores.runs.watch(run).await?;
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return Err(ClientError::Interrupted(run.clone())),
            next = watch.next() => next,
        };
        match next {
            Some(Ok(record)) => {
                on_change(&record);
                if record.state.is_final() {
                    return Ok(record);
                }
            }
            Some(Err(StoreError::Missing { .. })) => return Err(ClientError::Deleted(run.clone())),
            Some(Err(e @ StoreError::Decode { .. })) => eprintln!("warning: {e}"),
            // The watch broke (a cluster node or the bucket's leader went
            // away): watch again. A new watch starts with the current
            // record, so no state is missed; a record is a whole state.
            Some(Err(e)) => {
                eprintln!("warning: {e}; watching run `{run}` again");
                watch = rewatch(c, run, cancel).await?;
            }
            None => {
                eprintln!("warning: the watch of run `{run}` ended; watching it again");
                watch = rewatch(c, run, cancel).await?;
            }
        }
    }
}

/// Opens the run's watch again, retrying (1 s apart) until it opens or the
/// user interrupts: while the broker elects a new leader, opening fails.
async fn rewatch(
    c: &Client,
    run: &RunId,
    cancel: &CancellationToken,
) -> Result<cascade_swarm::store::Watch<RunRecord>, ClientError> {
    loop {
        match c.stores.runs.watch(run).await {
            Ok(w) => return Ok(w),
            Err(e) => eprintln!("warning: watch run `{run}` again: {e}"),
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(ClientError::Interrupted(run.clone())),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Which stages changed status between two revisions of a run's record.
#[derive(Debug, Default)]
pub struct StageChanges {
    seen: BTreeMap<String, String>,
}

/// What stages newly wait for (the record's `waiting`), for `submit --wait`
/// and `watch` to say once each.
#[derive(Debug, Default)]
pub struct WaitingChanges {
    seen: BTreeMap<String, String>,
    degraded: bool,
}

/// The broker became unavailable for the run, or came back.
#[derive(Debug, Clone, PartialEq)]
pub enum Degraded {
    Began(String),
    Ended,
}

impl Degraded {
    pub fn text(&self) -> String {
        match self {
            Degraded::Began(why) => format!("! degraded: {why}"),
            Degraded::Ended => "✓ the broker is back: the run goes on".to_owned(),
        }
    }
}

impl WaitingChanges {
    /// Stage and reason of each wait not yet said.
    pub fn diff(&mut self, r: &RunRecord) -> Vec<(String, String)> {
        let new: Vec<(String, String)> = r
            .waiting
            .iter()
            .filter(|(stage, why)| self.seen.get(*stage) != Some(*why))
            .map(|(s, w)| (s.clone(), w.clone()))
            .collect();
        self.seen = r.waiting.clone();
        new
    }

    /// Whether the record's `degraded` appeared or cleared since the last
    /// record seen (said once each way, not at every new error text).
    pub fn degraded(&mut self, r: &RunRecord) -> Option<Degraded> {
        let now = r.degraded.is_some();
        if now == self.degraded {
            return None;
        }
        self.degraded = now;
        Some(match &r.degraded {
            Some(why) => Degraded::Began(why.clone()),
            None => Degraded::Ended,
        })
    }
}

/// The line that says a stage waits.
pub fn waiting_text(stage: &str, why: &str) -> String {
    format!("… {stage} queued, waiting for {why}")
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
            state: cascade_proto::wire::RunState::Running,
            created_at: 0,
            updated_at: 0,
            owner: None,
            stages: BTreeMap::from([
                ("a".into(), "running".into()),
                ("b".into(), "pending".into()),
            ]),
            error: None,
            cancel_requested: None,
            waiting: Default::default(),
            degraded: None,
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
    fn degraded_is_said_once_when_it_appears_and_once_when_it_clears() {
        let mut r = RunRecord {
            v: 1,
            run_id: RunId::new("r"),
            cascade: "c".into(),
            state: cascade_proto::wire::RunState::Running,
            created_at: 0,
            updated_at: 0,
            owner: None,
            stages: BTreeMap::new(),
            error: None,
            cancel_requested: None,
            waiting: Default::default(),
            degraded: None,
        };
        let mut w = WaitingChanges::default();
        assert_eq!(w.degraded(&r), None);
        r.degraded = Some("broker unavailable since T: timed out".into());
        assert_eq!(
            w.degraded(&r),
            Some(Degraded::Began(
                "broker unavailable since T: timed out".into()
            ))
        );
        r.degraded = Some("broker unavailable since T: no responders".into());
        assert_eq!(w.degraded(&r), None, "a new error text is not a new outage");
        r.degraded = None;
        assert_eq!(w.degraded(&r), Some(Degraded::Ended));
        assert_eq!(w.degraded(&r), None);
    }

    #[test]
    fn tables_align_and_ages_read() {
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "".into()],
        ]);
        assert_eq!(t, "A     BB  C\nlong  x\n");
        assert_eq!(age(0, 125_000), "2m ago");
    }
}
