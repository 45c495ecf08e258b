//! Claim fencing: acks are not fencing (NATS-NOTES.md), so a worker acts on
//! a message only while the claims bucket says it holds that delivery.
//!
//! ```text
//!  delivery n ──▶ create claim{me, n} ──ok──▶ Won
//!                       │ exists
//!                       ▼
//!                read claim{w, d} ── d == n, w == me ─▶ Won (our own write)
//!                       │ d < n
//!                       ├──▶ update(rev) ──ok──▶ Won   (newer delivery takes over)
//!                       │                └─wrong revision─▶ read again
//!                       │ d >= n (another holder)
//!                       ▼
//!                     Lost: drop the message, never ack/nak/term it
//! ```
//!
//! A delivery is ordered by `(stream_seq, delivered)`: a task re-published
//! by the coordinator's sweeper is a newer message than every delivery of
//! the old one, although its own delivery count starts again at 1.
//!
//! Before every ack, nak, term or progress the claim is *touched*
//! ([`Fence::still_ours`]): rewritten by compare-and-set against the
//! revision of this worker's own last write. A read could be stale (KV
//! buckets use direct gets, which replicas may serve late); a
//! compare-and-set cannot: it succeeds only if nobody wrote since, and a
//! newer delivery's claim silences this worker.

use cascade_swarm::clock::now_ms;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv};
use bytes::Bytes;
use cascade_proto::wire::Claim;
use cascade_proto::{PROTOCOL_VERSION, decode, encode};

use super::RunnerError;

/// How many times a claim is retried when concurrent writers keep moving
/// the revision under us (each retry re-reads, so this only bounds a livelock).
const CLAIM_RETRIES: usize = 8;

/// This worker's hold on one delivery of one message.
#[derive(Clone, Debug)]
pub(crate) struct Fence<'a> {
    claims: &'a kv::Store,
    pub key: String,
    /// Our claim as written, and the revision of our last write of it.
    bytes: Bytes,
    revision: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Which delivery of which message: ordered, newest last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Delivery {
    pub stream_seq: u64,
    pub delivered: u64,
}

impl Delivery {
    pub fn of(msg: &jetstream::Message) -> Result<Delivery, RunnerError> {
        let info = msg
            .info()
            .map_err(|e| RunnerError::nats("message info", msg.subject.as_str(), e))?;
        Ok(Delivery {
            stream_seq: info.stream_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(0),
        })
    }

    fn of_claim(c: &Claim) -> Delivery {
        Delivery {
            stream_seq: c.stream_seq.unwrap_or(0),
            delivered: c.delivered,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Claimed<'a> {
    Won(Fence<'a>),
    Lost { holder: String, delivered: u64 },
}

/// Takes the claim at `key` for delivery `delivered`, unless a newer (or
/// the same) delivery of another worker holds it.
pub(crate) async fn claim<'a>(
    claims: &'a kv::Store,
    key: String,
    worker: &str,
    mine: Delivery,
) -> Result<Claimed<'a>, RunnerError> {
    let record = Claim {
        v: PROTOCOL_VERSION,
        worker: worker.to_owned(),
        delivered: mine.delivered,
        at: now_ms(),
        stream_seq: Some(mine.stream_seq),
    };
    let bytes =
        Bytes::from(encode(&record).map_err(|e| RunnerError::nats("encode claim", &key, e))?);
    let fence = |revision: u64| Fence {
        claims,
        key: key.clone(),
        bytes: bytes.clone(),
        revision: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(revision)),
    };
    for _ in 0..CLAIM_RETRIES {
        match claims.create(&key, bytes.clone()).await {
            Ok(rev) => return Ok(Claimed::Won(fence(rev))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(RunnerError::nats("create claim", &key, e)),
        }
        let Some(entry) = claims
            .entry(key.clone())
            .await
            .map_err(|e| RunnerError::nats("read claim", &key, e))?
        else {
            continue; // removed in between: create again
        };
        // A claim we cannot read is older than any we can write.
        let stored = decode::<Claim>(&entry.value).ok();
        let (holder, their) = stored
            .map(|c| (c.worker.clone(), Delivery::of_claim(&c)))
            .unwrap_or((
                String::new(),
                Delivery {
                    stream_seq: 0,
                    delivered: 0,
                },
            ));
        if holder == worker && their == mine {
            return Ok(Claimed::Won(fence(entry.revision)));
        }
        if their >= mine {
            return Ok(Claimed::Lost {
                holder,
                delivered: their.delivered,
            });
        }
        match claims.update(&key, bytes.clone(), entry.revision).await {
            Ok(rev) => return Ok(Claimed::Won(fence(rev))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(RunnerError::nats("update claim", &key, e)),
        }
    }
    Err(RunnerError::ClaimContended { key })
}

impl Fence<'_> {
    /// Whether the claim still names this worker and this delivery: a
    /// compare-and-set touch against our own last revision, authoritative
    /// where a read could be stale.
    pub async fn still_ours(&self) -> Result<bool, RunnerError> {
        use std::sync::atomic::Ordering;
        let rev = self.revision.load(Ordering::Acquire);
        match self.claims.update(&self.key, self.bytes.clone(), rev).await {
            Ok(new) => {
                self.revision.store(new, Ordering::Release);
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(RunnerError::nats("touch claim", &self.key, e)),
        }
    }

    /// Acks (waiting for the server's confirmation) if the claim is still
    /// ours; returns whether it acted.
    pub async fn ack(&self, msg: &jetstream::Message) -> Result<bool, RunnerError> {
        if !self.still_ours().await? {
            return Ok(false);
        }
        msg.double_ack()
            .await
            .map_err(|e| RunnerError::nats("ack", &self.key, e))?;
        Ok(true)
    }

    /// Naks with `delay` if the claim is still ours.
    pub async fn nak(
        &self,
        msg: &jetstream::Message,
        delay: Duration,
    ) -> Result<bool, RunnerError> {
        self.signal(msg, AckKind::Nak(Some(delay)), "nak").await
    }

    /// Extends the ack window if the claim is still ours.
    pub async fn progress(&self, msg: &jetstream::Message) -> Result<bool, RunnerError> {
        self.signal(msg, AckKind::Progress, "progress").await
    }

    async fn signal(
        &self,
        msg: &jetstream::Message,
        kind: AckKind,
        what: &'static str,
    ) -> Result<bool, RunnerError> {
        if !self.still_ours().await? {
            return Ok(false);
        }
        msg.ack_with(kind)
            .await
            .map_err(|e| RunnerError::nats(what, &self.key, e))?;
        Ok(true)
    }
}
