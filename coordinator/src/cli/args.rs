//! The argument groups the commands share (`SourceArgs`, `InputArgs`) and the
//! offline commands' arguments. Every flag has help text and, where a script
//! or a deployment would set it, an environment variable.

use std::path::PathBuf;

use clap::Args;

use cascade_core::plan::Format;

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A directory of skill files (repeatable). `skills/` beside the cascade
    /// is always searched.
    #[arg(
        long = "skills-dir",
        value_name = "DIR",
        env = "CASCADE_SKILLS_DIR",
        value_delimiter = ':'
    )]
    pub skills_dir: Vec<PathBuf>,
    /// The models file (names, providers, context limits, prices, keys'
    /// variables); the built-in default (examples/models.yaml) when not given.
    #[arg(long, value_name = "FILE", env = "CASCADE_MODELS")]
    pub models: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// An input value, `name=value`; the value is read as JSON when it
    /// parses (numbers, booleans, lists), else as a string (repeatable).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    pub input: Vec<String>,
    /// A YAML or JSON mapping of inputs; `--input` wins over it.
    #[arg(long = "inputs-file", value_name = "FILE", env = "CASCADE_INPUTS_FILE")]
    pub inputs_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Cascade files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Print the diagnostics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', default_value = "text", value_parser = format_parser())]
    pub format: Format,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Write the results (seed-compatible JSON) to this file.
    #[arg(long, short = 'o', value_name = "FILE", env = "CASCADE_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Most tasks running at once [default: number of CPUs, at least 4].
    #[arg(long, short = 'c', value_name = "N", env = "CASCADE_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show progress and warnings even when stderr is not a terminal.
    #[arg(long)]
    pub verbose: bool,
    /// Where memory persists between runs [default: the user's data
    /// directory, e.g. ~/.local/share/cascade].
    #[arg(long, value_name = "DIR", env = "CASCADE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write the schema to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `--format`: one of the planner's format names (clap lists them in `--help`).
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Format::NAMES)
        .try_map(|name| Format::from_name(&name).ok_or(format!("unknown format `{name}`")))
}
