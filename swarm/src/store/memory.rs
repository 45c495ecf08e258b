//! Every store in memory, with the rules of the JetStream ones: expected
//! sequences on the event log, message-id deduplication on the task queue,
//! create-only results, compare-and-set claims, leases and run records.
//! For driver tests that take milliseconds and start no process.
//!
//! One [`InMemory`] holds the whole swarm; [`InMemory::stores`] hands out
//! its stores, and its other methods let a test look at what was sent and
//! play the other processes (a worker, another coordinator, the server).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cascade_proto::wire::{
    self, BatchMessage, BatchReport, CancelRequest, Claim, DeadLetter, Lease, ResultRecord,
    RunRecord, Submission, TaskMessage, WorkerInfo,
};
use cascade_proto::{EventRecord, Millis, PROTOCOL_VERSION, RunId, encode};
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::{
    AckFuture, Acquired, Appended, CancelOutcome, ClaimKey, Claims, Created, DeadLetters,
    Delivered, Delivery, EventLog, Fut, KeyClaim, LeaseChange, LeaseHeld, Leases, LogEntry, Memory,
    MemoryScope, Objects, Position, QueueDepth, QueueOf, Queued, Registry, Reports, ResultKey,
    Results, RunChange, Runs, StoreError, StoredLetter, Stores, Submissions, TaskBus, TaskQueue,
    Watch, WorkerChange,
};
use crate::setup::QueueSettings;

/// Changes a watch may fall behind by before it misses some (tests write
/// far fewer between two polls of the driver).
const WATCH_BUFFER: usize = 65_536;

/// The server's default max payload (1 MiB), which [`Submissions::send`]
/// enforces as the server would.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// A publish as the bus saw it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub subject: String,
    pub msg_id: String,
    /// The task, or every task of a lead's batch.
    pub tasks: Vec<TaskMessage>,
    /// False when the message id was a duplicate (nothing was queued).
    pub queued: bool,
}

#[derive(Default)]
struct State {
    seq: u64,
    revision: u64,
    events: BTreeMap<RunId, Vec<(u64, EventRecord)>>,
    queue: BTreeMap<u64, Queued>,
    msg_ids: HashSet<String>,
    sent: Vec<Sent>,
    cancels: Vec<CancelRequest>,
    /// By id (the DLQ's own sequence): subject and letter.
    dead_letters: BTreeMap<u64, (String, DeadLetter)>,
    dlq_seq: u64,
    claims: BTreeMap<ClaimKey, (Claim, u64)>,
    results: BTreeMap<ResultKey, ResultRecord>,
    leases: BTreeMap<RunId, (Lease, u64)>,
    runs: BTreeMap<RunId, (RunRecord, u64)>,
    submissions: BTreeMap<RunId, Submission>,
    idempotency: BTreeMap<String, RunId>,
    /// Submissions published to the coordinators, in order (deduplicated
    /// by run id, as the stream does by message id).
    submitted: Vec<Submission>,
    batch_reports: Vec<BatchReport>,
    /// Queued messages delivered to a worker and not yet acked, naked
    /// or termed; and how often each message was delivered.
    in_flight: BTreeSet<u64>,
    deliveries: BTreeMap<u64, u64>,
    /// A naked message is not delivered again before this.
    held_until: BTreeMap<u64, tokio::time::Instant>,
    reports: BTreeMap<RunId, Value>,
    memory: BTreeMap<String, Value>,
    objects: BTreeMap<String, Value>,
    workers: BTreeMap<String, WorkerInfo>,
    /// Delay added to every claims read (a slow server, for tests of
    /// what the driver does while a sweep is under way).
    claims_delay: Option<Duration>,
    /// Log entries that read back as undecodable.
    corrupt: HashSet<u64>,
    /// Lease writes fail as a server that cannot be reached does.
    leases_down: bool,
    /// Who appended each log entry, after which sequence, what (as the
    /// JetStream log's message ids): an append tried again finds its own.
    append_ids: BTreeMap<u64, String>,
}

/// A whole swarm's storage in one process.
pub struct InMemory {
    state: Mutex<State>,
    results_tx: broadcast::Sender<ResultRecord>,
    runs_tx: broadcast::Sender<RunRecord>,
    workers_tx: broadcast::Sender<WorkerChange>,
    leases_tx: broadcast::Sender<LeaseChange>,
    reports_tx: broadcast::Sender<(RunId, Value)>,
    cancels_tx: broadcast::Sender<CancelRequest>,
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemory").finish_non_exhaustive()
    }
}

/// What a write to a server that does not answer fails with.
fn unreachable(op: &'static str, run: &RunId) -> StoreError {
    StoreError::Nats {
        op,
        key: run.to_string(),
        class: super::error::Class::Retryable,
        source: "timed out (the in-memory server is made unreachable)".into(),
    }
}

fn tail<T: Clone + Send + 'static>(
    history: Vec<T>,
    rx: broadcast::Receiver<T>,
    keep: impl Fn(&T) -> bool + Send + 'static,
) -> Watch<T> {
    let live = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |v| std::future::ready(keep(v)));
    futures::stream::iter(history).chain(live).map(Ok).boxed()
}

