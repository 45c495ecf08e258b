//! Stage lifecycle: starting a node of each kind, settling it, loops,
//! composite completion and memory writes. Status changes go through
//! `Engine::stage_to` (the diagram is in `phase`).

use std::collections::BTreeSet;
use std::fmt;

use cascade_eval::{EvalError, render_value, value_references};
use serde_json::{Map, Value};

use super::{Effect, Engine, NodeState, Settled, StageError, StageNote, StageStatus, TimerId};
use crate::plan::{BlockId, BranchSelector, NodeId, NodeKind, Plan};
use crate::spec::InputDecl;

/// The run's inputs with declared defaults filled in.
pub fn with_defaults(decls: &[InputDecl], mut inputs: Map<String, Value>) -> Map<String, Value> {
    for d in decls {
        if let (false, Some(default)) = (inputs.contains_key(&d.name), &d.default) {
            inputs.insert(d.name.clone(), default.clone());
        }
    }
    inputs
}

/// Memory keys each node may read, for `cleanup_between_stages`.
pub fn memory_refs(plan: &Plan) -> Vec<BTreeSet<String>> {
    plan.nodes
        .iter()
        .map(|node| {
            let mut keys: BTreeSet<String> = node.memory.read_keys.iter().cloned().collect();
            let mut values = vec![Value::Object(node.inputs.clone())];
            if let NodeKind::Tasks {
                skills, for_each, ..
            } = &node.kind
            {
                values.extend(skills.iter().map(|s| Value::Object(s.inputs.clone())));
                values.extend(for_each.iter().cloned());
            }
            let mut refs: Vec<cascade_eval::Reference> = values
                .iter()
                .filter_map(|v| value_references(v).ok())
                .flatten()
                .collect();
            if let Some(c) = &node.condition {
                refs.extend(c.cond.references());
            }
            if let NodeKind::Branch { branches, .. } = &node.kind {
                refs.extend(
                    branches
                        .iter()
                        .filter_map(|b| b.condition.as_ref())
                        .flat_map(|c| c.cond.references()),
                );
            }
            for r in refs {
                if r.root == "memory" {
                    keys.extend(r.rest.first().cloned());
                } else if r.bare {
                    keys.insert(r.root.clone());
                }
            }
            keys
        })
        .collect()
}

impl Engine {
    pub(super) fn eval_err(&self, n: NodeId, what: &str, e: &EvalError) -> StageError {
        StageError::Eval {
            stage: self.plan.nodes[n].local_id.clone(),
            what: what.to_owned(),
            source: e.clone(),
        }
    }

