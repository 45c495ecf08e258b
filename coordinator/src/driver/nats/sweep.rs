//! The sweeper: attempts nobody will finish, sent again.
//!
//! A task is lost when it was claimed, its message is gone (a late ack
//! from a worker that had lost it deleted the redelivery) and no result
//! was written; or when it was sent to one worker (star, max_agents,
//! recovery, a lead) that is gone or draining. Only attempts in flight for
//! more than two ack windows are looked at, a bounded number per sweep,
//! each with O(1) lookups: the sweep is for stragglers, not a scan.
//!
//! The lookups are a future the run loop polls ([`Sweep`]); what it finds
//! is re-checked against the engine when it is done (the run went on
//! meanwhile) and re-sent on the mesh through the loop's I/O slot.

use std::collections::HashSet;
use std::sync::Arc;

use cascade_proto::wire::{self, Route};
use cascade_proto::{Attempt, Millis, RunId, TaskId};
use cascade_swarm::store::{ClaimKey, ResultKey};
use futures::FutureExt;

use super::Shared;
use super::state::{Driver, Send, Sweep};

/// Most straggling attempts one sweep looks at.
const SWEEP_BATCH: usize = 256;

impl Driver {
    /// Picks the stragglers and starts looking at them.
    pub(super) fn start_sweep(&mut self) -> Sweep {
        let t = self.shared.now();
        self.out.recheck_unserved(t);
        let stale_after = 2 * self.shared.stores.settings.ack_wait.as_millis() as u64;
        // Keys only: rendering every attempt in flight each sweep would cost
        // the whole fan-out every ack window.
        let in_flight: HashSet<(TaskId, Attempt)> =
            self.core.engine.in_flight_keys().into_iter().collect();
        self.out.dispatched.retain(|k, _| in_flight.contains(k));
        let mut old = Vec::new();
        for (key, sent) in self.out.dispatched.iter_mut() {
            if old.len() >= SWEEP_BATCH {
                break;
            }
            if t.saturating_sub(sent.at) > stale_after {
                // Checked: look again only after another two windows.
                sent.at = t;
                old.push((key.clone(), sent.to.clone()));
            }
        }
        check(self.shared.clone(), self.run_id.clone(), old, t).boxed()
    }

    /// Re-sends what the sweep found lost and the engine still waits for.
    pub(super) fn on_swept(&mut self, lost: Vec<(TaskId, Attempt)>, t: Millis) {
        let in_flight: HashSet<(TaskId, Attempt)> =
            self.core.engine.in_flight_keys().into_iter().collect();
        for key in lost {
            if !in_flight.contains(&key) {
                continue;
            }
            // Rendered only now, for the few that are re-sent.
            let Some(mut spec) = self.core.engine.spec_of(&key.0) else {
                continue;
            };
            crate::driver::metrics::task_reenqueued(spec.skill.as_str());
            self.core.ops.prepare(&mut spec);
            let msg_id = format!(
                "{}:{}:{}:swept{}",
                self.run_id, spec.task_id, spec.attempt, t
            );
            let subject = wire::subject_task_skill(spec.skill.as_str());
            self.out.sends.push(Send::Task {
                spec: Box::new(spec),
                subject,
                route: Route::Mesh,
                msg_id,
            });
        }
    }
}

/// Looks at each straggler: stranded (its worker gone) or orphaned (its
/// message gone and its holder dead), with no result.
async fn check(
    shared: Arc<Shared>,
    run_id: RunId,
    old: Vec<((TaskId, Attempt), Option<String>)>,
    t: Millis,
) -> (Vec<(TaskId, Attempt)>, Millis) {
    let stores = &shared.stores;
    let alive = |name: &str| worker_alive(&shared, name);
    let mut lost = Vec::new();
    for ((task_id, attempt), sent_to) in old {
        let result_key = ResultKey::new(&run_id, &task_id, attempt);
        if matches!(stores.results.get(&result_key).await, Ok(Some(_))) {
            continue; // the results watch delivers it
        }
        let claim_key = ClaimKey::attempt(&run_id, &task_id, attempt);
        let claim = stores
            .claims
            .entry(&claim_key)
            .await
            .ok()
            .flatten()
            .map(|(c, _)| c);
        // Sent to one worker (star, max_agents, recovery, a lead) that
        // is gone or draining: only its consumer could ever take it.
        let stranded = sent_to.as_deref().is_some_and(|w| !alive(w))
            && claim.as_ref().is_none_or(|c| !alive(&c.worker));
        // Claimed by its last allowed delivery, still queued, and its
        // holder dead: the server will never deliver it again, and the
        // advisory that would dead-letter it may have gone unheard (no
        // coordinator was up). Dead-letter it now.
        if let Some(c) = &claim
            && at_limit(&shared, c).await
        {
            if let Some(seq) = c.stream_seq {
                tracing::warn!(run_id = %run_id, task_id = %task_id, %attempt, stream_seq = seq, "a task at its delivery limit was never dead-lettered; doing it now");
                super::dlq::dead_letter(&shared, seq, c.delivered).await;
            }
            continue;
        }
        // Claimed, its message gone (a late ack deleted a redelivery),
        // and its holder dead: nobody will finish it.
        let orphaned = match &claim {
            Some(c) => {
                let message_exists = match c.stream_seq {
                    // On a read error, assume it is there: never re-send on doubt.
                    Some(seq) => !matches!(stores.tasks.queued(seq).await, Ok(None)),
                    None => true,
                };
                !message_exists && !alive(&c.worker)
            }
            None => false,
        };
        if stranded || orphaned {
            tracing::warn!(run_id = %run_id, task_id = %task_id, %attempt, stranded, orphaned, "re-enqueueing a task nobody will finish");
            lost.push((task_id, attempt));
        }
    }
    (lost, t)
}

/// Whether a claimed attempt's message sits at its delivery limit for
/// good: claimed by the last delivery the consumer allows, still queued,
/// and its holder gone. A read error says no: never act on doubt.
pub(super) async fn at_limit(shared: &Shared, claim: &cascade_proto::wire::Claim) -> bool {
    let stores = &shared.stores;
    let limit = u64::try_from(stores.settings.max_deliver).unwrap_or(u64::MAX);
    if claim.delivered < limit || worker_alive(shared, &claim.worker) {
        return false;
    }
    match claim.stream_seq {
        Some(seq) => matches!(stores.tasks.queued(seq).await, Ok(Some(_))),
        None => false,
    }
}

/// Whether a worker is heartbeating (as this coordinator heard it) and not
/// draining.
pub(super) fn worker_alive(shared: &Shared, name: &str) -> bool {
    let ttl_ms = shared.stores.settings.worker_ttl.as_millis() as u64;
    let now = shared.now();
    shared
        .registry
        .workers
        .get(name)
        .is_some_and(|w| !w.draining && now.saturating_sub(w.heartbeat_at) <= ttl_ms)
}
