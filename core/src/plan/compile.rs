//! Spec -> plan: nodes, blocks and scopes; dependencies, cycles, repeats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::models::ModelCatalog;
use serde_json::{Map, Value};

use super::options::{PlanOptions, RESERVED_IDS, SANDBOX_SKILL};
use super::{
    Block, BranchSelector, NodeId, NodeKind, Plan, PlanBranch, PlanNode, Repeat, Scope, ScopeId,
};
use crate::spec::{
    Branches, Cascade, Diagnostic, ErrorHandling, ErrorStrategy, Loc, SkillRef, Stage, StageType,
};
use crate::suggest::suggestion;

/// A codex-sandbox stage's fixer when it names none.
const DEFAULT_FIXER: &str = "codex-auto";

pub const DEFAULT_MAX_ITERATIONS: u32 = 3;

pub fn compile(cascade: &Cascade, opts: &PlanOptions) -> Plan {
    let mut c = Compiler {
        plan: Plan {
            name: cascade.name.clone(),
            nodes: Vec::new(),
            blocks: Vec::new(),
            scopes: Vec::new(),
            root: 0,
            memory: cascade.memory.clone(),
            timeout: cascade.timeout,
            budget: cascade.budget.clone(),
            models: opts
                .models
                .clone()
                .unwrap_or_else(|| Arc::new(ModelCatalog::builtin())),
            model_skills: opts.model_skills.clone(),
            diagnostics: Vec::new(),
        },
    };
    let (root, _) = c.cascade(cascade, None, "");
    c.plan.root = root;
    super::check::check(&mut c.plan, cascade, opts);
    c.plan
}

struct Compiler {
    plan: Plan,
}

impl Compiler {
    fn error(&mut self, loc: &Loc, field: impl Into<String>, msg: impl Into<String>) {
        self.plan
            .diagnostics
            .push(Diagnostic::error(Some(loc.clone()), field, msg));
    }

    fn warn(&mut self, loc: &Loc, field: impl Into<String>, msg: impl Into<String>) {
        self.plan
            .diagnostics
            .push(Diagnostic::warning(Some(loc.clone()), field, msg));
    }

    fn cascade(
        &mut self,
        c: &Cascade,
        parent: Option<(ScopeId, NodeId)>,
        prefix: &str,
    ) -> (usize, ScopeId) {
        let scope = self.plan.scopes.len();
        self.plan.scopes.push(Scope {
            cascade: c.name.clone(),
            version: c.version.clone(),
            inputs: c.inputs.clone(),
            dir: c.dir.clone(),
            parent,
        });
        self.check_ids(c);
        let owner = parent.map(|(_, n)| n);
        let block = self.list(c, &c.stages, scope, owner, prefix);
        (block, scope)
    }

    /// Stage ids are unique in a cascade, nested stages included, and never
    /// a reserved context name.
    fn check_ids(&mut self, c: &Cascade) {
        let mut seen: BTreeMap<&str, &Loc> = BTreeMap::new();
        for s in c.all_stages() {
            if s.id.is_empty() {
                continue;
            }
            if RESERVED_IDS.contains(&s.id.as_str()) {
                self.error(
                    &s.loc,
                    "stage_id",
                    format!(
                        "`{}` is reserved for the context; choose another stage id",
                        s.id
                    ),
                );
            }
            if let Some(first) = seen.insert(&s.id, &s.loc) {
                let line = first.line;
                self.error(
                    &s.loc,
                    "stage_id",
                    format!("duplicate stage id `{}` (first used at line {line})", s.id),
                );
            }
        }
    }

