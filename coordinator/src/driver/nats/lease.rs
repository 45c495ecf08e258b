//! Run ownership: one coordinator drives a run at a time, holding a lease
//! (the `Leases` store) that it renews by compare-and-set. A lease whose
//! revision stays unchanged for a TTL is taken over by another coordinator
//! (`own_runs`); its holder gives the run up first (see [`Keeper`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use cascade_proto::Millis;
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
    /// `sent`: when the write that took the lease was sent; `clock`: the
    /// run's clock (renewals carry it, see [`RunClock`]).
    pub fn start(shared: Arc<Shared>, held: LeaseHeld, sent: Instant, clock: RunClock) -> Keeper {
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
                        let now = clock.now(&sh);
                        let sent = Instant::now();
                        let renewed = tokio::time::timeout_at(
                            valid_until,
                            sh.stores.leases.renew(&mut held, &sh.opts.name, now, ttl),
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

/// A run's clock: this coordinator's wall clock plus an offset, so that the
/// times in the run's log and its timers stay on the base of the run's
/// first owner whatever the clocks of the machines that take it over. The
/// offset comes from the lease a takeover read (the run's clock in it
/// against ours when we saw it), and never lets the clock go back behind
/// the log's last entry.
#[derive(Clone, Debug, Default)]
pub struct RunClock(Arc<AtomicI64>);

impl RunClock {
    pub fn new(offset: i64) -> RunClock {
        RunClock(Arc::new(AtomicI64::new(offset)))
    }

    pub fn now(&self, shared: &Shared) -> Millis {
        shared
            .now()
            .saturating_add_signed(self.0.load(Ordering::Relaxed))
    }

    /// The clock is at least `at` now (a logged time): moves the offset
    /// forward if it was behind.
    pub fn not_before(&self, shared: &Shared, at: Millis) {
        let behind = i64::try_from(at).unwrap_or(i64::MAX)
            - i64::try_from(self.now(shared)).unwrap_or(i64::MAX);
        if behind > 0 {
            self.0.fetch_add(behind, Ordering::Relaxed);
        }
    }
}
