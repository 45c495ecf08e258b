//! Contract tests of the HTTP providers against wiremock: request shape and headers,
//! answers and usage, and the classification of every kind of failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cascade_core::models::{ModelCatalog, ModelEnv};
use cascade_exec::model::{
    BreakerConfig, CallOptions, ClientOptions, ModelClient, ModelError, ModelRequest,
};
use cascade_proto::{FailureClass, FailureKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::answer_once_then;

const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789abcdef";
const OPENAI_KEY: &str = "sk-openai-test-fedcba9876543210";
const GEMINI_KEY: &str = "AIza-gemini-test-key-42";

/// One model per provider, all served by `server`; prices make costs easy to check.
fn catalog(server: &MockServer) -> ModelCatalog {
    let base = server.uri();
    let yaml = format!(
        "models:
  claude:
    provider: anthropic
    model: claude-test
    base_url: {base}
    context: 1000
    max_output: 500
    price: {{input: 0.003, output: 0.015}}
  gpt:
    provider: openai
    model: gpt-test
    base_url: {base}/v1
    context: 1000
    price: {{input: 0.001, output: 0.002}}
  local:
    provider: openai
    model: qwen
    base_url: {base}/v1
    key_env: none
    context: 1000
  gem:
    provider: gemini
    model: gemini-test
    base_url: {base}
    context: 1000
    price: {{input: 0.0003, output: 0.0025}}
  slow:
    provider: openai
    model: gpt-test
    base_url: {base}/v1
    context: 1000
    timeout: 200ms
"
    );
    ModelCatalog::parse(&yaml, Path::new("models.yaml")).expect("test catalog")
}

fn keys() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), ANTHROPIC_KEY.to_owned()),
        ("OPENAI_API_KEY".to_owned(), OPENAI_KEY.to_owned()),
        ("GEMINI_API_KEY".to_owned(), GEMINI_KEY.to_owned()),
    ])
}

fn options(env: BTreeMap<String, String>) -> ClientOptions {
    ClientOptions {
        env: ModelEnv::fixed(env),
        backoff: Duration::from_millis(1),
        ..ClientOptions::default()
    }
}

fn client(server: &MockServer) -> ModelClient {
    ModelClient::with_options(Arc::new(catalog(server)), options(keys()))
}

fn ask(prompt: &str) -> ModelRequest {
    ModelRequest {
        prompt: prompt.to_owned(),
        ..ModelRequest::default()
    }
}

async fn complete(
    client: &ModelClient,
    model: &str,
    req: &ModelRequest,
) -> Result<cascade_exec::model::Completion, ModelError> {
    client.complete(model, req, &CancellationToken::new()).await
}

async fn requests(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.expect("recording is on")
}

fn anthropic_ok(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000, "output_tokens": 2000}
    }))
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "type": "error", "error": {"type": kind, "message": message}
    }))
}

fn assert_no_key(err: &ModelError) {
    for key in [ANTHROPIC_KEY, OPENAI_KEY, GEMINI_KEY] {
        assert!(!err.message.contains(key), "key leaked: {}", err.message);
        assert!(!format!("{err:?}").contains(key), "key leaked in Debug");
    }
}

// --- Anthropic ------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_request_shape_usage_and_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "model": "claude-test",
            "max_tokens": 100,
            "system": "be brief",
            "temperature": 0.2,
            "messages": [{"role": "user", "content": "hello"}]
        })))
        .respond_with(anthropic_ok("hi there"))
        .expect(1)
        .mount(&server)
        .await;
    let req = ModelRequest {
        system: Some("be brief".into()),
        max_output_tokens: Some(100),
        ..ask("hello")
    };
    let opts = CallOptions {
        temperature: Some(0.2),
    };
    let done = client(&server)
        .complete_with("claude", &req, &opts, &CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(done.text, "hi there");
    assert_eq!(done.model, "claude");
    assert_eq!(done.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (1000, 2000)
    );
    assert!(
        (done.usage.cost_usd - 0.033).abs() < 1e-12,
        "{}",
        done.usage.cost_usd
    );
    assert_eq!(done.usage.calls, 1);
}

