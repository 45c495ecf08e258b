//! Engine tests: a deterministic simulator and the tests built on it.
//!
//! The [`Sim`] owns an [`Engine`], a fake clock and a queue of things due
//! later (timers from `StartTimer`, `sleep` tasks finishing). It "runs" each
//! `DispatchTask` with [`execute`], a pure function of the `TaskSpec` that
//! mimics the worker's built-in skills, and lets a test pick which ready
//! result is delivered next. No tokio, no processes, no wall clock.
//!
//! ```text
//!  test ──choose──▶ ready results ─┐
//!                                  ├─ TaskFinished ─▶ Engine::apply ─▶ effects
//!  clock ──advance─▶ later queue ──┘  TimerFired                        │
//!        ▲                                                              │
//!        └──── StartTimer / sleeping tasks ◀── DispatchTask, CancelTask ┘
//! ```
//! Every `DispatchTask` is checked against the engine's state: all of the
//! stage's dependencies must have succeeded; and no event may lead the
//! engine to an illegal phase change.

mod behaviour;
mod branches;
mod failures;
mod models;
mod props;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cascade_proto::{Failure, RunId, TaskId, TaskOutcome, TaskResult, TaskSpec};
use serde_json::{Map, Value, json};

use super::{Effect, Engine, Event, Millis, StageStatus, TimerId};
use crate::plan::{self, Plan, PlanOptions};
use crate::spec;

/// Compiles a cascade given as YAML; panics with the diagnostics if it has
/// errors (a test's cascade is meant to be valid).
pub(super) fn plan_of(yaml: &str) -> Arc<Plan> {
    let loaded = spec::load_str(Path::new("test.yaml"), yaml);
    compile_loaded(loaded)
}

pub(super) fn compile_loaded(loaded: spec::Loaded) -> Arc<Plan> {
    assert!(
        !loaded.has_errors(),
        "{}",
        loaded.render_diagnostics().join("\n")
    );
    let cascade = loaded.cascade.expect("a cascade without errors is present");
    let plan = plan::compile(&cascade, &PlanOptions::default());
    let errors: Vec<String> = plan
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.render(None))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Arc::new(plan)
}

/// What a worker would report for `spec`: (simulated run time, outcome).
///
/// `echo`: outputs = inputs; `noop`: `{}`; `fail`: fails every attempt up to
/// `times` (all of them without `times`), terminally with `terminal: true`,
/// then `{"attempt": n}`; `sleep`: `{"slept": seconds}` after `seconds`.
pub(super) fn execute(spec: &TaskSpec) -> (Millis, TaskOutcome) {
    let inputs = spec.inputs.as_object().cloned().unwrap_or_default();
    let ok = |outputs: Value| TaskOutcome::Succeeded { outputs };
    match spec.skill.as_str() {
        "echo" => (0, ok(Value::Object(inputs))),
        "noop" => (0, ok(json!({}))),
        "sleep" => {
            let secs = inputs.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
            (
                (secs * 1000.0) as Millis,
                ok(json!({ "slept": inputs["seconds"] })),
            )
        }
        "fail" => {
            let times = inputs.get("times").and_then(Value::as_u64);
            match times {
                Some(n) if u64::from(spec.attempt.0) > n => {
                    (0, ok(json!({ "attempt": spec.attempt.0 })))
                }
                _ if inputs.get("terminal") == Some(&Value::Bool(true)) => (
                    0,
                    TaskOutcome::Failed(Failure::terminal("failed on purpose")),
                ),
                _ => (
                    0,
                    TaskOutcome::Failed(Failure::retryable("failed on purpose")),
                ),
            }
        }
        // A model skill: answers `answers[model]` (default `{"text": "from
        // MODEL"}`), or fails with the class `fail[model]` names.
        "ask" => {
            let model = spec.model.clone().unwrap_or_default();
            if let Some(class) = inputs
                .get("fail")
                .and_then(|f| f.get(&model))
                .and_then(Value::as_str)
            {
                let mut f = Failure::retryable(format!("`{model}` failed: {class}"));
                f.class = serde_json::from_value(json!(class)).ok();
                if class == "auth" {
                    f.kind = cascade_proto::FailureKind::Terminal;
                }
                f.retry_after_ms = inputs.get("retry_after_ms").and_then(Value::as_u64);
                return (0, TaskOutcome::Failed(f));
            }
            let answer = inputs
                .get("answers")
                .and_then(|a| a.get(&model))
                .cloned()
                .unwrap_or_else(|| json!({ "text": format!("from {model}") }));
            (0, ok(answer))
        }
        // The judge picks the candidate whose output has `best: true`.
        "judge" => {
            let cands = inputs["candidates"].as_array().cloned().unwrap_or_default();
            let choice = cands
                .iter()
                .position(|c| c["output"]["best"] == json!(true))
                .unwrap_or(0);
            (
                0,
                ok(json!({"choice": choice, "reason": "the best one", "model": spec.model})),
            )
        }
        other => (
            0,
            TaskOutcome::Failed(Failure::terminal(format!("unknown skill `{other}`"))),
        ),
    }
}

