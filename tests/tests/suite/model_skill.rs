//! Model skills end to end: skill files with `prompt:` loaded by the registry, run by
//! `model::skill::run` against an OpenAI-compatible wiremock server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cascade_core::models::{ModelCatalog, ModelEnv};
use cascade_exec::model::{self, ClientOptions, ModelClient};
use cascade_exec::skills::{ModelOutput, SkillKind};
use cascade_exec::{SkillDef, SkillRegistry};
use cascade_proto::{Failure, FailureClass, FailureKind, TaskBudget, TaskSpec, Usage};
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, answer_once_then};

/// Catalog: `m` (keyless, priced), `other` (keyless) and `keyed` (needs a key nobody set).
fn client(server: &MockServer) -> ModelClient {
    let base = server.uri();
    let yaml = format!(
        "models:
  m: {{provider: openai, model: test-model, base_url: '{base}/v1', key_env: none, context: 2000,
       price: {{input: 0.01, output: 0.02}}}}
  other: {{provider: openai, model: other-model, base_url: '{base}/v1', key_env: none, context: 2000}}
  keyed: {{provider: anthropic, model: x, context: 2000}}
"
    );
    let catalog = ModelCatalog::parse(&yaml, Path::new("models.yaml")).expect("catalog");
    ModelClient::with_options(
        Arc::new(catalog),
        ClientOptions {
            env: ModelEnv::fixed(BTreeMap::new()),
            backoff: Duration::from_millis(1),
            ..ClientOptions::default()
        },
    )
}

fn chat(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50}
    }))
}

/// Loads one skill file (YAML) and returns its definition.
fn skill(yaml: &str) -> (TempDir, SkillDef) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ask.yaml"), yaml).expect("write skill");
    let registry = SkillRegistry::load(&[dir.path().to_owned()]).expect("skills load");
    let def = registry.get("ask").expect("skill `ask`").clone();
    (dir, def)
}

fn task(inputs: Value) -> TaskSpec {
    support::task_spec("run-1", "ask", "ask#0", "ask", inputs)
}

type Outcome = (Result<Value, Failure>, Option<Usage>, Option<String>);

async fn run(def: &SkillDef, task: &TaskSpec, client: &ModelClient) -> Outcome {
    let SkillKind::Model(spec) = &def.kind else {
        panic!("not a model skill: {:?}", def.kind)
    };
    let inputs: Map<String, Value> = task.inputs.as_object().cloned().unwrap_or_default();
    model::skill::run(def, spec, task, &inputs, client, &CancellationToken::new()).await
}

async fn sent_prompts(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| {
            let body: Value = r.body_json().expect("json body");
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            messages
                .last()
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

const JSON_SKILL: &str = "prompt: 'Rate ${inputs.thing} from 1 to 10.'\noutput: json\nmodel: m\n";

#[tokio::test]
async fn skill_file_fields_load() {
    let (_dir, def) = skill(
        "prompt: 'Summarise ${topic}'\nsystem: You are terse.\noutput: json\nmodel: m\n\
         max_tokens: 300\ntemperature: 0.3\ntimeout: 30s\n",
    );
    let SkillKind::Model(spec) = &def.kind else {
        panic!("model skill expected")
    };
    assert_eq!(spec.prompt, "Summarise ${topic}");
    assert_eq!(spec.system.as_deref(), Some("You are terse."));
    assert_eq!(spec.output, ModelOutput::Json);
    assert_eq!(spec.model.as_deref(), Some("m"));
    assert_eq!(spec.max_tokens, Some(300));
    assert_eq!(spec.temperature, Some(0.3));
    assert_eq!(def.timeout, Some(Duration::from_secs(30)));
}

#[test]
fn skill_file_mistakes_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("both.yaml", "run: echo\nprompt: hi\n"),
        ("format.yaml", "prompt: hi\noutput: yaml\n"),
        ("template.yaml", "prompt: 'hi ${inputs.}'\n"),
        ("stray.yaml", "run: echo\nmodel: m\n"),
        ("hot.yaml", "prompt: hi\ntemperature: 7\n"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let errors: Vec<String> = SkillRegistry::load(&[dir.path().to_owned()])
        .expect_err("invalid skills")
        .iter()
        .map(ToString::to_string)
        .collect();
    let has = |file: &str, needle: &str| {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(file) && e.contains(needle)),
            "no error for {file} containing {needle:?} in {errors:#?}"
        );
    };
    has("both.yaml:2:9", "fields `run` and `prompt` are exclusive");
    has(
        "format.yaml:2:9",
        "field `output`: expected `text` or `json`",
    );
    has("template.yaml:1:9", "field `prompt`: cannot parse");
    has("stray.yaml:2:8", "field `model`: only for model skills");
    has(
        "hot.yaml:2:14",
        "field `temperature`: expected a number from 0 to 2",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[tokio::test]
async fn prose_wrapped_json_is_extracted_without_a_second_call() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat(
            "Sure! Here is my rating:\n```json\n{\"score\": 7}\n```\nHope it helps.",
        ))
        .mount(&server)
        .await;
    let (_dir, def) = skill(JSON_SKILL);
    let (result, usage, model) = run(&def, &task(json!({"thing": "rust"})), &client(&server)).await;
    assert_eq!(result.expect("outputs"), json!({"score": 7, "model": "m"}));
    assert_eq!(model.as_deref(), Some("m"));
    let usage = usage.expect("usage");
    assert_eq!(usage.calls, 1);
    assert!(
        (usage.cost_usd - (0.001 + 0.001)).abs() < 1e-12,
        "{}",
        usage.cost_usd
    );
    assert_eq!(sent_prompts(&server).await, ["Rate rust from 1 to 10."]);
}