impl InMemory {
    pub fn new() -> Arc<Self> {
        Arc::new(InMemory {
            state: Mutex::new(State::default()),
            results_tx: broadcast::channel(WATCH_BUFFER).0,
            runs_tx: broadcast::channel(WATCH_BUFFER).0,
            workers_tx: broadcast::channel(WATCH_BUFFER).0,
            leases_tx: broadcast::channel(WATCH_BUFFER).0,
            reports_tx: broadcast::channel(WATCH_BUFFER).0,
            cancels_tx: broadcast::channel(WATCH_BUFFER).0,
        })
    }

    /// Its stores, for a process with these settings.
    pub fn stores(self: &Arc<Self>, settings: QueueSettings) -> Stores {
        Stores {
            settings,
            events: self.clone(),
            tasks: self.clone(),
            dead_letters: self.clone(),
            claims: self.clone(),
            results: self.clone(),
            leases: self.clone(),
            runs: self.clone(),
            submissions: self.clone(),
            reports: self.clone(),
            memory: self.clone(),
            objects: self.clone(),
            registry: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every publish so far, duplicates included.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Messages in the queue, by stream sequence.
    pub fn queued(&self) -> BTreeMap<u64, Queued> {
        self.lock().queue.clone()
    }

    /// Removes a message from the queue (as a late ack would).
    pub fn remove_queued(&self, seq: u64) {
        self.lock().queue.remove(&seq);
    }

    /// A run's event log.
    pub fn log(&self, run: &RunId) -> Vec<(u64, EventRecord)> {
        self.lock().events.get(run).cloned().unwrap_or_default()
    }

    /// Another process writes the lease of `run` as `owner`, its run clock
    /// at `clock` (the holder's next renewal fails).
    pub fn steal_lease(&self, run: &RunId, owner: &str, clock: Millis) {
        let mut st = self.lock();
        st.revision += 1;
        let rev = st.revision;
        st.leases.insert(
            run.clone(),
            (
                Lease {
                    v: PROTOCOL_VERSION,
                    owner: owner.to_owned(),
                    expires_at: clock,
                    clock,
                },
                rev,
            ),
        );
        let _ = self.leases_tx.send(LeaseChange::Written {
            run: run.clone(),
            owner: owner.to_owned(),
            revision: rev,
            clock,
        });
    }

    pub fn lease(&self, run: &RunId) -> Option<Lease> {
        self.lock().leases.get(run).map(|(l, _)| l.clone())
    }

    pub fn report(&self, run: &RunId) -> Option<Value> {
        self.lock().reports.get(run).cloned()
    }

    pub fn record(&self, run: &RunId) -> Option<RunRecord> {
        self.lock().runs.get(run).map(|(r, _)| r.clone())
    }

    /// Makes the log entry at `seq` read back as undecodable.
    pub fn corrupt_entry(&self, seq: u64) {
        self.lock().corrupt.insert(seq);
    }

    /// Lease writes fail (retryably, like timeouts) until called with false.
    pub fn leases_unreachable(&self, down: bool) {
        self.lock().leases_down = down;
    }

    /// Makes every claims read take this long.
    pub fn slow_claims(&self, delay: Duration) {
        self.lock().claims_delay = Some(delay);
    }

    /// Submissions published to the coordinators so far, in order.
    pub fn submitted(&self) -> Vec<Submission> {
        self.lock().submitted.clone()
    }

    /// Cancel requests sent so far.
    pub fn cancels_sent(&self) -> Vec<CancelRequest> {
        self.lock().cancels.clone()
    }

    /// Batch reports sent so far.
    pub fn batch_reports(&self) -> Vec<BatchReport> {
        self.lock().batch_reports.clone()
    }

    /// Dead letters stored so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock()
            .dead_letters
            .values()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// A worker's queue: the queued messages published on its subject.
    /// Acks and terms remove a message, a nak gives it back after its
    /// delay; there is no ack window (a delivery nobody answers stays
    /// delivered), so progress changes nothing.
    pub fn task_queue(self: &Arc<Self>, of: &QueueOf) -> Arc<dyn TaskQueue> {
        Arc::new(MemQueue {
            mem: self.clone(),
            subject: of.subject(),
            name: of.durable(),
        })
    }
}

fn ready<'a, T: Send + 'a>(v: Result<T, StoreError>) -> Fut<'a, T> {
    std::future::ready(v).boxed()
}

impl EventLog for InMemory {
    fn append<'a>(
        &'a self,
        run: &'a RunId,
        record: &'a EventRecord,
        expected: u64,
        writer: &'a str,
    ) -> Fut<'a, Appended> {
        let bytes = encode(record).unwrap_or_default();
        let size = bytes.len();
        let id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("{expected}.{writer}.{:016x}", h.finish())
        };
        let mut st = self.lock();
        let last = st
            .events
            .get(run)
            .and_then(|l| l.last())
            .map_or(0, |(s, _)| *s);
        if last != expected {
            // Our own entry, from a try whose answer was lost.
            if st.append_ids.get(&last) == Some(&id) {
                return ready(Ok(Appended::At(last)));
            }
            return ready(Ok(Appended::Superseded));
        }
        if size > wire::INLINE_LIMIT && record.events.len() > 1 {
            return ready(Ok(Appended::TooLarge));
        }
        st.seq += 1;
        let seq = st.seq;
        st.events
            .entry(run.clone())
            .or_default()
            .push((seq, record.clone()));
        st.append_ids.insert(seq, id);
        ready(Ok(Appended::At(seq)))
    }

    fn next_after<'a>(&'a self, run: &'a RunId, after: u64) -> Fut<'a, Option<LogEntry>> {
        let st = self.lock();
        let next = st
            .events
            .get(run)
            .and_then(|l| l.iter().find(|(s, _)| *s > after).cloned());
        let entry = next.map(|(seq, rec)| {
            if st.corrupt.contains(&seq) {
                let e = StoreError::Missing {
                    what: "event log entry",
                    key: seq.to_string(),
                };
                (seq, Err(e))
            } else {
                (seq, Ok(rec))
            }
        });
        ready(Ok(entry))
    }
}

