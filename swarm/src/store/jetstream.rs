//! The stores on JetStream: streams and KV buckets as [`Swarm::setup`]
//! created them. Every key is built here from `cascade_proto::wire`.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context, kv, object_store, stream};
use bytes::Bytes;
use cascade_proto::wire::{
    self, BatchMessage, BatchReport, CancelRequest, Claim, DeadLetter, Lease, ResultRecord,
    RunRecord, Submission, TaskMessage, WorkerInfo,
};
use cascade_proto::{EventRecord, Millis, PROTOCOL_VERSION, RunId, decode, decode_current, encode};
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use super::{
    AckFuture, Acquired, Appended, CancelOutcome, ClaimKey, Claims, Class, Created, Delivered,
    Delivery, EventLog, Fut, KeyClaim, LeaseChange, LeaseHeld, Leases, LogEntry, Memory,
    MemoryScope, Objects, Position, QueueDepth, QueueOf, Queued, Registry, Reports, ResultKey,
    Results, RunChange, Runs, StoreError, StoredLetter, Stores, Submissions, TaskBus, TaskQueue,
    Watch, WorkerChange,
};
use crate::{NatsError, Swarm, grant};

/// The object store's digest (`SHA-256=` and base64url) of the SHA-256
/// given in hex.
fn object_digest(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    )
}

/// Compare-and-set rounds on a run record before giving up (each re-reads).
const RECORD_RETRIES: usize = 10;
/// Compare-and-set rounds of a cancel request against a busy owner.
const CANCEL_RETRIES: usize = 100;

impl Swarm {
    /// The typed stores over this connection, as a worker or a client uses
    /// them: results are counted by the grant of their key, if any.
    pub fn stores(&self) -> Stores {
        self.stores_with(None)
    }

    /// The stores of `coordinator serve`: task messages get their attempt's
    /// grant, and results are counted only when proven with it (the run's
    /// grant secret lives in the leases bucket, created on first use).
    pub fn coordinator_stores(&self) -> Stores {
        self.stores_with(Some(Arc::new(Grants {
            leases: self.leases.clone(),
            cache: std::sync::Mutex::new(HashMap::new()),
        })))
    }

    fn stores_with(&self, grants: Option<Arc<Grants>>) -> Stores {
        let objects = Arc::new(JsObjects(self.objects.clone()));
        Stores {
            settings: self.settings.clone(),
            events: Arc::new(JsEventLog {
                js: self.js.clone(),
                stream: self.events.clone(),
                objects: objects.clone(),
            }),
            tasks: Arc::new(JsTaskBus {
                client: self.client.clone(),
                js: self.js.clone(),
                stream: self.tasks.clone(),
                grants: grants.clone(),
            }),
            dead_letters: Arc::new(JsDeadLetters(self.dlq.clone())),
            claims: Arc::new(JsClaims {
                kv: self.claims.clone(),
                grants: grants.clone(),
            }),
            results: Arc::new(JsResults {
                kv: self.results.clone(),
                grants,
            }),
            leases: Arc::new(JsLeases(self.leases.clone())),
            runs: Arc::new(JsRuns(self.runs.clone())),
            submissions: Arc::new(JsSubmissions {
                bucket: self.submissions.clone(),
                idempotency: self.idempotency.clone(),
                client: self.client.clone(),
                js: self.js.clone(),
            }),
            reports: Arc::new(JsReports {
                bucket: self.reports.clone(),
                objects: objects.clone(),
            }),
            memory: Arc::new(JsMemory(self.memory.clone())),
            objects,
            registry: Arc::new(JsRegistry(self.workers.clone())),
        }
    }

    /// One of the task queues a worker reads, its durable consumer created
    /// (or verified: another `--ack-wait` or `--max-deliver` is refused).
    pub async fn task_queue(&self, of: &QueueOf) -> Result<Arc<dyn TaskQueue>, NatsError> {
        let name = of.durable();
        let consumer = self
            .task_consumer(&name, &of.subject(), of.personal())
            .await?;
        Ok(Arc::new(JsTaskQueue { consumer, name }))
    }
}

/// A NATS error that carries no kind (acks, pulls): retryable.
fn nats_other(
    op: &'static str,
    key: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Nats {
        op,
        key: key.into(),
        class: Class::Retryable,
        source: e.into(),
    }
}

// ---- grants --------------------------------------------------------------

/// Runs whose grant secret is cached; past it the cache starts again (a
/// secret is one KV read away).
const GRANT_CACHE: usize = 4096;

/// The coordinators' per-run grant secrets (`cascade_swarm::grant`).
pub(crate) struct Grants {
    leases: kv::Store,
    cache: std::sync::Mutex<HashMap<RunId, [u8; grant::SECRET_LEN]>>,
}

impl Grants {
    async fn read(&self, key: &str) -> Result<Option<[u8; grant::SECRET_LEN]>, StoreError> {
        let value = self
            .leases
            .get(key)
            .await
            .map_err(|e| StoreError::nats("read grant secret", key, e))?;
        Ok(value.and_then(|b| <[u8; grant::SECRET_LEN]>::try_from(b.as_ref()).ok()))
    }

    /// The run's secret: read, or created by the first coordinator that
    /// needs it (KV create: every coordinator ends up with the same one).
    async fn secret(&self, run: &RunId) -> Result<[u8; grant::SECRET_LEN], StoreError> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(run).copied()) {
            return Ok(s);
        }
        let key = wire::key_grant_secret(run);
        let secret = match self.read(&key).await? {
            Some(s) => s,
            None => {
                let fresh =
                    grant::new_secret().map_err(|e| StoreError::encode("grant secret", &key, e))?;
                match self
                    .leases
                    .create(&key, Bytes::copy_from_slice(&fresh))
                    .await
                {
                    Ok(_) => fresh,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        self.read(&key).await?.ok_or(StoreError::Missing {
                            what: "grant secret",
                            key: key.clone(),
                        })?
                    }
                    Err(e) => return Err(StoreError::nats("create grant secret", &key, e)),
                }
            }
        };
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= GRANT_CACHE {
                c.clear();
            }
            c.insert(run.clone(), secret);
        }
        Ok(secret)
    }

    async fn grant(
        &self,
        run: &RunId,
        task: &cascade_proto::TaskId,
        attempt: cascade_proto::Attempt,
    ) -> Result<String, StoreError> {
        Ok(grant::grant(&self.secret(run).await?, run, task, attempt))
    }
}

