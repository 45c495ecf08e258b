//! The Cascade coordinator: the drivers that perform the engine's effects
//! ([`driver`]: embedded and over the swarm), the HTTP endpoint of
//! `coordinator serve` ([`http`]: metrics, health, the dashboard), what
//! happens around a run ([`integrations`]) and the command line ([`cli`]).
//! The language, planner and engine are `cascade_core`'s.

pub mod cli;
pub mod driver;
pub mod http;
pub mod integrations;
pub mod text;
