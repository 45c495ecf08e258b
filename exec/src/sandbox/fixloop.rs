//! The test-and-fix loop.
//!
//! ```text
//!  copy source ─► baseline run ─┬─ no tests ─────────────► Terminal failure
//!                               ├─ green ────────────────► success, 0 iterations
//!                               └─ failing ─► iteration i = 1..=max:
//!        ask the fixer ─► apply ─► diff vs accepted state ─┬─ empty ─► no_change
//!                                                          └─► failing tests alone, then the suite
//!          green ─► fixed (stop)       passing test now fails / no tests ─► regressed (undo)
//!          same failures ─► stalled (undo, stop)    fewer ─► improved    other ─► changed
//!  end: green ─► outputs (+ apply to source when asked)
//!       else ─► Terminal failure, class exhausted, details = outputs + escalation record
//! ```
//!
//! The source is only read (and written at the very end when `apply` is set and the loop
//! ended green); everything happens in a temporary copy that is deleted afterwards. The
//! patch (source vs the last accepted state) is written to the artifacts directory
//! whatever the ending.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_proto::{Failure, FailureClass, FailureKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::backend::{self, Backend, SandboxMode};
use super::config::{LoopConfig, resolve_backend};
use super::context::relevant_files;
use super::filter::targeted_command;
use super::fixer::{FixProposal, FixRequest, Fixer, IterationOutcome, IterationRecord};
use super::helper::{HELPER_MARKER, HelperCheckError};
use super::parse::{ParseContext, parse, truncate};
use super::patch::{apply_diff, apply_edits};
use super::report::{Framework, TestReport};
use super::runner::Jail;
use super::tree::{self, Exclude, Snapshot};

/// File name of the patch in the artifacts directory.
pub const PATCH_FILE: &str = "codex-sandbox.patch";
/// How much of the last test output a fixer sees.
const OUTPUT_FOR_FIXER: usize = 8 * 1024;
/// Failing test names listed in a failure message.
const NAMES_IN_MESSAGE: usize = 10;

/// How the loop ended: outputs, or a failure whose `details` hold the same JSON plus an
/// `escalation` record.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopOutcome {
    pub result: Result<Value, Failure>,
}

/// Runs the loop. Never panics; every problem is a classified failure.
pub async fn run_loop(
    cfg: &LoopConfig,
    fixer: &dyn Fixer,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> LoopOutcome {
    LoopOutcome {
        result: run(cfg, fixer, cancel, progress).await,
    }
}

/// Whether `helper` handles the helper marker (a binary that does not would run the tests
/// as its own arguments): it must pass `sh -c 'exit 7'`'s status through. Checked once per
/// path.
async fn check_helper(helper: &Path) -> Result<(), HelperCheckError> {
    static CHECKED: Mutex<Option<HashMap<PathBuf, Result<(), HelperCheckError>>>> =
        Mutex::new(None);
    if let Some(known) = CHECKED
        .lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(helper).cloned()))
    {
        return known;
    }
    let out = tokio::process::Command::new(helper)
        .args([HELPER_MARKER, "--", "sh", "-c", "exit 7"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await;
    let result = match out {
        Ok(o) if o.status.code() == Some(7) => Ok(()),
        Ok(o) => Err(HelperCheckError::NoMarker {
            helper: helper.to_path_buf(),
            status: o.status,
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        }),
        Err(e) => Err(HelperCheckError::Unrunnable {
            helper: helper.to_path_buf(),
            source: Arc::new(e),
        }),
    };
    if let Ok(mut m) = CHECKED.lock() {
        m.get_or_insert_with(HashMap::new)
            .insert(helper.to_path_buf(), result.clone());
    }
    result
}

/// One run of the loop.
struct Session<'a> {
    cfg: &'a LoopConfig,
    jail: Jail,
    exclude: Exclude,
    framework: Framework,
    cancel: &'a CancellationToken,
    warnings: Vec<String>,
    history: Vec<IterationRecord>,
    base: Snapshot,
    accepted: Snapshot,
    /// The suite on the accepted state.
    current: TestReport,
    /// Tests seen passing at the baseline or in any accepted state.
    known_passed: BTreeSet<String>,
    last_output: String,
}