    fn list(
        &mut self,
        c: &Cascade,
        stages: &[Stage],
        scope: ScopeId,
        owner: Option<NodeId>,
        prefix: &str,
    ) -> usize {
        let block = self.plan.blocks.len();
        self.plan.blocks.push(Block {
            nodes: Vec::new(),
            owner,
            scope,
        });
        let mut local: BTreeMap<String, NodeId> = BTreeMap::new();
        for stage in stages {
            let id = self.plan.nodes.len();
            let node = self.node(c, stage, block, scope, prefix);
            self.plan.nodes.push(node);
            self.plan.blocks[block].nodes.push(id);
            local.entry(stage.id.clone()).or_insert(id);
        }
        let all_ids: Vec<String> = c.all_stages().iter().map(|s| s.id.clone()).collect();
        for (i, stage) in stages.iter().enumerate() {
            let node = self.plan.blocks[block].nodes[i];
            let deps = match &stage.dependencies {
                None => i
                    .checked_sub(1)
                    .map(|p| vec![self.plan.blocks[block].nodes[p]])
                    .unwrap_or_default(),
                Some(list) => {
                    let mut deps = Vec::new();
                    for (j, (dep, loc)) in list.iter().enumerate() {
                        let field = format!("{}.dependencies[{j}]", stage.id);
                        if *dep == stage.id {
                            self.error(loc, field, format!("stage `{dep}` depends on itself"));
                        } else if let Some(&d) = local.get(dep) {
                            if !deps.contains(&d) {
                                deps.push(d);
                            }
                        } else if all_ids.contains(dep) {
                            self.error(loc, field, format!("dependency `{dep}` is not in the same stage list as `{}`; branch stages and substages depend only on their siblings", stage.id));
                        } else {
                            let hint = suggestion(dep, all_ids.iter().map(String::as_str));
                            self.error(loc, field, format!("unknown dependency `{dep}`{hint}"));
                        }
                    }
                    deps
                }
            };
            self.plan.nodes[node].deps = deps;
        }
        for (i, stage) in stages.iter().enumerate() {
            let node = self.plan.blocks[block].nodes[i];
            self.children(c, stage, node, scope, prefix);
        }
        self.check_cycles(block);
        for (i, stage) in stages.iter().enumerate() {
            let node = self.plan.blocks[block].nodes[i];
            self.repeat(stage, node, block, &local);
        }
        block
    }

    fn node(
        &mut self,
        c: &Cascade,
        s: &Stage,
        block: usize,
        scope: ScopeId,
        prefix: &str,
    ) -> PlanNode {
        let error = s
            .error_handling
            .clone()
            .or_else(|| c.error_handling.clone())
            .unwrap_or_default();
        let fail_fast =
            error.strategy == ErrorStrategy::Fail && error.continue_on_failure != Some(true);
        let kind = self.kind(s);
        if s.max_iterations.is_some() && s.repeat.is_none() && s.ty != StageType::CodexSandbox {
            self.warn(
                &s.loc,
                format!("{}.max_iterations", s.id),
                "`max_iterations` has no effect without `repeat`",
            );
        }
        if s.ty == StageType::Conditional && s.condition.is_none() && s.branches.is_none() {
            self.warn(
                &s.loc,
                format!("{}.type", s.id),
                "a conditional stage without `condition` or `branches` always runs",
            );
        }
        PlanNode {
            id: format!("{prefix}{}", s.id),
            local_id: s.id.clone(),
            name: s.name.clone(),
            block,
            scope,
            deps: Vec::new(),
            ty: s.ty,
            kind,
            model: s.model.clone(),
            // A sandbox stage's inputs went into its loop task.
            inputs: if s.ty == StageType::CodexSandbox {
                Map::new()
            } else {
                s.inputs.clone()
            },
            input_locs: s.input_locs.clone(),
            condition: s.condition.clone(),
            repeat: None,
            error: ErrorHandling { ..error },
            timeout: s.timeout,
            task_timeout: s.task_timeout,
            memory: s.memory.clone(),
            swarm: s.swarm.clone(),
            max_parallel: s.swarm.as_ref().and_then(|w| w.max_agents),
            fail_fast,
            models: s.models.iter().map(|(m, _)| m.clone()).collect(),
            select: s.select.clone(),
            budget: s.budget.clone(),
            sandbox: s
                .sandbox
                .as_ref()
                .map(|c| c.settings.clone())
                .unwrap_or_default(),
            loc: s.loc.clone(),
        }
    }

