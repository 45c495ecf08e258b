//! Running one attempt of one task.
//!
//! [`Executor::execute`] looks the task's skill up in the registry, runs it and always
//! returns a [`TaskResult`]: every problem (unknown skill, bad input, spawn error, non-zero
//! exit, timeout, cancellation) becomes a classified [`Failure`], never a panic or an `Err`.
//!
//! ```text
//!   TaskSpec ─► lookup ─┬─ builtin ──► builtins::run   (in-process)
//!                       └─ file ─────► process::run    (child in its own process group)
//!                                            │
//!            timeout (min of task and skill) ┤  cancel token
//!                                            ▼
//!                          killpg(SIGKILL) ─► Failed(Timeout | Cancelled)
//! ```
//!
//! Classification: unknown skill, bad input and spawn errors are `Terminal` (retrying cannot
//! help); non-zero exits, signals and `fail` are `Retryable`.

mod ai;
mod builtins;
mod process;

pub use process::{HookFailure, MAX_ENV_INPUT_BYTES, MAX_STDOUT_BYTES, run_hook};

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_proto::{Failure, FailureKind, TaskHook, TaskHooks, TaskOutcome, TaskResult, TaskSpec};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::model::ModelClient;
use crate::skills::{Builtin, SkillDef, SkillKind, SkillRegistry};
use cascade_core::models::ModelCatalog;

/// Runs task attempts against a shared skill registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    registry: Arc<SkillRegistry>,
    worker_name: String,
    models: ModelClient,
    /// Whether commands that come with the task (its hooks, a sandbox's test and fix
    /// commands) may run.
    submitted: Arc<SubmittedCommands>,
}

/// Which tasks may run commands that come with the task rather than from this
/// machine's skill files: the task's `pre_task` / `post_task` hooks and the
/// `codex-sandbox` test and fix commands, written in a submitted cascade. A worker
/// refuses them unless started with `--allow-submitted-commands` (or lists the skill
/// in `--allow-submitted-commands-for`); the embedded `coordinator run` runs the user's
/// own file and allows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmittedCommands {
    /// Every task may.
    pub all: bool,
    /// Tasks of these skills may.
    pub skills: std::collections::BTreeSet<String>,
}

impl SubmittedCommands {
    /// Everything allowed (a cascade the user runs locally).
    pub fn allowed() -> Self {
        SubmittedCommands {
            all: true,
            skills: Default::default(),
        }
    }

    pub fn allows(&self, skill: &str) -> bool {
        self.all || self.skills.contains(skill)
    }

    /// The failure of a task whose `what` (e.g. "its `pre_task` hooks") is refused.
    fn refusal(task: &TaskSpec, what: &str) -> Failure {
        Failure::terminal(format!(
            "stage `{}`: {what} are commands from the submitted cascade, and this worker \
             does not run submitted commands; start the worker with \
             --allow-submitted-commands (env CASCADE_ALLOW_SUBMITTED_COMMANDS=true), or \
             allow this skill only with --allow-submitted-commands-for {}",
            task.stage_id, task.skill
        ))
    }
}

impl Executor {
    /// An executor whose model skills use the built-in models file.
    pub fn new(registry: Arc<SkillRegistry>, worker_name: impl Into<String>) -> Self {
        Executor {
            registry,
            worker_name: worker_name.into(),
            models: ModelClient::new(Arc::new(ModelCatalog::builtin())),
            submitted: Arc::new(SubmittedCommands::allowed()),
        }
    }

    /// Which tasks may run commands that come with them (allowed for all by default:
    /// a worker narrows this, see [`SubmittedCommands`]).
    pub fn with_submitted_commands(mut self, policy: SubmittedCommands) -> Self {
        self.submitted = Arc::new(policy);
        self
    }

    /// Model skills call models through this client (its models file, keys,
    /// rate limits and circuit breakers).
    pub fn with_models(mut self, client: ModelClient) -> Self {
        self.models = client;
        self
    }

