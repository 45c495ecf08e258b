//! Tasks inside a stage: fan-out, dispatch with attempt numbers, results,
//! retries with backoff, fallback skills and escalation. Phase changes go
//! through `Engine::task_to` (the diagram is in `phase`).

use cascade_eval::render_value;
use cascade_proto::{
    FailureClass, FailureKind, SkillName, StageId, TaskId, TaskOutcome, TaskResult, TaskSpec,
};
use serde_json::{Map, Value};

use super::backoff::delay_ms;
use super::{
    Effect, Engine, EngineNote, StageError, StageNote, TASK_TIMEOUT_GRACE_MS, TaskPhase, TaskRole,
    TaskState, TimerId,
};
use crate::plan::{NodeId, NodeKind};
use crate::spec::ErrorStrategy;

impl Engine {
    /// Creates the stage's tasks (one per skill, or per item and skill) and
    /// dispatches as many as the stage allows.
    pub(super) fn start_tasks(&mut self, n: NodeId, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let NodeKind::Tasks {
            skills, for_each, ..
        } = &node.kind
        else {
            return;
        };
        let items: Option<Vec<Value>> = match for_each {
            None => None,
            Some(fe) => match render_value(fe, self.ctx_mut(node.scope)) {
                Ok(Value::Array(items)) => Some(items),
                Ok(other) => {
                    let msg = format!(
                        "stage `{}`: `for_each` must give a list, got {}",
                        node.local_id,
                        type_name(&other)
                    );
                    self.fail_node(n, msg, fx);
                    return;
                }
                Err(e) => {
                    let msg = self.eval_err(n, "for_each", &e);
                    self.fail_node(n, msg, fx);
                    return;
                }
            },
        };
        let generation = self.nodes[n].generation;
        let mut ids = Vec::new();
        let item_list: Vec<Option<(usize, Value)>> = match &items {
            None => vec![None],
            Some(list) => list.iter().cloned().enumerate().map(Some).collect(),
        };
        let models: Vec<Option<String>> = if node.models.is_empty() {
            vec![None]
        } else {
            node.models.iter().cloned().map(Some).collect()
        };
        for item in item_list {
            for (si, s) in skills
                .iter()
                .enumerate()
                .flat_map(|(si, s)| models.iter().map(move |m| ((si, m.clone()), s)))
            {
                let (si, model) = si;
                let index = ids.len();
                let id = if generation == 0 {
                    TaskId::new(format!("{}#{index}", node.id))
                } else {
                    TaskId::new(format!("{}#{index}@{generation}", node.id))
                };
                self.tasks.insert(
                    id.clone(),
                    TaskState::new(
                        n,
                        (si, item.clone(), index),
                        &s.skill,
                        model,
                        TaskRole::Stage,
                    ),
                );
                ids.push(id);
            }
        }
        if ids.is_empty() {
            self.succeed(n, serde_json::json!({"items": []}), fx);
            return;
        }
        self.nodes[n].tasks = ids.clone();
        self.nodes[n].queue = ids.into();
        self.pump(n, fx);
    }

    /// Dispatches queued tasks while the stage has room: one at a time for
    /// a sequential stage, up to `max_agents` for a parallel one.
    pub(super) fn pump(&mut self, n: NodeId, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let NodeKind::Tasks { parallel, .. } = &node.kind else {
            return;
        };
        let limit = if *parallel || !node.models.is_empty() {
            node.max_parallel.map_or(usize::MAX, |m| m as usize)
        } else {
            1
        };
        while self.nodes[n].running < limit {
            let Some(id) = self.nodes[n].queue.pop_front() else {
                break;
            };
            self.nodes[n].running += 1;
            if let Err(msg) = self.dispatch(&id, fx) {
                self.fail_node(n, msg, fx);
                return;
            }
        }
    }

