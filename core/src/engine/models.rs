//! AI stages in the engine: which model a task's attempt goes to (routing
//! with a token estimate, or the model it was switched to), model switches
//! after failures, multi-model stages and how their answers are selected,
//! the codex-auto-fix loop, and usage against budgets.
//!
//! Still pure: the models file travels in the plan, so replaying a run's
//! events picks the same models again.

use crate::models::estimate_tokens;
use cascade_eval::{Context, render_value};
use cascade_proto::{Failure, FailureClass, FailureKind, TaskBudget, TaskId, TaskSpec, Usage};
use serde_json::{Map, Value, json};

use super::{Effect, Engine, StageError, StageNote, TaskPhase, TaskRole, TaskState};
use crate::plan::NodeId;
use crate::routing;
use crate::spec::{ErrorStrategy, SelectMode, SkillRef, StageType};

/// Output tokens assumed for an estimate when the model sets no maximum.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;

/// The built-in skill that judges a multi-model stage's answers.
pub const JUDGE_SKILL: &str = "judge";

impl Engine {
    /// The model for a task's next attempt and, for an AI task, the
    /// context its prompt may read. A task with a fixed or switched model
    /// keeps it; otherwise the stage's (or skill's) model is routed.
    pub(super) fn task_model(
        &self,
        t: &TaskState,
        sref: &SkillRef,
        inputs: &Map<String, Value>,
        ctx: &Context,
    ) -> (Option<String>, Option<Value>) {
        let node = &self.plan.nodes[t.node];
        let requested = t.model.clone().or_else(|| match t.role {
            TaskRole::Stage | TaskRole::Fix { .. } => sref
                .model
                .clone()
                .or_else(|| node.model.clone())
                .or_else(|| (node.ty == StageType::MultiModel).then(|| "auto-select".into())),
            TaskRole::Judge { .. } => None,
        });
        let ai_skill = self.plan.model_skills.contains(&sref.skill);
        let Some(requested) = requested else {
            // A model skill with its own default model still reads the
            // context in its prompt.
            let context =
                (ai_skill && matches!(t.role, TaskRole::Stage)).then(|| ctx.as_json().clone());
            return (None, context);
        };
        // `model: ${inputs.model}`: the name is chosen by the run.
        let requested = if requested.contains("${") {
            match render_value(&Value::String(requested.clone()), ctx) {
                Ok(Value::String(s)) => s,
                Ok(other) => other.to_string(),
                Err(_) => requested,
            }
        } else {
            requested
        };
        let context = matches!(t.role, TaskRole::Stage).then(|| ctx.as_json().clone());
        if t.model.is_some() || !routing::is_router(&requested) {
            // Honoured as written; a prompt too large for it fails with
            // context_overflow on the worker and switches from there.
            return (Some(requested), context);
        }
        // The router weighs the task's own inputs: the context is there to
        // be referenced, not all of it is sent.
        let estimate = self.estimate(inputs, None);
        let sel = routing::select_with(&requested, inputs, &self.plan.models, estimate);
        (Some(sel.model), context)
    }

    /// Tokens a task's prompt may take: its inputs and the context it gets.
    fn estimate(&self, inputs: &Map<String, Value>, context: Option<&Value>) -> u64 {
        let mut text = serde_json::to_string(inputs).unwrap_or_default();
        if let Some(c) = context {
            text.push_str(&serde_json::to_string(c).unwrap_or_default());
        }
        estimate_tokens(&text)
    }

