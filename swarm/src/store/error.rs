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
    /// Whether the operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Nats { class, .. } => *class == Class::Retryable,
            StoreError::WatchEnded { .. } | StoreError::Contended { .. } => true,
            StoreError::Decode { .. }
            | StoreError::Encode { .. }
            | StoreError::Missing { .. }
            | StoreError::TooLarge { .. } => false,
        }
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
