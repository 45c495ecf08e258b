//! [`ModelClient`]: one call to any model of the catalog, with the protections every
//! provider needs.
//!
//! ```text
//! complete(model, request, cancel)
//!   ├─ unknown model ─► unavailable (terminal); no key / no CLI ─► unavailable
//!   ├─ estimated prompt > context ─► context_overflow, no call
//!   └─ loop (at most 1 + retries calls)
//!        breaker open? ─► circuit_open (fail fast, retry_after = time left)
//!        rate limiter ─► wait for a permit (cancellable)
//!        one call under the model's timeout (HTTP or CLI agent)
//!        transient (rate_limited, overloaded, server)? ─► wait retry-after (≤ 30 s, else
//!          return it to the coordinator) or exponential backoff with jitter ─► again
//! ```
//!
//! The client is a cheap handle (`Arc` inside): one HTTP connection pool, one circuit
//! breaker per provider endpoint and one rate limiter per model, shared by every task of
//! the worker.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cascade_proto::{FailureClass, FailureKind, Usage};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use super::breaker::{BreakerConfig, Breakers, Outcome};
use super::cli;
use super::error::ModelError;
use super::http;
use super::request::{Answer, CallOptions, ModelRequest, request_tokens};
use cascade_core::models::ModelEnv;
use cascade_core::models::{ModelCatalog, ModelDef};

/// A model's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub text: String,
    /// Tokens of this call, its cost from the models file's prices (or the agent's own
    /// figure), `calls: 1`.
    pub usage: Usage,
    /// The catalog name of the model that answered.
    pub model: String,
    pub stop_reason: Option<String>,
}

/// How a client behaves; the defaults are for production, tests shorten the waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Where keys and `PATH` are read.
    pub env: ModelEnv,
    pub breaker: BreakerConfig,
    /// Extra calls after a transient failure.
    pub retries: u32,
    /// The first backoff; it doubles each time, plus up to as much again of jitter.
    pub backoff: Duration,
    /// A longer retry-after is not waited out here: the error goes back with it.
    pub max_retry_after: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            env: ModelEnv::process(),
            breaker: BreakerConfig::default(),
            retries: 2,
            backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Calls models of a catalog. Cheap to clone.
#[derive(Clone)]
pub struct ModelClient {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<ModelCatalog>,
    /// `Err` only if the TLS backend could not start; every HTTP call then fails.
    http: Result<reqwest::Client, reqwest::Error>,
    breakers: Breakers,
    limiters: BTreeMap<String, DefaultDirectRateLimiter>,
    options: ClientOptions,
    jitter_seed: AtomicU64,
}

