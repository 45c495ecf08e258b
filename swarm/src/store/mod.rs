//! The typed stores: each is the one place the wire rules of its stream or
//! bucket live (keys, encoding, create-only or compare-and-set, large
//! values by reference), behind a narrow trait so the drivers can be
//! tested without NATS.
//!
//! ```text
//!  EventLog     cascade.event.<run>      append with the expected last sequence; read forward
//!  TaskBus      cascade.task.*           publish with a message id (acks pipelined); DLQ; cancels;
//!                                        queue depths; a worker's pulls (`TaskQueue`, `Delivery`)
//!  DeadLetters  cascade.dlq.*            an operator's view of the DLQ: list, read, remove by id
//!  Claims       cascade-claims           create, compare-and-set by revision
//!  Results      cascade-results          create: the first write wins; watch a run's results
//!  Leases       cascade-leases           acquire, renew by revision, release
//!  Runs         cascade-runs             the run record (merging a concurrent cancel request)
//!  Submissions  cascade-submissions      the files of a run, written once; idempotency keys
//!               cascade.submit           (cascade-idempotency); the publish to the coordinators
//!  Reports      cascade-reports          a run's final report, by reference when large
//!  Memory       cascade-memory           cascade memory, global or per run
//!  Objects      cascade-objects          JSON values by reference
//!  Registry     cascade-workers          worker heartbeats
//! ```
//!
//! [`jetstream`] holds the implementations on JetStream; `memory` (feature
//! `testing`) holds in-memory ones with the same rules.

mod error;
pub mod jetstream;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use cascade_proto::wire::{
    self, BatchMessage, BatchReport, CancelRequest, Claim, DeadLetter, ResultRecord, RunRecord,
    RunState, Submission, TaskMessage, WorkerInfo,
};
use cascade_proto::{Attempt, EventRecord, Millis, RunId, TaskId};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::{Map, Value};

pub use error::{Class, Classify, StoreError};

use crate::setup::QueueSettings;

/// What every store operation returns.
pub type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;
/// A watch: history first, then every change, until dropped.
pub type Watch<T> = BoxStream<'static, Result<T, StoreError>>;
/// A publish sent and waiting for the server's acknowledgement; collect
/// many before waiting on any (the hot path pipelines them).
pub type AckFuture = BoxFuture<'static, Result<(), StoreError>>;

/// The results of one task attempt (`<run>.<task>.<attempt>`): only ever
/// used with [`Results`] (and to name an attempt's objects). Each writer
/// stores its result under its own key below it
/// ([`wire::key_result`]); a reader that was given the attempt's grant
/// ([`ResultKey::with_grant`]) counts only results proven with it.
#[derive(Clone, Debug)]
pub struct ResultKey {
    attempt: String,
    run: RunId,
    task: TaskId,
    n: Attempt,
    grant: Option<String>,
}

impl ResultKey {
    pub fn new(run: &RunId, task: &TaskId, attempt: Attempt) -> Self {
        ResultKey {
            attempt: wire::key_result_attempt(run, task, attempt),
            run: run.clone(),
            task: task.clone(),
            n: attempt,
            grant: None,
        }
    }

    /// The grant that came with the task ([`TaskMessage::grant`]).
    pub fn with_grant(mut self, grant: Option<String>) -> Self {
        self.grant = grant;
        self
    }

    pub fn grant(&self) -> Option<&str> {
        self.grant.as_deref()
    }

    pub fn run(&self) -> &RunId {
        &self.run
    }

    pub fn task(&self) -> &TaskId {
        &self.task
    }

    pub fn attempt(&self) -> Attempt {
        self.n
    }

    /// The key `writer` stores its result under.
    pub fn of_writer(&self, writer: &str) -> String {
        wire::key_result(&self.run, &self.task, self.n, writer)
    }

    /// Every writer's key of this attempt (a subject filter).
    pub fn all_writers(&self) -> String {
        wire::key_results_of_attempt(&self.run, &self.task, self.n)
    }

    pub fn as_str(&self) -> &str {
        &self.attempt
    }
}

impl PartialEq for ResultKey {
    fn eq(&self, other: &Self) -> bool {
        self.attempt == other.attempt
    }
}

