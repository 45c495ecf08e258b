//! Every accepted variant of the cascade format, normalised into
//! [`Cascade`](super::model::Cascade).
//!
//! Variants handled here (see CASCADE-FORMAT.md): sections at the top level
//! or under `cascade:`; `cascade: NAME` with stages beside it; inputs as a
//! list or a map; `skill`/`skills` as strings or objects; `condition` or
//! `conditions`; branches as a list, a map or pass/fail; the `stage` /
//! `skill_id` / `id` aliases (and `name` when no id is given); the
//! `workflows:` variant; error handling as a mapping or a list of strategy
//! names. A numbered-list document is refused with a message saying how to
//! write it.

use std::collections::BTreeMap;
use std::path::Path;

use cascade_eval::Condition;
use serde_json::{Map, Value};

use super::fields::{Fields, Reader};
use super::model::*;
use super::yaml::{Kind, Loc, Node};

mod operations;

pub(super) const DOC_SECTIONS: &[&str] = &[
    "name",
    "description",
    "version",
    "config",
    "inputs",
    "stages",
    "memory",
    "error_handling",
    "github_integration",
    "quality_gates",
    "notifications",
    "monitoring",
    "timeout",
    "data_flow",
    "hooks",
    "workflows",
    "budget",
];

/// Sections accepted now whose behaviour comes with a later part of the
/// system; each use is a warning, never silently ignored.
const DEFERRED_SECTIONS: &[(&str, &str)] = &[
    ("monitoring", "monitoring settings are not applied yet"),
    (
        "data_flow",
        "`data_flow` is descriptive only: data flows through ${...} references",
    ),
];

pub const STAGE_FIELDS: &[&str] = &[
    "stage_id",
    "stage",
    "skill_id",
    "id",
    "name",
    "description",
    "type",
    "model",
    "skill",
    "skills",
    "steps",
    "inputs",
    "outputs",
    "dependencies",
    "depends_on",
    "condition",
    "conditions",
    "branches",
    "repeat",
    "max_iterations",
    "memory",
    "memory_shared",
    "swarm_config",
    "codex_config",
    "test_suite",
    "tests",
    "fix_strategy",
    "error_recovery",
    "error_handling",
    "cascade",
    "substages",
    "timeout",
    "task_timeout",
    "for_each",
    "priority",
    "models",
    "select",
    "judge",
    "budget",
];

/// Fields of a branch; `name` first (a map branch takes the rest).
pub(super) const BRANCH_FIELDS: &[&str] = &[
    "name",
    "condition",
    "conditions",
    "stages",
    "default",
    "description",
    "skill",
    "skills",
    "model",
    "cascade",
    "inputs",
];

const ID_KEYS: &[&str] = &["stage_id", "stage", "skill_id", "id"];

