//! Executing tasks: real processes, real files, temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_exec::{Executor, SkillRegistry};
use cascade_proto::{Attempt, Failure, FailureKind, TaskOutcome, TaskResult, TaskSpec};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::support;

/// A skills directory holding `skills` (file name, YAML) and an executor over it.
struct Fixture {
    skills: TempDir,
    exec: Executor,
}

fn fixture(skills: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, text) in skills {
        fs::write(dir.path().join(file), text).expect("write skill");
    }
    let registry = SkillRegistry::load(&[dir.path().to_owned()]).expect("skills load");
    Fixture {
        skills: dir,
        exec: Executor::new(Arc::new(registry), "test-worker"),
    }
}

fn task(skill: &str, inputs: Value) -> TaskSpec {
    support::task_spec("run-1", "stage-a", "stage-a#0", skill, inputs)
}

/// Runs a task, failing the test (instead of hanging) if it takes more than 20 s.
async fn run(exec: &Executor, task: &TaskSpec) -> TaskResult {
    let cancel = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(20), exec.execute(task, &cancel))
        .await
        .expect("execute finished instead of hanging")
}

fn outputs(result: &TaskResult) -> &Value {
    match &result.outcome {
        TaskOutcome::Succeeded { outputs } => outputs,
        TaskOutcome::Failed(f) => panic!("expected success, got {f:?}"),
    }
}

fn failure(result: &TaskResult) -> &Failure {
    match &result.outcome {
        TaskOutcome::Failed(f) => f,
        TaskOutcome::Succeeded { outputs } => panic!("expected failure, got {outputs}"),
    }
}

/// Polls `cond` until it holds; panics after 10 s.
async fn await_condition(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is gone (or a zombie waiting to be reaped by init).
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.trim_start().chars().next());
            matches!(state, Some('Z' | 'X'))
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn json_object_on_stdout_becomes_the_outputs() {
    let f = fixture(&[(
        "report.yaml",
        "run: |\n  echo '{\"score\": 7, \"tags\": [\"a\"]}'\n",
    )]);
    let r = run(&f.exec, &task("report", json!({}))).await;
    assert_eq!(outputs(&r), &json!({"score": 7, "tags": ["a"]}));
    assert_eq!(r.worker, "test-worker");
    assert_eq!(r.task_id.as_str(), "stage-a#0");
    assert_eq!(r.attempt, Attempt::FIRST);
}

#[tokio::test]
async fn plain_stdout_is_wrapped() {
    let f = fixture(&[
        ("hello.yaml", "command: [printf, 'hello\\nworld\\n']\n"),
        ("list.yaml", "run: echo '[1, 2]'\n"),
    ]);
    let r = run(&f.exec, &task("hello", json!({}))).await;
    assert_eq!(
        outputs(&r),
        &json!({"stdout": "hello\nworld", "exit_code": 0})
    );
    let r = run(&f.exec, &task("list", json!({}))).await;
    assert_eq!(outputs(&r), &json!({"stdout": "[1, 2]", "exit_code": 0}));
}

#[tokio::test]
async fn inputs_arrive_on_stdin_and_in_the_environment_never_through_the_shell() {
    let evil = "$(touch pwned) `touch pwned2` \"quoted\" 'single' ; touch pwned3";
    let f = fixture(&[
        (
            "shell.yaml",
            "run: 'cat; echo; printf \"%s\\n%s\\n\" \
             \"$CASCADE_INPUT_EVIL\" \"$CASCADE_INPUT_FILE_PATH\"'\n",
        ),
        (
            "argv.yaml",
            "command: [printenv, CASCADE_INPUT_EVIL, CASCADE_INPUT_NESTED]\n",
        ),
    ]);
    let work = tempfile::tempdir().expect("tempdir");
    let inputs = json!({"evil": evil, "file-path": "a b.txt", "nested": {"k": [1, true]}});

    let mut t = task("shell", inputs.clone());
    t.workdir = Some(work.path().display().to_string());
    let r = run(&f.exec, &t).await;
    let stdout = outputs(&r)["stdout"].as_str().expect("stdout").to_owned();
    let mut lines = stdout.lines();
    let stdin: Value = serde_json::from_str(lines.next().expect("stdin line")).expect("json stdin");
    assert_eq!(stdin, inputs);
    assert_eq!(lines.next(), Some(evil));
    assert_eq!(lines.next(), Some("a b.txt"));

    t.skill = "argv".into();
    let r = run(&f.exec, &t).await;
    let want = format!("{evil}\n{{\"k\":[1,true]}}");
    assert_eq!(outputs(&r), &json!({"stdout": want, "exit_code": 0}));

    for file in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !work.path().join(file).exists(),
            "{file} was created: inputs hit a shell"
        );
        assert!(
            !f.skills.path().join(file).exists(),
            "{file} was created: inputs hit a shell"
        );
    }
}