pub(super) fn result_of(spec: &TaskSpec) -> (Millis, TaskResult) {
    let (took, outcome) = execute(spec);
    let result = TaskResult {
        task_id: spec.task_id.clone(),
        attempt: spec.attempt,
        worker: "sim".into(),
        duration_ms: took,
        outcome,
        // Model skills cost 100 tokens in, 50 out (input `tokens`), a cent a call.
        usage: matches!(spec.skill.as_str(), "ask" | "judge").then(|| cascade_proto::Usage {
            input_tokens: 100,
            output_tokens: spec
                .inputs
                .get("tokens")
                .and_then(Value::as_u64)
                .unwrap_or(50),
            cost_usd: 0.01,
            calls: 1,
        }),
        model: spec.model.clone(),
        notes: Vec::new(),
    };
    (took, result)
}

/// Something due at a time on the simulated clock.
#[derive(Clone, Debug)]
// A simulator's queue entry: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Later {
    Timer(TimerId),
    Result(TaskResult),
}

pub(super) struct Sim {
    pub engine: Engine,
    pub now: Millis,
    /// Results a worker has sent and the engine has not yet seen.
    pub ready: Vec<TaskResult>,
    /// Keyed by (due time, insertion order) so equal times stay FIFO.
    later: BTreeMap<(Millis, u64), Later>,
    seq: u64,
    /// Every effect, with the time it was produced.
    pub effects: Vec<(Millis, Effect)>,
    /// Every event applied, with its time: the replay log.
    pub log: Vec<(Event, Millis)>,
}

impl Sim {
    pub fn new(plan: Arc<Plan>) -> Self {
        Sim {
            engine: Engine::new(plan),
            now: 1_000_000,
            ready: Vec::new(),
            later: BTreeMap::new(),
            seq: 0,
            effects: Vec::new(),
            log: Vec::new(),
        }
    }

    pub fn of(yaml: &str) -> Self {
        Self::new(plan_of(yaml))
    }

    pub fn start(&mut self, inputs: Value) -> Vec<Effect> {
        self.start_with(inputs, json!({}))
    }

    pub fn start_with(&mut self, inputs: Value, memory: Value) -> Vec<Effect> {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.apply(Event::RunStarted {
            run_id: RunId::new("run-1"),
            inputs: obj(inputs),
            memory: obj(memory),
        })
    }

    /// Applies one event now, checks the dispatch invariant and performs the
    /// effects on the simulated world. Returns the effects.
    pub fn apply(&mut self, event: Event) -> Vec<Effect> {
        self.log.push((event.clone(), self.now));
        let fx = self.engine.apply(event, self.now);
        check_dispatches(&self.engine, &fx);
        for e in &fx {
            self.effects.push((self.now, e.clone()));
            self.perform(e);
        }
        fx
    }

    fn perform(&mut self, e: &Effect) {
        match e {
            Effect::DispatchTask(spec) => {
                let (took, result) = result_of(spec);
                if took == 0 {
                    self.ready.push(result);
                } else {
                    self.push_later(self.now + took, Later::Result(result));
                }
            }
            Effect::CancelTask { task_id, attempt } => {
                let hit = |r: &TaskResult| r.task_id == *task_id && r.attempt == *attempt;
                self.ready.retain(|r| !hit(r));
                self.later
                    .retain(|_, l| !matches!(l, Later::Result(r) if hit(r)));
            }
            Effect::StartTimer { timer, at } => {
                self.push_later((*at).max(self.now), Later::Timer(timer.clone()));
            }
            _ => {}
        }
    }

    pub(super) fn push_later(&mut self, at: Millis, what: Later) {
        self.seq += 1;
        self.later.insert((at, self.seq), what);
    }

    pub fn deliver(&mut self, result: TaskResult) -> Vec<Effect> {
        self.apply(Event::TaskFinished(result))
    }

    /// One step: deliver the ready result `choose(len)` picks, else advance
    /// the clock to the next due thing. False when nothing is left to do.
    pub fn step(&mut self, choose: &mut dyn FnMut(usize) -> usize) -> bool {
        if self.engine.is_finished() {
            return false;
        }
        if !self.ready.is_empty() {
            let i = choose(self.ready.len()) % self.ready.len();
            let r = self.ready.remove(i);
            self.deliver(r);
            return true;
        }
        let Some(((at, _), what)) = self.later.pop_first() else {
            return false;
        };
        self.now = self.now.max(at);
        match what {
            Later::Timer(t) => self.apply(Event::TimerFired(t)),
            Later::Result(r) => self.deliver(r),
        };
        true
    }