/// Why a result stored under `key` does not count, if it does not: its
/// key must be its own worker's key of its own attempt, and its proof
/// must verify with the attempt's grant.
fn unproven(key: &str, rec: &ResultRecord, grant: &str) -> Option<&'static str> {
    let r = &rec.result;
    if key != wire::key_result(&rec.run_id, &r.task_id, r.attempt, &r.worker) {
        return Some("its key is not its writer's key of its attempt");
    }
    match &rec.proof {
        None => Some("it has no proof of delivery"),
        Some(p) if !grant::verify(grant, &r.worker, p) => Some("its proof of delivery is wrong"),
        Some(_) => None,
    }
}

fn run_key(run: &RunId) -> String {
    wire::token(run.as_str())
}

fn enc<T: serde::Serialize>(what: &'static str, key: &str, v: &T) -> Result<Bytes, StoreError> {
    encode(v)
        .map(Bytes::from)
        .map_err(|e| StoreError::encode(what, key, e))
}

/// Waits for a publish's acknowledgement, as a boxed future.
fn ack_of(ack: context::PublishAckFuture, subject: String) -> AckFuture {
    ack.into_future()
        .map(move |r| {
            r.map(|_| ())
                .map_err(|e| StoreError::nats("publish ack", subject, e))
        })
        .boxed()
}

// ---- event log -----------------------------------------------------------

struct JsEventLog {
    js: jetstream::Context,
    stream: stream::Stream,
    objects: Arc<JsObjects>,
}

impl JsEventLog {
    /// Publishes an entry with the expected last sequence and a message id
    /// naming the run, the expected sequence, the writer and the payload.
    /// A try whose acknowledgement was lost may have been written: tried
    /// again, it fails the expected-sequence check (the server checks that
    /// before duplicates), and the entry last on the subject carries our
    /// message id, so it is reported as written at its sequence, not as
    /// another writer's. A timed-out (retryable) try is tried again in
    /// place, a bounded number of times.
    async fn append_bytes(
        &self,
        run: &RunId,
        subject: String,
        payload: Bytes,
        expected: u64,
        writer: &str,
    ) -> Result<Appended, StoreError> {
        let msg_id = append_msg_id(run, expected, writer, &payload);
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .append_once(&subject, payload.clone(), expected, &msg_id)
                .await
            {
                Err(e) if e.is_retryable() && tries < APPEND_TRIES => {
                    tracing::debug!(subject, tries, "append: {e}; trying again");
                }
                done => return done,
            }
        }
    }

    async fn append_once(
        &self,
        subject: &str,
        payload: Bytes,
        expected: u64,
        msg_id: &str,
    ) -> Result<Appended, StoreError> {
        let msg = PublishMessage::build()
            .payload(payload)
            .expected_last_subject_sequence(expected)
            .message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject.to_owned(), msg)
            .await
            .map_err(|e| StoreError::nats("append to", subject, e))?;
        match ack.await {
            Ok(a) => Ok(Appended::At(a.sequence)),
            Err(e) if e.kind() == context::PublishErrorKind::WrongLastSequence => {
                // Under R3 load this can be spurious: look before giving up.
                match self.stream.get_last_raw_message_by_subject(subject).await {
                    // Our own entry, written by an earlier try whose
                    // acknowledgement was lost.
                    Ok(m)
                        if m.headers
                            .get(async_nats::header::NATS_MESSAGE_ID)
                            .map(|v| v.as_str())
                            == Some(msg_id) =>
                    {
                        Ok(Appended::At(m.sequence))
                    }
                    Ok(m) if m.sequence != expected => Ok(Appended::Superseded),
                    _ => Err(StoreError::nats("append to", subject, e)),
                }
            }
            Err(e) => Err(StoreError::nats("append to", subject, e)),
        }
    }
}

/// Tries of one append (the first and the retries after a timeout).
const APPEND_TRIES: usize = 3;

/// The message id of an append: one writer's one entry after `expected`.
/// The writer is in it so that another coordinator's entry after the same
/// sequence is never taken for ours (nor deduplicated against it), and a
/// hash of the payload so that another entry of ours is never either.
fn append_msg_id(run: &RunId, expected: u64, writer: &str, payload: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in payload {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "events.{}.{expected}.{}.{hash:016x}",
        run_key(run),
        wire::token(writer)
    )
}

impl EventLog for JsEventLog {
    fn append<'a>(
        &'a self,
        run: &'a RunId,
        record: &'a EventRecord,
        expected: u64,
        writer: &'a str,
    ) -> Fut<'a, Appended> {
        async move {
            let subject = wire::subject_events(run);
            let payload = enc("event log entry", &subject, record)?;
            if payload.len() <= wire::INLINE_LIMIT {
                return self
                    .append_bytes(run, subject, payload, expected, writer)
                    .await;
            }
            if record.events.len() > 1 {
                return Ok(Appended::TooLarge);
            }
            // One event too large for a message: the entry goes to the
            // object store and the log holds its name. The writer's name
            // keeps a superseded coordinator from overwriting the object
            // the winning entry points at.
            let prefix = format!(
                "events.{}.{}.{}",
                run_key(run),
                expected + 1,
                wire::token(writer)
            );
            let value = serde_json::to_value(record)
                .map_err(|e| StoreError::encode("event log entry", &prefix, e))?;
            let name = super::content_name(&prefix, &value)?;
            self.objects.put_json(&name, &value).await?;
            let stub = EventRecord {
                v: PROTOCOL_VERSION,
                at: record.at,
                events: Vec::new(),
                object: Some(name),
            };
            let stub = enc("event log entry", &subject, &stub)?;
            self.append_bytes(run, subject, stub, expected, writer)
                .await
        }
        .boxed()
    }

    fn next_after<'a>(&'a self, run: &'a RunId, after: u64) -> Fut<'a, Option<LogEntry>> {
        async move {
            let subject = wire::subject_events(run);
            let msg = match self
                .stream
                .direct_get_next_for_subject(subject.clone(), Some(after + 1))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::nats("read", &subject, e)),
            };
            let at = format!("{subject} #{}", msg.sequence);
            let rec = async {
                let mut rec: EventRecord = decode_current(&msg.payload)
                    .map_err(|e| StoreError::decode("event log entry", &at, e))?;
                if let Some(name) = rec.object.clone() {
                    let value = self.objects.get_json(&name).await?;
                    rec = serde_json::from_value(value)
                        .map_err(|e| StoreError::decode("event log object", &name, e))?;
                }
                Ok(rec)
            };
            Ok(Some((msg.sequence, rec.await)))
        }
        .boxed()
    }
}