impl Eq for ResultKey {}

impl std::hash::Hash for ResultKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.attempt.hash(state);
    }
}

impl PartialOrd for ResultKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResultKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.attempt.cmp(&other.attempt)
    }
}

impl std::fmt::Display for ResultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.attempt)
    }
}

/// The claim key of one task attempt, or of a lead's batch: only ever used
/// with [`Claims`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey(String, Option<(RunId, TaskId, Attempt)>);

impl ClaimKey {
    pub fn attempt(run: &RunId, task: &TaskId, attempt: Attempt) -> Self {
        ClaimKey(
            wire::key_claim(run, task, attempt),
            Some((run.clone(), task.clone(), attempt)),
        )
    }

    pub fn batch(run: &RunId, batch: &str) -> Self {
        ClaimKey(wire::key_claim_batch(run, batch), None)
    }

    /// The attempt claimed (`None` for a lead's batch).
    pub fn of_attempt(&self) -> Option<&(RunId, TaskId, Attempt)> {
        self.1.as_ref()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an append to a run's log went.
#[derive(Debug)]
pub enum Appended {
    /// Written at this sequence.
    At(u64),
    /// Another writer's entry follows the one expected: the run is theirs.
    Superseded,
    /// Several events too large for one message: nothing was written;
    /// split them and append the parts in order.
    TooLarge,
}

/// A run's event log: single writer by expected sequence.
pub trait EventLog: Send + Sync {
    /// Appends `record` if the run's last entry is `expected` (0: none).
    /// One event too large for a message goes to the object store, named
    /// after the sequence and `writer`, and the log holds its name.
    fn append<'a>(
        &'a self,
        run: &'a RunId,
        record: &'a EventRecord,
        expected: u64,
        writer: &'a str,
    ) -> Fut<'a, Appended>;
    /// The first entry after `after` and its sequence, its object
    /// resolved; an entry that does not decode (or whose object is gone)
    /// still has its sequence, so a reader can note it and go on.
    fn next_after<'a>(&'a self, run: &'a RunId, after: u64) -> Fut<'a, Option<LogEntry>>;
}

/// An entry of a run's log: its sequence, and what it holds.
pub type LogEntry = (u64, Result<EventRecord, StoreError>);

/// A task message as it sits in the queue.
#[derive(Clone, Debug)]
pub struct Queued {
    pub subject: String,
    pub payload: Bytes,
}

/// The task queue: publishes (pipelined), the dead-letter stream, cancels.
pub trait TaskBus: Send + Sync {
    /// Sends a task (message id: deduplicated within the window); returns
    /// once sent, with the future of its acknowledgement.
    fn publish_task<'a>(
        &'a self,
        subject: String,
        message: &'a TaskMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture>;
    /// Sends a lead's batch, as [`TaskBus::publish_task`].
    fn publish_batch<'a>(
        &'a self,
        subject: String,
        batch: &'a BatchMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture>;
    /// The message at `seq`, if it is still in the queue.
    fn queued(&self, seq: u64) -> Fut<'_, Option<Queued>>;
    /// Removes the message at `seq`.
    fn remove(&self, seq: u64) -> Fut<'_, ()>;
    /// Stores a dead letter (waiting for its acknowledgement).
    fn dead_letter<'a>(
        &'a self,
        subject: String,
        letter: &'a DeadLetter,
        msg_id: Option<String>,
    ) -> Fut<'a, ()>;
    /// Best effort, core NATS: running attempts of a run stop at once.
    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> Fut<'a, ()>;
    /// Stream sequences of messages that reached their delivery limit,
    /// as the server announces them, with the delivery count.
    fn max_deliveries(&self) -> Fut<'_, Watch<(u64, u64)>>;
    /// Every cancel request from now on (core NATS, best effort); one
    /// that does not decode is an `Err(Decode)` item.
    fn cancels(&self) -> Fut<'_, Watch<CancelRequest>>;
    /// A lead's report on a batch (core NATS, best effort).
    fn report_batch<'a>(&'a self, report: &'a BatchReport) -> Fut<'a, ()>;
    /// Returns once every core-NATS message sent so far (cancels, batch
    /// reports) has gone to the server: a one-shot client calls it before
    /// it exits.
    fn flush(&self) -> Fut<'_, ()>;
    /// Messages waiting and delivered-but-unacknowledged in each skill's
    /// queue, by skill.
    fn queue_depths(&self) -> Fut<'_, Vec<QueueDepth>>;
}

