//! The worker side of Cascade: which skills exist and how one attempt of a
//! task runs.
//!
//! - [`skills`] loads skill definitions (built-ins plus YAML/JSON files from
//!   skills directories) into an immutable [`SkillRegistry`], reporting every
//!   problem in every file at once.
//! - [`exec`] turns one [`cascade_proto::TaskSpec`] into one
//!   [`cascade_proto::TaskResult`]: built-ins run in-process, file skills run
//!   as child processes in their own process group.
//!
//! - [`nats`] is the NATS layer shared with the coordinator: connecting
//!   with credentials, checking the server, creating and verifying streams,
//!   buckets and consumers.
//!
//! - [`http`] is the operations endpoint of the `worker` and `coordinator
//!   serve` processes: Prometheus metrics, health and readiness, traces.
//!
//! The embedded driver and the swarm worker both call [`Executor::execute`]
//! and decide what to do with the result.

pub mod exec;
pub mod http;
pub mod model;
pub mod nats;
pub mod runner;
pub mod sandbox;
pub mod skills;

pub use exec::Executor;
pub use skills::{BUILTIN_SKILLS, SkillDef, SkillKind, SkillLoadError, SkillRegistry};