/// Normalises one parsed document. Sub-cascades are resolved by the loader.
pub fn document(r: &mut Reader, root: &Node, file: &Path) -> Option<Cascade> {
    let Kind::Map(entries) = &root.kind else {
        r.error(
            &root.loc,
            "",
            format!("a cascade must be a mapping, found {}", root.type_name()),
        );
        return None;
    };
    let mut top_allowed: Vec<&str> = DOC_SECTIONS.to_vec();
    top_allowed.push("cascade");
    let top = r.fields(root, "", "the document", &top_allowed)?;
    let _ = entries;

    // `cascade:` is either the section holding everything, or the name.
    let mut nested: Option<Fields<'_>> = None;
    let mut name_from_cascade: Option<(String, Loc)> = None;
    if let Some(c) = top.get("cascade") {
        match &c.kind {
            Kind::Map(_) => nested = r.fields(c, "cascade", "the `cascade` section", DOC_SECTIONS),
            Kind::Str(s) => name_from_cascade = Some((s.clone(), c.loc.clone())),
            _ => r.error(
                &c.loc,
                "cascade",
                format!("expected a mapping or a name, found {}", c.type_name()),
            ),
        }
    }

    // Each section from the top level or from under `cascade:`, never both.
    let section = |r: &mut Reader, key: &str| -> Option<(&Node, String)> {
        let a = top.get(key);
        let b = nested.as_ref().and_then(|n| n.get(key));
        match (a, b) {
            (Some(x), Some(y)) => {
                r.error(
                    &y.loc,
                    format!("cascade.{key}"),
                    format!(
                        "`{key}` is given both at the top level (line {}) and under `cascade:`",
                        x.loc.line
                    ),
                );
                Some((y, format!("cascade.{key}")))
            }
            (Some(x), None) => Some((x, key.to_owned())),
            (None, Some(y)) => Some((y, format!("cascade.{key}"))),
            (None, None) => None,
        }
    };

    let name = match (section(r, "name"), name_from_cascade) {
        (Some((n, f)), _) => r.string(n, &f),
        (None, Some((n, _))) => Some(n),
        (None, None) => {
            r.error(&root.loc, "cascade.name", "a cascade needs a `name`");
            None
        }
    };
    let description = section(r, "description").and_then(|(n, f)| r.string(n, &f));
    let version = section(r, "version")
        .and_then(|(n, f)| r.string(n, &f))
        .unwrap_or_else(|| "1.0.0".into());
    let config = section(r, "config")
        .map(|(n, f)| r.value_map(n, &f))
        .unwrap_or_default();
    let inputs = section(r, "inputs")
        .map(|(n, f)| input_decls(r, n, &f))
        .unwrap_or_default();
    let memory = section(r, "memory")
        .map(|(n, f)| memory_config(r, n, &f))
        .unwrap_or_default();
    let error_handling = section(r, "error_handling").and_then(|(n, f)| error_handling(r, n, &f));
    let timeout = section(r, "timeout").and_then(|(n, f)| r.duration(n, &f));
    let budget = section(r, "budget").and_then(|(n, f)| budget(r, n, &f));

    let mut ops = Operations::default();
    if let Some((n, f)) = section(r, "github_integration") {
        ops.github = operations::github(r, n, &f);
    }
    if let Some((n, f)) = section(r, "notifications") {
        ops.notifications = operations::notifications(r, n, &f);
    }
    if let Some((n, f)) = section(r, "quality_gates") {
        ops.quality_gates = operations::quality_gates(r, n, &f);
    }
    if let Some((n, f)) = section(r, "hooks") {
        ops.hooks = operations::hooks(r, n, &f);
    }

    let mut deferred = BTreeMap::new();
    for (key, why) in DEFERRED_SECTIONS {
        if let Some((n, f)) = section(r, key) {
            r.warn(&n.loc, f, *why);
            deferred.insert((*key).to_owned(), n.to_json());
        }
    }

    let stages = match (section(r, "stages"), section(r, "workflows")) {
        (Some((s, _)), Some((w, _))) => {
            r.error(
                &w.loc,
                "workflows",
                format!(
                    "give either `stages` (line {}) or `workflows`, not both",
                    s.loc.line
                ),
            );
            Vec::new()
        }
        (Some((s, f)), None) => stage_list(r, s, &f, true),
        (None, Some((w, f))) => stage_list(r, w, &f, false),
        (None, None) => {
            r.error(
                &root.loc,
                "stages",
                "a cascade needs `stages` (or `workflows`)",
            );
            Vec::new()
        }
    };

    let all: Vec<&Stage> = {
        fn walk<'a>(s: &'a Stage, out: &mut Vec<&'a Stage>) {
            out.push(s);
            s.children().into_iter().for_each(|c| walk(c, out));
        }
        let mut out = Vec::new();
        stages.iter().for_each(|s| walk(s, &mut out));
        out
    };
    operations::check_stage_names(r, &ops, &all);

    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    Some(Cascade {
        name: name.unwrap_or_default(),
        description,
        version,
        file: file.to_path_buf(),
        dir,
        config,
        inputs,
        stages,
        memory,
        error_handling,
        timeout,
        budget,
        operations: ops,
        deferred,
        subcascades: BTreeMap::new(),
    })
}

fn input_decls(r: &mut Reader, node: &Node, field: &str) -> Vec<InputDecl> {
    let mut out = Vec::new();
    match &node.kind {
        Kind::Null => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                if let Some(name) = item.as_str() {
                    out.push(InputDecl {
                        name: name.to_owned(),
                        ty: None,
                        description: None,
                        required: false,
                        default: None,
                        loc: item.loc.clone(),
                    });
                    continue;
                }
                let Some(fs) = r.fields(
                    item,
                    &f,
                    "an input",
                    &["name", "type", "description", "required", "default"],
                ) else {
                    continue;
                };
                let Some(name) = r.opt_string(&fs, "name") else {
                    r.error(&item.loc, f, "an input needs a `name`");
                    continue;
                };
                out.push(input_decl(r, name, &fs, item.loc.clone()));
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else {
                    continue;
                };
                let f = format!("{field}.{name}");
                if matches!(v.kind, Kind::Map(_)) {
                    if let Some(fs) = r.fields(
                        v,
                        &f,
                        "an input",
                        &["type", "description", "required", "default"],
                    ) {
                        out.push(input_decl(r, name, &fs, k.loc.clone()));
                    }
                } else {
                    // `name: value` is shorthand for a default value.
                    let default = if matches!(v.kind, Kind::Null) {
                        None
                    } else {
                        Some(v.to_json())
                    };
                    out.push(InputDecl {
                        name,
                        ty: None,
                        description: None,
                        required: false,
                        default,
                        loc: k.loc.clone(),
                    });
                }
            }
        }
        _ => r.error(
            &node.loc,
            field,
            format!(
                "`inputs` must be a list or a mapping, found {}",
                node.type_name()
            ),
        ),
    }
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for d in &out {
        if let Some(line) = seen.insert(d.name.clone(), d.loc.line) {
            r.error(
                &d.loc,
                field,
                format!(
                    "input `{}` is declared twice (first at line {line})",
                    d.name
                ),
            );
        }
    }
    out
}

fn input_decl(r: &mut Reader, name: String, fs: &Fields<'_>, loc: Loc) -> InputDecl {
    let ty = r.opt_string(fs, "type");
    let description = r.opt_string(fs, "description");
    let default = fs.get("default").map(Node::to_json);
    let required = r.opt_bool(fs, "required").unwrap_or(false);
    InputDecl {
        name,
        ty,
        description,
        required,
        default,
        loc,
    }
}

