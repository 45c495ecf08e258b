//! The `coordinator` command line through the real binary: `validate`,
//! `plan` in every format, and `run` with real command skills, inputs,
//! results files and memory that persists between runs.
//!
//! Every run gets its own tempdir (cascade, `skills/`, data dir, results),
//! so tests share nothing and need no ordering.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The binary with no configuration leaking in from the environment.
fn coordinator() -> Command {
    Command::from_std(cascade_tests::coordinator_command())
}

/// A scratch project: a cascade file, a `skills/` dir beside it, a data dir.
struct Project {
    dir: TempDir,
}

impl Project {
    fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `coordinator run FILE --data-dir <tmp>/data` in the project dir.
    fn run(&self, file: &str) -> Command {
        let mut cmd = coordinator();
        cmd.current_dir(self.dir.path())
            .arg("run")
            .arg(file)
            .arg("--data-dir")
            .arg(self.path("data"));
        cmd
    }

    fn results(&self, rel: &str) -> Value {
        let text = std::fs::read_to_string(self.path(rel)).expect("a results file");
        serde_json::from_str(&text).expect("results are JSON")
    }
}

/// A command skill doing real work: counts the lines of input `path` with
/// `wc -l` and prints them as JSON.
const COUNT_LINES: &str = r#"name: count-lines
description: counts the lines of input `path`
run: 'n=$(wc -l < "$CASCADE_INPUT_PATH"); printf "{\"lines\": %d}\n" "$n"'
"#;

const COUNTING: &str = r#"cascade:
  name: counting
  inputs:
    path: {type: string, required: true}
    threshold: {default: 2}
  stages:
    - stage: count
      model: claude
      skill: count-lines
      inputs: {path: "${inputs.path}"}
    - stage: gate
      condition: "${count.lines} >= ${inputs.threshold}"
      branches:
        pass: [{stage: big, skill: echo, inputs: {n: "${count.lines}"}}]
        fail: [{stage: small, skill: noop}]
"#;

fn counting_project(lines: usize) -> Project {
    let p = Project::new();
    p.write("skills/count-lines.yaml", COUNT_LINES);
    p.write("cascade.yaml", COUNTING);
    p.write("data.txt", &"line\n".repeat(lines));
    p
}

// ---- validate --------------------------------------------------------------

#[test]
fn validate_a_good_file_exits_0() {
    coordinator()
        .current_dir(fixtures())
        .args(["validate", "seeds/readme-sequential-workflow.yaml"])
        .assert()
        .code(0)
        .stdout("")
        .stderr(predicate::str::contains(
            "seeds/readme-sequential-workflow.yaml: valid (2 stages, 0 warnings)",
        ));
}

#[test]
fn validate_several_files_reports_each_and_fails_if_any_fails() {
    coordinator()
        .current_dir(fixtures())
        .args([
            "validate",
            "seeds/readme-sequential-workflow.yaml",
            "invalid/cycle.yaml",
            "cli/rich.yaml",
        ])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("seeds/readme-sequential-workflow.yaml: valid")
                .and(predicate::str::contains(
                    "invalid/cycle.yaml: 1 error, 0 warnings",
                ))
                .and(predicate::str::contains("cli/rich.yaml: valid (8 stages")),
        );
    coordinator()
        .current_dir(fixtures())
        .args([
            "validate",
            "seeds/readme-sequential-workflow.yaml",
            "cli/rich.yaml",
        ])
        .assert()
        .code(0);
}

