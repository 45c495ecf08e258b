//! Everything that touches NATS JetStream, shared by the `worker` and the
//! coordinator: connecting with credentials ([`connect`]), refusing servers
//! that cannot be trusted, creating or verifying every stream, consumer and
//! bucket ([`setup`]). Names come from `cascade_proto::wire`.
//!
//! [`store`] holds the typed stores (event log, task bus, claims, results,
//! leases, runs, ...): traits with their JetStream implementations, and
//! in-memory ones behind the `testing` feature.
//!
//! [`ops`] is the operations endpoint every swarm process serves (Prometheus
//! metrics, health and readiness, trace propagation).

pub mod clock;
pub mod connect;
pub mod grant;
pub mod ops;
pub mod setup;
mod spawn;
pub mod store;
pub mod verify;

pub use connect::{NatsArgs, NatsError, connect, connect_as, warn_if_single_node};
pub use setup::{QueueSettings, Swarm};
pub use spawn::spawn_named;
