//! The sections that act around a run rather than in it, normalised into
//! [`Operations`]: `github_integration`, `notifications`, `quality_gates`
//! and `hooks`. Shapes accepted (README, "Integrations"):
//!
//! ```text
//! github_integration: enabled | {create_pr: on_success|never, report_issues: on_failure|never,
//!                                repository, base, branch, sha, status, labels, token_env, ...}
//! notifications: [{type: log|webhook|slack, url | url_env, on: [..], timeout, retries}]
//!              | {type: ..}                       one target
//!              | {slack: URL | {..}, webhook: [..], log: true, on, timeout, retries}
//! quality_gates: [{name, metric, min, max, threshold, comparison, after} | {name, condition}]
//!              | {coverage: {min: 80}, min_pass_rate: 95, error_rate: "< 0.01", ok: "${a} == 1"}
//! hooks: {pre_task, post_task, on_run_end: CMD | [CMD | {run, timeout}], timeout}
//! ```
//! Every problem is a diagnostic at its `file:line:col`, with did-you-mean
//! for names; reading carries on past it.

use std::time::Duration;

use cascade_eval::{CmpOp, Template};
use serde_json::Value;

use super::super::fields::{Fields, Reader};
use super::super::model::*;
use super::super::yaml::{Kind, Node};

const GITHUB_KEYS: &[&str] = &[
    "enabled",
    "create_pr",
    "report_issues",
    "repository",
    "repo",
    "base",
    "base_branch",
    "branch",
    "sha",
    "status",
    "status_context",
    "labels",
    "token_env",
    "token",
    "api_url",
    "patch_stage",
    "patch_dir",
    "title",
    "draft",
];

const TARGET_KEYS: &[&str] = &[
    "type", "url", "url_env", "on", "events", "timeout", "retries", "blocks", "channel",
];

const GATE_KEYS: &[&str] = &[
    "name",
    "description",
    "metric",
    "min",
    "max",
    "threshold",
    "comparison",
    "operator",
    "condition",
    "after",
    "stage",
];

const HOOK_KEYS: &[&str] = &[
    "pre_task",
    "pre-task",
    "post_task",
    "post-task",
    "on_run_end",
    "on-run-end",
    "timeout",
];

const TARGET_TYPES: [&str; 3] = ["log", "webhook", "slack"];

