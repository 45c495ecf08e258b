//! The `worker` process: pull loops with backpressure, claims, progress acks,
//! results, cancels, drain and team leads ([`runner`]). What one attempt does
//! is `cascade_exec`'s; how the swarm stores are read and written is
//! `cascade_swarm`'s.

pub mod runner;