    /// What the task may still spend, or why it may not run: the smaller
    /// of the stage's and the run's remaining budgets, checked against an
    /// estimate of the attempt before it is sent.
    pub(super) fn check_budget(
        &self,
        n: NodeId,
        spec: &TaskSpec,
    ) -> Result<Option<TaskBudget>, StageError> {
        let node = &self.plan.nodes[n];
        let mut remaining: Option<TaskBudget> = None;
        let (mut tightest_tokens, mut tightest_cost) = ("", "");
        for (budget, spent, whose) in [
            (node.budget.as_ref(), &self.nodes[n].usage, "the stage's"),
            (self.plan.budget.as_ref(), &self.usage, "the run's"),
        ] {
            let Some(b) = budget else { continue };
            let r = remaining.get_or_insert_with(TaskBudget::default);
            if let Some(max) = b.max_tokens {
                let left = max.saturating_sub(spent.tokens());
                if r.max_tokens.is_none_or(|x| left < x) {
                    r.max_tokens = Some(left);
                    tightest_tokens = whose;
                }
            }
            if let Some(max) = b.max_cost_usd {
                let left = (max - spent.cost_usd).max(0.0);
                if r.max_cost_usd.is_none_or(|x| left < x) {
                    r.max_cost_usd = Some(left);
                    tightest_cost = whose;
                }
            }
        }
        let Some(r) = remaining else {
            return Ok(None);
        };
        let Some(model) = spec.model.as_deref() else {
            return Ok(Some(r));
        };
        let inputs = spec.inputs.as_object().cloned().unwrap_or_default();
        let input_tokens = self.estimate(&inputs, None);
        let def = self.plan.models.get(model);
        let output_tokens = def
            .and_then(|d| d.max_output)
            .unwrap_or(DEFAULT_OUTPUT_ESTIMATE)
            .min(DEFAULT_OUTPUT_ESTIMATE);
        let tokens = input_tokens + output_tokens;
        let cost = def.map_or(0.0, |d| d.cost(input_tokens, output_tokens));
        let stage = &node.local_id;
        if let Some(left) = r.max_tokens
            && tokens > left
        {
            return Err(StageError::TokenBudget {
                stage: stage.clone(),
                model: model.to_owned(),
                tokens,
                left,
                whose: tightest_tokens,
            });
        }
        if let Some(left) = r.max_cost_usd
            && cost > left
        {
            return Err(StageError::CostBudget {
                stage: stage.clone(),
                model: model.to_owned(),
                cost,
                left,
                whose: tightest_cost,
            });
        }
        Ok(Some(r))
    }

    /// Adds an attempt's usage to its stage and the run; says why the
    /// stage must fail when that passes a budget.
    pub(super) fn spend(&mut self, n: NodeId, u: &Usage) -> Option<String> {
        self.nodes[n].usage.add(u);
        self.usage.add(u);
        let node = &self.plan.nodes[n];
        let stage = &node.local_id;
        for (budget, spent, whose) in [
            (node.budget.as_ref(), &self.nodes[n].usage, "stage"),
            (self.plan.budget.as_ref(), &self.usage, "run"),
        ] {
            let Some(b) = budget else { continue };
            if let Some(max) = b.max_tokens
                && spent.tokens() > max
            {
                return Some(format!(
                    "budget exceeded: stage `{stage}` brought the {whose} to {} tokens, over its max_tokens of {max}",
                    spent.tokens()
                ));
            }
            if let Some(max) = b.max_cost_usd
                && spent.cost_usd > max
            {
                return Some(format!(
                    "budget exceeded: stage `{stage}` brought the {whose} to ${:.4}, over its max_cost_usd of ${max:.4}",
                    spent.cost_usd
                ));
            }
        }
        None
    }

