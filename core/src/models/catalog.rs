//! The models file: which model names exist, who serves them and what they cost.
//!
//! A [`ModelCatalog`] maps a name used in cascade files (`claude`, `gemini-megacontext`,
//! `codex-auto`, ...) to a [`ModelDef`]: the provider, the provider's model id, the context
//! limit, prices, where the key comes from, limits and the next model of the `fallback`
//! chain. It is loaded from YAML or JSON (`parse` below), reporting every problem as
//! `path:line:col: field: message`; the built-in catalog is `examples/models.yaml`,
//! compiled in.
//!
//! Invariants:
//! - every `fallback` names a model of the same catalog (checked at load);
//! - HTTP providers have a `base_url` and a model id; CLI providers have a program;
//! - a key's *name* is stored, never its value: values are read from the environment when
//!   a call is made.

mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ModelEnv;

/// Models files larger than this are refused without being parsed.
pub const MAX_MODELS_FILE_BYTES: u64 = 1024 * 1024;

/// Why a models file could not be read at all (before any of it is parsed).
#[derive(Debug, thiserror::Error)]
pub enum ModelsFileError {
    #[error("{}: cannot read models file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: models file is larger than the limit of {MAX_MODELS_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: models file is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
}

/// The environment variable naming a models file when none is given.
pub const MODELS_ENV: &str = "CASCADE_MODELS";

/// The default models file, compiled in.
const BUILTIN_MODELS: &str = include_str!("../../../examples/models.yaml");

/// Who serves a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions, or any server speaking it (Ollama, vLLM, llama.cpp).
    Openai,
    /// Google Gemini `generateContent`.
    Gemini,
    /// The `claude` CLI (Claude Code), `claude -p --output-format json`.
    ClaudeCli,
    /// The `codex` CLI, `codex exec --json`.
    CodexCli,
    /// The `gemini` CLI, `gemini -p --output-format json`.
    GeminiCli,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Anthropic,
        Provider::Openai,
        Provider::Gemini,
        Provider::ClaudeCli,
        Provider::CodexCli,
        Provider::GeminiCli,
    ];

    /// The name used in models files.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
            Provider::Gemini => "gemini",
            Provider::ClaudeCli => "claude-cli",
            Provider::CodexCli => "codex-cli",
            Provider::GeminiCli => "gemini-cli",
        }
    }

    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// A CLI agent run as a subprocess (rather than an HTTP API).
    pub fn is_cli(self) -> bool {
        matches!(
            self,
            Provider::ClaudeCli | Provider::CodexCli | Provider::GeminiCli
        )
    }

    /// The variable holding the API key when the file names none.
    pub fn default_key_env(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("ANTHROPIC_API_KEY"),
            Provider::Openai => Some("OPENAI_API_KEY"),
            Provider::Gemini => Some("GEMINI_API_KEY"),
            Provider::ClaudeCli | Provider::CodexCli | Provider::GeminiCli => None,
        }
    }

    /// The API's base URL when the file names none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::Openai => Some("https://api.openai.com/v1"),
            Provider::Gemini => Some("https://generativelanguage.googleapis.com"),
            Provider::ClaudeCli | Provider::CodexCli | Provider::GeminiCli => None,
        }
    }

    /// The CLI program when the file names none.
    pub fn default_command(self) -> Option<&'static str> {
        match self {
            Provider::ClaudeCli => Some("claude"),
            Provider::CodexCli => Some("codex"),
            Provider::GeminiCli => Some("gemini"),
            Provider::Anthropic | Provider::Openai | Provider::Gemini => None,
        }
    }

    /// The time limit of one call when the file names none: agents work for longer.
    fn default_timeout(self) -> Duration {
        if self.is_cli() {
            Duration::from_secs(600)
        } else {
            Duration::from_secs(120)
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most `count` calls per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_secs() {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{:?}", self.count, self.per),
        }
    }
}

/// One model of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    /// The name cascade files use.
    pub name: String,
    pub provider: Provider,
    /// The provider's model id; empty for a CLI agent's own default model.
    pub model_id: String,
    /// The context window in tokens.
    pub context: u64,
    /// The most output tokens one call may ask for.
    pub max_output: Option<u64>,
    /// `search`, `media`, `reasoning`, `code`.
    pub capabilities: Vec<String>,
    /// USD per 1,000 input tokens.
    pub price_in_per_1k: f64,
    /// USD per 1,000 output tokens.
    pub price_out_per_1k: f64,
    /// The variable holding the API key (HTTP providers); `None`: no key is sent.
    pub key_env: Option<String>,
    /// Whether a call needs the key (`false`: send it when set, e.g. a local server).
    pub key_required: bool,
    /// The API's base URL (HTTP providers).
    pub base_url: Option<String>,
    pub rate_limit: Option<RateLimit>,
    /// The time limit of one call.
    pub timeout: Duration,
    /// The next model of the model-switch chain.
    pub fallback: Option<String>,
    /// The program of a CLI agent: a name looked up on `PATH`, or a path.
    pub command: Option<String>,
    pub description: Option<String>,
}

