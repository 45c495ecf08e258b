//! What one worker process is: its name, skills, capacity, role, and the
//! queue settings it must share with the rest of the swarm. Built by the
//! binary from flags (or by tests directly) and checked by [`Config::validate`]
//! before anything touches the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cascade_proto::wire::WorkerRole;

use super::RunnerError;
use cascade_exec::skills::SkillRegistry;
use cascade_swarm::{NatsArgs, QueueSettings};

/// A worker's configuration. `Config::new` fills in the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unique within the swarm (the registry key and the star subject).
    pub name: String,
    /// Skills this worker takes from the mesh queues.
    pub skills: Vec<String>,
    /// Every skill this worker can run (built-ins plus skill files).
    pub registry: Arc<SkillRegistry>,
    pub nats: NatsArgs,
    /// Most tasks in flight at once, over all queues.
    pub concurrency: usize,
    pub labels: BTreeMap<String, String>,
    pub role: WorkerRole,
    /// Where skills run when the task does not name a directory that exists here.
    pub workdir: PathBuf,
    /// ack_wait and max_deliver shape the durable consumers: every process
    /// of a swarm must agree on them.
    pub settings: QueueSettings,
    /// How long in-flight tasks may run on after a drain starts.
    pub grace: Duration,
    /// The models file model skills call through; the models servable here
    /// (key set, CLI on PATH) are advertised in the registry.
    pub models: Arc<cascade_core::models::ModelCatalog>,
    /// Which tasks may run commands of the submitted cascade (hooks, sandbox
    /// test and fix commands): none by default.
    pub submitted_commands: cascade_exec::SubmittedCommands,
}

impl Config {
    pub fn new(name: impl Into<String>, skills: Vec<String>, registry: SkillRegistry) -> Self {
        Config {
            name: name.into(),
            skills,
            registry: Arc::new(registry),
            nats: NatsArgs::default(),
            concurrency: 4,
            labels: BTreeMap::new(),
            role: WorkerRole::Member,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            settings: QueueSettings::default(),
            grace: Duration::from_secs(30),
            models: Arc::new(cascade_core::models::ModelCatalog::builtin()),
            submitted_commands: cascade_exec::SubmittedCommands::default(),
        }
    }

    /// Every problem a worker can detect without a server, first found first.
    pub fn validate(&self) -> Result<(), RunnerError> {
        if self.name.trim().is_empty() {
            return Err(RunnerError::EmptyName);
        }
        if self.skills.is_empty() {
            return Err(RunnerError::NoSkills);
        }
        let unknown: Vec<String> = self
            .skills
            .iter()
            .filter(|s| !self.registry.contains(s))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(RunnerError::UnknownSkills {
                unknown,
                known: self.registry.names().collect::<Vec<_>>().join(", "),
            });
        }
        if self.concurrency == 0 {
            return Err(RunnerError::Concurrency);
        }
        Ok(())
    }
}

/// `<hostname>-<pid>`: unique per process on a host, readable in `workers`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `k=v,k2=v2` into a map; a pair without `=` or with an empty key is refused.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, RunnerError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => {
                return Err(RunnerError::Label {
                    pair: pair.to_owned(),
                });
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels("zone=a, gpu=true,,").expect("valid");
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert_eq!(l.len(), 2);
        assert!(parse_labels("zone").is_err());
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn unknown_skills_are_named() {
        let c = Config::new(
            "w",
            vec!["noop".into(), "lnt".into()],
            SkillRegistry::builtins(),
        );
        let e = c.validate().expect_err("unknown skill");
        assert!(e.is_config());
        assert!(e.to_string().contains("`lnt`"), "{e}");
    }
}