#[tokio::test]
async fn garbage_gets_one_repair_call() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/chat/completions",
        chat("I would say it is about a seven, honestly."),
        chat("[7]"),
    )
    .await;
    let (_dir, def) = skill(JSON_SKILL);
    let (result, usage, _) = run(&def, &task(json!({"thing": "rust"})), &client(&server)).await;
    assert_eq!(
        result.expect("repaired"),
        json!({"result": [7], "model": "m"}),
        "a non-object answer goes under `result`"
    );
    let usage = usage.expect("usage");
    assert_eq!(
        (usage.calls, usage.input_tokens, usage.output_tokens),
        (2, 200, 100)
    );
    let prompts = sent_prompts(&server).await;
    assert_eq!(prompts.len(), 2);
    assert!(prompts[1].contains("does not parse"), "{}", prompts[1]);
    assert!(
        prompts[1].contains("about a seven"),
        "the repair shows the answer"
    );
}

#[tokio::test]
async fn still_garbage_after_the_repair_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat("no json, sorry"))
        .mount(&server)
        .await;
    let (_dir, def) = skill(JSON_SKILL);
    let (result, usage, _) = run(&def, &task(json!({"thing": "rust"})), &client(&server)).await;
    let failure = result.expect_err("malformed");
    assert_eq!(failure.class, Some(FailureClass::Malformed));
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert!(
        failure.message.starts_with("skill `ask`: "),
        "{}",
        failure.message
    );
    assert_eq!(usage.map(|u| u.calls), Some(2), "exactly one repair call");
}

#[tokio::test]
async fn text_output_and_model_from_the_task() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat("plain words"))
        .mount(&server)
        .await;
    let (_dir, def) = skill("prompt: hello\nmodel: m\n");
    let mut t = task(json!({}));
    t.model = Some("other".into());
    let (result, _, model) = run(&def, &t, &client(&server)).await;
    assert_eq!(
        result.expect("text"),
        json!({"text": "plain words", "model": "other"})
    );
    assert_eq!(model.as_deref(), Some("other"), "the task's model wins");
    let body: Value = server.received_requests().await.expect("recording")[0]
        .body_json()
        .expect("json");
    assert_eq!(body["model"], "other-model");
}

#[tokio::test]
async fn prompt_renders_from_the_task_context() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat("done"))
        .mount(&server)
        .await;
    let (_dir, def) = skill(
        "prompt: 'Topic ${inputs.topic}; summary ${analyze.summary}; style ${memory.style}; \
         for ${audience}; score ${score}; run ${cascade.name}'\n\
         system: 'Write for ${audience}.'\nmodel: m\n",
    );
    let mut t = task(json!({"topic": "new topic", "audience": "devs"}));
    t.context = Some(json!({
        "inputs": {"topic": "old topic"},
        "memory": {"style": "terse"},
        "cascade": {"name": "demo"},
        "analyze": {"summary": "S", "score": 9}
    }));
    let (result, _, _) = run(&def, &t, &client(&server)).await;
    result.expect("rendered and answered");
    assert_eq!(
        sent_prompts(&server).await,
        ["Topic new topic; summary S; style terse; for devs; score 9; run demo"]
    );
    let body: Value = server.received_requests().await.expect("recording")[0]
        .body_json()
        .expect("json");
    assert_eq!(body["messages"][0]["content"], "Write for devs.");
}

#[tokio::test]
async fn prompt_without_context_reads_inputs_and_memory_input() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat("done"))
        .mount(&server)
        .await;
    let (_dir, def) = skill("prompt: '${name} / ${inputs.name} / ${memory.k}'\nmodel: m\n");
    let t = task(json!({"name": "x", "memory": {"k": "v"}}));
    run(&def, &t, &client(&server)).await.0.expect("ok");
    assert_eq!(sent_prompts(&server).await, ["x / x / v"]);
}

