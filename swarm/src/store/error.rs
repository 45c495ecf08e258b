//! Store errors, classified where they happen: retryable (a timeout, a
//! broken connection, a server busy or electing a leader: try again with
//! backoff) or terminal (an invalid key, a missing stream, a value that
//! does not decode: retrying changes nothing, so give up loudly).

use async_nats::jetstream::{context, kv, object_store, stream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Retryable,
    Terminal,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} `{key}`: {source}")]
    Nats {
        op: &'static str,
        key: String,
        class: Class,
        #[source]
        source: BoxError,
    },
    #[error("{what} `{key}` does not decode: {source}")]
    Decode {
        what: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("{what} `{key}` cannot be encoded: {source}")]
    Encode {
        what: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("{what} `{key}` is missing")]
    Missing { what: &'static str, key: String },
    #[error("{what} `{key}` is {size} bytes, over the {limit} byte limit")]
    TooLarge {
        what: &'static str,
        key: String,
        size: usize,
        limit: usize,
    },
    #[error("the watch of {what} ended")]
    WatchEnded { what: String },
    #[error("{what} `{key}` kept changing under {tries} compare-and-set attempts")]
    Contended {
        what: &'static str,
        key: String,
        tries: usize,
    },
}

impl StoreError {
    /// Whether the operation may succeed if tried again later. A broker
    /// that is unavailable ([`Self::is_broker_unavailable`]) always is, even
    /// when the kind alone looks terminal (a JetStream disabled after a
    /// full disk answers publishes with "no responders", which async-nats
    /// reports as a missing stream).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Nats { class, .. } => {
                *class == Class::Retryable || self.is_broker_unavailable()
            }
            StoreError::WatchEnded { .. } | StoreError::Contended { .. } => true,
            StoreError::Decode { .. }
            | StoreError::Encode { .. }
            | StoreError::Missing { .. }
            | StoreError::TooLarge { .. } => false,
        }
    }

    /// Whether the error says JetStream itself is unavailable (a timeout, no
    /// responders or a 503, storage or resources exhausted, JetStream
    /// disabled or without a leader), as opposed to a problem with this
    /// one operation. Such a failure is the broker's, not the caller's:
    /// back off and try again, and say that the broker is degraded.
    pub fn is_broker_unavailable(&self) -> bool {
        let StoreError::Nats { source, .. } = self else {
            return false;
        };
        // The kinds are spread over a dozen error types (and many wrap the
        // server's JetStream error code in `Other`): the whole source chain's
        // text is the one place they all show.
        let mut text = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(e) = next {
            text.push_str(&e.to_string().to_ascii_lowercase());
            text.push('\n');
            next = e.source();
        }
        broker_unavailable_text(&text)
    }

    /// A NATS error, classified by its kind.
    pub fn nats<K>(op: &'static str, key: impl Into<String>, e: async_nats::error::Error<K>) -> Self
    where
        K: Classify
            + Clone
            + std::fmt::Debug
            + std::fmt::Display
            + PartialEq
            + Send
            + Sync
            + 'static,
    {
        StoreError::Nats {
            op,
            key: key.into(),
            class: e.kind().class(),
            source: Box::new(e),
        }
    }

    pub fn decode(
        what: &'static str,
        key: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Decode {
            what,
            key: key.into(),
            source: Box::new(e),
        }
    }

    pub fn encode(
        what: &'static str,
        key: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Encode {
            what,
            key: key.into(),
            source: Box::new(e),
        }
    }
}

/// Whether an error's text (lowercase) names an unavailable broker.
pub(crate) fn broker_unavailable_text(text: &str) -> bool {
    const SIGNS: &[&str] = &[
        "timed out",
        "timeout",
        "didn't receive ack in time",
        "no responders",
        "503",
        "insufficient resources",
        "insufficient storage",
        "no space left",
        "resource limits exceeded",
        "storage",
        "jetstream not enabled",
        "jetstream system temporarily unavailable",
        "temporarily unavailable",
        "no suitable peers",
        "leader not found",
        "no leader",
        // During a stream leader election a publish can find no stream for
        // its subject (seen on a 3-node cluster); the streams exist (setup
        // made them), so this passes: retried, with the degraded mark.
        "no stream found",
        "disconnected",
        "connection closed",
        "broken pipe",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

/// The class of an error kind: the few kinds that retrying cannot fix are
/// terminal, everything else (timeouts, publish and ack failures, request
/// errors while a leader is elected) is retryable.
pub trait Classify {
    fn class(&self) -> Class;
}

macro_rules! terminal_kinds {
    ($($kind:ty => [$($variant:pat),+];)*) => {$(
        impl Classify for $kind {
            #[allow(unreachable_patterns)]
            fn class(&self) -> Class {
                match self {
                    $($variant)|+ => Class::Terminal,
                    _ => Class::Retryable,
                }
            }
        }
    )*};
}

terminal_kinds! {
    kv::CreateErrorKind => [Self::InvalidKey];
    kv::PutErrorKind => [Self::InvalidKey];
    kv::EntryErrorKind => [Self::InvalidKey];
    kv::UpdateErrorKind => [Self::InvalidKey];
    kv::WatchErrorKind => [Self::InvalidKey];
    kv::WatcherErrorKind => [Self::Consumer];
    context::PublishErrorKind => [Self::StreamNotFound, Self::MaxPayloadExceeded];
    stream::DirectGetErrorKind => [Self::InvalidSubject];
    stream::LastRawMessageErrorKind => [Self::InvalidSubject];
    stream::DeleteMessageErrorKind => [Self::JetStream(_)];
    object_store::GetErrorKind => [Self::InvalidName, Self::BucketLink];
    object_store::PutErrorKind => [Self::InvalidName];
    async_nats::SubscribeErrorKind => [Self::InvalidSubject];
    async_nats::client::PublishErrorKind => [Self::InvalidSubject, Self::MaxPayloadExceeded];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(text: &str, class: Class) -> StoreError {
        StoreError::Nats {
            op: "put",
            key: "k".into(),
            class,
            source: text.to_owned().into(),
        }
    }

    #[test]
    fn broker_faults_are_unavailable_and_retryable() {
        for text in [
            "timed out: didn't receive ack in time",
            "jetstream error: insufficient resources (code 503, error code 10023)",
            "no responders",
            "JetStream system temporarily unavailable",
            "write: no space left on device",
            "jetstream not enabled",
        ] {
            // A disabled JetStream answers a publish with no responders,
            // which async-nats calls a missing stream: terminal by kind.
            let e = nats(text, Class::Terminal);
            assert!(e.is_broker_unavailable(), "{text}");
            assert!(e.is_retryable(), "{text}");
        }
    }

    #[test]
    fn operation_faults_are_not_broker_faults() {
        for text in [
            "invalid key",
            "wrong last sequence: 4",
            "maximum payload exceeded",
        ] {
            let e = nats(text, Class::Terminal);
            assert!(!e.is_broker_unavailable(), "{text}");
            assert!(!e.is_retryable(), "{text}");
        }
        let contended = StoreError::Contended {
            what: "claim",
            key: "k".into(),
            tries: 3,
        };
        assert!(contended.is_retryable() && !contended.is_broker_unavailable());
        let missing = StoreError::Missing {
            what: "object",
            key: "k".into(),
        };
        assert!(!missing.is_retryable() && !missing.is_broker_unavailable());
    }
}