#[tokio::test]
async fn the_environment_describes_the_task_and_the_skill() {
    let f = fixture(&[(
        "env.yaml",
        "env: {GREETING: hi there}\n\
         run: 'printf \"%s|\" \"$CASCADE_SKILL_DIR\" \"$CASCADE_RUN_ID\" \"$CASCADE_STAGE_ID\" \
         \"$CASCADE_TASK_ID\" \"$CASCADE_ATTEMPT\" \"$CASCADE_MODEL\" \"$GREETING\" \"$HOME\"'\n",
    )]);
    let mut t = task("env", json!({}));
    t.attempt = Attempt(3);
    t.model = Some("small-model".into());
    let r = run(&f.exec, &t).await;
    let skill_dir = std::path::absolute(f.skills.path()).expect("absolute");
    let home = std::env::var("HOME").unwrap_or_default();
    let want = format!(
        "{}|run-1|stage-a|stage-a#0|3|small-model|hi there|{home}|",
        skill_dir.display()
    );
    assert_eq!(outputs(&r)["stdout"], json!(want));
}

#[tokio::test]
async fn the_skill_runs_in_the_task_workdir() {
    let f = fixture(&[("where.yaml", "command: [pwd, -P]\n")]);
    let work = tempfile::tempdir().expect("tempdir");
    let mut t = task("where", json!({}));
    t.workdir = Some(work.path().display().to_string());
    let r = run(&f.exec, &t).await;
    let want: PathBuf = fs::canonicalize(work.path()).expect("canonical");
    assert_eq!(outputs(&r)["stdout"], json!(want.display().to_string()));

    t.workdir = Some(work.path().join("missing").display().to_string());
    let r = run(&f.exec, &t).await;
    assert_eq!(failure(&r).kind, FailureKind::Terminal);
    assert!(
        failure(&r).message.contains("does not exist"),
        "{}",
        failure(&r).message
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_retryable_with_the_stderr_tail() {
    let f = fixture(&[(
        "broken.yaml",
        "run: 'for i in $(seq 1 30); do echo \"noise $i\" >&2; done; \
         echo \"disk full\" >&2; echo >&2; exit 3'\n",
    )]);
    let r = run(&f.exec, &task("broken", json!({}))).await;
    let fail = failure(&r);
    assert_eq!(fail.kind, FailureKind::Retryable);
    assert_eq!(fail.exit_code, Some(3));
    assert_eq!(fail.message, "skill `broken` exited with code 3: disk full");
    let tail = fail.stderr_tail.as_deref().expect("stderr tail");
    assert_eq!(tail.lines().count(), 20, "{tail}");
    assert!(tail.ends_with("noise 30\ndisk full"), "{tail}");
}

#[tokio::test]
async fn a_signal_is_named() {
    let f = fixture(&[("suicide.yaml", "run: 'kill -KILL $$'\n")]);
    let r = run(&f.exec, &task("suicide", json!({}))).await;
    let fail = failure(&r);
    assert_eq!(fail.kind, FailureKind::Retryable);
    assert_eq!(fail.exit_code, None);
    assert!(
        fail.message.contains("killed by signal SIGKILL"),
        "{}",
        fail.message
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let f = fixture(&[(
        "hang.yaml",
        "timeout: 300ms\nrun: 'sleep 30 & echo $! > \"$CASCADE_INPUT_PIDFILE\"; wait'\n",
    )]);
    let work = tempfile::tempdir().expect("tempdir");
    let pidfile = work.path().join("grandchild.pid");
    let t = task("hang", json!({"pidfile": pidfile.display().to_string()}));
    let r = run(&f.exec, &t).await;
    let fail = failure(&r);
    assert_eq!(fail.kind, FailureKind::Timeout);
    assert_eq!(fail.message, "skill `hang` timed out after 0.3s");
    let pid = read_pid(&pidfile).expect("the grandchild wrote its pid");
    await_condition("the grandchild to die", || is_dead(pid)).await;
}

#[tokio::test]
async fn the_task_timeout_wins_when_it_is_smaller() {
    let f = fixture(&[("slow.yaml", "timeout: 1h\ncommand: [sleep, '30']\n")]);
    let mut t = task("slow", json!({}));
    t.timeout_ms = Some(200);
    let r = run(&f.exec, &t).await;
    assert_eq!(failure(&r).kind, FailureKind::Timeout);
    assert_eq!(failure(&r).message, "skill `slow` timed out after 0.2s");

    let mut t = task("sleep", json!({"seconds": 30}));
    t.timeout_ms = Some(100);
    let r = run(&f.exec, &t).await;
    assert_eq!(failure(&r).message, "skill `sleep` timed out after 0.1s");
}

#[tokio::test]
async fn cancellation_kills_the_process_group() {
    let f = fixture(&[(
        "long.yaml",
        "run: 'sleep 30 & echo $! > \"$CASCADE_INPUT_PIDFILE\"; wait'\n",
    )]);
    let work = tempfile::tempdir().expect("tempdir");
    let pidfile = work.path().join("grandchild.pid");
    let t = task("long", json!({"pidfile": pidfile.display().to_string()}));
    let cancel = CancellationToken::new();
    let canceller = async {
        await_condition("the skill to start", || read_pid(&pidfile).is_some()).await;
        cancel.cancel();
    };
    let (r, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(f.exec.execute(&t, &cancel), canceller)
    })
    .await
    .expect("finished instead of hanging");
    assert_eq!(failure(&r).kind, FailureKind::Cancelled);
    let pid = read_pid(&pidfile).expect("pid");
    await_condition("the grandchild to die", || is_dead(pid)).await;

    // An already-cancelled token stops builtins too.
    let r = f
        .exec
        .execute(&task("sleep", json!({"seconds": 30})), &cancel)
        .await;
    assert_eq!(failure(&r).kind, FailureKind::Cancelled);
}

#[tokio::test]
async fn a_child_that_ignores_stdin_is_fine() {
    let f = fixture(&[("deaf.yaml", "command: ['true']\n")]);
    let big = "x".repeat(512 * 1024);
    let r = run(&f.exec, &task("deaf", json!({"big": big}))).await;
    assert_eq!(outputs(&r), &json!({"stdout": "", "exit_code": 0}));
}

#[tokio::test]
async fn stdout_is_bounded() {
    let f = fixture(&[("flood.yaml", "run: 'head -c 20000000 /dev/zero'\n")]);
    let r = run(&f.exec, &task("flood", json!({}))).await;
    let fail = failure(&r);
    assert!(
        fail.message.contains("more than 16 MiB to stdout"),
        "{}",
        fail.message
    );
}

#[tokio::test]
async fn spawn_errors_are_terminal_and_name_the_program() {
    let f = fixture(&[
        ("ghost.yaml", "command: [/nonexistent/cascade-ghost]\n"),
        ("noexec.yaml", "command: [/dev/null]\n"),
    ]);
    let r = run(&f.exec, &task("ghost", json!({}))).await;
    assert_eq!(failure(&r).kind, FailureKind::Terminal);
    assert!(
        failure(&r)
            .message
            .contains("`/nonexistent/cascade-ghost` not found"),
        "{:?}",
        r
    );
    let r = run(&f.exec, &task("noexec", json!({}))).await;
    assert_eq!(failure(&r).kind, FailureKind::Terminal);
    assert!(failure(&r).message.contains("`/dev/null`"), "{:?}", r);
}

#[tokio::test]
async fn unknown_skills_are_terminal() {
    let exec = Executor::new(Arc::new(SkillRegistry::builtins()), "w");
    let r = run(&exec, &task("nope", json!({}))).await;
    assert_eq!(failure(&r), &Failure::terminal("unknown skill `nope`"));
    assert_eq!(r.worker, "w");
}

#[tokio::test]
async fn builtins() {
    let exec = Executor::new(Arc::new(SkillRegistry::builtins()), "w");
    let r = run(&exec, &task("noop", json!({"ignored": 1}))).await;
    assert_eq!(outputs(&r), &json!({}));
    let r = run(&exec, &task("noop", Value::Null)).await;
    assert_eq!(outputs(&r), &json!({}));
    let r = run(&exec, &task("echo", json!({"a": 1, "b": ["x"]}))).await;
    assert_eq!(outputs(&r), &json!({"a": 1, "b": ["x"]}));
    let r = run(&exec, &task("sleep", json!({"seconds": 0.01}))).await;
    assert_eq!(outputs(&r), &json!({"slept": 0.01}));
    let r = run(&exec, &task("sleep", json!({"seconds": "0"}))).await;
    assert_eq!(outputs(&r), &json!({"slept": 0}));

    for bad in [
        json!({}),
        json!({"seconds": -1}),
        json!({"seconds": "soon"}),
        json!({"seconds": [1]}),
    ] {
        let r = run(&exec, &task("sleep", bad.clone())).await;
        let fail = failure(&r);
        assert_eq!(fail.kind, FailureKind::Terminal, "{bad}");
        assert!(
            fail.message.contains("input `seconds`"),
            "{bad}: {}",
            fail.message
        );
    }
    let r = run(&exec, &task("echo", json!([1, 2]))).await;
    assert_eq!(failure(&r).kind, FailureKind::Terminal);
}

#[tokio::test]
async fn fail_fails_on_purpose_and_honours_times() {
    let exec = Executor::new(Arc::new(SkillRegistry::builtins()), "w");
    let r = run(&exec, &task("fail", json!({}))).await;
    assert_eq!(failure(&r), &Failure::retryable("failed on purpose"));
    let r = run(&exec, &task("fail", json!({"message": "boom"}))).await;
    assert_eq!(failure(&r), &Failure::retryable("boom"));

    let mut t = task("fail", json!({"times": 2, "message": "flaky"}));
    for attempt in 1..=2 {
        t.attempt = Attempt(attempt);
        let r = run(&exec, &t).await;
        assert_eq!(
            failure(&r),
            &Failure::retryable("flaky"),
            "attempt {attempt}"
        );
        assert_eq!(r.attempt, Attempt(attempt));
    }
    t.attempt = Attempt(3);
    assert_eq!(outputs(&run(&exec, &t).await), &json!({"attempt": 3}));

    let r = run(&exec, &task("fail", json!({"times": "many"}))).await;
    assert_eq!(failure(&r).kind, FailureKind::Terminal);
}
