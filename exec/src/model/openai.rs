//! OpenAI Chat Completions: `POST {base}/chat/completions`, and every server that speaks
//! it (Ollama, vLLM, llama.cpp) through `base_url`.
//!
//! Request: `model`, `messages` (system, user), the output cap, optional `temperature`,
//! and `response_format: {"type": "json_object"}` for JSON (whose rule that a message
//! mentions JSON the added instruction satisfies). OpenAI's own API takes the cap as
//! `max_completion_tokens` (reasoning models refuse `max_tokens`); other servers get
//! `max_tokens`, which all of them understand.
//! Answer: `choices[0].message.content`; `message.refusal` or `finish_reason:
//! content_filter` is a [`FailureClass::Refusal`]; `usage.prompt_tokens` and
//! `usage.completion_tokens`.

use cascade_proto::FailureClass;
use serde_json::{Map, Value, json};

use super::error::ModelError;
use super::provider::{HttpCall, KeyHeader, ProviderAdapter};
use super::request::{Answer, CallOptions, ModelRequest, output_cap, system_prompt, u64_at};
use cascade_core::models::{ModelDef, Provider};

/// OpenAI Chat Completions and the servers that speak it.
pub(crate) struct OpenAi;

impl ProviderAdapter for OpenAi {
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
        .or(Provider::Openai.default_base_url())
        .unwrap_or_default();
    let mut messages = Vec::new();
    let system = system_prompt(req.system.as_deref(), req.json);
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": req.prompt}));
    let mut body = Map::new();
    body.insert("model".into(), json!(def.model_id));
    body.insert("messages".into(), Value::Array(messages));
    let cap_field = if base.starts_with("https://api.openai.com") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    body.insert(cap_field.into(), json!(output_cap(def, req)));
    if let Some(t) = opts.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if req.json {
        body.insert("response_format".into(), json!({"type": "json_object"}));
    }
    HttpCall {
        url: format!("{base}/chat/completions"),
        headers: Vec::new(),
        key_header: KeyHeader::Bearer,
        body: Value::Object(body),
    }
}

fn parse(def: &ModelDef, v: &Value) -> Result<Answer, ModelError> {
    let choice = v.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        // Some compatible servers send a list of parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let answer = Answer {
        text,
        input_tokens: u64_at(v, "/usage/prompt_tokens"),
        output_tokens: u64_at(v, "/usage/completion_tokens"),
        stop_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        cost_usd: None,
    };
    let refusal = message
        .and_then(|m| m.get("refusal"))
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty());
    if let Some(refusal) = refusal {
        return Err(answer.failure(
            def,
            FailureClass::Refusal,
            format!("model `{}` declined to answer: {refusal}", def.name),
        ));
    }
    if answer.stop_reason.as_deref() == Some("content_filter") {
        return Err(answer.failure(
            def,
            FailureClass::Refusal,
            format!(
                "model `{}`'s answer was withheld by the content filter",
                def.name
            ),
        ));
    }
    if answer.text.trim().is_empty() {
        let why = answer.stop_reason.as_deref().unwrap_or("none");
        return Err(answer.failure(
            def,
            FailureClass::Malformed,
            format!(
                "model `{}` returned no text (finish_reason {why})",
                def.name
            ),
        ));
    }
    Ok(answer)
}
