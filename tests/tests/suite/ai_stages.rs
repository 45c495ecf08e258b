//! AI stages end to end, in the embedded mode and on a swarm: model skills
//! whose prompts are rendered from earlier stages and sent to an
//! OpenAI-compatible server (wiremock stands in for Ollama/vLLM/OpenAI),
//! a multi-model vote, usage and cost in the results.

use std::path::Path;
use std::process::Command;

use cascade_tests::{TestSwarm, binary, write_tree};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CASCADE: &str = r#"
name: ai-review
stages:
  - stage_id: facts
    skill: echo
    inputs: {notes: "the parser drops the last token"}
  - stage_id: summary
    model: local-a
    skill: summarize
    inputs: {audience: maintainers}
  - stage_id: verdict
    models: [local-a, local-b, local-c]
    select: vote
    skill: classify
    inputs: {text: "${summary.headline}"}
"#;

const SUMMARIZE: &str = r#"
description: Summarize an earlier stage's notes for an audience
prompt: "Summarize for ${audience}: ${facts.notes}"
system: Answer in JSON with a headline.
output: json
"#;

const CLASSIFY: &str = r#"
prompt: "Classify as bug or feature: ${text}"
output: json
"#;

fn models_file(uri: &str) -> String {
    let mut out = String::from("models:\n");
    for (name, id) in [("local-a", "m-a"), ("local-b", "m-b"), ("local-c", "m-c")] {
        out.push_str(&format!(
            "  {name}:\n    provider: openai\n    model: {id}\n    base_url: {uri}/v1\n    key_env: none\n    context: 8000\n    price: {{input: 0.5, output: 1.0}}\n"
        ));
    }
    out
}

fn completion(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "c1",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    }))
}

/// A server that summarizes with local-a and classifies: a and c say bug,
/// b says feature.
async fn server() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains(
            "Summarize for maintainers: the parser drops the last token",
        ))
        .respond_with(completion(r#"{"headline": "Parser loses its last token"}"#))
        .mount(&s)
        .await;
    for (id, label) in [("m-a", "bug"), ("m-b", "feature"), ("m-c", "bug")] {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(json!({"model": id})))
            .and(body_string_contains(
                "Classify as bug or feature: Parser loses its last token",
            ))
            .respond_with(completion(&format!(
                "```json\n{{\"label\": \"{label}\"}}\n```"
            )))
            .mount(&s)
            .await;
    }
    s
}

fn tree(dir: &Path, uri: &str) {
    write_tree(
        dir,
        &[
            ("cascade.yaml", CASCADE),
            ("skills/summarize.yaml", SUMMARIZE),
            ("skills/classify.yaml", CLASSIFY),
            ("models.yaml", &models_file(uri)),
        ],
    );
}

fn check(results: &Value) {
    assert_eq!(results["status"], json!("success"), "{results:#}");
    let summary = &results["stages"]["summary"];
    assert_eq!(
        summary["output"]["headline"],
        json!("Parser loses its last token")
    );
    assert_eq!(summary["output"]["model"], json!("local-a"));
    assert_eq!(summary["model_used"], json!("local-a"));
    assert_eq!(summary["tokens"], json!(1500));
    // 1000 in at $0.5/1k + 500 out at $1/1k.
    assert_eq!(summary["cost"], json!(1.0));
    let verdict = &results["stages"]["verdict"];
    assert_eq!(verdict["output"]["label"], json!("bug"));
    assert_eq!(
        verdict["output"]["votes"]["for"],
        json!(["local-a", "local-c"])
    );
    assert_eq!(verdict["usage"]["calls"], json!(3));
    assert_eq!(results["usage"]["calls"], json!(4));
    assert_eq!(results["usage"]["input_tokens"], json!(4000));
}

async fn requests_carry_the_rendered_prompt(s: &MockServer) {
    let reqs = s.received_requests().await.unwrap_or_default();
    let summary = reqs
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .find(|b| b["messages"].to_string().contains("Summarize for"))
        .expect("the summary request");
    assert_eq!(summary["model"], json!("m-a"));
    assert_eq!(summary["messages"][0]["role"], json!("system"));
    let system = summary["messages"][0]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        system.starts_with("Answer in JSON with a headline."),
        "{system}"
    );
    assert_eq!(reqs.len(), 4, "one call per model answer");
}

