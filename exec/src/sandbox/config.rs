//! The loop's settings, read from a task's inputs.
//!
//! Every field has a top-level input; the stage-level spellings of the cascade format are
//! accepted too, nested under `codex_config` or `fix_strategy` / `error_recovery`
//! (`max_iterations`, `network_disabled`, `regression_check`, `sandbox`,
//! `sandbox_isolated`, `escalate_after`). A top-level input wins. Every error names the
//! field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::backend::{self, Backend, BackendError, SandboxMode};
use super::report::Framework;
use cascade_core::duration::DurationError;

pub const DEFAULT_MAX_ITERATIONS: u32 = 5;
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_FILE_SIZE: u64 = 1 << 30;
pub const DEFAULT_PROCESSES: u32 = 512;
/// Never copied into the sandbox, never diffed, never written by a fix.
pub const DEFAULT_EXCLUDE: [&str; 5] = ["target", "node_modules", ".git", "__pycache__", ".venv"];
/// Sections that may hold the stage-level spellings.
const NESTED: [&str; 3] = ["codex_config", "fix_strategy", "error_recovery"];

/// What proposes the fixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixerSpec {
    /// A shell command run in the sandbox copy ([`super::CommandFixer`]).
    Command(String),
    /// A model by name (implemented by the worker's model clients).
    Model(String),
    /// A CLI agent: `claude`, `codex` or `gemini`.
    Agent(String),
}

/// Resource limits of every sandboxed command. `None` means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file a command may write, in bytes.
    pub file_size: Option<u64>,
    /// Processes (and threads) a command may have at once.
    pub processes: Option<u32>,
    /// Address space per process, in bytes.
    pub memory: Option<u64>,
    /// CPU time per process.
    pub cpu_seconds: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_size: Some(DEFAULT_FILE_SIZE),
            processes: Some(DEFAULT_PROCESSES),
            memory: None,
            cpu_seconds: None,
        }
    }
}

/// Everything one run of the test-and-fix loop needs.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// The project; never modified unless `apply` and the loop ends green.
    pub source: PathBuf,
    /// A `sh -c` string run in the sandbox copy.
    pub test_command: String,
    /// `None`: inferred from the command, then from its output.
    pub framework: Option<Framework>,
    pub max_iterations: u32,
    pub fixer: FixerSpec,
    pub mode: SandboxMode,
    /// Forces a backend instead of the best available one (input `backend`).
    pub backend: Option<Backend>,
    pub network: bool,
    pub regression_check: bool,
    pub apply: bool,
    pub test_timeout: Duration,
    pub limits: Limits,
    /// Names of files and directories not copied (matched against every path component;
    /// `*.ext` and `prefix*` patterns work too).
    pub exclude: Vec<String>,
    /// Where the patch file goes (`<workdir>/.cascade/artifacts/<run>/<stage>`).
    pub artifacts_dir: Option<PathBuf>,
    /// The program that handles the sandbox helper marker: the worker binary.
    pub helper: PathBuf,
    /// Added to the test command's environment (a test skill's `env`,
    /// `CASCADE_SKILL_DIR` and its inputs as `CASCADE_INPUT_*`).
    pub env: Vec<(String, String)>,
}