#[tokio::test]
async fn undefined_reference_is_terminal_and_names_file_and_reference() {
    let server = MockServer::start().await;
    let (dir, def) = skill("prompt: 'About ${inputs.missing}'\nmodel: m\n");
    let (result, usage, _) = run(&def, &task(json!({})), &client(&server)).await;
    let failure = result.expect_err("undefined");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert!(
        failure.message.contains("${inputs.missing}"),
        "{}",
        failure.message
    );
    let file = dir.path().join("ask.yaml");
    assert!(
        failure.message.contains(&file.display().to_string()),
        "{}",
        failure.message
    );
    assert!(usage.is_none());
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn model_resolution_failures() {
    let server = MockServer::start().await;
    let client = client(&server);
    let (_dir, no_model) = skill("prompt: hi\n");
    let failure = run(&no_model, &task(json!({})), &client)
        .await
        .0
        .expect_err("no model");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert!(failure.message.contains("no model"), "{}", failure.message);

    let mut t = task(json!({}));
    t.model = Some("gpt-9".into());
    let failure = run(&no_model, &t, &client).await.0.expect_err("unknown");
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert!(
        failure.message.contains("`keyed`, `m`, `other`"),
        "{}",
        failure.message
    );

    t.model = Some("keyed".into());
    let failure = run(&no_model, &t, &client)
        .await
        .0
        .expect_err("no key here");
    assert_eq!(failure.class, Some(FailureClass::Unavailable));
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert!(
        failure.message.contains("ANTHROPIC_API_KEY"),
        "{}",
        failure.message
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn budget_refuses_before_calling() {
    let server = MockServer::start().await;
    let client = client(&server);
    let (_dir, def) = skill("prompt: '${text}'\nmodel: m\n");
    let mut t = task(json!({"text": "word ".repeat(200)}));
    t.budget = Some(TaskBudget {
        max_tokens: Some(100),
        max_cost_usd: None,
    });
    let failure = run(&def, &t, &client)
        .await
        .0
        .expect_err("over the token budget");
    assert_eq!(failure.class, Some(FailureClass::Budget));
    assert_eq!(failure.kind, FailureKind::Terminal);

    t.budget = Some(TaskBudget {
        max_tokens: None,
        max_cost_usd: Some(0.000_01),
    });
    let failure = run(&def, &t, &client)
        .await
        .0
        .expect_err("over the cost budget");
    assert_eq!(failure.class, Some(FailureClass::Budget));
    assert!(failure.message.contains("$0.0000"), "{}", failure.message);
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty()
    );
}

#[tokio::test]
async fn budget_caps_the_output() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(chat("ok"))
        .mount(&server)
        .await;
    let (_dir, def) = skill("prompt: '${text}'\nmodel: m\nmax_tokens: 900\n");
    let mut t = task(json!({"text": "x".repeat(400)}));
    t.budget = Some(TaskBudget {
        max_tokens: Some(300),
        max_cost_usd: None,
    });
    run(&def, &t, &client(&server))
        .await
        .0
        .expect("fits once capped");
    let body: Value = server.received_requests().await.expect("recording")[0]
        .body_json()
        .expect("json");
    assert_eq!(
        body["max_tokens"], 200,
        "300 budget - 100 estimated prompt tokens"
    );
}

#[tokio::test]
async fn judge_picks_a_candidate() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/chat/completions",
        chat(r#"{"choice": 1, "reason": "more complete"}"#),
        chat(r#"{"choice": 5, "reason": "?"}"#),
    )
    .await;
    let client = client(&server);
    let candidates = [
        ("claude".to_owned(), json!({"text": "short"})),
        ("gemini".to_owned(), json!({"text": "long and complete"})),
    ];
    let question = json!("what is best?");
    let cancel = CancellationToken::new();
    let (verdict, usage) = model::judge(&client, "m", &question, &candidates, &cancel).await;
    assert_eq!(
        verdict.expect("verdict"),
        json!({"choice": 1, "model": "gemini", "reason": "more complete"})
    );
    assert_eq!(usage.map(|u| u.calls), Some(1));
    let prompt = &sent_prompts(&server).await[0];
    assert!(
        prompt.contains("long and complete") && prompt.contains("[1]"),
        "{prompt}"
    );

    let (verdict, _) = model::judge(&client, "m", &question, &candidates, &cancel).await;
    let failure = verdict.expect_err("out of range");
    assert_eq!(failure.class, Some(FailureClass::Malformed));
}
