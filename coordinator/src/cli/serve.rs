//! `coordinator serve`: drive submitted runs on the swarm.

use std::path::PathBuf;
use std::time::Duration;

use cascade_core::duration::parse_nonzero_duration;
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect_as, warn_if_single_node};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED};
use crate::driver::nats::{ServeOptions, serve};

/// Settings every process of one swarm must share (they shape the durable
/// consumers): the coordinator and `worker` take the same flags.
#[derive(Clone, Debug, Args)]
pub struct QueueArgs {
    /// How long a task may run without a progress ack before it is
    /// redelivered (workers ack progress every third of it).
    #[arg(long, value_name = "DURATION", env = "CASCADE_ACK_WAIT", default_value = "30s", value_parser = parse_nonzero_duration)]
    pub ack_wait: Duration,
    /// Deliveries of one task before it is dead-lettered.
    #[arg(
        long,
        value_name = "N",
        env = "CASCADE_MAX_DELIVER",
        default_value_t = 5
    )]
    pub max_deliver: i64,
    /// How long a worker stays registered after its last heartbeat.
    #[arg(long, value_name = "DURATION", env = "CASCADE_WORKER_TTL", default_value = "10s", value_parser = parse_nonzero_duration)]
    pub worker_ttl: Duration,
}

impl QueueArgs {
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            worker_ttl: self.worker_ttl,
            ..QueueSettings::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// This coordinator's name [default: coordinator-<host>-<pid>].
    #[arg(long, value_name = "NAME", env = "CASCADE_COORDINATOR_NAME")]
    pub name: Option<String>,
    /// The models file (names, providers, context limits, prices); the
    /// built-in default (examples/models.yaml) when not given.
    #[arg(long, value_name = "FILE", env = "CASCADE_MODELS")]
    pub models: Option<PathBuf>,
    /// A run's lease: another coordinator takes the run over this long
    /// after its owner stops renewing.
    #[arg(long, value_name = "DURATION", env = "CASCADE_LEASE_TTL", default_value = "10s", value_parser = parse_nonzero_duration)]
    pub lease_ttl: Duration,
    /// Serve the dashboard, its JSON API, /metrics (Prometheus), /healthz and
    /// /readyz on this address (e.g. 0.0.0.0:9090; port 0 picks one, printed
    /// as "http listening on ADDR").
    #[arg(long, value_name = "ADDR", env = "CASCADE_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    /// The token the dashboard and its API require (`Authorization: Bearer
    /// TOKEN`, or /login?token=TOKEN in a browser); required unless --http
    /// is a loopback address. /healthz, /readyz and /metrics stay open.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CASCADE_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Run the `on_run_end` hooks of submitted cascades here (they are
    /// commands from whoever may submit); refused, and noted in the run's
    /// report, without it.
    #[arg(
        long = "allow-submitted-commands",
        env = "CASCADE_ALLOW_SUBMITTED_COMMANDS"
    )]
    pub allow_submitted_commands: bool,
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into())
}

pub async fn serve_cmd(a: ServeArgs, cancel: CancellationToken) -> u8 {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("coordinator-{}-{}", host_name(), std::process::id()));
    if a.queue.max_deliver < 1 || a.lease_ttl < Duration::from_millis(300) {
        eprintln!("error: --max-deliver must be at least 1 and --lease-ttl at least 300ms");
        return EXIT_INVALID;
    }
    let access = match a
        .http
        .map(|addr| crate::http::auth::Access::new(addr, a.http_token.clone()))
    {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
        Some(Ok(access)) => Some(access),
        None => None,
    };
    let http = match a.http.zip(access) {
        Some((addr, access)) => match crate::http::Server::start(addr, access).await {
            Ok(h) => {
                eprintln!("{} {}", crate::http::LISTENING, h.addr().unwrap_or(addr));
                Some(h)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    let client = match connect_as(&a.nats, &name, cascade_proto::wire::INBOX_COORDINATOR).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    warn_if_single_node(&client);
    let settings = QueueSettings {
        replicas: a.nats.replicas(),
        ..a.queue.settings()
    };
    let swarm = match Swarm::setup(client.clone(), settings).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    let models = match cascade_core::models::ModelCatalog::from_env_or(a.models.as_deref()) {
        Ok(m) => std::sync::Arc::new(m),
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return EXIT_INVALID;
        }
    };
    if let Some(h) = &http {
        h.connected(&swarm, models.clone(), cancel.clone());
    }
    eprintln!("coordinator {name}: serving on {}", a.nats.url);
    let outcome = serve(
        swarm,
        ServeOptions {
            name,
            lease_ttl: a.lease_ttl,
            models,
            allow_submitted_commands: a.allow_submitted_commands,
        },
        cancel,
    )
    .await;
    if let Some(h) = http {
        h.stop().await;
    }
    let _ = client.drain().await;
    match outcome {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUN_FAILED
        }
    }
}
