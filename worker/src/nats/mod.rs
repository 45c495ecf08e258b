//! The NATS layer shared by the `worker` and the coordinator's NATS
//! driver: connecting with credentials ([`connect`]), refusing servers that
//! cannot be trusted, and creating or verifying every stream, consumer and
//! bucket ([`setup`]). Names come from `cascade_proto::wire`.

pub mod connect;
pub mod setup;

pub use connect::{NatsArgs, NatsError, connect, warn_if_single_node};
pub use setup::{QueueSettings, Swarm};