/// A notification's attempt limit and retries when the file gives none.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_NOTIFY_RETRIES: u32 = 2;
/// A hook's time limit when the file gives none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// `true`, `enabled`, `false`, `disabled`: a section switched on or off
/// without settings. `None` when the node is not such a switch.
fn switch(node: &Node) -> Option<bool> {
    match &node.kind {
        Kind::Bool(b) => Some(*b),
        Kind::Str(s) => match s.as_str() {
            "enabled" | "on" | "yes" | "true" => Some(true),
            "disabled" | "off" | "no" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn github(r: &mut Reader, node: &Node, field: &str) -> Option<GithubConfig> {
    let mut cfg = GithubConfig {
        create_pr: true,
        report_issues: true,
        repository: None,
        base: None,
        branch: None,
        sha: None,
        status: true,
        status_context: None,
        labels: Vec::new(),
        token_env: "GITHUB_TOKEN".into(),
        api_url: None,
        patch_stage: None,
        patch_dir: None,
        title: None,
        draft: false,
        loc: node.loc.clone(),
    };
    if let Some(on) = switch(node) {
        return on.then_some(cfg);
    }
    let fs = r.fields(node, field, "the `github_integration` section", GITHUB_KEYS)?;
    if let Some(n) = fs.get("token") {
        r.error(
            &n.loc,
            fs.field("token"),
            "a token never goes in the file: name the variable that holds it with `token_env` (default GITHUB_TOKEN)",
        );
    }
    if r.opt_bool(&fs, "enabled") == Some(false) {
        return None;
    }
    if let Some(n) = fs.get("create_pr") {
        cfg.create_pr = when(r, n, &fs.field("create_pr"), "on_success").unwrap_or(true);
    }
    if let Some(n) = fs.get("report_issues") {
        cfg.report_issues = when(r, n, &fs.field("report_issues"), "on_failure").unwrap_or(true);
    }
    cfg.repository = aliased_string(r, &fs, &["repository", "repo"]);
    if let Some(repo) = cfg.repository.as_deref()
        && !repo.contains("${")
        && repo.split('/').filter(|p| !p.is_empty()).count() != 2
        && let Some((_, n)) = fs.first_of(&["repository", "repo"])
    {
        r.error(
            &n.loc,
            fs.field("repository"),
            format!("`{repo}` is not `owner/name`"),
        );
    }
    cfg.base = aliased_string(r, &fs, &["base", "base_branch"]);
    cfg.branch = r.opt_string(&fs, "branch");
    cfg.sha = r.opt_string(&fs, "sha");
    cfg.status = r.opt_bool(&fs, "status").unwrap_or(true);
    cfg.status_context = r.opt_string(&fs, "status_context");
    cfg.labels = r.opt_string_list(&fs, "labels");
    if let Some(v) = r.opt_string(&fs, "token_env") {
        cfg.token_env = v;
    }
    cfg.api_url = r.opt_string(&fs, "api_url");
    if let (Some(url), Some(n)) = (&cfg.api_url, fs.get("api_url")) {
        check_url(r, url, n, &fs.field("api_url"));
    }
    cfg.patch_stage = r.opt_string(&fs, "patch_stage");
    cfg.patch_dir = r
        .opt_string(&fs, "patch_dir")
        .map(|d| d.trim_matches('/').to_owned())
        .filter(|d| !d.is_empty() && d != ".");
    cfg.title = r.opt_string(&fs, "title");
    cfg.draft = r.opt_bool(&fs, "draft").unwrap_or(false);
    Some(cfg)
}

/// `on_success` (or `on_failure`), `never`, or a boolean.
fn when(r: &mut Reader, node: &Node, field: &str, yes: &'static str) -> Option<bool> {
    if let Kind::Bool(b) = node.kind {
        return Some(b);
    }
    r.choice(node, field, &[yes, "never"], |s| match s {
        "never" | "disabled" => Some(false),
        "enabled" | "always" => Some(true),
        s if s == yes => Some(true),
        _ => None,
    })
}

fn aliased_string(r: &mut Reader, fs: &Fields<'_>, keys: &[&'static str]) -> Option<String> {
    let (key, _) = fs.first_of(keys)?;
    r.opt_string(fs, key)
}

fn check_url(r: &mut Reader, url: &str, node: &Node, field: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        r.error(
            &node.loc,
            field,
            format!("`{url}` is not an http:// or https:// URL"),
        );
    }
}

pub(super) fn notifications(r: &mut Reader, node: &Node, field: &str) -> Vec<Notification> {
    let mut out = Vec::new();
    match &node.kind {
        Kind::Null => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                out.extend(target(r, item, &format!("{field}[{i}]"), None, &Defaults::new()));
            }
        }
        Kind::Map(_) if node.get("type").is_some() => {
            out.extend(target(r, node, field, None, &Defaults::new()));
        }
        Kind::Map(_) => by_type(r, node, field, &mut out),
        _ if switch(node).is_some() => r.warn(
            &node.loc,
            field,
            "`notifications` names no target: nothing is sent (give a list of {type: log|webhook|slack, ...})",
        ),
        _ => r.error(
            &node.loc,
            field,
            format!(
                "`notifications` must be a list of targets or a mapping, found {}",
                node.type_name()
            ),
        ),
    }
    out
}

/// Settings a mapping of targets gives all of them.
struct Defaults {
    on: Option<Vec<NotifyEvent>>,
    timeout: Option<Duration>,
    retries: Option<u32>,
}

impl Defaults {
    fn new() -> Self {
        Defaults {
            on: None,
            timeout: None,
            retries: None,
        }
    }
}

