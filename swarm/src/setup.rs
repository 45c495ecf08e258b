//! Streams, buckets and consumers: created when missing, and read back and
//! compared when present (`get_or_create` never updates an existing
//! config, so a stream created by another version could differ silently).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use cascade_proto::wire;

use crate::connect::NatsError;

/// How long a worker's own consumer outlives its last pull.
pub const PERSONAL_CONSUMER_IDLE: Duration = Duration::from_secs(300);

/// Settings every process of a swarm must agree on: they shape the durable
/// consumers, which the first process to need one creates.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a delivered task may go without an ack or progress before
    /// it is redelivered. Workers send progress every third of it.
    pub ack_wait: Duration,
    /// Deliveries of one task message before it is dead-lettered.
    pub max_deliver: i64,
    /// Most unacknowledged messages per consumer (all workers together).
    pub max_ack_pending: i64,
    /// How long a worker's registration outlives its last heartbeat.
    pub worker_ttl: Duration,
    /// Results, reports and run records are kept this long.
    pub retention: Duration,
    /// Memory entries expire this long after their last write.
    pub memory_retention: Duration,
    /// In-memory storage (benchmarks only: loses everything on restart).
    pub memory_storage: bool,
    /// JetStream replicas of every stream, bucket and the object store this
    /// process creates (1 on a single server, 3 on a production cluster).
    /// Servers and workers (`align_existing`) refuse an existing one with
    /// another count, like any other mismatch; clients only create with it.
    pub replicas: usize,
    /// Whether this process may change the age limits of existing buckets
    /// to its own. Servers and workers do; one-shot clients (`submit`,
    /// `status`, ...) do not, so a client with default flags never resets
    /// a swarm's settings.
    pub align_existing: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 10_000,
            worker_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 86_400),
            memory_retention: Duration::from_secs(7 * 86_400),
            memory_storage: false,
            replicas: 1,
            align_existing: true,
        }
    }
}

/// A connection with every stream and bucket of the swarm at hand. Other
/// crates read and write them through the typed stores ([`Swarm::stores`],
/// [`Swarm::task_queue`]); the handles are this crate's.
#[derive(Clone)]
pub struct Swarm {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub settings: QueueSettings,
    pub(crate) tasks: stream::Stream,
    pub(crate) events: stream::Stream,
    /// Still read by the coordinator's intake (its pull consumer of
    /// submissions), which has no store operation yet.
    pub submit: stream::Stream,
    /// Dead letters are published by subject; the handle is for tests.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) dlq: stream::Stream,
    pub(crate) runs: kv::Store,
    pub(crate) submissions: kv::Store,
    pub(crate) idempotency: kv::Store,
    pub(crate) leases: kv::Store,
    pub(crate) workers: kv::Store,
    pub(crate) claims: kv::Store,
    pub(crate) results: kv::Store,
    pub(crate) memory: kv::Store,
    pub(crate) reports: kv::Store,
    pub(crate) objects: object_store::ObjectStore,
}

/// Every raw handle of a [`Swarm`], for tests that play the server or a
/// broken process (feature `testing`): nothing else may bypass the stores.
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct Raw {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub tasks: stream::Stream,
    pub events: stream::Stream,
    pub submit: stream::Stream,
    pub dlq: stream::Stream,
    pub runs: kv::Store,
    pub submissions: kv::Store,
    pub idempotency: kv::Store,
    pub leases: kv::Store,
    pub workers: kv::Store,
    pub claims: kv::Store,
    pub results: kv::Store,
    pub memory: kv::Store,
    pub reports: kv::Store,
    pub objects: object_store::ObjectStore,
}