#[tokio::test]
async fn anthropic_output_cap_defaults_to_max_output() {
    let server = MockServer::start().await;
    Mock::given(body_partial_json(json!({"max_tokens": 500})))
        .respond_with(anthropic_ok("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let req = ModelRequest {
        max_output_tokens: Some(9999),
        ..ask("hi")
    };
    complete(&client(&server), "claude", &req)
        .await
        .expect("capped at max_output");
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/messages",
        anthropic_error(429, "rate_limit_error", "slow down").insert_header("retry-after", "1"),
        anthropic_ok("after the wait"),
    )
    .await;
    let done = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect("second call");
    assert_eq!(done.text, "after the wait");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn long_retry_after_goes_back_to_the_coordinator() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(
            anthropic_error(429, "rate_limit_error", "slow down")
                .insert_header("retry-after", "120"),
        )
        .mount(&server)
        .await;
    let err = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect_err("429");
    assert_eq!(err.class, FailureClass::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(
        requests(&server).await.len(),
        1,
        "not waited out in the worker"
    );
    let failure = err.into_failure();
    assert_eq!(failure.kind, FailureKind::Retryable);
    assert_eq!(failure.class, Some(FailureClass::RateLimited));
    assert_eq!(failure.retry_after_ms, Some(120_000));
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(500, "api_error", "internal"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_ok("third time lucky"))
        .mount(&server)
        .await;
    let done = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect("third call");
    assert_eq!(done.text, "third time lucky");
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_fail_as_server() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(500, "api_error", "internal"))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect_err("500s");
    assert_eq!(err.class, FailureClass::Server);
    assert_eq!(err.kind, FailureKind::Retryable);
    assert!(
        err.message.contains("500") && err.message.contains("internal"),
        "{}",
        err.message
    );
    assert_eq!(requests(&server).await.len(), 3, "one call and two retries");
}

#[tokio::test]
async fn overloaded_is_its_own_class() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(529, "overloaded_error", "Overloaded"))
        .mount(&server)
        .await;
    let client = ModelClient::with_options(
        Arc::new(catalog(&server)),
        ClientOptions {
            retries: 0,
            ..options(keys())
        },
    );
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("529");
    assert_eq!(err.class, FailureClass::Overloaded);
}

#[tokio::test]
async fn anthropic_context_overflow() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(
            400,
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
        ))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect_err("too long");
    assert_eq!(err.class, FailureClass::ContextOverflow);
    assert_eq!(
        err.kind,
        FailureKind::Retryable,
        "the coordinator switches models"
    );
    assert_eq!(requests(&server).await.len(), 1, "not retried here");
}

#[tokio::test]
async fn estimated_overflow_fails_without_a_call() {
    let server = MockServer::start().await;
    let err = complete(&client(&server), "claude", &ask(&"x".repeat(5000)))
        .await
        .expect_err("1250 tokens > 1000");
    assert_eq!(err.class, FailureClass::ContextOverflow);
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn refused_key_is_auth_terminal_and_never_leaks() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(
            401,
            "authentication_error",
            &format!("invalid x-api-key {ANTHROPIC_KEY}"),
        ))
        .mount(&server)
        .await;
    let client = client(&server);
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("401");
    assert_eq!(err.class, FailureClass::Auth);
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(
        err.message
            .contains("ANTHROPIC_API_KEY was refused by anthropic (401)"),
        "{}",
        err.message
    );
    assert_no_key(&err);
    assert!(!format!("{client:?}").contains(ANTHROPIC_KEY));
    let failure = err.into_failure();
    assert!(!failure.message.contains(ANTHROPIC_KEY));
    assert_eq!(failure.kind, FailureKind::Terminal);
    assert_eq!(requests(&server).await.len(), 1, "auth is not retried");
}

