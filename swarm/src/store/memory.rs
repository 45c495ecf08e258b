//! Every store in memory, with the rules of the JetStream ones: expected
//! sequences on the event log, message-id deduplication on the task queue,
//! create-only results, compare-and-set claims, leases and run records.
//! For driver tests that take milliseconds and start no process.
//!
//! One [`InMemory`] holds the whole swarm; [`InMemory::stores`] hands out
//! its stores, and its other methods let a test look at what was sent and
//! play the other processes (a worker, another coordinator, the server).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cascade_proto::wire::{
    self, BatchMessage, CancelRequest, Claim, DeadLetter, Lease, ResultRecord, RunRecord,
    Submission, TaskMessage, WorkerInfo,
};
use cascade_proto::{EventRecord, Millis, PROTOCOL_VERSION, RunId, encode};
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::{
    AckFuture, Appended, CancelOutcome, ClaimKey, Claims, Created, EventLog, Fut, LeaseHeld,
    Leases, LogEntry, Memory, MemoryScope, Objects, Queued, Registry, Reports, ResultKey, Results,
    Runs, StoreError, Stores, Submissions, TaskBus, Watch, WorkerChange,
};
use crate::setup::QueueSettings;

/// Changes a watch may fall behind by before it misses some (tests write
/// far fewer between two polls of the driver).
const WATCH_BUFFER: usize = 65_536;

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
    dead_letters: Vec<DeadLetter>,
    claims: BTreeMap<ClaimKey, (Claim, u64)>,
    results: BTreeMap<ResultKey, ResultRecord>,
    leases: BTreeMap<RunId, (Lease, u64)>,
    runs: BTreeMap<RunId, (RunRecord, u64)>,
    submissions: BTreeMap<RunId, Submission>,
    reports: BTreeMap<RunId, Value>,
    memory: BTreeMap<String, Value>,
    objects: BTreeMap<String, Value>,
    workers: BTreeMap<String, WorkerInfo>,
    /// Delay added to every claims read (a slow server, for tests of
    /// what the driver does while a sweep is under way).
    claims_delay: Option<Duration>,
    /// Log entries that read back as undecodable.
    corrupt: HashSet<u64>,
}

/// A whole swarm's storage in one process.
pub struct InMemory {
    state: Mutex<State>,
    results_tx: broadcast::Sender<ResultRecord>,
    runs_tx: broadcast::Sender<RunRecord>,
    workers_tx: broadcast::Sender<WorkerChange>,
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemory").finish_non_exhaustive()
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
        })
    }

    /// Its stores, for a process with these settings.
    pub fn stores(self: &Arc<Self>, settings: QueueSettings) -> Stores {
        Stores {
            settings,
            events: self.clone(),
            tasks: self.clone(),
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

    /// Another process writes the lease of `run` (the holder's next
    /// renewal fails).
    pub fn steal_lease(&self, run: &RunId, owner: &str, expires_at: Millis) {
        let mut st = self.lock();
        st.revision += 1;
        let rev = st.revision;
        st.leases.insert(
            run.clone(),
            (
                Lease {
                    v: PROTOCOL_VERSION,
                    owner: owner.to_owned(),
                    expires_at,
                },
                rev,
            ),
        );
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

    /// Makes every claims read take this long.
    pub fn slow_claims(&self, delay: Duration) {
        self.lock().claims_delay = Some(delay);
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
        _writer: &'a str,
    ) -> Fut<'a, Appended> {
        let size = encode(record).map_or(0, |b| b.len());
        let mut st = self.lock();
        let last = st
            .events
            .get(run)
            .and_then(|l| l.last())
            .map_or(0, |(s, _)| *s);
        if last != expected {
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
        _subject: String,
        letter: &'a DeadLetter,
        _msg_id: Option<String>,
    ) -> Fut<'a, ()> {
        self.lock().dead_letters.push(letter.clone());
        ready(Ok(()))
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> Fut<'a, ()> {
        self.lock().cancels.push(request.clone());
        ready(Ok(()))
    }

    fn max_deliveries(&self) -> Fut<'_, Watch<(u64, u64)>> {
        ready(Ok(futures::stream::pending().boxed()))
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
        now: Millis,
        ttl: Duration,
    ) -> Fut<'a, Option<LeaseHeld>> {
        let mut st = self.lock();
        let free = st
            .leases
            .get(run)
            .is_none_or(|(l, _)| l.expires_at < now || l.owner == owner);
        if !free {
            return ready(Ok(None));
        }
        st.revision += 1;
        let revision = st.revision;
        let lease = Lease {
            v: PROTOCOL_VERSION,
            owner: owner.to_owned(),
            expires_at: now + ttl.as_millis() as u64,
        };
        st.leases.insert(run.clone(), (lease, revision));
        ready(Ok(Some(LeaseHeld {
            run: run.clone(),
            revision,
        })))
    }

    fn renew<'a>(
        &'a self,
        held: &'a mut LeaseHeld,
        owner: &'a str,
        expires_at: Millis,
    ) -> Fut<'a, bool> {
        let mut st = self.lock();
        if st.leases.get(&held.run).map(|(_, r)| *r) != Some(held.revision) {
            return ready(Ok(false));
        }
        st.revision += 1;
        held.revision = st.revision;
        let lease = Lease {
            v: PROTOCOL_VERSION,
            owner: owner.to_owned(),
            expires_at,
        };
        st.leases.insert(held.run.clone(), (lease, held.revision));
        ready(Ok(true))
    }

    fn release<'a>(&'a self, held: &'a LeaseHeld) -> Fut<'a, ()> {
        let mut st = self.lock();
        if st.leases.get(&held.run).map(|(_, r)| *r) == Some(held.revision) {
            st.leases.remove(&held.run);
        }
        ready(Ok(()))
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
}

impl Reports for InMemory {
    fn put<'a>(&'a self, run: &'a RunId, report: &'a Value) -> Fut<'a, ()> {
        self.lock().reports.insert(run.clone(), report.clone());
        ready(Ok(()))
    }

    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Value>> {
        ready(Ok(self.report(run)))
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

impl Registry for InMemory {
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
}
