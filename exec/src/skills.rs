//! The skill registry: every skill a worker can run, by name.
//!
//! A registry always holds the four built-ins ([`BUILTIN_SKILLS`]); [`SkillRegistry::load`]
//! adds one skill per `*.yaml`, `*.yml` or `*.json` file of each skills directory (read
//! non-recursively, other files ignored). A file skill may shadow a built-in; two files
//! defining the same name is an error.
//!
//! Invariants:
//! - a registry is immutable once built; the executor shares it behind an `Arc`;
//! - loading never stops at the first problem: every error of every file is returned, each
//!   naming the file and, when known, the line, column and field;
//! - a file skill has exactly one of `run` (a `sh -c` string), `command` (an argv list) or
//!   `prompt` (a model skill, with optional `system`, `output: text|json`, `model`,
//!   `max_tokens`, `temperature`; its templates parse at load), and remembers the file it
//!   came from (its directory becomes `CASCADE_SKILL_DIR`).

mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade_proto::SkillName;

pub use file::MAX_SKILL_FILE_BYTES;

/// Names of the skills every registry provides, sorted.
pub const BUILTIN_SKILLS: &[&str] = &["codex-sandbox", "echo", "fail", "judge", "noop", "sleep"];

/// A skill implemented inside the worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Succeeds with `{}`.
    Noop,
    /// Sleeps for input `seconds`, then succeeds with `{"slept": seconds}`.
    Sleep,
    /// Succeeds with its inputs as outputs.
    Echo,
    /// Fails (retryable) with input `message`; with input `times: N` only while the
    /// attempt number is at most N.
    Fail,
    /// Compares a multi-model stage's answers with the task's model (inputs `question`,
    /// `candidates`) and picks one.
    Judge,
    /// The sandboxed test-and-fix loop of a `codex-sandbox` stage.
    Sandbox,
}

impl Builtin {
    fn name(self) -> &'static str {
        match self {
            Builtin::Noop => "noop",
            Builtin::Sleep => "sleep",
            Builtin::Echo => "echo",
            Builtin::Fail => "fail",
            Builtin::Judge => "judge",
            Builtin::Sandbox => "codex-sandbox",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Builtin::Noop => "does nothing and succeeds",
            Builtin::Sleep => "sleeps for input `seconds`",
            Builtin::Echo => "returns its inputs as outputs",
            Builtin::Fail => "fails with input `message` (while attempt <= input `times`)",
            Builtin::Judge => "a model picks the best of a multi-model stage's answers",
            Builtin::Sandbox => "the sandboxed test-and-fix loop (codex-sandbox stages)",
        }
    }

    const ALL: [Builtin; 6] = [
        Builtin::Sandbox,
        Builtin::Echo,
        Builtin::Fail,
        Builtin::Judge,
        Builtin::Noop,
        Builtin::Sleep,
    ];
}

/// How a skill runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkillKind {
    /// Runs inside the worker.
    Builtin(Builtin),
    /// A shell command string, run as `sh -c <run>`.
    Shell { run: String },
    /// A program and its arguments, run without a shell.
    Command { argv: Vec<String> },
    /// A prompt for a model (`crate::model::skill::run`).
    Model(ModelSkill),
}

/// A skill that asks a model: a `${...}` prompt template and how to read the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSkill {
    /// The user prompt, rendered against the task's context.
    pub prompt: String,
    /// The system prompt, rendered the same way.
    pub system: Option<String>,
    pub output: ModelOutput,
    /// The model when the task names none.
    pub model: Option<String>,
    /// The most output tokens to ask for.
    pub max_tokens: Option<u64>,
    /// Passed through to the provider.
    pub temperature: Option<f64>,
}

// `temperature` is checked to be finite (0 to 2) when the file loads, so equality is
// reflexive.
impl Eq for ModelSkill {}

/// What a model skill's outputs are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelOutput {
    /// `{"text": answer, "model": name}`.
    #[default]
    Text,
    /// The answer parsed as JSON (an object, else `{"result": value}`), plus `model`.
    Json,
}

