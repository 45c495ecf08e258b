//! `worker`: a swarm worker process. Parses flags (each with a `CASCADE_*`
//! or `NATS_*` env fallback), sets up tracing, maps SIGINT/SIGTERM to a
//! cancellation token and calls [`runner::run`].
//!
//! Exit codes: 0 after a clean drain, 2 on bad configuration, 1 on a fatal
//! runtime error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cascade_core::duration::parse_nonzero_duration;
use cascade_exec::SkillRegistry;
use cascade_proto::wire::WorkerRole;
use cascade_swarm::ops;
use cascade_swarm::{NatsArgs, QueueSettings};
use cascade_worker::runner::{self, Config};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "A Cascade swarm worker: runs skills for tasks from NATS JetStream."
)]
struct Cli {
    /// Skills to take from the mesh queues, comma-separated (built-ins: noop,
    /// sleep, echo, fail, judge, codex-sandbox).
    #[arg(
        long,
        env = "CASCADE_SKILLS",
        value_delimiter = ',',
        required_unless_present = "completions"
    )]
    skills: Vec<String>,
    /// Print a shell completion script for this shell and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    #[command(flatten)]
    nats: NatsArgs,
    /// A directory of skill files (repeatable; env: colon-separated).
    #[arg(
        long = "skills-dir",
        value_name = "DIR",
        env = "CASCADE_SKILLS_DIR",
        value_delimiter = ':'
    )]
    skills_dirs: Vec<PathBuf>,
    /// Most tasks in flight at once, over all queues.
    #[arg(long, env = "CASCADE_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Labels as k=v,k2=v2 (shown in `coordinator workers`, used for routing).
    #[arg(long, env = "CASCADE_LABELS", default_value = "")]
    labels: String,
    /// Unique worker name [default: <hostname>-<pid>].
    #[arg(long, env = "CASCADE_WORKER_NAME")]
    name: Option<String>,
    /// `lead` also takes batches for its team (hierarchical topology).
    #[arg(long, env = "CASCADE_ROLE", value_enum, default_value_t = Role::Member)]
    role: Role,
    /// Where skills run when a task names no directory that exists here [default: cwd].
    #[arg(long, env = "CASCADE_WORKDIR")]
    workdir: Option<PathBuf>,
    /// Redelivery timeout of an unacknowledged task (must match the whole swarm).
    #[arg(long = "ack-wait", env = "CASCADE_ACK_WAIT", default_value = "30s", value_parser = parse_nonzero_duration)]
    ack_wait: Duration,
    /// Deliveries of one task message before it is dead-lettered (must match the swarm).
    #[arg(long = "max-deliver", env = "CASCADE_MAX_DELIVER", default_value_t = 5)]
    max_deliver: i64,
    /// How long this worker stays registered after its last heartbeat; it
    /// beats every third of it (must match the swarm's coordinators).
    #[arg(long = "worker-ttl", env = "CASCADE_WORKER_TTL", default_value = "10s", value_parser = parse_nonzero_duration)]
    worker_ttl: Duration,
    /// How long in-flight tasks may run on after SIGTERM/SIGINT.
    #[arg(long, env = "CASCADE_GRACE", default_value = "30s", value_parser = parse_nonzero_duration)]
    grace: Duration,
    /// The models file (providers, model ids, keys' variables, prices) for
    /// model skills [default: the built-in examples/models.yaml].
    #[arg(long, value_name = "FILE", env = "CASCADE_MODELS")]
    models: Option<PathBuf>,
    /// Run commands that come with a submitted cascade (its pre_task/post_task
    /// hooks, codex-sandbox test and fix commands); refused by default. Skills
    /// from --skills-dir always run.
    #[arg(
        long = "allow-submitted-commands",
        env = "CASCADE_ALLOW_SUBMITTED_COMMANDS"
    )]
    allow_submitted_commands: bool,
    /// Run submitted commands only for tasks of these skills (comma-separated).
    #[arg(
        long = "allow-submitted-commands-for",
        value_name = "SKILLS",
        env = "CASCADE_ALLOW_SUBMITTED_COMMANDS_FOR",
        value_delimiter = ','
    )]
    allow_submitted_commands_for: Vec<String>,
    /// Log format on stderr.
    #[arg(long = "log-format", env = "CASCADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address
    /// (e.g. 0.0.0.0:9090; port 0 picks one, printed as "http listening on ADDR").
    #[arg(long, value_name = "ADDR", env = "CASCADE_HTTP")]
    http: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Member,
    Lead,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    fn into_config(self) -> Result<Config, String> {
        let registry = SkillRegistry::load(&self.skills_dirs).map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let skills = self
            .skills
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let name = self.name.unwrap_or_else(runner::default_name);
        let mut config = Config::new(name, skills, registry);
        config.nats = self.nats;
        config.concurrency = self.concurrency;
        config.labels = runner::parse_labels(&self.labels).map_err(|e| e.to_string())?;
        config.role = match self.role {
            Role::Member => WorkerRole::Member,
            Role::Lead => WorkerRole::Lead,
        };
        if let Some(dir) = self.workdir {
            config.workdir = dir;
        }
        config.settings = QueueSettings {
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            worker_ttl: self.worker_ttl,
            replicas: config.nats.replicas(),
            ..QueueSettings::default()
        };
        config.grace = self.grace;
        config.submitted_commands = cascade_exec::SubmittedCommands {
            all: self.allow_submitted_commands,
            skills: self
                .allow_submitted_commands_for
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        config.models = std::sync::Arc::new(
            cascade_core::models::ModelCatalog::from_env_or(self.models.as_deref())
                .map_err(|errors| errors.join("\n"))?,
        );
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    if let Some(code) = cascade_exec::sandbox::exec_helper_main() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    if let Some(shell) = cli.completions {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "worker", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    init_tracing(cli.log_format);
    let http_addr = cli.http;
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            shutdown_on_signal(signals).await;
        });
        let http = match ops::Endpoint::start(http_addr, "worker", ops::router()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Some(addr) = http.addr() {
            tracing::info!("{} {addr}", ops::LISTENING);
        }
        let code = match runner::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is_config() => {
                tracing::error!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(1)
            }
        };
        http.stop().await;
        #[cfg(feature = "otlp")]
        ops::otlp::shutdown();
        code
    })
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn shutdown_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers: SIGTERM/SIGINT will kill without draining"
        );
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    token.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    #[cfg(feature = "otlp")]
    let Some(filter) = ops::otlp::init(filter, matches!(format, LogFormat::Json), "cascade-worker")
    else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
