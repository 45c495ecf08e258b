//! The run's event log: replay at start, then group commits.
//!
//! ```text
//!  pending events ─▶ append (expected sequence: single writer) ─┬─ At(seq) ─▶ engine.apply ─▶ interpret ─▶ sends
//!                                                               ├─ Superseded ─▶ give the run up
//!                                                               └─ TooLarge ─▶ split in halves, in order
//! ```
//! Every write is a future in the run loop's one I/O slot ([`Io`]): the
//! loop goes on serving timers, cancels and lease loss while it runs, and
//! events that arrive meanwhile join the next entry.

use cascade_core::engine::Effect;
use cascade_proto::{Event, EventRecord, PROTOCOL_VERSION};
use cascade_swarm::store::{Appended, ClaimKey, ResultKey};
use futures::FutureExt;

use super::dispatch;
use super::state::{Done, Driver, Io, MAX_BATCH, RunError, Sent, err};
use crate::driver::effects::Mode;

impl Driver {
    /// Rebuilds the engine from the run's log, through the same
    /// interpreter as live events; returns how many entries.
    pub(super) async fn replay(&mut self) -> Result<u64, RunError> {
        let mut count = 0;
        loop {
            let next = self
                .shared
                .stores
                .events
                .next_after(&self.run_id, self.last_seq)
                .await
                .map_err(|e| err(&self.run_id, e))?;
            let Some((seq, rec)) = next else { break };
            let rec = rec.map_err(|e| err(&self.run_id, e))?;
            self.last_seq = seq;
            count += 1;
            // The run's clock never goes back behind its own log.
            self.clock.not_before(&self.shared, rec.at);
            for event in rec.events {
                self.core.step(event, rec.at, Mode::Replay, &mut self.out);
                let sends = std::mem::take(&mut self.out.sends);
                if !sends.is_empty() {
                    // The run's own memory writes, again and in order.
                    let sent = dispatch::send_all(self.shared.clone(), self.run_id.clone(), sends);
                    sent.await.map_err(|e| err(&self.run_id, e))?;
                }
            }
        }
        if count > 0 {
            tracing::info!(run_id = %self.run_id, entries = count, "replayed the run's event log");
        }
        Ok(count)
    }

    /// After a takeover: an attempt the log says is in flight is sent again
    /// only when it has no result and no live worker holds it (a claimed
    /// attempt whose holder still beats is left to it: resending would
    /// pre-empt it). Same message id: deduplicated when the first send is
    /// recent, fenced by attempt when it is not.
    pub(super) async fn resend_in_flight(&mut self) -> Result<(), RunError> {
        let mut fx = Vec::new();
        let ttl_ms = self.shared.stores.settings.worker_ttl.as_millis() as u64;
        for (task_id, attempt) in self.core.engine.in_flight_keys() {
            let key = ResultKey::new(&self.run_id, &task_id, attempt);
            if matches!(self.shared.stores.results.get(&key).await, Ok(Some(_))) {
                continue; // the watch will deliver it
            }
            let claim_key = ClaimKey::attempt(&self.run_id, &task_id, attempt);
            let claim = self
                .shared
                .stores
                .claims
                .entry(&claim_key)
                .await
                .ok()
                .flatten()
                .map(|(c, _)| c);
            let now = self.shared.now();
            // At its delivery limit with its holder gone: the advisory that
            // dead-letters it was missed (this run had no coordinator).
            if let Some(c) = &claim
                && let (true, Some(seq)) =
                    (super::sweep::at_limit(&self.shared, c).await, c.stream_seq)
            {
                super::dlq::dead_letter(&self.shared, seq, c.delivered).await;
                self.out
                    .dispatched
                    .insert((task_id, attempt), Sent { at: now, to: None });
                continue;
            }
            let held = claim.is_some_and(|c| {
                self.shared
                    .registry
                    .workers
                    .get(&c.worker)
                    .is_some_and(|w| now.saturating_sub(w.heartbeat_at) <= ttl_ms)
            });
            if held {
                self.out
                    .dispatched
                    .insert((task_id, attempt), Sent { at: now, to: None });
                continue;
            }
            if let Some(spec) = self.core.engine.spec_of(&task_id) {
                fx.push(Effect::DispatchTask(Box::new(spec)));
            }
        }
        self.core.perform(fx, &mut self.out);
        self.out.gather_batches();
        Ok(())
    }

    /// The next write, if there is one to start: sends first (they belong
    /// to entries already written), then the pending events as one entry.
    pub(super) fn next_io(&mut self) -> Option<Io> {
        if !self.out.sends.is_empty() {
            let sends = std::mem::take(&mut self.out.sends);
            let sent = dispatch::send_all(self.shared.clone(), self.run_id.clone(), sends);
            return Some(sent.map(Done::Sent).boxed());
        }
        if self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(MAX_BATCH);
        let events: Vec<Event> = self.pending.drain(..take).collect();
        Some(self.append(events))
    }

    /// Appends events to the log, expecting to be its only writer.
    fn append(&self, events: Vec<Event>) -> Io {
        let at = self.now();
        let rec = EventRecord {
            v: PROTOCOL_VERSION,
            at,
            events,
            object: None,
        };
        let (shared, run, expected) = (self.shared.clone(), self.run_id.clone(), self.last_seq);
        async move {
            let result = shared
                .stores
                .events
                .append(&run, &rec, expected, &shared.opts.name)
                .await;
            Done::Appended {
                result,
                events: rec.events,
                at,
            }
        }
        .boxed()
    }

    /// Acts on a finished write; may start the next one at once (the
    /// second half of a split entry).
    pub(super) fn on_io(&mut self, done: Done) -> Result<Option<Io>, RunError> {
        match done {
            Done::Sent(result) => result.map(|()| None).map_err(|e| err(&self.run_id, e)),
            Done::Appended { result, events, at } => {
                match result.map_err(|e| err(&self.run_id, e))? {
                    Appended::At(seq) => {
                        self.last_seq = seq;
                        for event in events {
                            self.core.step(event, at, Mode::Live, &mut self.out);
                        }
                        self.out.gather_batches();
                        // A failed quality gate stops the run: logged next.
                        self.pending.extend(self.core.take_raised());
                        Ok(None)
                    }
                    Appended::Superseded => Err(RunError::Superseded(self.run_id.clone())),
                    Appended::TooLarge => {
                        // Split the group; each half is appended (and
                        // applied) in order, before anything newer.
                        let mut first = events;
                        let second = first.split_off(first.len() / 2);
                        self.pending.splice(0..0, second);
                        Ok(Some(self.append(first)))
                    }
                }
            }
        }
    }

    /// Writes until nothing is pending (at start, before the loop runs).
    pub(super) async fn settle(&mut self) -> Result<(), RunError> {
        let mut io = self.next_io();
        while let Some(current) = io {
            let done = current.await;
            io = match self.on_io(done)? {
                Some(next) => Some(next),
                None => self.next_io(),
            };
        }
        Ok(())
    }
}