    /// The model to switch a failed task to, and why: a context overflow
    /// moves to a model with a larger context whatever the strategy;
    /// `model-switch` walks the fallback chain on failures another model
    /// may not repeat. A model of a multi-model stage is never switched.
    pub(super) fn next_model(&self, id: &TaskId, f: &Failure) -> Option<(String, StageNote)> {
        let t = self.tasks.get(id)?;
        let node = &self.plan.nodes[t.node];
        if !node.models.is_empty() || t.role != TaskRole::Stage {
            return None;
        }
        let current = t.tried_models.last()?;
        let catalog = &self.plan.models;
        let untried = |m: &String| !t.tried_models.contains(m);
        if f.class == Some(FailureClass::ContextOverflow) {
            let needed = catalog.get(current).map_or(0, |d| d.context) + 1;
            if let Some(m) = catalog
                .larger_context_than(current, needed)
                .filter(|m| untried(m))
            {
                let why = StageNote::LargerContext {
                    from: current.clone(),
                    to: m.clone(),
                };
                return Some((m, why));
            }
        }
        if node.error.strategy != ErrorStrategy::ModelSwitch
            || f.kind == FailureKind::Cancelled
            || matches!(f.class, Some(FailureClass::Auth | FailureClass::Budget))
            || f.class.is_some_and(|c| !c.switches_model())
        {
            return None;
        }
        let mut chain: Vec<String> = Vec::new();
        if let Some(fb) = &node.error.fallback
            && catalog.get(fb).is_some()
        {
            chain.push(fb.clone());
            chain.extend(catalog.fallback_chain(fb));
        }
        chain.extend(catalog.fallback_chain(current));
        let next = chain.into_iter().find(|m| untried(m))?;
        let cause = f.class.map_or("failed", FailureClass::as_str);
        let why = StageNote::ModelSwitched {
            from: current.clone(),
            cause,
            to: next.clone(),
        };
        Some((next, why))
    }

    /// A multi-model stage's task answered or was given up on: `first`
    /// takes the first answer; the other modes wait for every model.
    pub(super) fn model_answered(&mut self, n: NodeId, id: &TaskId, fx: &mut Vec<Effect>) {
        let node = &self.plan.nodes[n];
        let mode = node.select.as_ref().map_or(SelectMode::All, |s| s.mode);
        let answered = self.tasks.get(id).is_some_and(|t| t.outputs().is_some());
        if mode == SelectMode::First && answered {
            let out = self.answer_of(id);
            self.cancel_node_tasks(n, fx);
            return self.succeed(n, out, fx);
        }
        let settled = self.nodes[n].tasks.iter().all(|t| {
            self.tasks
                .get(t)
                .is_none_or(|t| matches!(t.phase, TaskPhase::Done(_) | TaskPhase::GaveUp(_)))
        });
        if !settled {
            // `max_agents` may hold models back: send the next.
            return self.pump(n, fx);
        }
        let (answers, failed) = self.answers(n);
        if answers.is_empty() {
            let all: Vec<String> = failed.iter().map(|(m, e)| format!("{m}: {e}")).collect();
            return self.fail_node(n, format!("every model failed: {}", all.join("; ")), fx);
        }
        match mode {
            SelectMode::First | SelectMode::All => {
                let mut by_model = Map::new();
                for (m, _, v) in &answers {
                    by_model.insert(m.clone(), v.clone());
                }
                let failed: Map<String, Value> = failed
                    .into_iter()
                    .map(|(m, e)| (m, Value::String(e)))
                    .collect();
                let models: Vec<Value> = answers
                    .iter()
                    .map(|(m, _, _)| Value::String(m.clone()))
                    .collect();
                let out = json!({"answers": by_model, "models": models, "failed": failed});
                self.succeed(n, out, fx);
            }
            SelectMode::Vote => {
                let out = vote(&answers);
                self.succeed(n, out, fx);
            }
            SelectMode::Judge => self.start_judge(n, &answers, fx),
        }
    }

    /// A task's outputs with the model that gave them.
    fn answer_of(&self, id: &TaskId) -> Value {
        let Some(t) = self.tasks.get(id) else {
            return Value::Null;
        };
        let mut out = t.outputs().cloned().unwrap_or(Value::Null);
        if let (Value::Object(m), Some(model)) = (&mut out, t.tried_models.last()) {
            m.entry("model")
                .or_insert_with(|| Value::String(model.clone()));
        }
        out
    }

    /// Answers `(model, task, outputs)` in the stage's model order, and
    /// the models that failed with their errors.
    #[allow(clippy::type_complexity)]
    fn answers(&self, n: NodeId) -> (Vec<(String, TaskId, Value)>, Vec<(String, String)>) {
        let mut answers = Vec::new();
        let mut failed = Vec::new();
        for id in &self.nodes[n].tasks {
            let Some(t) = self.tasks.get(id) else {
                continue;
            };
            let model = t.model.clone().unwrap_or_default();
            match &t.phase {
                TaskPhase::Done(_) => answers.push((model, id.clone(), self.answer_of(id))),
                TaskPhase::GaveUp(e) => failed.push((model, e.clone())),
                _ => {}
            }
        }
        (answers, failed)
    }

