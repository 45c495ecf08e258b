//! The one normalised model every accepted variant of the cascade format
//! loads into. Everything downstream (planner, engine, CLI) reads only this.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cascade_eval::{CmpOp, Condition, Template};
use serde_json::{Map, Value};

use super::yaml::Loc;

/// A loaded cascade, with its sub-cascades resolved.
#[derive(Clone, Debug)]
pub struct Cascade {
    pub name: String,
    pub description: Option<String>,
    pub version: String,
    pub file: PathBuf,
    /// Directory skills run in and sub-cascades are resolved against.
    pub dir: PathBuf,
    pub config: Map<String, Value>,
    pub inputs: Vec<InputDecl>,
    pub stages: Vec<Stage>,
    pub memory: MemoryConfig,
    pub error_handling: Option<ErrorHandling>,
    pub timeout: Option<Duration>,
    /// Tokens and money the whole run may spend on models.
    pub budget: Option<Budget>,
    /// `github_integration`, `notifications`, `quality_gates`, `hooks`:
    /// what happens around the run (see `crate::integrations`).
    pub operations: Operations,
    /// Sections accepted from the seed format whose behaviour arrives with a
    /// later part of the system; each produced a warning at load time.
    pub deferred: BTreeMap<String, Value>,
    /// `cascade: NAME` references, loaded from files beside this one.
    pub subcascades: BTreeMap<String, Cascade>,
}

#[derive(Clone, Debug)]
pub struct InputDecl {
    pub name: String,
    pub ty: Option<String>,
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Value>,
    pub loc: Loc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageType {
    Sequential,
    Parallel,
    Conditional,
    CodexSandbox,
    MultiModel,
    SwarmParallel,
}

impl StageType {
    pub const NAMES: [&'static str; 6] = [
        "sequential",
        "parallel",
        "conditional",
        "codex-sandbox",
        "multi-model",
        "swarm-parallel",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sequential" => Self::Sequential,
            "parallel" => Self::Parallel,
            "conditional" => Self::Conditional,
            "codex-sandbox" => Self::CodexSandbox,
            "multi-model" => Self::MultiModel,
            "swarm-parallel" => Self::SwarmParallel,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sequential => "sequential",
            Self::Parallel => "parallel",
            Self::Conditional => "conditional",
            Self::CodexSandbox => "codex-sandbox",
            Self::MultiModel => "multi-model",
            Self::SwarmParallel => "swarm-parallel",
        }
    }

    /// Whether the stage's skills fan out at once rather than one by one.
    pub fn fans_out(self) -> bool {
        matches!(self, Self::Parallel | Self::SwarmParallel)
    }
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub id: String,
    pub loc: Loc,
    pub name: Option<String>,
    pub description: Option<String>,
    pub ty: StageType,
    pub model: Option<String>,
    pub skills: Vec<SkillRef>,
    /// Stage inputs; strings may hold `${...}` templates.
    pub inputs: Map<String, Value>,
    /// Where each input's value was written (for precise diagnostics).
    pub input_locs: BTreeMap<String, Loc>,
    pub outputs: Vec<String>,
    /// `None`: after the previous stage of the same list; `Some([])`: no
    /// dependency at all.
    pub dependencies: Option<Vec<(String, Loc)>>,
    pub condition: Option<CondSpec>,
    pub branches: Option<Branches>,
    pub repeat: Option<(String, Loc)>,
    pub max_iterations: Option<u32>,
    pub memory: StageMemory,
    pub swarm: Option<SwarmConfig>,
    pub sandbox: Option<SandboxConfig>,
    pub error_handling: Option<ErrorHandling>,
    pub cascade: Option<(String, Loc)>,
    pub substages: Vec<Stage>,
    pub timeout: Option<Duration>,
    pub task_timeout: Option<Duration>,
    /// `for_each`: a list (or a template yielding one); one task per item
    /// and skill, with `${item}` and `${item_index}` in the inputs.
    pub for_each: Option<Value>,
    /// `models: [..]`: one prompt sent to each of these models.
    pub models: Vec<(String, Loc)>,
    /// How the answers of `models` become the stage's output.
    pub select: Option<Select>,
    /// Tokens and money this stage may spend on models.
    pub budget: Option<Budget>,
}

/// `budget: {max_tokens, max_cost_usd}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

