//! What happens around a run, besides its stages: the cascade's
//! `github_integration`, `notifications`, `quality_gates` and `hooks`
//! (parsed by `spec::normalize` into [`Operations`]).
//!
//! ```text
//!  driver (local or nats)          RunIntegrations
//!   run starts ─────────────────▶ started(): GitHub `pending` status, `started` notifications
//!   DispatchTask ───────────────▶ prepare(spec): the `pre_task`/`post_task` hooks ride on the
//!                                 task (the worker, or the embedded executor, runs them)
//!   effects ────────────────────▶ observe(): `branch` notifications; a gate with `after:`
//!          ◀── CancelRequested ──            checked when its stage succeeds (stops the run)
//!   TaskFinished ───────────────▶ result(): notes from hooks that failed after a task
//!   run ends: report (JSON) ────▶ finish(): gates ─▶ GitHub (status, pull request | issue)
//!                                 ─▶ notifications ─▶ `on_run_end` hooks ─▶ notes
//! ```
//! Nothing here fails a run except a quality gate: a GitHub call, a
//! notification or an `on_run_end` hook that fails is logged once and
//! noted in the results (`notes`, and `integrations` for what was done).
//!
//! Only the top-level cascade's sections act. On a swarm the coordinator
//! that owns the run calls `finish` once when the run ends; a coordinator
//! that takes a finished run over finds `integrations` in its stored
//! report and does not act again (see `driver::nats::run`).

mod error;
pub mod gates;
pub mod github;
pub mod notify;
pub mod patch;
pub mod summary;

pub use error::IntegrationError;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cascade_eval::{Context, Template, stringify};
use cascade_proto::{RunId, TaskHook, TaskHooks, TaskResult, TaskSpec};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use cascade_core::engine::{Effect, Engine, Event, StageStatus};
use cascade_core::plan::Plan;
use cascade_core::spec::{GithubConfig, HookCommand, NotifyEvent, Operations};
use notify::{Message, Notifier};

/// Reads one variable.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// How the environment is read (GitHub token and repository, webhook URLs
/// given by variable): the process's, or a fixed set in tests.
#[derive(Clone)]
pub struct Env(Arc<Lookup>);

impl Env {
    pub fn process() -> Env {
        Env(Arc::new(|k| std::env::var(k).ok()))
    }

    pub fn fixed<const N: usize>(pairs: [(&str, &str); N]) -> Env {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env(Arc::new(move |k| map.get(k).cloned()))
    }

    /// A variable's value; empty counts as unset.
    pub fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.is_empty())
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env(..)")
    }
}

/// One run's integrations; the driver holds it for the run's lifetime.
pub struct RunIntegrations {
    ops: Arc<Operations>,
    plan: Arc<Plan>,
    run_id: String,
    inputs: Map<String, Value>,
    /// Where `on_run_end` hooks run (the cascade's directory when it exists
    /// here).
    dir: PathBuf,
    env: Env,
    /// Whether `on_run_end` hooks may run (see [`RunSetup::commands`]).
    commands: bool,
    http: Option<reqwest::Client>,
    notifier: Notifier,
    task_hooks: Option<TaskHooks>,
    /// Work started before the end (the `pending` status): awaited in finish.
    background: TaskTracker,
    /// The message of the gate that stopped the run mid-way.
    stopped_by: Option<String>,
    notes: Vec<String>,
}

impl std::fmt::Debug for RunIntegrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunIntegrations")
            .field("run_id", &self.run_id)
            .field("active", &!self.ops.is_empty())
            .finish()
    }
}

/// Everything a driver needs to build a run's integrations.
#[derive(Clone, Debug)]
pub struct RunSetup {
    pub operations: Operations,
    pub run_id: RunId,
    pub inputs: Map<String, Value>,
    pub dir: PathBuf,
    pub env: Env,
    /// Whether the cascade's `on_run_end` hooks may run here (`coordinator
    /// run`: the user's own file; `serve`: only with
    /// `--allow-submitted-commands`).
    pub commands: bool,
}

