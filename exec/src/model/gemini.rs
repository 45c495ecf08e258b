//! Google Gemini: `POST {base}/v1beta/models/{id}:generateContent`, key in
//! `x-goog-api-key` (never in the URL).
//!
//! Request: `contents` (one user turn), `systemInstruction`, `generationConfig`
//! (`maxOutputTokens`, `temperature`, `responseMimeType: application/json` for JSON) and,
//! for a model with the `search` capability, the `google_search` tool (which cannot be
//! combined with a JSON mime type: such calls get the JSON instruction instead).
//! Answer: the non-thought `parts[].text` of `candidates[0]`; `promptFeedback.blockReason`
//! or a `finishReason` of SAFETY, RECITATION, PROHIBITED_CONTENT, BLOCKLIST or SPII is a
//! [`FailureClass::Refusal`]; `usageMetadata.promptTokenCount` in,
//! `candidatesTokenCount + thoughtsTokenCount` out (thinking is billed as output).
//! A 429's `RetryInfo.retryDelay` (`"30s"`) in `error.details` is its retry-after, and a
//! 400 `API_KEY_INVALID` a refused key: `http` reads both (on any provider's answer).

use cascade_proto::FailureClass;
use serde_json::{Map, Value, json};

use super::error::ModelError;
use super::provider::{HttpCall, KeyHeader, ProviderAdapter};
use super::request::{Answer, CallOptions, ModelRequest, output_cap, system_prompt, u64_at};
use cascade_core::models::{ModelDef, Provider};

const REFUSAL_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_SAFETY",
];

/// Google Gemini `generateContent`.
pub(crate) struct Gemini;

impl ProviderAdapter for Gemini {
    fn request(&self, def: &ModelDef, req: &ModelRequest, opts: &CallOptions) -> HttpCall {
        request(def, req, opts)
    }

    fn parse(&self, def: &ModelDef, v: &Value) -> Result<Answer, ModelError> {
        parse(def, v)
    }
}

fn request(def: &ModelDef, req: &ModelRequest, opts: &CallOptions) -> HttpCall {
    let base = def
        .base_url
        .as_deref()
        .or(Provider::Gemini.default_base_url())
        .unwrap_or_default();
    let id = def.model_id.trim_start_matches("models/");
    let search = def.capabilities.iter().any(|c| c == "search");
    let mime_json = req.json && !search;
    let system = system_prompt(req.system.as_deref(), req.json && !mime_json);
    let mut config = Map::new();
    config.insert("maxOutputTokens".into(), json!(output_cap(def, req)));
    if let Some(t) = opts.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if mime_json {
        config.insert("responseMimeType".into(), json!("application/json"));
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        json!([{"role": "user", "parts": [{"text": req.prompt}]}]),
    );
    if let Some(system) = system {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    body.insert("generationConfig".into(), Value::Object(config));
    if search {
        body.insert("tools".into(), json!([{"google_search": {}}]));
    }
    HttpCall {
        url: format!("{base}/v1beta/models/{id}:generateContent"),
        headers: Vec::new(),
        key_header: KeyHeader::XGoogApiKey,
        body: Value::Object(body),
    }
}

fn parse(def: &ModelDef, v: &Value) -> Result<Answer, ModelError> {
    let candidate = v.pointer("/candidates/0");
    let text: String = candidate
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let answer = Answer {
        text,
        input_tokens: u64_at(v, "/usageMetadata/promptTokenCount"),
        output_tokens: u64_at(v, "/usageMetadata/candidatesTokenCount")
            + u64_at(v, "/usageMetadata/thoughtsTokenCount"),
        stop_reason: candidate
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        cost_usd: None,
    };
    let refusal = |why: String| {
        Err(answer.failure(
            def,
            FailureClass::Refusal,
            format!("model `{}` declined to answer: {why}", def.name),
        ))
    };
    if let Some(block) = v
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
    {
        return refusal(format!("prompt blocked ({block})"));
    }
    if let Some(reason) = answer.stop_reason.as_deref()
        && REFUSAL_REASONS.contains(&reason)
    {
        return refusal(format!("finishReason {reason}"));
    }
    if answer.text.trim().is_empty() {
        let why = answer.stop_reason.as_deref().unwrap_or("no candidates");
        return Err(answer.failure(
            def,
            FailureClass::Malformed,
            format!("model `{}` returned no text ({why})", def.name),
        ));
    }
    Ok(answer)
}
