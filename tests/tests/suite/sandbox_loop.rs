//! The codex-sandbox loop end to end: real fixture projects (a Rust crate and a Python
//! package with genuine bugs), real test runs in the sandbox, deterministic fixers
//! (shell and Python scripts, and in-process fixers for the edit and diff proposals).
//!
//! The sandbox helper is the real `worker` binary (`exec_helper_main` at the top of its
//! `main`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cascade_exec::sandbox::{
    self, Backend, CommandFixer, FileEdit, FixProposal, FixRequest, Fixer, FixerSpec, LoopConfig,
    LoopOutcome, ProposeFuture, SandboxMode,
};
use cascade_proto::{FailureClass, FailureKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sandbox")
}

fn fixer_script(name: &str) -> String {
    fixtures()
        .join("fixers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn config(project: &Path, test: &str, fix: &str) -> LoopConfig {
    let mut cfg = LoopConfig::new(project, test, FixerSpec::Command(fix.to_owned()));
    cfg.helper = cascade_tests::binary("worker");
    cfg
}

/// Runs the loop with the config's command fixer; returns the outcome and the progress.
async fn run(cfg: &LoopConfig) -> (LoopOutcome, Vec<String>) {
    let FixerSpec::Command(command) = &cfg.fixer else {
        panic!("a command fixer")
    };
    let fixer = CommandFixer::new(command.clone(), cfg).expect("fixer");
    run_with(cfg, &fixer).await
}

async fn run_with(cfg: &LoopConfig, fixer: &dyn Fixer) -> (LoopOutcome, Vec<String>) {
    let progress = Mutex::new(Vec::new());
    let record = |msg: &str| progress.lock().expect("lock").push(msg.to_owned());
    let outcome = sandbox::run_loop(cfg, fixer, &CancellationToken::new(), &record).await;
    let messages = progress.into_inner().expect("lock");
    (outcome, messages)
}

fn outputs(outcome: LoopOutcome) -> Value {
    match outcome.result {
        Ok(v) => v,
        Err(f) => panic!(
            "loop failed: {} ({:?})\n{:#}",
            f.message,
            f.kind,
            f.details.unwrap_or_default()
        ),
    }
}

fn outcomes(outputs: &Value) -> Vec<&str> {
    outputs["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["outcome"].as_str().expect("outcome"))
        .collect()
}

/// Every file under `dir`, for byte comparisons.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).expect("inside").to_path_buf(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

/// A private copy of a fixture (for tests that may write the source).
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, data) in tree(&fixtures().join(name)) {
        let target = dir.path().join(rel);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, data).expect("write");
    }
    dir
}

const PY_TESTS: &str = "python3 -m unittest -v";