    fn start_judge(
        &mut self,
        n: NodeId,
        answers: &[(String, TaskId, Value)],
        fx: &mut Vec<Effect>,
    ) {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let Some(judge) = node.select.as_ref().and_then(|s| s.judge.clone()) else {
            return self.fail_node(n, "`select: judge` names no judge model", fx);
        };
        let question = match render_value(
            &Value::Object(node.inputs.clone()),
            self.ctx_mut(node.scope),
        ) {
            Ok(v) => v,
            Err(e) => {
                let msg = self.eval_err(n, "inputs", &e);
                return self.fail_node(n, msg, fx);
            }
        };
        let candidates: Vec<Value> = answers
            .iter()
            .map(|(m, _, v)| json!({"model": m, "output": v}))
            .collect();
        let mut inputs = Map::new();
        inputs.insert("question".into(), question);
        inputs.insert("candidates".into(), Value::Array(candidates));
        let id = self.extra_task(
            n,
            "judge",
            JUDGE_SKILL,
            Some(judge),
            TaskRole::Judge { inputs },
        );
        self.nodes[n].running += 1;
        if let Err(msg) = self.dispatch(&id, fx) {
            self.fail_node(n, msg, fx);
        }
    }

    /// Adds a task outside the stage's own list (a judge, a fix loop).
    fn extra_task(
        &mut self,
        n: NodeId,
        what: &str,
        skill: &str,
        model: Option<String>,
        role: TaskRole,
    ) -> TaskId {
        let node = &self.plan.nodes[n];
        let generation = self.nodes[n].generation;
        let k = self.nodes[n].extra.len();
        let id = TaskId::new(format!("{}~{what}{k}@{generation}", node.id));
        self.tasks.insert(
            id.clone(),
            TaskState::new(n, (0, None, usize::MAX), skill, model, role),
        );
        self.nodes[n].extra.push(id.clone());
        id
    }

    /// The judge answered: its `choice` (0-based) picks a candidate.
    pub(super) fn judged(&mut self, n: NodeId, verdict: &Value, fx: &mut Vec<Effect>) {
        self.nodes[n].running = self.nodes[n].running.saturating_sub(1);
        let (answers, _) = self.answers(n);
        let choice = verdict.get("choice").and_then(Value::as_u64);
        let Some((model, _, out)) = choice.and_then(|c| answers.get(c as usize)).cloned() else {
            let msg = format!(
                "the judge's verdict names no candidate (choice {}, {} candidates)",
                choice.map_or("missing".into(), |c| c.to_string()),
                answers.len()
            );
            return self.fail_node(n, msg, fx);
        };
        let mut out = out;
        if let Value::Object(m) = &mut out {
            m.insert(
                "judge".into(),
                json!({
                    "model": verdict.get("model").cloned().unwrap_or(Value::Null),
                    "chose": model,
                    "reason": verdict.get("reason").cloned().unwrap_or(Value::Null),
                }),
            );
        }
        self.succeed(n, out, fx);
    }

