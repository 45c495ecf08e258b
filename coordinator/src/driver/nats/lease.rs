//! Run ownership: one coordinator drives a run at a time, holding a lease
//! (the `Leases` store) that it renews by compare-and-set. A lease that is
//! not renewed expires and another coordinator takes the run over.

use std::sync::Arc;

use cascade_swarm::store::LeaseHeld;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Keeps a lease renewed from a task of its own, every third of its TTL,
/// until told to stop; `lost` fires if a renewal fails (someone else
/// holds the run now).
pub struct Keeper {
    pub lost: CancellationToken,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<LeaseHeld>,
    shared: Arc<Shared>,
}

impl Keeper {
    pub fn start(shared: Arc<Shared>, held: LeaseHeld) -> Keeper {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
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
                        let expires = sh.now() + ttl.as_millis() as u64;
                        match sh.stores.leases.renew(&mut held, &sh.opts.name, expires).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(run_id = %held.run, "lease renewal failed: another coordinator has the run");
                                l.cancel();
                                return held;
                            }
                            // A passing error: try again at the next tick,
                            // well before the lease expires.
                            Err(e) if e.is_retryable() => {
                                tracing::warn!(run_id = %held.run, error = %e, "lease renewal failed; retrying");
                            }
                            Err(e) => {
                                tracing::error!(run_id = %held.run, error = %e, "lease renewal failed; giving the run up");
                                l.cancel();
                                return held;
                            }
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
            let _ = self.shared.stores.leases.release(&held).await;
        }
    }
}
