//! AI stages: one client for every model provider, and model skills. The models file
//! itself (`ModelCatalog`, `ModelEnv`) is pure data and lives in `cascade_core::models`.
//!
//! ```text
//!  models.yaml ─► catalog (ModelCatalog: name ─► ModelDef, every problem at file:line:col)
//!                    │
//!  skill file ──► skill::run ─► render prompt (cascade_eval) ─► budget check ─┐
//!  (prompt:)                                                                 ▼
//!                 ModelClient::complete(model, request, cancel)
//!                    │  breaker (per provider endpoint) ─► rate limiter (per model)
//!                    │  ─► one call with the model's timeout ─► classify ─► retry transient
//!                    ├─ http ─► anthropic / openai / gemini   one ProviderAdapter each;
//!                    │                                   HTTP (reqwest), keys from env
//!                    └─ cli                           claude / codex / gemini agents as
//!                                                     subprocesses in their own group
//! ```
//!
//! Invariants:
//! - every failure is a [`ModelError`] with a [`cascade_proto::FailureClass`], turned into a
//!   classified [`cascade_proto::Failure`] at the edge; nothing panics on a provider's answer;
//! - an API key's value never leaves the client: messages and bodies are redacted, header
//!   values are marked sensitive and never printed;
//! - where the environment is read (keys, `PATH`) goes through [`ModelEnv`], so tests can
//!   give each client its own environment instead of mutating the process's.

mod anthropic;
mod breaker;
mod cli;
mod client;
mod error;
mod gemini;
mod http;
mod json;
mod openai;
mod provider;
mod request;
pub mod skill;

pub use breaker::BreakerConfig;
pub use client::{ClientOptions, Completion, ModelClient};
pub use error::ModelError;
pub use json::extract_json;
pub use request::{CallOptions, DEFAULT_MAX_OUTPUT, ModelRequest};
pub use skill::{ModelOutput, ModelSkill, judge};