impl InMemory {
    fn publish(&self, subject: String, msg_id: String, tasks: Vec<TaskMessage>, payload: Vec<u8>) {
        let mut st = self.lock();
        let queued = st.msg_ids.insert(msg_id.clone());
        if queued {
            st.seq += 1;
            let seq = st.seq;
            st.queue.insert(
                seq,
                Queued {
                    subject: subject.clone(),
                    payload: payload.into(),
                },
            );
        }
        st.sent.push(Sent {
            subject,
            msg_id,
            tasks,
            queued,
        });
    }
}

fn acked() -> AckFuture {
    std::future::ready(Ok(())).boxed()
}

impl TaskBus for InMemory {
    fn publish_task<'a>(
        &'a self,
        subject: String,
        message: &'a TaskMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture> {
        let payload = encode(message).unwrap_or_default();
        self.publish(subject, msg_id, vec![message.clone()], payload);
        ready(Ok(acked()))
    }

    fn publish_batch<'a>(
        &'a self,
        subject: String,
        batch: &'a BatchMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture> {
        let tasks = batch
            .tasks
            .iter()
            .map(|spec| TaskMessage {
                v: PROTOCOL_VERSION,
                spec: spec.clone(),
                route: wire::Route::Mesh,
                dispatched_at: batch.dispatched_at,
                inputs_ref: None,
                grant: batch.grants.get(spec.task_id.as_str()).cloned(),
            })
            .collect();
        let payload = encode(batch).unwrap_or_default();
        self.publish(subject, msg_id, tasks, payload);
        ready(Ok(acked()))
    }

    fn queued(&self, seq: u64) -> Fut<'_, Option<Queued>> {
        ready(Ok(self.lock().queue.get(&seq).cloned()))
    }

    fn remove(&self, seq: u64) -> Fut<'_, ()> {
        self.lock().queue.remove(&seq);
        ready(Ok(()))
    }

    fn dead_letter<'a>(
        &'a self,
        subject: String,
        letter: &'a DeadLetter,
        _msg_id: Option<String>,
    ) -> Fut<'a, ()> {
        let mut st = self.lock();
        st.dlq_seq += 1;
        let id = st.dlq_seq;
        st.dead_letters.insert(id, (subject, letter.clone()));
        ready(Ok(()))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> Fut<'a, ()> {
        self.lock().cancels.push(request.clone());
        let _ = self.cancels_tx.send(request.clone());
        ready(Ok(()))
    }

    fn max_deliveries(&self) -> Fut<'_, Watch<(u64, u64)>> {
        ready(Ok(futures::stream::pending().boxed()))
    }

    fn cancels(&self) -> Fut<'_, Watch<CancelRequest>> {
        ready(Ok(tail(Vec::new(), self.cancels_tx.subscribe(), |_| true)))
    }

    fn report_batch<'a>(&'a self, report: &'a BatchReport) -> Fut<'a, ()> {
        self.lock().batch_reports.push(report.clone());
        ready(Ok(()))
    }

    fn flush(&self) -> Fut<'_, ()> {
        ready(Ok(()))
    }

    fn queue_depths(&self) -> Fut<'_, Vec<QueueDepth>> {
        let st = self.lock();
        let mut by_skill: BTreeMap<String, QueueDepth> = BTreeMap::new();
        for (seq, q) in &st.queue {
            let Some(skill) = q
                .subject
                .strip_prefix("cascade.task.skill.")
                .and_then(wire::untoken)
            else {
                continue;
            };
            let depth = by_skill.entry(skill.clone()).or_insert(QueueDepth {
                skill,
                pending: 0,
                unacked: 0,
            });
            if st.in_flight.contains(seq) {
                depth.unacked += 1;
            } else {
                depth.pending += 1;
            }
        }
        ready(Ok(by_skill.into_values().collect()))
    }
}

struct MemQueue {
    mem: Arc<InMemory>,
    subject: String,
    name: String,
}