/// One skill: what it is called, how it runs and where it was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillDef {
    pub name: SkillName,
    pub description: Option<String>,
    pub kind: SkillKind,
    /// The skill's own time limit; the executor uses the smaller of this and the task's.
    pub timeout: Option<Duration>,
    /// Added to the inherited environment of the skill's process.
    pub env: BTreeMap<String, String>,
    /// Declared input names (informational).
    pub inputs: Vec<String>,
    /// Declared output names (informational).
    pub outputs: Vec<String>,
    /// The absolute path of the file that defined the skill; `None` for built-ins.
    pub source: Option<PathBuf>,
}

impl SkillDef {
    fn builtin(builtin: Builtin) -> Self {
        SkillDef {
            name: SkillName::new(builtin.name()),
            description: Some(builtin.description().to_owned()),
            kind: SkillKind::Builtin(builtin),
            timeout: None,
            env: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            source: None,
        }
    }

    /// Parses and validates a skill file's text exactly as [`SkillRegistry::load`] does
    /// after reading it (size limit included); `path` names it in messages, gives the
    /// default name (its stem) and becomes [`SkillDef::source`]. Nothing is read from disk.
    pub fn parse(path: &Path, text: &str) -> Result<SkillDef, Vec<SkillLoadError>> {
        file::parse(path, text)
    }

    /// The directory of the file that defined the skill (`CASCADE_SKILL_DIR`).
    pub fn dir(&self) -> Option<&Path> {
        self.source.as_deref().and_then(Path::parent)
    }
}

/// A position in a skill file, displayed as `path:line:col` (or `path` when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePos {
    pub path: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based; 0 when the problem concerns the whole file.
    pub column: u64,
}

impl fmt::Display for FilePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.path.display())
        } else {
            write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
        }
    }
}

/// One problem found while loading skills.
#[derive(Debug, thiserror::Error)]
pub enum SkillLoadError {
    #[error("skills directory `{}`: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read skill file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: skill file is {size} bytes, more than the limit of {limit}", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The file is not valid YAML/JSON or does not match the skill schema.
    #[error("{at}: {message}")]
    Invalid { at: FilePos, message: String },
    #[error(
        "skill `{name}` is defined twice: in `{}` and in `{}`",
        first.display(),
        second.display()
    )]
    Duplicate {
        name: SkillName,
        first: PathBuf,
        second: PathBuf,
    },
}

/// Every skill a worker can run, by name.
#[derive(Clone, Debug)]
pub struct SkillRegistry {
    skills: BTreeMap<String, SkillDef>,
}

impl SkillRegistry {
    /// A registry holding only the built-ins: `noop`, `sleep`, `echo`, `fail`.
    pub fn builtins() -> Self {
        let skills = Builtin::ALL
            .into_iter()
            .map(|b| (b.name().to_owned(), SkillDef::builtin(b)))
            .collect();
        SkillRegistry { skills }
    }

    /// The built-ins plus every skill file in `dirs`. Returns all problems at once.
    pub fn load(dirs: &[PathBuf]) -> Result<SkillRegistry, Vec<SkillLoadError>> {
        let mut registry = Self::builtins();
        let mut errors = Vec::new();
        let mut defined_in: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in dirs {
            let files = match skill_files(dir) {
                Ok(files) => files,
                Err(source) => {
                    errors.push(SkillLoadError::Dir {
                        dir: dir.clone(),
                        source,
                    });
                    continue;
                }
            };
            for path in files {
                let def = match file::load_file(&path) {
                    Ok(def) => def,
                    Err(mut errs) => {
                        errors.append(&mut errs);
                        continue;
                    }
                };
                let name = def.name.as_str().to_owned();
                if let Some(first) = defined_in.get(&name) {
                    errors.push(SkillLoadError::Duplicate {
                        name: def.name,
                        first: first.clone(),
                        second: path,
                    });
                    continue;
                }
                if registry.contains(&name) {
                    tracing::debug!(
                        skill = %name, file = %path.display(), "file skill shadows a built-in"
                    );
                }
                defined_in.insert(name.clone(), path);
                registry.skills.insert(name, def);
            }
        }
        if errors.is_empty() {
            Ok(registry)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&SkillDef> {
        self.skills.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.skills.contains_key(name)
    }

    /// Every skill name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.skills.keys().map(String::as_str)
    }
}

impl Default for SkillRegistry {
    fn default() -> Self {
        Self::builtins()
    }
}

/// The skill files of `dir`, sorted by name so errors come in a stable order.
fn skill_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_skill = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        // `is_file` follows symlinks: a link to a skill file counts, a directory does not.
        if is_skill && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