fn memory_config(r: &mut Reader, node: &Node, field: &str) -> MemoryConfig {
    const KEYS: &[&str] = &[
        "persistence",
        "scope",
        "retention",
        "keys",
        "cleanup_between_stages",
        "cleanup_on_exit",
        "max_memory_mb",
        "checkpoints",
        "storage",
    ];
    let Some(fs) = r.fields(node, field, "the `memory` section", KEYS) else {
        return MemoryConfig::default();
    };
    let enabled = r.opt_bool(&fs, "persistence").unwrap_or(true);
    let scope = fs
        .get("scope")
        .and_then(|n| {
            r.choice(n, &fs.field("scope"), &["cascade", "global"], |s| match s {
                "cascade" => Some(MemoryScope::Cascade),
                "global" => Some(MemoryScope::Global),
                _ => None,
            })
        })
        .unwrap_or_default();
    if let Some(n) = fs.get("storage") {
        r.warn(&n.loc, fs.field("storage"), "`storage` is ignored: memory lives in the configured store (local disk, or JetStream KV on a swarm)");
    }
    let checkpoints = r.opt_string_list(&fs, "checkpoints");
    if let Some(n) = fs.get("checkpoints") {
        r.warn(&n.loc, fs.field("checkpoints"), "checkpoints are not written by the embedded runner yet; every stage's result is kept in the results file");
    }
    MemoryConfig {
        enabled,
        scope,
        retention: r.opt_duration(&fs, "retention"),
        keys: r.opt_string_list(&fs, "keys"),
        cleanup_between_stages: r.opt_bool(&fs, "cleanup_between_stages").unwrap_or(false),
        cleanup_on_exit: r.opt_bool(&fs, "cleanup_on_exit").unwrap_or(false),
        max_memory_mb: r.opt_uint(&fs, "max_memory_mb", 1, 1 << 20),
        checkpoints,
    }
}

pub fn error_handling(r: &mut Reader, node: &Node, field: &str) -> Option<ErrorHandling> {
    const KEYS: &[&str] = &[
        "strategy",
        "max_retries",
        "retries",
        "backoff",
        "base_delay",
        "max_delay",
        "jitter",
        "fallback",
        "escalate_after",
        "escalation",
        "continue_on_failure",
        "max_iterations",
    ];
    // The seed's prose form: a list of strategy names.
    if let Kind::Seq(items) = &node.kind {
        let mut eh = ErrorHandling::default();
        let mut first = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(s) = r.string(item, &f) else {
                continue;
            };
            if s.replace('_', "-") == "fallback-to-alternative" {
                r.warn(&item.loc, f, "`fallback_to_alternative` names no skill; use `fallback: SKILL` in an error_handling mapping");
                continue;
            }
            match ErrorStrategy::parse(&s) {
                Some(st) if first => {
                    eh.strategy = st;
                    first = false;
                }
                Some(_) => r.warn(
                    &item.loc,
                    f,
                    format!("only the first strategy of the list applies; `{s}` is not used"),
                ),
                None => {
                    let hint = crate::suggest::suggestion(&s, ErrorStrategy::NAMES);
                    r.error(&item.loc, f, format!("unknown strategy `{s}`{hint}"));
                }
            }
        }
        if eh.strategy != ErrorStrategy::Fail {
            eh.max_retries = 3;
        }
        return Some(eh);
    }
    let fs = r.fields(node, field, "`error_handling`", KEYS)?;
    let mut eh = ErrorHandling::default();
    if let Some(n) = fs.get("strategy")
        && let Some(s) = r.choice(
            n,
            &fs.field("strategy"),
            &ErrorStrategy::NAMES,
            ErrorStrategy::parse,
        )
    {
        eh.strategy = s;
    }
    let default_retries = if eh.strategy == ErrorStrategy::Fail {
        0
    } else {
        3
    };
    eh.max_retries = fs
        .first_of(&["max_retries", "retries"])
        .and_then(|(k, n)| r.uint(n, &fs.field(k), 0, 1000))
        .map_or(default_retries, |v| v as u32);
    if let Some(n) = fs.get("backoff") {
        backoff(r, n, &fs.field("backoff"), &mut eh.backoff);
    }
    if let Some(d) = r.opt_duration(&fs, "base_delay") {
        eh.backoff.base_ms = d.as_millis() as u64;
    }
    if let Some(d) = r.opt_duration(&fs, "max_delay") {
        eh.backoff.max_ms = d.as_millis() as u64;
    }
    if let Some(j) = r.opt_bool(&fs, "jitter") {
        eh.backoff.jitter = j;
    }
    eh.fallback = r.opt_string(&fs, "fallback");
    eh.escalate_after = r.opt_uint(&fs, "escalate_after", 1, 1000).map(|v| v as u32);
    eh.escalation = fs.get("escalation").map(Node::to_json);
    eh.continue_on_failure = r.opt_bool(&fs, "continue_on_failure");
    if let Some(n) = fs.get("max_iterations") {
        // codex-auto-fix's iteration budget; until the sandbox loop exists
        // it bounds the retries.
        if let Some(v) = r.uint(n, &fs.field("max_iterations"), 1, 1000)
            && !fs.has("max_retries")
            && !fs.has("retries")
        {
            eh.max_retries = v as u32;
        }
    }
    Some(eh)
}