    /// Renders a task's inputs and sends its next attempt.
    pub(super) fn dispatch(&mut self, id: &TaskId, fx: &mut Vec<Effect>) -> Result<(), StageError> {
        if !self.task_to(id, TaskPhase::InFlight) {
            return Ok(());
        }
        let Some(t) = self.tasks.get_mut(id) else {
            return Ok(());
        };
        t.attempt = t.attempt.next();
        let attempt = t.attempt;
        let n = t.node;
        // The task's own variables go on the run's context for the render
        // and come off after: no copy of the context per task.
        let vars = self.task_vars(id);
        let scope = self.plan.nodes[n].scope;
        if let Some(ctx) = self.contexts[scope].as_mut() {
            for (k, v) in &vars {
                ctx.set_var(k, v.clone());
            }
        }
        let spec = self.render_task(id);
        if let Some(ctx) = self.contexts[scope].as_mut() {
            for (k, _) in &vars {
                ctx.remove_var(k);
            }
        }
        let Some(spec) = spec else {
            return Err(StageError::TaskVanished(id.clone()));
        };
        let mut spec = spec?;
        if spec.model.is_some() {
            spec.budget = self.check_budget(n, &spec)?;
        }
        if let Some(t) = self.tasks.get_mut(id) {
            if let Some(m) = &spec.model
                && t.tried_models.last() != Some(m)
            {
                t.tried_models.push(m.clone());
            }
            // A re-send (recovery, sweeper) repeats exactly this attempt.
            t.sent = Some((spec.model.clone(), spec.budget.clone()));
        }
        let st = &mut self.nodes[n];
        st.attempts += 1;
        if let Some(m) = &spec.model {
            st.models.insert(m.clone());
        }
        self.stats.tasks_dispatched += 1;
        if let Some(ms) = spec.timeout_ms {
            fx.push(Effect::StartTimer {
                timer: TimerId::TaskTimeout {
                    task_id: id.clone(),
                    attempt,
                },
                at: self.now + ms + TASK_TIMEOUT_GRACE_MS,
            });
        }
        fx.push(Effect::DispatchTask(Box::new(spec)));
        Ok(())
    }

    /// The wire form of a task's current attempt, inputs rendered now.
    /// Variables a task adds to the context: `item`, `item_index`, `previous`.
    fn task_vars(&self, id: &TaskId) -> Vec<(&'static str, Value)> {
        let Some(t) = self.tasks.get(id) else {
            return Vec::new();
        };
        let mut vars = Vec::new();
        if let Some((i, item)) = &t.item {
            vars.push(("item", item.clone()));
            vars.push(("item_index", Value::from(*i)));
        }
        if let Some(prev) = self.previous_output(t.node, id) {
            vars.push(("previous", prev));
        }
        vars
    }

    /// The wire form of a task's current attempt, inputs rendered now, off
    /// the hot path (recovery): the context is copied to hold the task's
    /// variables.
    pub(super) fn task_spec(&self, id: &TaskId) -> Option<Result<TaskSpec, StageError>> {
        let t = self.tasks.get(id)?;
        let scope = self.plan.nodes[t.node].scope;
        let mut ctx = self.contexts[scope].clone()?;
        for (k, v) in self.task_vars(id) {
            ctx.set_var(k, v);
        }
        let mut spec = self.render_with(id, &ctx)?;
        if let (Ok(spec), Some((model, budget))) = (&mut spec, &t.sent) {
            spec.model = model.clone();
            spec.budget = budget.clone();
        }
        Some(spec)
    }

    /// Renders with the run's own context, whose task variables the caller
    /// has just set.
    fn render_task(&self, id: &TaskId) -> Option<Result<TaskSpec, StageError>> {
        let t = self.tasks.get(id)?;
        let ctx = self.contexts[self.plan.nodes[t.node].scope].as_ref()?;
        self.render_with(id, ctx)
    }