impl fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelClient")
            .field("models", &self.inner.catalog.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ModelClient {
    pub fn new(catalog: Arc<ModelCatalog>) -> ModelClient {
        ModelClient::with_options(catalog, ClientOptions::default())
    }

    /// A client reading keys and `PATH` only from `env` (and overlaying it on CLI agents'
    /// environment), never from the process: for tests and embedders.
    pub fn with_env(catalog: Arc<ModelCatalog>, env: BTreeMap<String, String>) -> ModelClient {
        ModelClient::with_options(
            catalog,
            ClientOptions {
                env: ModelEnv::fixed(env),
                ..ClientOptions::default()
            },
        )
    }

    pub fn with_options(catalog: Arc<ModelCatalog>, options: ClientOptions) -> ModelClient {
        let http = crate::net::client_builder()
            .user_agent(concat!("cascade-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Keys travel in custom headers that a redirect would carry to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let limiters = catalog
            .names()
            .filter_map(|name| {
                let limit = catalog.get(name)?.rate_limit?;
                let burst = NonZeroU32::new(limit.count)?;
                let quota = Quota::with_period(limit.per / limit.count)?.allow_burst(burst);
                Some((name.to_owned(), RateLimiter::direct(quota)))
            })
            .collect();
        ModelClient {
            inner: Arc::new(Inner {
                http,
                breakers: Breakers::new(options.breaker),
                limiters,
                jitter_seed: AtomicU64::new(0),
                catalog,
                options,
            }),
        }
    }

    pub fn catalog(&self) -> &ModelCatalog {
        &self.inner.catalog
    }

    /// Where this client reads keys and `PATH`.
    pub fn env(&self) -> &ModelEnv {
        &self.inner.options.env
    }

    /// The models this client can serve here (see [`ModelCatalog::available`]).
    pub fn available(&self) -> Vec<String> {
        self.inner.catalog.available_in(&self.inner.options.env)
    }

    /// `model`'s definition if this client can call it now; else why not (unknown:
    /// terminal, listing the known names; no key or program: `unavailable`, retryable).
    pub fn servable(&self, model: &str) -> Result<&ModelDef, ModelError> {
        let catalog = &self.inner.catalog;
        let def = catalog.get(model).ok_or_else(|| {
            ModelError::terminal(
                FailureClass::Unavailable,
                format!(
                    "unknown model `{model}`; the models file defines {}",
                    catalog.names_list()
                ),
            )
        })?;
        match def.unavailable_reason(&self.inner.options.env) {
            Some(reason) => Err(ModelError::new(FailureClass::Unavailable, reason)),
            None => Ok(def),
        }
    }

    /// Asks `model` once, retrying transient failures (see the module docs).
    pub async fn complete(
        &self,
        model: &str,
        req: &ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        self.complete_with(model, req, &CallOptions::default(), cancel)
            .await
    }

    /// [`ModelClient::complete`] with sampling settings.
    pub async fn complete_with(
        &self,
        model: &str,
        req: &ModelRequest,
        opts: &CallOptions,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        let def = self.servable(model)?;
        let estimate = request_tokens(req);
        if estimate > def.context {
            return Err(ModelError::new(
                FailureClass::ContextOverflow,
                format!(
                    "the prompt (about {estimate} tokens, estimated) does not fit model `{}`'s \
                     context of {} tokens",
                    def.name, def.context
                ),
            ));
        }
        let options = &self.inner.options;
        let mut retry = 0;
        loop {
            let err = match self.call_once(def, req, opts, cancel).await {
                Ok(answer) => {
                    return Ok(Completion {
                        usage: answer.usage(def),
                        text: answer.text,
                        model: def.name.clone(),
                        stop_reason: answer.stop_reason,
                    });
                }
                Err(err) => err,
            };
            if !err.is_transient() || retry >= options.retries {
                return Err(err);
            }
            let wait = match err.retry_after {
                Some(wait) if wait > options.max_retry_after => return Err(err),
                Some(wait) => wait,
                None => self.backoff(retry),
            };
            tracing::debug!(
                model = %def.name, class = err.class.as_str(), retry = retry + 1,
                wait_ms = wait.as_millis() as u64, "model call failed, trying again: {}", err.message
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(ModelError::cancelled(&def.name)),
            }
            retry += 1;
        }
    }

    /// One call through the breaker and the rate limiter, under the model's timeout.
    async fn call_once(
        &self,
        def: &ModelDef,
        req: &ModelRequest,
        opts: &CallOptions,
        cancel: &CancellationToken,
    ) -> Result<Answer, ModelError> {
        let permit = self.inner.breakers.admit(&def.endpoint()).map_err(|wait| {
            let mut err = ModelError::new(
                FailureClass::CircuitOpen,
                format!(
                    "{} has failed repeatedly: not calling it for another {:.0?} (model `{}`)",
                    def.provider, wait, def.name
                ),
            );
            err.retry_after = Some(wait);
            err
        })?;
        if let Some(limiter) = self.inner.limiters.get(&def.name) {
            tokio::select! {
                _ = limiter.until_ready() => {}
                () = cancel.cancelled() => return Err(ModelError::cancelled(&def.name)),
            }
        }
        let result = if def.is_cli() {
            // The agent module enforces the timeout and cancellation itself: it must kill
            // the agent's whole process group, which dropping a future cannot do.
            cli::run(def, req, &self.inner.options.env, cancel).await
        } else {
            let call = self.http_call(def, req, opts);
            tokio::select! {
                r = tokio::time::timeout(def.timeout, call) => {
                    r.unwrap_or_else(|_| Err(ModelError::timeout(def)))
                }
                () = cancel.cancelled() => Err(ModelError::cancelled(&def.name)),
            }
        };
        let outcome = match &result {
            Ok(_) => Outcome::Up,
            Err(e) if e.is_transient() || e.kind == FailureKind::Timeout => Outcome::Down,
            Err(e) if e.kind == FailureKind::Cancelled => Outcome::Unknown,
            Err(_) => Outcome::Up,
        };
        permit.record(outcome);
        result
    }

    async fn http_call(
        &self,
        def: &ModelDef,
        req: &ModelRequest,
        opts: &CallOptions,
    ) -> Result<Answer, ModelError> {
        let http = self.inner.http.as_ref().map_err(|e| {
            ModelError::new(
                FailureClass::Unavailable,
                format!("cannot start the HTTP client: {e}"),
            )
        })?;
        let key = def
            .key_env
            .as_deref()
            .and_then(|var| self.inner.options.env.non_empty(var));
        http::call(http, def, req, opts, key.as_deref()).await
    }

    /// `backoff * 2^retry` plus up to as much again of jitter, so clients that failed
    /// together do not come back together.
    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .inner
            .options
            .backoff
            .saturating_mul(1 << retry.min(16));
        let seed = self.inner.jitter_seed.fetch_add(1, Ordering::Relaxed);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(seed);
        let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
        base + base.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn client() -> ModelClient {
        let catalog = ModelCatalog::parse(
            "models:
  limited: {provider: openai, model: m, context: 100, max_output: 50, rate_limit: 2/h}
  free: {provider: openai, model: m, context: 100}
",
            Path::new("models.yaml"),
        )
        .expect("catalog");
        ModelClient::new(Arc::new(catalog))
    }

    #[test]
    fn rate_limits_allow_a_burst_of_count_then_wait() {
        let client = client();
        let limiter = client.inner.limiters.get("limited").expect("a limiter");
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err(), "the third call in the hour waits");
        assert!(!client.inner.limiters.contains_key("free"));
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let client = client();
        for retry in 0..4 {
            let base = Duration::from_secs(1 << retry);
            let wait = client.backoff(retry);
            assert!(wait >= base && wait <= base * 2, "retry {retry}: {wait:?}");
        }
    }
}