// ---- task bus ------------------------------------------------------------

struct JsTaskBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    grants: Option<Arc<Grants>>,
}

impl JsTaskBus {
    async fn send(&self, subject: String, msg: PublishMessage) -> Result<AckFuture, StoreError> {
        let ack = self
            .js
            .send_publish(subject.clone(), msg)
            .await
            .map_err(|e| StoreError::nats("publish", &subject, e))?;
        Ok(ack_of(ack, subject))
    }

    /// Core NATS, best effort: no stream stores it.
    async fn publish_core<T: serde::Serialize>(
        &self,
        what: &'static str,
        subject: String,
        value: &T,
    ) -> Result<(), StoreError> {
        let payload = enc(what, &subject, value)?;
        self.client
            .publish(subject.clone(), payload)
            .await
            .map_err(|e| StoreError::nats("publish", &subject, e))
    }
}

impl TaskBus for JsTaskBus {
    fn publish_task<'a>(
        &'a self,
        subject: String,
        message: &'a TaskMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture> {
        async move {
            let stamped;
            let message = match &self.grants {
                Some(g) if message.grant.is_none() => {
                    let s = &message.spec;
                    let mut m = message.clone();
                    m.grant = Some(g.grant(&s.run_id, &s.task_id, s.attempt).await?);
                    stamped = m;
                    &stamped
                }
                _ => message,
            };
            let payload = enc("task message", &msg_id, message)?;
            let publish = PublishMessage::build().payload(payload).message_id(msg_id);
            let publish = crate::ops::trace::inject(publish, &message.spec);
            self.send(subject, publish).await
        }
        .boxed()
    }

    fn publish_batch<'a>(
        &'a self,
        subject: String,
        batch: &'a BatchMessage,
        msg_id: String,
    ) -> Fut<'a, AckFuture> {
        async move {
            let stamped;
            let batch = match &self.grants {
                Some(g) => {
                    let mut b = batch.clone();
                    for s in &batch.tasks {
                        let grant = g.grant(&s.run_id, &s.task_id, s.attempt).await?;
                        b.grants.insert(s.task_id.as_str().to_owned(), grant);
                    }
                    let secret = g.secret(&batch.run_id).await?;
                    b.grant = Some(grant::batch_grant(&secret, &batch.run_id, &batch.batch));
                    stamped = b;
                    &stamped
                }
                None => batch,
            };
            let payload = enc("batch message", &msg_id, batch)?;
            let publish = PublishMessage::build().payload(payload).message_id(msg_id);
            self.send(subject, publish).await
        }
        .boxed()
    }

    fn queued(&self, seq: u64) -> Fut<'_, Option<Queued>> {
        async move {
            match self.stream.get_raw_message(seq).await {
                Ok(m) => Ok(Some(Queued {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                })),
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
                // The server answers a missing sequence with an API error.
                Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::JetStream(_)) => Ok(None),
                Err(e) => Err(StoreError::nats("read task message", seq.to_string(), e)),
            }
        }
        .boxed()
    }

    fn remove(&self, seq: u64) -> Fut<'_, ()> {
        async move {
            self.stream
                .delete_message(seq)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::nats("delete task message", seq.to_string(), e))
        }
        .boxed()
    }

    fn dead_letter<'a>(
        &'a self,
        subject: String,
        letter: &'a DeadLetter,
        msg_id: Option<String>,
    ) -> Fut<'a, ()> {
        async move {
            let payload = enc("dead letter", &subject, letter)?;
            let mut publish = PublishMessage::build().payload(payload);
            if let Some(id) = msg_id {
                publish = publish.message_id(id);
            }
            self.send(subject, publish).await?.await
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, request: &'a CancelRequest) -> Fut<'a, ()> {
        async move {
            self.publish_core(
                "cancel request",
                wire::subject_cancel(&request.run_id),
                request,
            )
            .await
        }
        .boxed()
    }

    fn max_deliveries(&self) -> Fut<'_, Watch<(u64, u64)>> {
        #[derive(serde::Deserialize)]
        struct Advisory {
            stream_seq: u64,
            #[serde(default)]
            deliveries: u64,
        }
        async move {
            let subject = wire::advisory_max_deliveries("*");
            let sub = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| StoreError::nats("subscribe", &subject, e))?;
            let stream = sub.filter_map(|msg| async move {
                serde_json::from_slice::<Advisory>(&msg.payload)
                    .ok()
                    .map(|a| Ok((a.stream_seq, a.deliveries)))
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn cancels(&self) -> Fut<'_, Watch<CancelRequest>> {
        async move {
            let sub = self
                .client
                .subscribe(wire::CANCEL_WILDCARD)
                .await
                .map_err(|e| StoreError::nats("subscribe", wire::CANCEL_WILDCARD, e))?;
            let stream = sub.map(|msg| {
                decode::<CancelRequest>(&msg.payload)
                    .map_err(|e| StoreError::decode("cancel request", msg.subject.as_str(), e))
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn report_batch<'a>(&'a self, report: &'a BatchReport) -> Fut<'a, ()> {
        async move {
            self.publish_core(
                "batch report",
                wire::subject_batch_report(&report.run_id),
                report,
            )
            .await
        }
        .boxed()
    }

    fn flush(&self) -> Fut<'_, ()> {
        async move {
            self.client
                .flush()
                .await
                .map_err(|e| nats_other("flush", "", e))
        }
        .boxed()
    }

    fn queue_depths(&self) -> Fut<'_, Vec<QueueDepth>> {
        async move {
            let mut out = Vec::new();
            let mut consumers = self.stream.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(|e| nats_other("list consumers", wire::STREAM_TASKS, e))?;
                let Some(skill) = info.name.strip_prefix("skill-").and_then(wire::untoken) else {
                    continue;
                };
                out.push(QueueDepth {
                    skill,
                    pending: info.num_pending,
                    unacked: info.num_ack_pending as u64,
                });
            }
            Ok(out)
        }
        .boxed()
    }
}

// ---- dead letters (an operator's view) -----------------------------------

struct JsDeadLetters(stream::Stream);

impl JsDeadLetters {
    async fn read(&self, id: u64) -> Result<Option<StoredLetter>, StoreError> {
        match self.0.get_raw_message(id).await {
            Ok(m) => {
                let letter = decode::<DeadLetter>(&m.payload).ok();
                Ok(Some(StoredLetter {
                    id,
                    subject: m.subject.to_string(),
                    letter,
                    raw: m.payload,
                }))
            }
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            // The server answers a missing sequence with an API error.
            Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::JetStream(_)) => Ok(None),
            Err(e) => Err(StoreError::nats("read dead letter", id.to_string(), e)),
        }
    }
}

impl super::DeadLetters for JsDeadLetters {
    fn list(&self) -> Fut<'_, Vec<StoredLetter>> {
        async move {
            let info = self
                .0
                .get_info()
                .await
                .map_err(|e| nats_other("stream info", wire::STREAM_DLQ, e))?;
            let mut out = Vec::new();
            if info.state.messages == 0 {
                return Ok(out);
            }
            // Deleted sequences (dropped or replayed letters) read as none.
            for id in info.state.first_sequence..=info.state.last_sequence {
                if let Some(l) = self.read(id).await? {
                    out.push(l);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn get(&self, id: u64) -> Fut<'_, Option<StoredLetter>> {
        async move { self.read(id).await }.boxed()
    }

    fn remove(&self, id: u64) -> Fut<'_, bool> {
        async move {
            if self.read(id).await?.is_none() {
                return Ok(false);
            }
            self.0
                .delete_message(id)
                .await
                .map_err(|e| nats_other("delete dead letter", id.to_string(), e))
        }
        .boxed()
    }
}

// ---- task queues (a worker's pulls) --------------------------------------

struct JsTaskQueue {
    consumer: PullConsumer,
    name: String,
}

impl TaskQueue for JsTaskQueue {
    fn pull(&self, max: usize, expires: std::time::Duration) -> Fut<'_, Watch<Delivery>> {
        async move {
            let batch = self
                .consumer
                .batch()
                .max_messages(max)
                .expires(expires)
                .messages()
                .await
                .map_err(|e| nats_other("pull from", &self.name, e))?;
            let name = self.name.clone();
            let stream = batch.filter_map(move |item| {
                let msg = match item {
                    Ok(msg) => msg,
                    Err(e) => return std::future::ready(Some(Err(nats_other("pull from", &name, e)))),
                };
                let position = match msg.info() {
                    Ok(info) => Position {
                        stream_seq: info.stream_sequence,
                        delivered: u64::try_from(info.delivered).unwrap_or(0),
                    },
                    Err(e) => {
                        // Not a JetStream delivery: left alone (unacked),
                        // it comes back after the ack window.
                        tracing::warn!(subject = %msg.subject, "delivery without its info skipped: {e}");
                        return std::future::ready(None);
                    }
                };
                std::future::ready(Some(Ok(Delivery::new(
                    msg.subject.to_string(),
                    msg.payload.clone(),
                    position,
                    Box::new(JsDelivered(msg)),
                ))))
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

struct JsDelivered(jetstream::Message);

impl JsDelivered {
    fn signal(&self, kind: AckKind, what: &'static str) -> Fut<'_, ()> {
        async move {
            self.0
                .ack_with(kind)
                .await
                .map_err(|e| nats_other(what, self.0.subject.as_str(), e))
        }
        .boxed()
    }
}

impl Delivered for JsDelivered {
    fn ack(&self) -> Fut<'_, ()> {
        async move {
            self.0
                .double_ack()
                .await
                .map_err(|e| nats_other("ack", self.0.subject.as_str(), e))
        }
        .boxed()
    }

    fn nak(&self, delay: std::time::Duration) -> Fut<'_, ()> {
        self.signal(AckKind::Nak(Some(delay)), "nak")
    }

    fn progress(&self) -> Fut<'_, ()> {
        self.signal(AckKind::Progress, "progress")
    }

    fn term(&self) -> Fut<'_, ()> {
        self.signal(AckKind::Term, "term")
    }

    fn message(&self) -> Option<&async_nats::Message> {
        Some(&self.0.message)
    }
}

// ---- claims --------------------------------------------------------------

struct JsClaims {
    kv: kv::Store,
    /// On a coordinator: claims on attempts count only when proven.
    grants: Option<Arc<Grants>>,
}

impl Claims for JsClaims {
    fn entry<'a>(&'a self, key: &'a ClaimKey) -> Fut<'a, Option<(Claim, u64)>> {
        async move {
            let grant = match (&self.grants, key.of_attempt()) {
                (Some(g), Some((run, task, attempt))) => Some(g.grant(run, task, *attempt).await?),
                _ => None,
            };
            let entry = self
                .kv
                .entry(key.as_str())
                .await
                .map_err(|e| StoreError::nats("read claim", key.as_str(), e))?;
            Ok(entry.and_then(|e| {
                // A claim that cannot be read is older than any that can be
                // written: report it as the oldest possible holder.
                let claim = decode::<Claim>(&e.value).unwrap_or(Claim {
                    v: PROTOCOL_VERSION,
                    worker: String::new(),
                    delivered: 0,
                    at: 0,
                    stream_seq: Some(0),
                    proof: None,
                });
                if let Some(g) = &grant
                    && e.operation == kv::Operation::Put
                    && !grant::claim_ok(g, &claim)
                {
                    crate::ops::security_event(
                        "forged_claim",
                        key.as_str(),
                        "no proof of delivery",
                    );
                    return None;
                }
                (e.operation == kv::Operation::Put).then_some((claim, e.revision))
            }))
        }
        .boxed()
    }

    fn create<'a>(&'a self, key: &'a ClaimKey, claim: &'a Claim) -> Fut<'a, Option<u64>> {
        async move {
            let bytes = enc("claim", key.as_str(), claim)?;
            match self.kv.create(key.as_str(), bytes).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(StoreError::nats("create claim", key.as_str(), e)),
            }
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        key: &'a ClaimKey,
        claim: &'a Claim,
        revision: u64,
    ) -> Fut<'a, Option<u64>> {
        async move {
            let bytes = enc("claim", key.as_str(), claim)?;
            match self.kv.update(key.as_str(), bytes, revision).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(StoreError::nats("update claim", key.as_str(), e)),
            }
        }
        .boxed()
    }
}

