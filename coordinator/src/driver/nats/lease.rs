//! Run ownership: one coordinator drives a run at a time, holding a lease
//! (the `Leases` store) that it renews by compare-and-set. A lease whose
//! revision stays unchanged for a TTL is taken over by another coordinator
//! (`own_runs`); its holder gives the run up first (see [`Keeper`]).

use std::sync::Arc;

use tokio::time::Instant;

use cascade_swarm::store::LeaseHeld;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Keeps a lease renewed from a task of its own, every third of its TTL,
/// until told to stop; `lost` fires when the lease may be someone else's:
/// a renewal found another writer, or no renewal succeeded for a whole TTL
/// (counted on the monotonic clock from when the last successful write was
/// *sent*: an observer can only start counting once it sees that write,
/// so this process gives the run up before anyone may take it over).
pub struct Keeper {
    pub lost: CancellationToken,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<LeaseHeld>,
    shared: Arc<Shared>,
}

impl Keeper {
    /// `sent`: when the write that took the lease was sent.
    pub fn start(shared: Arc<Shared>, held: LeaseHeld, sent: Instant) -> Keeper {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let (l, s, sh) = (lost.clone(), stop.clone(), shared.clone());
        // Awaited in `finish`: never detached.
        let handle = tokio::spawn(async move {
            let mut held = held;
            let ttl = sh.opts.lease_ttl;
            let mut valid_until = sent + ttl;
            let mut tick = tokio::time::interval(ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = s.cancelled() => return held,
                    () = tokio::time::sleep_until(valid_until) => {
                        tracing::warn!(run_id = %held.run, "lease lapsed: not renewed for {ttl:?} (is the server reachable?); giving the run up");
                        l.cancel();
                        return held;
                    }
                    _ = tick.tick() => {
                        let expires = sh.now() + ttl.as_millis() as u64;
                        let sent = Instant::now();
                        let renewed = tokio::time::timeout_at(
                            valid_until,
                            sh.stores.leases.renew(&mut held, &sh.opts.name, expires),
                        );
                        match renewed.await {
                            Ok(Ok(true)) => valid_until = sent + ttl,
                            Ok(Ok(false)) => {
                                tracing::warn!(run_id = %held.run, "lease lost: another coordinator wrote it (it took the run over)");
                                l.cancel();
                                return held;
                            }
                            // A passing error: try again at the next tick,
                            // well before the lease lapses.
                            Ok(Err(e)) if e.is_retryable() => {
                                tracing::warn!(run_id = %held.run, error = %e, "lease renewal failed (server unavailable?); retrying");
                            }
                            Ok(Err(e)) => {
                                tracing::error!(run_id = %held.run, error = %e, "lease renewal failed; giving the run up");
                                l.cancel();
                                return held;
                            }
                            // Lapsed while waiting: the arm above says so.
                            Err(_) => {}
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
