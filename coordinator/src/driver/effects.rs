//! What both drivers share around the engine: the timers, and the one
//! interpreter of effects. A driver says how to dispatch, cancel and
//! write memory ([`Effects`]); [`interpret`] decides which effect needs
//! what, for live events and for replay alike.
//!
//! ```text
//!  engine.apply(event, now) ─▶ Vec<Effect> ─▶ interpret(mode) ─┬─ StartTimer ─▶ Timers
//!                                                              ├─ DispatchTask / CancelTask ─▶ driver (live only)
//!                                                              ├─ memory ─▶ driver (replay: the run's own only)
//!                                                              └─ StageChanged ─▶ driver
//! ```

use std::collections::BTreeMap;

use cascade_core::engine::{Effect, Millis, StageStatus, TimerId};
use cascade_core::spec::MemoryScope;
use cascade_proto::{Attempt, TaskId, TaskSpec};

/// Pending timers, keyed by (due time, sequence) so equal times keep
/// their order.
#[derive(Debug, Default)]
pub struct Timers {
    due: BTreeMap<(Millis, u64), TimerId>,
    seq: u64,
}

impl Timers {
    pub fn add(&mut self, timer: TimerId, at: Millis) {
        self.seq += 1;
        self.due.insert((at, self.seq), timer);
    }

    /// When the next timer is due.
    pub fn next_at(&self) -> Option<Millis> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// Every timer due at `now`, in order.
    pub fn take_due(&mut self, now: Millis) -> Vec<TimerId> {
        let keys: Vec<(Millis, u64)> = self
            .due
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.due.remove(&k))
            .collect()
    }

    /// The first timer, due or not.
    pub fn pop_first(&mut self) -> Option<TimerId> {
        self.due.pop_first().map(|(_, t)| t)
    }

    /// Forgets a timer that fired (replay).
    pub fn forget(&mut self, timer: &TimerId) {
        self.due.retain(|_, pending| pending != timer);
    }
}

/// Whether effects come from live events or from replaying a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

/// What a driver does for the effects that need I/O.
pub trait Effects {
    fn timers(&mut self) -> &mut Timers;
    fn dispatch(&mut self, spec: TaskSpec);
    fn cancel(&mut self, task: TaskId, attempt: Attempt);
    /// `PutMemory`, `DeleteMemory` or `ClearRunMemory`.
    fn memory(&mut self, effect: Effect);
    fn stage_changed(&mut self, _stage: String, _status: StageStatus, _mode: Mode) {}
}

/// Interprets effects in order. Replay rebuilds state, timers and the
/// run's own memory; it sends nothing to workers (tasks in flight are
/// re-sent by the driver, only if they need it) and leaves global memory
/// alone (other runs may have written since: replaying this run's old
/// writes would undo theirs).
pub fn interpret(fx: Vec<Effect>, mode: Mode, host: &mut impl Effects) {
    let replay = mode == Mode::Replay;
    for effect in fx {
        match effect {
            Effect::StartTimer { timer, at } => host.timers().add(timer, at),
            Effect::StageChanged { stage, status, .. } => host.stage_changed(stage, status, mode),
            Effect::PutMemory {
                scope: MemoryScope::Global,
                ..
            }
            | Effect::DeleteMemory {
                scope: MemoryScope::Global,
                ..
            } if replay => {}
            Effect::PutMemory { .. } | Effect::DeleteMemory { .. } | Effect::ClearRunMemory => {
                host.memory(effect)
            }
            Effect::DispatchTask(_) | Effect::CancelTask { .. } if replay => {}
            Effect::DispatchTask(spec) => host.dispatch(*spec),
            Effect::CancelTask { task_id, attempt } => host.cancel(task_id, attempt),
            Effect::FinishRun { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::engine::StageStatus;

    #[derive(Default)]
    struct Seen {
        timers: Timers,
        log: Vec<String>,
    }

    impl Effects for Seen {
        fn timers(&mut self) -> &mut Timers {
            &mut self.timers
        }
        fn dispatch(&mut self, spec: TaskSpec) {
            self.log.push(format!("dispatch {}", spec.task_id));
        }
        fn cancel(&mut self, task: TaskId, _attempt: Attempt) {
            self.log.push(format!("cancel {task}"));
        }
        fn memory(&mut self, effect: Effect) {
            self.log
                .push(format!("memory {effect:?}").chars().take(24).collect());
        }
        fn stage_changed(&mut self, stage: String, _status: StageStatus, _mode: Mode) {
            self.log.push(format!("stage {stage}"));
        }
    }

    fn effects() -> Vec<Effect> {
        vec![
            Effect::StartTimer {
                timer: TimerId::RunTimeout,
                at: 5,
            },
            Effect::CancelTask {
                task_id: "t".into(),
                attempt: Attempt::FIRST,
            },
            Effect::PutMemory {
                scope: MemoryScope::Global,
                key: "g".into(),
                value: serde_json::json!(1),
            },
            Effect::PutMemory {
                scope: MemoryScope::Cascade,
                key: "c".into(),
                value: serde_json::json!(2),
            },
        ]
    }

    #[test]
    fn replay_rebuilds_timers_and_own_memory_and_sends_nothing() {
        let mut live = Seen::default();
        interpret(effects(), Mode::Live, &mut live);
        assert_eq!(live.log.len(), 3, "{:?}", live.log);
        assert_eq!(live.timers.next_at(), Some(5));
        let mut replay = Seen::default();
        interpret(effects(), Mode::Replay, &mut replay);
        assert_eq!(
            replay.log.len(),
            1,
            "only the run's own memory: {:?}",
            replay.log
        );
        assert_eq!(replay.timers.next_at(), Some(5));
        assert_eq!(replay.timers.take_due(4), Vec::new());
        assert_eq!(replay.timers.take_due(5), vec![TimerId::RunTimeout]);
    }
}