/// `{slack: URL | {..} | [..], webhook: .., log: true, on, timeout, retries}`.
fn by_type(r: &mut Reader, node: &Node, field: &str, out: &mut Vec<Notification>) {
    let mut keys: Vec<&str> = TARGET_TYPES.to_vec();
    keys.extend(["on", "events", "timeout", "retries"]);
    let Some(fs) = r.fields(node, field, "`notifications`", &keys) else {
        return;
    };
    let defaults = Defaults {
        on: fs
            .first_of(&["on", "events"])
            .map(|(k, n)| events(r, n, &fs.field(k))),
        timeout: r.opt_duration(&fs, "timeout"),
        retries: r.opt_uint(&fs, "retries", 0, 10).map(|n| n as u32),
    };
    for ty in TARGET_TYPES {
        let Some(n) = fs.get(ty) else { continue };
        let f = fs.field(ty);
        let items: Vec<(&Node, String)> = match &n.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, it)| (it, format!("{f}[{i}]")))
                .collect(),
            _ => vec![(n, f.clone())],
        };
        for (item, f) in items {
            match &item.kind {
                Kind::Str(url) if ty != "log" && switch(item).is_none() => {
                    check_url(r, url, item, &f);
                    out.push(Notification {
                        target: make_target(ty, UrlSource::Literal(url.clone()), false, None),
                        on: defaults.on.clone().unwrap_or_else(default_events),
                        timeout: defaults.timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT),
                        retries: defaults.retries.unwrap_or(DEFAULT_NOTIFY_RETRIES),
                        loc: item.loc.clone(),
                    });
                }
                Kind::Map(_) => out.extend(target(r, item, &f, Some(ty), &defaults)),
                _ if ty == "log" && switch(item).is_some() => {
                    if switch(item) == Some(true) {
                        out.push(Notification {
                            target: NotifyTarget::Log,
                            on: defaults.on.clone().unwrap_or_else(default_events),
                            timeout: DEFAULT_NOTIFY_TIMEOUT,
                            retries: 0,
                            loc: item.loc.clone(),
                        });
                    }
                }
                _ => r.error(
                    &item.loc,
                    f,
                    format!(
                        "expected a URL or a mapping for a `{ty}` target, found {}",
                        item.type_name()
                    ),
                ),
            }
        }
    }
}

fn default_events() -> Vec<NotifyEvent> {
    vec![NotifyEvent::Success, NotifyEvent::Failure]
}

fn make_target(ty: &str, url: UrlSource, blocks: bool, channel: Option<String>) -> NotifyTarget {
    match ty {
        "slack" => NotifyTarget::Slack {
            url,
            blocks,
            channel,
        },
        "webhook" => NotifyTarget::Webhook { url },
        _ => NotifyTarget::Log,
    }
}

/// One target mapping; `ty` when the key it stands under gave the type.
fn target(
    r: &mut Reader,
    node: &Node,
    field: &str,
    ty: Option<&str>,
    defaults: &Defaults,
) -> Option<Notification> {
    let fs = r.fields(node, field, "a notification target", TARGET_KEYS)?;
    let ty: String = match (ty, fs.get("type")) {
        (Some(t), _) => t.to_owned(),
        (None, Some(n)) => {
            if n.as_str() == Some("email") {
                r.error(
                    &n.loc,
                    fs.field("type"),
                    "email is not sent: use a `webhook` (to a mail relay) or a `slack` target",
                );
                return None;
            }
            r.choice(n, &fs.field("type"), &TARGET_TYPES, |s| {
                TARGET_TYPES.contains(&s).then(|| s.to_owned())
            })?
        }
        (None, None) => {
            r.error(
                &node.loc,
                field,
                "a notification target needs a `type` (log, webhook or slack)",
            );
            return None;
        }
    };
    let on = match fs.first_of(&["on", "events"]) {
        Some((k, n)) => events(r, n, &fs.field(k)),
        None => defaults.on.clone().unwrap_or_else(default_events),
    };
    let timeout = r
        .opt_duration(&fs, "timeout")
        .or(defaults.timeout)
        .unwrap_or(DEFAULT_NOTIFY_TIMEOUT);
    let retries = r
        .opt_uint(&fs, "retries", 0, 10)
        .map(|n| n as u32)
        .or(defaults.retries)
        .unwrap_or(DEFAULT_NOTIFY_RETRIES);
    let url = r.opt_string(&fs, "url");
    let url_env = r.opt_string(&fs, "url_env");
    if ty != "slack" {
        for key in ["blocks", "channel"] {
            if let Some(n) = fs.get(key) {
                r.error(
                    &n.loc,
                    fs.field(key),
                    format!("only `slack` targets take `{key}`"),
                );
            }
        }
    }
    let target = if ty == "log" {
        if let Some((k, n)) = fs.first_of(&["url", "url_env"]) {
            r.error(&n.loc, fs.field(k), "a `log` target takes no URL");
        }
        NotifyTarget::Log
    } else {
        let source = match (url, url_env) {
            (Some(u), None) => {
                if let Some(n) = fs.get("url") {
                    check_url(r, &u, n, &fs.field("url"));
                }
                UrlSource::Literal(u)
            }
            (None, Some(v)) => UrlSource::Env(v),
            (Some(_), Some(_)) => {
                r.error(
                    &node.loc,
                    field,
                    "give `url` or `url_env` (the variable holding the URL), not both",
                );
                return None;
            }
            (None, None) => {
                r.error(
                    &node.loc,
                    field,
                    format!("a `{ty}` target needs a `url` or a `url_env`"),
                );
                return None;
            }
        };
        let blocks = r.opt_bool(&fs, "blocks").unwrap_or(false);
        let channel = r.opt_string(&fs, "channel");
        make_target(&ty, source, blocks, channel)
    };
    Some(Notification {
        target,
        on,
        timeout,
        retries,
        loc: node.loc.clone(),
    })
}