    /// Runs to the end, delivering results in the order they were sent.
    pub fn run(&mut self) -> &mut Self {
        while self.step(&mut |_| 0) {}
        self
    }

    /// Runs to the end with a delivery order drawn from `seed`.
    pub fn run_seeded(&mut self, seed: u64) -> &mut Self {
        let mut rng = XorShift(seed | 1);
        while self.step(&mut |len| (rng.next() % len as u64) as usize) {}
        self
    }

    /// Advances the clock to `at`, firing everything due by then.
    pub fn advance_to(&mut self, at: Millis) {
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > at {
                break;
            }
            let ((due, _), what) = entry.remove_entry();
            self.now = self.now.max(due);
            match what {
                Later::Timer(t) => self.apply(Event::TimerFired(t)),
                Later::Result(r) => self.deliver(r),
            };
        }
        self.now = self.now.max(at);
    }

    /// Takes the ready result of `task` (panics if there is none).
    pub fn take(&mut self, task: &str) -> TaskResult {
        let i = self
            .ready
            .iter()
            .position(|r| r.task_id.as_str() == task)
            .unwrap_or_else(|| panic!("no ready result for `{task}`: {:?}", self.ready));
        self.ready.remove(i)
    }

    pub fn status(&self, stage: &str) -> String {
        self.stage(stage)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn output(&self, stage: &str) -> Value {
        self.stage(stage)["output"].clone()
    }

    pub fn stage(&self, stage: &str) -> Value {
        self.engine
            .report()
            .stages
            .get(stage)
            .cloned()
            .unwrap_or_else(|| panic!("no stage `{stage}` in the report"))
    }

    pub fn run_status(&self) -> String {
        self.engine.report().status
    }

    /// Task ids of every dispatch so far, with their attempt numbers.
    pub fn dispatched(&self) -> Vec<(String, u32)> {
        self.effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::DispatchTask(s) => Some((s.task_id.to_string(), s.attempt.0)),
                _ => None,
            })
            .collect()
    }

    /// (task id, attempt) of every CancelTask so far.
    pub fn cancelled(&self) -> Vec<(String, u32)> {
        self.effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::CancelTask { task_id, attempt } => Some((task_id.to_string(), attempt.0)),
                _ => None,
            })
            .collect()
    }

    /// Asserts each stage's status and, when given, its output.
    pub fn expect(&self, want: &[(&str, &str, Option<Value>)]) {
        let report = self.engine.report();
        for (stage, status, output) in want {
            let got = &report.stages[*stage];
            assert_eq!(got["status"], json!(status), "stage `{stage}`: {got:#}");
            if let Some(out) = output {
                assert_eq!(&got["output"], out, "stage `{stage}` output");
            }
        }
    }
}

/// No stage is dispatched before all its dependencies succeeded, and the
/// engine never tried an illegal phase change.
pub(super) fn check_dispatches(engine: &Engine, fx: &[Effect]) {
    assert_eq!(
        engine.stats().illegal_transitions,
        0,
        "{:?}",
        engine.report().notes
    );
    let plan = engine.plan();
    for e in fx {
        let Effect::DispatchTask(spec) = e else {
            continue;
        };
        let n = plan
            .node_by_id(spec.stage_id.as_str())
            .unwrap_or_else(|| panic!("dispatch for unknown stage {}", spec.stage_id));
        for &d in &plan.nodes[n].deps {
            assert_eq!(
                engine.nodes[d].status,
                StageStatus::Success,
                "`{}` dispatched before its dependency `{}` succeeded",
                spec.task_id,
                plan.nodes[d].id
            );
        }
    }
}

/// Small deterministic generator for delivery orders.
pub(super) struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Final statuses and outputs per stage, plus the run's status: what two
/// runs of the same cascade must agree on whatever the delivery order.
pub(super) fn outcome(engine: &Engine) -> (String, BTreeMap<String, (Value, Value)>) {
    let report = engine.report();
    let stages = report
        .stages
        .iter()
        .map(|(id, s)| (id.clone(), (s["status"].clone(), s["output"].clone())))
        .collect();
    (report.status, stages)
}

pub(super) fn task_result(task: &str, attempt: u32, outcome: TaskOutcome) -> TaskResult {
    TaskResult {
        task_id: TaskId::new(task),
        attempt: cascade_proto::Attempt(attempt),
        worker: "sim".into(),
        duration_ms: 0,
        outcome,
        usage: None,
        model: None,
        notes: Vec::new(),
    }
}

pub(super) fn ok(outputs: Value) -> TaskOutcome {
    TaskOutcome::Succeeded { outputs }
}

/// Timers started so far, with the delay from when they were started.
pub(super) fn timers(sim: &Sim) -> Vec<(TimerId, Millis)> {
    sim.effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::StartTimer { timer, at } => Some((timer.clone(), at - t)),
            _ => None,
        })
        .collect()
}
