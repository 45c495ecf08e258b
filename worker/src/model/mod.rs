//! AI stages: the models file, one client for every model provider, and model skills.
//!
//! ```text
//!  models.yaml ─► catalog (ModelCatalog: name ─► ModelDef, every problem at file:line:col)
//!                    │
//!  skill file ──► skill::run ─► render prompt (cascade_eval) ─► budget check ─┐
//!  (prompt:)                                                                 ▼
//!                 ModelClient::complete(model, request, cancel)
//!                    │  breaker (per provider endpoint) ─► rate limiter (per model)
//!                    │  ─► one call with the model's timeout ─► classify ─► retry transient
//!                    ├─ anthropic / openai / gemini   HTTP (reqwest), keys from env
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
mod catalog;
mod cli;
mod client;
mod gemini;
mod http;
mod json;
mod openai;
pub mod skill;

pub use breaker::BreakerConfig;
pub use catalog::{ModelCatalog, ModelDef, Provider, RateLimit, estimate_tokens};
pub use client::{
    CallOptions, ClientOptions, Completion, DEFAULT_MAX_OUTPUT, ModelClient, ModelError,
    ModelRequest,
};
pub use json::extract_json;
pub use skill::{ModelOutput, ModelSkill, judge};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a client reads API keys and `PATH`: the process environment, or a fixed map
/// (tests, embedders) that is also overlaid on the environment of CLI agents.
#[derive(Clone, Debug, Default)]
pub struct ModelEnv {
    fixed: Option<BTreeMap<String, String>>,
}

impl ModelEnv {
    /// The process environment.
    pub fn process() -> Self {
        ModelEnv { fixed: None }
    }

    /// Only the given variables (nothing is read from the process environment).
    pub fn fixed(vars: BTreeMap<String, String>) -> Self {
        ModelEnv { fixed: Some(vars) }
    }

    /// A variable's value; `None` when unset or not valid UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        match &self.fixed {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// A variable's value when it is set and not blank.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).filter(|v| !v.trim().is_empty())
    }

    /// Variables to add to a child's inherited environment.
    pub(crate) fn overlay(&self) -> impl Iterator<Item = (&String, &String)> {
        self.fixed.iter().flat_map(|m| m.iter())
    }

    fn path_var(&self) -> Option<OsString> {
        match &self.fixed {
            Some(vars) => vars.get("PATH").map(OsString::from),
            None => std::env::var_os("PATH"),
        }
    }

    /// Resolves a program the way a shell would: a name with a `/` is taken as a path,
    /// anything else is searched on `PATH`. Only executable regular files count.
    pub fn find_program(&self, program: &str) -> Option<PathBuf> {
        if program.is_empty() {
            return None;
        }
        if program.contains('/') {
            let p = Path::new(program);
            return is_executable(p).then(|| p.to_owned());
        }
        let path = self.path_var()?;
        std::env::split_paths(&path)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