#[test]
fn model_stages_run_embedded_against_an_openai_compatible_server() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(server());
    let dir = tempfile::tempdir().expect("tempdir");
    tree(dir.path(), &s.uri());
    let out = dir.path().join("results.json");
    let run = Command::new(binary("coordinator"))
        .args(["run", "cascade.yaml", "--models", "models.yaml", "--output"])
        .arg(&out)
        .current_dir(dir.path())
        .env_remove("CASCADE_MODELS")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results")).expect("json");
    check(&results);
    rt.block_on(requests_carry_the_rendered_prompt(&s));
}

#[test]
fn model_stages_run_the_same_on_a_swarm() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(server());
    let dir = tempfile::tempdir().expect("tempdir");
    tree(dir.path(), &s.uri());
    let mut swarm = TestSwarm::new();
    swarm.env.push((
        "CASCADE_MODELS".into(),
        dir.path().join("models.yaml").display().to_string(),
    ));
    swarm.start_coordinator("c1");
    let skills = dir.path().join("skills").display().to_string();
    swarm.start_worker("w1", "echo,summarize,classify", &["--skills-dir", &skills]);
    let out = dir.path().join("results.json");
    let (code, _, stderr) = swarm.submit_wait(&dir.path().join("cascade.yaml"), &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results")).expect("json");
    check(&results);
    assert_eq!(results["stages"]["summary"]["workers"], json!(["w1"]));
    rt.block_on(requests_carry_the_rendered_prompt(&s));
}

#[test]
fn a_missing_key_fails_the_stage_naming_the_variable_and_never_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            (
                "cascade.yaml",
                "name: keyless\nstages:\n  - stage_id: s\n    model: claude\n    skill: ask\n",
            ),
            ("skills/ask.yaml", "prompt: hello\n"),
        ],
    );
    let run = Command::new(binary("coordinator"))
        .args(["run", "cascade.yaml", "--json"])
        .current_dir(dir.path())
        .env_remove("CASCADE_MODELS")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(1));
    let results: Value = serde_json::from_slice(&run.stdout).expect("json");
    let err = results["stages"]["s"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("ANTHROPIC_API_KEY"), "{err}");
}

/// Copies a fixture project into `dir/project`.
fn copy_fixture(name: &str, dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sandbox")
        .join(name);
    let dst = dir.join("project");
    std::fs::create_dir_all(&dst).expect("project dir");
    for entry in std::fs::read_dir(&src).expect("fixture") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn codex_auto_fix_sends_a_failing_stage_through_the_loop_and_retries_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture("python-calc", dir.path());
    // The test skill runs from the cascade's directory, and so from the
    // sandbox copy of it; the fixer edits the copy.
    let cascade = r#"
name: autofix
stages:
  - stage_id: unit-tests
    skill: unittest
    inputs: {pattern: "test_*.py"}
    error_handling: {strategy: codex-auto-fix, max_retries: 1}
    fix_strategy:
      fix_command: "sed -i -e 's/(len(values) - 1)/len(values)/' -e 's/n % 2 == 1/n % 2 == 0/' project/calc.py"
      max_iterations: 3
"#;
    write_tree(
        dir.path(),
        &[
            ("cascade.yaml", cascade),
            (
                "skills/unittest.yaml",
                "run: python3 -m unittest discover -s project -p \"$CASCADE_INPUT_PATTERN\" -v\n",
            ),
        ],
    );
    let before = std::fs::read(dir.path().join("project/calc.py")).expect("calc.py");
    let out = dir.path().join("results.json");
    let run = Command::new(binary("coordinator"))
        .args(["run", "cascade.yaml", "--output"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let results: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results")).expect("json");
    assert_eq!(run.status.code(), Some(0), "{stderr}\n{results:#}");
    let stage = &results["stages"]["unit-tests"];
    assert_eq!(stage["status"], json!("success"));
    let notes = stage["notes"].to_string();
    assert!(notes.contains("running the test-and-fix loop"), "{notes}");
    assert!(notes.contains("patch applied"), "{notes}");
    // The retry ran on the fixed source: the patch reached the project.
    let after = std::fs::read(dir.path().join("project/calc.py")).expect("calc.py");
    assert_ne!(before, after);
    assert_eq!(stage["attempts"], json!(3), "the task, the loop, the retry");
}
