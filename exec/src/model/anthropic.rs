//! Anthropic Messages API: `POST {base}/v1/messages`.
//!
//! Request: `model`, `max_tokens`, optional `system` and `temperature`, one user message.
//! Answer: the `text` blocks of `content`, `usage.input_tokens` (plus cache reads and
//! writes, which are input too) and `usage.output_tokens`, `stop_reason` (`refusal` is a
//! [`FailureClass::Refusal`]). There is no JSON mode: asking for JSON adds an instruction
//! to the system prompt, and the skill extracts and checks the JSON.

use cascade_proto::FailureClass;
use serde_json::{Map, Value, json};

use super::error::ModelError;
use super::provider::{HttpCall, KeyHeader, ProviderAdapter};
use super::request::{Answer, CallOptions, ModelRequest, output_cap, system_prompt, u64_at};
use cascade_core::models::ModelDef;

pub(crate) const API_VERSION: &str = "2023-06-01";

/// The Anthropic Messages API.
pub(crate) struct Anthropic;

impl ProviderAdapter for Anthropic {
    fn request(&self, def: &ModelDef, req: &ModelRequest, opts: &CallOptions) -> HttpCall {
        request(def, req, opts)
    }

    fn parse(&self, def: &ModelDef, v: &Value) -> Result<Answer, ModelError> {
        parse(def, v)
    }
}

fn request(def: &ModelDef, req: &ModelRequest, opts: &CallOptions) -> HttpCall {
    let mut body = Map::new();
    body.insert("model".into(), json!(def.model_id));
    body.insert("max_tokens".into(), json!(output_cap(def, req)));
    let system = system_prompt(req.system.as_deref(), req.json);
    if let Some(system) = system {
        body.insert("system".into(), json!(system));
    }
    if let Some(t) = opts.temperature {
        body.insert("temperature".into(), json!(t));
    }
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": req.prompt}]),
    );
    HttpCall {
        url: format!("{}/v1/messages", base(def)),
        headers: vec![("anthropic-version", API_VERSION)],
        key_header: KeyHeader::XApiKey,
        body: Value::Object(body),
    }
}

fn base(def: &ModelDef) -> &str {
    def.base_url
        .as_deref()
        .unwrap_or("https://api.anthropic.com")
}

fn parse(def: &ModelDef, v: &Value) -> Result<Answer, ModelError> {
    let text: String = v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    let answer = Answer {
        text,
        input_tokens: u64_at(v, "/usage/input_tokens")
            + u64_at(v, "/usage/cache_creation_input_tokens")
            + u64_at(v, "/usage/cache_read_input_tokens"),
        output_tokens: u64_at(v, "/usage/output_tokens"),
        stop_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cost_usd: None,
    };
    if answer.stop_reason.as_deref() == Some("refusal") {
        return Err(answer.failure(
            def,
            FailureClass::Refusal,
            format!(
                "model `{}` declined to answer (stop_reason refusal)",
                def.name
            ),
        ));
    }
    if answer.text.trim().is_empty() {
        let why = answer.stop_reason.as_deref().unwrap_or("none");
        return Err(answer.failure(
            def,
            FailureClass::Malformed,
            format!("model `{}` returned no text (stop_reason {why})", def.name),
        ));
    }
    Ok(answer)
}