    pub(super) fn start_node(&mut self, n: NodeId, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let now = self.now;
        if !self.stage_to(n, StageStatus::Running) {
            return;
        }
        let st = &mut self.nodes[n];
        st.runs += 1;
        st.started_at = Some(now);
        st.finished_at = None;
        fx.push(Effect::StageChanged {
            stage: node.id.clone(),
            status: StageStatus::Running,
            message: None,
        });
        if let Some(t) = node.timeout {
            let generation = st.generation;
            fx.push(Effect::StartTimer {
                timer: TimerId::StageTimeout {
                    stage: node.id.clone(),
                    generation,
                },
                at: now + t.as_millis() as u64,
            });
        }
        let ts = Value::String(super::report::rfc3339(now));
        self.ctx_mut(node.scope).set_var("timestamp", ts);
        // A loop's pass starts at its target: `${iteration}` is the pass
        // number (1-based), defined from the first pass on.
        if let Some(r) = (0..plan.nodes.len()).find(|&r| {
            plan.nodes[r]
                .repeat
                .as_ref()
                .is_some_and(|rep| rep.target == n)
        }) {
            let pass = self.nodes[r].loop_iterations + 1;
            self.ctx_mut(node.scope)
                .set_var("iteration", Value::from(pass));
        }

        // A gate: false skips the stage. (With `repeat` the condition is the
        // loop's; with branches it selects.)
        let is_branch = matches!(node.kind, NodeKind::Branch { .. });
        if let (Some(c), None, false) = (&node.condition, &node.repeat, is_branch) {
            let verdict = c.cond.evaluate(self.ctx_mut(node.scope));
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    let msg = format!("condition `{}` is false", c.text);
                    self.settle(n, Settled::Skipped, Some(msg), fx);
                    return;
                }
                Err(e) => {
                    let msg = self.eval_err(n, "condition", &e);
                    self.fail_node(n, msg, fx);
                    return;
                }
            }
        }
        match &node.kind {
            NodeKind::Pass => match render_value(
                &Value::Object(node.inputs.clone()),
                self.ctx_mut(node.scope),
            ) {
                Ok(outputs) => self.succeed(n, outputs, fx),
                Err(e) => {
                    let msg = self.eval_err(n, "inputs", &e);
                    self.fail_node(n, msg, fx);
                }
            },
            NodeKind::Tasks { .. } => self.start_tasks(n, fx),
            NodeKind::Branch {
                branches,
                default,
                selector,
            } => {
                let chosen = match self.select_branch(n, branches, *default, *selector) {
                    Ok(c) => c,
                    Err(msg) => {
                        self.fail_node(n, msg, fx);
                        return;
                    }
                };
                for (i, b) in branches.iter().enumerate() {
                    if i != chosen {
                        self.skip_block(b.block, format!("branch `{}` not taken", b.name), fx);
                    }
                }
                let b = &branches[chosen];
                self.nodes[n].branch_taken = Some(b.name.clone());
                fx.push(Effect::StageChanged {
                    stage: node.id.clone(),
                    status: StageStatus::Running,
                    message: Some(format!("branch `{}` taken", b.name)),
                });
                self.enter_block(n, b.block);
            }
            NodeKind::Group { block } => self.enter_block(n, *block),
            NodeKind::Sub { block, scope, .. } => {
                let rendered = render_value(
                    &Value::Object(node.inputs.clone()),
                    self.ctx_mut(node.scope),
                );
                match rendered {
                    Ok(Value::Object(inputs)) => {
                        let inputs = with_defaults(&plan.scopes[*scope].inputs, inputs);
                        let missing: Vec<&str> = plan.scopes[*scope]
                            .inputs
                            .iter()
                            .filter(|d| d.required && !inputs.contains_key(&d.name))
                            .map(|d| d.name.as_str())
                            .collect();
                        if !missing.is_empty() {
                            self.fail_node(
                                n,
                                format!("sub-cascade needs input(s): {}", missing.join(", ")),
                                fx,
                            );
                            return;
                        }
                        let ctx = self.new_context(*scope, inputs);
                        self.contexts[*scope] = Some(ctx);
                        self.enter_block(n, *block);
                    }
                    Ok(_) => self.fail_node(n, "inputs must be a mapping", fx),
                    Err(e) => {
                        let msg = self.eval_err(n, "inputs", &e);
                        self.fail_node(n, msg, fx);
                    }
                }
            }
        }
    }

    fn select_branch(
        &mut self,
        n: NodeId,
        branches: &[crate::plan::PlanBranch],
        default: Option<usize>,
        selector: BranchSelector,
    ) -> Result<usize, StageError> {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let scope = node.scope;
        match selector {
            BranchSelector::PassFail => {
                let Some(c) = &node.condition else {
                    return Ok(1);
                };
                let v = c
                    .cond
                    .evaluate(self.ctx_mut(scope))
                    .map_err(|e| self.eval_err(n, "condition", &e))?;
                return Ok(if v { 0 } else { 1 });
            }
            BranchSelector::Named => {
                if let Some(c) = &node.condition {
                    let v = c
                        .cond
                        .evaluate_value(self.ctx_mut(scope))
                        .map_err(|e| self.eval_err(n, "condition", &e))?;
                    let name = match &v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(x) => Some(x.to_string()),
                        _ => None,
                    };
                    if let Some(i) = name.and_then(|s| branches.iter().position(|b| b.name == s)) {
                        return Ok(i);
                    }
                }
            }
            BranchSelector::FirstMatch => {}
        }
        for (i, b) in branches.iter().enumerate() {
            if let Some(c) = &b.condition {
                let v = c
                    .cond
                    .evaluate(self.ctx_mut(scope))
                    .map_err(|e| self.eval_err(n, &format!("branch `{}` condition", b.name), &e))?;
                if v {
                    return Ok(i);
                }
            }
        }
        default.ok_or_else(|| StageError::NoBranch {
            stage: node.local_id.clone(),
        })
    }

    fn enter_block(&mut self, n: NodeId, block: BlockId) {
        self.nodes[n].waiting_on = Some(block);
        self.active_blocks.insert(block);
    }

    /// Marks every stage under `block` skipped (a branch not taken).
    fn skip_block(&mut self, block: BlockId, why: String, fx: &mut Vec<Effect>) {
        for m in self.plan.nodes_within(block) {
            if !self.nodes[m].status.is_terminal() {
                self.settle(m, Settled::Skipped, Some(why.clone()), fx);
            }
        }
    }

    /// A composite's block finished: it succeeds with the block's outputs,
    /// or fails naming the stage that failed.
    pub(super) fn complete_composite(&mut self, n: NodeId, block: BlockId, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        // A child that failed with `continue_on_failure` does not fail its
        // parent; its cancelled dependents are consequences, not causes.
        let failed = plan.blocks[block].nodes.iter().copied().find(|&m| {
            self.nodes[m].status == StageStatus::Failed
                && plan.nodes[m].error.continue_on_failure != Some(true)
        });
        if let Some(m) = failed {
            let err = self.nodes[m].error.clone().unwrap_or_default();
            self.fail_node(
                n,
                format!("stage `{}` failed: {err}", plan.nodes[m].local_id),
                fx,
            );
            return;
        }
        let mut out = self.block_output(block);
        if let (Some(name), Value::Object(map)) = (self.nodes[n].branch_taken.clone(), &mut out) {
            let inner = Value::Object(map.clone());
            map.insert(name, inner);
            map.insert(
                "branch_taken".into(),
                Value::String(self.nodes[n].branch_taken.clone().unwrap_or_default()),
            );
        }
        self.succeed(n, out, fx);
    }

    /// Outputs of a block: every field of its stages' outputs (later stages
    /// win), and each stage's outputs under its id.
    fn block_output(&self, block: BlockId) -> Value {
        let mut merged = Map::new();
        let mut by_stage = Map::new();
        for &m in &self.plan.blocks[block].nodes {
            if let Some(out) = &self.nodes[m].outputs {
                if let Value::Object(o) = out {
                    for (k, v) in o {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                by_stage.insert(self.plan.nodes[m].local_id.clone(), out.clone());
            }
        }
        for (k, v) in by_stage {
            merged.insert(k, v);
        }
        Value::Object(merged)
    }

    /// Fails the stage with `why` (a [`StageError`] or a message) as its
    /// error.
    pub(super) fn fail_node(&mut self, n: NodeId, why: impl fmt::Display, fx: &mut Vec<Effect>) {
        let message = why.to_string();
        if !self.stage_may(n, StageStatus::Failed) {
            return;
        }
        let plan = self.plan.clone();
        self.cancel_node_tasks(n, fx);
        // Everything still running under a failed composite is cancelled.
        for b in plan.child_blocks(n) {
            self.active_blocks.remove(&b);
            for m in plan.nodes_within(b) {
                self.cancel_node_tasks(m, fx);
                if !self.nodes[m].status.is_terminal() {
                    self.settle(
                        m,
                        Settled::Cancelled,
                        Some(format!("stage `{}` failed", plan.nodes[n].local_id)),
                        fx,
                    );
                }
            }
        }
        self.nodes[n].errors.push(message.clone());
        self.settle(n, Settled::Failed, Some(message.clone()), fx);
        let ctx = self.ctx_mut(plan.nodes[n].scope);
        ctx.set_var(
            "failed_stage",
            Value::String(plan.nodes[n].local_id.clone()),
        );
        ctx.set_var("error_message", Value::String(message));
        if plan.nodes[n].fail_fast {
            self.stop(format!("stage `{}` failed", plan.nodes[n].id), fx);
        }
    }

    pub(super) fn cancel_node_tasks(&mut self, n: NodeId, fx: &mut Vec<Effect>) {
        let mut ids = self.nodes[n].tasks.clone();
        ids.extend(self.nodes[n].extra.iter().cloned());
        for id in ids {
            self.cancel_task(&id, fx);
        }
        self.nodes[n].queue.clear();
        self.nodes[n].running = 0;
    }

    /// Puts a node in a terminal state and reports it; a node that may
    /// not get there from where it is stays put (noted).
    pub(super) fn settle(
        &mut self,
        n: NodeId,
        settled: Settled,
        message: Option<String>,
        fx: &mut Vec<Effect>,
    ) {
        let status = StageStatus::from(settled);
        if !self.stage_to(n, status) {
            return;
        }
        let st = &mut self.nodes[n];
        st.finished_at = Some(self.now);
        if settled != Settled::Success && st.error.is_none() {
            st.error = message.clone();
        }
        fx.push(Effect::StageChanged {
            stage: self.plan.nodes[n].id.clone(),
            status,
            message,
        });
        self.cleanup_memory(fx);
    }

    pub(super) fn succeed(&mut self, n: NodeId, outputs: Value, fx: &mut Vec<Effect>) {
        if !self.stage_may(n, StageStatus::Success) {
            return;
        }
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        for name in &node_declared_outputs(node) {
            if outputs.get(name).is_none() {
                self.nodes[n].note(StageNote::MissingOutput(name.clone()));
            }
        }
        self.nodes[n].outputs = Some(outputs.clone());
        self.ctx_mut(node.scope)
            .set_stage_output(&node.local_id, outputs.clone());
        if let Err(msg) = self.write_memory(n, &outputs, fx) {
            self.fail_node(n, msg, fx);
            return;
        }
        if self.loop_back(n, fx) {
            return;
        }
        self.settle(n, Settled::Success, None, fx);
    }

    fn write_memory(
        &mut self,
        n: NodeId,
        outputs: &Value,
        fx: &mut Vec<Effect>,
    ) -> Result<(), StageError> {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        if !plan.memory.enabled {
            return Ok(());
        }
        let mut writes: Vec<(String, Value)> = node
            .memory
            .write_keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    outputs.get(k).cloned().unwrap_or_else(|| outputs.clone()),
                )
            })
            .collect();
        if node.memory.persistent {
            writes.push((node.local_id.clone(), outputs.clone()));
        }
        for (k, v) in writes {
            self.memory.insert(k.clone(), v.clone());
            for ctx in self.contexts.iter_mut().flatten() {
                ctx.set_memory(&k, v.clone());
            }
            fx.push(Effect::PutMemory {
                scope: plan.memory.scope,
                key: k,
                value: v,
            });
        }
        if let Some(mb) = plan.memory.max_memory_mb {
            let size = serde_json::to_vec(&self.memory)
                .map(|b| b.len())
                .unwrap_or(0) as u64;
            if size > mb * 1024 * 1024 {
                return Err(StageError::MemoryFull { size, max_mb: mb });
            }
        }
        Ok(())
    }

    /// With `cleanup_between_stages`, drops memory keys not declared in
    /// `memory.keys` once no unsettled stage reads them.
    fn cleanup_memory(&mut self, fx: &mut Vec<Effect>) {
        let plan = self.plan.clone();
        if !plan.memory.cleanup_between_stages || self.status.is_some() {
            return;
        }
        let still_read: BTreeSet<&String> = (0..self.nodes.len())
            .filter(|&m| !self.nodes[m].status.is_terminal())
            .flat_map(|m| self.memory_refs[m].iter())
            .collect();
        let drop: Vec<String> = self
            .memory
            .keys()
            .filter(|k| !plan.memory.keys.contains(k) && !still_read.contains(k))
            .cloned()
            .collect();
        for k in drop {
            self.memory.remove(&k);
            for ctx in self.contexts.iter_mut().flatten() {
                ctx.remove_memory(&k);
            }
            fx.push(Effect::DeleteMemory {
                scope: plan.memory.scope,
                key: k,
            });
        }
    }

    /// A node with `repeat` just succeeded: loop back when its condition
    /// holds and iterations remain. Returns whether it looped.
    fn loop_back(&mut self, n: NodeId, fx: &mut Vec<Effect>) -> bool {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        let Some(rep) = &node.repeat else {
            return false;
        };
        let iteration = self.nodes[n].loop_iterations + 1;
        self.nodes[n].loop_iterations = iteration;
        self.ctx_mut(node.scope)
            .set_var("iteration", Value::from(iteration));
        if iteration >= rep.max_iterations {
            if self.loop_condition(n) == Ok(true) {
                self.nodes[n].note(StageNote::LoopCapped(rep.max_iterations));
            }
            return false;
        }
        match self.loop_condition(n) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(msg) => {
                self.fail_node(n, msg, fx);
                return true;
            }
        }
        let msg = format!(
            "repeat from `{}` (iteration {} of at most {})",
            plan.nodes[rep.target].local_id,
            iteration + 1,
            rep.max_iterations
        );
        fx.push(Effect::StageChanged {
            stage: node.id.clone(),
            status: StageStatus::Pending,
            message: Some(msg),
        });
        let unshared = node.memory.shared == Some(false)
            || node.swarm.as_ref().and_then(|s| s.memory_shared) == Some(false);
        for &m in &rep.body {
            if unshared {
                for k in plan.nodes[m].memory.write_keys.clone() {
                    self.memory.remove(&k);
                    for ctx in self.contexts.iter_mut().flatten() {
                        ctx.remove_memory(&k);
                    }
                    fx.push(Effect::DeleteMemory {
                        scope: plan.memory.scope,
                        key: k,
                    });
                }
            }
            self.reset_node(m);
            for b in plan.child_blocks(m) {
                self.active_blocks.remove(&b);
                for inner in plan.nodes_within(b) {
                    self.reset_node(inner);
                }
            }
        }
        true
    }

    fn loop_condition(&mut self, n: NodeId) -> Result<bool, StageError> {
        let plan = self.plan.clone();
        let node = &plan.nodes[n];
        match &node.condition {
            None => Ok(true),
            Some(c) => c
                .cond
                .evaluate(self.ctx_mut(node.scope))
                .map_err(|e| self.eval_err(n, "loop condition", &e)),
        }
    }

    /// Back to pending for another loop iteration; history is kept.
    fn reset_node(&mut self, m: NodeId) {
        if !self.stage_to(m, StageStatus::Pending) {
            return;
        }
        let old = std::mem::replace(&mut self.nodes[m], NodeState::new());
        let st = &mut self.nodes[m];
        st.generation = old.generation + 1;
        st.runs = old.runs;
        st.loop_iterations = old.loop_iterations;
        st.attempts = old.attempts;
        st.models = old.models;
        st.workers = old.workers;
        st.errors = old.errors;
        st.notes = old.notes;
        st.usage = old.usage;
        st.started_at = old.started_at;
    }
}

fn node_declared_outputs(node: &crate::plan::PlanNode) -> Vec<String> {
    match &node.kind {
        NodeKind::Tasks {
            skills,
            for_each: None,
            ..
        } if skills.len() == 1 => skills[0].outputs.clone(),
        _ => Vec::new(),
    }
}
