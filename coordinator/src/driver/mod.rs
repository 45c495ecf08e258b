//! Drivers: the I/O around the pure engine. A driver feeds the engine
//! events (task results, timers, cancellation) with the current time and
//! performs the effects it returns (dispatch, cancel, timers, memory).
//!
//! - [`local`]: the embedded default, everything in one process;
//! - the NATS JetStream driver arrives with the swarm.

pub mod local;
pub mod nats;
pub mod store;

pub use local::{LocalOptions, run_local};
pub use store::{FileMemoryStore, MemoryStore, StoreError};