fn backoff(r: &mut Reader, node: &Node, field: &str, out: &mut Backoff) {
    let kinds = ["immediate", "linear", "exponential"];
    let parse = |s: &str| match s {
        "immediate" | "none" => Some(BackoffKind::Immediate),
        "linear" | "fixed" => Some(BackoffKind::Linear),
        "exponential" => Some(BackoffKind::Exponential),
        _ => None,
    };
    if let Kind::Map(_) = node.kind {
        let Some(fs) = r.fields(
            node,
            field,
            "`backoff`",
            &[
                "type",
                "kind",
                "base",
                "base_delay",
                "max",
                "max_delay",
                "jitter",
            ],
        ) else {
            return;
        };
        if let Some((k, n)) = fs.first_of(&["type", "kind"])
            && let Some(kind) = r.choice(n, &fs.field(k), &kinds, parse)
        {
            out.kind = kind;
        }
        if let Some((k, n)) = fs.first_of(&["base", "base_delay"])
            && let Some(d) = r.duration(n, &fs.field(k))
        {
            out.base_ms = d.as_millis() as u64;
        }
        if let Some((k, n)) = fs.first_of(&["max", "max_delay"])
            && let Some(d) = r.duration(n, &fs.field(k))
        {
            out.max_ms = d.as_millis() as u64;
        }
        if let Some(j) = r.opt_bool(&fs, "jitter") {
            out.jitter = j;
        }
    } else if let Some(kind) = r.choice(node, field, &kinds, parse) {
        out.kind = kind;
    }
}

/// A list of stages. `implicit_sequence`: a stage with no `dependencies`
/// runs after the previous one (the main format); the `workflows:` variant
/// states every dependency.
pub fn stage_list(r: &mut Reader, node: &Node, field: &str, implicit_sequence: bool) -> Vec<Stage> {
    match &node.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let mut s = stage(r, item, &format!("{field}[{i}]"))?;
                if !implicit_sequence && s.dependencies.is_none() {
                    s.dependencies = Some(Vec::new());
                }
                Some(s)
            })
            .collect(),
        Kind::Map(entries)
            if entries
                .iter()
                .any(|(k, _)| k.scalar_text().is_some_and(|t| is_numbered(&t))) =>
        {
            r.error(&node.loc, field, "stages are written as a numbered list (`1. model: \"task\"`), which is prose, not a cascade; write a list of stages: `- stage: research` with `skill:` and `model:` fields");
            Vec::new()
        }
        Kind::Null => Vec::new(),
        _ => {
            r.error(
                &node.loc,
                field,
                format!("expected a list of stages, found {}", node.type_name()),
            );
            Vec::new()
        }
    }
}

/// Added to a YAML syntax error in a document holding numbered-list lines.
pub const NUMBERED_LIST_HINT: &str = "; the file holds a numbered list (`1. model: \"task\"`), \
    which is prose, not a cascade: write a list of stages, `- stage: research` with `skill:` \
    and `model:` fields";

/// `1. ...`: a numbered-list item (prose), not a stage.
pub fn is_numbered(key: &str) -> bool {
    let digits = key.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && key[digits..].starts_with('.')
}