fn http_client() -> Option<reqwest::Client> {
    cascade_exec::net::client_builder()
        .user_agent(concat!("cascade-coordinator/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // The token travels in a header a redirect could carry elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| tracing::error!("cannot start the HTTP client: {e}"))
        .ok()
}

fn hook(c: &HookCommand) -> TaskHook {
    TaskHook {
        run: c.run.clone(),
        timeout_ms: Some(c.timeout.as_millis() as u64),
    }
}

impl RunIntegrations {
    pub fn new(plan: Arc<Plan>, setup: RunSetup) -> Self {
        let ops = setup.operations;
        let http = if ops.github.is_some() || !ops.notifications.is_empty() {
            http_client()
        } else {
            None
        };
        let task_hooks = TaskHooks {
            pre_task: ops.hooks.pre_task.iter().map(hook).collect(),
            post_task: ops.hooks.post_task.iter().map(hook).collect(),
        };
        let notifier = Notifier::new(ops.notifications.clone(), http.clone(), setup.env.clone());
        RunIntegrations {
            task_hooks: (!task_hooks.is_empty()).then_some(task_hooks),
            ops: Arc::new(ops),
            plan,
            run_id: setup.run_id.to_string(),
            inputs: setup.inputs,
            dir: setup.dir,
            env: setup.env,
            commands: setup.commands,
            http,
            notifier,
            background: TaskTracker::new(),
            stopped_by: None,
            notes: Vec::new(),
        }
    }

    /// A run whose cascade asks for nothing around it.
    pub fn none(plan: Arc<Plan>, run_id: &RunId) -> Self {
        Self::new(
            plan,
            RunSetup {
                operations: Operations::default(),
                run_id: run_id.clone(),
                inputs: Map::new(),
                dir: PathBuf::new(),
                env: Env::process(),
                commands: false,
            },
        )
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Puts the cascade's task hooks on a task about to be sent.
    pub fn prepare(&self, spec: &mut TaskSpec) {
        if spec.hooks.is_none() {
            spec.hooks = self.task_hooks.clone();
        }
    }

    fn payload(&self, status: &str) -> Value {
        json!({"cascade": self.plan.name, "run_id": self.run_id, "status": status})
    }

    /// The run started (not a replay): a `pending` commit status and the
    /// `started` notifications, in the background.
    pub fn started(&mut self) {
        if self.notifier.wants(NotifyEvent::Started) {
            self.notifier.send(&Message {
                event: NotifyEvent::Started,
                text: format!(
                    "▶️ cascade `{}` started (run {})",
                    self.plan.name, self.run_id
                ),
                payload: self.payload("running"),
            });
        }
        let Some(cfg) = self.ops.github.clone() else {
            return;
        };
        let ctx = self.start_context();
        let (Ok(gh), Some(sha)) = (self.github_client(&cfg, &ctx), self.sha(&cfg, &ctx)) else {
            return;
        };
        let context = self.status_context(&cfg);
        let text = format!("cascade `{}` running (run {})", self.plan.name, self.run_id);
        self.background.spawn(async move {
            if let Err(e) = gh.set_status(&sha, "pending", &text, &context).await {
                tracing::warn!("github: the pending status was not set: {e}");
            }
        });
    }

    /// Looks at effects the engine just returned: notifies branch choices,
    /// checks gates whose stage succeeded. A failed gate returns the event
    /// that stops the run (the driver feeds it to the engine, and logs it
    /// on a swarm).
    pub fn observe(&mut self, fx: &[Effect], engine: &Engine) -> Vec<Event> {
        let mut stop = Vec::new();
        if self.ops.is_empty() {
            return stop;
        }
        // A run that just ended has its gates checked in `finish`.
        let ended = engine.is_finished();
        for effect in fx {
            let Effect::StageChanged {
                stage,
                status,
                message,
            } = effect
            else {
                continue;
            };
            match status {
                StageStatus::Running => {
                    if let Some(branch) = message
                        .as_deref()
                        .and_then(|m| m.strip_prefix("branch `"))
                        .and_then(|m| m.strip_suffix("` taken"))
                    {
                        self.branch_taken(stage, branch);
                    }
                }
                StageStatus::Success if self.stopped_by.is_none() && !ended => {
                    if let Some(reason) = self.gate_after(stage, engine) {
                        self.stopped_by = Some(reason.clone());
                        stop.push(Event::CancelRequested { reason });
                    }
                }
                _ => {}
            }
        }
        stop
    }

    fn branch_taken(&self, stage: &str, branch: &str) {
        if !self.notifier.wants(NotifyEvent::Branch) {
            return;
        }
        let mut payload = self.payload("running");
        payload["stage"] = json!(stage);
        payload["branch"] = json!(branch);
        self.notifier.send(&Message {
            event: NotifyEvent::Branch,
            text: format!(
                "🔀 cascade `{}`: stage `{stage}` took branch `{branch}`",
                self.plan.name
            ),
            payload,
        });
    }

    /// The first gate checked after `stage` that fails, as its message.
    fn gate_after(&self, stage: &str, engine: &Engine) -> Option<String> {
        let root_scope = self.plan.blocks[self.plan.root].scope;
        let node = self.plan.node_by_id(stage).map(|n| &self.plan.nodes[n])?;
        if node.scope != root_scope {
            return None;
        }
        let gates: Vec<_> = self
            .ops
            .quality_gates
            .iter()
            .filter(|g| g.after.as_ref().is_some_and(|(s, _)| *s == node.local_id))
            .collect();
        if gates.is_empty() {
            return None;
        }
        let report = serde_json::to_value(engine.report()).unwrap_or(Value::Null);
        let ctx = gates::context(&self.plan, &report, &self.inputs, &self.run_id);
        gates.into_iter().find_map(|g| {
            let r = gates::check(g, &ctx);
            (r.passed == Some(false)).then(|| {
                let msg = r
                    .message
                    .unwrap_or_else(|| format!("quality gate `{}` failed", g.name));
                tracing::warn!(run_id = %self.run_id, stage, "{msg}: stopping the run");
                msg
            })
        })
    }

    /// A task's result: keeps what its hooks noted.
    pub fn result(&mut self, r: &TaskResult) {
        for n in &r.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
    }

    /// The run ended: gates, GitHub, notifications, `on_run_end` hooks, in
    /// that order, each writing what it did into `report`.
    pub async fn finish(&mut self, report: &mut Value) {
        if self.ops.is_empty() && self.notes.is_empty() {
            return;
        }
        if !self.ops.quality_gates.is_empty() {
            let ctx = self.end_context(report);
            let results = gates::evaluate_all(&self.ops.quality_gates, &self.plan, report, &ctx);
            gates::apply(report, &results, self.stopped_by.as_deref());
        }
        let mut done = Map::new();
        if let Some(cfg) = self.ops.github.clone() {
            let gh = self.github_end(&cfg, report).await;
            done.insert("github".into(), gh);
        }
        if !self.ops.notifications.is_empty() {
            self.notify_end(report, &done);
            let deliveries = self.notifier.drain().await;
            for d in deliveries.iter().filter(|d| !d.delivered) {
                self.notes.push(format!(
                    "notification to {} ({}) not delivered after {} attempt(s): {}",
                    d.target,
                    d.event.as_str(),
                    d.attempts,
                    d.error.as_deref().unwrap_or("unknown error")
                ));
            }
            done.insert("notifications".into(), json!(deliveries));
        }
        self.background.close();
        self.background.wait().await;
        if (!done.is_empty() || !self.ops.hooks.on_run_end.is_empty())
            && let Value::Object(m) = report
        {
            m.insert("integrations".into(), Value::Object(done));
        }
        self.on_run_end(report).await;
        self.write_notes(report);
    }

    fn write_notes(&mut self, report: &mut Value) {
        if self.notes.is_empty() {
            return;
        }
        let Value::Object(m) = report else { return };
        let notes = m.entry("notes").or_insert_with(|| json!([]));
        if let Value::Array(list) = notes {
            list.extend(self.notes.drain(..).map(Value::String));
        }
    }

    fn notify_end(&self, report: &Value, done: &Map<String, Value>) {
        let success = summary::status(report) == "success";
        let event = if success {
            NotifyEvent::Success
        } else {
            NotifyEvent::Failure
        };
        if !self.notifier.wants(event) {
            return;
        }
        let mut text = summary::headline(report);
        let github = done.get("github");
        let pr = github
            .and_then(|g| g.get("pull_request"))
            .and_then(|p| p.get("url"));
        let issue = github
            .and_then(|g| g.get("issue"))
            .and_then(|p| p.get("url"));
        for (label, url) in [("pull request", pr), ("issue", issue)] {
            if let Some(u) = url.and_then(Value::as_str) {
                text.push_str(&format!(" — {label}: {u}"));
            }
        }
        let failed: Vec<Value> = summary::failed_stages(report)
            .into_iter()
            .map(|(stage, error)| json!({"stage": stage, "error": error}))
            .collect();
        let mut payload = self.payload(summary::status(report));
        for key in ["error", "duration", "quality_gates"] {
            if let Some(v) = report.get(key) {
                payload[key] = v.clone();
            }
        }
        payload["failed_stages"] = json!(failed);
        payload["pull_request"] = pr.cloned().unwrap_or(Value::Null);
        payload["issue"] = issue.cloned().unwrap_or(Value::Null);
        self.notifier.send(&Message {
            event,
            text,
            payload,
        });
    }

    async fn on_run_end(&mut self, report: &Value) {
        if !self.commands && !self.ops.hooks.on_run_end.is_empty() {
            let note = "on_run_end hooks not run: they are commands from the submitted cascade, \
                        and this coordinator does not run submitted commands; start `coordinator \
                        serve` with --allow-submitted-commands (env CASCADE_ALLOW_SUBMITTED_COMMANDS=true)";
            tracing::warn!(run_id = %self.run_id, "{note}");
            self.notes.push(note.to_owned());
            return;
        }
        let env = [
            ("CASCADE_HOOK", "on_run_end".to_owned()),
            ("CASCADE_RUN_ID", self.run_id.clone()),
            ("CASCADE_CASCADE", self.plan.name.clone()),
            ("CASCADE_STATUS", summary::status(report).to_owned()),
        ];
        let never = CancellationToken::new();
        for c in &self.ops.hooks.on_run_end {
            let out = cascade_exec::exec::run_hook(
                "on_run_end",
                &c.run,
                Some(&self.dir),
                report,
                &env,
                c.timeout,
                &never,
            )
            .await;
            if let Err(f) = out {
                tracing::warn!(run_id = %self.run_id, "{}", f.message);
                self.notes.push(f.message);
            }
        }
    }

    /// The context templates in the sections read at the start: inputs.
    fn start_context(&self) -> Context {
        gates::context(&self.plan, &Value::Null, &self.inputs, &self.run_id)
    }

    fn end_context(&self, report: &Value) -> Context {
        gates::context(&self.plan, report, &self.inputs, &self.run_id)
    }

    /// A setting that may hold `${...}`; `None` when unset, empty or not
    /// renderable (noted).
    fn render(&self, text: Option<&str>, ctx: &Context) -> Option<String> {
        let text = text?;
        if !text.contains("${") {
            return Some(text.to_owned());
        }
        match Template::parse(text).and_then(|t| t.render(ctx)) {
            Ok(v) => Some(stringify(&v)).filter(|s| !s.is_empty()),
            Err(e) => {
                tracing::warn!("github: `{text}`: {e}");
                None
            }
        }
    }

    fn sha(&self, cfg: &GithubConfig, ctx: &Context) -> Option<String> {
        if !cfg.status {
            return None;
        }
        self.render(cfg.sha.as_deref(), ctx)
            .or_else(|| self.env.get("GITHUB_SHA"))
    }

    fn status_context(&self, cfg: &GithubConfig) -> String {
        cfg.status_context
            .clone()
            .unwrap_or_else(|| format!("cascade/{}", self.plan.name))
    }

    fn github_client(
        &self,
        cfg: &GithubConfig,
        ctx: &Context,
    ) -> Result<github::GithubClient, IntegrationError> {
        let http = self.http.clone().ok_or(IntegrationError::NoHttpClient)?;
        let token = self
            .env
            .get(&cfg.token_env)
            .ok_or_else(|| IntegrationError::TokenUnset(cfg.token_env.clone()))?;
        let repo = self
            .render(cfg.repository.as_deref(), ctx)
            .or_else(|| self.env.get("GITHUB_REPOSITORY"))
            .ok_or(IntegrationError::NoRepository)?;
        let api = cfg
            .api_url
            .clone()
            .or_else(|| self.env.get("GITHUB_API_URL"))
            .unwrap_or_else(|| github::DEFAULT_API_URL.to_owned());
        github::GithubClient::new(http, &api, token, &repo)
    }

    /// Status, then a pull request (success) or an issue (failed, partial).
    async fn github_end(&mut self, cfg: &GithubConfig, report: &Value) -> Value {
        let ctx = self.end_context(report);
        let mut out = Map::new();
        let gh = match self.github_client(cfg, &ctx) {
            Ok(gh) => gh,
            Err(why) => {
                tracing::warn!(run_id = %self.run_id, "github: {why}");
                self.notes.push(format!("github: {why}"));
                out.insert("skipped".into(), json!(why.to_string()));
                return Value::Object(out);
            }
        };
        out.insert("repository".into(), json!(gh.repository()));
        let status = summary::status(report).to_owned();
        if let Some(sha) = self.sha(cfg, &ctx) {
            let state = if status == "success" {
                "success"
            } else {
                "failure"
            };
            let context = self.status_context(cfg);
            match gh
                .set_status(&sha, state, &summary::headline(report), &context)
                .await
            {
                Ok(()) => {
                    out.insert(
                        "status".into(),
                        json!({"sha": sha, "state": state, "context": context}),
                    );
                }
                Err(e) => self.github_note("the commit status was not set", &e.to_string()),
            }
        }
        if status == "success" && cfg.create_pr {
            match self.proposal(cfg, report, &ctx) {
                Ok(p) => match github::open_pull_request(&gh, &p).await {
                    Ok(pr) => {
                        out.insert("pull_request".into(), json!(pr));
                    }
                    Err(e) => self.github_note("no pull request", &e),
                },
                Err(why) => self.github_note("no pull request", &why),
            }
        }
        if status != "success" && cfg.report_issues {
            let marker = format!("<!-- cascade-failure: {} -->", self.plan.name);
            let draft = github::IssueDraft {
                title: summary::issue_title(report),
                body: summary::issue_body(report, &marker),
                marker,
                labels: cfg.labels.clone(),
            };
            match github::report_failure(&gh, &draft).await {
                Ok(issue) => {
                    out.insert("issue".into(), json!(issue));
                }
                Err(e) => self.github_note("no issue", &e),
            }
        }
        Value::Object(out)
    }

    fn github_note(&mut self, what: &str, why: &dyn std::fmt::Display) {
        tracing::warn!(run_id = %self.run_id, "github: {what}: {why}");
        self.notes.push(format!("github: {what}: {why}"));
    }

    /// The pull request to open: the patch of the named stage, or of the
    /// last codex-sandbox stage that produced one.
    fn proposal(
        &self,
        cfg: &GithubConfig,
        report: &Value,
        ctx: &Context,
    ) -> Result<github::Proposal, IntegrationError> {
        let (stage, text) =
            find_patch(cfg.patch_stage.as_deref(), report).ok_or(IntegrationError::NoPatch)?;
        let files = cascade_core::diff::split(&text)?;
        let paths: Vec<String> = files.iter().map(|f| f.path().to_owned()).collect();
        let marker = format!("<!-- cascade-run: {} -->", self.run_id);
        let title = self
            .render(cfg.title.as_deref(), ctx)
            .unwrap_or_else(|| summary::pr_title(report, files.len()));
        let branch = self
            .render(cfg.branch.as_deref(), ctx)
            .unwrap_or_else(|| format!("cascade/{}/{}", self.plan.name, self.run_id));
        Ok(github::Proposal {
            base: self.render(cfg.base.as_deref(), ctx),
            branch: branch_name(&branch),
            message: format!(
                "{title}\n\nProposed by cascade `{}`, run {}.",
                self.plan.name, self.run_id
            ),
            body: summary::pr_body(report, &stage, &paths, &marker),
            title,
            labels: cfg.labels.clone(),
            draft: cfg.draft,
            files,
            dir: cfg.patch_dir.clone(),
        })
    }
}

/// Characters git refuses in branch names become `-`.
fn branch_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_./".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .replace("..", "-")
}

/// `(stage id, patch)`: the named stage's, else the last codex-sandbox
/// stage (by finish time) with a non-empty `patch` (or a readable
/// `patch_file`).
fn find_patch(stage: Option<&str>, report: &Value) -> Option<(String, String)> {
    let stages = report.get("stages")?.as_object()?;
    let patch_of = |st: &Value| -> Option<String> {
        let out = st.get("output")?;
        match out.get("patch").and_then(Value::as_str) {
            Some(p) if !p.trim().is_empty() => Some(p.to_owned()),
            _ => out
                .get("patch_file")
                .and_then(Value::as_str)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .filter(|p| !p.trim().is_empty()),
        }
    };
    if let Some(id) = stage {
        return stages
            .get(id)
            .and_then(patch_of)
            .map(|p| (id.to_owned(), p));
    }
    let mut found: Vec<(&str, &String, String)> = stages
        .iter()
        .filter(|(_, st)| {
            st.get("type").and_then(Value::as_str) == Some("codex-sandbox")
                && st.get("status").and_then(Value::as_str) == Some("success")
        })
        .filter_map(|(id, st)| {
            let at = st
                .get("finished_at")
                .and_then(Value::as_str)
                .unwrap_or_default();
            patch_of(st).map(|p| (at, id, p))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found.pop().map(|(_, id, p)| (id.clone(), p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_safe() {
        assert_eq!(branch_name("cascade/my flow/01a2"), "cascade/my-flow/01a2");
        assert_eq!(branch_name("a..b~c"), "a-b-c");
    }

    #[test]
    fn the_last_sandbox_patch_is_proposed() {
        let report = json!({"stages": {
            "a": {"type": "codex-sandbox", "status": "success", "finished_at": "2", "output": {"patch": "P2"}},
            "b": {"type": "codex-sandbox", "status": "success", "finished_at": "1", "output": {"patch": "P1"}},
            "c": {"type": "codex-sandbox", "status": "failed", "finished_at": "3", "output": {"patch": "P3"}},
            "d": {"type": "sequential", "status": "success", "finished_at": "4", "output": {"patch": "P4"}},
        }});
        assert_eq!(find_patch(None, &report), Some(("a".into(), "P2".into())));
        assert_eq!(
            find_patch(Some("d"), &report),
            Some(("d".into(), "P4".into()))
        );
        assert_eq!(find_patch(None, &json!({"stages": {}})), None);
    }
}
