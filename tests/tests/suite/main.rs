//! Every integration test of the workspace, in one test binary: one link
//! instead of two dozen, and one place for fixtures and golden files. One
//! module per subject; a test's name is its module path
//! (`validate::every_invalid_file_reports_every_problem_and_matches_its_snapshot`).
//!
//! The tests that start `coordinator` or `worker` find them beside this
//! executable (`cascade_tests::binary`), so build them first:
//! `cargo build --workspace --bins` (`scripts/test` does). Fixtures live in
//! `tests/fixtures/` and the golden files in `snapshots/` beside this file.

// The harness itself.
mod harness;
// Helpers the modules share.
mod support;

// The `coordinator` binary offline: the command line, validation golden
// files, every example.
mod cli;
mod examples;
mod validate;

// The `${...}` language: property tests.
mod no_panic;

// The one duration grammar, through every file format and both binaries.
mod durations;

// The worker's parts in-process: skill loading and execution, model
// providers, model skills, the codex-sandbox loop and its jail.
mod execution;
mod loading;
mod model_cli;
mod model_http;
mod model_skill;
mod sandbox_loop;
mod sandbox_probes;

// Across crates in-process: the embedded driver, the swarm worker runner.
mod embedded;
mod worker_runner;

// Real processes against a real nats-server per test (a 3-node cluster in
// `cluster`).
mod ai_stages;
mod cluster;
mod dashboard;
mod integrations;
mod observability;
mod permissions;
mod swarm_cli;
mod swarm_examples;
mod swarm_faults;
// Every fault, seeded and measured (tests/FAULTS.md).
mod fault_matrix;
mod swarm_payloads;
mod swarm_setup;
mod worker_process;