fn is_valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn stage(r: &mut Reader, node: &Node, field: &str) -> Option<Stage> {
    let fs = r.fields(node, field, "a stage", STAGE_FIELDS)?;
    let ids: Vec<&str> = ID_KEYS.iter().copied().filter(|k| fs.has(k)).collect();
    if ids.len() > 1 {
        r.error(
            &node.loc,
            field,
            format!(
                "give one id, not {}",
                ids.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        );
    }
    let name = r.opt_string(&fs, "name");
    let id = match fs.first_of(ID_KEYS) {
        Some((k, n)) => r.string(n, &fs.field(k)).map(|s| (s, n.loc.clone(), k)),
        None => match (&name, fs.get("name")) {
            (Some(nm), Some(n)) if is_valid_id(nm) => Some((nm.clone(), n.loc.clone(), "name")),
            _ => {
                r.error(
                    &node.loc,
                    format!("{field}.stage_id"),
                    "a stage needs a `stage_id` (or `stage`, `skill_id`, or an id-like `name`)",
                );
                None
            }
        },
    };
    let (id, id_loc) = match id {
        Some((id, loc, key)) => {
            if !is_valid_id(&id) {
                r.error(&loc, fs.field(key), format!("stage id `{id}` must start with a letter or `_` and hold only letters, digits, `_` and `-`"));
            }
            (id, loc)
        }
        None => (String::new(), node.loc.clone()),
    };

    let ty_node = fs.get("type");
    let ty =
        ty_node.and_then(|n| r.choice(n, &fs.field("type"), &StageType::NAMES, StageType::parse));
    let has_branches = fs.has("branches");
    let ty = ty.unwrap_or(if has_branches {
        StageType::Conditional
    } else {
        StageType::Sequential
    });

    let mut skills = Vec::new();
    match (fs.get("skill"), fs.first_of(&["skills", "steps"])) {
        (Some(a), Some((k, _))) => r.error(
            &a.loc,
            fs.field("skill"),
            format!("give `skill` or `{k}`, not both"),
        ),
        (Some(n), None) => {
            if let Some(s) = r.string(n, &fs.field("skill")) {
                skills.push(SkillRef {
                    skill: s,
                    inputs: Map::new(),
                    outputs: Vec::new(),
                    model: None,
                    priority: None,
                    loc: n.loc.clone(),
                });
            }
        }
        (None, Some((k, n))) => skills = skill_refs(r, n, &fs.field(k)),
        (None, None) => {}
    }

    let inputs = fs
        .get("inputs")
        .map(|n| r.value_map(n, &fs.field("inputs")))
        .unwrap_or_default();
    let input_locs = fs.get("inputs").map(value_locs).unwrap_or_default();
    let outputs = output_names(r, &fs);
    let dependencies = match fs.first_of(&["dependencies", "depends_on"]) {
        Some((k, n)) => {
            if fs.has("dependencies") && fs.has("depends_on") {
                r.error(
                    &n.loc,
                    fs.field(k),
                    "give `dependencies` or `depends_on`, not both",
                );
            }
            Some(r.string_list(n, &fs.field(k)))
        }
        None => None,
    };
    let condition = match (fs.get("condition"), fs.get("conditions")) {
        (Some(a), Some(_)) => {
            r.error(
                &a.loc,
                fs.field("condition"),
                "give `condition` or `conditions`, not both",
            );
            None
        }
        (Some(n), None) => condition(r, n, &fs.field("condition")),
        (None, Some(n)) => condition(r, n, &fs.field("conditions")),
        (None, None) => None,
    };
    let branches = fs
        .get("branches")
        .and_then(|n| branches(r, n, &fs.field("branches"), &id));
    if has_branches && ty != StageType::Conditional && ty_node.is_some() {
        r.error(
            &node.loc,
            fs.field("type"),
            format!(
                "a stage with `branches` is `conditional`, not `{}`",
                ty.as_str()
            ),
        );
    }
    let repeat = fs
        .get("repeat")
        .and_then(|n| r.string(n, &fs.field("repeat")).map(|s| (s, n.loc.clone())));
    let max_iterations = r
        .opt_uint(&fs, "max_iterations", 1, 10_000)
        .map(|v| v as u32);

    let mut memory = StageMemory::default();
    if let Some(n) = fs.get("memory") {
        stage_memory(r, n, &fs.field("memory"), &mut memory);
    }
    memory.shared = r.opt_bool(&fs, "memory_shared").or(memory.shared);
    let swarm = fs
        .get("swarm_config")
        .and_then(|n| swarm_config(r, n, &fs.field("swarm_config")));
    let sandbox = sandbox_config(r, &fs);
    let error_handling = fs
        .get("error_handling")
        .and_then(|n| error_handling(r, n, &fs.field("error_handling")));
    let cascade = fs.get("cascade").and_then(|n| {
        r.string(n, &fs.field("cascade"))
            .map(|s| (s, n.loc.clone()))
    });
    let substages = fs
        .get("substages")
        .map(|n| stage_list(r, n, &fs.field("substages"), true))
        .unwrap_or_default();
    let for_each = fs.get("for_each").map(Node::to_json);
    let models = fs
        .get("models")
        .map(|n| r.string_list(n, &fs.field("models")))
        .unwrap_or_default();
    let select = select(r, &fs);
    if let Some(sel) = &select
        && models.len() < 2
    {
        r.error(
            &sel.loc,
            fs.field("select"),
            "`select` picks among the answers of `models: [..]`; list two or more models",
        );
    }
    let budget = fs
        .get("budget")
        .and_then(|n| budget(r, n, &fs.field("budget")));

    Some(Stage {
        id,
        loc: id_loc,
        name,
        description: r.opt_string(&fs, "description"),
        ty,
        model: r.opt_string(&fs, "model"),
        skills,
        inputs,
        input_locs,
        outputs,
        dependencies,
        condition,
        branches,
        repeat,
        max_iterations,
        memory,
        swarm,
        sandbox,
        error_handling,
        cascade,
        substages,
        timeout: r.opt_duration(&fs, "timeout"),
        task_timeout: r.opt_duration(&fs, "task_timeout"),
        for_each,
        models,
        select,
        budget,
    })
}

fn skill_refs(r: &mut Reader, node: &Node, field: &str) -> Vec<SkillRef> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        Kind::Str(_) => vec![node],
        _ => {
            r.error(
                &node.loc,
                field,
                format!("expected a list of skills, found {}", node.type_name()),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(s) = item.as_str() {
            out.push(SkillRef {
                skill: s.to_owned(),
                inputs: Map::new(),
                outputs: Vec::new(),
                model: None,
                priority: None,
                loc: item.loc.clone(),
            });
            continue;
        }
        let Some(fs) = r.fields(
            item,
            &f,
            "a skill",
            &["skill", "name", "inputs", "outputs", "model", "priority"],
        ) else {
            continue;
        };
        let Some((k, n)) = fs.first_of(&["skill", "name"]) else {
            r.error(&item.loc, f, "a skill entry needs `skill: NAME`");
            continue;
        };
        let Some(skill) = r.string(n, &fs.field(k)) else {
            continue;
        };
        let outputs = output_names(r, &fs);
        out.push(SkillRef {
            skill,
            inputs: fs
                .get("inputs")
                .map(|n| r.value_map(n, &fs.field("inputs")))
                .unwrap_or_default(),
            outputs,
            model: r.opt_string(&fs, "model"),
            priority: fs.get("priority").and_then(|n| match n.kind {
                Kind::Int(i) => Some(i),
                _ => None,
            }),
            loc: item.loc.clone(),
        });
    }
    out
}

fn condition(r: &mut Reader, node: &Node, field: &str) -> Option<CondSpec> {
    let json = node.to_json();
    let text = match &json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match Condition::from_json(&json) {
        Ok(cond) => Some(CondSpec {
            cond,
            text,
            loc: node.loc.clone(),
        }),
        Err(e) => {
            r.error(&node.loc, field, format!("invalid condition: {e}"));
            None
        }
    }
}

fn stage_memory(r: &mut Reader, node: &Node, field: &str, out: &mut StageMemory) {
    match &node.kind {
        Kind::Str(s) if s == "persistent" => out.persistent = true,
        Kind::Str(s) if s == "shared" => out.shared = Some(true),
        Kind::Bool(b) => out.persistent = *b,
        Kind::Map(_) => {
            let Some(fs) = r.fields(
                node,
                field,
                "stage `memory`",
                &["read_keys", "write_keys", "persistent", "shared"],
            ) else {
                return;
            };
            out.read_keys = r.opt_string_list(&fs, "read_keys");
            out.write_keys = r.opt_string_list(&fs, "write_keys");
            out.persistent = r.opt_bool(&fs, "persistent").unwrap_or(false);
            out.shared = r.opt_bool(&fs, "shared");
        }
        _ => r.error(
            &node.loc,
            field,
            "expected `persistent` or a mapping with `read_keys` / `write_keys`",
        ),
    }
}

fn swarm_config(r: &mut Reader, node: &Node, field: &str) -> Option<SwarmConfig> {
    let fs = r.fields(
        node,
        field,
        "`swarm_config`",
        &["topology", "max_agents", "strategy", "memory_shared"],
    )?;
    let topology = fs
        .get("topology")
        .and_then(|n| {
            r.choice(
                n,
                &fs.field("topology"),
                &["mesh", "star", "hierarchical"],
                |s| match s {
                    "mesh" => Some(Topology::Mesh),
                    "star" => Some(Topology::Star),
                    "hierarchical" => Some(Topology::Hierarchical),
                    _ => None,
                },
            )
        })
        .unwrap_or(Topology::Mesh);
    let strategy = fs
        .get("strategy")
        .and_then(|n| {
            r.choice(
                n,
                &fs.field("strategy"),
                &["balanced", "specialized", "adaptive"],
                |s| match s {
                    "balanced" => Some(Strategy::Balanced),
                    "specialized" => Some(Strategy::Specialized),
                    "adaptive" => Some(Strategy::Adaptive),
                    _ => None,
                },
            )
        })
        .unwrap_or(Strategy::Balanced);
    let max_agents = match fs.get("max_agents") {
        Some(n) if n.as_str() == Some("auto") => None,
        Some(n) => r
            .uint(n, &fs.field("max_agents"), 1, 100_000)
            .map(|v| v as u32),
        None => None,
    };
    Some(SwarmConfig {
        topology,
        max_agents,
        strategy,
        memory_shared: r.opt_bool(&fs, "memory_shared"),
    })
}

fn sandbox_config(r: &mut Reader, fs: &Fields<'_>) -> Option<SandboxConfig> {
    let mut cfg = SandboxConfig::default();
    let mut any = false;
    if let Some((k, n)) = fs.first_of(&["test_suite", "tests"]) {
        cfg.tests = r.string(n, &fs.field(k));
        cfg.loc = Some(n.loc.clone());
        any = true;
    }
    // Later sections refine earlier ones: codex_config, then the recovery
    // settings.
    for key in ["codex_config", "fix_strategy", "error_recovery"] {
        let Some(n) = fs.get(key) else { continue };
        any = true;
        cfg.loc.get_or_insert_with(|| n.loc.clone());
        let what = format!("`{key}`");
        let Some(sub) = r.fields(n, &fs.field(key), &what, SANDBOX_KEYS) else {
            continue;
        };
        if let Some(v) = r.opt_uint(&sub, "max_iterations", 1, 1000) {
            cfg.max_iterations = Some(v as u32);
        }
        for k in [
            "regression_check",
            "apply",
            "network",
            "network_disabled",
            "auto_fix",
        ] {
            if let Some(b) = r.opt_bool(&sub, k) {
                cfg.settings.insert(k.into(), Value::Bool(b));
            }
        }
        for k in ["sandbox", "sandbox_isolated"] {
            if let Some(v) = sub.get(k) {
                let mode = match &v.kind {
                    Kind::Bool(true) => Some("best-effort".to_owned()),
                    Kind::Bool(false) => Some("off".to_owned()),
                    _ => r.choice(v, &sub.field(k), &["required", "best-effort", "off"], |s| {
                        matches!(s, "required" | "best-effort" | "off").then(|| s.to_owned())
                    }),
                };
                if let Some(m) = mode {
                    cfg.settings.insert("sandbox".into(), Value::String(m));
                }
            }
        }
        for k in [
            "fix_command",
            "source",
            "framework",
            "test_command",
            "test",
            "mode",
        ] {
            if let Some(v) = r.opt_string(&sub, k) {
                let key = if k == "test_command" { "test" } else { k };
                cfg.settings.insert(key.into(), Value::String(v));
            }
        }
        if let Some(d) = r.opt_duration(&sub, "test_timeout") {
            cfg.settings
                .insert("test_timeout".into(), Value::from(d.as_millis() as u64));
        }
        if let Some(n) = sub.get("fixer")
            && let Some(f) = r.fields(
                n,
                &sub.field("fixer"),
                "`fixer`",
                &["command", "model", "agent"],
            )
        {
            let given: Vec<&str> = ["command", "model", "agent"]
                .into_iter()
                .filter(|k| f.has(k))
                .collect();
            if given.len() != 1 {
                r.error(
                    &n.loc,
                    sub.field("fixer"),
                    "a fixer is one of `{command: ...}`, `{model: NAME}` or `{agent: claude|codex|gemini}`",
                );
            }
            for k in given {
                let _ = r.opt_string(&f, k);
            }
        }
        if let Some(n) = sub.get("exclude") {
            let _ = r.string_list(n, &sub.field("exclude"));
        }
        if let Some(n) = sub.get("limits") {
            let _ = r.fields(
                n,
                &sub.field("limits"),
                "`limits`",
                &["file_size_mb", "processes", "memory_mb", "cpu_seconds"],
            );
        }
        let _ = r.opt_uint(&sub, "escalate_after", 1, 1000);
        for k in ["fixer", "limits", "exclude", "escalate_after"] {
            if let Some(v) = sub.get(k) {
                cfg.settings.insert(k.into(), v.to_json());
            }
        }
    }
    if let Some(m) = cfg.max_iterations {
        cfg.settings.insert("max_iterations".into(), Value::from(m));
    }
    any.then_some(cfg)
}

/// `budget: {max_tokens, max_cost_usd}`.
fn budget(r: &mut Reader, node: &Node, field: &str) -> Option<Budget> {
    let fs = r.fields(
        node,
        field,
        "`budget`",
        &["max_tokens", "max_cost_usd", "max_cost"],
    )?;
    let max_tokens = r.opt_uint(&fs, "max_tokens", 1, u64::MAX / 4);
    let max_cost_usd = match fs.first_of(&["max_cost_usd", "max_cost"]) {
        Some((k, n)) => match &n.kind {
            Kind::Int(i) if *i >= 0 => Some(*i as f64),
            Kind::Float(x) if *x >= 0.0 && x.is_finite() => Some(*x),
            _ => {
                let shown = n.scalar_text().unwrap_or_else(|| n.type_name().to_owned());
                r.error(
                    &n.loc,
                    fs.field(k),
                    format!("expected an amount in US dollars like 0.50, found `{shown}`"),
                );
                None
            }
        },
        None => None,
    };
    if max_tokens.is_none() && max_cost_usd.is_none() {
        r.error(
            &node.loc,
            field,
            "a budget needs `max_tokens`, `max_cost_usd` or both",
        );
        return None;
    }
    Some(Budget {
        max_tokens,
        max_cost_usd,
    })
}

/// `select: first|judge|vote|all`, or `select: {mode, judge}`; a stage's
/// `judge: MODEL` names the judging model too.
fn select(r: &mut Reader, fs: &Fields<'_>) -> Option<Select> {
    let judge_field = r.opt_string(fs, "judge");
    let node = match (fs.get("select"), fs.get("judge")) {
        (Some(n), _) => n,
        (None, Some(j)) => {
            return judge_field.map(|judge| Select {
                mode: SelectMode::Judge,
                judge: Some(judge),
                loc: j.loc.clone(),
            });
        }
        (None, None) => return None,
    };
    let (mode, judge) = match &node.kind {
        Kind::Map(_) => {
            let sub = r.fields(node, &fs.field("select"), "`select`", &["mode", "judge"])?;
            let mode = match sub.get("mode") {
                Some(m) => {
                    r.choice(m, &sub.field("mode"), &SelectMode::NAMES, SelectMode::parse)?
                }
                None => SelectMode::Judge,
            };
            (mode, r.opt_string(&sub, "judge").or(judge_field))
        }
        _ => (
            r.choice(
                node,
                &fs.field("select"),
                &SelectMode::NAMES,
                SelectMode::parse,
            )?,
            judge_field,
        ),
    };
    if mode == SelectMode::Judge && judge.is_none() {
        r.error(
            &node.loc,
            fs.field("select"),
            "`select: judge` needs the judging model: `judge: MODEL`",
        );
    }
    Some(Select {
        mode,
        judge,
        loc: node.loc.clone(),
    })
}

fn branches(r: &mut Reader, node: &Node, field: &str, stage_id: &str) -> Option<Branches> {
    match &node.kind {
        Kind::Seq(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                let Some(fs) = r.fields(item, &f, "a branch", BRANCH_FIELDS) else {
                    continue;
                };
                let name = r
                    .opt_string(&fs, "name")
                    .unwrap_or_else(|| format!("branch{i}"));
                if let Some(b) = branch(r, &fs, name, stage_id, item.loc.clone()) {
                    out.push(b);
                }
            }
            Some(Branches::List(out))
        }
        Kind::Map(entries) => {
            let keys: Vec<String> = entries
                .iter()
                .filter_map(|(k, _)| k.scalar_text())
                .collect();
            let pass_fail = !keys.is_empty()
                && keys.iter().all(|k| k == "pass" || k == "fail")
                && entries.iter().all(|(_, v)| matches!(v.kind, Kind::Seq(_)));
            if pass_fail {
                let pass = node
                    .get("pass")
                    .map(|n| stage_list(r, n, &format!("{field}.pass"), true))
                    .unwrap_or_default();
                let fail = node
                    .get("fail")
                    .map(|n| stage_list(r, n, &format!("{field}.fail"), true))
                    .unwrap_or_default();
                return Some(Branches::PassFail { pass, fail });
            }
            let mut out = Vec::new();
            let mut default = None;
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else {
                    continue;
                };
                let f = format!("{field}.{name}");
                if name == "default"
                    && let Some(s) = v.as_str()
                {
                    default = Some((s.to_owned(), v.loc.clone()));
                    continue;
                }
                if let Kind::Seq(_) = v.kind {
                    let stages = stage_list(r, v, &f, true);
                    out.push(Branch {
                        is_default: name == "default",
                        name,
                        condition: None,
                        stages,
                        loc: k.loc.clone(),
                    });
                    continue;
                }
                let Some(fs) = r.fields(
                    v,
                    &f,
                    "a branch",
                    // A map branch is named by its key.
                    &BRANCH_FIELDS[1..],
                ) else {
                    continue;
                };
                if let Some(mut b) = branch(r, &fs, name.clone(), stage_id, k.loc.clone()) {
                    b.is_default |= name == "default";
                    out.push(b);
                }
            }
            Some(Branches::Map {
                branches: out,
                default,
            })
        }
        _ => {
            r.error(
                &node.loc,
                field,
                format!(
                    "`branches` must be a list or a mapping, found {}",
                    node.type_name()
                ),
            );
            None
        }
    }
}

