//! The one interface of an HTTP provider ([`ProviderAdapter`]) and the request
//! it builds ([`HttpCall`]). Each provider is one adapter in its own file
//! (`anthropic`, `openai`, `gemini`); `http` picks the adapter for a model's
//! provider in one exhaustive match and does the sending and classifying every
//! provider shares, so no adapter imports `http`.

use cascade_core::models::ModelDef;
use serde_json::Value;

use super::error::ModelError;
use super::request::{Answer, CallOptions, ModelRequest};

/// What is specific to one HTTP API: the request it takes and how to read
/// its 2xx answer. Everything else (keys, transport, bounded bodies, error
/// classification, redaction) is `http`'s.
pub(crate) trait ProviderAdapter: Sync {
    /// The request for one prompt.
    fn request(&self, def: &ModelDef, req: &ModelRequest, opts: &CallOptions) -> HttpCall;
    /// The answer of a 2xx reply (already JSON), or why it is not one.
    fn parse(&self, def: &ModelDef, v: &Value) -> Result<Answer, ModelError>;
}

/// How the key travels.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyHeader {
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
    /// `Authorization: Bearer KEY` (OpenAI and compatible servers).
    Bearer,
    /// `x-goog-api-key: KEY` (Gemini): never in the URL, where logs would keep it.
    XGoogApiKey,
}

/// One request as a provider module builds it.
#[derive(Debug)]
pub(crate) struct HttpCall {
    pub url: String,
    pub headers: Vec<(&'static str, &'static str)>,
    pub key_header: KeyHeader,
    pub body: Value,
}