    fn render_with(
        &self,
        id: &TaskId,
        ctx: &cascade_eval::Context,
    ) -> Option<Result<TaskSpec, StageError>> {
        let t = self.tasks.get(id)?;
        let plan = &self.plan;
        let node = &plan.nodes[t.node];
        let NodeKind::Tasks { skills, .. } = &node.kind else {
            return None;
        };
        let sref = &skills[t.skill_index];
        let mut rendered = match &t.role {
            TaskRole::Judge { inputs } | TaskRole::Fix { inputs, .. } => inputs.clone(),
            TaskRole::Stage => {
                let mut inputs: Map<String, Value> = node.inputs.clone();
                for (k, v) in &sref.inputs {
                    inputs.insert(k.clone(), v.clone());
                }
                match render_value(&Value::Object(inputs), ctx) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => Map::new(),
                    Err(e) => return Some(Err(self.eval_err(t.node, "inputs", &e))),
                }
            }
        };
        if !node.memory.read_keys.is_empty() {
            let mem: Map<String, Value> = node
                .memory
                .read_keys
                .iter()
                .filter_map(|k| self.memory.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            rendered.entry("memory").or_insert(Value::Object(mem));
        }
        let (model, context) = self.task_model(t, sref, &rendered, ctx);
        // A fix loop runs many test runs: the stage's timeout bounds it,
        // not one attempt's.
        let timeout = match t.role {
            TaskRole::Fix { .. } => node.timeout,
            _ => node.task_timeout.or(node.timeout),
        };
        Some(Ok(TaskSpec {
            run_id: self.run_id.clone(),
            task_id: id.clone(),
            stage_id: StageId::new(node.id.clone()),
            skill: SkillName::new(t.skill.clone()),
            attempt: t.attempt,
            inputs: Value::Object(rendered),
            timeout_ms: timeout.map(|d| d.as_millis() as u64),
            model,
            workdir: Some(plan.scopes[node.scope].dir.display().to_string())
                .filter(|d| !d.is_empty()),
            context,
            budget: None,
            hooks: None,
        }))
    }

    /// In a sequential stage, the outputs of the task before this one.
    fn previous_output(&self, n: NodeId, id: &TaskId) -> Option<Value> {
        let pos = self.tasks.get(id)?.index;
        let prev = self.nodes[n].tasks.get(pos.checked_sub(1)?)?;
        self.tasks.get(prev)?.outputs().cloned()
    }

    pub(super) fn task_finished(&mut self, r: TaskResult, fx: &mut Vec<Effect>) {
        let Some(t) = self.tasks.get(&r.task_id) else {
            self.stats.ignored_results += 1;
            self.note(EngineNote::UnknownTask(r.task_id));
            return;
        };
        if !t.is_in_flight() || t.attempt != r.attempt {
            // Late, duplicate, or for an attempt the engine cancelled. The
            // last is routine (a sibling failed, the run was cancelled): it is
            // counted, not noted; anything else is worth a note.
            self.stats.ignored_results += 1;
            if !(t.phase == TaskPhase::Cancelled && t.attempt == r.attempt) {
                self.note(EngineNote::StaleResult(r.task_id, r.attempt));
            }
            return;
        }
        let n = t.node;
        if !r.worker.is_empty() {
            self.nodes[n].workers.insert(r.worker.clone());
        }
        if let Some(m) = &r.model {
            self.nodes[n].models.insert(m.clone());
        }
        if let Some(u) = r.usage.as_ref().filter(|u| !u.is_empty())
            && let Some(msg) = self.spend(n, u)
        {
            self.task_gave_up(&r.task_id, msg, fx);
            return;
        }
        match r.outcome {
            TaskOutcome::Succeeded { outputs } => self.task_succeeded(&r.task_id, outputs, fx),
            TaskOutcome::Failed(f) => self.task_failed(&r.task_id, f, fx),
        }
    }

    fn task_succeeded(&mut self, id: &TaskId, outputs: Value, fx: &mut Vec<Effect>) {
        if !self.task_to(id, TaskPhase::Done(outputs.clone())) {
            return;
        }
        let Some(t) = self.tasks.get(id) else {
            return;
        };
        let n = t.node;
        match t.role.clone() {
            TaskRole::Judge { .. } => return self.judged(n, &outputs, fx),
            TaskRole::Fix { for_task, .. } => return self.fixed(n, &for_task, &outputs, fx),
            TaskRole::Stage => {}
        }
        self.nodes[n].running = self.nodes[n].running.saturating_sub(1);
        self.nodes[n].done += 1;
        if !self.plan.nodes[n].models.is_empty() {
            return self.model_answered(n, id, fx);
        }
        let all_done = self.nodes[n].done >= self.nodes[n].tasks.len();
        if all_done {
            let out = self.stage_output(n);
            self.succeed(n, out, fx);
        } else {
            self.pump(n, fx);
        }
    }