#[tokio::test]
async fn rust_off_by_one_is_fixed_in_one_iteration() {
    let project = fixtures().join("rust-offbyone");
    let before = tree(&project);
    let artifacts = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(
        &project,
        "cargo test --offline",
        &fixer_script("rust_fix_all.sh"),
    );
    cfg.artifacts_dir = Some(artifacts.path().to_path_buf());
    let (outcome, progress) = run(&cfg).await;
    let out = outputs(outcome);

    assert_eq!(out["status"], "green");
    assert_eq!(out["iterations"], 1);
    assert_eq!(outcomes(&out), ["fixed"]);
    assert_eq!(out["framework"], "cargo");
    // cargo runs tests on threads and reports failures as they finish.
    let mut asked: Vec<&str> = out["history"][0]["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    asked.sort_unstable();
    assert_eq!(
        asked,
        [
            "tests::a_partial_page_counts",
            "tests::sums_up_to_and_including_n"
        ]
    );
    let first = out["history"][0]["failures"]
        .as_array()
        .and_then(|fs| {
            fs.iter()
                .find(|f| f["name"] == "tests::sums_up_to_and_including_n")
        })
        .expect("the failure of sums_up_to_and_including_n");
    assert_eq!(first["class"], "assertion");
    assert_eq!(first["file"], "src/lib.rs");
    assert!(first["line"].as_u64().is_some());
    assert_eq!(
        out["history"][0]["targeted"],
        serde_json::json!({"total": 2, "passed": 2, "failed": 0}),
        "the targeted run of the two failures (it once counted one pass: the whole result follows)\n{out:#}"
    );
    assert_eq!(
        out["tests"],
        serde_json::json!({"total": 3, "passed": 3, "failed": 0})
    );
    assert_eq!(out["files_changed"], serde_json::json!(["src/lib.rs"]));
    let patch = out["patch"].as_str().expect("patch");
    assert!(
        patch.contains("-    (1..n).sum()\n+    (1..=n).sum()\n"),
        "{patch}"
    );
    assert!(patch.contains("+    items.div_ceil(per_page)\n"), "{patch}");
    let file = out["patch_file"].as_str().expect("patch file");
    assert_eq!(std::fs::read_to_string(file).expect("patch file"), patch);
    assert_eq!(out["applied"], false);
    assert_eq!(
        tree(&project),
        before,
        "the source is untouched without apply"
    );
    assert!(
        progress.iter().any(|p| p.starts_with("baseline:")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|p| p.starts_with("iteration 1/5: fixed")),
        "{progress:?}"
    );
}

#[tokio::test]
async fn one_bug_per_iteration_improves_then_fixes() {
    let cfg = config(
        &fixtures().join("rust-offbyone"),
        "cargo test --offline",
        &fixer_script("rust_fix_one.sh"),
    );
    let out = outputs(run(&cfg).await.0);
    assert_eq!(outcomes(&out), ["improved", "fixed"]);
    assert_eq!(out["iterations"], 2);
    assert_eq!(out["history"][0]["tests"]["failed"], 1);
    assert_eq!(
        out["history"][1]["failures"][0]["name"],
        "tests::a_partial_page_counts"
    );
    assert_eq!(out["files_changed"], serde_json::json!(["src/lib.rs"]));
}

#[tokio::test]
async fn fixes_on_every_backend() {
    for backend in support::sandbox_backends() {
        let mut cfg = config(
            &fixtures().join("rust-offbyone"),
            "cargo test --offline",
            &fixer_script("rust_fix_all.sh"),
        );
        cfg.backend = Some(backend);
        cfg.mode = SandboxMode::Required;
        let out = outputs(run(&cfg).await.0);
        assert_eq!(out["backend"], backend.as_str());
        assert_eq!(outcomes(&out), ["fixed"], "{backend:?}");

        let mut cfg = config(
            &fixtures().join("python-calc"),
            PY_TESTS,
            &fixer_script("py_fix_all.sh"),
        );
        cfg.backend = Some(backend);
        cfg.mode = SandboxMode::Required;
        let out = outputs(run(&cfg).await.0);
        assert_eq!(out["backend"], backend.as_str());
        assert_eq!(out["framework"], "unittest");
        assert_eq!(outcomes(&out), ["fixed"], "{backend:?}");
        assert_eq!(
            out["tests"],
            serde_json::json!({"total": 3, "passed": 3, "failed": 0})
        );
        assert_eq!(
            out["files_changed"],
            serde_json::json!(["calc.py"]),
            "no bytecode or other litter"
        );
    }
}

#[tokio::test]
async fn a_fixer_that_changes_nothing_exhausts_and_escalates() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&fixtures().join("python-calc"), PY_TESTS, "true");
    cfg.max_iterations = 3;
    cfg.artifacts_dir = Some(artifacts.path().join("run/stage"));
    let failure = run(&cfg).await.0.result.expect_err("never green");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert_eq!(failure.class, Some(FailureClass::Exhausted));
    assert!(
        failure
            .message
            .starts_with("2 tests still failing after 3 iteration(s): "),
        "{}",
        failure.message
    );
    let details = failure.details.expect("details");
    assert_eq!(details["status"], "exhausted");
    assert_eq!(outcomes(&details), ["no_change", "no_change", "no_change"]);
    let escalation = &details["escalation"];
    assert_eq!(escalation["reason"], "exhausted");
    assert_eq!(escalation["iterations"], 3);
    assert_eq!(escalation["patch"], "");
    assert_eq!(
        escalation["failing_tests"],
        serde_json::json!([
            "test_calc.CalcTest.test_average",
            "test_calc.CalcTest.test_is_even"
        ])
    );
    let file = details["patch_file"]
        .as_str()
        .expect("patch file even on failure");
    assert!(Path::new(file).starts_with(artifacts.path()) && Path::new(file).is_file());
}

