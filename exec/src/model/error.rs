//! [`ModelError`]: why a model call failed, classified where it happens (the
//! provider's answer, the agent's exit, the breaker, the client's own checks),
//! and the text helpers every message goes through (redaction, truncation).

use std::time::Duration;

use cascade_core::models::ModelDef;
use cascade_proto::{Failure, FailureClass, FailureKind, Usage};

/// Why a call failed, classified.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", class.as_str())]
pub struct ModelError {
    /// Retry policy for the engine: retryable, terminal, timeout or cancelled.
    pub kind: FailureKind,
    pub class: FailureClass,
    pub message: String,
    /// The provider (or the breaker) asked to wait this long.
    pub retry_after: Option<Duration>,
    /// Tokens spent by the failed call, if any (a refusal still costs its prompt).
    pub usage: Option<Usage>,
}

impl ModelError {
    /// An error of `class` with the class's usual retry policy: `auth` and `budget` are
    /// terminal, everything else retryable (the coordinator's model switch reacts to the
    /// class; `unavailable` here means "not on this worker", which another may serve).
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        let kind = match class {
            FailureClass::Auth | FailureClass::Budget => FailureKind::Terminal,
            _ => FailureKind::Retryable,
        };
        ModelError {
            kind,
            class,
            message: message.into(),
            retry_after: None,
            usage: None,
        }
    }

    /// An error no retry can fix (a bad request, an unknown model).
    pub fn terminal(class: FailureClass, message: impl Into<String>) -> Self {
        ModelError {
            kind: FailureKind::Terminal,
            ..ModelError::new(class, message)
        }
    }

    pub(crate) fn timeout(def: &ModelDef) -> Self {
        ModelError {
            kind: FailureKind::Timeout,
            ..ModelError::new(
                FailureClass::Server,
                format!(
                    "model `{}` did not answer within {:.0?} (its timeout)",
                    def.name, def.timeout
                ),
            )
        }
    }

    pub(crate) fn cancelled(model: &str) -> Self {
        ModelError {
            kind: FailureKind::Cancelled,
            ..ModelError::new(
                FailureClass::Other,
                format!("call to model `{model}` cancelled"),
            )
        }
    }

    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Rate limits, overload and server errors: worth another call soon.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Retryable
            && matches!(
                self.class,
                FailureClass::RateLimited | FailureClass::Overloaded | FailureClass::Server
            )
    }

    pub(crate) fn redacted(mut self, key: &str) -> Self {
        self.message = redact(&self.message, key);
        self
    }

    /// The failure as data for a task result: the kind decides retries, the class lets
    /// the coordinator switch models, `retry_after_ms` lets it wait out a rate limit.
    pub fn into_failure(self) -> Failure {
        let mut failure = Failure::new(self.kind, self.message);
        if self.kind != FailureKind::Cancelled {
            failure.class = Some(self.class);
        }
        failure.retry_after_ms = self
            .retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        failure
    }
}

pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Removes every occurrence of `key` from `text`.
pub(crate) fn redact(text: &str, key: &str) -> String {
    if key.is_empty() || !text.contains(key) {
        text.to_owned()
    } else {
        text.replace(key, "[redacted]")
    }
}
