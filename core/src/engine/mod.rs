//! The run state machine: a deterministic function from (state, event, now)
//! to (state, effects). No I/O, no clock, no randomness: the driver passes
//! the time in, performs the effects and feeds results back as events, so
//! replaying a run's events rebuilds its state exactly.
//!
//! A stage (node) moves through:
//! ```text
//!              deps failed/cancelled ──────────────▶ Cancelled
//!              deps skipped, gate false ───────────▶ Skipped
//!   Pending ──▶ Running ──┬─ tasks / branch / block ok ─▶ Success ─┐
//!      ▲                  ├─ retries, fallback exhausted ─▶ Failed  │
//!      │                  └─ run stopped ────────────────▶ Cancelled│
//!      └──────────── repeat: loop body reset (generation + 1) ◀─────┘
//! ```
//! Every stage and task phase change goes through [`phase`]'s transition
//! functions (the task diagram is there); an illegal pair is refused,
//! counted and noted. A task attempt is fenced by its attempt number: a
//! result for any other attempt than the one in flight is ignored, counted
//! and noted.

mod backoff;
mod models;
mod nodes;
mod phase;
mod report;
mod tasks;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use cascade_eval::Context;
use cascade_proto::{Attempt, RunId, TaskId, Usage};
use serde_json::{Map, Value};

use crate::plan::{BlockId, NodeId, Plan};

pub use report::{RunReport, StageReport};
pub use types::{
    Effect, EngineNote, Event, IllegalTransition, MAX_NOTES, Millis, RunStatus, StageError,
    StageNote, StageStatus, Subject, TimerId,
};

use phase::{Settled, TaskPhase};
use report::Notes;