    /// One task: its outputs. Several skills: each under the skill's name.
    /// `for_each`: `{"items": [...]}` in item order.
    fn stage_output(&self, n: NodeId) -> Value {
        let plan = &self.plan;
        let NodeKind::Tasks {
            skills, for_each, ..
        } = &plan.nodes[n].kind
        else {
            return Value::Null;
        };
        let outs: Vec<Value> = self.nodes[n]
            .tasks
            .iter()
            .map(|id| {
                self.tasks
                    .get(id)
                    .and_then(|t| t.outputs().cloned())
                    .unwrap_or(Value::Null)
            })
            .collect();
        let per_item = |chunk: &[Value]| -> Value {
            if chunk.len() == 1 {
                return chunk[0].clone();
            }
            let mut m = Map::new();
            for (i, v) in chunk.iter().enumerate() {
                let name = &skills[i].skill;
                let key = if m.contains_key(name) {
                    format!("{name}#{i}")
                } else {
                    name.clone()
                };
                m.insert(key, v.clone());
            }
            Value::Object(m)
        };
        if for_each.is_some() {
            let items: Vec<Value> = outs.chunks(skills.len().max(1)).map(per_item).collect();
            return serde_json::json!({ "items": items });
        }
        per_item(&outs)
    }

    fn task_failed(&mut self, id: &TaskId, f: cascade_proto::Failure, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        if !self.task_to(id, TaskPhase::Failed) {
            return;
        }
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.failures += 1;
        t.failures_on_skill += 1;
        let (n, attempt, skill, failures, on_skill, used_fallback) = (
            t.node,
            t.attempt,
            t.skill.clone(),
            t.failures,
            t.failures_on_skill,
            t.used_fallback,
        );
        let node = &plan.nodes[n];
        let eh = &node.error;
        let mut message = f.message.clone();
        if let Some(tail) = f.stderr_tail.as_deref().filter(|s| !s.trim().is_empty())
            && !message.contains(tail.trim())
        {
            message = format!("{message}\n{}", tail.trim_end());
        }
        self.nodes[n]
            .errors
            .push(format!("attempt {attempt} ({skill}): {}", f.message));

        if f.details.is_some() {
            self.nodes[n].details = f.details.as_deref().cloned();
        }
        if f.class == Some(FailureClass::Exhausted)
            && let Some(esc) = f.details.as_ref().and_then(|d| d.get("escalation"))
        {
            self.escalations.push(serde_json::json!({
                "stage_id": node.id,
                "task_id": id.as_str(),
                "error": f.message,
                "escalation": esc,
                "at": super::report::rfc3339(self.now),
            }));
        }
        if self
            .tasks
            .get(id)
            .is_some_and(|t| t.role != TaskRole::Stage)
        {
            // A judge or a fix loop that fails fails the stage.
            return self.task_gave_up(id, message, fx);
        }
        if f.kind != FailureKind::Cancelled
            && let Some((model, why)) = self.next_model(id, &f)
        {
            if let Some(t) = self.tasks.get_mut(id) {
                t.model = Some(model.clone());
            }
            self.nodes[n].note(why);
            self.stats.retries += 1;
            if let Err(msg) = self.dispatch(id, fx) {
                self.fail_node(n, msg, fx);
            }
            return;
        }
        if eh.strategy == ErrorStrategy::CodexAutoFix
            && matches!(f.kind, FailureKind::Retryable | FailureKind::Timeout)
            && self.start_fix(n, id, &f, fx)
        {
            return;
        }
        let retryable = matches!(f.kind, FailureKind::Retryable | FailureKind::Timeout);
        if let Some(limit) = eh.escalate_after
            && failures >= limit
        {
            self.escalate(n, id, failures, &f.message);
            return self.stage_task_gave_up(n, id, message, fx);
        }
        if retryable && on_skill <= eh.max_retries {
            if eh.strategy.runs_as_retry() {
                self.nodes[n].note(StageNote::RetriedInstead {
                    strategy: eh.strategy.as_str(),
                    reason: eh.strategy.retry_reason(),
                });
            }
            self.stats.retries += 1;
            let delay = delay_ms(&eh.backoff, on_skill, &format!("{}:{id}", self.run_id))
                .max(f.retry_after_ms.unwrap_or(0));
            if delay == 0 {
                if let Err(msg) = self.dispatch(id, fx) {
                    self.fail_node(n, msg, fx);
                }
            } else if self.task_to(id, TaskPhase::BackingOff) {
                fx.push(Effect::StartTimer {
                    timer: TimerId::Retry {
                        task_id: id.clone(),
                        attempt: attempt.next(),
                    },
                    at: self.now + delay,
                });
            }
            return;
        }
        if let (Some(fb), false, true, false) = (
            &eh.fallback,
            used_fallback,
            f.kind != FailureKind::Cancelled,
            eh.strategy == ErrorStrategy::ModelSwitch,
        ) {
            if let Some(t) = self.tasks.get_mut(id) {
                t.skill = fb.clone();
                t.used_fallback = true;
                t.failures_on_skill = 0;
            }
            self.nodes[n].note(StageNote::FellBack {
                to: fb.clone(),
                from: skill,
                failures: on_skill,
            });
            if let Err(msg) = self.dispatch(id, fx) {
                self.fail_node(n, msg, fx);
            }
            return;
        }
        if eh.escalation.is_some() && eh.escalate_after.is_none() {
            self.escalate(n, id, failures, &f.message);
        }
        self.stage_task_gave_up(n, id, message, fx);
    }