/// One message of the dead-letter stream, by its id (the DLQ stream
/// sequence).
#[derive(Clone, Debug)]
pub struct StoredLetter {
    pub id: u64,
    /// The DLQ subject (`cascade.dlq.<skill>`, `.undecodable`, `.submissions`).
    pub subject: String,
    /// The letter; `None` when the message is not a [`DeadLetter`] (then
    /// `raw` holds it).
    pub letter: Option<DeadLetter>,
    pub raw: Bytes,
}

/// The dead letters, as operators handle them (`coordinator dlq`): writing
/// one is [`TaskBus::dead_letter`].
pub trait DeadLetters: Send + Sync {
    /// Every letter, oldest first.
    fn list(&self) -> Fut<'_, Vec<StoredLetter>>;
    /// The letter with this id, if there is one.
    fn get(&self, id: u64) -> Fut<'_, Option<StoredLetter>>;
    /// Removes the letter; false when there was none.
    fn remove(&self, id: u64) -> Fut<'_, bool>;
}

/// How full one skill's queue is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    pub skill: String,
    /// Messages no worker has taken yet.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
}

/// Which queue a worker reads: a skill's (every worker with the skill
/// competes), a worker's own, or a team lead's batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueOf {
    Skill(String),
    Worker(String),
    Lead(String),
}

impl QueueOf {
    /// The durable consumer's name.
    pub fn durable(&self) -> String {
        match self {
            QueueOf::Skill(s) => wire::consumer_skill(s),
            QueueOf::Worker(w) => wire::consumer_worker(w),
            QueueOf::Lead(w) => wire::consumer_lead(w),
        }
    }

    /// The subject its messages are published on.
    pub fn subject(&self) -> String {
        match self {
            QueueOf::Skill(s) => wire::subject_task_skill(s),
            QueueOf::Worker(w) => wire::subject_task_worker(w),
            QueueOf::Lead(w) => wire::subject_task_lead(w),
        }
    }

    /// Whether only one worker reads it (its consumer expires when the
    /// worker has been gone for a while).
    pub fn personal(&self) -> bool {
        !matches!(self, QueueOf::Skill(_))
    }
}

/// One queue of the task stream as a worker pulls it.
pub trait TaskQueue: Send + Sync {
    /// Asks for at most `max` messages, the request open for `expires`;
    /// yields them as they come and ends with the request.
    fn pull(&self, max: usize, expires: std::time::Duration) -> Fut<'_, Watch<Delivery>>;
    /// The queue's name, for logs.
    fn name(&self) -> &str;
}

/// Which delivery of which message: ordered, newest last (a message
/// published again is newer than every delivery of the old one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub stream_seq: u64,
    pub delivered: u64,
}

/// A delivered task message and what may be done with it: acknowledged
/// (done), given back (nak, after a delay), kept (progress), or refused for
/// good (term).
pub struct Delivery {
    subject: String,
    payload: Bytes,
    position: Position,
    handle: Box<dyn Delivered>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// What a store does with a delivery's acknowledgements.
pub(crate) trait Delivered: Send + Sync {
    fn ack(&self) -> Fut<'_, ()>;
    fn nak(&self, delay: std::time::Duration) -> Fut<'_, ()>;
    fn progress(&self) -> Fut<'_, ()>;
    fn term(&self) -> Fut<'_, ()>;
    /// The NATS message, where there is one (trace headers).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    fn message(&self) -> Option<&async_nats::Message> {
        None
    }
}

impl Delivery {
    pub(crate) fn new(
        subject: String,
        payload: Bytes,
        position: Position,
        handle: Box<dyn Delivered>,
    ) -> Self {
        Delivery {
            subject,
            payload,
            position,
            handle,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// Acknowledges, waiting for the server's confirmation.
    pub fn ack(&self) -> Fut<'_, ()> {
        self.handle.ack()
    }

    /// Gives the message back, to be delivered again after `delay`.
    pub fn nak(&self, delay: std::time::Duration) -> Fut<'_, ()> {
        self.handle.nak(delay)
    }