async fn run(
    cfg: &LoopConfig,
    fixer: &dyn Fixer,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Value, Failure> {
    let backend = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || resolve_backend(&cfg))
            .await
            .map_err(|e| Failure::retryable(format!("sandbox probe failed: {e}")))?
            .map_err(|e| Failure::terminal(e.to_string()))?
    };
    let use_helper = cfg.mode != SandboxMode::Off;
    let mut warnings = isolation_warnings(cfg, backend);
    if use_helper {
        check_helper(&cfg.helper)
            .await
            .map_err(|e| Failure::terminal(e.to_string()))?;
    }
    if !cfg.source.is_dir() {
        return Err(Failure::terminal(format!(
            "source `{}` is not a directory",
            cfg.source.display()
        )));
    }
    let dir = tempfile::Builder::new()
        .prefix("cascade-sandbox-")
        .tempdir()
        .map_err(|e| Failure::retryable(format!("cannot create the sandbox directory: {e}")))?;
    let jail = Jail {
        backend,
        use_helper,
        helper: cfg.helper.clone(),
        limits: cfg.limits,
        network: cfg.network,
        root: dir.path().to_path_buf(),
    };
    jail.prepare_dirs()
        .map_err(|e| Failure::retryable(format!("cannot prepare the sandbox: {e}")))?;
    let exclude = Exclude::new(&cfg.exclude);
    let work = jail.work_dir();
    let copied = tree::copy_tree(&cfg.source, &work, &exclude).map_err(|e| {
        Failure::terminal(format!(
            "cannot copy `{}` into the sandbox: {e}",
            cfg.source.display()
        ))
    })?;
    warnings.extend(copied);
    let base = tree::snapshot(&work, &exclude)
        .map_err(|e| Failure::terminal(format!("cannot read the sandbox copy: {e}")))?;
    let framework = cfg
        .framework
        .or_else(|| Framework::infer(&cfg.test_command))
        .unwrap_or(Framework::Generic);
    let mut session = Session {
        cfg,
        jail,
        exclude,
        framework,
        cancel,
        warnings,
        history: Vec::new(),
        accepted: base.clone(),
        base,
        current: TestReport::default(),
        known_passed: BTreeSet::new(),
        last_output: String::new(),
    };
    progress(&format!(
        "baseline: running `{}` in a {} sandbox",
        cfg.test_command,
        backend.as_str()
    ));
    let (report, output) = session.run_tests(&cfg.test_command, true).await?;
    session.known_passed.clone_from(&report.passed);
    session.current = report;
    session.last_output = output;
    if session.current.ran_no_tests() {
        return Err(session.no_tests());
    }
    let counts = session.current.counts();
    progress(&format!(
        "baseline: {} of {} failing",
        counts.failed, counts.total
    ));
    let result = session.iterate(fixer, progress).await;
    drop(dir);
    result
}

