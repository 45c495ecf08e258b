//! Whether a run still wants its tasks. When a run is cancelled or ends
//! (a failed stage stopping it), attempts still waiting in a queue must not
//! run: their side effects would happen for a run nobody follows. Workers
//! check the run's record before executing, cached for a moment so a fan-out
//! of thousands of tasks costs one read per run per second, not per task.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cascade_proto::RunId;
use cascade_swarm::store::Runs;

/// How long a run's answer is trusted.
const FRESH: Duration = Duration::from_secs(1);
/// Runs remembered at most (old ones are forgotten first).
const MAX_RUNS: usize = 4096;

#[derive(Debug, Default)]
pub struct LiveRuns {
    cache: Mutex<HashMap<RunId, (bool, Instant)>>,
}

impl LiveRuns {
    /// False only when the run's record says it is over or cancelled; any
    /// doubt (no record yet, a read error) runs the task.
    pub async fn wants(&self, runs: &dyn Runs, run: &RunId) -> bool {
        if let Some((wants, at)) = self.lookup(run)
            && at.elapsed() < FRESH
        {
            return wants;
        }
        let wants = match runs.get(run).await {
            Ok(Some(r)) => !r.state.is_final() && r.cancel_requested.is_none(),
            _ => true,
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_RUNS {
            let oldest = cache
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.remove(&k);
            }
        }
        cache.insert(run.clone(), (wants, Instant::now()));
        wants
    }

    /// Drops what is known of a run (a cancel request for it arrived): the
    /// next check reads its record again.
    pub fn forget(&self, run: &RunId) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(run);
    }

    fn lookup(&self, run: &RunId) -> Option<(bool, Instant)> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(run)
            .copied()
    }
}
