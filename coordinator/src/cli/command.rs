//! The command line: `coordinator <command>`, each command's arguments in
//! its own module (the shared groups in `args`).

use clap::{Parser, Subcommand};

use super::args::{CompletionsArgs, PlanArgs, RunArgs, SchemaArgs, ValidateArgs};
use super::runs::{CancelArgs, ResultsArgs, StatusArgs, WatchArgs};
use super::submit::SubmitArgs;
use super::workers::WorkersArgs;

#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Run declarative cascades of skills: embedded, or across a swarm of workers."
)]
pub struct Cli {
    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short = 'v', long = "log-verbose", global = true, action = clap::ArgAction::Count, env = "CASCADE_VERBOSE")]
    pub log_verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "CASCADE_LOG_FORMAT")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check cascade files and report every problem (exit 2 on errors).
    Validate(ValidateArgs),
    /// Print a cascade's DAG: stages, dependencies, branches, loops, models.
    Plan(PlanArgs),
    /// Run a cascade in this process with local workers (no server needed).
    Run(RunArgs),
    /// Validate a cascade and submit it to a swarm; prints the run id.
    Submit(SubmitArgs),
    /// One swarm run's state and stages, or a table of recent runs.
    Status(StatusArgs),
    /// Follow a swarm run's stages until it ends (exit 0 success, 1 otherwise).
    Watch(WatchArgs),
    /// Ask the swarm to cancel a run.
    Cancel(CancelArgs),
    /// A finished swarm run's results (the same JSON as `run --output`).
    Results(ResultsArgs),
    /// The swarm's live workers: skills, labels, load, last heartbeat.
    Workers(WorkersArgs),
    /// Dead letters: list, show, replay (submit the run again) or drop them.
    Dlq(super::dlq::DlqArgs),
    /// Check the server, streams, buckets, permissions, clocks and worker coverage.
    Doctor(super::doctor::DoctorArgs),
    /// Drive submitted runs on the swarm (run several for high availability).
    Serve(super::serve::ServeArgs),
    /// Print the NATS permissions of a worker, a coordinator or a client.
    Permissions(super::permissions::PermissionsArgs),
    /// Print the JSON Schema of the cascade format (for editor completion).
    Schema(SchemaArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
}
