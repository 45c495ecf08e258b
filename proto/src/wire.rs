//! Everything the swarm sends over NATS: stream, subject, consumer and
//! bucket names (defined here once), and the message types.
//!
//! ```text
//!  submit ──▶ CASCADE_SUBMIT (work queue) ──▶ coordinator: run record, lease
//!  coordinator ──DispatchTask──▶ CASCADE_TASKS (work queue)
//!      cascade.task.skill.<skill>    mesh: one durable consumer per skill
//!      cascade.task.worker.<worker>  star: one per worker
//!      cascade.task.lead.<worker>    hierarchical: batches for a team lead
//!  worker ──claim──▶ KV cascade-claims  (who holds which delivery)
//!  worker ──result─▶ KV cascade-results  `<run>.<task>.<attempt>.<worker>` (each writer its own key)
//!  coordinator ◀── watches $KV.cascade-results.<run>.>
//!  coordinator ──▶ CASCADE_EVENTS  cascade.event.<run> (the run's event log)
//!  coordinator ──▶ cascade.cancel.<run> (core NATS, best effort; fencing is the guarantee)
//!  workers ──heartbeat──▶ KV cascade-workers (TTL: a dead worker disappears)
//! ```
//!
//! Every message carries `v` = [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION);
//! a reader refuses (logs, counts, dead-letters) what it cannot decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Attempt, Millis, RunId, TaskId, TaskResult, TaskSpec};

// ---- streams -------------------------------------------------------------

/// Work queue of tasks; a message is gone once acked.
pub const STREAM_TASKS: &str = "CASCADE_TASKS";
pub const TASKS_WILDCARD: &str = "cascade.task.>";
/// Work queue of submissions, consumed by coordinators.
pub const STREAM_SUBMIT: &str = "CASCADE_SUBMIT";
pub const SUBJECT_SUBMIT: &str = "cascade.submit";
pub const CONSUMER_SUBMIT: &str = "coordinators";
/// Per-run event logs (limits retention).
pub const STREAM_EVENTS: &str = "CASCADE_EVENTS";
pub const EVENTS_WILDCARD: &str = "cascade.event.>";
/// Tasks that reached their delivery limit, with their errors.
pub const STREAM_DLQ: &str = "CASCADE_DLQ";
pub const DLQ_WILDCARD: &str = "cascade.dlq.>";
/// Core NATS (not stored): cancellation hints to workers.
pub const CANCEL_WILDCARD: &str = "cascade.cancel.>";

// ---- buckets -------------------------------------------------------------

pub const BUCKET_RUNS: &str = "cascade-runs";
pub const BUCKET_SUBMISSIONS: &str = "cascade-submissions";
pub const BUCKET_IDEMPOTENCY: &str = "cascade-idempotency";
pub const BUCKET_LEASES: &str = "cascade-leases";
pub const BUCKET_WORKERS: &str = "cascade-workers";
pub const BUCKET_CLAIMS: &str = "cascade-claims";
pub const BUCKET_RESULTS: &str = "cascade-results";
pub const BUCKET_MEMORY: &str = "cascade-memory";
pub const BUCKET_REPORTS: &str = "cascade-reports";

/// Every KV bucket of the swarm (setup, permissions and verification go
/// over this one list).
pub const BUCKETS: [&str; 9] = [
    BUCKET_RUNS,
    BUCKET_SUBMISSIONS,
    BUCKET_IDEMPOTENCY,
    BUCKET_LEASES,
    BUCKET_WORKERS,
    BUCKET_CLAIMS,
    BUCKET_RESULTS,
    BUCKET_MEMORY,
    BUCKET_REPORTS,
];
pub const OBJECT_STORE: &str = "cascade-objects";

/// Values larger than this travel through the object store by reference,
/// so no message nears the server's max payload (1 MiB by default).
pub const INLINE_LIMIT: usize = 256 * 1024;

pub fn subject_task_skill(skill: &str) -> String {
    format!("cascade.task.skill.{}", token(skill))
}