#[tokio::test]
async fn missing_key_fails_before_any_call() {
    let server = MockServer::start().await;
    let client = ModelClient::with_options(Arc::new(catalog(&server)), options(BTreeMap::new()));
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("no key");
    assert_eq!(err.class, FailureClass::Unavailable);
    assert!(
        err.message.contains("set ANTHROPIC_API_KEY"),
        "{}",
        err.message
    );
    assert!(requests(&server).await.is_empty());
    assert!(!client.available().contains(&"claude".to_owned()));
    assert!(
        client.available().contains(&"local".to_owned()),
        "keyless server"
    );
}

#[tokio::test]
async fn anthropic_refusal() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "content": [], "stop_reason": "refusal",
            "usage": {"input_tokens": 10, "output_tokens": 0}
        })))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "claude", &ask("hi"))
        .await
        .expect_err("refused");
    assert_eq!(err.class, FailureClass::Refusal);
    assert_eq!(
        err.usage.as_ref().map(|u| u.input_tokens),
        Some(10),
        "the prompt still costs"
    );
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn empty_or_unparsable_answers_are_malformed() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/messages",
        ResponseTemplate::new(200).set_body_string("<html>proxy</html>"),
        anthropic_ok("   "),
    )
    .await;
    let client = client(&server);
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("html");
    assert_eq!(err.class, FailureClass::Malformed);
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("blank");
    assert_eq!(err.class, FailureClass::Malformed);
}

#[tokio::test]
async fn breaker_opens_and_fails_fast() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(anthropic_error(500, "api_error", "down"))
        .mount(&server)
        .await;
    let client = ModelClient::with_options(
        Arc::new(catalog(&server)),
        ClientOptions {
            retries: 0,
            breaker: BreakerConfig {
                threshold: 3,
                open_for: Duration::from_secs(600),
            },
            ..options(keys())
        },
    );
    for _ in 0..3 {
        let err = complete(&client, "claude", &ask("hi"))
            .await
            .expect_err("500");
        assert_eq!(err.class, FailureClass::Server);
    }
    let err = complete(&client, "claude", &ask("hi"))
        .await
        .expect_err("open");
    assert_eq!(err.class, FailureClass::CircuitOpen);
    assert!(
        err.retry_after
            .is_some_and(|d| d <= Duration::from_secs(600))
    );
    assert_eq!(err.into_failure().kind, FailureKind::Retryable);
    assert_eq!(
        requests(&server).await.len(),
        3,
        "the fourth call never left"
    );
    // Another endpoint has its own breaker.
    Mock::given(path("/v1/chat/completions"))
        .respond_with(openai_ok("fine"))
        .mount(&server)
        .await;
    complete(&client, "gpt", &ask("hi"))
        .await
        .expect("openai is not affected");
}

#[tokio::test]
async fn timeout_is_a_timeout_failure() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(openai_ok("late").set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "slow", &ask("hi"))
        .await
        .expect_err("too slow");
    assert_eq!(err.kind, FailureKind::Timeout);
    assert_eq!(err.into_failure().kind, FailureKind::Timeout);
}

#[tokio::test]
async fn cancellation_ends_the_call() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(openai_ok("late").set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = client(&server)
        .complete("gpt", &ask("hi"), &cancel)
        .await
        .expect_err("cancelled");
    assert_eq!(err.kind, FailureKind::Cancelled);
}

#[tokio::test]
async fn unknown_model_lists_the_known_ones() {
    let server = MockServer::start().await;
    let err = complete(&client(&server), "claud", &ask("hi"))
        .await
        .expect_err("unknown");
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(
        err.message.contains("unknown model `claud`"),
        "{}",
        err.message
    );
    assert!(err.message.contains("`claude`"), "{}", err.message);
}

// --- OpenAI ----------------------------------------------------------------------------

fn openai_ok(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content, "refusal": null}}],
        "usage": {"prompt_tokens": 3000, "completion_tokens": 500, "total_tokens": 3500}
    }))
}

