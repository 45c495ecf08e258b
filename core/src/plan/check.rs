//! Checks that need the whole plan: skills that exist, `${...}` references
//! that can resolve, required inputs.

use std::collections::BTreeSet;

use cascade_eval::{EvalError, Reference, value_references};
use serde_json::Value;

use super::options::{PlanOptions, RESERVED_IDS, SANDBOX_SKILL};
use super::{NodeId, NodeKind, Plan, ScopeId};
use crate::spec::{Cascade, Diagnostic, ErrorStrategy, Loc};
use crate::suggest::suggestion;

const CASCADE_FIELDS: &[&str] = &["name", "version", "description", "run_id"];

pub fn check(plan: &mut Plan, cascade: &Cascade, opts: &PlanOptions) {
    let mut diags = Vec::new();
    if let Some(skills) = &opts.skills {
        check_skills(plan, skills, &mut diags);
    }
    check_models(plan, &mut diags);
    check_references(plan, &mut diags);
    check_inputs(cascade, opts, &mut diags);
    plan.diagnostics.extend(diags);
}

fn check_skills(plan: &Plan, skills: &BTreeSet<String>, diags: &mut Vec<Diagnostic>) {
    for node in &plan.nodes {
        let mut wanted: Vec<(String, Loc, String)> = Vec::new();
        if let NodeKind::Tasks { skills: refs, .. } = &node.kind {
            wanted.extend(refs.iter().map(|r| {
                (
                    r.skill.clone(),
                    r.loc.clone(),
                    format!("{}.skills", node.local_id),
                )
            }));
        }
        if let Some(fb) = node.error.fallback.as_ref().filter(|fb| {
            node.error.strategy != ErrorStrategy::ModelSwitch || plan.models.get(fb).is_none()
        }) {
            wanted.push((
                fb.clone(),
                node.loc.clone(),
                format!("{}.error_handling.fallback", node.local_id),
            ));
        }
        if let NodeKind::Tasks { skills: refs, .. } = &node.kind
            && let Some(Value::String(test)) = refs.first().and_then(|r| r.inputs.get("test_skill"))
            && refs.first().is_some_and(|r| r.skill == SANDBOX_SKILL)
        {
            wanted.push((
                test.clone(),
                node.loc.clone(),
                format!("{}.skill", node.local_id),
            ));
        }
        for (skill, loc, field) in wanted {
            if !skills.contains(&skill) {
                let hint = suggestion(&skill, skills.iter().map(String::as_str));
                diags.push(Diagnostic::error(
                    Some(loc),
                    field,
                    format!("unknown skill `{skill}`{hint}"),
                ));
            }
        }
    }
}