    /// Restarts the ack window.
    pub fn progress(&self) -> Fut<'_, ()> {
        self.handle.progress()
    }

    /// Never delivers the message again.
    pub fn term(&self) -> Fut<'_, ()> {
        self.handle.term()
    }

    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn message(&self) -> Option<&async_nats::Message> {
        self.handle.message()
    }
}

/// Who holds which delivery.
pub trait Claims: Send + Sync {
    /// The claim and its revision. On a coordinator's stores, a claim on
    /// an attempt whose proof does not verify reads as no claim.
    fn entry<'a>(&'a self, key: &'a ClaimKey) -> Fut<'a, Option<(Claim, u64)>>;
    /// Creates the claim; `None` when one exists.
    fn create<'a>(&'a self, key: &'a ClaimKey, claim: &'a Claim) -> Fut<'a, Option<u64>>;
    /// Replaces the claim if it is still at `revision`; `None` when not.
    fn update<'a>(
        &'a self,
        key: &'a ClaimKey,
        claim: &'a Claim,
        revision: u64,
    ) -> Fut<'a, Option<u64>>;
}

/// Whether a create-only write was the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Written,
    Exists,
}

/// Attempt results: the first completion recorded wins. Each writer has
/// its own key per attempt (so no user can squat another's), and the
/// result that counts is the first, in stream order, that is proven: on a
/// coordinator's stores ([`crate::Swarm::coordinator_stores`]) by the run's
/// grant secret, elsewhere by the grant of the key, if it has one.
pub trait Results: Send + Sync {
    /// The attempt's result that counts.
    fn get<'a>(&'a self, key: &'a ResultKey) -> Fut<'a, Option<ResultRecord>>;
    /// Stores `record` under its worker's key; `Exists` when this writer
    /// stored one for the attempt before. Another writer's result does not
    /// stop it: readers take the first proven result in stream order.
    fn create<'a>(&'a self, key: &'a ResultKey, record: &'a ResultRecord) -> Fut<'a, Created>;
    /// Every result of a run: those stored already, then new ones. On a
    /// coordinator's stores, results that are not proven are dropped here
    /// (logged and counted as security events).
    fn watch_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<ResultRecord>>;
}

/// A lease this process holds: the revision of its own last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHeld {
    pub run: RunId,
    pub revision: u64,
}

/// What `acquire` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    Held(LeaseHeld),
    /// Someone holds it: its owner and the revision of its last write.
    Busy {
        owner: String,
        revision: u64,
    },
    /// Someone else wrote or removed it meanwhile: look again later.
    Contended,
}

/// What a lease watcher sees: a run's lease written, at a revision, or gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Written {
        run: RunId,
        owner: String,
        revision: u64,
        /// The run's clock at the write ([`Lease::clock`](cascade_proto::wire::Lease)).
        clock: Millis,
    },
    Gone(RunId),
}

/// Who drives a run, renewed by compare-and-set. Expiry compares no wall
/// clocks: a holder renews (a new revision) well within its TTL, and a
/// lease is taken over only by a caller that watched the *same revision*
/// stay unchanged for a whole TTL on its own monotonic clock. The value's
/// `expires_at` is the holder's own clock, for people reading it.
pub trait Leases: Send + Sync {
    /// Takes the lease if it is free (none, released or unreadable),
    /// already `owner`'s, or still at revision `stale` (the caller saw that
    /// revision unchanged for a TTL: its holder stopped renewing).
    /// `clock`: the run's clock now; the lease says it expires `ttl` later.
    fn acquire<'a>(
        &'a self,
        run: &'a RunId,
        owner: &'a str,
        stale: Option<u64>,
        clock: Millis,
        ttl: std::time::Duration,
    ) -> Fut<'a, Acquired>;
    /// Extends a held lease; false when someone else wrote it since.
    fn renew<'a>(
        &'a self,
        held: &'a mut LeaseHeld,
        owner: &'a str,
        clock: Millis,
        ttl: std::time::Duration,
    ) -> Fut<'a, bool>;
    /// Gives the run up, if the lease is still ours.
    fn release<'a>(&'a self, held: &'a LeaseHeld) -> Fut<'a, ()>;
    /// Every lease as it stands, then every write and release.
    fn watch(&self) -> Fut<'_, Watch<LeaseChange>>;
}

