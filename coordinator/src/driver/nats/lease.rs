//! Run ownership: one coordinator drives a run at a time, holding a lease
//! in KV that it renews by compare-and-set. A lease that is not renewed
//! expires and another coordinator takes the run over.

use std::time::Duration;

use async_nats::jetstream::kv;
use cascade_proto::wire::{self, Lease};
use cascade_proto::{Millis, PROTOCOL_VERSION, RunId, decode, encode};

/// A lease this process holds: the revision of its own last write is the
/// proof (reads may be stale; our write's revision is not).
#[derive(Debug)]
pub struct Held {
    pub run_id: RunId,
    key: String,
    revision: u64,
}

fn lease_bytes(owner: &str, expires_at: Millis) -> Option<bytes::Bytes> {
    encode(&Lease {
        v: PROTOCOL_VERSION,
        owner: owner.to_owned(),
        expires_at,
    })
    .ok()
    .map(Into::into)
}

/// Takes the lease of `run` if it is free or expired.
pub async fn acquire(
    bucket: &kv::Store,
    run: &RunId,
    owner: &str,
    now: Millis,
    ttl: Duration,
) -> Option<Held> {
    let key = wire::token(run.as_str());
    let value = lease_bytes(owner, now + ttl.as_millis() as u64)?;
    if let Ok(revision) = bucket.create(&key, value.clone()).await {
        return Some(Held {
            run_id: run.clone(),
            key,
            revision,
        });
    }
    let entry = bucket.entry(&key).await.ok()??;
    let current: Option<Lease> = decode(&entry.value).ok();
    let free = match &current {
        None => true, // deleted (released) or unreadable
        Some(l) => l.expires_at < now || l.owner == owner,
    };
    if !free {
        return None;
    }
    let revision = bucket.update(&key, value, entry.revision).await.ok()?;
    Some(Held {
        run_id: run.clone(),
        key,
        revision,
    })
}

impl Held {
    /// Extends the lease; fails when someone else wrote it since.
    pub async fn renew(
        &mut self,
        bucket: &kv::Store,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> bool {
        let Some(value) = lease_bytes(owner, now + ttl.as_millis() as u64) else {
            return false;
        };
        match bucket.update(&self.key, value, self.revision).await {
            Ok(rev) => {
                self.revision = rev;
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the run up at once (graceful shutdown, run finished).
    pub async fn release(self, bucket: &kv::Store) {
        let _ = bucket
            .delete_expect_revision(&self.key, Some(self.revision))
            .await;
    }
}

/// Keeps a lease renewed from a task of its own, every third of its TTL,
/// until told to stop; `lost` fires if a renewal fails (someone else
/// holds the run now).
pub struct Keeper {
    pub lost: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Held>,
    shared: std::sync::Arc<super::Shared>,
}

impl Keeper {
    pub fn start(shared: std::sync::Arc<super::Shared>, held: Held) -> Keeper {
        let lost = tokio_util::sync::CancellationToken::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let (l, s, sh) = (lost.clone(), stop.clone(), shared.clone());
        // Awaited in `finish`: never detached.
        let handle = tokio::spawn(async move {
            let mut held = held;
            let ttl = sh.opts.lease_ttl;
            let mut tick = tokio::time::interval(ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = s.cancelled() => return held,
                    _ = tick.tick() => {
                        if !held.renew(&sh.swarm.leases, &sh.opts.name, super::now_ms(), ttl).await {
                            tracing::warn!(run_id = %held.run_id, "lease renewal failed: another coordinator has the run");
                            l.cancel();
                            return held;
                        }
                    }
                }
            }
        });
        Keeper {
            lost,
            stop,
            handle,
            shared,
        }
    }

    /// Stops renewing; `release`: give the run up at once.
    pub async fn finish(self, release: bool) {
        self.stop.cancel();
        if let Ok(held) = self.handle.await
            && release
            && !self.lost.is_cancelled()
        {
            held.release(&self.shared.swarm.leases).await;
        }
    }
}
