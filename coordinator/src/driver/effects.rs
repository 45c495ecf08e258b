//! What both drivers share around the engine: the run core (engine,
//! timers, integrations) and the one interpreter of effects. A driver says
//! how to dispatch, cancel and write memory ([`Effects`]) and where events
//! come from; [`RunCore::step`] does the rest, for live events and for
//! replay alike.
//!
//! ```text
//!  event ─▶ RunCore::step(mode) ─▶ integrations see results
//!                              ─▶ engine.apply(event, at) ─▶ Vec<Effect>
//!                              ─▶ integrations observe (live): a failed gate raises CancelRequested
//!                              ─▶ interpret(mode) ─┬─ StartTimer ─▶ Timers
//!                                                  ├─ DispatchTask (hooks put on) / CancelTask ─▶ driver (live only)
//!                                                  ├─ memory ─▶ driver (replay: the run's own only)
//!                                                  └─ StageChanged ─▶ driver
//! ```
//! The two drivers differ only in their event sources and in what they do
//! before a step: the embedded one applies an event as it arrives, the
//! swarm one appends it to the run's log first (and replays the log
//! through the same step at takeover).

use std::collections::BTreeMap;

use cascade_core::engine::{Effect, Engine, Event, Millis, StageStatus, TimerId};
use cascade_core::spec::MemoryScope;
use cascade_proto::{Attempt, TaskId, TaskSpec};
use serde_json::Value;

use crate::integrations::RunIntegrations;

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
    /// A task to send, its hooks already on it; `engine` is the run's
    /// (its plan says how to route).
    fn dispatch(&mut self, spec: TaskSpec, engine: &Engine);
    fn cancel(&mut self, task: TaskId, attempt: Attempt);
    /// `PutMemory`, `DeleteMemory` or `ClearRunMemory`.
    fn memory(&mut self, effect: Effect);
    fn stage_changed(&mut self, _stage: String, _status: StageStatus, _mode: Mode) {}
    /// Every effect of a live step, before any is performed (progress).
    fn observe(&mut self, _fx: &[Effect], _engine: &Engine) {}
}

/// One run as both drivers hold it: the engine, its timers and the
/// cascade's integrations (GitHub, notifications, quality gates, hooks).
pub struct RunCore {
    pub engine: Engine,
    pub timers: Timers,
    pub ops: RunIntegrations,
    /// Events the integrations raised (a failed gate stops the run),
    /// waiting for the driver to take them as its next events.
    raised: Vec<Event>,
}

impl RunCore {
    pub fn new(engine: Engine, ops: RunIntegrations) -> Self {
        RunCore {
            engine,
            timers: Timers::default(),
            ops,
            raised: Vec::new(),
        }
    }

    /// A run with no history starts: the integrations see it (a `pending`
    /// status, `started` notifications). Its `RunStarted` is then stepped.
    pub fn started(&mut self) {
        self.ops.started();
    }

    /// Takes one event: the integrations see a result, the engine applies
    /// the event, the integrations look at its effects (live only: replay
    /// must not notify twice) and the effects are interpreted.
    pub fn step(&mut self, event: Event, at: Millis, mode: Mode, host: &mut impl Effects) {
        match &event {
            Event::TaskFinished(r) => self.ops.result(r),
            // Replayed: it fired already; live: it was taken off when due.
            Event::TimerFired(t) if mode == Mode::Replay => self.timers.forget(t),
            _ => {}
        }
        let fx = self.engine.apply(event, at);
        if mode == Mode::Live {
            let raised = self.ops.observe(&fx, &self.engine);
            self.raised.extend(raised);
            host.observe(&fx, &self.engine);
        }
        interpret(fx, mode, self, host);
    }

    /// Effects the driver made itself (a re-send after takeover), live.
    pub fn perform(&mut self, fx: Vec<Effect>, host: &mut impl Effects) {
        interpret(fx, Mode::Live, self, host);
    }

    /// Events the integrations raised since last asked, in order.
    pub fn take_raised(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.raised)
    }

    /// The timers due at `now`, as events.
    pub fn due(&mut self, now: Millis) -> Vec<Event> {
        self.timers
            .take_due(now)
            .into_iter()
            .map(Event::TimerFired)
            .collect()
    }

    /// The run's report with what the end actions did (gates, GitHub,
    /// notifications, `on_run_end` hooks, hook notes). `stored` is a report
    /// a previous owner wrote after running them: kept, so they run once.
    pub async fn finish(&mut self, stored: Option<Value>) -> Value {
        if let Some(stored) = stored.filter(|s| s.get("integrations").is_some()) {
            return stored;
        }
        let mut value = serde_json::to_value(self.engine.report()).unwrap_or(Value::Null);
        self.ops.finish(&mut value).await;
        value
    }
}

