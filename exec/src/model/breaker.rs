//! Circuit breakers, one per provider endpoint.
//!
//! ```text
//!            N consecutive transient failures
//!   Closed ───────────────────────────────────► Open(until)
//!     ▲  ▲                                        │ now >= until
//!     │  └──────── probe succeeded ──── HalfOpen ◄┘ (one probe call at a time)
//!     │                                    │
//!     └ success resets the count           └ probe failed ─► Open(now + open_for)
//! ```
//!
//! While open (or half-open with its probe in flight) calls fail fast with
//! `circuit_open` and the time left, so the coordinator can move to another model
//! instead of queueing on a provider that is down. Only transient failures (rate limits,
//! overload, 5xx, transport errors) count; a refusal or a context overflow proves the
//! endpoint is up. The state machine is pure (time is passed in); [`Breakers`] shares
//! one per endpoint behind a mutex that is never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker.
    pub threshold: u32,
    /// How long it stays open before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// How a call that passed the breaker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The endpoint answered (even with a refusal or a client error).
    Up,
    /// A transient failure: rate limit, overload, 5xx, transport.
    Down,
    /// Nothing learnt (cancelled, timed out locally, failed before sending).
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One endpoint's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    /// May a call go out now? `Err(wait)` says how long the breaker stays open.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(())
            }
            // Another caller's probe decides; try again when the breaker could reopen.
            State::HalfOpen { probing: true } => Err(self.config.open_for),
        }
    }

    /// Records how an admitted call ended.
    pub(crate) fn record(&mut self, outcome: Outcome, now: Instant) {
        self.state = match (self.state, outcome) {
            (_, Outcome::Up) => State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Down) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.threshold {
                    State::Open {
                        until: now + self.config.open_for,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { .. } | State::Open { .. }, Outcome::Down) => State::Open {
                until: now + self.config.open_for,
            },
            (State::HalfOpen { .. }, Outcome::Unknown) => State::HalfOpen { probing: false },
            (state, Outcome::Unknown) => state,
        };
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }
}

/// The breakers of one client, by endpoint.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    by_endpoint: Mutex<HashMap<String, Arc<Mutex<Breaker>>>>,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            by_endpoint: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a call to `endpoint`, or says how long its breaker stays open. The permit
    /// records [`Outcome::Unknown`] if dropped without [`Permit::record`] (a cancelled
    /// call), so a half-open breaker is never stuck waiting for a probe that is gone.
    pub(crate) fn admit(&self, endpoint: &str) -> Result<Permit, Duration> {
        let breaker = {
            let mut map = self
                .by_endpoint
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(endpoint.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Breaker::new(self.config))))
                .clone()
        };
        lock(&breaker).admit(Instant::now())?;
        Ok(Permit {
            breaker,
            recorded: false,
        })
    }
}

fn lock(b: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    // A panic while holding the lock cannot leave a half-written state: every update
    // is one assignment.
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One admitted call.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Mutex<Breaker>>,
    recorded: bool,
}

impl Permit {
    pub(crate) fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        lock(&self.breaker).record(outcome, Instant::now());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            lock(&self.breaker).record(Outcome::Unknown, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            threshold: 3,
            open_for: Duration::from_secs(30),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        for outcome in [
            Outcome::Down,
            Outcome::Down,
            Outcome::Up,
            Outcome::Down,
            Outcome::Down,
        ] {
            assert_eq!(b.admit(t0), Ok(()));
            b.record(outcome, t0);
        }
        assert!(!b.is_open(), "a success resets the count");
        assert_eq!(b.admit(t0), Ok(()));
        b.record(Outcome::Down, t0);
        assert!(b.is_open());
        assert_eq!(
            b.admit(t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(20))
        );
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(Outcome::Down, t0);
        }
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(later), Ok(()), "the probe");
        assert!(b.admit(later).is_err(), "only one probe at a time");
        b.record(Outcome::Down, later);
        assert!(b.is_open(), "a failed probe reopens");
        let later2 = later + Duration::from_secs(30);
        assert_eq!(b.admit(later2), Ok(()));
        b.record(Outcome::Up, later2);
        assert_eq!(b.admit(later2), Ok(()));
        assert_eq!(b.admit(later2), Ok(()), "closed again");
    }

    #[test]
    fn a_lost_probe_frees_the_half_open_slot() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(Outcome::Down, t0);
        }
        let later = t0 + Duration::from_secs(31);
        assert_eq!(b.admit(later), Ok(()));
        b.record(Outcome::Unknown, later);
        assert_eq!(b.admit(later), Ok(()));
    }

    #[test]
    fn dropped_permit_records_unknown() {
        let breakers = Breakers::new(BreakerConfig {
            threshold: 1,
            open_for: Duration::ZERO,
        });
        breakers.admit("e").expect("closed").record(Outcome::Down);
        let probe = breakers.admit("e").expect("half-open probe");
        assert!(breakers.admit("e").is_err());
        drop(probe);
        assert!(breakers.admit("e").is_ok());
    }
}
