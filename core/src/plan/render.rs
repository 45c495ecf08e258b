//! `coordinator plan`: the DAG as text, JSON, Graphviz dot or Mermaid.

use serde_json::{Value, json};

use super::options::SANDBOX_SKILL;
use super::{BlockId, BranchSelector, NodeId, NodeKind, Plan};
use crate::routing::{self, Planned};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

impl Format {
    /// Every format's name, as `--format` takes it.
    pub const NAMES: [&'static str; 4] = ["text", "json", "dot", "mermaid"];

    /// The format called `name` (one of [`Format::NAMES`]).
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            "dot" => Some(Format::Dot),
            "mermaid" => Some(Format::Mermaid),
            _ => None,
        }
    }
}

pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Json => serde_json::to_string_pretty(&json_plan(plan)).unwrap_or_default() + "\n",
        Format::Dot => dot(plan),
        Format::Mermaid => mermaid(plan),
    }
}

/// A codex-sandbox stage's loop in one line: test, fixer, bounds, sandbox.
fn sandbox_text(plan: &Plan, n: NodeId) -> Option<String> {
    let node = &plan.nodes[n];
    let NodeKind::Tasks { skills, .. } = &node.kind else {
        return None;
    };
    let s = skills.first().filter(|s| s.skill == SANDBOX_SKILL)?;
    let get = |k: &str| {
        s.inputs
            .get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
    };
    let test = get("test")
        .map(|t| format!("`{t}`"))
        .or_else(|| get("test_skill").map(|t| format!("skill {t}")))
        .unwrap_or_else(|| "?".into());
    let fixer = get("fix_command")
        .map(|f| format!("command `{f}`"))
        .or_else(|| get("fixer"))
        .or_else(|| node.model.as_ref().map(|m| format!("model {m}")))
        .unwrap_or_else(|| "?".into());
    let network = match (get("network"), get("network_disabled")) {
        (Some(v), _) if v == "true" => "network allowed",
        (_, Some(v)) if v == "false" => "network allowed",
        _ => "no network",
    };
    Some(format!(
        "test {test}; fixer {fixer}; up to {} iterations; sandbox {}; {network}{}",
        get("max_iterations").unwrap_or_else(|| "5".into()),
        get("sandbox").unwrap_or_else(|| "best-effort".into()),
        if get("apply").is_some_and(|a| a == "true") {
            "; applies the patch"
        } else {
            ""
        }
    ))
}

fn budget_text(b: &crate::spec::Budget) -> String {
    let mut parts = Vec::new();
    if let Some(t) = b.max_tokens {
        parts.push(format!("{t} tokens"));
    }
    if let Some(c) = b.max_cost_usd {
        parts.push(format!("${c}"));
    }
    parts.join(", ")
}

/// The model a node's tasks will use, and why.
pub fn model_of(plan: &Plan, n: NodeId) -> Option<(String, String)> {
    let node = &plan.nodes[n];
    let requested = match &node.kind {
        NodeKind::Tasks { skills, .. } => skills
            .iter()
            .find_map(|s| s.model.clone())
            .or_else(|| node.model.clone()),
        _ => node.model.clone(),
    };
    if !node.models.is_empty() {
        let select = node.select.as_ref().map_or("all", |s| s.mode.as_str());
        let judge = node
            .select
            .as_ref()
            .and_then(|s| s.judge.as_deref())
            .map(|j| format!(", judged by {j}"))
            .unwrap_or_default();
        return Some((
            node.models.join(", "),
            format!("one prompt to each; select: {select}{judge}"),
        ));
    }
    let requested = match (requested, node.ty) {
        (Some(m), _) => m,
        (None, crate::spec::StageType::MultiModel) => "auto-select".to_owned(),
        (None, _) => return None,
    };
    Some(match routing::plan(&requested, &node.inputs) {
        Planned::Model(sel) => {
            let estimate = crate::models::estimate_tokens(
                &serde_json::to_string(&node.inputs).unwrap_or_default(),
            );
            let chosen = routing::select_with(&requested, &node.inputs, &plan.models, estimate);
            let why = match plan.models.get(&chosen.model) {
                Some(d) => format!(
                    "{}; {} via {}, context {} tokens, ${}/${} per 1k tokens in/out",
                    if chosen.model == sel.model {
                        sel.reason
                    } else {
                        chosen.reason
                    },
                    d.model_id,
                    d.provider.as_str(),
                    d.context,
                    d.price_in_per_1k,
                    d.price_out_per_1k
                ),
                None => format!("{}; not in the models file", sel.reason),
            };
            (chosen.model, why)
        }
        Planned::AtRunTime(why) => ("decided at run time".to_owned(), why),
    })
}

