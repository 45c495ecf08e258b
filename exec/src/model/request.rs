//! What one model call is, whichever provider serves it: the request and its
//! sampling options, the output cap, and the [`Answer`] a provider reads out of
//! a successful reply. The HTTP adapters, the CLI agents and the client all
//! speak it, so none of them imports another for it.

use std::path::PathBuf;

use cascade_core::models::{ModelDef, estimate_tokens};
use cascade_proto::{FailureClass, Usage};
use serde_json::Value;

use super::error::ModelError;

/// The output cap when neither the request nor the models file gives one.
pub const DEFAULT_MAX_OUTPUT: u64 = 4096;

/// One prompt for one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelRequest {
    pub system: Option<String>,
    pub prompt: String,
    /// At most this many output tokens (also capped by the model's `max_output`).
    pub max_output_tokens: Option<u64>,
    /// Ask for a JSON answer (the provider's JSON mode where it has one).
    pub json: bool,
    /// Where a CLI agent runs (it may read and change files there).
    pub workdir: Option<PathBuf>,
}

/// Sampling settings passed through to the provider ([`ModelClient::complete_with`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallOptions {
    /// Ignored by CLI agents, which have no flag for it.
    pub temperature: Option<f64>,
}

/// Appended to the system prompt when the caller wants JSON.
pub(crate) const JSON_INSTRUCTION: &str =
    "Answer with a single valid JSON value and nothing else: no prose, no code fences.";

/// The system prompt to send: `system`, with [`JSON_INSTRUCTION`] after it when
/// `instruct_json` (a JSON answer the provider has no JSON mode for, or one it
/// wants to be told about).
pub(crate) fn system_prompt(system: Option<&str>, instruct_json: bool) -> Option<String> {
    match (system, instruct_json) {
        (Some(s), true) => Some(format!("{s}\n\n{JSON_INSTRUCTION}")),
        (Some(s), false) => Some(s.to_owned()),
        (None, true) => Some(JSON_INSTRUCTION.to_owned()),
        (None, false) => None,
    }
}

/// What a provider module reads out of a 2xx answer.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop_reason: Option<String>,
    /// A cost the provider reported itself (CLI agents); else computed from prices.
    pub cost_usd: Option<f64>,
}

impl Answer {
    pub(crate) fn usage(&self, def: &ModelDef) -> Usage {
        usage(def, self.input_tokens, self.output_tokens, self.cost_usd)
    }

    /// A failure of this answer (a refusal, no text), which still used tokens.
    pub(crate) fn failure(
        &self,
        def: &ModelDef,
        class: FailureClass,
        message: impl Into<String>,
    ) -> ModelError {
        ModelError::new(class, message).with_usage(self.usage(def))
    }
}

/// Usage of one call, its cost from the reported figure or the models file's prices.
pub(crate) fn usage(def: &ModelDef, input: u64, output: u64, reported: Option<f64>) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cost_usd: reported
            .filter(|c| c.is_finite() && *c >= 0.0)
            .unwrap_or_else(|| def.cost(input, output)),
        calls: 1,
    }
}

/// The estimated tokens of a request's prompt and system prompt.
pub(crate) fn request_tokens(req: &ModelRequest) -> u64 {
    estimate_tokens(&req.prompt) + req.system.as_deref().map_or(0, estimate_tokens)
}

/// The output tokens to ask for: the request's cap, else the model's, else
/// [`DEFAULT_MAX_OUTPUT`]; never more than the model's `max_output`.
pub(crate) fn output_cap(def: &ModelDef, req: &ModelRequest) -> u64 {
    let wanted = req
        .max_output_tokens
        .or(def.max_output)
        .unwrap_or(DEFAULT_MAX_OUTPUT);
    def.max_output.map_or(wanted, |m| wanted.min(m)).max(1)
}

/// A `u64` field of a JSON object, 0 when absent.
pub(crate) fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cascade_core::models::ModelCatalog;

    use super::*;

    #[test]
    fn output_caps() {
        let catalog = ModelCatalog::parse(
            "models:
  limited: {provider: openai, model: m, context: 100, max_output: 50}
  free: {provider: openai, model: m, context: 100}
",
            Path::new("models.yaml"),
        )
        .expect("catalog");
        let limited = catalog.get("limited").expect("limited");
        let free = catalog.get("free").expect("free");
        let req = |cap| ModelRequest {
            max_output_tokens: cap,
            ..ModelRequest::default()
        };
        assert_eq!(output_cap(limited, &req(None)), 50);
        assert_eq!(output_cap(limited, &req(Some(10))), 10);
        assert_eq!(output_cap(limited, &req(Some(500))), 50);
        assert_eq!(output_cap(free, &req(None)), DEFAULT_MAX_OUTPUT);
        assert_eq!(output_cap(free, &req(Some(0))), 1);
    }
}
