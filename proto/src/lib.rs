//! The wire contract of Cascade.
//!
//! Everything that crosses a process boundary (today: the in-process task
//! channel of the embedded driver; with the swarm: NATS) is defined here and
//! nowhere else: the newtype ids, the task a worker runs, the result it
//! reports, and the MessagePack codec.
//!
//! Invariants:
//! - encoding is rmp-serde *named* (maps, not arrays), so a field can be added
//!   without breaking older readers;
//! - new fields are optional (`#[serde(default)]`); a field is never renamed or
//!   reused with another meaning;
//! - no logic, no I/O, no async runtime.

mod codec;
mod events;
mod ids;
pub mod permissions;
mod task;
pub mod wire;

pub use codec::{CodecError, Versioned, decode, decode_current, encode};
pub use events::{Event, EventRecord, Millis, TimerId};
pub use ids::{Attempt, RunId, SkillName, StageId, TaskId};
pub use task::{
    Failure, FailureClass, FailureKind, TaskBudget, TaskHook, TaskHooks, TaskOutcome, TaskResult,
    TaskSpec, Usage,
};

/// Version of the wire contract; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