// ---- results -------------------------------------------------------------

struct JsResults {
    kv: kv::Store,
    /// On a coordinator: results count only when proven.
    grants: Option<Arc<Grants>>,
}

impl JsResults {
    /// The grant results of `key` are checked against: the coordinator's,
    /// else the one the key came with, else none (any result counts).
    async fn grant_of(&self, key: &ResultKey) -> Result<Option<String>, StoreError> {
        match &self.grants {
            Some(g) => Ok(Some(g.grant(key.run(), key.task(), key.attempt()).await?)),
            None => Ok(key.grant().map(str::to_owned)),
        }
    }
}

impl Results for JsResults {
    fn get<'a>(&'a self, key: &'a ResultKey) -> Fut<'a, Option<ResultRecord>> {
        async move {
            let grant = self.grant_of(key).await?;
            let filter = format!("$KV.{}.{}", wire::BUCKET_RESULTS, key.all_writers());
            let prefix = format!("$KV.{}.", wire::BUCKET_RESULTS);
            // Every writer's result of the attempt, in stream order: the
            // first that counts is the attempt's result.
            let mut seq = 1;
            loop {
                let msg = match self
                    .kv
                    .stream
                    .direct_get_next_for_subject(filter.as_str(), Some(seq))
                    .await
                {
                    Ok(m) => m,
                    Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(StoreError::nats("read result", key.as_str(), e)),
                };
                seq = msg.sequence + 1;
                if msg.payload.is_empty() {
                    continue; // a delete or purge marker
                }
                let stored = msg
                    .subject
                    .strip_prefix(prefix.as_str())
                    .unwrap_or_default();
                let Ok(rec) = decode_current::<ResultRecord>(&msg.payload) else {
                    continue;
                };
                match &grant {
                    Some(g) if unproven(stored, &rec, g).is_some() => continue,
                    _ => return Ok(Some(rec)),
                }
            }
        }
        .boxed()
    }