/// Interprets effects in order. Replay rebuilds state, timers and the
/// run's own memory; it sends nothing to workers (tasks in flight are
/// re-sent by the driver, only if they need it) and leaves global memory
/// alone (other runs may have written since: replaying this run's old
/// writes would undo theirs).
fn interpret(fx: Vec<Effect>, mode: Mode, core: &mut RunCore, host: &mut impl Effects) {
    let replay = mode == Mode::Replay;
    for effect in fx {
        match effect {
            Effect::StartTimer { timer, at } => core.timers.add(timer, at),
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
            Effect::DispatchTask(mut spec) => {
                core.ops.prepare(&mut spec);
                host.dispatch(*spec, &core.engine);
            }
            Effect::CancelTask { task_id, attempt } => host.cancel(task_id, attempt),
            Effect::FinishRun { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use cascade_core::engine::StageStatus;
    use cascade_core::plan::{self, PlanOptions};
    use cascade_proto::RunId;

    #[derive(Default)]
    struct Seen {
        log: Vec<String>,
    }

    const HOOKED: &str = "\
name: t
stages:
  - {stage_id: a, skill: echo}
hooks:
  pre_task: 'true'
";

    fn core_of(yaml: &str) -> RunCore {
        let files = BTreeMap::from([("main.yaml".to_owned(), yaml.to_owned())]);
        let loaded = cascade_core::spec::load_bundle("main.yaml", &files);
        let cascade = loaded.cascade.expect("loads");
        let plan = Arc::new(plan::compile(&cascade, &PlanOptions::default()));
        let setup = crate::integrations::RunSetup {
            operations: cascade.operations,
            run_id: RunId::new("r"),
            inputs: Default::default(),
            dir: std::env::temp_dir(),
            env: crate::integrations::Env::fixed([]),
            commands: true,
        };
        let ops = RunIntegrations::new(plan.clone(), setup);
        RunCore::new(Engine::new(plan), ops)
    }

    fn core() -> RunCore {
        core_of("name: t\nstages:\n  - {stage_id: a, skill: echo}\n")
    }

    #[derive(Default)]
    struct Sent(Vec<TaskSpec>);

    impl Effects for Sent {
        fn dispatch(&mut self, spec: TaskSpec, _engine: &Engine) {
            self.0.push(spec);
        }
        fn cancel(&mut self, _task: TaskId, _attempt: Attempt) {}
        fn memory(&mut self, _effect: Effect) {}
    }

    fn started() -> Event {
        Event::RunStarted {
            run_id: RunId::new("r"),
            inputs: Default::default(),
            memory: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_live_step_sends_tasks_with_the_cascades_hooks_and_a_replayed_one_sends_nothing() {
        let (mut live, mut sent) = (core_of(HOOKED), Sent::default());
        live.step(started(), 10, Mode::Live, &mut sent);
        assert_eq!(sent.0.len(), 1);
        let hooks = sent.0[0]
            .hooks
            .as_ref()
            .expect("the cascade's hooks travel on the task");
        assert_eq!(hooks.pre_task.len(), 1);
        let (mut replay, mut none) = (core_of(HOOKED), Sent::default());
        replay.step(started(), 10, Mode::Replay, &mut none);
        assert!(none.0.is_empty());
        assert!(replay.take_raised().is_empty());
        // Both engines are in the same state: the replayed one waits for
        // the same attempt.
        assert_eq!(replay.engine.in_flight_keys(), live.engine.in_flight_keys());
    }

    impl Effects for Seen {
        fn dispatch(&mut self, spec: TaskSpec, _engine: &Engine) {
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
        let (mut live, mut live_core) = (Seen::default(), core());
        interpret(effects(), Mode::Live, &mut live_core, &mut live);
        assert_eq!(live.log.len(), 3, "{:?}", live.log);
        assert_eq!(live_core.timers.next_at(), Some(5));
        let (mut replay, mut replay_core) = (Seen::default(), core());
        interpret(effects(), Mode::Replay, &mut replay_core, &mut replay);
        assert_eq!(
            replay.log.len(),
            1,
            "only the run's own memory: {:?}",
            replay.log
        );
        assert_eq!(replay_core.timers.next_at(), Some(5));
        assert_eq!(replay_core.due(4), Vec::new());
        assert_eq!(
            replay_core.due(5),
            vec![Event::TimerFired(TimerId::RunTimeout)]
        );
    }
}