impl Session<'_> {
    async fn run_tests(
        &mut self,
        command: &str,
        detect: bool,
    ) -> Result<(TestReport, String), Failure> {
        let work = self.jail.work_dir();
        // What the tests write (reports, caches, scratch files) is not part
        // of any change: the tree goes back to how the tests found it.
        let before = self.snapshot()?;
        let out = self
            .jail
            .run(
                &work,
                command,
                &self.cfg.env,
                None,
                self.cfg.test_timeout,
                self.cancel,
            )
            .await
            .map_err(|f| self.with_details(f))?;
        let after = self.snapshot()?;
        if !tree::diff(&before, &after).is_empty() {
            let restored = tree::restore(&work, &after, &before);
            restored.map_err(|e| self.broken(&e))?;
        }
        let cx = ParseContext {
            root: &work,
            exit_code: out.exit_code,
            timed_out: out.timed_out,
        };
        let (framework, report) = parse(self.framework, &out.output, &cx);
        if detect {
            self.framework = framework;
        }
        Ok((report, out.output))
    }

    async fn iterate(
        &mut self,
        fixer: &dyn Fixer,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Value, Failure> {
        let max = self.cfg.max_iterations;
        let mut stalled = false;
        for i in 1..=max {
            if self.current.green() {
                break;
            }
            if self.cancel.is_cancelled() {
                return Err(self.with_details(Failure::new(
                    FailureKind::Cancelled,
                    "cancelled between iterations",
                )));
            }
            let names = names(&self.current);
            progress(&format!(
                "iteration {i}/{max}: asking the fixer about {} failing: {names}",
                self.current.failures.len()
            ));
            let record = self.iteration(i, fixer).await?;
            let outcome = record.outcome;
            let failing = self.current.failures.len();
            progress(&format!(
                "iteration {i}/{max}: {} ({failing} failing)",
                outcome_name(outcome)
            ));
            self.history.push(record);
            if outcome == IterationOutcome::Stalled {
                stalled = true;
                break;
            }
        }
        if self.current.green() {
            return self.finish_green();
        }
        Err(self.exhausted(stalled))
    }

    /// One fix attempt; `Err` only for what ends the loop (cancellation, a terminal fixer
    /// error, a broken sandbox).
    async fn iteration(&mut self, i: u32, fixer: &dyn Fixer) -> Result<IterationRecord, Failure> {
        let work = self.jail.work_dir();
        let mut record = IterationRecord {
            iteration: i,
            failures: self.current.failures.clone(),
            patch: String::new(),
            outcome: IterationOutcome::NoChange,
            tests: None,
            targeted: None,
            regressions: Vec::new(),
            note: None,
        };
        let request = FixRequest {
            iteration: i,
            failures: self.current.failures.clone(),
            files: relevant_files(&self.accepted, &self.current.failures, &self.last_output),
            test_command: self.cfg.test_command.clone(),
            history: self.history.clone(),
            output: tail(&self.last_output, OUTPUT_FOR_FIXER),
        };
        let refused = match fixer.propose(&request, &work, self.cancel).await {
            Err(f) if f.kind == FailureKind::Cancelled => {
                self.undo()?;
                return Err(self.with_details(f));
            }
            Err(f) if f.kind == FailureKind::Terminal => {
                self.undo()?;
                record.outcome = IterationOutcome::FixerFailed;
                record.note = Some(f.message.clone());
                self.history.push(record);
                return Err(self.with_details(f));
            }
            Err(f) => Some((IterationOutcome::FixerFailed, f.message)),
            Ok(FixProposal::InPlace) => None,
            Ok(FixProposal::Edits(edits)) => apply_edits(&work, &edits, &self.exclude)
                .err()
                .map(|e| (IterationOutcome::InvalidProposal, e.to_string())),
            Ok(FixProposal::Diff(diff)) => apply_diff(&work, &diff, &self.exclude)
                .err()
                .map(|e| (IterationOutcome::InvalidProposal, e.to_string())),
        };
        if let Some((outcome, note)) = refused {
            self.undo()?;
            record.outcome = outcome;
            record.note = Some(note);
            return Ok(record);
        }
        let after = self.snapshot()?;
        let change = tree::diff(&self.accepted, &after);
        if change.is_empty() {
            return Ok(record);
        }
        record.patch = change.patch;
        if let Some(command) = targeted_command(
            self.framework,
            &self.cfg.test_command,
            &self.current.failures,
        ) {
            let (targeted, _) = self.run_tests(&command, false).await?;
            record.targeted = Some(targeted.counts());
        }
        let (report, output) = self
            .run_tests(&self.cfg.test_command.clone(), false)
            .await?;
        record.tests = Some(report.counts());
        let regressions = regressions(&self.known_passed, &self.current, &report);
        record.outcome = if report.green() {
            IterationOutcome::Fixed
        } else if report.ran_no_tests() {
            record.note = Some("the test command ran no tests after this change".into());
            IterationOutcome::Regressed
        } else if self.cfg.regression_check && !regressions.is_empty() {
            IterationOutcome::Regressed
        } else if report.failed_names() == self.current.failed_names() {
            IterationOutcome::Stalled
        } else if report.failures.len() < self.current.failures.len() {
            IterationOutcome::Improved
        } else {
            IterationOutcome::Changed
        };
        record.regressions = regressions;
        if record.outcome.accepted() {
            self.known_passed.extend(report.passed.iter().cloned());
            self.accepted = after;
            self.current = report;
            self.last_output = output;
        } else {
            let restored = tree::restore(&work, &after, &self.accepted);
            restored.map_err(|e| self.broken(&e))?;
        }
        Ok(record)
    }

    fn snapshot(&mut self) -> Result<Snapshot, Failure> {
        let taken = tree::snapshot(&self.jail.work_dir(), &self.exclude);
        taken.map_err(|e| self.broken(&e))
    }

    /// Puts the sandbox copy back to the accepted state.
    fn undo(&mut self) -> Result<(), Failure> {
        let now = self.snapshot()?;
        let restored = tree::restore(&self.jail.work_dir(), &now, &self.accepted);
        restored.map_err(|e| self.broken(&e))
    }

    fn broken(&mut self, e: &std::io::Error) -> Failure {
        self.with_details(Failure::retryable(format!(
            "the sandbox copy could not be read or restored: {e}"
        )))
    }

    fn finish_green(&mut self) -> Result<Value, Failure> {
        let mut outputs = self.outputs("green");
        if !self.cfg.apply {
            return Ok(outputs);
        }
        match tree::apply_to_source(&self.cfg.source, &self.base, &self.accepted, &self.exclude) {
            Ok(_) => {
                outputs["applied"] = Value::Bool(true);
                Ok(outputs)
            }
            Err(e) => {
                let mut failure = Failure::terminal(format!(
                    "the tests went green but the fix could not be applied to the source: {e}"
                ));
                failure.details = Some(Box::new(outputs));
                Err(failure)
            }
        }
    }

    fn no_tests(&mut self) -> Failure {
        let message = format!(
            "the test command ran no tests: `{}` collected nothing",
            self.cfg.test_command
        );
        let mut failure = self.with_details(Failure::terminal(message));
        if let Some(Value::Object(d)) = failure.details.as_deref_mut() {
            d.insert("status".into(), json!("no_tests"));
        }
        failure
    }

    fn exhausted(&mut self, stalled: bool) -> Failure {
        let failing: Vec<String> = self
            .current
            .failures
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let iterations = self.history.len();
        let n = failing.len();
        let what = if n == 1 {
            "test".to_owned()
        } else {
            "tests".to_owned()
        };
        let message = if stalled {
            format!(
                "stalled after {iterations} iteration(s): the last change left the same {n} {what} failing: {}",
                names(&self.current)
            )
        } else {
            format!(
                "{n} {what} still failing after {iterations} iteration(s): {}",
                names(&self.current)
            )
        };
        let mut failure = Failure::terminal(message).with_class(FailureClass::Exhausted);
        let mut details = self.outputs(if stalled { "stalled" } else { "exhausted" });
        let patch = details["patch"].clone();
        details["escalation"] = json!({
            "reason": if stalled { "stalled" } else { "exhausted" },
            "failing_tests": failing,
            "iterations": iterations,
            "patch": patch,
        });
        failure.details = Some(Box::new(details));
        failure.stderr_tail = Some(last_lines(&self.last_output, 20));
        failure
    }

    /// Attaches the outputs (as far as they go) to a failure.
    fn with_details(&mut self, mut failure: Failure) -> Failure {
        if failure.details.is_none() {
            failure.details = Some(Box::new(self.outputs("failed")));
        }
        if failure.stderr_tail.is_none() && !self.last_output.is_empty() {
            failure.stderr_tail = Some(last_lines(&self.last_output, 20));
        }
        failure
    }

    /// The outputs JSON; also writes the patch file.
    fn outputs(&mut self, status: &str) -> Value {
        let change = tree::diff(&self.base, &self.accepted);
        let patch_file = self.write_patch(&change.patch);
        json!({
            "status": status,
            "iterations": self.history.len(),
            "history": self.history,
            "patch": change.patch,
            "patch_file": patch_file,
            "files_changed": change.files,
            "tests": self.current.counts(),
            "failing_tests": self.current.failures,
            "framework": self.framework.as_str(),
            "backend": if self.jail.use_helper { self.jail.backend.as_str() } else { "off" },
            "applied": false,
            "warnings": self.warnings,
        })
    }

    fn write_patch(&mut self, patch: &str) -> Option<String> {
        let dir = self.cfg.artifacts_dir.as_ref()?;
        let path = dir.join(PATCH_FILE);
        let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, patch));
        match written {
            Ok(()) => Some(path.to_string_lossy().into_owned()),
            Err(e) => {
                let warning = format!("cannot write the patch to `{}`: {e}", path.display());
                if !self.warnings.contains(&warning) {
                    self.warnings.push(warning);
                }
                None
            }
        }
    }
}