    /// A task that will not be tried again fails its stage.
    fn task_gave_up(&mut self, id: &TaskId, message: String, fx: &mut Vec<Effect>) {
        let Some(n) = self.tasks.get(id).map(|t| t.node) else {
            return;
        };
        if !self.task_to(id, TaskPhase::GaveUp(message.clone())) {
            return;
        }
        self.nodes[n].running = self.nodes[n].running.saturating_sub(1);
        self.fail_node(n, message, fx);
    }

    /// A stage task that will not be tried again. A multi-model stage goes
    /// on with the other models' answers; any other stage fails.
    fn stage_task_gave_up(
        &mut self,
        n: NodeId,
        id: &TaskId,
        message: String,
        fx: &mut Vec<Effect>,
    ) {
        if self.plan.nodes[n].models.is_empty() {
            return self.task_gave_up(id, message, fx);
        }
        if !self.task_to(id, TaskPhase::GaveUp(message)) {
            return;
        }
        self.nodes[n].running = self.nodes[n].running.saturating_sub(1);
        self.model_answered(n, id, fx);
    }

    fn escalate(&mut self, n: NodeId, id: &TaskId, failures: u32, error: &str) {
        let node = &self.plan.nodes[n];
        let escalation = node
            .error
            .escalation
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "human-review"}));
        self.escalations.push(serde_json::json!({
            "stage_id": node.id,
            "task_id": id.as_str(),
            "failed_attempts": failures,
            "error": error,
            "escalation": escalation,
            "at": super::report::rfc3339(self.now),
        }));
        self.nodes[n].note(StageNote::Escalated(failures));
    }

    pub(super) fn timer_fired(&mut self, timer: TimerId, fx: &mut Vec<Effect>) {
        match timer {
            TimerId::Retry { task_id, attempt } => {
                let ready = self.tasks.get(&task_id).is_some_and(|t| {
                    t.phase == TaskPhase::BackingOff && t.attempt.next() == attempt
                });
                if ready {
                    let n = self.tasks.get(&task_id).map(|t| t.node);
                    if let (Err(msg), Some(n)) = (self.dispatch(&task_id, fx), n) {
                        self.fail_node(n, msg, fx);
                    }
                }
            }
            TimerId::TaskTimeout { task_id, attempt } => {
                let live = self
                    .tasks
                    .get(&task_id)
                    .is_some_and(|t| t.is_in_flight() && t.attempt == attempt);
                if live {
                    let failure = cascade_proto::Failure::new(
                        FailureKind::Timeout,
                        "no result from the worker within the task's timeout",
                    );
                    self.task_failed(&task_id, failure, fx);
                }
            }
            TimerId::StageTimeout { stage, generation } => {
                let Some(n) = self.plan.node_by_id(&stage) else {
                    return;
                };
                if self.nodes[n].status == super::StageStatus::Running
                    && self.nodes[n].generation == generation
                {
                    let limit = self.plan.nodes[n]
                        .timeout
                        .map(|d| format!("{:.1}s", d.as_secs_f64()))
                        .unwrap_or_default();
                    self.fail_node(
                        n,
                        format!(
                            "stage `{}` timed out after {limit}",
                            self.plan.nodes[n].local_id
                        ),
                        fx,
                    );
                }
            }
            TimerId::RunTimeout => {
                let limit = self
                    .plan
                    .timeout
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_default();
                self.stop(format!("run timed out after {limit}"), fx);
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