pub fn subject_task_worker(worker: &str) -> String {
    format!("cascade.task.worker.{}", token(worker))
}

pub fn subject_task_lead(worker: &str) -> String {
    format!("cascade.task.lead.{}", token(worker))
}

pub fn consumer_skill(skill: &str) -> String {
    format!("skill-{}", token(skill))
}

pub fn consumer_worker(worker: &str) -> String {
    format!("worker-{}", token(worker))
}

pub fn consumer_lead(worker: &str) -> String {
    format!("lead-{}", token(worker))
}

pub fn subject_events(run: &RunId) -> String {
    format!("cascade.event.{}", token(run.as_str()))
}

pub fn subject_cancel(run: &RunId) -> String {
    format!("cascade.cancel.{}", token(run.as_str()))
}

pub fn subject_dlq(skill: &str) -> String {
    format!("cascade.dlq.{}", token(skill))
}

/// The advisory the server sends when a message of `consumer` reaches its
/// delivery limit (the message itself stays in the stream: ours to move).
pub fn advisory_max_deliveries(consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM_TASKS}.{consumer}")
}

/// The attempt part of result keys: `<run>.<task>.<attempt>`.
pub fn key_result_attempt(run: &RunId, task: &TaskId, attempt: Attempt) -> String {
    format!(
        "{}.{}.{}",
        token(run.as_str()),
        token(task.as_str()),
        attempt.0
    )
}

/// Key of one writer's result of a task attempt:
/// `<run>.<task>.<attempt>.<writer>`. The writer (a worker name) is the
/// last token so that a worker's NATS user may write only under its own
/// names ([`crate::permissions`]): nobody can squat or overwrite another
/// worker's result. Which result of an attempt counts is decided by its
/// reader (the first whose proof verifies, in stream order).
pub fn key_result(run: &RunId, task: &TaskId, attempt: Attempt, writer: &str) -> String {
    format!(
        "{}.{}",
        key_result_attempt(run, task, attempt),
        token(writer)
    )
}

/// Every writer's result of one attempt (a subject filter).
pub fn key_results_of_attempt(run: &RunId, task: &TaskId, attempt: Attempt) -> String {
    format!("{}.*", key_result_attempt(run, task, attempt))
}

/// Every result key of a run, for a watch.
pub fn key_results_of_run(run: &RunId) -> String {
    format!("{}.>", token(run.as_str()))
}

/// Key of the claim on a task attempt in the claims bucket:
/// `<run>.<task>.<attempt>`. The same shape as [`key_result_attempt`], in another
/// bucket: each bucket's keys are built by their own function, so the two
/// can never be used for each other.
pub fn key_claim(run: &RunId, task: &TaskId, attempt: Attempt) -> String {
    format!(
        "{}.{}.{}",
        token(run.as_str()),
        token(task.as_str()),
        attempt.0
    )
}

/// The claim a team lead holds on a batch message (the third token is not
/// a number, so it never collides with a task attempt's key).
pub fn key_claim_batch(run: &RunId, batch: &str) -> String {
    format!("{}.{}.lead", token(run.as_str()), token(batch))
}

/// Core NATS (not stored): a team lead's [`BatchReport`]s for a run.
pub fn subject_batch_report(run: &RunId) -> String {
    format!("cascade.batch.{}", token(run.as_str()))
}

/// Where the coordinators keep a run's grant secret: in the leases bucket,
/// which no worker or client may read. Two tokens, so it never collides
/// with a lease (whose key is the run's one token).
pub fn key_grant_secret(run: &RunId) -> String {
    format!("{}.grant", token(run.as_str()))
}

/// The inbox prefix of `coordinator serve` (async-nats receives replies to
/// its requests, pull batches and watches there).
pub const INBOX_COORDINATOR: &str = "_INBOX_coordinator";
/// The inbox prefix of the one-shot client commands.
pub const INBOX_CLIENT: &str = "_INBOX_client";

/// The inbox prefix of worker `name`: each worker its own, so a worker's
/// user may subscribe only to its own replies.
pub fn inbox_worker(name: &str) -> String {
    format!("_INBOX_worker_{}", token(name))
}