/// `on: [success, failure, branch, started]`, one name, or `all`.
fn events(r: &mut Reader, node: &Node, field: &str) -> Vec<NotifyEvent> {
    let mut out = Vec::new();
    let items: Vec<(&Node, String)> = match &node.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n, format!("{field}[{i}]")))
            .collect(),
        _ => vec![(node, field.to_owned())],
    };
    for (n, f) in items {
        if matches!(n.as_str(), Some("all" | "*")) {
            out.extend([
                NotifyEvent::Started,
                NotifyEvent::Success,
                NotifyEvent::Failure,
                NotifyEvent::Branch,
            ]);
            continue;
        }
        if let Some(e) = r.choice(n, &f, &NotifyEvent::NAMES, NotifyEvent::parse) {
            out.push(e);
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(super) fn quality_gates(r: &mut Reader, node: &Node, field: &str) -> Vec<QualityGate> {
    let mut out = Vec::new();
    match &node.kind {
        Kind::Null => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                out.extend(gate(r, item, &f, None, &format!("gate {}", i + 1)));
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else { continue };
                let f = format!("{field}.{name}");
                out.extend(named_gate(r, &name, v, &f));
            }
        }
        _ if switch(node).is_some() => r.warn(
            &node.loc,
            field,
            "`quality_gates` names no gate: nothing is enforced (give a list like [{metric: coverage, min: 80}])",
        ),
        _ => r.error(
            &node.loc,
            field,
            format!(
                "`quality_gates` must be a list of gates or a mapping, found {}",
                node.type_name()
            ),
        ),
    }
    let mut seen: Vec<(String, u32)> = Vec::new();
    for g in &out {
        if let Some((_, line)) = seen.iter().find(|(n, _)| *n == g.name) {
            r.error(
                &g.loc,
                field,
                format!(
                    "quality gate `{}` is given twice (first at line {line})",
                    g.name
                ),
            );
        }
        seen.push((g.name.clone(), g.loc.line));
    }
    out
}

/// `name: {..}`, `min_x: 80` / `max_x: 3`, `x: ">= 80"`, `ok: "${a} == 1"`.
fn named_gate(r: &mut Reader, name: &str, v: &Node, field: &str) -> Option<QualityGate> {
    match &v.kind {
        Kind::Map(_) => gate(r, v, field, Some(name), name),
        Kind::Int(_) | Kind::Float(_) => {
            let (op, metric) = if let Some(m) = name.strip_prefix("min_") {
                (CmpOp::Ge, m)
            } else if let Some(m) = name.strip_prefix("max_") {
                (CmpOp::Le, m)
            } else {
                r.error(
                    &v.loc,
                    field,
                    format!(
                        "a bare number does not say which way `{name}` must go: write `min_{name}: N`, `max_{name}: N` or `{name}: {{min: N}}`"
                    ),
                );
                return None;
            };
            threshold_gate(r, name, metric, vec![(op, v.to_json())], v, field)
        }
        Kind::Str(s) => match split_comparison(s) {
            Some((op, bound)) => {
                let bound = serde_json::from_str::<Value>(bound)
                    .ok()
                    .filter(Value::is_number)
                    .unwrap_or_else(|| Value::String(bound.to_owned()));
                let metric = name.to_owned();
                threshold_gate(r, name, &metric, vec![(op, bound)], v, field)
            }
            None => condition_gate(r, name, v, field, None),
        },
        _ => {
            r.error(
                &v.loc,
                field,
                format!(
                    "expected a gate (a mapping, a number or a comparison like \">= 80\"), found {}",
                    v.type_name()
                ),
            );
            None
        }
    }
}

/// `">= 80"` -> (>=, "80").
fn split_comparison(s: &str) -> Option<(CmpOp, &str)> {
    let s = s.trim();
    for sym in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some(rest) = s.strip_prefix(sym) {
            return CmpOp::parse(sym).map(|op| (op, rest.trim()));
        }
    }
    None
}

