//! The Cascade coordinator: the cascade language ([`spec`]), the planner
//! ([`plan`]), the pure run state machine ([`engine`]), model routing
//! ([`routing`]), the drivers that perform the engine's effects
//! ([`driver`]), the command line ([`cli`]) and the HTTP endpoint of
//! `coordinator serve` ([`http`]: metrics, health, the dashboard).

pub mod cli;
pub mod driver;
pub mod engine;
pub mod http;
pub mod integrations;
pub mod plan;
pub mod routing;
pub mod spec;
