//! Read-only checks of a swarm's server and layout, for `coordinator
//! doctor`: nothing here creates or changes a stream, bucket or consumer
//! ([`crate::setup`] does that). [`Swarm::open_existing`] opens the stores
//! over streams and buckets that must already exist; [`check_layout`]
//! reads back what setup would compare (retention and subjects of each
//! stream, each bucket's presence and age limit, the task consumers'
//! delivery settings) and says how far each is from what Cascade expects.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use cascade_proto::wire::{self, BUCKETS};
use futures::StreamExt;

use crate::connect::NatsError;
use crate::setup::{QueueSettings, Swarm};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of a report: what was checked, how it came out, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub reason: String,
}

impl Check {
    pub fn new(name: impl Into<String>, level: Level, reason: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            level,
            reason: reason.into(),
        }
    }
}

/// The streams Cascade uses, with the retention and subjects setup gives
/// them (the rest of their config is the operator's: replicas, limits).
fn expected_streams() -> [(&'static str, stream::RetentionPolicy, Vec<&'static str>); 4] {
    use stream::RetentionPolicy::{Limits, WorkQueue};
    [
        (wire::STREAM_TASKS, WorkQueue, vec![wire::TASKS_WILDCARD]),
        (wire::STREAM_SUBMIT, WorkQueue, vec![wire::SUBJECT_SUBMIT]),
        (wire::STREAM_EVENTS, Limits, vec![wire::EVENTS_WILDCARD]),
        (wire::STREAM_DLQ, Limits, vec![wire::DLQ_WILDCARD]),
    ]
}

fn open_err(what: impl Into<String>, e: impl std::fmt::Display) -> NatsError {
    NatsError::Setup {
        what: what.into(),
        message: format!("{e} (read-only: nothing was created; `coordinator serve` creates it)"),
    }
}

impl Swarm {
    /// The swarm over streams and buckets that exist already: reads only
    /// (a stream or bucket that is missing is an error, never created).
    pub async fn open_existing(
        client: async_nats::Client,
        settings: QueueSettings,
    ) -> Result<Swarm, NatsError> {
        let js = jetstream::new(client.clone());
        let stream = |name: &'static str| {
            let js = js.clone();
            async move {
                js.get_stream(name)
                    .await
                    .map_err(|e| open_err(format!("stream `{name}`"), e))
            }
        };
        let bucket = |name: &'static str| {
            let js = js.clone();
            async move {
                js.get_key_value(name)
                    .await
                    .map_err(|e| open_err(format!("bucket `{name}`"), e))
            }
        };
        Ok(Swarm {
            tasks: stream(wire::STREAM_TASKS).await?,
            events: stream(wire::STREAM_EVENTS).await?,
            submit: stream(wire::STREAM_SUBMIT).await?,
            dlq: stream(wire::STREAM_DLQ).await?,
            runs: bucket(wire::BUCKET_RUNS).await?,
            submissions: bucket(wire::BUCKET_SUBMISSIONS).await?,
            idempotency: bucket(wire::BUCKET_IDEMPOTENCY).await?,
            leases: bucket(wire::BUCKET_LEASES).await?,
            workers: bucket(wire::BUCKET_WORKERS).await?,
            claims: bucket(wire::BUCKET_CLAIMS).await?,
            results: bucket(wire::BUCKET_RESULTS).await?,
            memory: bucket(wire::BUCKET_MEMORY).await?,
            reports: bucket(wire::BUCKET_REPORTS).await?,
            objects: js
                .get_object_store(wire::OBJECT_STORE)
                .await
                .map_err(|e| open_err("object store", e))?,
            client,
            js,
            settings,
        })
    }
}

/// The server: version (the connection already refused unsafe ones),
/// JetStream, and whether it is clustered.
pub fn check_server(client: &async_nats::Client) -> Vec<Check> {
    let info = client.server_info();
    let mut out = vec![Check::new(
        "server",
        Level::Ok,
        format!(
            "nats-server {} ({}), protocol {}",
            info.version, info.server_name, info.proto
        ),
    )];
    out.push(if info.jetstream {
        Check::new("jetstream", Level::Ok, "enabled")
    } else {
        Check::new(
            "jetstream",
            Level::Fail,
            "not enabled (start nats-server with -js)",
        )
    });
    out.push(match &info.cluster {
        Some(c) => Check::new("cluster", Level::Ok, format!("cluster `{c}`")),
        None => Check::new(
            "cluster",
            Level::Warn,
            "single server: streams cannot be replicated (production wants 3 nodes, R3)",
        ),
    });
    out
}