pub fn key_memory_global(key: &str) -> String {
    format!("global.{}", token(key))
}

pub fn key_memory_run(run: &RunId, key: &str) -> String {
    format!("run.{}.{}", token(run.as_str()), token(key))
}

/// One subject or key token from any string: characters NATS does not
/// allow in a token (`.`, `*`, `>`, spaces, `#`, `@`, ...) become `=XX`.
/// Reversible with [`untoken`], and never empty.
pub fn token(s: &str) -> String {
    if s.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

pub fn untoken(t: &str) -> Option<String> {
    if t == "=" {
        return Some(String::new());
    }
    let bytes = t.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = t.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---- messages ------------------------------------------------------------

/// A cascade sent to the swarm: its files as text (the main file and every
/// sub-cascade), so any coordinator can load it exactly as validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub v: u32,
    pub run_id: RunId,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Name of the main file within `files`.
    pub main: String,
    /// File name (relative, as the loader resolves it) -> contents.
    pub files: BTreeMap<String, String>,
    pub inputs: Map<String, Value>,
    pub submitted_at: Millis,
    #[serde(default)]
    pub submitted_by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Success,
    Partial,
    Failed,
}

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Partial | Self::Failed)
    }
}

/// A run as `status` and `watch` see it (small: stage statuses only; the
/// full results are in the reports bucket once the run ends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub v: u32,
    pub run_id: RunId,
    pub cascade: String,
    pub state: RunState,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default)]
    pub owner: Option<String>,
    /// Stage id -> status (`pending`, `running`, `success`, ...).
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cancel_requested: Option<String>,
    /// Stage id -> what its tasks wait for, while they cannot start (no
    /// worker offers the skill): said instead of waiting silently.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, String>,
    /// Set while the coordinator's writes for the run fail because the
    /// broker is unavailable ("broker unavailable since <RFC3339>: <error>"),
    /// cleared when they succeed again. Best effort: a broker that takes no
    /// writes at all cannot store it either (clients say so themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// Who drives a run, until when. Renewed by compare-and-set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub v: u32,
    pub owner: String,
    pub expires_at: Millis,
    /// The run's clock when this was written: the first owner's wall clock,
    /// carried on by every coordinator that takes the run over, so the
    /// times in its log and its timers stay on one base whatever the
    /// machines' clocks say. 0 from writers that predate it.
    #[serde(default)]
    pub clock: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    Member,
    Lead,
}

/// A worker's registration and heartbeat (the bucket's TTL removes a
/// worker that stops beating).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub v: u32,
    pub name: String,
    pub skills: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub role: WorkerRole,
    pub concurrency: u32,
    pub in_flight: u32,
    pub draining: bool,
    pub started_at: Millis,
    pub heartbeat_at: Millis,
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub version: String,
    /// Models this worker can call (key present, CLI on PATH).
    #[serde(default)]
    pub models: Vec<String>,
    /// What else it offers, e.g. `sandbox:bwrap`.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// How a task reached the queue; the worker reports it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "route", rename_all = "snake_case")]
pub enum Route {
    /// Competing consumers on the skill's queue.
    Mesh,
    /// Assigned to one worker by the coordinator.
    Direct { worker: String },
    /// Handed to a team lead, which fans out to a member.
    ViaLead { lead: String, batch: String },
}

/// A task on the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u32,
    pub spec: TaskSpec,
    pub route: Route,
    pub dispatched_at: Millis,
    /// Inputs too large to inline live in the object store under this name;
    /// `spec.inputs` is then `null`.
    #[serde(default)]
    pub inputs_ref: Option<String>,
    /// The attempt's grant: an HMAC over run, task and attempt under a
    /// secret only coordinators can read. Whoever was delivered the task
    /// proves it with the grant in its result ([`ResultRecord::proof`]);
    /// the grant itself is never stored anywhere else.
    #[serde(default)]
    pub grant: Option<String>,
}