/// What the outputs should say about weaker isolation than asked for.
fn isolation_warnings(cfg: &LoopConfig, backend: Backend) -> Vec<String> {
    let mut warnings = Vec::new();
    if cfg.mode == SandboxMode::Off {
        warnings.push(
            "sandbox mode `off`: tests and fixes run as plain processes without limits".into(),
        );
        return warnings;
    }
    if backend == Backend::Subprocess {
        let why = "no sandbox is available here (bubblewrap and landlock both failed their probe): \
                   tests and fixes run as plain processes with resource limits only";
        tracing::warn!("{why}");
        warnings.push(why.to_owned());
    }
    if backend == Backend::Landlock && !cfg.network {
        if backend::landlock_denies_network() {
            warnings.push("landlock denies TCP only: UDP and unix sockets stay reachable".into());
        } else {
            warnings
                .push("landlock on this kernel cannot deny network access (needs ABI 4)".into());
        }
    }
    if !backend::process_limit_enforced() {
        warnings.push(
            "running as root without a writable pids cgroup: the process limit is not enforced"
                .into(),
        );
    }
    warnings
}

/// Tests that passed before (by name when the runner names them, else by count) and do
/// not pass now.
fn regressions(known: &BTreeSet<String>, before: &TestReport, after: &TestReport) -> Vec<String> {
    if !known.is_empty() {
        return known
            .iter()
            .filter(|n| !after.passed.contains(*n))
            .cloned()
            .collect();
    }
    if after.passed_count < before.passed_count {
        return vec![format!(
            "{} fewer tests pass",
            before.passed_count - after.passed_count
        )];
    }
    Vec::new()
}