fn gate(
    r: &mut Reader,
    node: &Node,
    field: &str,
    key_name: Option<&str>,
    fallback_name: &str,
) -> Option<QualityGate> {
    let fs = r.fields(node, field, "a quality gate", GATE_KEYS)?;
    let name = r
        .opt_string(&fs, "name")
        .or_else(|| key_name.map(str::to_owned));
    let after = fs
        .first_of(&["after", "stage"])
        .and_then(|(k, n)| r.string(n, &fs.field(k)).map(|s| (s, n.loc.clone())));
    let has_bounds = ["min", "max", "threshold"].iter().any(|k| fs.has(k));
    if let Some(cond) = fs.get("condition") {
        if has_bounds || fs.has("metric") {
            r.error(
                &cond.loc,
                fs.field("condition"),
                "a gate is either a `condition` or a `metric` with bounds, not both",
            );
            return None;
        }
        let name = name.unwrap_or_else(|| fallback_name.to_owned());
        return condition_gate(r, &name, cond, &fs.field("condition"), after);
    }
    let metric = r
        .opt_string(&fs, "metric")
        .or_else(|| key_name.map(str::to_owned));
    let Some(metric) = metric else {
        r.error(
            &node.loc,
            field,
            "a quality gate needs a `metric` with `min`, `max` or `threshold`, or a `condition`",
        );
        return None;
    };
    let mut bounds = Vec::new();
    for (key, op) in [("min", CmpOp::Ge), ("max", CmpOp::Le)] {
        if let Some(n) = fs.get(key) {
            bounds.push((op, bound(r, n, &fs.field(key))?));
        }
    }
    if let Some(n) = fs.get("threshold") {
        let op = match fs.first_of(&["comparison", "operator"]) {
            Some((k, c)) => r.choice(
                c,
                &fs.field(k),
                &[">", "<", ">=", "<=", "==", "!="],
                CmpOp::parse,
            )?,
            None => CmpOp::Ge,
        };
        bounds.push((op, bound(r, n, &fs.field("threshold"))?));
    } else if let Some((k, c)) = fs.first_of(&["comparison", "operator"]) {
        r.error(&c.loc, fs.field(k), "`comparison` goes with `threshold`");
    }
    if bounds.is_empty() {
        r.error(
            &node.loc,
            field,
            format!("quality gate on `{metric}` needs `min`, `max` or `threshold`"),
        );
        return None;
    }
    let name = name.unwrap_or_else(|| metric.clone());
    let mut g = threshold_gate(r, &name, &metric, bounds, node, field)?;
    g.after = after;
    Some(g)
}

/// A bound: a number, or a template giving one (`${inputs.min_coverage}`).
fn bound(r: &mut Reader, node: &Node, field: &str) -> Option<Value> {
    match &node.kind {
        Kind::Int(_) | Kind::Float(_) => Some(node.to_json()),
        Kind::Str(s) if s.contains("${") => match Template::parse(s) {
            Ok(_) => Some(Value::String(s.clone())),
            Err(e) => {
                r.error(&node.loc, field, format!("invalid template: {e}"));
                None
            }
        },
        Kind::Str(s) if s.trim().parse::<f64>().is_ok() => serde_json::from_str(s.trim())
            .ok()
            .or(Some(Value::String(s.clone()))),
        _ => {
            let shown = node
                .scalar_text()
                .unwrap_or_else(|| node.type_name().to_owned());
            r.error(
                &node.loc,
                field,
                format!("expected a number (or a `${{...}}` giving one), found `{shown}`"),
            );
            None
        }
    }
}

fn threshold_gate(
    r: &mut Reader,
    name: &str,
    metric: &str,
    bounds: Vec<(CmpOp, Value)>,
    node: &Node,
    field: &str,
) -> Option<QualityGate> {
    for (_, b) in &bounds {
        if let Value::String(s) = b
            && !s.contains("${")
        {
            r.error(
                &node.loc,
                field,
                format!("`{s}` is not a number (nor a `${{...}}` giving one)"),
            );
            return None;
        }
    }
    let source = if metric.contains("${") || metric.starts_with("$.") {
        metric.to_owned()
    } else {
        format!("${{{metric}}}")
    };
    let value = match Template::parse(&source) {
        Ok(t) => t,
        Err(e) => {
            r.error(&node.loc, field, format!("invalid metric `{metric}`: {e}"));
            return None;
        }
    };
    Some(QualityGate {
        name: name.to_owned(),
        check: GateCheck::Threshold {
            metric: metric.to_owned(),
            value,
            bounds,
        },
        after: None,
        loc: node.loc.clone(),
    })
}