    /// `codex-auto-fix`: a failed task goes through the sandbox loop with
    /// its own skill as the test; the task is retried once the loop is
    /// green. Returns false when the loop does not apply (used up, a
    /// cancellation, a skill that is not a command).
    pub(super) fn start_fix(
        &mut self,
        n: NodeId,
        id: &TaskId,
        f: &Failure,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let Some(skill) = self.tasks.get(id).map(|t| t.skill.clone()) else {
            return false;
        };
        let fixes = self.nodes[n]
            .extra
            .iter()
            .filter(|x| {
                self.tasks.get(*x).is_some_and(
                    |x| matches!(&x.role, TaskRole::Fix { for_task, .. } if for_task == id),
                )
            })
            .count() as u32;
        let limit = node.error.max_retries.max(1);
        if fixes >= limit || skill == crate::plan::SANDBOX_SKILL {
            return false;
        }
        let Some(Ok(spec)) = self.task_spec(id) else {
            return false;
        };
        let scope = node.scope;
        let mut inputs =
            match render_value(&Value::Object(node.sandbox.clone()), self.ctx_mut(scope)) {
                Ok(Value::Object(m)) => m,
                _ => node.sandbox.clone(),
            };
        inputs.remove("auto_fix");
        inputs.insert("test_skill".into(), Value::String(skill.clone()));
        inputs.insert("test_inputs".into(), spec.inputs.clone());
        inputs.entry("apply").or_insert(Value::Bool(true));
        inputs
            .entry("max_iterations")
            .or_insert(Value::from(node.error.max_retries.max(1)));
        let model = spec.model.clone();
        if !inputs.contains_key("fix_command") && !inputs.contains_key("fixer") && model.is_none() {
            self.nodes[n].note(StageNote::FixNeedsFixer);
            return false;
        }
        let role = TaskRole::Fix {
            for_task: id.clone(),
            inputs,
        };
        // The failed task waits for the loop; `fixed` sends it again.
        if !self.task_to(id, TaskPhase::Fixing) {
            return false;
        }
        let fix = self.extra_task(n, "fix", crate::plan::SANDBOX_SKILL, model, role);
        self.nodes[n].note(StageNote::FixStarted {
            skill,
            error: f.message.lines().next().unwrap_or_default().to_owned(),
        });
        if let Err(msg) = self.dispatch(&fix, fx) {
            self.fail_node(n, msg, fx);
        }
        true
    }

    /// The fix loop went green: the failed task runs again on the fixed
    /// source.
    pub(super) fn fixed(
        &mut self,
        n: NodeId,
        for_task: &TaskId,
        outputs: &Value,
        fx: &mut Vec<Effect>,
    ) {
        let iterations = outputs
            .get("iterations")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let applied = outputs
            .get("applied")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.nodes[n].details = Some(json!({"auto_fix": outputs}));
        self.nodes[n].note(StageNote::FixGreen {
            iterations,
            applied,
            task: for_task.clone(),
        });
        if let Err(msg) = self.dispatch(for_task, fx) {
            self.fail_node(n, msg, fx);
        }
    }

    /// Iterations a codex-sandbox stage's loop ran, from its outputs or
    /// its failure's details.
    pub(super) fn loop_iterations(&self, n: NodeId) -> Option<u32> {
        let st = &self.nodes[n];
        let from = |v: &Value| v.get("iterations").and_then(Value::as_u64);
        st.outputs
            .as_ref()
            .and_then(from)
            .or_else(|| st.details.as_ref().and_then(from))
            .map(|i| i as u32)
    }
}

/// The answer most models gave; a tie goes to the earliest model in the
/// stage's list. Answers compare as JSON with object keys in any order and
/// text trimmed, ignoring which model gave them.
fn vote(answers: &[(String, TaskId, Value)]) -> Value {
    let key = |v: &Value| -> String {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("model");
        }
        canonical(&v)
    };
    let keys: Vec<String> = answers.iter().map(|(_, _, v)| key(v)).collect();
    let mut best = 0;
    let mut best_votes = 0;
    for (i, k) in keys.iter().enumerate() {
        let votes = keys.iter().filter(|o| *o == k).count();
        if votes > best_votes {
            best = i;
            best_votes = votes;
        }
    }
    let agreeing: Vec<Value> = answers
        .iter()
        .zip(&keys)
        .filter(|(_, k)| **k == keys[best])
        .map(|((m, _, _), _)| Value::String(m.clone()))
        .collect();
    let mut out = answers[best].2.clone();
    if let Value::Object(m) = &mut out {
        m.insert(
            "votes".into(),
            json!({"for": agreeing, "count": best_votes, "of": answers.len()}),
        );
    }
    out
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", json!(k), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        Value::String(s) => json!(s.trim()).to_string(),
        other => other.to_string(),
    }
}