    /// The node's kind before its child blocks exist (filled by `children`).
    fn kind(&mut self, s: &Stage) -> NodeKind {
        let nested = s.branches.is_some() as u8
            + (!s.substages.is_empty()) as u8
            + s.cascade.is_some() as u8;
        if nested > 1 {
            self.error(
                &s.loc,
                s.id.clone(),
                "a stage has at most one of `branches`, `substages` and `cascade`",
            );
        }
        if nested > 0 && !s.skills.is_empty() {
            self.error(&s.loc, format!("{}.skills", s.id), "a stage with `branches`, `substages` or `cascade` runs those, not skills of its own; move the skills into a stage of their own");
        }
        if s.branches.is_some() || !s.substages.is_empty() || s.cascade.is_some() {
            return NodeKind::Pass; // replaced in `children`
        }
        let mut skills = s.skills.clone();
        if s.ty == StageType::CodexSandbox {
            skills = vec![self.sandbox_task(s)];
        }
        if skills.is_empty() {
            if s.for_each.is_some() {
                self.error(
                    &s.loc,
                    format!("{}.for_each", s.id),
                    "`for_each` needs a `skill` to run per item",
                );
            }
            return NodeKind::Pass;
        }
        NodeKind::Tasks {
            skills,
            parallel: s.ty.fans_out(),
            for_each: s.for_each.clone(),
        }
    }

    /// A codex-sandbox stage runs as one task of the built-in
    /// `codex-sandbox` skill, which holds the whole test-and-fix loop. Its
    /// inputs: the loop settings (from `codex_config`, the recovery
    /// sections and stage inputs named like a setting), the test (a
    /// `test` command, else the stage's skill run as the test with the
    /// other stage inputs as `test_inputs`) and the fixer (`fix_command`,
    /// `fixer`, else the stage's `model`).
    fn sandbox_task(&mut self, s: &Stage) -> SkillRef {
        let cfg = s.sandbox.clone().unwrap_or_default();
        let mut inputs = cfg.settings.clone();
        let mut test_inputs = Map::new();
        for (k, v) in &s.inputs {
            if crate::spec::SANDBOX_KEYS.contains(&k.as_str()) {
                let key = if k == "test_command" {
                    "test"
                } else {
                    k.as_str()
                };
                inputs.insert(key.to_owned(), v.clone());
            } else {
                test_inputs.insert(k.clone(), v.clone());
            }
        }
        if !inputs.contains_key("test") {
            let skill = match (s.skills.first(), &cfg.tests) {
                (Some(sk), _) => {
                    for (k, v) in &sk.inputs {
                        test_inputs.insert(k.clone(), v.clone());
                    }
                    Some(sk.skill.clone())
                }
                (None, Some(t)) => Some(t.clone()),
                (None, None) => None,
            };
            match skill {
                Some(name) => {
                    if s.skills.len() > 1 {
                        self.warn(&s.loc, format!("{}.skills", s.id), "a codex-sandbox stage runs one test skill; only the first is used");
                    }
                    if let (Some(suite), false) = (&cfg.tests, s.skills.is_empty()) {
                        test_inputs.insert("suite".into(), Value::String(suite.clone()));
                    }
                    inputs.insert("test_skill".into(), Value::String(name));
                }
                None => self.error(
                    &s.loc,
                    format!("{}.codex_config.test_command", s.id),
                    "a codex-sandbox stage needs its tests: `codex_config.test_command`, or a `skill` that runs them",
                ),
            }
        }
        if !test_inputs.is_empty() {
            inputs.insert("test_inputs".into(), Value::Object(test_inputs));
        }
        if !inputs.contains_key("fix_command") && !inputs.contains_key("fixer") && s.model.is_none()
        {
            // The seed's sandbox is Codex's: without a fixer, codex-auto.
            self.warn(
                &s.loc,
                format!("{}.codex_config.fix_command", s.id),
                format!("no fixer given: failing tests go to the model `{DEFAULT_FIXER}` (set `model`, `codex_config.fix_command` or `codex_config.fixer`)"),
            );
            inputs.insert("fixer".into(), serde_json::json!({"model": DEFAULT_FIXER}));
        }
        if let Some(m) = s.max_iterations {
            inputs.entry("max_iterations").or_insert(Value::from(m));
        }
        inputs.remove("auto_fix");
        SkillRef {
            skill: SANDBOX_SKILL.to_owned(),
            inputs,
            outputs: Vec::new(),
            model: None,
            priority: None,
            loc: cfg.loc.unwrap_or_else(|| s.loc.clone()),
        }
    }

