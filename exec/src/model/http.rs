//! What the three HTTP providers share: sending one request with its key, reading a
//! bounded body, and classifying a non-2xx answer.
//!
//! Classification (the adapters add what is specific to their answers):
//!
//! | answer                                         | class             | kind      |
//! |------------------------------------------------|-------------------|-----------|
//! | 401, 403, a rejected key                       | auth              | terminal  |
//! | 429                                            | rate_limited      | retryable |
//! | 529, 503 or any 5xx saying "overloaded"        | overloaded        | retryable |
//! | other 5xx, transport errors                    | server            | retryable |
//! | 400/413 saying the prompt is too long          | context_overflow  | retryable |
//! | 404                                            | unavailable       | terminal  |
//! | other 4xx (a request the API will never take)  | malformed         | terminal  |
//!
//! `retry-after-ms`, `retry-after` (seconds or an HTTP date) and Gemini's `RetryInfo`
//! become the error's `retry_after`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cascade_proto::FailureClass;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::anthropic::Anthropic;
use super::error::{ModelError, redact, truncate_chars};
use super::gemini::Gemini;
use super::openai::OpenAi;
use super::provider::{KeyHeader, ProviderAdapter};
use super::request::{Answer, CallOptions, ModelRequest};
use cascade_core::models::{ModelDef, Provider};

/// Answers larger than this are cut off and treated as malformed.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Error bodies are quoted in messages up to this many characters.
const MAX_DETAIL_CHARS: usize = 600;

/// Sends one request to an HTTP provider and turns the answer into text or an error.
/// Every message that leaves has the key's value removed.
pub(crate) async fn call(
    http: &reqwest::Client,
    def: &ModelDef,
    req: &ModelRequest,
    opts: &CallOptions,
    key: Option<&str>,
) -> Result<Answer, ModelError> {
    let result = call_unredacted(http, def, req, opts, key).await;
    match key {
        Some(key) => result
            .map(|mut a| {
                a.text = redact(&a.text, key);
                a
            })
            .map_err(|e| e.redacted(key)),
        None => result,
    }
}

async fn call_unredacted(
    http: &reqwest::Client,
    def: &ModelDef,
    req: &ModelRequest,
    opts: &CallOptions,
    key: Option<&str>,
) -> Result<Answer, ModelError> {
    let adapter = adapter(def)?;
    let call = adapter.request(def, req, opts);
    let mut builder = http.post(&call.url).json(&call.body);
    for (name, value) in &call.headers {
        builder = builder.header(*name, *value);
    }
    if let Some(key) = key {
        let (name, value) = match call.key_header {
            KeyHeader::XApiKey => ("x-api-key", key.to_owned()),
            KeyHeader::Bearer => ("authorization", format!("Bearer {key}")),
            KeyHeader::XGoogApiKey => ("x-goog-api-key", key.to_owned()),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ModelError::terminal(
                FailureClass::Auth,
                format!(
                    "{} holds characters not allowed in an HTTP header",
                    key_var(def)
                ),
            )
        })?;
        value.set_sensitive(true);
        builder = builder.header(name, value);
    }
    let mut response = builder.send().await.map_err(|e| transport(def, &e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_body(&mut response)
        .await
        .map_err(|e| transport(def, &e))?;
    if !(200..300).contains(&status) {
        return Err(classify(def, status, &headers, &body));
    }
    let value: Value = serde_json::from_str(&body).map_err(|e| {
        ModelError::new(
            FailureClass::Malformed,
            format!(
                "{} answered {status} with a body that is not JSON: {e}",
                def.provider
            ),
        )
    })?;
    adapter.parse(def, &value)
}

/// The adapter of a model's provider; a CLI agent has none.
fn adapter(def: &ModelDef) -> Result<&'static dyn ProviderAdapter, ModelError> {
    match def.provider {
        Provider::Anthropic => Ok(&Anthropic),
        Provider::Openai => Ok(&OpenAi),
        Provider::Gemini => Ok(&Gemini),
        Provider::ClaudeCli | Provider::CodexCli | Provider::GeminiCli => {
            Err(ModelError::terminal(
                FailureClass::Malformed,
                format!("model `{}` is a CLI agent, not an HTTP API", def.name),
            ))
        }
    }
}

/// Reads the body up to [`MAX_RESPONSE_BYTES`].
async fn read_body(response: &mut reqwest::Response) -> Result<String, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn transport(def: &ModelDef, e: &reqwest::Error) -> ModelError {
    // The chain of sources says what actually happened (refused, reset, dns, tls).
    let mut message = format!("{} request failed: {e}", def.provider);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    ModelError::new(FailureClass::Server, message)
}

/// The name of the key variable for messages.
pub(crate) fn key_var(def: &ModelDef) -> String {
    def.key_env
        .clone()
        .unwrap_or_else(|| format!("the key of model `{}`", def.name))
}

