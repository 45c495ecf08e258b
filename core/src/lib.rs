//! The pure core of Cascade: the cascade language ([`spec`]), the planner
//! ([`plan`]), the run state machine ([`engine`]), model routing
//! ([`routing`]), the models file ([`models`]) and the small helpers every
//! crate shares ([`duration`], [`suggest`], [`files`]). Errors: [`Error`]
//! wraps each module's own enum.
//!
//! Pure by construction: no tokio, no NATS, no HTTP (`.ci/run` checks the
//! dependency tree). The engine does no I/O and reads no clock; the drivers in
//! the `coordinator` perform its effects.

pub mod diff;
pub mod duration;
pub mod engine;
mod error;
pub mod files;
pub mod models;
pub mod plan;
pub mod routing;
pub mod spec;
/// Did-you-mean: in `eval`, the lowest crate with names to misspell.
pub use cascade_eval::suggest;

pub use error::Error;