impl TaskQueue for MemQueue {
    fn pull(&self, max: usize, expires: Duration) -> Fut<'_, Watch<Delivery>> {
        let now = tokio::time::Instant::now();
        let mut st = self.mem.lock();
        let st = &mut *st;
        let free: Vec<(u64, Queued)> = st
            .queue
            .iter()
            .filter(|(seq, q)| {
                q.subject == self.subject
                    && !st.in_flight.contains(seq)
                    && st.held_until.get(seq).is_none_or(|t| *t <= now)
            })
            .take(max)
            .map(|(seq, q)| (*seq, q.clone()))
            .collect();
        let mut out = Vec::with_capacity(free.len());
        for (seq, q) in free {
            st.in_flight.insert(seq);
            st.held_until.remove(&seq);
            let delivered = st.deliveries.entry(seq).or_insert(0);
            *delivered += 1;
            let position = Position {
                stream_seq: seq,
                delivered: *delivered,
            };
            let handle = Box::new(MemDelivered {
                mem: self.mem.clone(),
                seq,
            });
            out.push(Ok(Delivery::new(q.subject, q.payload, position, handle)));
        }
        if out.is_empty() {
            // An empty pull stays open until it expires, as on the server.
            let wait = futures::stream::once(tokio::time::sleep(expires))
                .filter_map(|()| async { None::<Result<Delivery, StoreError>> });
            return ready(Ok(wait.boxed()));
        }
        ready(Ok(futures::stream::iter(out).boxed()))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

struct MemDelivered {
    mem: Arc<InMemory>,
    seq: u64,
}

impl MemDelivered {
    fn done(&self) -> Fut<'_, ()> {
        let mut st = self.mem.lock();
        st.queue.remove(&self.seq);
        st.in_flight.remove(&self.seq);
        ready(Ok(()))
    }
}

impl Delivered for MemDelivered {
    fn ack(&self) -> Fut<'_, ()> {
        self.done()
    }

    fn nak(&self, delay: Duration) -> Fut<'_, ()> {
        let mut st = self.mem.lock();
        if st.in_flight.remove(&self.seq) {
            st.held_until
                .insert(self.seq, tokio::time::Instant::now() + delay);
        }
        ready(Ok(()))
    }

    fn progress(&self) -> Fut<'_, ()> {
        ready(Ok(()))
    }

    fn term(&self) -> Fut<'_, ()> {
        self.done()
    }
}

impl Claims for InMemory {
    fn entry<'a>(&'a self, key: &'a ClaimKey) -> Fut<'a, Option<(Claim, u64)>> {
        let (entry, delay) = {
            let st = self.lock();
            (st.claims.get(key).cloned(), st.claims_delay)
        };
        async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Ok(entry)
        }
        .boxed()
    }

    fn create<'a>(&'a self, key: &'a ClaimKey, claim: &'a Claim) -> Fut<'a, Option<u64>> {
        let mut st = self.lock();
        if st.claims.contains_key(key) {
            return ready(Ok(None));
        }
        st.revision += 1;
        let rev = st.revision;
        st.claims.insert(key.clone(), (claim.clone(), rev));
        ready(Ok(Some(rev)))
    }

    fn update<'a>(
        &'a self,
        key: &'a ClaimKey,
        claim: &'a Claim,
        revision: u64,
    ) -> Fut<'a, Option<u64>> {
        let mut st = self.lock();
        if st.claims.get(key).map(|(_, r)| *r) != Some(revision) {
            return ready(Ok(None));
        }
        st.revision += 1;
        let rev = st.revision;
        st.claims.insert(key.clone(), (claim.clone(), rev));
        ready(Ok(Some(rev)))
    }
}

impl Results for InMemory {
    fn get<'a>(&'a self, key: &'a ResultKey) -> Fut<'a, Option<ResultRecord>> {
        ready(Ok(self.lock().results.get(key).cloned()))
    }

    fn create<'a>(&'a self, key: &'a ResultKey, record: &'a ResultRecord) -> Fut<'a, Created> {
        let mut st = self.lock();
        if st.results.contains_key(key) {
            return ready(Ok(Created::Exists));
        }
        st.results.insert(key.clone(), record.clone());
        let _ = self.results_tx.send(record.clone());
        ready(Ok(Created::Written))
    }

    fn watch_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<ResultRecord>> {
        let st = self.lock();
        let rx = self.results_tx.subscribe();
        let history: Vec<ResultRecord> = st
            .results
            .values()
            .filter(|r| &r.run_id == run)
            .cloned()
            .collect();
        let run = run.clone();
        ready(Ok(tail(history, rx, move |r: &ResultRecord| {
            r.run_id == run
        })))
    }
}

