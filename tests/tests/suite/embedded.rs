//! The embedded driver with the real worker executor: real processes, real
//! files, the same engine as the swarm.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cascade_coordinator::driver::{FileMemoryStore, LocalOptions, run_local};
use cascade_core::engine::RunReport;
use cascade_core::plan::{self, PlanOptions};
use cascade_core::spec::load_file;
use cascade_exec::{Executor, SkillRegistry};
use cascade_proto::RunId;
use cascade_tests::{await_condition, write_tree};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

async fn run(dir: &Path, file: &str, concurrency: usize, cancel: CancellationToken) -> RunReport {
    let loaded = load_file(&dir.join(file));
    assert!(!loaded.has_errors(), "{:?}", loaded.render_diagnostics());
    let cascade = loaded.cascade.expect("loads");
    let registry = SkillRegistry::load(&[dir.join("skills")]).expect("skills load");
    let opts = PlanOptions {
        skills: Some(registry.names().map(str::to_owned).collect()),
        inputs: None,
        ..PlanOptions::default()
    };
    let plan = plan::compile(&cascade, &opts);
    assert!(!plan.has_errors(), "{:?}", plan.diagnostics);
    let executor = Arc::new(Executor::new(Arc::new(registry), "test"));
    let opts = LocalOptions {
        run_id: RunId::new(format!("run-{}", std::process::id())),
        inputs: Map::new(),
        concurrency,
        store: Arc::new(FileMemoryStore::new(&dir.join("data"))),
    };
    run_local(Arc::new(plan), executor, opts, cancel, |_, _| {}).await
}

/// The run's error, or "".
fn run_error(r: &RunReport) -> String {
    serde_json::to_value(r).expect("report")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn stage<'a>(r: &'a RunReport, id: &str) -> &'a Value {
    r.stages
        .get(id)
        .unwrap_or_else(|| panic!("no stage {id} in {:?}", r.stages.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_processes_running_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            (
                "skills/probe.yaml",
                r#"
run: |
  mkdir -p running
  touch "running/$CASCADE_TASK_ID"
  n=$(ls running | wc -l)
  sleep 0.1
  rm -f "running/$CASCADE_TASK_ID"
  echo "{\"seen\": $n}"
"#,
            ),
            (
                "c.yaml",
                "name: fan\nstages:\n  - stage: wide\n    skill: probe\n    for_each: [1, 2, 3, 4, 5, 6, 7, 8]\n",
            ),
        ],
    );
    let r = run(dir.path(), "c.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r.status, "success", "{:?}", r.error);
    let items = stage(&r, "wide")["output"]["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(items.len(), 8);
    let most = items
        .iter()
        .filter_map(|i| i["seen"].as_u64())
        .max()
        .unwrap_or(0);
    assert!((1..=2).contains(&most), "at most 2 at once, saw {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_kills_its_running_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            ("skills/hang.yaml", "run: 'echo $$ > started; sleep 30'\n"),
            (
                "c.yaml",
                "name: hang\nstages:\n  - stage: wait\n    skill: hang\n  - stage: never\n    skill: noop\n",
            ),
        ],
    );
    let cancel = CancellationToken::new();
    let pid_file = dir.path().join("started");
    let trigger = cancel.clone();
    let watcher = std::thread::spawn(move || {
        let pid = await_condition("the skill to start", Duration::from_secs(20), || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        trigger.cancel();
        pid.trim().to_owned()
    });
    let r = run(dir.path(), "c.yaml", 4, cancel).await;
    let pid = watcher.join().expect("watcher");
    assert_eq!(r.status, "failed");
    assert!(
        r.error.as_deref().unwrap_or("").contains("cancelled"),
        "{:?}",
        r.error
    );
    assert_eq!(stage(&r, "wait")["status"], "cancelled");
    assert_eq!(stage(&r, "never")["status"], "cancelled");
    // run_local returns only after its tasks ended: the shell is gone.
    let alive = Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "skill process {pid} outlived the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_timeout_fails_the_stage_and_stops_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            ("skills/slow.yaml", "run: sleep 30\n"),
            (
                "c.yaml",
                "name: t\nstages:\n  - stage: slow\n    skill: slow\n    timeout: 300ms\n",
            ),
        ],
    );
    let r = run(dir.path(), "c.yaml", 4, CancellationToken::new()).await;
    assert_eq!(r.status, "failed");
    let err = stage(&r, "slow")["error"].as_str().unwrap_or("").to_owned();
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_memory_carries_over_to_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            (
                "skills/count.yaml",
                r#"
run: |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"runs": int(d.get("previous", 0)) + 1}))'
"#,
            ),
            (
                "c.yaml",
                r#"
name: counter
memory: {scope: global}
stages:
  - stage: count
    skill: count
    inputs: {previous: "${memory.runs}"}
    memory: {write_keys: [runs]}
"#,
            ),
            (
                "first.yaml",
                r#"
name: counter-first
memory: {scope: global}
stages:
  - stage: count
    skill: count
    inputs: {previous: 0}
    memory: {write_keys: [runs]}
"#,
            ),
        ],
    );
    let r1 = run(dir.path(), "first.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r1.memory_snapshot.get("runs"), Some(&json!(1)));
    let r2 = run(dir.path(), "c.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r2.status, "success", "{:?}", r2.error);
    assert_eq!(r2.memory_snapshot.get("runs"), Some(&json!(2)));
    let r3 = run(dir.path(), "c.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r3.memory_snapshot.get("runs"), Some(&json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_write_that_fails_stops_the_run_saying_which_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            (
                "skills/emit.yaml",
                "run: |\n  echo '{\"note\": \"kept\"}'\n",
            ),
            (
                "c.yaml",
                "cascade:\n  name: remembers\nmemory:\n  persistence: enabled\n  scope: cascade\n  keys: [note]\nstages:\n  - stage: a\n    skill: emit\n    memory:\n      write_keys: [note]\n  - stage: b\n    skill: emit\n    depends_on: [a]\n    inputs:\n      x: ${memory.note}\n",
            ),
            // Where the memory files would go is a file: every write fails
            // (even as root).
            ("data", "not a directory"),
        ],
    );
    let r = run(dir.path(), "c.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r.status.as_str(), "failed", "{r:?}");
    let error = run_error(&r);
    assert!(error.contains("memory write of `note` failed"), "{error}");
    assert_ne!(
        stage(&r, "b")["status"],
        "success",
        "b did not run without it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_memory_that_cannot_be_read_stops_the_run_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            ("skills/emit.yaml", "run: |\n  echo {}\n"),
            (
                "c.yaml",
                "cascade:\n  name: remembers\nmemory:\n  persistence: enabled\n  scope: global\n  keys: [note]\nstages:\n  - stage: a\n    skill: emit\n",
            ),
            ("data/memory/global.json", "{ not json"),
        ],
    );
    let r = run(dir.path(), "c.yaml", 2, CancellationToken::new()).await;
    assert_eq!(r.status.as_str(), "failed", "{r:?}");
    let error = run_error(&r);
    assert!(error.contains("global memory could not be read"), "{error}");
}
