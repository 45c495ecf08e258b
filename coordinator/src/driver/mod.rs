//! Drivers: the I/O around the pure engine. A driver feeds the engine
//! events (task results, timers, cancellation) with the current time and
//! performs the effects it returns (dispatch, cancel, timers, memory).
//!
//! - [`local`]: the embedded default, everything in one process;
//! - [`nats`]: the swarm, over the typed stores of `cascade-swarm`;
//! - [`effects`]: what both share, the timers and the effect interpreter.

pub mod effects;
pub mod local;
pub mod metrics;
pub mod nats;
pub mod store;

pub use local::{LocalOptions, run_local};
pub use store::{FileMemoryStore, MemoryStore, StoreError};