impl Leases for InMemory {
    fn acquire<'a>(
        &'a self,
        run: &'a RunId,
        owner: &'a str,
        stale: Option<u64>,
        clock: Millis,
        ttl: Duration,
    ) -> Fut<'a, Acquired> {
        let mut st = self.lock();
        if st.leases_down {
            return ready(Err(unreachable("take lease", run)));
        }
        if let Some((l, revision)) = st.leases.get(run)
            && l.owner != owner
            && stale != Some(*revision)
        {
            return ready(Ok(Acquired::Busy {
                owner: l.owner.clone(),
                revision: *revision,
            }));
        }
        st.revision += 1;
        let revision = st.revision;
        let lease = Lease {
            v: PROTOCOL_VERSION,
            owner: owner.to_owned(),
            expires_at: clock + ttl.as_millis() as u64,
            clock,
        };
        st.leases.insert(run.clone(), (lease, revision));
        let _ = self.leases_tx.send(LeaseChange::Written {
            run: run.clone(),
            owner: owner.to_owned(),
            revision,
            clock,
        });
        ready(Ok(Acquired::Held(LeaseHeld {
            run: run.clone(),
            revision,
        })))
    }

    fn renew<'a>(
        &'a self,
        held: &'a mut LeaseHeld,
        owner: &'a str,
        clock: Millis,
        ttl: Duration,
    ) -> Fut<'a, bool> {
        let mut st = self.lock();
        if st.leases_down {
            return ready(Err(unreachable("renew lease", &held.run)));
        }
        if st.leases.get(&held.run).map(|(_, r)| *r) != Some(held.revision) {
            return ready(Ok(false));
        }
        st.revision += 1;
        held.revision = st.revision;
        let lease = Lease {
            v: PROTOCOL_VERSION,
            owner: owner.to_owned(),
            expires_at: clock + ttl.as_millis() as u64,
            clock,
        };
        st.leases.insert(held.run.clone(), (lease, held.revision));
        let _ = self.leases_tx.send(LeaseChange::Written {
            run: held.run.clone(),
            owner: owner.to_owned(),
            revision: held.revision,
            clock,
        });
        ready(Ok(true))
    }

    fn release<'a>(&'a self, held: &'a LeaseHeld) -> Fut<'a, ()> {
        let mut st = self.lock();
        if st.leases.get(&held.run).map(|(_, r)| *r) == Some(held.revision) {
            st.leases.remove(&held.run);
            let _ = self.leases_tx.send(LeaseChange::Gone(held.run.clone()));
        }
        ready(Ok(()))
    }

    fn watch(&self) -> Fut<'_, Watch<LeaseChange>> {
        let st = self.lock();
        let rx = self.leases_tx.subscribe();
        let history: Vec<LeaseChange> = st
            .leases
            .iter()
            .map(|(run, (l, revision))| LeaseChange::Written {
                run: run.clone(),
                owner: l.owner.clone(),
                revision: *revision,
                clock: l.clock,
            })
            .collect();
        ready(Ok(tail(history, rx, |_| true)))
    }
}

impl Runs for InMemory {
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<RunRecord>> {
        ready(Ok(self.record(run)))
    }

    fn create<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, Created> {
        let mut st = self.lock();
        if st.runs.contains_key(&record.run_id) {
            return ready(Ok(Created::Exists));
        }
        st.revision += 1;
        let rev = st.revision;
        st.runs.insert(record.run_id.clone(), (record.clone(), rev));
        let _ = self.runs_tx.send(record.clone());
        ready(Ok(Created::Written))
    }

    fn write<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, ()> {
        let mut st = self.lock();
        let mut merged = record.clone();
        if let Some((stored, _)) = st.runs.get(&record.run_id) {
            merged.cancel_requested = stored.cancel_requested.clone().or(merged.cancel_requested);
        }
        st.revision += 1;
        let rev = st.revision;
        st.runs.insert(record.run_id.clone(), (merged.clone(), rev));
        let _ = self.runs_tx.send(merged);
        ready(Ok(()))
    }

    fn list(&self) -> Fut<'_, Vec<RunRecord>> {
        ready(Ok(self
            .lock()
            .runs
            .values()
            .map(|(r, _)| r.clone())
            .collect()))
    }

    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<RunRecord>> {
        let st = self.lock();
        let rx = self.runs_tx.subscribe();
        let history: Vec<RunRecord> = st
            .runs
            .get(run)
            .map(|(r, _)| r.clone())
            .into_iter()
            .collect();
        let run = run.clone();
        ready(Ok(tail(history, rx, move |r: &RunRecord| r.run_id == run)))
    }

    fn request_cancel<'a>(&'a self, run: &'a RunId, reason: &'a str) -> Fut<'a, CancelOutcome> {
        let mut st = self.lock();
        let Some((record, _)) = st.runs.get(run) else {
            return ready(Ok(CancelOutcome::NoRecord));
        };
        let mut r = record.clone();
        if r.state.is_final() {
            return ready(Ok(CancelOutcome::AlreadyOver(r.state)));
        }
        if r.cancel_requested.is_some() {
            return ready(Ok(CancelOutcome::AlreadyRequested(r.state)));
        }
        r.cancel_requested = Some(reason.to_owned());
        st.revision += 1;
        let rev = st.revision;
        st.runs.insert(run.clone(), (r.clone(), rev));
        let _ = self.runs_tx.send(r.clone());
        ready(Ok(CancelOutcome::Requested(r.state)))
    }

    fn watch_all(&self) -> Fut<'_, Watch<RunChange>> {
        let st = self.lock();
        let rx = self.runs_tx.subscribe();
        let history: Vec<RunRecord> = st.runs.values().map(|(r, _)| r.clone()).collect();
        let watch = tail(history, rx, |_| true).map(|r| r.map(RunChange::Up));
        ready(Ok(watch.boxed()))
    }
}

impl Submissions for InMemory {
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Submission>> {
        ready(Ok(self.lock().submissions.get(run).cloned()))
    }

    fn create<'a>(&'a self, submission: &'a Submission) -> Fut<'a, Created> {
        let mut st = self.lock();
        if st.submissions.contains_key(&submission.run_id) {
            return ready(Ok(Created::Exists));
        }
        st.submissions
            .insert(submission.run_id.clone(), submission.clone());
        ready(Ok(Created::Written))
    }

