//! Connecting to NATS: URL and credentials from flags or the environment,
//! and a server version check at connect.
//!
//! Server 2.9 and older are refused: they fail to create KV buckets with
//! this client, silently drop config they do not know (a consumer's
//! `filter_subjects`, per-message TTL) and, clustered, let several
//! compare-and-set updates with the same revision succeed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Oldest server accepted.
pub const MIN_SERVER: (u32, u32) = (2, 10);

#[derive(Clone, Debug, Default, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats",
        value_name = "URL",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// A credentials file (JWT + nkey seed), as `nsc` writes them.
    #[arg(long = "nats-creds", value_name = "FILE", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// User name (with --nats-password).
    #[arg(long = "nats-user", value_name = "USER", env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(
        long = "nats-password",
        value_name = "PASSWORD",
        env = "NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(
        long = "nats-token",
        value_name = "TOKEN",
        env = "NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    #[arg(long = "nats-nkey", value_name = "FILE", env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// CA certificate to trust for TLS (PEM).
    #[arg(long = "nats-tls-ca", value_name = "FILE", env = "NATS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM; with --nats-tls-key).
    #[arg(long = "nats-tls-cert", value_name = "FILE", env = "NATS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long = "nats-tls-key", value_name = "FILE", env = "NATS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require TLS even when the URL does not say `tls://`.
    #[arg(long = "nats-tls", env = "NATS_TLS")]
    pub tls: bool,
    /// JetStream replicas of the streams, buckets and object store this
    /// process creates when they are missing [default: 1]: 3 on a
    /// production cluster. `serve` and `worker` refuse existing ones with
    /// another count; every process of a swarm must use the same.
    #[arg(long = "replicas", value_name = "N", env = "CASCADE_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
}

impl NatsArgs {
    /// The replica count to create with (`--replicas`, else 1).
    pub fn replicas(&self) -> usize {
        usize::from(self.replicas.unwrap_or(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot read {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--nats-user needs --nats-password (and the other way round)")]
    UserPassword,
    #[error("--nats-tls-cert needs --nats-tls-key (and the other way round)")]
    ClientCert,
    #[error(
        "nats-server {version} at {url} is too old: Cascade needs {}.{} or newer \
         (2.9 and older lose consumer filters and fail KV creation)",
        MIN_SERVER.0, MIN_SERVER.1
    )]
    TooOld { version: String, url: String },
    #[error(
        "nats-server {version} at {url} has known JetStream data-loss bugs \
         (2.10.0 to 2.10.22): \
         upgrade the server to 2.10.23 or newer (2.12.3 or newer for production)"
    )]
    DataLoss { version: String, url: String },
    #[error("JetStream is not enabled on the server at {url} (start nats-server with -js)")]
    NoJetStream { url: String },
    #[error("{what}: {message}")]
    Setup { what: String, message: String },
}

/// Connects as a client command (inbox prefix
/// [`wire::INBOX_CLIENT`](cascade_proto::wire::INBOX_CLIENT)); see
/// [`connect_as`].
pub async fn connect(args: &NatsArgs, name: &str) -> Result<async_nats::Client, NatsError> {
    connect_as(args, name, cascade_proto::wire::INBOX_CLIENT).await
}

/// Connects, names the connection, and checks the server version. Replies
/// (JetStream API answers, pull batches, KV and object watches) arrive on
/// `inbox_prefix.>`: each kind of process has its own prefix
/// (`cascade_proto::wire::{INBOX_COORDINATOR, INBOX_CLIENT, inbox_worker}`),
/// the only inbox its generated NATS user may subscribe to.
pub async fn connect_as(
    args: &NatsArgs,
    name: &str,
    inbox_prefix: &str,
) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(inbox_prefix)
        .connection_timeout(Duration::from_secs(10))
        .max_reconnects(None);
    if let Some(path) = &args.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Read {
                what: "credentials file",
                path: path.clone(),
                source,
            })?;
    }
    match (&args.user, &args.password) {
        (Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.clone()),
        (None, None) => {}
        _ => return Err(NatsError::UserPassword),
    }
    if let Some(t) = &args.token {
        opts = opts.token(t.clone());
    }
    if let Some(path) = &args.nkey {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Read {
            what: "nkey seed file",
            path: path.clone(),
            source,
        })?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &args.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => opts = opts.add_client_certificate(c.clone(), k.clone()),
        (None, None) => {}
        _ => return Err(NatsError::ClientCert),
    }
    if args.tls || args.tls_ca.is_some() || args.url.starts_with("tls://") {
        opts = opts.require_tls(true);
    }
    // The first connection fails fast (a supervisor restarts us); once
    // connected, the client reconnects for ever.
    let url = args.url.clone();
    let invalid = |source: async_nats::ConnectError| NatsError::Connect {
        url: url.clone(),
        source,
    };
    // A comma-separated list is split here: async-nats parses one string as
    // one URL.
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                invalid(async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::ServerParse,
                    e,
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = opts
        .connect(addrs.as_slice())
        .await
        .map_err(|source| NatsError::Connect {
            url: url.clone(),
            source,
        })?;
    check_server(&client, &url).await?;
    Ok(client)
}