    fn children(&mut self, c: &Cascade, s: &Stage, node: NodeId, scope: ScopeId, prefix: &str) {
        if let Some(branches) = &s.branches {
            self.branches(c, s, branches, node, scope, prefix);
        } else if !s.substages.is_empty() {
            let block = self.list(c, &s.substages, scope, Some(node), prefix);
            self.plan.nodes[node].kind = NodeKind::Group { block };
        } else if let Some((name, loc)) = &s.cascade {
            let Some(sub) = c.subcascades.get(name) else {
                return;
            };
            for decl in &sub.inputs {
                if decl.required && decl.default.is_none() && !s.inputs.contains_key(&decl.name) {
                    self.error(loc, format!("{}.inputs", s.id), format!("sub-cascade `{name}` requires input `{}`; pass it in this stage's `inputs`", decl.name));
                }
            }
            let child_prefix = format!("{}/", self.plan.nodes[node].id);
            let (block, child_scope) = self.cascade(sub, Some((scope, node)), &child_prefix);
            self.plan.nodes[node].kind = NodeKind::Sub {
                block,
                scope: child_scope,
                cascade: name.clone(),
            };
        }
    }

    fn branches(
        &mut self,
        c: &Cascade,
        s: &Stage,
        branches: &Branches,
        node: NodeId,
        scope: ScopeId,
        prefix: &str,
    ) {
        let (list, named_default, selector) = match branches {
            Branches::List(bs) => (bs.clone(), None, BranchSelector::FirstMatch),
            Branches::Map { branches, default } => {
                (branches.clone(), default.clone(), BranchSelector::Named)
            }
            Branches::PassFail { pass, fail } => {
                let pass_block = self.list(c, pass, scope, Some(node), prefix);
                let fail_block = self.list(c, fail, scope, Some(node), prefix);
                if s.condition.is_none() {
                    self.error(
                        &s.loc,
                        format!("{}.condition", s.id),
                        "pass/fail branches need the stage's `condition`",
                    );
                }
                self.plan.nodes[node].kind = NodeKind::Branch {
                    branches: vec![
                        PlanBranch {
                            name: "pass".into(),
                            condition: None,
                            block: pass_block,
                        },
                        PlanBranch {
                            name: "fail".into(),
                            condition: None,
                            block: fail_block,
                        },
                    ],
                    default: Some(1),
                    selector: BranchSelector::PassFail,
                };
                return;
            }
        };
        let mut out = Vec::new();
        let mut default = None;
        let mut seen = BTreeSet::new();
        for (i, b) in list.iter().enumerate() {
            if !seen.insert(b.name.clone()) {
                self.error(
                    &b.loc,
                    format!("{}.branches", s.id),
                    format!("duplicate branch name `{}`", b.name),
                );
            }
            if b.is_default {
                if default.is_some() {
                    self.error(
                        &b.loc,
                        format!("{}.branches.{}", s.id, b.name),
                        "only one branch can be the default",
                    );
                }
                default = Some(i);
            }
            let block = self.list(c, &b.stages, scope, Some(node), prefix);
            out.push(PlanBranch {
                name: b.name.clone(),
                condition: b.condition.clone(),
                block,
            });
        }
        if let Some((name, loc)) = named_default {
            match list.iter().position(|b| b.name == name) {
                Some(i) if default.is_none() || default == Some(i) => default = Some(i),
                Some(_) => self.error(
                    &loc,
                    format!("{}.branches.default", s.id),
                    "only one branch can be the default",
                ),
                None => {
                    let hint = suggestion(&name, list.iter().map(|b| b.name.as_str()));
                    self.error(
                        &loc,
                        format!("{}.branches.default", s.id),
                        format!("default branch `{name}` does not exist{hint}"),
                    );
                }
            }
        }
        for (i, b) in list.iter().enumerate() {
            if b.condition.is_none() && Some(i) != default && selector == BranchSelector::FirstMatch
            {
                self.error(
                    &b.loc,
                    format!("{}.branches.{}", s.id, b.name),
                    format!(
                        "branch `{}` has no condition and is not the default, so it can never run",
                        b.name
                    ),
                );
            }
        }
        let any_condition = list.iter().any(|b| b.condition.is_some());
        if selector == BranchSelector::Named
            && default.is_none()
            && !any_condition
            && s.condition.is_none()
        {
            self.error(&s.loc, format!("{}.branches", s.id), "no branch has a condition and there is no `default`: give the stage a `condition` naming a branch, branch conditions, or a `default`");
        }
        self.plan.nodes[node].kind = NodeKind::Branch {
            branches: out,
            default,
            selector,
        };
    }