    pub fn registry(&self) -> &SkillRegistry {
        &self.registry
    }

    pub fn models(&self) -> &ModelClient {
        &self.models
    }

    /// Runs one attempt. Never panics; every problem becomes a Failed outcome.
    ///
    /// With hooks (the task's own: drivers put the cascade's on every
    /// task): each `pre_task` hook runs first (one that fails fails the
    /// attempt, retryably, with its stderr, and the skill does not run),
    /// then the skill, then each `post_task` hook (a failure is logged and
    /// noted in the result; a cancelled attempt runs none).
    pub async fn execute(&self, task: &TaskSpec, cancel: &CancellationToken) -> TaskResult {
        let started = Instant::now();
        let refused = self.refused(task);
        let hooks = task.hooks.as_ref().filter(|_| refused.is_none());
        let pre = match (refused, hooks) {
            (Some(f), _) => Err(f),
            (None, Some(h)) => pre_task(h, task, cancel).await,
            (None, None) => Ok(()),
        };
        let (result, usage, model) = match pre {
            Ok(()) => self.run(task, cancel).await,
            Err(f) => (Err(f), None, None),
        };
        let outcome = match result {
            Ok(outputs) => TaskOutcome::Succeeded { outputs },
            Err(failure) => TaskOutcome::Failed(failure),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let TaskOutcome::Failed(f) = &outcome {
            tracing::debug!(
                run_id = %task.run_id, stage = %task.stage_id, task_id = %task.task_id,
                attempt = %task.attempt, skill = %task.skill, kind = ?f.kind,
                "attempt failed: {}", f.message
            );
        }
        let notes = match hooks {
            Some(h) if !cancel.is_cancelled() => {
                post_task(h, task, &outcome, &self.worker_name, cancel).await
            }
            _ => Vec::new(),
        };
        TaskResult {
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            worker: self.worker_name.clone(),
            duration_ms,
            outcome,
            model,
            usage,
            notes,
        }
    }

    /// The failure of a task that brings commands this executor may not run.
    fn refused(&self, task: &TaskSpec) -> Option<Failure> {
        if self.submitted.allows(task.skill.as_str()) {
            return None;
        }
        if task.hooks.as_ref().is_some_and(|h| !h.is_empty()) {
            return Some(SubmittedCommands::refusal(
                task,
                "its `pre_task` / `post_task` hooks",
            ));
        }
        let sandbox = self
            .registry
            .get(task.skill.as_str())
            .is_some_and(|s| matches!(s.kind, SkillKind::Builtin(Builtin::Sandbox)));
        sandbox.then(|| SubmittedCommands::refusal(task, "its `test_command` and fix command"))
    }

    async fn run(&self, task: &TaskSpec, cancel: &CancellationToken) -> ai::AiOutcome {
        let name = task.skill.as_str();
        let Some(skill) = self.registry.get(name) else {
            return (
                Err(Failure::terminal(format!("unknown skill `{name}`"))),
                None,
                None,
            );
        };
        let inputs = match inputs_object(task) {
            Ok(i) => i,
            Err(f) => return (Err(f), None, None),
        };
        if cancel.is_cancelled() {
            return (Err(cancelled(name)), None, None);
        }
        let limit = Limit {
            timeout: effective_timeout(task, skill),
            cancel,
            skill: name,
        };
        match &skill.kind {
            SkillKind::Builtin(Builtin::Judge) => {
                self.bounded(&limit, ai::judge(&self.models, task, &inputs, cancel))
                    .await
            }
            SkillKind::Builtin(Builtin::Sandbox) => {
                let run = ai::sandbox(&self.registry, &self.models, task, &inputs, cancel);
                self.bounded(&limit, run).await
            }
            SkillKind::Builtin(b) => (builtins::run(*b, task, &inputs, &limit).await, None, None),
            SkillKind::Shell { .. } | SkillKind::Command { .. } => {
                (process::run(skill, task, &inputs, &limit).await, None, None)
            }
            SkillKind::Model(spec) => {
                let run =
                    crate::model::skill::run(skill, spec, task, &inputs, &self.models, cancel);
                self.bounded(&limit, run).await
            }
        }
    }

    /// Runs an in-process AI skill under the attempt's time limit: at the
    /// limit (or on cancellation) the child token stops the model call,
    /// CLI agent or sandbox loop, and the attempt fails as such.
    async fn bounded(
        &self,
        limit: &Limit<'_>,
        run: impl std::future::Future<Output = ai::AiOutcome>,
    ) -> ai::AiOutcome {
        tokio::select! {
            out = run => out,
            stopped = limit.reached() => (Err(limit.failure(stopped)), None, None),
        }
    }
}

/// A hook's time limit when the cascade gives none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a task hook reads on stdin: the attempt (without the prompt
/// context) and, after it ran, its outcome.
fn hook_input(which: &str, task: &TaskSpec, outcome: Option<&TaskOutcome>) -> Value {
    let mut v = json!({
        "hook": which,
        "run_id": task.run_id,
        "stage_id": task.stage_id,
        "task_id": task.task_id,
        "skill": task.skill,
        "attempt": task.attempt,
        "inputs": task.inputs,
        "model": task.model,
        "workdir": task.workdir,
    });
    if let (Some(o), Value::Object(m)) = (outcome, &mut v) {
        m.insert(
            "result".into(),
            serde_json::to_value(o).unwrap_or(Value::Null),
        );
    }
    v
}

fn hook_env(which: &str, task: &TaskSpec) -> Vec<(&'static str, String)> {
    vec![
        ("CASCADE_HOOK", which.to_owned()),
        ("CASCADE_RUN_ID", task.run_id.to_string()),
        ("CASCADE_STAGE_ID", task.stage_id.to_string()),
        ("CASCADE_TASK_ID", task.task_id.to_string()),
        ("CASCADE_SKILL", task.skill.to_string()),
        ("CASCADE_ATTEMPT", task.attempt.to_string()),
    ]
}

async fn run_task_hook(
    which: &str,
    hook: &TaskHook,
    task: &TaskSpec,
    input: &Value,
    cancel: &CancellationToken,
) -> Result<(), HookFailure> {
    let timeout = hook
        .timeout_ms
        .map_or(DEFAULT_HOOK_TIMEOUT, Duration::from_millis);
    let dir = task.workdir.as_deref().map(std::path::Path::new);
    let env = hook_env(which, task);
    run_hook(which, &hook.run, dir, input, &env, timeout, cancel).await
}

/// Every `pre_task` hook in order; the first that fails fails the attempt.
async fn pre_task(
    hooks: &TaskHooks,
    task: &TaskSpec,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    if hooks.pre_task.is_empty() {
        return Ok(());
    }
    let input = hook_input("pre_task", task, None);
    for hook in &hooks.pre_task {
        if let Err(h) = run_task_hook("pre_task", hook, task, &input, cancel).await {
            let mut f = Failure::retryable(h.message);
            f.exit_code = h.exit_code;
            f.stderr_tail = h.stderr_tail;
            return Err(f);
        }
    }
    Ok(())
}

/// Every `post_task` hook; failures become notes, never a failed attempt.
async fn post_task(
    hooks: &TaskHooks,
    task: &TaskSpec,
    outcome: &TaskOutcome,
    worker: &str,
    cancel: &CancellationToken,
) -> Vec<String> {
    let mut notes = Vec::new();
    if hooks.post_task.is_empty() {
        return notes;
    }
    let input = hook_input("post_task", task, Some(outcome));
    for hook in &hooks.post_task {
        if let Err(h) = run_task_hook("post_task", hook, task, &input, cancel).await {
            tracing::warn!(
                run_id = %task.run_id, stage = %task.stage_id, task_id = %task.task_id,
                attempt = %task.attempt, worker, "{}", h.message
            );
            notes.push(format!(
                "stage `{}` task `{}` attempt {}: {}",
                task.stage_id, task.task_id, task.attempt, h.message
            ));
        }
    }
    notes
}

/// What may end an attempt early: its time limit and its cancellation token.
struct Limit<'a> {
    timeout: Option<Duration>,
    cancel: &'a CancellationToken,
    skill: &'a str,
}