#[tokio::test]
async fn a_regression_is_undone_and_the_loop_goes_on() {
    let cfg = config(
        &fixtures().join("python-calc"),
        PY_TESTS,
        &format!("python3 {}", fixer_script("py_regress_then_fix.py")),
    );
    let out = outputs(run(&cfg).await.0);
    assert_eq!(outcomes(&out), ["regressed", "fixed"]);
    let first = &out["history"][0];
    assert_eq!(
        first["regressions"],
        serde_json::json!(["test_calc.CalcTest.test_add"])
    );
    assert!(
        first["patch"]
            .as_str()
            .expect("patch")
            .contains("+    return a - b\n")
    );
    let patch = out["patch"].as_str().expect("patch");
    assert!(
        !patch.contains("a - b"),
        "the rejected change is not in the result: {patch}"
    );
    assert!(
        patch.contains("+    return sum(values) / len(values)\n"),
        "{patch}"
    );
}

#[tokio::test]
async fn the_same_failures_after_a_change_stall_the_loop() {
    let cfg = config(
        &fixtures().join("python-calc"),
        PY_TESTS,
        "echo '# looked at it' >> calc.py",
    );
    let failure = run(&cfg).await.0.result.expect_err("stalls");
    assert_eq!(failure.class, Some(FailureClass::Exhausted));
    assert!(
        failure.message.starts_with("stalled after 1 iteration(s)"),
        "{}",
        failure.message
    );
    let details = failure.details.expect("details");
    assert_eq!(outcomes(&details), ["stalled"]);
    assert_eq!(details["escalation"]["reason"], "stalled");
    assert_eq!(details["patch"], "", "the stalled change was undone");
}

#[tokio::test]
async fn apply_writes_the_source_only_when_green() {
    let green = copy_fixture("python-calc");
    let mut cfg = config(green.path(), PY_TESTS, &fixer_script("py_fix_all.sh"));
    cfg.apply = true;
    let out = outputs(run(&cfg).await.0);
    assert_eq!(out["applied"], true);
    let calc = std::fs::read_to_string(green.path().join("calc.py")).expect("read");
    assert!(
        calc.contains("sum(values) / len(values)") && calc.contains("n % 2 == 0"),
        "{calc}"
    );
    assert!(!green.path().join("__pycache__").exists());

    let failing = copy_fixture("python-calc");
    let before = tree(failing.path());
    let mut cfg = config(failing.path(), PY_TESTS, "echo '# noise' >> calc.py");
    cfg.apply = true;
    assert!(run(&cfg).await.0.result.is_err());
    assert_eq!(
        tree(failing.path()),
        before,
        "a loop that did not go green writes nothing"
    );
}

#[tokio::test]
async fn a_suite_without_tests_is_a_failure() {
    let cfg = config(
        &fixtures().join("python-calc"),
        "python3 -m unittest discover -p 'nothing_*.py'",
        "true",
    );
    let failure = run(&cfg).await.0.result.expect_err("no tests");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert_eq!(failure.class, None);
    assert!(
        failure.message.contains("ran no tests"),
        "{}",
        failure.message
    );
    assert_eq!(failure.details.expect("details")["status"], "no_tests");
}

#[tokio::test]
async fn green_at_baseline_takes_no_iteration() {
    let cfg = config(
        &fixtures().join("python-calc"),
        "python3 -m unittest -v -k test_add",
        "false",
    );
    let out = outputs(run(&cfg).await.0);
    assert_eq!(out["iterations"], 0);
    assert_eq!(out["patch"], "");
    assert_eq!(out["tests"]["passed"], 1);
}

#[tokio::test]
async fn a_failing_fix_command_is_recorded_and_undone() {
    let mut cfg = config(
        &fixtures().join("python-calc"),
        PY_TESTS,
        "echo half-done >> calc.py; echo 'cannot fix' >&2; exit 4",
    );
    cfg.max_iterations = 1;
    let details = run(&cfg)
        .await
        .0
        .result
        .expect_err("not fixed")
        .details
        .expect("details");
    assert_eq!(outcomes(&details), ["fixer_failed"]);
    let note = details["history"][0]["note"].as_str().expect("note");
    assert!(
        note.contains("exited with code 4") && note.contains("cannot fix"),
        "{note}"
    );
    assert_eq!(details["patch"], "");
}

/// Proposes full-file edits or a diff computed from the request's files.
struct InProcessFixer {
    diff: bool,
}

