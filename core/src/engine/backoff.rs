//! Retry delays: immediate, linear (base × n) or exponential
//! (base × 2^(n-1)), capped at the maximum, with deterministic jitter.
//!
//! The engine may draw no random numbers (replay must reproduce every
//! decision), so jitter comes from a hash of the run, task and attempt:
//! spread like random, identical on replay.

use std::hash::{Hash, Hasher};

use crate::spec::{Backoff, BackoffKind};

/// Delay before retry number `n` (1 = the first retry).
pub fn delay_ms(b: &Backoff, n: u32, seed: &str) -> u64 {
    let n = n.max(1);
    let raw = match b.kind {
        BackoffKind::Immediate => return 0,
        BackoffKind::Linear => b.base_ms.saturating_mul(u64::from(n)),
        BackoffKind::Exponential => b.base_ms.saturating_mul(1u64 << (n - 1).min(40)),
    };
    let capped = raw.min(b.max_ms.max(b.base_ms));
    if !b.jitter || capped < 2 {
        return capped;
    }
    // "Equal jitter": half fixed, half spread, so delays never collapse to 0.
    let half = capped / 2;
    half + stable_hash(seed, n) % (capped - half + 1)
}

fn stable_hash(seed: &str, n: u32) -> u64 {
    // FNV-1a: stable across processes and Rust versions, unlike
    // DefaultHasher's unspecified algorithm.
    let mut h = fnv::FnvHasher::default();
    seed.hash(&mut h);
    n.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(kind: BackoffKind, jitter: bool) -> Backoff {
        Backoff {
            kind,
            base_ms: 100,
            max_ms: 1000,
            jitter,
        }
    }

    #[test]
    fn table() {
        let cases = [
            (BackoffKind::Immediate, [0, 0, 0, 0, 0]),
            (BackoffKind::Linear, [100, 200, 300, 400, 500]),
            (BackoffKind::Exponential, [100, 200, 400, 800, 1000]),
        ];
        for (kind, want) in cases {
            let got: Vec<u64> = (1..=5).map(|n| delay_ms(&b(kind, false), n, "s")).collect();
            assert_eq!(got, want, "{kind:?}");
        }
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_is_stable() {
        for n in 1..=8 {
            let plain = delay_ms(&b(BackoffKind::Exponential, false), n, "x");
            let j = delay_ms(&b(BackoffKind::Exponential, true), n, "x");
            assert!(j >= plain / 2 && j <= plain, "{n}: {j} vs {plain}");
            assert_eq!(j, delay_ms(&b(BackoffKind::Exponential, true), n, "x"));
        }
    }
}