#[tokio::test]
async fn openai_request_shape_usage_and_json_mode() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header(
            "authorization",
            format!("Bearer {OPENAI_KEY}").as_str(),
        ))
        .and(body_partial_json(json!({
            "model": "gpt-test",
            "max_tokens": 64,
            "response_format": {"type": "json_object"}
        })))
        .respond_with(openai_ok(r#"{"answer": 42}"#))
        .expect(1)
        .mount(&server)
        .await;
    let req = ModelRequest {
        system: Some("you are terse".into()),
        max_output_tokens: Some(64),
        json: true,
        ..ask("the answer?")
    };
    let done = complete(&client(&server), "gpt", &req)
        .await
        .expect("answer");
    assert_eq!(done.text, r#"{"answer": 42}"#);
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (3000, 500)
    );
    assert!(
        (done.usage.cost_usd - 0.004).abs() < 1e-12,
        "{}",
        done.usage.cost_usd
    );
    let body: Value = requests(&server).await[0].body_json().expect("json body");
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().expect("system text");
    assert!(
        system.starts_with("you are terse") && system.contains("JSON"),
        "{system}"
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "the answer?"})
    );
}

#[tokio::test]
async fn openai_compatible_server_without_a_key() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(openai_ok("local answer"))
        .mount(&server)
        .await;
    let client = ModelClient::with_options(Arc::new(catalog(&server)), options(BTreeMap::new()));
    let done = complete(&client, "local", &ask("hi"))
        .await
        .expect("answer");
    assert_eq!(done.text, "local answer");
    assert_eq!(done.usage.cost_usd, 0.0, "no price: free");
    let sent = &requests(&server).await[0];
    assert!(
        sent.headers.get("authorization").is_none(),
        "no key is sent"
    );
}

#[tokio::test]
async fn openai_refusal_and_content_filter() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/chat/completions",
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": null,
                                     "refusal": "I can't help with that."}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7}
        })),
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "finish_reason": "content_filter",
                         "message": {"role": "assistant", "content": ""}}]
        })),
    )
    .await;
    let client = client(&server);
    let err = complete(&client, "gpt", &ask("hi"))
        .await
        .expect_err("refusal");
    assert_eq!(err.class, FailureClass::Refusal);
    assert!(
        err.message.contains("I can't help with that."),
        "{}",
        err.message
    );
    assert_eq!(err.usage.map(|u| u.tokens()), Some(12));
    let err = complete(&client, "gpt", &ask("hi"))
        .await
        .expect_err("filtered");
    assert_eq!(err.class, FailureClass::Refusal);
}

#[tokio::test]
async fn openai_context_length_exceeded() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"
        }})))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "gpt", &ask("hi"))
        .await
        .expect_err("overflow");
    assert_eq!(err.class, FailureClass::ContextOverflow);
}

#[tokio::test]
async fn openai_retry_after_ms() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1/chat/completions",
        ResponseTemplate::new(429)
            .set_body_json(
                json!({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}),
            )
            .insert_header("retry-after-ms", "20"),
        openai_ok("ok"),
    )
    .await;
    let done = complete(&client(&server), "gpt", &ask("hi"))
        .await
        .expect("retried");
    assert_eq!(done.text, "ok");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn openai_bad_key_names_the_variable() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": format!("Incorrect API key provided: {OPENAI_KEY}."),
            "type": "invalid_request_error", "code": "invalid_api_key"
        }})))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "gpt", &ask("hi"))
        .await
        .expect_err("401");
    assert_eq!(err.class, FailureClass::Auth);
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(
        err.message
            .contains("OPENAI_API_KEY was refused by openai (401)"),
        "{}",
        err.message
    );
    assert_no_key(&err);
}

// --- Gemini ----------------------------------------------------------------------------

fn gemini_ok(parts: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10000, "candidatesTokenCount": 900,
                          "thoughtsTokenCount": 100, "totalTokenCount": 11000}
    }))
}