impl LoopConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(
        source: impl Into<PathBuf>,
        test_command: impl Into<String>,
        fixer: FixerSpec,
    ) -> Self {
        LoopConfig {
            source: source.into(),
            test_command: test_command.into(),
            framework: None,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            fixer,
            mode: SandboxMode::BestEffort,
            backend: None,
            network: false,
            regression_check: true,
            apply: false,
            test_timeout: DEFAULT_TEST_TIMEOUT,
            limits: Limits::default(),
            exclude: DEFAULT_EXCLUDE.iter().map(|s| (*s).to_owned()).collect(),
            artifacts_dir: None,
            env: Vec::new(),
            helper: default_helper(),
        }
    }

    /// Reads the task's inputs; `workdir` is the task's working directory (relative
    /// `source` paths are under it).
    pub fn from_inputs(
        inputs: &Map<String, Value>,
        workdir: Option<&Path>,
    ) -> Result<LoopConfig, ConfigError> {
        let get = |key: &str| lookup(inputs, key);
        let test_command = ["test", "test_suite", "tests", "test_command"]
            .iter()
            .find_map(|k| get(k).map(|v| (*k, v)))
            .ok_or(ConfigError::MissingTest)
            .and_then(|(k, v)| non_empty_string(k, v))?;
        let base = workdir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let source = match get("source") {
            Some(v) => base.join(non_empty_string("source", v)?),
            None => base,
        };
        let mut cfg = LoopConfig::new(source, test_command, fixer(inputs)?);
        if let Some(v) = get("framework") {
            let name = non_empty_string("framework", v)?;
            cfg.framework = Some(
                Framework::parse(&name)
                    .ok_or_else(|| ConfigError::UnknownFramework(name.clone()))?,
            );
        }
        if let Some(v) = get("max_iterations") {
            cfg.max_iterations = positive("max_iterations", v)?;
        }
        if let Some(v) = get("escalate_after") {
            cfg.max_iterations = cfg.max_iterations.min(positive("escalate_after", v)?);
        }
        cfg.mode = mode(inputs)?;
        if let Some(v) = get("backend") {
            let name = non_empty_string("backend", v)?;
            cfg.backend = Some(
                Backend::parse(&name).ok_or_else(|| ConfigError::UnknownBackend(name.clone()))?,
            );
        }
        cfg.network = network(inputs)?;
        if let Some(v) = get("regression_check") {
            cfg.regression_check = boolean("regression_check", v)?;
        }
        if let Some(v) = get("apply") {
            cfg.apply = boolean("apply", v)?;
        }
        if let Some(v) = get("test_timeout") {
            cfg.test_timeout = duration("test_timeout", v)?;
        }
        if let Some(v) = get("limits") {
            cfg.limits = limits(v)?;
        }
        if let Some(v) = get("exclude") {
            cfg.exclude = string_list("exclude", v)?;
        }
        if let Some(v) = get("artifacts_dir") {
            cfg.artifacts_dir = Some(PathBuf::from(non_empty_string("artifacts_dir", v)?));
        }
        Ok(cfg)
    }
}

/// The backend `cfg` runs with: its forced `backend` if that works here, else the probe's.
pub fn resolve_backend(cfg: &LoopConfig) -> Result<Backend, BackendError> {
    if cfg.mode == SandboxMode::Off {
        return Ok(Backend::Subprocess);
    }
    match cfg.backend {
        Some(Backend::Subprocess) if cfg.mode == SandboxMode::Required => {
            Err(BackendError::SubprocessRequired)
        }
        Some(b) => backend::check(b).map(|()| b),
        None => backend::probe(cfg.mode),
    }
}

/// A `codex-sandbox` input that cannot be used; the text names the input.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("input `test` (the test command) is required")]
    MissingTest,
    #[error(
        "input `fix_command` or `fixer` (`{{command}}`, `{{model}}` or `{{agent}}`) is required"
    )]
    MissingFixer,
    #[error("input `fixer`: expected an object with `command`, `model` or `agent`")]
    FixerNotObject,
    #[error("input `fixer`: give exactly one of `command`, `model`, `agent`")]
    FixerNotOne,
    #[error("input `fixer.agent`: unknown agent `{0}` (claude, codex, gemini)")]
    UnknownAgent(String),
    #[error(
        "input `framework`: unknown framework `{0}` (cargo, pytest, unittest, go, node, generic)"
    )]
    UnknownFramework(String),
    #[error("input `backend`: unknown backend `{0}` (bwrap, landlock, subprocess)")]
    UnknownBackend(String),
    #[error("input `{field}`: expected required, best-effort or off, got `{got}`")]
    UnknownMode { field: &'static str, got: String },
    #[error("inputs `network` and `network_disabled` contradict each other")]
    NetworkContradiction,
    #[error(
        "input `limits`: unknown limit `{0}` (file_size_mb, processes, memory_mb, cpu_seconds)"
    )]
    UnknownLimit(String),
    #[error("input `{0}`: too large")]
    TooLarge(String),
    /// A value of the wrong kind; `expected` says which kind.
    #[error("input `{field}`: expected {expected}, got {got}")]
    Expected {
        field: String,
        expected: &'static str,
        got: Value,
    },
    /// A value of the wrong kind, where quoting it back would not help.
    #[error("input `{field}`: expected {expected}")]
    Shape {
        field: String,
        expected: &'static str,
    },
    #[error("input `{field}`: `{text}`: {source}")]
    Duration {
        field: String,
        text: String,
        #[source]
        source: DurationError,
    },
}

fn expected(field: &str, expected: &'static str, got: &Value) -> ConfigError {
    ConfigError::Expected {
        field: field.to_owned(),
        expected,
        got: got.clone(),
    }
}

/// The running binary: the worker, which handles the helper marker.
pub fn default_helper() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// A top-level input, else the same key in one of the nested sections.
fn lookup<'a>(inputs: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    inputs.get(key).filter(|v| !v.is_null()).or_else(|| {
        NESTED.iter().find_map(|section| {
            inputs
                .get(*section)?
                .as_object()?
                .get(key)
                .filter(|v| !v.is_null())
        })
    })
}