async fn check_server(client: &async_nats::Client, url: &str) -> Result<(), NatsError> {
    // The INFO arrives with the connection; wait briefly if it has not.
    let mut info = client.server_info();
    for _ in 0..50 {
        if !info.version.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        info = client.server_info();
    }
    match server_version(&info.version) {
        VersionVerdict::Ok => {}
        VersionVerdict::TooOld => {
            return Err(NatsError::TooOld {
                version: info.version,
                url: url.to_owned(),
            });
        }
        VersionVerdict::DataLoss => {
            return Err(NatsError::DataLoss {
                version: info.version,
                url: url.to_owned(),
            });
        }
    }
    if !info.jetstream {
        return Err(NatsError::NoJetStream {
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// For long-lived processes (`serve`, `worker`): a single server's
/// durability depends on a setting clients cannot see; say what is at stake.
pub fn warn_if_single_node(client: &async_nats::Client) {
    let info = client.server_info();
    if info.cluster.is_none() {
        tracing::warn!(
            server = %info.server_name,
            "single NATS server: acknowledged writes survive a process crash, but an OS crash \
             loses up to one sync interval (2 min by default) unless the server runs with \
             `sync_interval: always`; production wants a 3-node cluster with R3 streams"
        );
    }
}

/// What Cascade makes of a server version (the rule behind [`check_server`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionVerdict {
    Ok,
    /// Older than [`MIN_SERVER`], or unreadable.
    TooOld,
    /// A release with known JetStream data-loss bugs: [`DATA_LOSS_SERVERS`].
    DataLoss,
}

/// Releases refused for known data-loss bugs: 2.10.0 up to this patch, inclusive.
pub const DATA_LOSS_SERVERS: (u32, u32, u32) = (2, 10, 22);

pub fn server_version(version: &str) -> VersionVerdict {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (parts.next().flatten(), parts.next().flatten()) else {
        return VersionVerdict::TooOld;
    };
    if (major, minor) < MIN_SERVER {
        return VersionVerdict::TooOld;
    }
    let (bad_major, bad_minor, last_bad_patch) = DATA_LOSS_SERVERS;
    // A missing patch number counts as the first release of the minor.
    let patch = parts.next().flatten().unwrap_or(0);
    if (major, minor) == (bad_major, bad_minor) && patch <= last_bad_patch {
        return VersionVerdict::DataLoss;
    }
    VersionVerdict::Ok
}

pub fn version_ok(version: &str) -> bool {
    server_version(version) == VersionVerdict::Ok
}

#[cfg(test)]
mod tests {
    use super::VersionVerdict::{DataLoss, Ok, TooOld};

    #[test]
    fn versions() {
        for (v, want) in [
            ("2.15.1", Ok),
            ("2.12.3", Ok),
            ("2.10.23", Ok),
            ("2.10.24-RC.1", Ok),
            ("2.11.0", Ok),
            ("3.0.0", Ok),
            ("2.10.0", DataLoss),
            ("2.10.7", DataLoss),
            ("v2.10.22", DataLoss),
            ("2.10", DataLoss),
            ("2.9.10", TooOld),
            ("2.9.21", TooOld),
            ("1.4.0", TooOld),
            ("", TooOld),
            ("garbage", TooOld),
            ("v2.11.3-beta", Ok),
        ] {
            assert_eq!(super::server_version(v), want, "{v}");
            assert_eq!(super::version_ok(v), want == Ok, "{v}");
        }
    }

    #[test]
    fn the_refusal_says_why_and_what_to_do() {
        let e = super::NatsError::DataLoss {
            version: "2.10.7".into(),
            url: "nats://x:4222".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("2.10.7") && text.contains("data-loss"),
            "{text}"
        );
        assert!(
            text.contains("upgrade the server to 2.10.23 or newer"),
            "{text}"
        );
    }
}