impl Fixer for InProcessFixer {
    fn propose<'a>(
        &'a self,
        req: &'a FixRequest,
        _dir: &'a Path,
        _cancel: &'a CancellationToken,
    ) -> ProposeFuture<'a> {
        Box::pin(async move {
            let (_, calc) = req
                .files
                .iter()
                .find(|(p, _)| p == "calc.py")
                .expect("calc.py is relevant");
            let fixed = calc
                .replace("(len(values) - 1)", "len(values)")
                .replace("n % 2 == 1", "n % 2 == 0");
            if self.diff {
                let patch = diffy::create_patch(calc, &fixed).to_string();
                let patch = patch.replacen("--- original", "--- a/calc.py", 1).replacen(
                    "+++ modified",
                    "+++ b/calc.py",
                    1,
                );
                Ok(FixProposal::Diff(patch))
            } else {
                Ok(FixProposal::Edits(vec![FileEdit {
                    path: "calc.py".into(),
                    content: fixed,
                }]))
            }
        })
    }
}

#[tokio::test]
async fn edit_and_diff_proposals() {
    for diff in [false, true] {
        let cfg = config(&fixtures().join("python-calc"), PY_TESTS, "unused");
        let out = outputs(run_with(&cfg, &InProcessFixer { diff }).await.0);
        assert_eq!(outcomes(&out), ["fixed"], "diff: {diff}");
    }
}

/// Proposes a write outside the project.
struct EscapingFixer;

impl Fixer for EscapingFixer {
    fn propose<'a>(
        &'a self,
        _req: &'a FixRequest,
        _dir: &'a Path,
        _cancel: &'a CancellationToken,
    ) -> ProposeFuture<'a> {
        Box::pin(async {
            Ok(FixProposal::Edits(vec![FileEdit {
                path: "../escape.py".into(),
                content: "x".into(),
            }]))
        })
    }
}

#[tokio::test]
async fn proposals_cannot_leave_the_sandbox() {
    let mut cfg = config(&fixtures().join("python-calc"), PY_TESTS, "unused");
    cfg.max_iterations = 1;
    let details = run_with(&cfg, &EscapingFixer)
        .await
        .0
        .result
        .expect_err("refused")
        .details
        .expect("details");
    assert_eq!(outcomes(&details), ["invalid_proposal"]);
    assert!(
        details["history"][0]["note"]
            .as_str()
            .expect("note")
            .contains("leaves the project")
    );
}

#[tokio::test]
async fn required_mode_refuses_no_isolation_and_inputs_parse() {
    let mut cfg = config(&fixtures().join("python-calc"), PY_TESTS, "true");
    cfg.mode = SandboxMode::Required;
    cfg.backend = Some(Backend::Subprocess);
    assert!(CommandFixer::new("true", &cfg).is_err());
    let failure = run_with(&cfg, &InProcessFixer { diff: false })
        .await
        .0
        .result
        .expect_err("refused");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert!(failure.message.contains("required"), "{}", failure.message);

    let inputs = serde_json::json!({"test": PY_TESTS, "fixer": {"model": "claude"}, "source": "python-calc"});
    let cfg = LoopConfig::from_inputs(inputs.as_object().expect("object"), Some(&fixtures()))
        .expect("valid");
    assert_eq!(cfg.source, fixtures().join("python-calc"));
    assert_eq!(cfg.fixer, FixerSpec::Model("claude".into()));
}

/// Edits the project, then cancels the run (as a shutdown would) before the tests rerun.
struct CancellingFixer;

impl Fixer for CancellingFixer {
    fn propose<'a>(
        &'a self,
        _req: &'a FixRequest,
        dir: &'a Path,
        cancel: &'a CancellationToken,
    ) -> ProposeFuture<'a> {
        Box::pin(async move {
            std::fs::write(dir.join("calc.py"), "def add(a, b):\n    return a + b\n")
                .expect("edit");
            cancel.cancel();
            Ok(FixProposal::InPlace)
        })
    }
}

#[tokio::test]
async fn cancellation_ends_the_loop() {
    let cfg = config(&fixtures().join("python-calc"), PY_TESTS, "unused");
    let cancel = CancellationToken::new();
    let outcome = sandbox::run_loop(&cfg, &CancellingFixer, &cancel, &|_: &str| {}).await;
    let failure = outcome.result.expect_err("cancelled");
    assert_eq!(failure.kind, FailureKind::Cancelled, "{}", failure.message);
    assert!(failure.details.is_some());
}