/// Run records.
pub trait Runs: Send + Sync {
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<RunRecord>>;
    /// Stores a record unless the run has one.
    fn create<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, Created>;
    /// Writes the record by compare-and-set, keeping a cancel request
    /// another process added meanwhile.
    fn write<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, ()>;
    /// Every record (undecodable ones skipped).
    fn list(&self) -> Fut<'_, Vec<RunRecord>>;
    /// The run's record now, then every change; a deleted record ends the
    /// watch with `Err(Missing)`.
    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<RunRecord>>;
    /// Sets `cancel_requested` on the run's record by compare-and-set (a
    /// request is never lost to a concurrent write of the owner, and never
    /// overwrites an earlier one).
    fn request_cancel<'a>(&'a self, run: &'a RunId, reason: &'a str) -> Fut<'a, CancelOutcome>;
    /// Every record now, then every change (undecodable ones skipped).
    fn watch_all(&self) -> Fut<'_, Watch<RunChange>>;
}

/// A change in the runs bucket.
#[derive(Clone, Debug)]
pub enum RunChange {
    Up(RunRecord),
    Gone(RunId),
}

/// What [`Runs::request_cancel`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run has no record (yet): a submitted run that no coordinator
    /// took; create a queued record carrying the request.
    NoRecord,
    /// The run is over.
    AlreadyOver(RunState),
    /// A cancel was requested before; nothing changed.
    AlreadyRequested(RunState),
    /// The request is on the record now.
    Requested(RunState),
}

/// The files of submitted runs, written once.
pub trait Submissions: Send + Sync {
    /// `Err(Decode)` when the stored submission does not decode.
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Submission>>;
    fn create<'a>(&'a self, submission: &'a Submission) -> Fut<'a, Created>;
    /// Records that idempotency key `key` names `run` (create-only: the
    /// first submitter wins), or finds the run it names already.
    fn claim_key<'a>(&'a self, key: &'a str, run: &'a RunId) -> Fut<'a, KeyClaim>;
    /// Sends a submission to the coordinators, in the order that makes a
    /// retry after a crash safe: refused over the server's max payload
    /// (`Err(TooLarge)`) before anything is written; stored (create: a copy
    /// already there is fine); published on the submit subject with the
    /// run id as message id (a duplicate within the window is dropped),
    /// waiting for the acknowledgement.
    fn send<'a>(&'a self, submission: &'a Submission) -> Fut<'a, ()>;
}

/// What [`Submissions::claim_key`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is ours now.
    Claimed,
    /// Another submission holds the key: its run.
    Taken(RunId),
    /// The key is taken, but its value is not a run id.
    NotARunId,
}

/// Final reports: inline when small, else a `{"$ref": NAME}` stub and the
/// report in the object store.
pub trait Reports: Send + Sync {
    fn put<'a>(&'a self, run: &'a RunId, report: &'a Value) -> Fut<'a, ()>;
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Value>>;
    /// The run's report once written: the stored one first, then each one
    /// written (an item fails when the report does not read).
    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<Value>>;
}

/// Where a memory entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryScope<'a> {
    Global,
    Run(&'a RunId),
}

/// Cascade memory; retention is the bucket's age limit.
pub trait Memory: Send + Sync {
    fn load<'a>(&'a self, scope: MemoryScope<'a>) -> Fut<'a, Map<String, Value>>;
    fn put<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str, value: &'a Value) -> Fut<'a, ()>;
    fn delete<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str) -> Fut<'a, ()>;
    /// Forgets every entry of a run.
    fn clear_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, ()>;
}

/// What an object name that says what it holds ends with
/// ([`content_name`]).
const CONTENT_MARK: &str = ".sha256-";