/// Why an attempt was stopped before it finished.
enum Stopped {
    TimedOut(Duration),
    Cancelled,
}

impl Limit<'_> {
    /// Resolves when the attempt must stop.
    async fn reached(&self) -> Stopped {
        let deadline = async {
            match self.timeout {
                Some(t) => {
                    tokio::time::sleep(t).await;
                    t
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            t = deadline => Stopped::TimedOut(t),
            () = self.cancel.cancelled() => Stopped::Cancelled,
        }
    }

    fn failure(&self, stopped: Stopped) -> Failure {
        match stopped {
            Stopped::TimedOut(t) => Failure::new(
                FailureKind::Timeout,
                format!(
                    "skill `{}` timed out after {:.1}s",
                    self.skill,
                    t.as_secs_f64()
                ),
            ),
            Stopped::Cancelled => cancelled(self.skill),
        }
    }
}

fn cancelled(skill: &str) -> Failure {
    Failure::new(
        FailureKind::Cancelled,
        format!("skill `{skill}` was cancelled"),
    )
}

/// The smaller of the task's and the skill's time limits, if either is set.
fn effective_timeout(task: &TaskSpec, skill: &SkillDef) -> Option<Duration> {
    let from_task = task.timeout_ms.map(Duration::from_millis);
    match (from_task, skill.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The task's inputs as an object; `null` counts as no inputs.
fn inputs_object(task: &TaskSpec) -> Result<Map<String, Value>, Failure> {
    match &task.inputs {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        other => Err(Failure::terminal(format!(
            "skill `{}`: inputs must be a JSON object, got {}",
            task.skill,
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skills::SkillKind;
    use std::collections::BTreeMap;

    fn task(timeout_ms: Option<u64>) -> TaskSpec {
        TaskSpec {
            run_id: "r".into(),
            task_id: "t".into(),
            stage_id: "s".into(),
            skill: "x".into(),
            attempt: cascade_proto::Attempt::FIRST,
            inputs: Value::Null,
            timeout_ms,
            model: None,
            workdir: None,
            context: None,
            budget: None,
            hooks: None,
        }
    }

    fn skill(timeout: Option<Duration>) -> SkillDef {
        SkillDef {
            name: "x".into(),
            description: None,
            kind: SkillKind::Shell { run: "true".into() },
            timeout,
            env: BTreeMap::new(),
            inputs: vec![],
            outputs: vec![],
            source: None,
        }
    }

    #[test]
    fn timeout_is_the_smaller_of_task_and_skill() {
        let s = |x| Some(Duration::from_secs(x));
        let table = [
            (None, None, None),
            (Some(5_000), None, s(5)),
            (None, s(7), s(7)),
            (Some(5_000), s(7), s(5)),
            (Some(9_000), s(7), s(7)),
        ];
        for (t, k, want) in table {
            assert_eq!(effective_timeout(&task(t), &skill(k)), want, "{t:?} {k:?}");
        }
    }

    #[test]
    fn inputs_must_be_an_object() {
        let mut t = task(None);
        assert!(inputs_object(&t).expect("null is empty").is_empty());
        t.inputs = serde_json::json!([1]);
        let f = inputs_object(&t).expect_err("array refused");
        assert_eq!(f.kind, FailureKind::Terminal);
        assert!(f.message.contains("an array"), "{}", f.message);
    }

    fn hooked(pre: &str, post: &str, dir: &std::path::Path) -> (Executor, TaskSpec) {
        let exec = Executor::new(Arc::new(SkillRegistry::builtins()), "w");
        let mut t = task(None);
        t.skill = "echo".into();
        t.inputs = serde_json::json!({"n": 1});
        t.workdir = Some(dir.display().to_string());
        let hook = |run: &str| TaskHook {
            run: run.into(),
            timeout_ms: Some(10_000),
        };
        t.hooks = Some(TaskHooks {
            pre_task: vec![hook(pre)],
            post_task: vec![hook(post)],
        });
        (exec, t)
    }

    #[tokio::test]
    async fn submitted_commands_run_only_when_allowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (exec, t) = hooked("touch pre-ran", "true", dir.path());
        let refusing = exec
            .clone()
            .with_submitted_commands(SubmittedCommands::default());
        let r = refusing.execute(&t, &CancellationToken::new()).await;
        let TaskOutcome::Failed(f) = &r.outcome else {
            panic!("refused: {r:?}")
        };
        assert_eq!(f.kind, FailureKind::Terminal);
        assert!(
            f.message.contains("--allow-submitted-commands"),
            "{}",
            f.message
        );
        assert!(!dir.path().join("pre-ran").exists(), "the hook did not run");
        // The sandbox's commands are submitted too.
        let mut sandbox = task(None);
        sandbox.skill = "codex-sandbox".into();
        sandbox.inputs = serde_json::json!({"test": "true", "fix_command": "true"});
        let r = refusing.execute(&sandbox, &CancellationToken::new()).await;
        let TaskOutcome::Failed(f) = &r.outcome else {
            panic!("refused: {r:?}")
        };
        assert!(f.message.contains("`test_command`"), "{}", f.message);
        // Allowed for the skill: runs.
        let per_skill = exec.with_submitted_commands(SubmittedCommands {
            all: false,
            skills: ["echo".to_owned()].into(),
        });
        let r = per_skill.execute(&t, &CancellationToken::new()).await;
        assert!(matches!(r.outcome, TaskOutcome::Succeeded { .. }), "{r:?}");
        assert!(dir.path().join("pre-ran").exists());
        // A task without submitted commands runs anywhere.
        let mut plain = t.clone();
        plain.hooks = None;
        let r = refusing.execute(&plain, &CancellationToken::new()).await;
        assert!(matches!(r.outcome, TaskOutcome::Succeeded { .. }), "{r:?}");
    }

    #[tokio::test]
    async fn hooks_run_around_the_skill_in_its_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let (exec, t) = hooked("cat > pre.json", "cat > post.json", dir.path());
        let r = exec.execute(&t, &CancellationToken::new()).await;
        assert!(matches!(r.outcome, TaskOutcome::Succeeded { .. }), "{r:?}");
        assert!(r.notes.is_empty());
        let read = |f: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(f)).expect(f))
                .expect("json")
        };
        assert_eq!(read("pre.json")["inputs"], serde_json::json!({"n": 1}));
        assert_eq!(
            read("post.json")["result"]["outputs"],
            serde_json::json!({"n": 1})
        );
    }

    #[tokio::test]
    async fn a_failing_pre_hook_fails_the_attempt_and_a_post_hook_only_notes() {
        let dir = tempfile::tempdir().expect("tmp");
        let (exec, t) = hooked("echo no lock >&2; exit 3", "true", dir.path());
        let r = exec.execute(&t, &CancellationToken::new()).await;
        let TaskOutcome::Failed(f) = &r.outcome else {
            panic!("the attempt must fail: {r:?}")
        };
        assert_eq!(f.kind, FailureKind::Retryable);
        assert_eq!(f.message, "pre_task hook exited with code 3: no lock");
        assert_eq!(f.exit_code, Some(3));
        let (exec, t) = hooked("true", "sleep 30", dir.path());
        let mut t = t;
        if let Some(h) = t.hooks.as_mut() {
            h.post_task[0].timeout_ms = Some(50);
        }
        let r = exec.execute(&t, &CancellationToken::new()).await;
        assert!(matches!(r.outcome, TaskOutcome::Succeeded { .. }));
        assert_eq!(r.notes.len(), 1);
        assert!(
            r.notes[0].ends_with("post_task hook timed out after 0.1s"),
            "{:?}",
            r.notes
        );
    }
}