#[test]
fn validate_json_has_one_report_per_file() {
    let out = coordinator()
        .current_dir(fixtures())
        .args([
            "validate",
            "--json",
            "seeds/pattern1-linear-pipeline-multi-model.yaml",
            "invalid/unknown-dependency.yaml",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    let good = &files[0];
    assert_eq!(
        good["file"],
        "seeds/pattern1-linear-pipeline-multi-model.yaml"
    );
    assert_eq!(
        (good["valid"].clone(), good["errors"].clone()),
        (json!(true), json!(0))
    );
    assert_eq!(good["warnings"], 0, "{good}");
    let bad = &files[1];
    assert_eq!(
        (bad["valid"].clone(), bad["errors"].clone()),
        (json!(false), json!(2))
    );
    let d = &bad["diagnostics"][0];
    assert_eq!(d["loc"], "invalid/unknown-dependency.yaml:8:22");
    assert_eq!(d["field"], "test.dependencies[0]");
    assert_eq!(
        d["message"],
        "unknown dependency `biuld`, did you mean `build`?"
    );
}

#[test]
fn validate_needs_a_file() {
    coordinator().arg("validate").assert().code(2);
}

// ---- plan ------------------------------------------------------------------

fn plan(format: &str) -> String {
    let out = coordinator()
        .current_dir(fixtures())
        .args(["plan", "cli/rich.yaml", "--format", format])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn plan_text_snapshot() {
    insta::assert_snapshot!("plan_text", plan("text"));
}

#[test]
fn plan_json_snapshot() {
    let text = plan("json");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["cascade"], "release-train");
    insta::assert_snapshot!("plan_json", text);
}

#[test]
fn plan_dot_is_a_graph_whose_edges_join_declared_nodes() {
    let dot = plan("dot");
    assert!(dot.starts_with("digraph \"release-train\" {"), "{dot}");
    assert_eq!(dot.trim_end().chars().last(), Some('}'));
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    let declared: Vec<&str> = dot
        .lines()
        .filter(|l| l.contains("[label=") && !l.contains("->"))
        .filter_map(|l| l.trim().split('"').nth(1))
        .collect();
    for id in [
        "build", "checks", "review", "refine", "route", "ship", "audit",
    ] {
        assert!(declared.contains(&id), "node {id} missing:\n{dot}");
    }
    let edges: Vec<&str> = dot.lines().filter(|l| l.contains("->")).collect();
    assert!(!edges.is_empty());
    for e in &edges {
        let ends: Vec<&str> = e
            .split("->")
            .map(|s| s.trim().split('"').nth(1).unwrap_or(""))
            .collect();
        for end in ends {
            assert!(
                declared.contains(&end),
                "edge to undeclared node `{end}`: {e}"
            );
        }
    }
    assert!(dot.contains("\"build\" -> \"checks\""), "{dot}");
}

#[test]
fn plan_mermaid_is_a_flowchart_whose_edges_join_declared_nodes() {
    let m = plan("mermaid");
    let mut lines = m.lines();
    assert_eq!(lines.next(), Some("flowchart TD"));
    let mut declared = Vec::new();
    let mut edges = Vec::new();
    for l in lines {
        let l = l.trim();
        if l.is_empty() || l.starts_with("%%") || l == "end" || l.starts_with("subgraph") {
            continue;
        }
        if l.contains("-->") || l.contains("-.->") {
            edges.push(l.to_owned());
        } else {
            let id: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(!id.is_empty(), "unexpected line `{l}`");
            declared.push(id);
        }
    }
    for e in &edges {
        for end in e
            .split(['-', '.', '>', '|'])
            .filter(|s| !s.trim().is_empty())
        {
            let end = end.trim();
            if e.contains(&format!("|{end}|")) {
                continue; // an edge label
            }
            assert!(
                declared.iter().any(|d| d == end),
                "edge to undeclared `{end}`: {e}"
            );
        }
    }
    assert!(declared.len() >= 8, "{m}");
}

#[test]
fn plan_of_an_invalid_file_exits_2() {
    coordinator()
        .current_dir(fixtures())
        .args(["plan", "invalid/cycle.yaml"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "dependency cycle: score -> review -> fix -> score",
        ));
}

// ---- run ---------------------------------------------------------------------

#[test]
fn a_successful_run_writes_seed_compatible_results() {
    let p = counting_project(3);
    p.run("cascade.yaml")
        .arg("--input")
        .arg(format!("path={}", p.path("data.txt").display()))
        .args(["--output", "results.json"])
        .assert()
        .code(0);
    let r = p.results("results.json");
    assert_eq!(r["cascade"], "counting");
    assert_eq!(r["status"], "success");
    assert!(r["duration"].is_number());
    assert!(r["memory_snapshot"].is_object());
    assert!(r["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    for (id, stage) in r["stages"].as_object().expect("stages") {
        for field in [
            "stage_id",
            "status",
            "output",
            "error",
            "duration",
            "model_used",
            "iterations",
            "attempts",
        ] {
            assert!(
                stage.get(field).is_some(),
                "stage {id} lacks `{field}`: {stage}"
            );
        }
        assert_eq!(stage["stage_id"], id.as_str());
    }
    let count = &r["stages"]["count"];
    assert_eq!(count["status"], "success");
    assert_eq!(count["output"], json!({"lines": 3}), "wc -l really ran");
    assert_eq!(count["model_used"], "claude");
    assert_eq!(count["error"], Value::Null);
    assert_eq!(
        (count["iterations"].clone(), count["attempts"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(r["stages"]["gate"]["branch_taken"], "pass");
    assert_eq!(r["stages"]["big"]["output"], json!({"n": 3}));
    assert_eq!(r["stages"]["small"]["status"], "skipped");
}

#[test]
fn the_other_branch_runs_when_the_condition_fails() {
    let p = counting_project(1);
    p.run("cascade.yaml")
        .arg("--input")
        .arg(format!("path={}", p.path("data.txt").display()))
        .args(["--output", "results.json"])
        .assert()
        .code(0);
    let r = p.results("results.json");
    assert_eq!(r["stages"]["count"]["output"]["lines"], 1);
    assert_eq!(r["stages"]["gate"]["branch_taken"], "fail");
    assert_eq!(r["stages"]["small"]["status"], "success");
    assert_eq!(r["stages"]["big"]["status"], "skipped");
}

#[test]
fn a_failing_run_exits_1_and_says_why() {
    let p = Project::new();
    p.write(
        "cascade.yaml",
        "cascade:
  name: doomed
  stages:
    - stage: first
      skill: fail
      inputs: {message: the disk is full}
    - stage: second
      skill: echo
",
    );
    p.run("cascade.yaml")
        .args(["--output", "results.json"])
        .assert()
        .code(1);
    let r = p.results("results.json");
    assert_eq!(r["status"], "failed");
    let first = &r["stages"]["first"];
    assert_eq!(first["status"], "failed");
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains("the disk is full")),
        "{first}"
    );
    assert_ne!(r["stages"]["second"]["status"], "success");
}

#[test]
fn an_invalid_cascade_is_not_run_and_writes_no_results() {
    let p = Project::new();
    p.write(
        "cascade.yaml",
        "cascade:\n  name: bad\n  stages:\n    - {stage: a, skill: echo, dependencies: [nope]}\n",
    );
    p.run("cascade.yaml")
        .args(["--output", "results.json"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("unknown dependency `nope`")
                .and(predicate::str::contains("not run: the cascade has errors")),
        );
    assert!(!p.path("results.json").exists());
}

#[test]
fn an_unknown_skill_is_caught_before_running() {
    let p = Project::new();
    p.write(
        "cascade.yaml",
        "cascade:\n  name: s\n  stages:\n    - {stage: a, skill: ecko}\n",
    );
    p.run("cascade.yaml")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unknown skill `ecko`, did you mean `echo`?",
        ));
}

const ECHO_INPUTS: &str = r#"cascade:
  name: typed
  stages:
    - stage: show
      skill: echo
      inputs:
        number: "${inputs.number}"
        float: "${inputs.float}"
        yes: "${inputs.yes}"
        list: "${inputs.list}"
        object: "${inputs.object}"
        text: "${inputs.text}"
        quoted: "${inputs.quoted}"
        from_file: "${inputs.from_file}"
"#;

#[test]
fn input_values_are_typed_and_json_goes_to_stdout() {
    let p = Project::new();
    p.write("cascade.yaml", ECHO_INPUTS);
    p.write(
        "inputs.yaml",
        "from_file: [a, b]\ntext: overridden by --input\n",
    );
    let out = p
        .run("cascade.yaml")
        .args([
            "--json",
            "--inputs-file",
            "inputs.yaml",
            "--input",
            "number=42",
            "--input",
            "float=2.5",
            "--input",
            "yes=true",
            "--input",
            "list=[1,2]",
            "--input",
            r#"object={"a":{"b":1}}"#,
            "--input",
            "text=hello world",
            "--input",
            r#"quoted="42""#,
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the report on stdout");
    assert_eq!(r["status"], "success");
    assert_eq!(
        r["stages"]["show"]["output"],
        json!({
            "number": 42,
            "float": 2.5,
            "yes": true,
            "list": [1, 2],
            "object": {"a": {"b": 1}},
            "text": "hello world",
            "quoted": "42",
            "from_file": ["a", "b"],
        })
    );
}

#[test]
fn an_input_without_equals_is_a_usage_error() {
    let p = Project::new();
    p.write("cascade.yaml", ECHO_INPUTS);
    p.run("cascade.yaml")
        .args(["--input", "number", "--output", "results.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--input `number`: expected NAME=VALUE",
        ));
    assert!(!p.path("results.json").exists());
}

#[test]
fn a_missing_required_input_is_refused() {
    let p = counting_project(2);
    p.run("cascade.yaml")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "missing required input `path` (pass --input path=VALUE)",
        ));
}

#[test]
fn global_memory_written_by_one_run_is_read_by_the_next() {
    let p = Project::new();
    p.write("skills/count-lines.yaml", COUNT_LINES);
    p.write("data.txt", "1\n2\n3\n4\n5\n");
    p.write(
        "writer.yaml",
        "cascade:
  name: writer
  memory: {scope: global}
  inputs: [{name: path, required: true}]
  stages:
    - stage: count
      skill: count-lines
      inputs: {path: \"${inputs.path}\"}
      memory: {write_keys: [lines]}
",
    );
    p.write(
        "reader.yaml",
        "cascade:
  name: reader
  memory: {scope: global}
  stages:
    - stage: recall
      skill: echo
      inputs: {remembered: \"${memory.lines}\"}
",
    );
    p.run("writer.yaml")
        .arg("--input")
        .arg(format!("path={}", p.path("data.txt").display()))
        .assert()
        .code(0);
    assert!(p.path("data").is_dir(), "the data dir was used");
    p.run("reader.yaml")
        .args(["--output", "results.json"])
        .assert()
        .code(0);
    let r = p.results("results.json");
    assert_eq!(r["stages"]["recall"]["output"], json!({"remembered": 5}));
    assert_eq!(r["memory_snapshot"]["lines"], 5);

    // A different data dir has no memory of it.
    let other = Project::new();
    let out = coordinator()
        .arg("run")
        .arg(p.path("reader.yaml"))
        .arg("--data-dir")
        .arg(other.path("data"))
        .output()
        .expect("runs");
    assert_ne!(
        out.status.code(),
        Some(0),
        "`${{memory.lines}}` is undefined there"
    );
}

/// Every example and every seed document the loader accepts is valid
/// against `coordinator schema`, and a misspelt field is flagged.
#[test]
fn the_schema_accepts_every_example_and_seed_and_flags_unknown_fields() {
    use std::sync::Arc;

    let out = coordinator().arg("schema").output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let schema: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("../examples"), root.join("fixtures/seeds")] {
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let p = entry.expect("entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if (name.ends_with(".yaml") || name.ends_with(".json")) && name != "models.yaml" {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 20, "{files:?}");
    let as_json = |text: &str| -> Value {
        let file: Arc<str> = Arc::from("doc.yaml");
        cascade_core::spec::yaml::parse(&file, text)
            .ok()
            .flatten()
            .expect("parses")
            .to_json()
    };
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let loaded = cascade_core::spec::load_file(&f);
        if loaded.has_errors() {
            continue; // the loader refuses it (a seed's prose form): nothing to check
        }
        let doc = as_json(&text);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    let bad = as_json("name: x\nstages:\n  - stage_id: a\n    skil: echo\n");
    assert!(
        !validator.is_valid(&bad),
        "a misspelt stage field is flagged"
    );
}