fn outcome_name(outcome: IterationOutcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `a, b, c and 4 more`.
fn names(report: &TestReport) -> String {
    let all: Vec<&str> = report.failures.iter().map(|f| f.name.as_str()).collect();
    let mut text = all
        .iter()
        .take(NAMES_IN_MESSAGE)
        .map(|n| truncate(n, 120))
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMES_IN_MESSAGE {
        text.push_str(&format!(" and {} more", all.len() - NAMES_IN_MESSAGE));
    }
    text
}

/// The last `max` bytes of `text`, from a char boundary.
fn tail(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How long a loop may take at most, for callers that want an outer limit: every test
/// run (baseline, then two per iteration) and every fix at the test timeout.
pub fn worst_case_duration(cfg: &LoopConfig) -> Duration {
    cfg.test_timeout.saturating_mul(1 + 3 * cfg.max_iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::report::{FailureCategory, TestFailure};

    fn report(passed: &[&str], failed: &[&str]) -> TestReport {
        let mut r = TestReport::default();
        for p in passed {
            r.pass(*p);
        }
        for f in failed {
            r.fail(TestFailure::new(*f, FailureCategory::Assertion, ""));
        }
        r
    }

    #[test]
    fn regressions_by_name_and_by_count() {
        let known: BTreeSet<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
        let before = report(&["a", "b"], &["c"]);
        assert!(regressions(&known, &before, &report(&["a", "b", "c"], &[])).is_empty());
        assert_eq!(regressions(&known, &before, &report(&["a"], &["b"])), ["b"]);
        assert_eq!(
            regressions(&known, &before, &report(&[], &["compile"])),
            ["a", "b"]
        );

        let mut counted = TestReport {
            passed_count: 3,
            ..TestReport::default()
        };
        counted.fail(TestFailure::new("x", FailureCategory::Other, ""));
        let worse = TestReport {
            passed_count: 1,
            ..TestReport::default()
        };
        assert_eq!(
            regressions(&BTreeSet::new(), &counted, &worse),
            ["2 fewer tests pass"]
        );
    }

    #[test]
    fn tails_respect_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
    }
}
