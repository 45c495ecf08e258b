//! Every example, submitted to a swarm of three workers with different
//! skills, gives the same results as `coordinator run` on the embedded
//! default (timings, run ids and worker names aside).

use std::collections::BTreeSet;
use std::process::Command;

use cascade_tests::{TestSwarm, binary};
use serde_json::Value;

use crate::support::{self, examples_dir};

fn skill_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir().join("skills"))
        .expect("examples/skills")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// Values that differ between any two runs by nature: temporary paths
/// (each run makes its own) and hashes of archives that embed them.
fn normalize(v: &Value) -> Value {
    match v {
        Value::String(s) if s.contains("/tmp") => Value::String("<temporary path>".into()),
        // Artifacts are filed under the run's id.
        Value::String(s) if s.contains(".cascade/artifacts/") => {
            Value::String("<artifact path>".into())
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = if k == "sha256" {
                        Value::String("<hash>".into())
                    } else {
                        normalize(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What must match between the two modes: per stage its status, branch
/// and outputs; volatile fields (times, ids, workers) are dropped.
fn essence(report: &Value) -> Value {
    let mut stages = serde_json::Map::new();
    for (id, s) in report["stages"].as_object().cloned().unwrap_or_default() {
        stages.insert(
            id,
            serde_json::json!({
                "status": s["status"],
                "branch_taken": s.get("branch_taken").cloned().unwrap_or(Value::Null),
                "output": s["output"],
                "iterations": s["iterations"],
            }),
        );
    }
    normalize(
        &serde_json::json!({"status": report["status"], "stages": stages, "memory": report["memory_snapshot"]}),
    )
}

fn run_both(file: &str) {
    let path = examples_dir().join(file);
    let tmp = tempfile::tempdir().expect("tempdir");
    let skill_tmp = tmp.path().join("tmp");
    std::fs::create_dir_all(&skill_tmp).expect("tmp");

    // The embedded run.
    let local_out = tmp.path().join("local.json");
    let out = Command::new(binary("coordinator"))
        .arg("run")
        .arg(&path)
        .arg("--output")
        .arg(&local_out)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("TMPDIR", &skill_tmp)
        .env_remove("CASCADE_SKILLS_DIR")
        .output()
        .expect("coordinator run");
    assert!(
        out.status.success(),
        "local run of {file} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The swarm: skills split between two workers, a third with all.
    let skills = skill_names();
    let (a, b) = skills.split_at(skills.len() / 2);
    let builtins = "noop,sleep,echo,fail,codex-sandbox";
    let dir = examples_dir();
    let skills_dir = dir.join("skills");
    let common: Vec<String> = vec![
        "--skills-dir".into(),
        skills_dir.display().to_string(),
        "--workdir".into(),
        dir.display().to_string(),
    ];
    let common: Vec<&str> = common.iter().map(String::as_str).collect();
    let mut swarm = TestSwarm::new();
    swarm.start_coordinator("coordinator-1");
    swarm.start_worker("w-a", &format!("{},{builtins}", a.join(",")), &common);
    swarm.start_worker("w-b", &format!("{},{builtins}", b.join(",")), &common);
    swarm.start_worker(
        "w-all",
        &format!("{},{builtins}", skills.join(",")),
        &common,
    );
    let swarm_out = tmp.path().join("swarm.json");
    let (code, _stdout, stderr) = swarm.submit_wait(&path, &swarm_out, &[]);
    assert_eq!(code, 0, "swarm run of {file} failed:\n{stderr}");

    let local: Value =
        serde_json::from_slice(&std::fs::read(&local_out).expect("local results")).expect("json");
    let remote: Value =
        serde_json::from_slice(&std::fs::read(&swarm_out).expect("swarm results")).expect("json");
    assert_eq!(
        essence(&remote),
        essence(&local),
        "{file}: swarm and embedded results differ"
    );
    let workers: BTreeSet<String> = remote["stages"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|s| s["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    assert!(
        workers.iter().all(|w| w.starts_with("w-")),
        "{file}: stages ran on {workers:?}"
    );
}

macro_rules! examples {
    ($($name:ident => $file:expr,)*) => {
        $(#[test] fn $name() { run_both($file); })*

        #[test]
        fn every_example_is_covered() {
            let listed: BTreeSet<&str> = [$($file),*].into_iter().collect();
            for name in support::top_level_examples() {
                assert!(listed.contains(name.as_str()), "example {name} has no swarm test");
            }
        }
    };
}

support::with_every_example!(examples);