/// Every model a stage names must be in the models file (routers aside).
fn check_models(plan: &Plan, diags: &mut Vec<Diagnostic>) {
    let catalog = &plan.models;
    for node in &plan.nodes {
        let id = &node.local_id;
        let mut named: Vec<(String, String)> = Vec::new();
        if let Some(m) = &node.model {
            named.push((m.clone(), format!("{id}.model")));
        }
        if let NodeKind::Tasks { skills, .. } = &node.kind {
            for (i, s) in skills.iter().enumerate() {
                if let Some(m) = &s.model {
                    named.push((m.clone(), format!("{id}.skills[{i}].model")));
                }
            }
        }
        for (i, m) in node.models.iter().enumerate() {
            named.push((m.clone(), format!("{id}.models[{i}]")));
        }
        if let Some(j) = node.select.as_ref().and_then(|s| s.judge.clone()) {
            named.push((j, format!("{id}.judge")));
        }
        let fixer_model = |inputs: &serde_json::Map<String, Value>| {
            inputs
                .get("fixer")
                .and_then(|f| f.get("model"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(m) = fixer_model(&node.sandbox) {
            named.push((m, format!("{id}.codex_config.fixer.model")));
        }
        if let NodeKind::Tasks { skills, .. } = &node.kind
            && let Some(m) = skills.first().and_then(|s| fixer_model(&s.inputs))
            && fixer_model(&node.sandbox).as_ref() != Some(&m)
        {
            named.push((m, format!("{id}.codex_config.fixer.model")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &node.models {
            if !seen.insert(m) {
                diags.push(Diagnostic::error(
                    Some(node.loc.clone()),
                    format!("{id}.models"),
                    format!("model `{m}` is listed twice"),
                ));
            }
        }
        for (m, field) in named {
            if crate::routing::is_router(&m) || m.contains("${") || catalog.get(&m).is_some() {
                continue;
            }
            let hint = suggestion(&m, catalog.names());
            let file = catalog
                .source()
                .map_or("the built-in models file".to_owned(), |p| {
                    format!("`{}`", p.display())
                });
            diags.push(Diagnostic::error(
                Some(node.loc.clone()),
                field,
                format!("unknown model `{m}`: not in {file}{hint}"),
            ));
        }
        if !node.models.is_empty() {
            if let NodeKind::Tasks {
                skills, for_each, ..
            } = &node.kind
                && (skills.len() > 1 || for_each.is_some())
            {
                diags.push(Diagnostic::error(
                    Some(node.loc.clone()),
                    format!("{id}.models"),
                    "a stage with `models: [..]` sends one skill's prompt to each model; give it one `skill` and no `for_each`",
                ));
            }
            if !matches!(node.kind, NodeKind::Tasks { .. }) {
                diags.push(Diagnostic::error(
                    Some(node.loc.clone()),
                    format!("{id}.models"),
                    "`models: [..]` needs a `skill` whose prompt goes to each model",
                ));
            }
        }
    }
}

/// A source of references: the field it came from, where it was written,
/// and the references (or why they could not be read).
type Source = (String, Loc, Result<Vec<Reference>, EvalError>);

/// Every template and condition of a node, each at its own location.
fn sources(plan: &Plan, n: NodeId) -> Vec<Source> {
    let node = &plan.nodes[n];
    let id = &node.local_id;
    let mut out = Vec::new();
    for (k, v) in &node.inputs {
        let loc = node
            .input_locs
            .get(k)
            .cloned()
            .unwrap_or_else(|| node.loc.clone());
        out.push((format!("{id}.inputs.{k}"), loc, value_references(v)));
    }
    if let NodeKind::Tasks {
        skills, for_each, ..
    } = &node.kind
    {
        for (i, s) in skills.iter().enumerate() {
            out.push((
                format!("{id}.skills[{i}].inputs"),
                s.loc.clone(),
                value_references(&Value::Object(s.inputs.clone())),
            ));
        }
        if let Some(fe) = for_each {
            out.push((
                format!("{id}.for_each"),
                node.loc.clone(),
                value_references(fe),
            ));
        }
    }
    if let Some(c) = &node.condition {
        out.push((
            format!("{id}.condition"),
            c.loc.clone(),
            Ok(c.cond.references()),
        ));
    }
    if let NodeKind::Branch { branches, .. } = &node.kind {
        for b in branches {
            if let Some(c) = &b.condition {
                out.push((
                    format!("{id}.branches.{}.condition", b.name),
                    c.loc.clone(),
                    Ok(c.cond.references()),
                ));
            }
        }
    }
    out
}

fn check_references(plan: &Plan, diags: &mut Vec<Diagnostic>) {
    for n in 0..plan.nodes.len() {
        let node = &plan.nodes[n];
        let stage_ids = stage_ids(plan, node.scope);
        let inputs: Vec<&str> = plan.scopes[node.scope]
            .inputs
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        for (field, loc, refs) in sources(plan, n) {
            let refs = match refs {
                Ok(r) => r,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        Some(loc),
                        field,
                        format!("invalid template: {e}"),
                    ));
                    continue;
                }
            };
            for r in refs {
                if let Some(problem) = unresolvable(&r, &stage_ids, &inputs) {
                    diags.push(problem.into_diag(loc.clone(), field.clone()));
                }
            }
        }
    }
}

enum Problem {
    Error(String),
    Warning(String),
}

impl Problem {
    fn into_diag(self, loc: Loc, field: String) -> Diagnostic {
        match self {
            Problem::Error(m) => Diagnostic::error(Some(loc), field, m),
            Problem::Warning(m) => Diagnostic::warning(Some(loc), field, m),
        }
    }
}

fn unresolvable(r: &Reference, stage_ids: &BTreeSet<String>, inputs: &[&str]) -> Option<Problem> {
    let shown = format!("${{{}}}", r.text);
    match r.root.as_str() {
        "inputs" => {
            let name = r.rest.first()?;
            if inputs.contains(&name.as_str()) {
                return None;
            }
            if inputs.is_empty() {
                return Some(Problem::Warning(format!(
                    "`{shown}` reads input `{name}`, which the cascade does not declare"
                )));
            }
            let hint = suggestion(name, inputs.iter().copied());
            Some(Problem::Error(format!(
                "`{shown}`: undefined input `{name}`{hint}"
            )))
        }
        "cascade" => {
            let field = r.rest.first()?;
            if CASCADE_FIELDS.contains(&field.as_str()) {
                return None;
            }
            let hint = suggestion(field, CASCADE_FIELDS.iter().copied());
            Some(Problem::Error(format!(
                "`{shown}`: the cascade has no field `{field}`{hint}"
            )))
        }
        root if RESERVED_IDS.contains(&root) || stage_ids.contains(root) => None,
        _ if r.bare => None, // may be an input given at run time, memory, or an output field
        root => {
            let hint = suggestion(root, stage_ids.iter().map(String::as_str));
            Some(Problem::Error(format!(
                "`{shown}`: unknown stage `{root}`{hint}"
            )))
        }
    }
}

fn stage_ids(plan: &Plan, scope: ScopeId) -> BTreeSet<String> {
    plan.nodes
        .iter()
        .filter(|n| n.scope == scope)
        .map(|n| n.local_id.clone())
        .collect()
}

fn check_inputs(cascade: &Cascade, opts: &PlanOptions, diags: &mut Vec<Diagnostic>) {
    let Some(given) = &opts.inputs else { return };
    for decl in &cascade.inputs {
        if decl.required && decl.default.is_none() && !given.contains_key(&decl.name) {
            diags.push(Diagnostic::error(
                Some(decl.loc.clone()),
                format!("inputs.{}", decl.name),
                format!(
                    "missing required input `{}` (pass --input {}=VALUE)",
                    decl.name, decl.name
                ),
            ));
        }
    }
    if !cascade.inputs.is_empty() {
        for name in given.keys() {
            if !cascade.inputs.iter().any(|d| &d.name == name) {
                let hint = suggestion(name, cascade.inputs.iter().map(|d| d.name.as_str()));
                diags.push(Diagnostic::warning(
                    None,
                    format!("inputs.{name}"),
                    format!("input `{name}` is not declared by the cascade{hint}"),
                ));
            }
        }
    }
}