/// Grace beyond a task's own timeout before the engine gives up on an
/// attempt whose worker never reported (the worker enforces the timeout
/// itself; this catches a worker that vanished).
pub const TASK_TIMEOUT_GRACE_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct Engine {
    plan: Arc<Plan>,
    run_id: RunId,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
    status: Option<RunStatus>,
    run_error: Option<String>,
    nodes: Vec<NodeState>,
    /// One context per plan scope; `None` until the scope starts.
    contexts: Vec<Option<Context>>,
    memory: Map<String, Value>,
    tasks: BTreeMap<TaskId, TaskState>,
    active_blocks: BTreeSet<BlockId>,
    escalations: Vec<Value>,
    notes: Notes,
    /// Memory keys each node reads (read_keys and `${memory.k}`/bare refs).
    memory_refs: Vec<BTreeSet<String>>,
    /// Model usage of the whole run.
    usage: Usage,
    stats: Stats,
    now: Millis,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub events: u64,
    pub tasks_dispatched: u64,
    pub retries: u64,
    pub ignored_results: u64,
    /// Phase changes refused (each is also a note); absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub illegal_transitions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug)]
struct NodeState {
    status: StageStatus,
    generation: u32,
    /// Times this stage has started (loops re-run it).
    runs: u32,
    /// Loop iterations completed by a node with `repeat`.
    loop_iterations: u32,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
    tasks: Vec<TaskId>,
    /// Tasks not yet dispatched (sequential order, or waiting for a slot).
    queue: VecDeque<TaskId>,
    running: usize,
    /// Tasks of this generation that succeeded (completion is O(1)).
    done: usize,
    outputs: Option<Value>,
    error: Option<String>,
    branch_taken: Option<String>,
    /// The block a composite node waits on.
    waiting_on: Option<BlockId>,
    attempts: u32,
    models: BTreeSet<String>,
    workers: BTreeSet<String>,
    errors: Vec<String>,
    notes: Vec<StageNote>,
    /// Model usage of this stage (all generations).
    usage: Usage,
    /// Tasks outside the stage's own list: a multi-model judge, a
    /// codex-auto-fix loop.
    extra: Vec<TaskId>,
    /// Structured detail of the failure (the sandbox loop's history).
    details: Option<Value>,
}

impl NodeState {
    fn new() -> Self {
        NodeState {
            status: StageStatus::Pending,
            generation: 0,
            runs: 0,
            loop_iterations: 0,
            started_at: None,
            finished_at: None,
            tasks: Vec::new(),
            queue: VecDeque::new(),
            running: 0,
            done: 0,
            outputs: None,
            error: None,
            branch_taken: None,
            waiting_on: None,
            attempts: 0,
            models: BTreeSet::new(),
            workers: BTreeSet::new(),
            errors: Vec::new(),
            notes: Vec::new(),
            usage: Usage::default(),
            extra: Vec::new(),
            details: None,
        }
    }

    fn note(&mut self, note: StageNote) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

#[derive(Clone, Debug)]
struct TaskState {
    node: NodeId,
    /// Which skill of the stage, and which `for_each` item.
    skill_index: usize,
    item: Option<(usize, Value)>,
    /// Position among the stage's tasks (dispatch order).
    index: usize,
    skill: String,
    attempt: Attempt,
    phase: TaskPhase,
    failures_on_skill: u32,
    failures: u32,
    /// `skill` is the stage's fallback skill (taken at most once).
    used_fallback: bool,
    /// The model this task must use: fixed by a multi-model stage, or
    /// switched to after a failure. `None`: routed at each dispatch.
    model: Option<String>,
    /// Models its attempts were sent to, in order.
    tried_models: Vec<String>,
    /// The model and budget the current attempt was sent with.
    sent: Option<(Option<String>, Option<cascade_proto::TaskBudget>)>,
    role: TaskRole,
}

impl TaskState {
    /// A task not yet dispatched; `at` is (skill index, `for_each` item,
    /// position among the stage's tasks).
    fn new(
        node: NodeId,
        at: (usize, Option<(usize, Value)>, usize),
        skill: &str,
        model: Option<String>,
        role: TaskRole,
    ) -> Self {
        let (skill_index, item, index) = at;
        TaskState {
            node,
            skill_index,
            item,
            index,
            skill: skill.to_owned(),
            attempt: Attempt(0),
            phase: TaskPhase::Pending,
            failures_on_skill: 0,
            failures: 0,
            used_fallback: false,
            model,
            sent: None,
            tried_models: Vec::new(),
            role,
        }
    }

    fn is_in_flight(&self) -> bool {
        self.phase == TaskPhase::InFlight
    }

    /// Its outputs, once it is done.
    fn outputs(&self) -> Option<&Value> {
        match &self.phase {
            TaskPhase::Done(outputs) => Some(outputs),
            _ => None,
        }
    }
}

/// What a task is for.
#[derive(Clone, Debug, PartialEq)]
enum TaskRole {
    /// One of the stage's own tasks.
    Stage,
    /// Judges a multi-model stage's answers; inputs fixed at creation.
    Judge { inputs: Map<String, Value> },
    /// A codex-auto-fix loop for a failed task, which is retried after it.
    Fix {
        for_task: TaskId,
        inputs: Map<String, Value>,
    },
}

impl Engine {
    pub fn new(plan: Arc<Plan>) -> Self {
        let memory_refs = nodes::memory_refs(&plan);
        Engine {
            nodes: vec![NodeState::new(); plan.nodes.len()],
            contexts: vec![None; plan.scopes.len()],
            plan,
            run_id: RunId::new(""),
            started_at: None,
            finished_at: None,
            status: None,
            run_error: None,
            memory: Map::new(),
            tasks: BTreeMap::new(),
            active_blocks: BTreeSet::new(),
            escalations: Vec::new(),
            notes: Notes::default(),
            memory_refs,
            usage: Usage::default(),
            stats: Stats::default(),
            now: 0,
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    pub fn status(&self) -> Option<RunStatus> {
        self.status
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_some()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Attempts dispatched and not yet reported (a recovering driver sends
    /// them again; fencing makes that safe). Renders every one: use
    /// [`Engine::in_flight_keys`] to just look.
    pub fn in_flight(&self) -> Vec<cascade_proto::TaskSpec> {
        self.in_flight_keys()
            .into_iter()
            .filter_map(|(id, _)| self.spec_of(&id))
            .collect()
    }

    /// The attempts in flight, cheaply: task id and attempt number.
    pub fn in_flight_keys(&self) -> Vec<(TaskId, Attempt)> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.is_in_flight())
            .map(|(id, t)| (id.clone(), t.attempt))
            .collect()
    }

    /// One attempt's wire form, rendered now (for re-sending it).
    pub fn spec_of(&self, id: &TaskId) -> Option<cascade_proto::TaskSpec> {
        self.task_spec(id).and_then(Result::ok)
    }

    /// Whether a result would be acted on (its attempt is the one in
    /// flight); drivers skip logging results that would be ignored.
    pub fn accepts(&self, r: &cascade_proto::TaskResult) -> bool {
        self.status.is_none()
            && self
                .tasks
                .get(&r.task_id)
                .is_some_and(|t| t.is_in_flight() && t.attempt == r.attempt)
    }

    /// Applies one event at time `now` and returns what the driver must do.
    /// Never panics; an event that does not fit the state is ignored and
    /// noted.
    pub fn apply(&mut self, event: Event, now: Millis) -> Vec<Effect> {
        self.now = now.max(self.now);
        self.stats.events += 1;
        let mut fx = Vec::new();
        if self.status.is_some() {
            if matches!(event, Event::TaskFinished(_)) {
                self.stats.ignored_results += 1;
            }
            self.note(EngineNote::AfterFinish);
            return fx;
        }
        match event {
            Event::RunStarted {
                run_id,
                inputs,
                memory,
            } => self.start(run_id, inputs, memory, &mut fx),
            Event::TaskFinished(result) => self.task_finished(result, &mut fx),
            Event::TimerFired(timer) => self.timer_fired(timer, &mut fx),
            Event::CancelRequested { reason } => {
                self.stop(format!("cancelled: {reason}"), &mut fx);
            }
        }
        if self.started_at.is_some() && self.status.is_none() {
            self.advance(&mut fx);
        }
        fx
    }

    fn start(
        &mut self,
        run_id: RunId,
        inputs: Map<String, Value>,
        memory: Map<String, Value>,
        fx: &mut Vec<Effect>,
    ) {
        if self.started_at.is_some() {
            self.note(EngineNote::StartedTwice);
            return;
        }
        self.run_id = run_id;
        self.started_at = Some(self.now);
        self.memory = memory;
        let plan = self.plan.clone();
        let inputs = nodes::with_defaults(&plan.scopes[0].inputs, inputs);
        self.contexts[0] = Some(self.new_context(0, inputs));
        if let Some(t) = plan.timeout {
            fx.push(Effect::StartTimer {
                timer: TimerId::RunTimeout,
                at: self.now + t.as_millis() as u64,
            });
        }
        self.active_blocks.insert(plan.root);
    }

    fn new_context(&self, scope: usize, inputs: Map<String, Value>) -> Context {
        let s = &self.plan.scopes[scope];
        let meta = serde_json::json!({"name": s.cascade, "version": s.version, "run_id": self.run_id.as_str()});
        let mut ctx = Context::new(
            Value::Object(inputs),
            Value::Object(self.memory.clone()),
            meta,
        );
        ctx.set_var("timestamp", Value::String(report::rfc3339(self.now)));
        ctx
    }

    /// Starts every stage whose dependencies are settled and completes
    /// composites whose block is done, until nothing changes.
    fn advance(&mut self, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        loop {
            let mut progressed = false;
            let blocks: Vec<BlockId> = self.active_blocks.iter().copied().collect();
            for b in blocks {
                for &n in &plan.blocks[b].nodes {
                    if self.status.is_some() {
                        return;
                    }
                    if self.nodes[n].status != StageStatus::Pending {
                        continue;
                    }
                    let deps = &plan.nodes[n].deps;
                    if deps.iter().any(|&d| !self.nodes[d].status.is_terminal()) {
                        continue;
                    }
                    progressed = true;
                    if let Some(&d) = deps.iter().find(|&&d| {
                        matches!(
                            self.nodes[d].status,
                            StageStatus::Failed | StageStatus::Cancelled
                        )
                    }) {
                        let msg =
                            format!("dependency `{}` did not succeed", plan.nodes[d].local_id);
                        self.settle(n, Settled::Cancelled, Some(msg), fx);
                    } else if let Some(&d) = deps
                        .iter()
                        .find(|&&d| self.nodes[d].status == StageStatus::Skipped)
                    {
                        let msg = format!("dependency `{}` was skipped", plan.nodes[d].local_id);
                        self.settle(n, Settled::Skipped, Some(msg), fx);
                    } else {
                        self.start_node(n, fx);
                    }
                }
                if self.block_done(b)
                    && let Some(owner) = plan.blocks[b].owner
                    && self.nodes[owner].status == StageStatus::Running
                    && self.nodes[owner].waiting_on == Some(b)
                {
                    self.active_blocks.remove(&b);
                    self.complete_composite(owner, b, fx);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        if self.block_done(plan.root) && self.status.is_none() {
            self.finish(fx);
        }
    }

    fn block_done(&self, b: BlockId) -> bool {
        self.plan.blocks[b]
            .nodes
            .iter()
            .all(|&n| self.nodes[n].status.is_terminal())
    }

    /// The run ended on its own: every top-level stage is settled.
    fn finish(&mut self, fx: &mut Vec<Effect>) {
        let failed: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].status == StageStatus::Failed)
            .collect();
        let status = if failed.is_empty() {
            RunStatus::Success
        } else if failed
            .iter()
            .all(|&n| self.plan.nodes[n].error.continue_on_failure == Some(true))
        {
            RunStatus::Partial
        } else {
            RunStatus::Failed
        };
        if let Some(&n) = failed.first() {
            self.run_error
                .get_or_insert_with(|| format!("stage `{}` failed", self.plan.nodes[n].id));
        }
        self.end(status, fx);
    }

    /// Stops the run now: in-flight attempts are cancelled, unsettled
    /// stages become `cancelled`.
    fn stop(&mut self, reason: String, fx: &mut Vec<Effect>) {
        if self.started_at.is_none() {
            self.started_at = Some(self.now);
        }
        self.run_error.get_or_insert(reason.clone());
        self.cancel_all(&reason, fx);
        self.end(RunStatus::Failed, fx);
    }

    fn cancel_all(&mut self, reason: &str, fx: &mut Vec<Effect>) {
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.phase.is_live())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.cancel_task(&id, fx);
        }
        for n in 0..self.nodes.len() {
            if !self.nodes[n].status.is_terminal()
                && (self.nodes[n].status == StageStatus::Running || self.node_reachable(n))
            {
                self.settle(n, Settled::Cancelled, Some(reason.to_owned()), fx);
            }
        }
    }

    /// Stops a task that may still do something; an attempt in flight is
    /// cancelled on its worker.
    fn cancel_task(&mut self, id: &TaskId, fx: &mut Vec<Effect>) {
        let Some(t) = self.tasks.get(id) else {
            return;
        };
        if !t.phase.is_live() {
            return;
        }
        let (was_in_flight, attempt) = (t.is_in_flight(), t.attempt);
        if self.task_to(id, TaskPhase::Cancelled) && was_in_flight {
            fx.push(Effect::CancelTask {
                task_id: id.clone(),
                attempt,
            });
        }
    }

    /// The one place a task's phase changes: legal pairs are applied,
    /// illegal ones refused and noted. Returns whether it moved.
    fn task_to(&mut self, id: &TaskId, to: TaskPhase) -> bool {
        let Some(t) = self.tasks.get_mut(id) else {
            return false;
        };
        match phase::task_transition(id, &t.phase, &to) {
            Ok(()) => {
                t.phase = to;
                true
            }
            Err(e) => {
                self.illegal(e);
                false
            }
        }
    }

    /// The one place a stage's status changes (see [`Engine::task_to`]).
    fn stage_to(&mut self, n: NodeId, to: StageStatus) -> bool {
        let ok = self.stage_may(n, to);
        if ok {
            self.nodes[n].status = to;
        }
        ok
    }

    /// Whether a stage could move to `to` now, checked before the work
    /// that leads there; a refusal is noted like any other.
    fn stage_may(&mut self, n: NodeId, to: StageStatus) -> bool {
        let from = self.nodes[n].status;
        match phase::stage_transition(&self.plan.nodes[n].id, from, to) {
            Ok(()) => true,
            Err(e) => {
                self.illegal(e);
                false
            }
        }
    }

    fn illegal(&mut self, e: IllegalTransition) {
        self.stats.illegal_transitions += 1;
        self.note(EngineNote::IllegalTransition(e));
    }

    /// Whether a pending node could still have run (its block is active or
    /// would have been): branches not taken are already skipped.
    fn node_reachable(&self, n: NodeId) -> bool {
        let b = self.plan.nodes[n].block;
        self.active_blocks.contains(&b)
            || self.plan.blocks[b]
                .owner
                .is_none_or(|o| !self.nodes[o].status.is_terminal())
    }

    fn end(&mut self, status: RunStatus, fx: &mut Vec<Effect>) {
        self.status = Some(status);
        self.finished_at = Some(self.now);
        if self.plan.memory.cleanup_on_exit {
            fx.push(Effect::ClearRunMemory);
        }
        fx.push(Effect::FinishRun { status });
    }

    fn note(&mut self, note: EngineNote) {
        self.notes.push(note);
    }

    fn ctx_mut(&mut self, scope: usize) -> &mut Context {
        if self.contexts[scope].is_none() {
            let ctx = self.new_context(scope, Map::new());
            self.contexts[scope] = Some(ctx);
        }
        self.contexts[scope].as_mut().expect("created just above")
    }
}

#[cfg(test)]
mod tests;
