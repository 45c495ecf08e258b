//! The Cascade coordinator: the cascade language ([`spec`]), the planner
//! ([`plan`]), the pure run state machine ([`engine`]), model routing
//! ([`routing`]), the drivers that perform the engine's effects
//! ([`driver`]) and the command line ([`cli`]).

pub mod cli;
pub mod driver;
pub mod engine;
pub mod plan;
pub mod routing;
pub mod spec;