/// One branch: its own `stages`, or a `skill`/`skills`/`cascade` directly,
/// which becomes one stage named `<stage>-<branch>`.
fn branch(
    r: &mut Reader,
    fs: &Fields<'_>,
    name: String,
    stage_id: &str,
    loc: Loc,
) -> Option<Branch> {
    let condition = match fs.first_of(&["condition", "conditions"]) {
        Some((k, n)) => condition(r, n, &fs.field(k)),
        None => None,
    };
    let is_default = r.opt_bool(fs, "default").unwrap_or(false);
    let direct = ["skill", "skills", "cascade", "model", "inputs"]
        .iter()
        .any(|k| fs.has(k));
    let stages = match fs.get("stages") {
        Some(n) => {
            if direct {
                r.error(
                    &loc,
                    fs.field("stages"),
                    "a branch has either `stages` or a `skill`/`cascade` of its own, not both",
                );
            }
            stage_list(r, n, &fs.field("stages"), true)
        }
        None if direct => {
            let skills = match (fs.get("skill"), fs.get("skills")) {
                (Some(n), _) => r
                    .string(n, &fs.field("skill"))
                    .map(|s| {
                        vec![SkillRef {
                            skill: s,
                            inputs: Map::new(),
                            outputs: Vec::new(),
                            model: None,
                            priority: None,
                            loc: n.loc.clone(),
                        }]
                    })
                    .unwrap_or_default(),
                (None, Some(n)) => skill_refs(r, n, &fs.field("skills")),
                (None, None) => Vec::new(),
            };
            vec![Stage {
                id: format!("{stage_id}-{name}"),
                loc: loc.clone(),
                name: Some(name.clone()),
                description: r.opt_string(fs, "description"),
                ty: StageType::Sequential,
                model: r.opt_string(fs, "model"),
                skills,
                inputs: fs
                    .get("inputs")
                    .map(|n| r.value_map(n, &fs.field("inputs")))
                    .unwrap_or_default(),
                input_locs: fs.get("inputs").map(value_locs).unwrap_or_default(),
                outputs: Vec::new(),
                dependencies: None,
                condition: None,
                branches: None,
                repeat: None,
                max_iterations: None,
                memory: StageMemory::default(),
                swarm: None,
                sandbox: None,
                error_handling: None,
                cascade: fs.get("cascade").and_then(|n| {
                    r.string(n, &fs.field("cascade"))
                        .map(|s| (s, n.loc.clone()))
                }),
                substages: Vec::new(),
                timeout: None,
                task_timeout: None,
                for_each: None,
                models: Vec::new(),
                select: None,
                budget: None,
            }]
        }
        None => Vec::new(),
    };
    Some(Branch {
        name,
        condition,
        is_default,
        stages,
        loc,
    })
}

/// The location of each value of a mapping, by key.
fn value_locs(node: &Node) -> BTreeMap<String, Loc> {
    node.as_map()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.scalar_text()?, v.loc.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// `outputs` as a list of names, or a mapping whose keys are the names.
fn output_names(r: &mut Reader, fs: &Fields<'_>) -> Vec<String> {
    match fs.get("outputs") {
        Some(o) if matches!(o.kind, Kind::Map(_)) => o
            .as_map()
            .map(|m| m.iter().filter_map(|(k, _)| k.scalar_text()).collect())
            .unwrap_or_default(),
        Some(o) => r
            .string_list(o, &fs.field("outputs"))
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        None => Vec::new(),
    }
}