    fn create<'a>(&'a self, key: &'a ResultKey, record: &'a ResultRecord) -> Fut<'a, Created> {
        async move {
            // No look for other writers' results first (a round trip per
            // task): a worker that has reason to (a redelivery) looks
            // before it runs, and readers take the first proven result.
            let own = key.of_writer(&record.result.worker);
            let stamped;
            let record = match (&self.grants, &record.proof) {
                // The coordinator's own results (dead letters) prove
                // themselves.
                (Some(_), None) => {
                    let grant = self.grant_of(key).await?.unwrap_or_default();
                    let mut r = record.clone();
                    r.proof = Some(grant::proof(&grant, &r.result.worker));
                    stamped = r;
                    &stamped
                }
                _ => record,
            };
            let bytes = enc("result", &own, record)?;
            match self.kv.create(own.as_str(), bytes).await {
                Ok(_) => Ok(Created::Written),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Exists),
                Err(e) => Err(StoreError::nats("store result", own, e)),
            }
        }
        .boxed()
    }

    fn watch_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<ResultRecord>> {
        async move {
            let pattern = wire::key_results_of_run(run);
            let secret = match &self.grants {
                Some(g) => Some(g.secret(run).await?),
                None => None,
            };
            let watch = self
                .kv
                .watch_with_history(&pattern)
                .await
                .map_err(|e| StoreError::nats("watch results", &pattern, e))?;
            let run = run.clone();
            // Per result: a decode (and on a coordinator two HMACs), no
            // allocation beyond it (the hot path).
            let stream = watch.filter_map(move |entry| {
                std::future::ready(match entry {
                    Ok(e) if e.operation == kv::Operation::Put => {
                        match decode_current::<ResultRecord>(&e.value) {
                            Err(err) => Some(Err(StoreError::decode("result", e.key, err))),
                            Ok(rec) => match &secret {
                                None => Some(Ok(rec)),
                                Some(secret) => {
                                    let r = &rec.result;
                                    let grant = grant::grant(secret, &run, &r.task_id, r.attempt);
                                    let why = if rec.run_id != run {
                                        Some("it names another run")
                                    } else {
                                        unproven(&e.key, &rec, &grant)
                                    };
                                    match why {
                                        Some(why) => {
                                            crate::ops::security_event(
                                                "forged_result",
                                                &e.key,
                                                why,
                                            );
                                            None
                                        }
                                        None => Some(Ok(rec)),
                                    }
                                }
                            },
                        }
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(StoreError::nats("watch results", pattern.clone(), e))),
                })
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}

// ---- leases --------------------------------------------------------------

struct JsLeases(kv::Store);

fn lease_bytes(
    key: &str,
    owner: &str,
    clock: Millis,
    ttl: std::time::Duration,
) -> Result<Bytes, StoreError> {
    enc(
        "lease",
        key,
        &Lease {
            v: PROTOCOL_VERSION,
            owner: owner.to_owned(),
            expires_at: clock + ttl.as_millis() as u64,
            clock,
        },
    )
}

impl Leases for JsLeases {
    fn acquire<'a>(
        &'a self,
        run: &'a RunId,
        owner: &'a str,
        stale: Option<u64>,
        clock: Millis,
        ttl: std::time::Duration,
    ) -> Fut<'a, Acquired> {
        async move {
            let key = run_key(run);
            let value = lease_bytes(&key, owner, clock, ttl)?;
            let held = |revision| {
                Acquired::Held(LeaseHeld {
                    run: run.clone(),
                    revision,
                })
            };
            match self.0.create(&key, value.clone()).await {
                Ok(revision) => return Ok(held(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::nats("create lease", &key, e)),
            }
            let Some(entry) = self
                .0
                .entry(&key)
                .await
                .map_err(|e| StoreError::nats("read lease", &key, e))?
            else {
                // Removed between the two calls.
                return Ok(Acquired::Contended);
            };
            let current: Option<Lease> = match entry.operation {
                kv::Operation::Put => decode(&entry.value).ok(),
                _ => None, // released
            };
            let free = match &current {
                None => true, // released or unreadable
                Some(l) => l.owner == owner || stale == Some(entry.revision),
            };
            if !free {
                return Ok(Acquired::Busy {
                    owner: current.map(|l| l.owner).unwrap_or_default(),
                    revision: entry.revision,
                });
            }
            match self.0.update(&key, value, entry.revision).await {
                Ok(revision) => Ok(held(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Ok(Acquired::Contended)
                }
                Err(e) => Err(StoreError::nats("take lease", &key, e)),
            }
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        held: &'a mut LeaseHeld,
        owner: &'a str,
        clock: Millis,
        ttl: std::time::Duration,
    ) -> Fut<'a, bool> {
        async move {
            let key = run_key(&held.run);
            let value = lease_bytes(&key, owner, clock, ttl)?;
            match self.0.update(&key, value, held.revision).await {
                Ok(rev) => {
                    held.revision = rev;
                    Ok(true)
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(StoreError::nats("renew lease", &key, e)),
            }
        }
        .boxed()
    }

    fn release<'a>(&'a self, held: &'a LeaseHeld) -> Fut<'a, ()> {
        async move {
            let key = run_key(&held.run);
            self.0
                .delete_expect_revision(&key, Some(held.revision))
                .await
                .map_err(|e| StoreError::nats("release lease", &key, e))
        }
        .boxed()
    }

    fn watch(&self) -> Fut<'_, Watch<LeaseChange>> {
        async move {
            let watch = self
                .0
                .watch_with_history(">")
                .await
                .map_err(|e| StoreError::nats("watch leases", ">", e))?;
            let stream = watch.filter_map(|entry| async move {
                match entry {
                    Err(e) => Some(Err(StoreError::nats("watch leases", ">", e))),
                    Ok(e) => {
                        let run = RunId::new(wire::untoken(&e.key)?);
                        let lease = (e.operation == kv::Operation::Put)
                            .then(|| decode::<Lease>(&e.value).ok())
                            .flatten();
                        Some(Ok(match lease {
                            Some(l) => LeaseChange::Written {
                                run,
                                owner: l.owner,
                                revision: e.revision,
                                clock: l.clock,
                            },
                            None => LeaseChange::Gone(run),
                        }))
                    }
                }
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}

// ---- runs ----------------------------------------------------------------

struct JsRuns(kv::Store);

fn decode_record(key: &str, bytes: &[u8]) -> Result<RunRecord, StoreError> {
    decode_current(bytes).map_err(|e| StoreError::decode("run record", key, e))
}

impl Runs for JsRuns {
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<RunRecord>> {
        async move {
            let key = run_key(run);
            let bytes = self
                .0
                .get(&key)
                .await
                .map_err(|e| StoreError::nats("read run record", &key, e))?;
            bytes.map(|b| decode_record(&key, &b)).transpose()
        }
        .boxed()
    }

    fn create<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, Created> {
        async move {
            let key = run_key(&record.run_id);
            let bytes = enc("run record", &key, record)?;
            match self.0.create(&key, bytes).await {
                Ok(_) => Ok(Created::Written),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Exists),
                Err(e) => Err(StoreError::nats("store run record", &key, e)),
            }
        }
        .boxed()
    }

    fn write<'a>(&'a self, record: &'a RunRecord) -> Fut<'a, ()> {
        async move {
            let key = run_key(&record.run_id);
            for _ in 0..RECORD_RETRIES {
                let current = self
                    .0
                    .entry(&key)
                    .await
                    .map_err(|e| StoreError::nats("read run record", &key, e))?;
                let mut merged = record.clone();
                let written = match current {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        if let Ok(stored) = decode::<RunRecord>(&entry.value) {
                            merged.cancel_requested =
                                stored.cancel_requested.or(merged.cancel_requested);
                        }
                        let bytes = enc("run record", &key, &merged)?;
                        self.0.update(&key, bytes, entry.revision).await.is_ok()
                    }
                    _ => {
                        let bytes = enc("run record", &key, &merged)?;
                        self.0.create(&key, bytes).await.is_ok()
                    }
                };
                if written {
                    return Ok(());
                }
            }
            Err(StoreError::Contended {
                what: "run record",
                key,
                tries: RECORD_RETRIES,
            })
        }
        .boxed()
    }

    fn list(&self) -> Fut<'_, Vec<RunRecord>> {
        async move {
            let keys: Vec<String> = self
                .0
                .keys()
                .await
                .map_err(|e| StoreError::nats("list run records", "", e))?
                .filter_map(|k| async move { k.ok() })
                .collect()
                .await;
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let Ok(Some(bytes)) = self.0.get(&k).await else {
                    continue;
                };
                match decode_current::<RunRecord>(&bytes) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!(
                        "`{k}` in bucket `{}` is not a run record: {e}",
                        wire::BUCKET_RUNS
                    ),
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<RunRecord>> {
        async move {
            let key = run_key(run);
            let watch = self
                .0
                .watch_with_history(&key)
                .await
                .map_err(|e| StoreError::nats("watch run record", &key, e))?;
            let stream = watch.filter_map(move |entry| {
                std::future::ready(match entry {
                    Ok(e) if e.operation == kv::Operation::Put => {
                        Some(decode_record(&e.key, &e.value))
                    }
                    Ok(e) => Some(Err(StoreError::Missing {
                        what: "run record",
                        key: e.key,
                    })),
                    Err(e) => Some(Err(StoreError::nats("watch run record", key.clone(), e))),
                })
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn request_cancel<'a>(&'a self, run: &'a RunId, reason: &'a str) -> Fut<'a, CancelOutcome> {
        async move {
            let key = run_key(run);
            // A conflict means the owner is writing the record: re-read
            // and retry, bounded so a broken bucket cannot spin for ever.
            for _ in 0..CANCEL_RETRIES {
                let entry = self
                    .0
                    .entry(&key)
                    .await
                    .map_err(|e| StoreError::nats("read run record", &key, e))?;
                let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                    return Ok(CancelOutcome::NoRecord);
                };
                let mut r = decode_record(&key, &entry.value)?;
                if r.state.is_final() {
                    return Ok(CancelOutcome::AlreadyOver(r.state));
                }
                if r.cancel_requested.is_some() {
                    return Ok(CancelOutcome::AlreadyRequested(r.state));
                }
                r.cancel_requested = Some(reason.to_owned());
                r.updated_at = crate::clock::now_ms();
                let bytes = enc("run record", &key, &r)?;
                match self.0.update(&key, bytes, entry.revision).await {
                    Ok(_) => return Ok(CancelOutcome::Requested(r.state)),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                    Err(e) => return Err(StoreError::nats("request a cancel on", &key, e)),
                }
            }
            Err(StoreError::Contended {
                what: "run record",
                key,
                tries: CANCEL_RETRIES,
            })
        }
        .boxed()
    }

    fn watch_all(&self) -> Fut<'_, Watch<RunChange>> {
        async move {
            let watch = self
                .0
                .watch_with_history(">")
                .await
                .map_err(|e| StoreError::nats("watch run records", ">", e))?;
            let stream = watch.filter_map(|entry| async move {
                match entry {
                    Ok(e) if e.operation == kv::Operation::Put => {
                        match decode_record(&e.key, &e.value) {
                            Ok(r) => Some(Ok(RunChange::Up(r))),
                            Err(err) => {
                                tracing::debug!(key = e.key, error = %err, "undecodable run record skipped");
                                None
                            }
                        }
                    }
                    Ok(e) => wire::untoken(&e.key).map(|id| Ok(RunChange::Gone(RunId::new(id)))),
                    Err(e) => Some(Err(StoreError::nats("watch run records", ">", e))),
                }
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}

// ---- submissions ---------------------------------------------------------

struct JsSubmissions {
    bucket: kv::Store,
    idempotency: kv::Store,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Submissions for JsSubmissions {
    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Submission>> {
        async move {
            let key = run_key(run);
            let bytes = self
                .bucket
                .get(&key)
                .await
                .map_err(|e| StoreError::nats("read submission", &key, e))?;
            bytes
                .map(|b| decode_current(&b).map_err(|e| StoreError::decode("submission", &key, e)))
                .transpose()
        }
        .boxed()
    }

    fn create<'a>(&'a self, submission: &'a Submission) -> Fut<'a, Created> {
        async move {
            let key = run_key(&submission.run_id);
            let bytes = enc("submission", &key, submission)?;
            match self.bucket.create(&key, bytes).await {
                Ok(_) => Ok(Created::Written),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Exists),
                Err(e) => Err(StoreError::nats("store submission", &key, e)),
            }
        }
        .boxed()
    }

    fn claim_key<'a>(&'a self, key: &'a str, run: &'a RunId) -> Fut<'a, KeyClaim> {
        async move {
            let k = wire::token(key);
            match self
                .idempotency
                .create(&k, Bytes::from(run.as_str().to_owned()))
                .await
            {
                Ok(_) => Ok(KeyClaim::Claimed),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let existing = self
                        .idempotency
                        .get(&k)
                        .await
                        .map_err(|e| StoreError::nats("read idempotency key", &k, e))?;
                    Ok(existing
                        .and_then(|b| String::from_utf8(b.to_vec()).ok())
                        .filter(|id| !id.is_empty())
                        .map_or(KeyClaim::NotARunId, |id| KeyClaim::Taken(RunId::new(id))))
                }
                Err(e) => Err(StoreError::nats("write idempotency key", &k, e)),
            }
        }
        .boxed()
    }

    fn send<'a>(&'a self, submission: &'a Submission) -> Fut<'a, ()> {
        async move {
            let run = submission.run_id.as_str();
            let payload = enc("submission", run, submission)?;
            let max = self.client.server_info().max_payload;
            if max > 0 && payload.len() > max {
                return Err(StoreError::TooLarge {
                    what: "submission",
                    key: run.to_owned(),
                    size: payload.len(),
                    limit: max,
                });
            }
            // A second submitter of the same key finds it written: fine.
            self.create(submission).await?;
            let publish = PublishMessage::build().payload(payload).message_id(run);
            self.js
                .send_publish(wire::SUBJECT_SUBMIT, publish)
                .await
                .map_err(|e| StoreError::nats("publish to", wire::SUBJECT_SUBMIT, e))?
                .await
                .map_err(|e| StoreError::nats("publish to", wire::SUBJECT_SUBMIT, e))?;
            Ok(())
        }
        .boxed()
    }
}

// ---- reports -------------------------------------------------------------

struct JsReports {
    bucket: kv::Store,
    objects: Arc<JsObjects>,
}

impl Reports for JsReports {
    fn put<'a>(&'a self, run: &'a RunId, report: &'a Value) -> Fut<'a, ()> {
        async move {
            let key = run_key(run);
            let mut bytes = enc("report", &key, report)?;
            if bytes.len() > wire::INLINE_LIMIT {
                let name = super::content_name(&format!("report.{key}"), report)?;
                self.objects.put_json(&name, report).await?;
                bytes = enc("report", &key, &json!({ "$ref": name }))?;
            }
            self.bucket
                .put(&key, bytes)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::nats("store report", &key, e))
        }
        .boxed()
    }

    fn get<'a>(&'a self, run: &'a RunId) -> Fut<'a, Option<Value>> {
        async move {
            let key = run_key(run);
            let Some(bytes) = self
                .bucket
                .get(&key)
                .await
                .map_err(|e| StoreError::nats("read report", &key, e))?
            else {
                return Ok(None);
            };
            resolve_report(&self.objects, &key, &bytes).await.map(Some)
        }
        .boxed()
    }

    fn watch<'a>(&'a self, run: &'a RunId) -> Fut<'a, Watch<Value>> {
        async move {
            let key = run_key(run);
            let watch = self
                .bucket
                .watch_with_history(&key)
                .await
                .map_err(|e| StoreError::nats("watch report", &key, e))?;
            let objects = self.objects.clone();
            let stream = watch.filter_map(move |entry| {
                let objects = objects.clone();
                async move {
                    match entry {
                        Ok(e) if e.operation == kv::Operation::Put => {
                            Some(resolve_report(&objects, &e.key, &e.value).await)
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(StoreError::nats("watch report", "", e))),
                    }
                }
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}

/// A stored report, its reference followed.
async fn resolve_report(objects: &JsObjects, key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    let value: Value = decode(bytes).map_err(|e| StoreError::decode("report", key, e))?;
    match value.get("$ref").and_then(Value::as_str) {
        Some(name) => objects.get_json(name).await,
        None => Ok(value),
    }
}

// ---- memory --------------------------------------------------------------

struct JsMemory(kv::Store);

fn memory_key(scope: MemoryScope<'_>, key: &str) -> String {
    match scope {
        MemoryScope::Global => wire::key_memory_global(key),
        MemoryScope::Run(run) => wire::key_memory_run(run, key),
    }
}

fn memory_prefix(scope: MemoryScope<'_>) -> String {
    match scope {
        MemoryScope::Global => "global.".to_owned(),
        MemoryScope::Run(run) => format!("run.{}.", run_key(run)),
    }
}

impl JsMemory {
    async fn keys_with(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self
            .0
            .keys()
            .await
            .map_err(|e| StoreError::nats("list memory", prefix, e))?;
        Ok(keys
            .try_filter(|k| std::future::ready(k.starts_with(prefix)))
            .filter_map(|k| async move { k.ok() })
            .collect()
            .await)
    }
}

impl Memory for JsMemory {
    fn load<'a>(&'a self, scope: MemoryScope<'a>) -> Fut<'a, Map<String, Value>> {
        async move {
            let prefix = memory_prefix(scope);
            let mut out = Map::new();
            for k in self.keys_with(&prefix).await? {
                let Some(name) = k.strip_prefix(&prefix).and_then(wire::untoken) else {
                    continue;
                };
                if let Ok(Some(bytes)) = self.0.get(&k).await
                    && let Ok(v) = decode::<Value>(&bytes)
                {
                    out.insert(name, v);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn put<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str, value: &'a Value) -> Fut<'a, ()> {
        async move {
            let k = memory_key(scope, key);
            let bytes = enc("memory value", key, value)?;
            if bytes.len() > wire::INLINE_LIMIT {
                return Err(StoreError::TooLarge {
                    what: "memory value",
                    key: key.to_owned(),
                    size: bytes.len(),
                    limit: wire::INLINE_LIMIT,
                });
            }
            self.0
                .put(&k, bytes)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::nats("write memory", &k, e))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, scope: MemoryScope<'a>, key: &'a str) -> Fut<'a, ()> {
        async move {
            let k = memory_key(scope, key);
            self.0
                .delete(&k)
                .await
                .map_err(|e| StoreError::nats("delete memory", &k, e))
        }
        .boxed()
    }

    fn clear_run<'a>(&'a self, run: &'a RunId) -> Fut<'a, ()> {
        async move {
            for k in self
                .keys_with(&memory_prefix(MemoryScope::Run(run)))
                .await?
            {
                let _ = self.0.delete(&k).await;
            }
            Ok(())
        }
        .boxed()
    }
}

// ---- objects -------------------------------------------------------------

pub(crate) struct JsObjects(object_store::ObjectStore);

impl Objects for JsObjects {
    fn put_json<'a>(&'a self, name: &'a str, value: &'a Value) -> Fut<'a, ()> {
        async move {
            // A content name that already holds its content (a redelivered
            // attempt's outputs): nothing to write. Writing it again would
            // try to purge the old chunks, which workers may not: the
            // refusal costs a request timeout.
            if let Some(hex) = super::promised_digest(name)
                && let Ok(info) = self.0.info(name).await
                && !info.deleted
                && info.digest.as_deref() == Some(object_digest(hex).as_str())
            {
                return Ok(());
            }
            let bytes =
                serde_json::to_vec(value).map_err(|e| StoreError::encode("object", name, e))?;
            let mut reader = bytes.as_slice();
            match self.0.put(name, &mut reader).await {
                Ok(_) => Ok(()),
                // The object was replaced; only the old copy's chunks could
                // not be purged (workers may not purge: they stay until the
                // store's age limit).
                Err(e) if e.kind() == object_store::PutErrorKind::PurgeOldChunks => {
                    tracing::debug!(
                        name,
                        "object replaced; its old chunks stay until they age out: {e}"
                    );
                    Ok(())
                }
                Err(e) => Err(StoreError::nats("store object", name, e)),
            }
        }
        .boxed()
    }

    fn get_json<'a>(&'a self, name: &'a str) -> Fut<'a, Value> {
        async move {
            let mut object = match self.0.get(name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    return Err(StoreError::Missing {
                        what: "object",
                        key: name.to_owned(),
                    });
                }
                Err(e) => return Err(StoreError::nats("read object", name, e)),
            };
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| StoreError::Nats {
                    op: "read object",
                    key: name.to_owned(),
                    class: super::Class::Retryable,
                    source: Box::new(e),
                })?;
            if let Some(want) = super::promised_digest(name)
                && super::sha256_hex(&bytes) != want
            {
                crate::ops::security_event(
                    "replaced_object",
                    name,
                    "content does not match its name",
                );
                return Err(StoreError::decode("object", name, super::NotItsContent));
            }
            // JSON first: MessagePack would read JSON's opening `{` as the
            // integer 123 and "succeed". Objects written as MessagePack (by
            // older versions) still read.
            serde_json::from_slice(&bytes).or_else(|e| {
                decode::<Value>(&bytes).map_err(|_| StoreError::decode("object", name, e))
            })
        }
        .boxed()
    }
}

// ---- registry ------------------------------------------------------------

struct JsRegistry(kv::Store);

impl JsRegistry {
    async fn stamped(&self) -> Result<Vec<(WorkerInfo, Millis)>, StoreError> {
        let mut keys = self
            .0
            .keys()
            .await
            .map_err(|e| StoreError::nats("list workers", wire::BUCKET_WORKERS, e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| StoreError::nats("list workers", wire::BUCKET_WORKERS, e))?;
            let Ok(Some(entry)) = self.0.entry(key.as_str()).await else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let at = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            match decode_current::<WorkerInfo>(&entry.value) {
                Ok(info) => out.push((info, at)),
                Err(e) => tracing::warn!(
                    "`{key}` in bucket `{}` is not a worker record: {e}",
                    wire::BUCKET_WORKERS
                ),
            }
        }
        Ok(out)
    }
}

impl Registry for JsRegistry {
    fn list_stamped(&self) -> Fut<'_, Vec<(WorkerInfo, Millis)>> {
        async move { self.stamped().await }.boxed()
    }

    fn put<'a>(&'a self, info: &'a WorkerInfo) -> Fut<'a, ()> {
        async move {
            let key = wire::token(&info.name);
            let bytes = enc("worker registration", &key, info)?;
            self.0
                .put(&key, bytes)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::nats("register worker", &key, e))
        }
        .boxed()
    }

    fn remove<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        async move {
            let key = wire::token(name);
            self.0
                .delete(&key)
                .await
                .map_err(|e| StoreError::nats("deregister worker", &key, e))
        }
        .boxed()
    }

    fn list(&self) -> Fut<'_, Vec<WorkerInfo>> {
        async move {
            let mut keys = self
                .0
                .keys()
                .await
                .map_err(|e| StoreError::nats("list workers", wire::BUCKET_WORKERS, e))?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key =
                    key.map_err(|e| StoreError::nats("list workers", wire::BUCKET_WORKERS, e))?;
                let Ok(Some(value)) = self.0.get(key.as_str()).await else {
                    continue;
                };
                match decode_current::<WorkerInfo>(&value) {
                    Ok(info) => out.push(info),
                    Err(e) => tracing::warn!(
                        "`{key}` in bucket `{}` is not a worker record: {e}",
                        wire::BUCKET_WORKERS
                    ),
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn watch(&self) -> Fut<'_, Watch<WorkerChange>> {
        async move {
            let watch = self
                .0
                .watch_with_history(">")
                .await
                .map_err(|e| StoreError::nats("watch workers", ">", e))?;
            let stream = watch.filter_map(|entry| async move {
                match entry {
                    Ok(e) if e.operation == kv::Operation::Put => {
                        decode_current::<WorkerInfo>(&e.value)
                            .ok()
                            .map(|w| Ok(WorkerChange::Up(w)))
                    }
                    Ok(e) => wire::untoken(&e.key).map(|n| Ok(WorkerChange::Gone(n))),
                    Err(e) => Some(Err(StoreError::nats("watch workers", ">", e))),
                }
            });
            Ok(stream.boxed())
        }
        .boxed()
    }
}