fn kind_label(plan: &Plan, n: NodeId) -> String {
    let node = &plan.nodes[n];
    match &node.kind {
        NodeKind::Tasks {
            skills,
            parallel,
            for_each,
        } => {
            let names: Vec<&str> = skills.iter().map(|s| s.skill.as_str()).collect();
            let mode = if *parallel { "in parallel" } else { "in order" };
            let each = if for_each.is_some() {
                ", for each item"
            } else {
                ""
            };
            format!("skills {} ({mode}{each})", names.join(", "))
        }
        NodeKind::Pass => "no skill (outputs its inputs)".to_owned(),
        NodeKind::Branch { branches, .. } => format!("{} branches", branches.len()),
        NodeKind::Group { block } => format!("{} substages", plan.blocks[*block].nodes.len()),
        NodeKind::Sub { cascade, .. } => format!("sub-cascade `{cascade}`"),
    }
}

fn text(plan: &Plan) -> String {
    let mut out = format!("cascade {} ({} stages)\n", plan.name, plan.nodes.len());
    text_block(plan, plan.root, 1, &mut out);
    out
}

fn text_block(plan: &Plan, block: BlockId, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for &n in &plan.blocks[block].nodes {
        let node = &plan.nodes[n];
        out.push_str(&format!(
            "{pad}{} [{}] {}\n",
            node.local_id,
            node.ty.as_str(),
            kind_label(plan, n)
        ));
        let deps: Vec<&str> = node
            .deps
            .iter()
            .map(|&d| plan.nodes[d].local_id.as_str())
            .collect();
        out.push_str(&format!(
            "{pad}    after: {}\n",
            if deps.is_empty() {
                "(start)".to_owned()
            } else {
                deps.join(", ")
            }
        ));
        if let Some((model, why)) = model_of(plan, n) {
            out.push_str(&format!("{pad}    model: {model} ({why})\n"));
        }
        if let Some(b) = &node.budget {
            out.push_str(&format!("{pad}    budget: {}\n", budget_text(b)));
        }
        if let Some(l) = sandbox_text(plan, n) {
            out.push_str(&format!("{pad}    loop: {l}\n"));
        }
        if let Some(w) = &node.swarm {
            let agents = w.max_agents.map_or("auto".to_owned(), |m| m.to_string());
            out.push_str(
                &format!(
                    "{pad}    topology: {:?}, strategy {:?}, max agents {agents}\n",
                    w.topology, w.strategy
                )
                .to_lowercase(),
            );
        }
        if let (Some(c), false) = (
            &node.condition,
            node.repeat.is_some() || matches!(node.kind, NodeKind::Branch { .. }),
        ) {
            out.push_str(&format!("{pad}    only if: {}\n", c.text));
        }
        if let Some(r) = &node.repeat {
            let cond = node
                .condition
                .as_ref()
                .map_or("always".to_owned(), |c| format!("while {}", c.text));
            out.push_str(&format!(
                "{pad}    loop: back to {} ({cond}), at most {} iterations\n",
                plan.nodes[r.target].local_id, r.max_iterations
            ));
        }
        if node.error.strategy != crate::spec::ErrorStrategy::Fail || node.error.max_retries > 0 {
            let fb = node
                .error
                .fallback
                .as_ref()
                .map(|f| format!(", fallback {f}"))
                .unwrap_or_default();
            out.push_str(
                &format!(
                    "{pad}    on error: {} (up to {} retries, {:?} backoff{fb})\n",
                    node.error.strategy.as_str(),
                    node.error.max_retries,
                    node.error.backoff.kind
                )
                .to_lowercase(),
            );
        }
        match &node.kind {
            NodeKind::Branch {
                branches,
                default,
                selector,
            } => {
                if let (Some(c), BranchSelector::Named | BranchSelector::PassFail) =
                    (&node.condition, selector)
                {
                    out.push_str(&format!("{pad}    select by: {}\n", c.text));
                }
                for (i, b) in branches.iter().enumerate() {
                    let when = match (&b.condition, Some(i) == *default) {
                        (Some(c), true) => format!("if {} (default)", c.text),
                        (Some(c), false) => format!("if {}", c.text),
                        (None, true) => "default".to_owned(),
                        (None, false) => match selector {
                            BranchSelector::PassFail => "if the condition holds".to_owned(),
                            _ => "when selected by name".to_owned(),
                        },
                    };
                    out.push_str(&format!("{pad}    branch {} ({when}):\n", b.name));
                    text_block(plan, b.block, depth + 3, out);
                }
            }
            NodeKind::Group { block } | NodeKind::Sub { block, .. } => {
                text_block(plan, *block, depth + 2, out)
            }
            _ => {}
        }
    }
}

fn json_plan(plan: &Plan) -> Value {
    json!({
        "cascade": plan.name,
        "stages": json_block(plan, plan.root),
    })
}

fn json_block(plan: &Plan, block: BlockId) -> Value {
    Value::Array(
        plan.blocks[block]
            .nodes
            .iter()
            .map(|&n| json_node(plan, n))
            .collect(),
    )
}