fn condition_gate(
    r: &mut Reader,
    name: &str,
    node: &Node,
    field: &str,
    after: Option<(String, super::super::yaml::Loc)>,
) -> Option<QualityGate> {
    let cond = super::condition(r, node, field)?;
    Some(QualityGate {
        name: name.to_owned(),
        check: GateCheck::Condition(cond),
        after,
        loc: node.loc.clone(),
    })
}

pub(super) fn hooks(r: &mut Reader, node: &Node, field: &str) -> Hooks {
    let mut out = Hooks::default();
    let Some(fs) = r.fields(node, field, "the `hooks` section", HOOK_KEYS) else {
        return out;
    };
    let timeout = r
        .opt_duration(&fs, "timeout")
        .unwrap_or(DEFAULT_HOOK_TIMEOUT);
    for (keys, slot) in [
        (["pre_task", "pre-task"], &mut out.pre_task),
        (["post_task", "post-task"], &mut out.post_task),
        (["on_run_end", "on-run-end"], &mut out.on_run_end),
    ] {
        if let (Some(_), Some(_)) = (fs.get(keys[0]), fs.get(keys[1]))
            && let Some(n) = fs.get(keys[1])
        {
            r.error(
                &n.loc,
                fs.field(keys[1]),
                format!(
                    "`{}` and `{}` are the same hook: give one",
                    keys[0], keys[1]
                ),
            );
        }
        if let Some((k, n)) = fs.first_of(&keys) {
            *slot = hook_commands(r, n, &fs.field(k), timeout);
        }
    }
    out
}

/// `CMD`, `{run | command, timeout}`, or a list of those.
fn hook_commands(r: &mut Reader, node: &Node, field: &str, timeout: Duration) -> Vec<HookCommand> {
    let items: Vec<(&Node, String)> = match &node.kind {
        Kind::Null => return Vec::new(),
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n, format!("{field}[{i}]")))
            .collect(),
        _ => vec![(node, field.to_owned())],
    };
    let mut out = Vec::new();
    for (n, f) in items {
        let (run, t) = match &n.kind {
            Kind::Str(s) => (Some(s.clone()), timeout),
            Kind::Map(_) => {
                let Some(fs) = r.fields(n, &f, "a hook", &["run", "command", "timeout"]) else {
                    continue;
                };
                let run = fs
                    .first_of(&["run", "command"])
                    .and_then(|(k, c)| r.string(c, &fs.field(k)));
                if run.is_none() && !fs.has("run") && !fs.has("command") {
                    r.error(&n.loc, &f, "a hook needs a `run` command");
                }
                (run, r.opt_duration(&fs, "timeout").unwrap_or(timeout))
            }
            _ => {
                r.error(
                    &n.loc,
                    &f,
                    format!("expected a shell command, found {}", n.type_name()),
                );
                continue;
            }
        };
        match run {
            Some(run) if !run.trim().is_empty() => out.push(HookCommand {
                run,
                timeout: t,
                loc: n.loc.clone(),
            }),
            Some(_) => r.error(&n.loc, &f, "a hook's command is empty"),
            None => {}
        }
    }
    out
}

/// Names that must exist once the stages are known: a gate's `after`
/// stage and GitHub's `patch_stage`.
pub(super) fn check_stage_names(r: &mut Reader, ops: &Operations, stages: &[&Stage]) {
    let ids: Vec<&str> = stages.iter().map(|s| s.id.as_str()).collect();
    for g in &ops.quality_gates {
        if let Some((id, loc)) = &g.after
            && !ids.contains(&id.as_str())
        {
            let hint = crate::suggest::suggestion(id, ids.iter().copied());
            r.error(
                loc,
                "quality_gates",
                format!(
                    "quality gate `{}`: `after` names no stage `{id}`{hint}",
                    g.name
                ),
            );
        }
    }
    if let Some(gh) = &ops.github
        && let Some(id) = &gh.patch_stage
        && !ids.contains(&id.as_str())
    {
        let hint = crate::suggest::suggestion(id, ids.iter().copied());
        r.error(
            &gh.loc,
            "github_integration.patch_stage",
            format!("`patch_stage` names no stage `{id}`{hint}"),
        );
    }
}

#[cfg(test)]
mod tests;