#[cfg(feature = "testing")]
impl Swarm {
    /// The raw handles (tests only).
    pub fn raw(&self) -> Raw {
        Raw {
            client: self.client.clone(),
            js: self.js.clone(),
            tasks: self.tasks.clone(),
            events: self.events.clone(),
            submit: self.submit.clone(),
            dlq: self.dlq.clone(),
            runs: self.runs.clone(),
            submissions: self.submissions.clone(),
            idempotency: self.idempotency.clone(),
            leases: self.leases.clone(),
            workers: self.workers.clone(),
            claims: self.claims.clone(),
            results: self.results.clone(),
            memory: self.memory.clone(),
            reports: self.reports.clone(),
            objects: self.objects.clone(),
        }
    }
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn setup_err(what: impl Into<String>, e: impl std::fmt::Display) -> NatsError {
    NatsError::Setup {
        what: what.into(),
        message: e.to_string(),
    }
}

impl Swarm {
    /// Creates (or verifies) everything; safe to call from every process,
    /// concurrently.
    pub async fn setup(
        client: async_nats::Client,
        settings: QueueSettings,
    ) -> Result<Swarm, NatsError> {
        let js = jetstream::new(client.clone());
        let storage = if settings.memory_storage {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        let tasks = ensure_stream(
            &js,
            stream::Config {
                name: wire::STREAM_TASKS.into(),
                subjects: vec![wire::TASKS_WILDCARD.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage,
                num_replicas: settings.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            settings.align_existing,
        )
        .await?;
        let submit = ensure_stream(
            &js,
            stream::Config {
                name: wire::STREAM_SUBMIT.into(),
                subjects: vec![wire::SUBJECT_SUBMIT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage,
                num_replicas: settings.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            settings.align_existing,
        )
        .await?;
        let events = ensure_stream(
            &js,
            stream::Config {
                name: wire::STREAM_EVENTS.into(),
                subjects: vec![wire::EVENTS_WILDCARD.into()],
                retention: stream::RetentionPolicy::Limits,
                storage,
                max_age: settings.retention,
                num_replicas: settings.replicas,
                duplicate_window: Duration::from_secs(120),
                // Replay reads a run's log by subject with direct gets.
                allow_direct: true,
                ..Default::default()
            },
            settings.align_existing,
        )
        .await?;
        let dlq = ensure_stream(
            &js,
            stream::Config {
                name: wire::STREAM_DLQ.into(),
                subjects: vec![wire::DLQ_WILDCARD.into()],
                retention: stream::RetentionPolicy::Limits,
                storage,
                max_age: settings.retention,
                num_replicas: settings.replicas,
                ..Default::default()
            },
            settings.align_existing,
        )
        .await?;
        let kv_storage = storage;
        let bucket = |name: &'static str, max_age: Duration, history: i64| kv::Config {
            bucket: name.into(),
            history,
            max_age,
            storage: kv_storage,
            num_replicas: settings.replicas,
            ..Default::default()
        };
        let keep = settings.retention;
        Ok(Swarm {
            runs: ensure_bucket(
                &js,
                bucket(wire::BUCKET_RUNS, keep, 1),
                settings.align_existing,
            )
            .await?,
            submissions: ensure_bucket(
                &js,
                bucket(wire::BUCKET_SUBMISSIONS, keep, 1),
                settings.align_existing,
            )
            .await?,
            idempotency: ensure_bucket(
                &js,
                bucket(wire::BUCKET_IDEMPOTENCY, keep, 1),
                settings.align_existing,
            )
            .await?,
            leases: ensure_bucket(
                &js,
                bucket(wire::BUCKET_LEASES, keep, 1),
                settings.align_existing,
            )
            .await?,
            workers: ensure_bucket(
                &js,
                bucket(wire::BUCKET_WORKERS, settings.worker_ttl, 1),
                settings.align_existing,
            )
            .await?,
            claims: ensure_bucket(
                &js,
                bucket(wire::BUCKET_CLAIMS, keep, 1),
                settings.align_existing,
            )
            .await?,
            results: ensure_bucket(
                &js,
                bucket(wire::BUCKET_RESULTS, keep, 1),
                settings.align_existing,
            )
            .await?,
            memory: ensure_bucket(
                &js,
                bucket(wire::BUCKET_MEMORY, settings.memory_retention, 1),
                settings.align_existing,
            )
            .await?,
            reports: ensure_bucket(
                &js,
                bucket(wire::BUCKET_REPORTS, keep, 1),
                settings.align_existing,
            )
            .await?,
            objects: ensure_objects(
                &js,
                storage,
                keep,
                settings.replicas,
                settings.align_existing,
            )
            .await?,
            client,
            js,
            settings,
            tasks,
            events,
            submit,
            dlq,
        })
    }

    /// The durable pull consumer for one subject of the task queue (a
    /// skill's, a worker's or a lead's), created on first use.
    /// `personal`: a consumer of one worker's own subject (star, lead). It
    /// is removed by the server once no pull has come for a while, so
    /// worker names that come and go (`<host>-<pid>`) do not pile up
    /// consumers; a skill's consumer is shared and never expires.
    pub async fn task_consumer(
        &self,
        durable: &str,
        subject: &str,
        personal: bool,
    ) -> Result<consumer::PullConsumer, NatsError> {
        let want = consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: subject.to_owned(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver,
            max_ack_pending: self.settings.max_ack_pending,
            // A skill's queue is durable for ever; a worker's own one goes
            // when its worker has been gone long enough.
            inactive_threshold: if personal {
                PERSONAL_CONSUMER_IDLE.max(self.settings.worker_ttl * 6)
            } else {
                Duration::ZERO
            },
            ..Default::default()
        };
        let c: consumer::PullConsumer = self
            .tasks
            .get_or_create_consumer(durable, want.clone())
            .await
            .map_err(|e| setup_err(format!("consumer `{durable}`"), e))?;
        let mut c = c;
        let info = c
            .info()
            .await
            .map_err(|e| setup_err(format!("consumer `{durable}`"), e))?;
        let got = &info.config;
        if got.filter_subject != want.filter_subject
            || got.ack_wait != want.ack_wait
            || got.max_deliver != want.max_deliver
        {
            return Err(NatsError::Setup {
                what: format!("consumer `{durable}`"),
                message: format!(
                    "exists with filter `{}`, ack_wait {:?}, max_deliver {}; this process expects `{}`, {:?}, {} \
                     (every process of a swarm must use the same --ack-wait and --max-deliver)",
                    got.filter_subject,
                    got.ack_wait,
                    got.max_deliver,
                    want.filter_subject,
                    want.ack_wait,
                    want.max_deliver
                ),
            });
        }
        Ok(c)
    }
}

/// A replica count differs: servers and workers (`align`) report it like any
/// other mismatch; a client, which only creates with its count, goes on.
fn check_replicas(what: &str, got: usize, want: usize, align: bool) -> Result<(), NatsError> {
    // The server reports an unset count (0) as 1.
    if !align || got.max(1) == want.max(1) {
        return Ok(());
    }
    Err(NatsError::Setup {
        what: what.to_owned(),
        message: format!(
            "exists with {got} replica(s); this process expects {want} \
             (every process of a swarm must use the same --replicas / CASCADE_REPLICAS; \
             change it with `nats stream edit --replicas` or remove it)"
        ),
    })
}

async fn ensure_stream(
    js: &jetstream::Context,
    want: stream::Config,
    align: bool,
) -> Result<stream::Stream, NatsError> {
    let name = want.name.clone();
    let mut s = js
        .get_or_create_stream(want.clone())
        .await
        .map_err(|e| setup_err(format!("stream `{name}`"), e))?;
    let info = s
        .info()
        .await
        .map_err(|e| setup_err(format!("stream `{name}`"), e))?;
    let got = &info.config;
    let subjects_ok = want.subjects.iter().all(|w| got.subjects.contains(w));
    if got.retention != want.retention || !subjects_ok || got.storage != want.storage {
        return Err(NatsError::Setup {
            what: format!("stream `{name}`"),
            message: format!(
                "exists with retention {:?}, storage {:?}, subjects {:?}; expected {:?}, {:?}, {:?} \
                 (created by another version or by hand: remove it or fix it)",
                got.retention,
                got.storage,
                got.subjects,
                want.retention,
                want.storage,
                want.subjects
            ),
        });
    }
    check_replicas(
        &format!("stream `{name}`"),
        got.num_replicas,
        want.num_replicas,
        align,
    )?;
    if want.allow_direct && !got.allow_direct {
        let mut cfg = got.clone();
        cfg.allow_direct = true;
        s = js
            .update_stream(cfg)
            .await
            .map(|_| s)
            .map_err(|e| setup_err(format!("stream `{name}`"), e))?;
    }
    Ok(s)
}

async fn ensure_bucket(
    js: &jetstream::Context,
    want: kv::Config,
    align: bool,
) -> Result<kv::Store, NatsError> {
    let name = want.bucket.clone();
    match js.get_key_value(&name).await {
        Ok(store) => {
            let mut st = js
                .get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| setup_err(format!("bucket `{name}`"), e))?;
            let info = st
                .info()
                .await
                .map_err(|e| setup_err(format!("bucket `{name}`"), e))?;
            check_replicas(
                &format!("bucket `{name}`"),
                info.config.num_replicas,
                want.num_replicas,
                align,
            )?;
            if align && info.config.max_age != want.max_age {
                // A bucket's age limit is ours to set: align it.
                js.create_or_update_key_value(want)
                    .await
                    .map_err(|e| setup_err(format!("bucket `{name}`"), e))?;
            }
            Ok(store)
        }
        Err(_) => match js.create_key_value(want.clone()).await {
            Ok(store) => Ok(store),
            // Another process created it in between.
            Err(_) => js
                .get_key_value(&name)
                .await
                .map_err(|e| setup_err(format!("bucket `{name}`"), e)),
        },
    }
}

async fn ensure_objects(
    js: &jetstream::Context,
    storage: stream::StorageType,
    max_age: Duration,
    replicas: usize,
    align: bool,
) -> Result<object_store::ObjectStore, NatsError> {
    match js.get_object_store(wire::OBJECT_STORE).await {
        Ok(o) => {
            let mut st = js
                .get_stream(format!("OBJ_{}", wire::OBJECT_STORE))
                .await
                .map_err(|e| setup_err("object store", e))?;
            let info = st.info().await.map_err(|e| setup_err("object store", e))?;
            check_replicas("object store", info.config.num_replicas, replicas, align)?;
            Ok(o)
        }
        Err(_) => {
            let cfg = object_store::Config {
                bucket: wire::OBJECT_STORE.into(),
                storage,
                max_age,
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_object_store(cfg).await {
                Ok(o) => Ok(o),
                Err(_) => js
                    .get_object_store(wire::OBJECT_STORE)
                    .await
                    .map_err(|e| setup_err("object store", e)),
            }
        }
    }
}