/// A batch for a team lead (hierarchical topology).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchMessage {
    pub v: u32,
    pub batch: String,
    pub run_id: RunId,
    pub tasks: Vec<TaskSpec>,
    pub dispatched_at: Millis,
    /// Task id -> the grant of its attempt ([`TaskMessage::grant`]), which
    /// the lead hands on with the task.
    #[serde(default)]
    pub grants: BTreeMap<String, String>,
    /// The batch's own grant: the lead proves its claim on the batch with it.
    #[serde(default)]
    pub grant: Option<String>,
}

/// Which delivery of an attempt a worker holds. A worker acts on the
/// message (ack, nak, term) only while the claim still names its delivery:
/// acks are not fencing (NATS-NOTES.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub v: u32,
    pub worker: String,
    /// The JetStream delivery count of the message this worker got.
    pub delivered: u64,
    pub at: Millis,
    /// The stream sequence of that message: a task re-published (by the
    /// sweeper) is a newer message than any delivery of the old one, so
    /// claims compare `(stream_seq, delivered)`.
    #[serde(default)]
    pub stream_seq: Option<u64>,
    /// Proof that the claimant was delivered the attempt: an HMAC under
    /// the attempt's grant over worker, delivery and stream sequence
    /// (`cascade_swarm::grant::claim_proof`). A claim whose proof does not
    /// verify is ignored (and overwritten) by everyone holding the grant.
    #[serde(default)]
    pub proof: Option<String>,
}

/// A task attempt's result, written once (KV create) by whoever finished
/// first; later writers lose and discard theirs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub v: u32,
    pub run_id: RunId,
    pub result: TaskResult,
    /// Outputs too large to inline live in the object store under this
    /// name; the result's outputs are then `null`.
    #[serde(default)]
    pub outputs_ref: Option<String>,
    /// How the task reached the worker, and who led it (hierarchical).
    #[serde(default)]
    pub route: Option<Route>,
    /// Proof that the writer was delivered the attempt: an HMAC under the
    /// attempt's grant over the writer's name (`cascade_swarm::grant`). A
    /// coordinator drops a result whose proof does not verify.
    #[serde(default)]
    pub proof: Option<String>,
}

/// Ask workers to stop an attempt (best effort).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub v: u32,
    pub run_id: RunId,
    /// `None`: every task of the run.
    #[serde(default)]
    pub task_id: Option<TaskId>,
    #[serde(default)]
    pub attempt: Option<Attempt>,
}

/// A team lead's summary of one batch, once every task of it has a
/// result (informational: the results bucket stays authoritative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    pub v: u32,
    pub batch: String,
    pub run_id: RunId,
    pub lead: String,
    /// Task id -> the member that ran it (`""` when sent to the mesh queue).
    pub assigned: BTreeMap<String, String>,
    pub succeeded: u32,
    pub failed: u32,
    pub at: Millis,
}

/// A task that reached its delivery limit, moved out of the work queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub v: u32,
    pub stream_seq: u64,
    pub subject: String,
    pub deliveries: u64,
    /// The task, when its message could be decoded.
    #[serde(default)]
    pub task: Option<TaskSpec>,
    /// The raw message when it could not.
    #[serde(default)]
    pub raw: Option<Vec<u8>>,
    pub reason: String,
    pub at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_legal() {
        for s in [
            "lint",
            "quality-checks#0@2",
            "a.b c/d",
            "ünï",
            "",
            "x>y*z",
            "=41",
        ] {
            let t = token(s);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(s), "{s} -> {t}");
        }
        assert_eq!(untoken("=Z"), None);
    }

    #[test]
    fn result_keys_are_dotted_tokens() {
        let k = key_result(
            &RunId::new("r-1"),
            &TaskId::new("a/b#0@1"),
            Attempt(3),
            "w.1",
        );
        assert_eq!(k, "r-1.a=2Fb=230=401.3.w=2E1");
        let all = key_results_of_attempt(&RunId::new("r-1"), &TaskId::new("a/b#0@1"), Attempt(3));
        assert_eq!(all, "r-1.a=2Fb=230=401.3.*");
    }
}
