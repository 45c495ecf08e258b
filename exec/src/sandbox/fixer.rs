//! Fixers: whatever proposes a change for the failing tests.
//!
//! The loop asks a [`Fixer`] once per iteration with a [`FixRequest`] (the failures, the
//! relevant files, the history so far) and applies its [`FixProposal`]. The worker's model
//! and agent fixers implement the trait elsewhere; [`CommandFixer`] runs a shell command
//! in the sandbox copy, sandboxed like the tests.
//!
//! A fixer's error decides what the loop does next: `Retryable` and `Timeout` are
//! recorded as that iteration's outcome (`fixer_failed`) and the loop goes on; `Terminal`
//! stops the loop with that failure; `Cancelled` stops it as cancelled.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use cascade_proto::{Failure, FailureKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backend::{BackendError, SandboxMode};
use super::config::{LoopConfig, resolve_backend};
use super::patch::FileEdit;
use super::report::{TestCounts, TestFailure};
use super::runner::Jail;

/// What a fixer is asked: also the JSON a [`CommandFixer`] gets on stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixRequest {
    /// 1 for the first fix attempt.
    pub iteration: u32,
    pub failures: Vec<TestFailure>,
    /// `(relative path, content)`, most relevant first.
    pub files: Vec<(String, String)>,
    pub test_command: String,
    pub history: Vec<IterationRecord>,
    /// The end of the last test run's output.
    #[serde(default)]
    pub output: String,
}

/// What a fixer proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixProposal {
    /// The fixer edited the sandbox copy itself.
    InPlace,
    /// Full-file replacements.
    Edits(Vec<FileEdit>),
    /// A unified diff against the sandbox copy.
    Diff(String),
}

/// How an iteration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IterationOutcome {
    /// The whole suite passes.
    Fixed,
    /// Fewer failures; accepted.
    Improved,
    /// Different failures, none of them a test that passed before; accepted.
    Changed,
    /// A test that passed before fails now; the change was undone.
    Regressed,
    /// The same failures as before; the change was undone and the loop stopped.
    Stalled,
    /// The fixer changed nothing.
    NoChange,
    /// The fixer reported an error; anything it wrote was undone.
    FixerFailed,
    /// The proposal could not be applied (bad paths, a diff that does not apply).
    InvalidProposal,
}

impl IterationOutcome {
    pub fn accepted(self) -> bool {
        matches!(self, Self::Fixed | Self::Improved | Self::Changed)
    }
}

/// One iteration, as kept in the history and the outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub iteration: u32,
    /// The failures the fixer was asked about.
    pub failures: Vec<TestFailure>,
    /// What the fixer changed (also when the change was undone).
    pub patch: String,
    pub outcome: IterationOutcome,
    /// The whole suite after the change (absent when it did not run).
    pub tests: Option<TestCounts>,
    /// The failing tests alone, re-run first (absent when the runner cannot select).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeted: Option<TestCounts>,
    /// Tests that passed before and fail now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regressions: Vec<String>,
    /// The fixer's error, or why its proposal was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The future a fixer returns.
pub type ProposeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<FixProposal, Failure>> + Send + 'a>>;

/// Proposes changes. `sandbox_dir` is the project copy the tests run in.
pub trait Fixer: Send + Sync {
    fn propose<'a>(
        &'a self,
        req: &'a FixRequest,
        sandbox_dir: &'a Path,
        cancel: &'a CancellationToken,
    ) -> ProposeFuture<'a>;
}

/// Runs `sh -c <command>` in the sandbox copy (cwd), sandboxed like the tests: the
/// request as JSON on stdin and in the file `$CASCADE_FAILURES_FILE`; its edits are the
/// proposal ([`FixProposal::InPlace`]); a non-zero exit fails the iteration.
#[derive(Clone, Debug)]
pub struct CommandFixer {
    command: String,
    jail: Jail,
    timeout: Duration,
}

impl CommandFixer {
    /// A fixer isolated the way `cfg` isolates its tests (same backend, limits, network,
    /// time limit).
    pub fn new(command: impl Into<String>, cfg: &LoopConfig) -> Result<Self, BackendError> {
        let backend = resolve_backend(cfg)?;
        Ok(CommandFixer {
            command: command.into(),
            jail: Jail {
                backend,
                use_helper: cfg.mode != SandboxMode::Off,
                helper: cfg.helper.clone(),
                limits: cfg.limits,
                network: cfg.network,
                root: std::path::PathBuf::new(),
            },
            timeout: cfg.test_timeout,
        })
    }

    async fn run(
        &self,
        req: &FixRequest,
        dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<FixProposal, Failure> {
        let mut jail = self.jail.clone();
        // The loop's copy is `<root>/work`; the jail may write all of `<root>`.
        jail.root = match dir.parent() {
            Some(parent)
                if dir.file_name().is_some_and(|n| n == "work")
                    && parent.join("cascade").is_dir() =>
            {
                parent.to_path_buf()
            }
            _ => dir.to_path_buf(),
        };
        let json = serde_json::to_vec_pretty(req)
            .map_err(|e| Failure::terminal(format!("cannot encode the fix request: {e}")))?;
        let control = jail.root.join("cascade");
        std::fs::create_dir_all(&control)
            .map_err(|e| Failure::retryable(format!("cannot create {}: {e}", control.display())))?;
        let file = control.join("fix-request.json");
        std::fs::write(&file, &json)
            .map_err(|e| Failure::retryable(format!("cannot write {}: {e}", file.display())))?;
        std::fs::create_dir_all(jail.root.join("tmp"))
            .map_err(|e| Failure::retryable(format!("cannot create the sandbox tmp: {e}")))?;
        let env = vec![
            (
                "CASCADE_FAILURES_FILE".to_owned(),
                file.to_string_lossy().into_owned(),
            ),
            ("CASCADE_ITERATION".to_owned(), req.iteration.to_string()),
        ];
        let out = jail
            .run(dir, &self.command, &env, Some(json), self.timeout, cancel)
            .await?;
        if out.timed_out {
            return Err(Failure::new(
                FailureKind::Timeout,
                format!("the fix command ran past {}s", self.timeout.as_secs()),
            ));
        }
        if !out.success() {
            let tail: Vec<&str> = out
                .output
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let mut failure = Failure::retryable(format!(
                "the fix command {}: {}",
                out.describe(),
                tail.join("\n").trim()
            ));
            failure.exit_code = out.exit_code;
            return Err(failure);
        }
        Ok(FixProposal::InPlace)
    }
}

impl Fixer for CommandFixer {
    fn propose<'a>(
        &'a self,
        req: &'a FixRequest,
        sandbox_dir: &'a Path,
        cancel: &'a CancellationToken,
    ) -> ProposeFuture<'a> {
        Box::pin(self.run(req, sandbox_dir, cancel))
    }
}