/// Classifies a non-2xx answer.
pub(crate) fn classify(def: &ModelDef, status: u16, headers: &HeaderMap, body: &str) -> ModelError {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let detail = error_detail(json.as_ref(), body);
    let lower = body.to_lowercase();
    let provider = def.provider;
    let retry_after =
        retry_after(headers, SystemTime::now()).or_else(|| json.as_ref().and_then(retry_delay));
    let mut err = match status {
        401 | 403 => auth_refused(def, status, &detail),
        400 if is_bad_key(&lower) => auth_refused(def, status, &detail),
        429 if lower.contains("insufficient_quota") => ModelError::terminal(
            FailureClass::Auth,
            format!(
                "{} has no quota left at {provider} ({status}): {detail}",
                key_var(def)
            ),
        ),
        429 => ModelError::new(
            FailureClass::RateLimited,
            format!("{provider} rate limit ({status}): {detail}"),
        ),
        529 => ModelError::new(
            FailureClass::Overloaded,
            format!("{provider} is overloaded ({status}): {detail}"),
        ),
        500..=599 if status == 503 || lower.contains("overloaded") => ModelError::new(
            FailureClass::Overloaded,
            format!("{provider} is overloaded ({status}): {detail}"),
        ),
        500..=599 => ModelError::new(
            FailureClass::Server,
            format!("{provider} server error ({status}): {detail}"),
        ),
        400 | 413 | 422 if is_context_overflow(&lower) => ModelError::new(
            FailureClass::ContextOverflow,
            format!(
                "the prompt does not fit model `{}` ({} tokens of context): {detail}",
                def.name, def.context
            ),
        ),
        404 => ModelError::terminal(
            FailureClass::Unavailable,
            format!(
                "{provider} does not serve model id `{}` ({status}): {detail}",
                def.model_id
            ),
        ),
        _ => ModelError::terminal(
            FailureClass::Malformed,
            format!("{provider} refused the request ({status}): {detail}"),
        ),
    };
    if err.class == FailureClass::RateLimited || err.class == FailureClass::Overloaded {
        err.retry_after = retry_after;
    }
    err
}

fn auth_refused(def: &ModelDef, status: u16, detail: &str) -> ModelError {
    let who = match &def.key_env {
        Some(var) => format!("{var} was refused by {}", def.provider),
        None => format!("{} refused the request without a key", def.provider),
    };
    ModelError::terminal(FailureClass::Auth, format!("{who} ({status}): {detail}"))
}

/// Wording providers (and compatible servers) use for a prompt over the context window.
fn is_context_overflow(lower_body: &str) -> bool {
    const PATTERNS: &[&str] = &[
        "prompt is too long",                   // anthropic
        "context_length_exceeded",              // openai code
        "maximum context length",               // openai, vllm
        "exceeds the maximum number of tokens", // gemini
        "input token count",                    // gemini
        "context window",                       // generic
        "exceeds the available context size",   // llama.cpp
        "too many tokens",
    ];
    PATTERNS.iter().any(|p| lower_body.contains(p))
}

/// The provider's own error message (`error.message`, `error` as a string, `message`),
/// else the start of the body.
fn error_detail(json: Option<&Value>, body: &str) -> String {
    let from_json = json.and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_owned());
    let text = if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    };
    truncate_chars(&text, MAX_DETAIL_CHARS)
}

/// Gemini's `RetryInfo.retryDelay` of an error body, e.g. `"30s"` or `"1.5s"`.
fn retry_delay(v: &Value) -> Option<Duration> {
    v.pointer("/error/details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|s| s.trim().strip_suffix('s')?.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// Gemini answers a bad key with 400 `API_KEY_INVALID`, not 401.
fn is_bad_key(lower_body: &str) -> bool {
    lower_body.contains("api_key_invalid") || lower_body.contains("api key not valid")
}

/// `retry-after-ms` (OpenAI), else `retry-after` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// An HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`) as seconds since the epoch.
pub(crate) fn parse_http_date(s: &str) -> Option<u64> {
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(
            parse_http_date("Sun, 29 Feb 2032 12:00:00 GMT"),
            Some(1_961_668_800)
        );
        for bad in [
            "",
            "yesterday",
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let table: &[(&str, &str, Option<Duration>)] = &[
            ("retry-after", "7", Some(Duration::from_secs(7))),
            ("retry-after", "1.5", Some(Duration::from_millis(1500))),
            (
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT",
                Some(Duration::from_secs(10)),
            ),
            (
                "retry-after",
                "Wed, 21 Oct 2015 07:27:00 GMT",
                Some(Duration::ZERO),
            ),
            ("retry-after-ms", "250", Some(Duration::from_millis(250))),
            ("retry-after", "soon", None),
        ];
        for (name, value, want) in table {
            let mut headers = HeaderMap::new();
            headers.insert(*name, HeaderValue::from_static(value));
            assert_eq!(retry_after(&headers, now), *want, "{name}: {value}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("key sk-123 and sk-123", "sk-123"),
            "key [redacted] and [redacted]"
        );
        assert_eq!(redact("nothing", "sk-123"), "nothing");
        assert_eq!(redact("x", ""), "x");
    }

    #[test]
    fn details_and_truncation() {
        let v = serde_json::json!({"error": {"message": "bad"}});
        assert_eq!(error_detail(Some(&v), "ignored"), "bad");
        assert_eq!(error_detail(None, "  plain text "), "plain text");
        assert_eq!(error_detail(None, ""), "(empty body)");
        assert_eq!(truncate_chars("ééé", 2), "éé…");
    }
}