    /// Kahn's algorithm over one block; a leftover node lies on a cycle,
    /// which is printed in run order.
    fn check_cycles(&mut self, block: usize) {
        let nodes = self.plan.blocks[block].nodes.clone();
        let mut indegree: BTreeMap<NodeId, usize> = nodes
            .iter()
            .map(|&n| (n, self.plan.nodes[n].deps.len()))
            .collect();
        let mut ready: Vec<NodeId> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut done = BTreeSet::new();
        while let Some(n) = ready.pop() {
            done.insert(n);
            for &m in &nodes {
                if self.plan.nodes[m].deps.contains(&n) {
                    let d = indegree.entry(m).or_default();
                    *d = d.saturating_sub(1);
                    if *d == 0 {
                        ready.push(m);
                    }
                }
            }
        }
        let mut reported = BTreeSet::new();
        for &start in &nodes {
            if done.contains(&start) || reported.contains(&start) {
                continue;
            }
            // Walk "depends on" edges among leftover nodes until one repeats.
            let mut path = vec![start];
            let mut cur = start;
            while let Some(&next) = self.plan.nodes[cur]
                .deps
                .iter()
                .find(|d| !done.contains(*d))
            {
                if let Some(pos) = path.iter().position(|&p| p == next) {
                    // `path` follows "depends on"; reversed it is run order.
                    let mut cycle: Vec<NodeId> = path[pos..].to_vec();
                    cycle.reverse();
                    // Start at the stage written first, for stable messages.
                    let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                    cycle.rotate_left(first);
                    cycle.push(cycle[0]);
                    if !cycle.iter().any(|n| reported.contains(n)) {
                        reported.extend(cycle.iter().copied());
                        let names: Vec<&str> = cycle
                            .iter()
                            .map(|&n| self.plan.nodes[n].local_id.as_str())
                            .collect();
                        let loc = self.plan.nodes[cycle[0]].loc.clone();
                        let msg = format!("dependency cycle: {}", names.join(" -> "));
                        self.error(&loc, format!("{}.dependencies", names[0]), msg);
                    }
                    break;
                }
                path.push(next);
                cur = next;
            }
        }
    }

    fn repeat(&mut self, s: &Stage, node: NodeId, block: usize, local: &BTreeMap<String, NodeId>) {
        let Some((target, loc)) = &s.repeat else {
            return;
        };
        let field = format!("{}.repeat", s.id);
        let Some(&t) = local.get(target) else {
            let hint = suggestion(target, local.keys().map(String::as_str));
            self.error(
                loc,
                field,
                format!("repeat target `{target}` is not a stage of this list{hint}"),
            );
            return;
        };
        let ancestors = self.closure(node, |n, plan| plan.nodes[n].deps.clone());
        if !ancestors.contains(&t) {
            self.error(loc, field, format!("repeat target `{target}` must run before `{}` (it is not one of its dependencies)", s.id));
            return;
        }
        let nodes = self.plan.blocks[block].nodes.clone();
        let descendants = self.closure(t, |n, plan| {
            nodes
                .iter()
                .copied()
                .filter(|&m| plan.nodes[m].deps.contains(&n))
                .collect()
        });
        let body: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| ancestors.contains(n) && descendants.contains(n))
            .collect();
        let max_iterations = match s.max_iterations {
            Some(m) => m,
            None => {
                self.warn(loc, format!("{}.max_iterations", s.id), format!("a loop needs a bound; `max_iterations` defaults to {DEFAULT_MAX_ITERATIONS}"));
                DEFAULT_MAX_ITERATIONS
            }
        };
        self.plan.nodes[node].repeat = Some(Repeat {
            target: t,
            max_iterations,
            body,
        });
    }

    /// `start` and every node reachable through `next`.
    fn closure(
        &self,
        start: NodeId,
        next: impl Fn(NodeId, &Plan) -> Vec<NodeId>,
    ) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for m in next(n, &self.plan) {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        seen
    }
}