    fn claim_key<'a>(&'a self, key: &'a str, run: &'a RunId) -> Fut<'a, KeyClaim> {
        let mut st = self.lock();
        let claim = match st.idempotency.get(key) {
            Some(id) if id.as_str().is_empty() => KeyClaim::NotARunId,
            Some(id) => KeyClaim::Taken(id.clone()),
            None => {
                st.idempotency.insert(key.to_owned(), run.clone());
                KeyClaim::Claimed
            }
        };
        ready(Ok(claim))
    }

    fn send<'a>(&'a self, submission: &'a Submission) -> Fut<'a, ()> {
        let size = encode(submission).map_or(0, |b| b.len());
        if size > MAX_PAYLOAD {
            return ready(Err(StoreError::TooLarge {
                what: "submission",
                key: submission.run_id.to_string(),
                size,
                limit: MAX_PAYLOAD,
            }));
        }
        let mut st = self.lock();
        st.submissions
            .entry(submission.run_id.clone())
            .or_insert_with(|| submission.clone());
        if st
            .msg_ids
            .insert(format!("submit:{}", submission.run_id.as_str()))
        {
            st.submitted.push(submission.clone());
        }
        ready(Ok(()))
    }
}

impl Reports for InMemory {
    fn put<'a>(&'a self, run: &'a RunId, report: &'a Value) -> Fut<'a, ()> {
        self.lock().reports.insert(run.clone(), report.clone());
        let _ = self.reports_tx.send((run.clone(), report.clone()));
        ready(Ok(()))
    }

    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Value>> {
        ready(Ok(self.report(run)))
    }

    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<Value>> {
        let st = self.lock();
        let rx = self.reports_tx.subscribe();
        let history: Vec<(RunId, Value)> = st
            .reports
            .get(run)
            .map(|v| (run.clone(), v.clone()))
            .into_iter()
            .collect();
        let run = run.clone();
        let watch = tail(history, rx, move |(r, _)| *r == run).map(|e| e.map(|(_, v)| v));
        ready(Ok(watch.boxed()))
    }
}

fn memory_key(scope: MemoryScope<'_>, key: &str) -> String {
    match scope {
        MemoryScope::Global => wire::key_memory_global(key),
        MemoryScope::Run(run) => wire::key_memory_run(run, key),
    }
}

fn memory_prefix(scope: MemoryScope<'_>) -> String {
    memory_key(scope, "").trim_end_matches('=').to_owned()
}

impl Memory for InMemory {
    fn load<'a>(&'a self, scope: MemoryScope<'a>) -> Fut<'a, Map<String, Value>> {
        let prefix = memory_prefix(scope);
        let st = self.lock();
        let out = st
            .memory
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(&prefix).and_then(wire::untoken)?;
                Some((name, v.clone()))
            })
            .collect();
        ready(Ok(out))
    }

    fn put<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str, value: &'a Value) -> Fut<'a, ()> {
        let size = encode(value).map_or(0, |b| b.len());
        if size > wire::INLINE_LIMIT {
            return ready(Err(StoreError::TooLarge {
                what: "memory value",
                key: key.to_owned(),
                size,
                limit: wire::INLINE_LIMIT,
            }));
        }
        self.lock()
            .memory
            .insert(memory_key(scope, key), value.clone());
        ready(Ok(()))
    }

    fn delete<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str) -> Fut<'a, ()> {
        self.lock().memory.remove(&memory_key(scope, key));
        ready(Ok(()))
    }

    fn clear_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, ()> {
        let prefix = memory_prefix(MemoryScope::Run(run));
        self.lock().memory.retain(|k, _| !k.starts_with(&prefix));
        ready(Ok(()))
    }
}

impl Objects for InMemory {
    fn put_json<'a>(&'a self, name: &'a str, value: &'a Value) -> Fut<'a, ()> {
        self.lock().objects.insert(name.to_owned(), value.clone());
        ready(Ok(()))
    }

    fn get_json<'a>(&'a self, name: &'a str) -> Fut<'a, Value> {
        let got = self.lock().objects.get(name).cloned();
        ready(got.ok_or_else(|| StoreError::Missing {
            what: "object",
            key: name.to_owned(),
        }))
    }
}

impl InMemory {
    fn stored_letter(id: u64, subject: &str, letter: &DeadLetter) -> StoredLetter {
        StoredLetter {
            id,
            subject: subject.to_owned(),
            letter: Some(letter.clone()),
            raw: encode(letter).map(bytes::Bytes::from).unwrap_or_default(),
        }
    }
}

impl DeadLetters for InMemory {
    fn list(&self) -> Fut<'_, Vec<StoredLetter>> {
        let st = self.lock();
        ready(Ok(st
            .dead_letters
            .iter()
            .map(|(id, (subject, l))| Self::stored_letter(*id, subject, l))
            .collect()))
    }

    fn get(&self, id: u64) -> Fut<'_, Option<StoredLetter>> {
        let st = self.lock();
        ready(Ok(st
            .dead_letters
            .get(&id)
            .map(|(subject, l)| Self::stored_letter(id, subject, l))))
    }

    fn remove(&self, id: u64) -> Fut<'_, bool> {
        ready(Ok(self.lock().dead_letters.remove(&id).is_some()))
    }
}