fn fixer(inputs: &Map<String, Value>) -> Result<FixerSpec, ConfigError> {
    if let Some(v) = inputs.get("fix_command").filter(|v| !v.is_null()) {
        return Ok(FixerSpec::Command(non_empty_string("fix_command", v)?));
    }
    let Some(v) = inputs.get("fixer").filter(|v| !v.is_null()) else {
        return Err(ConfigError::MissingFixer);
    };
    if let Value::String(_) = v {
        return Ok(FixerSpec::Command(non_empty_string("fixer", v)?));
    }
    let obj = v.as_object().ok_or(ConfigError::FixerNotObject)?;
    let keys: Vec<&String> = obj
        .keys()
        .filter(|k| ["command", "model", "agent"].contains(&k.as_str()))
        .collect();
    if keys.len() != 1 {
        return Err(ConfigError::FixerNotOne);
    }
    let (key, value) = (keys[0].as_str(), &obj[keys[0].as_str()]);
    let field = format!("fixer.{key}");
    let text = non_empty_string(&field, value)?;
    Ok(match key {
        "command" => FixerSpec::Command(text),
        "model" => FixerSpec::Model(text),
        _ => {
            if !["claude", "codex", "gemini"].contains(&text.as_str()) {
                return Err(ConfigError::UnknownAgent(text));
            }
            FixerSpec::Agent(text)
        }
    })
}

fn mode(inputs: &Map<String, Value>) -> Result<SandboxMode, ConfigError> {
    let (field, value) = match (
        lookup(inputs, "sandbox"),
        lookup(inputs, "sandbox_isolated"),
    ) {
        (Some(v), _) => ("sandbox", v),
        (None, Some(v)) => ("sandbox_isolated", v),
        (None, None) => return Ok(SandboxMode::BestEffort),
    };
    match value {
        Value::Bool(true) => Ok(SandboxMode::BestEffort),
        Value::Bool(false) => Ok(SandboxMode::Off),
        Value::String(s) => match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "required" | "require" | "strict" => Ok(SandboxMode::Required),
            "best-effort" | "true" | "on" | "yes" => Ok(SandboxMode::BestEffort),
            "off" | "false" | "none" | "no" => Ok(SandboxMode::Off),
            other => Err(ConfigError::UnknownMode {
                field,
                got: other.to_owned(),
            }),
        },
        other => Err(expected(
            field,
            "required, best-effort, off or a boolean",
            other,
        )),
    }
}

fn network(inputs: &Map<String, Value>) -> Result<bool, ConfigError> {
    let allowed = lookup(inputs, "network")
        .map(|v| boolean("network", v))
        .transpose()?;
    let disabled = lookup(inputs, "network_disabled")
        .map(|v| boolean("network_disabled", v))
        .transpose()?;
    match (allowed, disabled) {
        (Some(a), Some(d)) if a == d => Err(ConfigError::NetworkContradiction),
        (Some(a), _) => Ok(a),
        (None, Some(d)) => Ok(!d),
        (None, None) => Ok(false),
    }
}

fn limits(v: &Value) -> Result<Limits, ConfigError> {
    let obj = v.as_object().ok_or_else(|| ConfigError::Shape {
        field: "limits".into(),
        expected: "an object",
    })?;
    let mut limits = Limits::default();
    for (key, value) in obj {
        let field = format!("limits.{key}");
        let n = || -> Result<u64, ConfigError> {
            value
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| expected(&field, "a positive integer", value))
        };
        match key.as_str() {
            "file_size_mb" => limits.file_size = Some(n()?.saturating_mul(1 << 20)),
            "file_size_bytes" => limits.file_size = Some(n()?),
            "processes" => {
                limits.processes =
                    Some(u32::try_from(n()?).map_err(|_| ConfigError::TooLarge(field.clone()))?)
            }
            "memory_mb" => limits.memory = Some(n()?.saturating_mul(1 << 20)),
            "cpu_seconds" => limits.cpu_seconds = Some(n()?),
            other => {
                return Err(ConfigError::UnknownLimit(other.to_owned()));
            }
        }
    }
    Ok(limits)
}

fn non_empty_string(field: &str, v: &Value) -> Result<String, ConfigError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        other => Err(expected(field, "a non-empty string", other)),
    }
}

fn positive(field: &str, v: &Value) -> Result<u32, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| expected(field, "a positive integer", v))
}

fn boolean(field: &str, v: &Value) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => Err(expected(field, "true or false", other)),
    }
}

fn duration(field: &str, v: &Value) -> Result<Duration, ConfigError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| expected(field, "a positive number of seconds", v)),
        Value::String(s) => cascade_core::duration::parse_nonzero_duration(s).map_err(|source| {
            ConfigError::Duration {
                field: field.to_owned(),
                text: s.clone(),
                source,
            }
        }),
        other => Err(expected(field, "a duration like `90s` or `10m`", other)),
    }
}