/// How a multi-model stage picks its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectMode {
    /// The first answer to arrive; the others are cancelled.
    First,
    /// A named model compares the answers and picks one.
    Judge,
    /// The answer most models gave (ties: the earliest model in the list).
    Vote,
    /// Every answer, by model.
    All,
}

impl SelectMode {
    pub const NAMES: [&'static str; 4] = ["first", "judge", "vote", "all"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "first" => Self::First,
            "judge" => Self::Judge,
            "vote" | "majority" => Self::Vote,
            "all" => Self::All,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Judge => "judge",
            Self::Vote => "vote",
            Self::All => "all",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub mode: SelectMode,
    /// The judging model (`select: judge`).
    pub judge: Option<String>,
    pub loc: Loc,
}

/// A parsed condition with the text it was written as (for plans and
/// messages) and where.
#[derive(Clone, Debug)]
pub struct CondSpec {
    pub cond: Condition,
    pub text: String,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct SkillRef {
    pub skill: String,
    pub inputs: Map<String, Value>,
    pub outputs: Vec<String>,
    pub model: Option<String>,
    pub priority: Option<i64>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum Branches {
    /// First branch whose condition holds wins, else the default one.
    List(Vec<Branch>),
    /// Named branches. The stage's `condition` may evaluate to a branch name
    /// (a selector); else each branch's own condition; else `default`.
    Map {
        branches: Vec<Branch>,
        default: Option<(String, Loc)>,
    },
    /// `pass` when the stage's condition holds, else `fail`.
    PassFail { pass: Vec<Stage>, fail: Vec<Stage> },
}

#[derive(Clone, Debug)]
pub struct Branch {
    pub name: String,
    pub condition: Option<CondSpec>,
    pub is_default: bool,
    pub stages: Vec<Stage>,
    pub loc: Loc,
}

#[derive(Clone, Debug, Default)]
pub struct StageMemory {
    pub read_keys: Vec<String>,
    pub write_keys: Vec<String>,
    /// `memory: persistent`: the stage's whole outputs are kept under its id.
    pub persistent: bool,
    /// `memory_shared`: memory written inside a repeat loop stays visible to
    /// later iterations (the default; `false` clears the loop's keys).
    pub shared: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct SwarmConfig {
    pub topology: Topology,
    pub max_agents: Option<u32>,
    pub strategy: Strategy,
    pub memory_shared: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    Mesh,
    Star,
    Hierarchical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Balanced,
    Specialized,
    Adaptive,
}

/// A codex-sandbox stage's settings, merged from `codex_config`,
/// `fix_strategy` / `error_recovery` and `test_suite` / `tests`.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    /// `test_suite` / `tests`: the suite's name, passed to the test skill.
    pub tests: Option<String>,
    pub max_iterations: Option<u32>,
    /// Settings for the loop (the `codex-sandbox` task's inputs): test
    /// command, fixer, sandbox mode, network, regression check, apply...
    pub settings: Map<String, Value>,
    pub loc: Option<Loc>,
}

/// Keys a `codex_config` / `fix_strategy` / `error_recovery` mapping may
/// hold; the loop reads them.
pub const SANDBOX_KEYS: &[&str] = &[
    "mode",
    "sandbox",
    "sandbox_isolated",
    "max_iterations",
    "network",
    "network_disabled",
    "regression_check",
    "fix_command",
    "fixer",
    "apply",
    "source",
    "framework",
    "test",
    "test_command",
    "test_timeout",
    "limits",
    "exclude",
    "auto_fix",
    "escalate_after",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorStrategy {
    Retry,
    CodexAutoFix,
    ModelSwitch,
    SwarmRecovery,
    Fail,
}

impl ErrorStrategy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.replace('_', "-").as_str() {
            "retry" | "retry-with-backoff" => Self::Retry,
            "codex-auto-fix" => Self::CodexAutoFix,
            "model-switch" | "model-switching" => Self::ModelSwitch,
            "swarm-recovery" => Self::SwarmRecovery,
            "fail" | "fail-fast" => Self::Fail,
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 5] = [
        "retry",
        "codex-auto-fix",
        "model-switch",
        "swarm-recovery",
        "fail",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::CodexAutoFix => "codex-auto-fix",
            Self::ModelSwitch => "model-switch",
            Self::SwarmRecovery => "swarm-recovery",
            Self::Fail => "fail",
        }
    }

    /// Strategies that retry the same attempt when their own move does not
    /// apply; the results say why.
    pub fn runs_as_retry(self) -> bool {
        matches!(
            self,
            Self::CodexAutoFix | Self::ModelSwitch | Self::SwarmRecovery
        )
    }

    /// Why a strategy fell back to a plain retry.
    pub fn retry_reason(self) -> &'static str {
        match self {
            Self::ModelSwitch => "no other model left to switch to (or the task has no model)",
            Self::CodexAutoFix => "the fix loop did not apply (no test skill or loop used up)",
            Self::SwarmRecovery => {
                "recovery re-routes work off dead workers on the swarm; here it retries"
            }
            _ => "",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    Immediate,
    Linear,
    Exponential,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    pub kind: BackoffKind,
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: BackoffKind::Exponential,
            base_ms: 1000,
            max_ms: 60_000,
            jitter: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorHandling {
    pub strategy: ErrorStrategy,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub fallback: Option<String>,
    pub escalate_after: Option<u32>,
    pub escalation: Option<Value>,
    /// `continue_on_failure`: the run goes on past this stage's failure.
    pub continue_on_failure: Option<bool>,
}

impl Default for ErrorHandling {
    fn default() -> Self {
        ErrorHandling {
            strategy: ErrorStrategy::Fail,
            max_retries: 0,
            backoff: Backoff::default(),
            fallback: None,
            escalate_after: None,
            escalation: None,
            continue_on_failure: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryScope {
    #[default]
    Cascade,
    Global,
}

#[derive(Clone, Debug)]
pub struct MemoryConfig {
    pub enabled: bool,
    pub scope: MemoryScope,
    pub retention: Option<Duration>,
    /// Keys declared as the cascade's memory; `cleanup_between_stages` keeps
    /// these and drops other keys once no later stage reads them.
    pub keys: Vec<String>,
    pub cleanup_between_stages: bool,
    pub cleanup_on_exit: bool,
    pub max_memory_mb: Option<u64>,
    pub checkpoints: Vec<String>,
}

impl Default for MemoryConfig {
    /// Memory is on unless a cascade turns it off: stages may write and
    /// read keys without a `memory:` section.
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            scope: MemoryScope::Cascade,
            retention: None,
            keys: Vec::new(),
            cleanup_between_stages: false,
            cleanup_on_exit: false,
            max_memory_mb: None,
            checkpoints: Vec::new(),
        }
    }
}

impl Stage {
    /// Every stage nested in this one: branch stages and substages.
    pub fn children(&self) -> Vec<&Stage> {
        let mut out: Vec<&Stage> = self.substages.iter().collect();
        match &self.branches {
            Some(Branches::List(bs)) | Some(Branches::Map { branches: bs, .. }) => {
                out.extend(bs.iter().flat_map(|b| b.stages.iter()));
            }
            Some(Branches::PassFail { pass, fail }) => out.extend(pass.iter().chain(fail.iter())),
            None => {}
        }
        out
    }
}

impl Cascade {
    /// Every stage of this cascade (not of its sub-cascades), depth first.
    pub fn all_stages(&self) -> Vec<&Stage> {
        fn walk<'a>(s: &'a Stage, out: &mut Vec<&'a Stage>) {
            out.push(s);
            for c in s.children() {
                walk(c, out);
            }
        }
        let mut out = Vec::new();
        for s in &self.stages {
            walk(s, &mut out);
        }
        out
    }
}

/// What a cascade asks for around its run, besides its stages: a pull
/// request or an issue on GitHub, notifications, quality gates and hooks.
/// Only the top-level cascade's sections act (a sub-cascade's are ignored).
#[derive(Clone, Debug, Default)]
pub struct Operations {
    pub github: Option<GithubConfig>,
    pub notifications: Vec<Notification>,
    pub quality_gates: Vec<QualityGate>,
    pub hooks: Hooks,
}

impl Operations {
    pub fn is_empty(&self) -> bool {
        self.github.is_none()
            && self.notifications.is_empty()
            && self.quality_gates.is_empty()
            && self.hooks.is_empty()
    }
}

/// `github_integration`: a pull request with the run's patch on success,
/// an issue on failure, a commit status. Strings may hold `${inputs.*}`.
#[derive(Clone, Debug)]
pub struct GithubConfig {
    /// `create_pr: on_success` (the default) or `never`.
    pub create_pr: bool,
    /// `report_issues: on_failure` (the default) or `never`.
    pub report_issues: bool,
    /// `owner/name`; default `$GITHUB_REPOSITORY`.
    pub repository: Option<String>,
    /// The branch a pull request targets; default the repository's default branch.
    pub base: Option<String>,
    /// The pull request's branch; default `cascade/<cascade>/<run id>`.
    pub branch: Option<String>,
    /// The commit a status is set on; default `$GITHUB_SHA`. No sha, no status.
    pub sha: Option<String>,
    /// `status: false` never sets a commit status.
    pub status: bool,
    /// The status's context; default `cascade/<cascade>`.
    pub status_context: Option<String>,
    pub labels: Vec<String>,
    /// The variable holding the token (never the token itself).
    pub token_env: String,
    /// REST API root; default `$GITHUB_API_URL`, else `https://api.github.com`.
    pub api_url: Option<String>,
    /// The stage whose `patch` is proposed; default the last codex-sandbox
    /// stage that produced one.
    pub patch_stage: Option<String>,
    /// Where the patched project sits in the repository (its paths are
    /// relative to it); default the repository's root.
    pub patch_dir: Option<String>,
    pub title: Option<String>,
    pub draft: bool,
    pub loc: Loc,
}

/// One `notifications` target.
#[derive(Clone, Debug)]
pub struct Notification {
    pub target: NotifyTarget,
    pub on: Vec<NotifyEvent>,
    /// Each delivery attempt's limit.
    pub timeout: Duration,
    /// Attempts after the first, on a transport error, 408, 429 or 5xx.
    pub retries: u32,
    pub loc: Loc,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NotifyTarget {
    /// A line in the coordinator's log.
    Log,
    /// POST of the event as JSON.
    Webhook { url: UrlSource },
    /// A Slack-compatible incoming webhook: `{"text": ...}`, with `blocks`
    /// when asked for.
    Slack {
        url: UrlSource,
        blocks: bool,
        channel: Option<String>,
    },
}

impl NotifyTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
        }
    }
}

/// A URL written in the file, or the variable that holds it (webhook URLs
/// are secrets).
#[derive(Clone, Debug, PartialEq)]
pub enum UrlSource {
    Literal(String),
    Env(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Started,
    Success,
    /// The run failed, or ended partial.
    Failure,
    /// A conditional stage selected a branch.
    Branch,
}

impl NotifyEvent {
    pub const NAMES: [&'static str; 4] = ["started", "success", "failure", "branch"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.replace('-', "_").as_str() {
            "started" | "start" | "on_start" => Self::Started,
            "success" | "on_success" | "succeeded" => Self::Success,
            "failure" | "on_failure" | "failed" => Self::Failure,
            "branch" | "branch_selected" | "branch_taken" | "on_branch" => Self::Branch,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Branch => "branch",
        }
    }
}

/// One quality gate: a threshold on a metric, or a condition.
#[derive(Clone, Debug)]
pub struct QualityGate {
    pub name: String,
    pub check: GateCheck,
    /// Checked as soon as this stage succeeds (a failure stops the run
    /// there); else when the run ends.
    pub after: Option<(String, Loc)>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum GateCheck {
    /// The metric's value must satisfy every bound (`min` is `>=`, `max` is
    /// `<=`, `threshold` with `comparison`).
    Threshold {
        /// As written (for messages).
        metric: String,
        value: Template,
        /// Numbers, or `${...}` strings giving one.
        bounds: Vec<(CmpOp, Value)>,
    },
    /// Any condition of the format (expression, structured, jq).
    Condition(CondSpec),
}

/// `hooks`: shell commands around each task and at the end of the run.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub pre_task: Vec<HookCommand>,
    pub post_task: Vec<HookCommand>,
    pub on_run_end: Vec<HookCommand>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.pre_task.is_empty() && self.post_task.is_empty() && self.on_run_end.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct HookCommand {
    /// For `sh -c`.
    pub run: String,
    pub timeout: Duration,
    pub loc: Loc,
}
