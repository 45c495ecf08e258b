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
//! A task message carries its attempt's grant; a claim made with it
//! carries a proof ([`grant::claim_proof`]) bound to the claimed delivery.
//! A claim on the attempt without a valid proof was written by someone who
//! was never delivered it: it counts for nothing and is overwritten (and
//! reported as a security event), at the claim and at every touch.
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

use cascade_proto::PROTOCOL_VERSION;
use cascade_proto::wire::Claim;
use cascade_swarm::grant;
use cascade_swarm::store::{ClaimKey, Claims, Delivery, Position};

use super::RunnerError;

/// How many times a claim is retried when concurrent writers keep moving
/// the revision under us (each retry re-reads, so this only bounds a livelock).
const CLAIM_RETRIES: usize = 8;

/// This worker's hold on one delivery of one message.
#[derive(Clone)]
pub(crate) struct Fence<'a> {
    claims: &'a dyn Claims,
    pub key: ClaimKey,
    /// Our claim as written, and the revision of our last write of it.
    claim: Claim,
    revision: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The attempt's grant, when the message had one.
    grant: Option<String>,
}

/// Whether a stored claim counts: proven with the grant (any claim counts
/// for a message without one).
fn counts(grant: Option<&str>, key: &ClaimKey, claim: &Claim) -> bool {
    let ok = grant.is_none_or(|g| grant::claim_ok(g, claim));
    if !ok {
        cascade_swarm::ops::security_event(
            "forged_claim",
            key.as_str(),
            "no proof of delivery: overwritten",
        );
    }
    ok
}

impl std::fmt::Debug for Fence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("key", &self.key)
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

/// The delivery a claim names (a claim that cannot be read comes back as
/// the oldest possible one).
fn position_of(c: &Claim) -> Position {
    Position {
        stream_seq: c.stream_seq.unwrap_or(0),
        delivered: c.delivered,
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
    claims: &'a dyn Claims,
    key: ClaimKey,
    worker: &str,
    mine: Position,
    grant: Option<&str>,
) -> Result<Claimed<'a>, RunnerError> {
    let record = Claim {
        v: PROTOCOL_VERSION,
        worker: worker.to_owned(),
        delivered: mine.delivered,
        at: now_ms(),
        stream_seq: Some(mine.stream_seq),
        proof: grant.map(|g| grant::claim_proof(g, worker, mine.delivered, mine.stream_seq)),
    };
    let fence = |revision: u64| Fence {
        claims,
        key: key.clone(),
        claim: record.clone(),
        revision: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(revision)),
        grant: grant.map(str::to_owned),
    };
    for _ in 0..CLAIM_RETRIES {
        if let Some(rev) = claims.create(&key, &record).await? {
            return Ok(Claimed::Won(fence(rev)));
        }
        let Some((stored, revision)) = claims.entry(&key).await? else {
            continue; // removed in between: create again
        };
        // A claim that cannot be read comes back as the oldest holder.
        let (holder, their) = (stored.worker.clone(), position_of(&stored));
        if holder == worker && their == mine {
            return Ok(Claimed::Won(fence(revision)));
        }
        if their >= mine && counts(grant, &key, &stored) {
            return Ok(Claimed::Lost {
                holder,
                delivered: their.delivered,
            });
        }
        if let Some(rev) = claims.update(&key, &record, revision).await? {
            return Ok(Claimed::Won(fence(rev)));
        }
    }
    Err(RunnerError::ClaimContended {
        key: key.to_string(),
    })
}

impl Fence<'_> {
    /// Whether the claim still names this worker and this delivery: a
    /// compare-and-set touch against our own last revision, authoritative
    /// where a read could be stale.
    pub async fn still_ours(&self) -> Result<bool, RunnerError> {
        use std::sync::atomic::Ordering;
        let rev = self.revision.load(Ordering::Acquire);
        if let Some(new) = self.claims.update(&self.key, &self.claim, rev).await? {
            self.revision.store(new, Ordering::Release);
            return Ok(true);
        }
        // Someone wrote since: a newer delivery, or a forgery to take back.
        let Some((stored, theirs)) = self.claims.entry(&self.key).await? else {
            return Ok(false);
        };
        if counts(self.grant.as_deref(), &self.key, &stored) {
            return Ok(false);
        }
        match self.claims.update(&self.key, &self.claim, theirs).await? {
            Some(new) => {
                self.revision.store(new, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Acks (waiting for the server's confirmation) if the claim is still
    /// ours; returns whether it acted.
    pub async fn ack(&self, msg: &Delivery) -> Result<bool, RunnerError> {
        if !self.still_ours().await? {
            return Ok(false);
        }
        msg.ack().await?;
        Ok(true)
    }

    /// Naks with `delay` if the claim is still ours.
    pub async fn nak(&self, msg: &Delivery, delay: Duration) -> Result<bool, RunnerError> {
        if !self.still_ours().await? {
            return Ok(false);
        }
        msg.nak(delay).await?;
        Ok(true)
    }

    /// Extends the ack window if the claim is still ours.
    pub async fn progress(&self, msg: &Delivery) -> Result<bool, RunnerError> {
        if !self.still_ours().await? {
            return Ok(false);
        }
        msg.progress().await?;
        Ok(true)
    }
}