fn string_list(field: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let items = v.as_array().ok_or_else(|| ConfigError::Shape {
        field: field.to_owned(),
        expected: "a list of names",
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| non_empty_string(&format!("{field}[{i}]"), item))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<LoopConfig, String> {
        let Value::Object(map) = v else {
            panic!("object")
        };
        LoopConfig::from_inputs(&map, Some(Path::new("/w"))).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let cfg = parse(json!({"test": "cargo test", "fix_command": "./fix.sh"})).expect("valid");
        assert_eq!(cfg.source, PathBuf::from("/w"));
        assert_eq!(cfg.test_command, "cargo test");
        assert_eq!(cfg.fixer, FixerSpec::Command("./fix.sh".into()));
        assert_eq!(cfg.max_iterations, 5);
        assert_eq!(cfg.mode, SandboxMode::BestEffort);
        assert!(!cfg.network && cfg.regression_check && !cfg.apply);
        assert_eq!(cfg.test_timeout, DEFAULT_TEST_TIMEOUT);
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.exclude, DEFAULT_EXCLUDE);
        assert_eq!(cfg.framework, None);
    }

    #[test]
    fn everything_set() {
        let cfg = parse(json!({
            "source": "proj", "test_suite": "pytest -q", "framework": "pytest",
            "max_iterations": 3, "fixer": {"model": "claude"}, "sandbox": "required",
            "network_disabled": false, "regression_check": false, "apply": true,
            "test_timeout": "90s", "exclude": ["build"], "backend": "landlock",
            "limits": {"file_size_mb": 10, "processes": 64, "memory_mb": 512, "cpu_seconds": 30},
        }))
        .expect("valid");
        assert_eq!(cfg.source, PathBuf::from("/w/proj"));
        assert_eq!(cfg.framework, Some(Framework::Pytest));
        assert_eq!(cfg.fixer, FixerSpec::Model("claude".into()));
        assert_eq!((cfg.max_iterations, cfg.mode), (3, SandboxMode::Required));
        assert!(cfg.network && !cfg.regression_check && cfg.apply);
        assert_eq!(cfg.test_timeout, Duration::from_secs(90));
        assert_eq!(cfg.backend, Some(Backend::Landlock));
        assert_eq!(
            cfg.limits,
            Limits {
                file_size: Some(10 << 20),
                processes: Some(64),
                memory: Some(512 << 20),
                cpu_seconds: Some(30)
            }
        );
    }

    #[test]
    fn stage_level_spellings() {
        let cfg = parse(json!({
            "tests": "go test ./...", "fixer": {"agent": "codex"},
            "codex_config": {"max_iterations": 4, "network_disabled": true, "sandbox": false},
            "fix_strategy": {"escalate_after": 2, "regression_check": false},
        }))
        .expect("valid");
        assert_eq!(cfg.fixer, FixerSpec::Agent("codex".into()));
        assert_eq!(cfg.max_iterations, 2);
        assert_eq!(cfg.mode, SandboxMode::Off);
        assert!(!cfg.network && !cfg.regression_check);
        let cfg =
            parse(json!({"test": "t", "fixer": "sh fix.sh", "sandbox": true, "test_timeout": 5}))
                .expect("valid");
        assert_eq!(cfg.fixer, FixerSpec::Command("sh fix.sh".into()));
        assert_eq!(cfg.mode, SandboxMode::BestEffort);
        assert_eq!(cfg.test_timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_field() {
        let table = [
            (json!({"fix_command": "x"}), "input `test`"),
            (json!({"test": "t"}), "input `fix_command` or `fixer`"),
            (
                json!({"test": "t", "fixer": {"agent": "clippy"}}),
                "input `fixer.agent`",
            ),
            (
                json!({"test": "t", "fixer": {"model": "a", "agent": "codex"}}),
                "input `fixer`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "max_iterations": 0}),
                "input `max_iterations`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "sandbox": "maybe"}),
                "input `sandbox`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "framework": "junit"}),
                "input `framework`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "limits": {"disk": 1}}),
                "input `limits`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "limits": {"processes": -1}}),
                "input `limits.processes`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "test_timeout": "soon"}),
                "input `test_timeout`",
            ),
            (
                json!({"test": "t", "fix_command": "x", "network": true, "network_disabled": true}),
                "contradict",
            ),
            (json!({"test": "", "fix_command": "x"}), "input `test`"),
        ];
        for (inputs, want) in table {
            let err = parse(inputs.clone()).expect_err("invalid");
            assert!(err.contains(want), "{inputs}: {err}");
        }
    }
}