#[tokio::test]
async fn gemini_request_shape_usage_and_json_mode() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-test:generateContent"))
        .and(header("x-goog-api-key", GEMINI_KEY))
        .and(body_partial_json(json!({
            "contents": [{"role": "user", "parts": [{"text": "list three"}]}],
            "systemInstruction": {"parts": [{"text": "be exact"}]},
            "generationConfig": {"maxOutputTokens": 100, "responseMimeType": "application/json"}
        })))
        .respond_with(gemini_ok(json!([
            {"text": "thinking...", "thought": true},
            {"text": "[1, 2"},
            {"text": ", 3]"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let req = ModelRequest {
        system: Some("be exact".into()),
        max_output_tokens: Some(100),
        json: true,
        ..ask("list three")
    };
    let done = complete(&client(&server), "gem", &req)
        .await
        .expect("answer");
    assert_eq!(done.text, "[1, 2, 3]", "thought parts are left out");
    assert_eq!(done.usage.input_tokens, 10000);
    assert_eq!(
        done.usage.output_tokens, 1000,
        "thinking is billed as output"
    );
    assert!((done.usage.cost_usd - (0.003 + 0.0025)).abs() < 1e-12);
    let sent = &requests(&server).await[0];
    assert_eq!(sent.url.query(), None, "the key is never in the URL");
}

#[tokio::test]
async fn gemini_safety_blocks_are_refusals() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1beta/models/gemini-test:generateContent",
        ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"finishReason": "SAFETY", "safetyRatings": []}],
            "usageMetadata": {"promptTokenCount": 8}
        })),
        ResponseTemplate::new(200).set_body_json(json!({
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 8}
        })),
    )
    .await;
    let client = client(&server);
    let err = complete(&client, "gem", &ask("hi"))
        .await
        .expect_err("safety");
    assert_eq!(err.class, FailureClass::Refusal);
    assert!(err.message.contains("SAFETY"), "{}", err.message);
    let err = complete(&client, "gem", &ask("hi"))
        .await
        .expect_err("blocked");
    assert_eq!(err.class, FailureClass::Refusal);
    assert!(
        err.message.contains("PROHIBITED_CONTENT"),
        "{}",
        err.message
    );
}

fn gemini_429(delay: &str) -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "You exceeded your current quota.",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    }}))
}

#[tokio::test]
async fn gemini_retry_info_is_honoured() {
    let server = MockServer::start().await;
    answer_once_then(
        &server,
        "/v1beta/models/gemini-test:generateContent",
        gemini_429("0.02s"),
        gemini_ok(json!([{"text": "ok"}])),
    )
    .await;
    let done = complete(&client(&server), "gem", &ask("hi"))
        .await
        .expect("retried");
    assert_eq!(done.text, "ok");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn gemini_long_retry_delay_is_returned() {
    let server = MockServer::start().await;
    Mock::given(path("/v1beta/models/gemini-test:generateContent"))
        .respond_with(gemini_429("45s"))
        .mount(&server)
        .await;
    let err = complete(&client(&server), "gem", &ask("hi"))
        .await
        .expect_err("429");
    assert_eq!(err.class, FailureClass::RateLimited);
    assert_eq!(err.retry_after, Some(Duration::from_secs(45)));
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn gemini_context_overflow_and_bad_key() {
    let server = MockServer::start().await;
    let overflow = ResponseTemplate::new(400).set_body_json(json!({"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."
    }}));
    let bad_key = ResponseTemplate::new(400).set_body_json(json!({"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": "API key not valid. Please pass a valid API key.",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    }}));
    answer_once_then(
        &server,
        "/v1beta/models/gemini-test:generateContent",
        overflow,
        bad_key,
    )
    .await;
    let client = client(&server);
    let err = complete(&client, "gem", &ask("hi"))
        .await
        .expect_err("overflow");
    assert_eq!(err.class, FailureClass::ContextOverflow);
    let err = complete(&client, "gem", &ask("hi"))
        .await
        .expect_err("bad key");
    assert_eq!(err.class, FailureClass::Auth);
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(
        err.message
            .contains("GEMINI_API_KEY was refused by gemini (400)"),
        "{}",
        err.message
    );
    assert_no_key(&err);
}