fn json_node(plan: &Plan, n: NodeId) -> Value {
    let node = &plan.nodes[n];
    let mut v = json!({
        "id": node.id,
        "stage_id": node.local_id,
        "type": node.ty,
        "dependencies": node.deps.iter().map(|&d| plan.nodes[d].local_id.clone()).collect::<Vec<_>>(),
        "error_handling": {"strategy": node.error.strategy, "max_retries": node.error.max_retries, "backoff": node.error.backoff, "fallback": node.error.fallback},
    });
    let obj = v.as_object_mut().expect("built as an object");
    if let Some((model, why)) = model_of(plan, n) {
        obj.insert("model".into(), json!({"name": model, "reason": why}));
    }
    if let Some(b) = &node.budget {
        obj.insert("budget".into(), json!(b));
    }
    if let Some(c) = &node.condition {
        obj.insert("condition".into(), json!(c.text));
    }
    if let Some(w) = &node.swarm {
        obj.insert(
            "swarm".into(),
            json!({"topology": w.topology, "strategy": w.strategy, "max_agents": w.max_agents}),
        );
    }
    if let Some(r) = &node.repeat {
        obj.insert(
            "repeat".into(),
            json!({"target": plan.nodes[r.target].local_id, "max_iterations": r.max_iterations}),
        );
    }
    match &node.kind {
        NodeKind::Tasks {
            skills,
            parallel,
            for_each,
        } => {
            obj.insert(
                "skills".into(),
                json!(skills.iter().map(|s| s.skill.clone()).collect::<Vec<_>>()),
            );
            obj.insert("parallel".into(), json!(parallel));
            if let Some(fe) = for_each {
                obj.insert("for_each".into(), fe.clone());
            }
        }
        NodeKind::Branch {
            branches, default, ..
        } => {
            let bs: Vec<Value> = branches
                .iter()
                .enumerate()
                .map(|(i, b)| json!({"name": b.name, "condition": b.condition.as_ref().map(|c| c.text.clone()), "default": Some(i) == *default, "stages": json_block(plan, b.block)}))
                .collect();
            obj.insert("branches".into(), Value::Array(bs));
        }
        NodeKind::Group { block } => {
            obj.insert("substages".into(), json_block(plan, *block));
        }
        NodeKind::Sub { block, cascade, .. } => {
            obj.insert("cascade".into(), json!(cascade));
            obj.insert("stages".into(), json_block(plan, *block));
        }
        NodeKind::Pass => {}
    }
    v
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=rounded];\n",
        quote(&plan.name)
    );
    for (n, node) in plan.nodes.iter().enumerate() {
        let shape = match node.kind {
            NodeKind::Branch { .. } => ", shape=diamond",
            _ => "",
        };
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\n[{}]\"{shape}];\n",
            quote(&node.id),
            quote(&node.local_id),
            node.ty.as_str()
        ));
        for &d in &node.deps {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                quote(&plan.nodes[d].id),
                quote(&node.id)
            ));
        }
        for (label, block) in child_edges(plan, n) {
            for &first in plan.blocks[block]
                .nodes
                .iter()
                .filter(|&&c| plan.nodes[c].deps.is_empty())
            {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\" [style=dashed, label=\"{}\"];\n",
                    quote(&node.id),
                    quote(&plan.nodes[first].id),
                    quote(&label)
                ));
            }
        }
        if let Some(r) = &node.repeat {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [style=dotted, label=\"repeat ≤{}\", constraint=false];\n",
                quote(&node.id),
                quote(&plan.nodes[r.target].id),
                r.max_iterations
            ));
        }
    }
    out.push_str("}\n");
    out
}

fn child_edges(plan: &Plan, n: NodeId) -> Vec<(String, BlockId)> {
    match &plan.nodes[n].kind {
        NodeKind::Branch { branches, .. } => {
            branches.iter().map(|b| (b.name.clone(), b.block)).collect()
        }
        NodeKind::Group { block } => vec![("substages".into(), *block)],
        NodeKind::Sub { block, cascade, .. } => vec![(format!("cascade {cascade}"), *block)],
        _ => Vec::new(),
    }
}

fn mermaid(plan: &Plan) -> String {
    let id = |n: NodeId| format!("n{n}");
    let mut out = String::from("flowchart TD\n");
    for (n, node) in plan.nodes.iter().enumerate() {
        let label = format!("{}<br/>[{}]", node.local_id, node.ty.as_str()).replace('"', "'");
        match node.kind {
            NodeKind::Branch { .. } => out.push_str(&format!("  {}{{\"{label}\"}}\n", id(n))),
            _ => out.push_str(&format!("  {}[\"{label}\"]\n", id(n))),
        }
        for &d in &node.deps {
            out.push_str(&format!("  {} --> {}\n", id(d), id(n)));
        }
        for (label, block) in child_edges(plan, n) {
            for &first in plan.blocks[block]
                .nodes
                .iter()
                .filter(|&&c| plan.nodes[c].deps.is_empty())
            {
                out.push_str(&format!(
                    "  {} -.->|{}| {}\n",
                    id(n),
                    label.replace('|', "/"),
                    id(first)
                ));
            }
        }
        if let Some(r) = &node.repeat {
            out.push_str(&format!(
                "  {} -.->|repeat ≤{}| {}\n",
                id(n),
                r.max_iterations,
                id(r.target)
            ));
        }
    }
    out
}