impl ModelDef {
    /// What `input_tokens` in and `output_tokens` out cost, in USD.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 / 1000.0) * self.price_in_per_1k
            + (output_tokens as f64 / 1000.0) * self.price_out_per_1k
    }

    pub fn is_cli(&self) -> bool {
        self.provider.is_cli()
    }

    /// The CLI program (the file's `command`, else the provider's default).
    pub fn program(&self) -> &str {
        self.command
            .as_deref()
            .or(self.provider.default_command())
            .unwrap_or_default()
    }

    /// Why this model cannot be served with `env`, or `None` when it can: the key
    /// variable is unset or empty, or the CLI program is not found.
    pub fn unavailable_reason(&self, env: &ModelEnv) -> Option<String> {
        if self.is_cli() {
            let program = self.program();
            return env.find_program(program).is_none().then(|| {
                format!(
                    "model `{}` needs the `{program}` program ({}), which is not on PATH",
                    self.name, self.provider
                )
            });
        }
        match &self.key_env {
            Some(var) if self.key_required && env.non_empty(var).is_none() => Some(format!(
                "model `{}` ({}) needs an API key: set {var}",
                self.name, self.provider
            )),
            _ => None,
        }
    }

    /// The circuit breaker's key: calls to one endpoint fail together.
    pub fn endpoint(&self) -> String {
        match &self.base_url {
            Some(url) => format!("{}|{url}", self.provider),
            None => format!("{}|{}", self.provider, self.program()),
        }
    }
}

/// Every model this worker knows, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelCatalog {
    models: BTreeMap<String, ModelDef>,
    source: Option<PathBuf>,
}

impl ModelCatalog {
    /// The compiled-in catalog (`examples/models.yaml`). Never fails: the file is tested.
    pub fn builtin() -> ModelCatalog {
        ModelCatalog::parse(BUILTIN_MODELS, Path::new("<builtin>/models.yaml")).unwrap_or_else(
            |errors| {
                // Unreachable while `builtin_parses` passes; an empty catalog beats a panic.
                tracing::error!(?errors, "the built-in models file does not load");
                ModelCatalog::default()
            },
        )
    }

    /// Reads and parses a models file (YAML or JSON). Returns every problem, each as
    /// `path:line:col: field: message`.
    pub fn load(path: &Path) -> Result<ModelCatalog, Vec<String>> {
        let text = parse::read_bounded(path).map_err(|e| vec![e.to_string()])?;
        let mut catalog = ModelCatalog::parse(&text, path)?;
        catalog.source = Some(path.to_owned());
        Ok(catalog)
    }

    /// Parses a models file's text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<ModelCatalog, Vec<String>> {
        let models = parse::parse(text, origin)?;
        Ok(ModelCatalog {
            models,
            source: None,
        })
    }

    /// `path` when given, else the file named by `$CASCADE_MODELS`, else the built-in.
    pub fn from_env_or(path: Option<&Path>) -> Result<ModelCatalog, Vec<String>> {
        if let Some(path) = path {
            return ModelCatalog::load(path);
        }
        match std::env::var_os(MODELS_ENV) {
            Some(p) if !p.is_empty() => ModelCatalog::load(Path::new(&p)),
            _ => Ok(ModelCatalog::builtin()),
        }
    }

    /// The file the catalog came from; `None` for the built-in.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn get(&self, name: &str) -> Option<&ModelDef> {
        self.models.get(name)
    }

    /// Every model name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Models servable on this machine: the key variable is set and not empty (or no key
    /// is needed), or the CLI program is on `PATH`. Sorted by name.
    pub fn available(&self) -> Vec<String> {
        self.available_in(&ModelEnv::process())
    }

    /// [`ModelCatalog::available`] against a given environment.
    pub fn available_in(&self, env: &ModelEnv) -> Vec<String> {
        self.models
            .values()
            .filter(|m| m.unavailable_reason(env).is_none())
            .map(|m| m.name.clone())
            .collect()
    }

    /// The models `name` falls back to, in order, following `fallback` until a model
    /// repeats or the chain ends. Never contains `name`; empty for an unknown name.
    pub fn fallback_chain(&self, name: &str) -> Vec<String> {
        let mut seen = BTreeSet::from([name]);
        let mut chain = Vec::new();
        let mut next = self.get(name).and_then(|m| m.fallback.as_deref());
        while let Some(n) = next {
            if !seen.insert(n) {
                break;
            }
            let Some(def) = self.get(n) else { break };
            chain.push(def.name.clone());
            next = def.fallback.as_deref();
        }
        chain
    }

    /// The model with the smallest context that holds `needed_tokens` and is larger than
    /// `name`'s (ties broken by name). For an unknown `name`, any context that fits.
    pub fn larger_context_than(&self, name: &str, needed_tokens: u64) -> Option<String> {
        let current = self.get(name).map_or(0, |m| m.context);
        self.models
            .values()
            .filter(|m| m.name != name && m.context >= needed_tokens && m.context > current)
            .min_by(|a, b| a.context.cmp(&b.context).then_with(|| a.name.cmp(&b.name)))
            .map(|m| m.name.clone())
    }

    /// "`a`, `b`, `c`" for messages.
    pub fn names_list(&self) -> String {
        let names: Vec<String> = self.names().map(|n| format!("`{n}`")).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// A cheap token estimate: one token per 4 bytes of UTF-8, rounded up.
///
/// Real tokenizers average 3.5–4.5 bytes per token on English prose and code; the estimate
/// only decides whether a prompt can fit a context window or a budget before paying for a
/// call, and the provider's own count is what usage reports.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests;