/// `<prefix>.sha256-<hex>`: the name of an object holding `value`, with
/// the SHA-256 of its JSON text. [`Objects::get_json`] refuses an object
/// under such a name whose content does not hash to it: any worker may
/// write any object of the store (no permission can restrict names), so one
/// replaced by someone else reads as an error, never as other content.
pub fn content_name(prefix: &str, value: &Value) -> Result<String, StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::encode("object", prefix, e))?;
    Ok(format!("{prefix}{CONTENT_MARK}{}", sha256_hex(&bytes)))
}

/// The digest a content name promises, if it is one.
pub(crate) fn promised_digest(name: &str) -> Option<&str> {
    let (_, hex) = name.rsplit_once(CONTENT_MARK)?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An object whose content is not what its name promises.
#[derive(Debug, thiserror::Error)]
#[error("its content does not match the digest in its name: it was replaced")]
pub struct NotItsContent;

/// Large JSON values by reference. Objects hold plain JSON text (what
/// workers write too): readable with any tool, never taken for MessagePack.
pub trait Objects: Send + Sync {
    fn put_json<'a>(&'a self, name: &'a str, value: &'a Value) -> Fut<'a, ()>;
    /// `Err(Missing)` when there is no such object; `Err(Decode)` when
    /// its name is a [`content_name`] its content does not match.
    fn get_json<'a>(&'a self, name: &'a str) -> Fut<'a, Value>;
}

/// A change in the workers bucket.
#[derive(Clone, Debug)]
pub enum WorkerChange {
    Up(WorkerInfo),
    Gone(String),
}

/// Worker registrations (the bucket's age limit is the worker TTL).
pub trait Registry: Send + Sync {
    fn put<'a>(&'a self, info: &'a WorkerInfo) -> Fut<'a, ()>;
    fn remove<'a>(&'a self, name: &'a str) -> Fut<'a, ()>;
    /// Every registration now (undecodable ones skipped).
    fn list(&self) -> Fut<'_, Vec<WorkerInfo>>;
    /// Every registration now with the server's time of its last write
    /// (`coordinator doctor` compares clocks with it).
    fn list_stamped(&self) -> Fut<'_, Vec<(WorkerInfo, Millis)>>;
    /// Workers registered now, then every change.
    fn watch(&self) -> Fut<'_, Watch<WorkerChange>>;
}

/// Every store of a swarm, and the settings its processes share.
#[derive(Clone)]
pub struct Stores {
    pub settings: QueueSettings,
    pub events: Arc<dyn EventLog>,
    pub tasks: Arc<dyn TaskBus>,
    pub dead_letters: Arc<dyn DeadLetters>,
    pub claims: Arc<dyn Claims>,
    pub results: Arc<dyn Results>,
    pub leases: Arc<dyn Leases>,
    pub runs: Arc<dyn Runs>,
    pub submissions: Arc<dyn Submissions>,
    pub reports: Arc<dyn Reports>,
    pub memory: Arc<dyn Memory>,
    pub objects: Arc<dyn Objects>,
    pub registry: Arc<dyn Registry>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_names_promise_their_content() {
        let v = serde_json::json!({"a": [1, 2, 3]});
        let name = content_name("inputs.r.t.1", &v).expect("name");
        assert!(name.starts_with("inputs.r.t.1.sha256-"), "{name}");
        let bytes = serde_json::to_vec(&v).expect("json");
        assert_eq!(promised_digest(&name), Some(sha256_hex(&bytes).as_str()));
        assert_ne!(
            content_name("inputs.r.t.1", &serde_json::json!({"a": []})).expect("name"),
            name
        );
        for plain in ["report.r", "inputs.r.t.1", "x.sha256-zz", "x.sha256-"] {
            assert_eq!(promised_digest(plain), None, "{plain}");
        }
    }

    #[test]
    fn result_keys_name_the_attempt_and_each_writer() {
        let k = ResultKey::new(&"r".into(), &"t#0".into(), Attempt(2)).with_grant(Some("g".into()));
        assert_eq!(k.as_str(), "r.t=230.2");
        assert_eq!(k.of_writer("w.1"), "r.t=230.2.w=2E1");
        assert_eq!(k.all_writers(), "r.t=230.2.*");
        assert_eq!(
            k,
            ResultKey::new(&"r".into(), &"t#0".into(), Attempt(2)),
            "the grant is no part of the key"
        );
    }
}