impl Registry for InMemory {
    fn list_stamped(&self) -> Fut<'_, Vec<(WorkerInfo, Millis)>> {
        ready(Ok(self
            .lock()
            .workers
            .values()
            .map(|w| (w.clone(), w.heartbeat_at))
            .collect()))
    }

    fn put<'a>(&'a self, info: &'a WorkerInfo) -> Fut<'a, ()> {
        self.lock().workers.insert(info.name.clone(), info.clone());
        let _ = self.workers_tx.send(WorkerChange::Up(info.clone()));
        ready(Ok(()))
    }

    fn remove<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        self.lock().workers.remove(name);
        let _ = self.workers_tx.send(WorkerChange::Gone(name.to_owned()));
        ready(Ok(()))
    }

    fn list(&self) -> Fut<'_, Vec<WorkerInfo>> {
        ready(Ok(self.lock().workers.values().cloned().collect()))
    }

    fn watch(&self) -> Fut<'_, Watch<WorkerChange>> {
        let st = self.lock();
        let rx = self.workers_tx.subscribe();
        let history: Vec<WorkerChange> =
            st.workers.values().cloned().map(WorkerChange::Up).collect();
        ready(Ok(tail(history, rx, |_| true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_log_has_one_writer_and_results_the_first_completion() {
        let mem = InMemory::new();
        let stores = mem.stores(QueueSettings::default());
        let run = RunId::new("r");
        let rec = EventRecord {
            v: PROTOCOL_VERSION,
            at: 1,
            events: Vec::new(),
            object: None,
        };
        let first = stores.events.append(&run, &rec, 0, "a").await;
        assert!(matches!(first, Ok(Appended::At(1))));
        let stale = stores.events.append(&run, &rec, 0, "b").await;
        assert!(matches!(stale, Ok(Appended::Superseded)));
        // The same append again (its answer was lost): written once.
        let again = stores.events.append(&run, &rec, 0, "a").await;
        assert!(matches!(again, Ok(Appended::At(1))), "{again:?}");
        assert_eq!(mem.log(&run).len(), 1);
        let other = EventRecord {
            at: 2,
            ..rec.clone()
        };
        let changed = stores.events.append(&run, &other, 0, "a").await;
        assert!(matches!(changed, Ok(Appended::Superseded)), "{changed:?}");
        let claim = Claim {
            v: PROTOCOL_VERSION,
            worker: "w".into(),
            delivered: 1,
            at: 0,
            stream_seq: Some(1),
            proof: None,
        };
        let key = ClaimKey::attempt(&run, &"t".into(), cascade_proto::Attempt::FIRST);
        let rev = stores.claims.create(&key, &claim).await.ok().flatten();
        assert!(rev.is_some());
        assert_eq!(stores.claims.create(&key, &claim).await.ok(), Some(None));
        let stale_rev = rev.map_or(0, |r| r + 100);
        assert_eq!(
            stores.claims.update(&key, &claim, stale_rev).await.ok(),
            Some(None)
        );
    }

    fn submission(run: &str, main: &str) -> Submission {
        Submission {
            v: PROTOCOL_VERSION,
            run_id: RunId::new(run),
            idempotency_key: Some("k".into()),
            main: main.into(),
            files: BTreeMap::new(),
            inputs: Map::new(),
            submitted_at: 0,
            submitted_by: String::new(),
        }
    }

    #[tokio::test]
    async fn submissions_are_sent_once_and_keys_name_the_first_run() {
        let mem = InMemory::new();
        let stores = mem.stores(QueueSettings::default());
        let (a, b) = (RunId::new("a"), RunId::new("b"));
        let first = stores.submissions.claim_key("k", &a).await.ok();
        assert_eq!(first, Some(KeyClaim::Claimed));
        let second = stores.submissions.claim_key("k", &b).await.ok();
        assert_eq!(second, Some(KeyClaim::Taken(a.clone())));
        let s = submission("a", "main.yaml");
        assert!(stores.submissions.send(&s).await.is_ok());
        assert!(stores.submissions.send(&s).await.is_ok());
        assert_eq!(mem.submitted().len(), 1, "a duplicate was published");
        let stored = stores.submissions.get(&a).await.ok().flatten();
        assert_eq!(stored.map(|s| s.main), Some("main.yaml".to_owned()));
        // Over the max payload: refused before anything is written.
        let mut big = submission("big", "main.yaml");
        big.files
            .insert("huge.yaml".into(), "x".repeat(MAX_PAYLOAD + 1));
        let refused = stores.submissions.send(&big).await;
        assert!(
            matches!(refused, Err(StoreError::TooLarge { .. })),
            "{refused:?}"
        );
        let big_stored = stores.submissions.get(&RunId::new("big")).await.ok();
        assert!(matches!(big_stored, Some(None)));
        assert_eq!(mem.submitted().len(), 1);
    }

    #[tokio::test]
    async fn report_and_run_watches_start_with_what_is_stored() {
        let mem = InMemory::new();
        let stores = mem.stores(QueueSettings::default());
        let run = RunId::new("r");
        let mut reports = stores.reports.watch(&run).await.expect("watch");
        stores
            .reports
            .put(&RunId::new("other"), &Value::from(0))
            .await
            .expect("put");
        stores
            .reports
            .put(&run, &Value::from(1))
            .await
            .expect("put");
        let next = reports.next().await.and_then(Result::ok);
        assert_eq!(next, Some(Value::from(1)), "another run's report came");
        let mut again = stores.reports.watch(&run).await.expect("watch");
        let stored = again.next().await.and_then(Result::ok);
        assert_eq!(stored, Some(Value::from(1)));

        let record = |id: &str| RunRecord {
            v: PROTOCOL_VERSION,
            run_id: RunId::new(id),
            cascade: "c".into(),
            state: wire::RunState::Queued,
            created_at: 0,
            updated_at: 0,
            owner: None,
            stages: BTreeMap::new(),
            error: None,
            cancel_requested: None,
            waiting: Default::default(),
            degraded: None,
        };
        stores.runs.create(&record("one")).await.expect("create");
        let mut all = stores.runs.watch_all().await.expect("watch");
        stores.runs.create(&record("two")).await.expect("create");
        let mut seen = Vec::new();
        for _ in 0..2 {
            match all.next().await {
                Some(Ok(RunChange::Up(r))) => seen.push(r.run_id.to_string()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, ["one", "two"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_queue_delivers_naks_and_acks() {
        let mem = InMemory::new();
        let stores = mem.stores(QueueSettings::default());
        let spec = cascade_proto::TaskSpec {
            run_id: RunId::new("r"),
            task_id: "t".into(),
            stage_id: "s".into(),
            skill: "lint".into(),
            attempt: cascade_proto::Attempt::FIRST,
            inputs: Value::Null,
            timeout_ms: None,
            model: None,
            workdir: None,
            context: None,
            budget: None,
            hooks: None,
        };
        let message = TaskMessage {
            v: PROTOCOL_VERSION,
            spec,
            route: wire::Route::Mesh,
            dispatched_at: 0,
            inputs_ref: None,
            grant: None,
        };
        let of = QueueOf::Skill("lint".into());
        let ack = stores
            .tasks
            .publish_task(of.subject(), &message, "m1".into())
            .await
            .expect("publish");
        ack.await.expect("ack");
        let queue = mem.task_queue(&of);
        let other = mem.task_queue(&QueueOf::Skill("test".into()));
        let none: Vec<_> = other
            .pull(5, Duration::from_secs(1))
            .await
            .expect("pull")
            .collect()
            .await;
        assert!(none.is_empty(), "another skill's queue delivered");

        let first: Vec<Delivery> = queue
            .pull(5, Duration::from_secs(1))
            .await
            .expect("pull")
            .filter_map(|d| async move { d.ok() })
            .collect()
            .await;
        assert_eq!(first.len(), 1);
        let d = &first[0];
        assert_eq!(d.position().delivered, 1);
        assert_eq!(d.subject(), of.subject());
        let depths = stores.tasks.queue_depths().await.expect("depths");
        assert_eq!(
            depths,
            [QueueDepth {
                skill: "lint".into(),
                pending: 0,
                unacked: 1
            }]
        );
        // Delivered and unanswered: not delivered again.
        let held: Vec<_> = queue
            .pull(5, Duration::from_secs(1))
            .await
            .expect("pull")
            .collect()
            .await;
        assert!(held.is_empty());
        d.progress().await.expect("progress");
        d.nak(Duration::from_secs(5)).await.expect("nak");
        let early: Vec<_> = queue
            .pull(5, Duration::from_secs(1))
            .await
            .expect("pull")
            .collect()
            .await;
        assert!(early.is_empty(), "delivered again before the nak's delay");
        tokio::time::advance(Duration::from_secs(5)).await;
        let second: Vec<Delivery> = queue
            .pull(5, Duration::from_secs(1))
            .await
            .expect("pull")
            .filter_map(|d| async move { d.ok() })
            .collect()
            .await;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].position().delivered, 2);
        assert_eq!(second[0].position().stream_seq, d.position().stream_seq);
        second[0].ack().await.expect("ack");
        assert!(mem.queued().is_empty());
        assert!(
            stores
                .tasks
                .queue_depths()
                .await
                .expect("depths")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn cancels_reach_listeners_and_batch_reports_are_kept() {
        let mem = InMemory::new();
        let stores = mem.stores(QueueSettings::default());
        let mut cancels = stores.tasks.cancels().await.expect("listen");
        let req = CancelRequest {
            v: PROTOCOL_VERSION,
            run_id: RunId::new("r"),
            task_id: None,
            attempt: None,
        };
        stores.tasks.cancel(&req).await.expect("cancel");
        stores.tasks.flush().await.expect("flush");
        let got = cancels.next().await.and_then(Result::ok);
        assert_eq!(got.map(|r| r.run_id), Some(RunId::new("r")));
        let report = BatchReport {
            v: PROTOCOL_VERSION,
            batch: "b".into(),
            run_id: RunId::new("r"),
            lead: "lead".into(),
            assigned: BTreeMap::new(),
            succeeded: 1,
            failed: 0,
            at: 0,
        };
        stores.tasks.report_batch(&report).await.expect("report");
        assert_eq!(mem.batch_reports().len(), 1);
    }
}
