//! Running one task attempt on this machine: `TaskSpec` in, `TaskResult` out.
//!
//! - [`skills`] loads skill definitions (built-ins plus YAML/JSON files from
//!   skills directories) into an immutable [`SkillRegistry`], reporting every
//!   problem in every file at once.
//! - [`exec`] turns one [`cascade_proto::TaskSpec`] into one
//!   [`cascade_proto::TaskResult`]: built-ins run in-process, file skills run
//!   as child processes in their own process group.
//! - [`model`] calls model providers (HTTP APIs and CLI agents) under rate
//!   limits and circuit breakers; [`sandbox`] is the codex-sandbox
//!   test-and-fix loop.
//!
//! Errors: each module has its own `thiserror` enum, all wrapped by [`Error`]; a task's
//! failure is data ([`cascade_proto::Failure`]), classified where it happens.
//!
//! No NATS: the embedded driver and the swarm worker both call
//! [`Executor::execute`] and decide what to do with the result.

mod error;
pub mod exec;
pub mod model;
pub mod net;
pub mod sandbox;
pub mod skills;

pub use error::Error;
pub use exec::{Executor, SubmittedCommands};
pub use skills::{BUILTIN_SKILLS, SkillDef, SkillKind, SkillLoadError, SkillRegistry};