/// Every stream, bucket, the object store and the task consumers, read
/// back and compared with what setup gives them.
pub async fn check_layout(client: &async_nats::Client) -> Vec<Check> {
    let js = jetstream::new(client.clone());
    let clustered = client.server_info().cluster.is_some();
    let replicas = |n: usize| {
        if clustered && n < 3 {
            (
                Level::Warn,
                format!("R{n} in a cluster (R3 survives a node)"),
            )
        } else {
            (Level::Ok, format!("R{n}"))
        }
    };
    let mut out = Vec::new();
    for (name, retention, subjects) in expected_streams() {
        let check = format!("stream {name}");
        let info = match js.get_stream(name).await {
            Ok(s) => s.get_info().await,
            Err(e) => {
                out.push(Check::new(
                    check,
                    Level::Fail,
                    format!("missing or unreadable: {e}"),
                ));
                continue;
            }
        };
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                out.push(Check::new(check, Level::Fail, format!("unreadable: {e}")));
                continue;
            }
        };
        let got = &info.config;
        let missing: Vec<&str> = subjects
            .iter()
            .copied()
            .filter(|s| !got.subjects.iter().any(|g| g == s))
            .collect();
        if got.retention != retention || !missing.is_empty() {
            out.push(Check::new(
                check,
                Level::Fail,
                format!(
                    "retention {:?}, subjects {:?}; expected {retention:?} with {subjects:?} \
                     (created by another version or by hand)",
                    got.retention, got.subjects
                ),
            ));
            continue;
        }
        let (level, r) = replicas(got.num_replicas);
        out.push(Check::new(
            check,
            level,
            format!(
                "{} messages, {:?} storage, {r}",
                info.state.messages, got.storage
            ),
        ));
    }
    for name in BUCKETS {
        let check = format!("bucket {name}");
        let info = match js.get_stream(format!("KV_{name}")).await {
            Ok(s) => s.get_info().await,
            Err(e) => {
                out.push(Check::new(
                    check,
                    Level::Fail,
                    format!("missing or unreadable: {e}"),
                ));
                continue;
            }
        };
        match info {
            Ok(i) => {
                let (level, r) = replicas(i.config.num_replicas);
                out.push(Check::new(
                    check,
                    level,
                    format!(
                        "{} entries, max age {}, {r}",
                        i.state.messages,
                        age(i.config.max_age)
                    ),
                ));
            }
            Err(e) => out.push(Check::new(check, Level::Fail, format!("unreadable: {e}"))),
        }
    }
    let obj = format!("OBJ_{}", wire::OBJECT_STORE);
    out.push(match js.get_stream(&obj).await {
        Ok(s) => match s.get_info().await {
            Ok(i) => {
                let (level, r) = replicas(i.config.num_replicas);
                Check::new(format!("objects {}", wire::OBJECT_STORE), level, r)
            }
            Err(e) => Check::new(
                format!("objects {}", wire::OBJECT_STORE),
                Level::Fail,
                e.to_string(),
            ),
        },
        Err(e) => Check::new(
            format!("objects {}", wire::OBJECT_STORE),
            Level::Fail,
            format!("missing or unreadable: {e}"),
        ),
    });
    out.push(check_consumers(&js).await);
    out
}

fn age(d: Duration) -> String {
    if d.is_zero() {
        "none".into()
    } else {
        humantime_secs(d.as_secs())
    }
}

fn humantime_secs(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The skills' durable consumers: explicit acks, and one `ack_wait` and
/// `max_deliver` across them (every process of a swarm must agree).
async fn check_consumers(js: &jetstream::Context) -> Check {
    let name = "consumers";
    let stream = match js.get_stream(wire::STREAM_TASKS).await {
        Ok(s) => s,
        Err(e) => return Check::new(name, Level::Fail, format!("stream unreadable: {e}")),
    };
    let mut consumers = stream.consumers();
    let mut settings = std::collections::BTreeSet::new();
    let mut count = 0usize;
    let mut bad = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = match info {
            Ok(i) => i,
            Err(e) => return Check::new(name, Level::Fail, format!("cannot list: {e}")),
        };
        if !info.name.starts_with("skill-") {
            continue;
        }
        count += 1;
        let c = &info.config;
        if c.ack_policy != jetstream::consumer::AckPolicy::Explicit {
            bad.push(format!("{}: ack policy {:?}", info.name, c.ack_policy));
        }
        settings.insert((c.ack_wait, c.max_deliver));
    }
    if !bad.is_empty() {
        return Check::new(name, Level::Fail, bad.join("; "));
    }
    match settings.len() {
        0 => Check::new(
            name,
            Level::Ok,
            "no skill consumer yet (a worker creates its skill's on start)",
        ),
        1 => {
            let (ack_wait, max_deliver) = settings.first().copied().unwrap_or_default();
            Check::new(
                name,
                Level::Ok,
                format!(
                    "{count} skill consumers, ack_wait {}, max_deliver {max_deliver}",
                    age(ack_wait)
                ),
            )
        }
        _ => Check::new(
            name,
            Level::Warn,
            format!(
                "skill consumers disagree on (ack_wait, max_deliver): {settings:?} \
                 (every process of a swarm must use the same --ack-wait and --max-deliver)"
            ),
        ),
    }
}
