//! The `codex-sandbox` skill: run a project's tests in an isolated copy, ask a fixer for
//! changes until they pass, and hand back the patch.
//!
//! ```text
//!  LoopConfig::from_inputs ─► run_loop(cfg, fixer, cancel, progress) ─► LoopOutcome
//!                                │
//!   source ──copy──► <tmp>/work ─┤  each command: Jail::run
//!                                │    helper (cgroup, rlimits, landlock) ─► bwrap? ─► sh -c
//!                                │  output ─► parse::<runner> ─► TestReport
//!                                │  Fixer::propose ─► InPlace | Edits | Diff ─► tree diff
//!                                ▼
//!              outputs {status, iterations, history, patch, patch_file, tests, ...}
//! ```
//!
//! Modules: [`config`] (inputs), [`backend`] (what isolation exists here), [`helper`]
//! (the re-exec helper that applies limits and landlock: `unsafe` is forbidden, so no
//! `pre_exec`), [`cgroup`] (a pids cgroup per command where possible), [`runner`] (one
//! command in the jail), [`report`] and [`parse`] (test output), [`filter`] (re-running
//! only the failing tests), [`tree`] and [`patch`] (the copy, diffs, restoring, applying),
//! [`context`] (the files a fixer sees), [`fixer`] (the fixer trait, [`CommandFixer`]),
//! [`fixloop`] (the loop).
//!
//! Invariants: the source is never written unless `apply` is set and the loop ended
//! green; a run that collected no tests never counts as a success; a change that makes a
//! previously passing test fail is undone; nothing a command started outlives it.
//!
//! A binary that runs loops must call [`exec_helper_main`] first thing in `main`:
//!
//! ```ignore
//! if let Some(code) = cascade_exec::sandbox::exec_helper_main() { std::process::exit(code); }
//! ```

pub mod backend;
pub mod cgroup;
pub mod config;
pub mod context;
pub mod filter;
pub mod fixer;
pub mod fixloop;
pub mod helper;
pub mod parse;
pub mod patch;
mod protocol;
pub mod report;
pub mod runner;
mod supervise;
pub mod tree;

pub use backend::{
    Backend, BackendError, ProbeError, SandboxMode, capability, probe, process_limit_enforced,
};
pub use config::{ConfigError, FixerSpec, Limits, LoopConfig, resolve_backend};
pub use fixer::{
    CommandFixer, FixProposal, FixRequest, Fixer, IterationOutcome, IterationRecord, ProposeFuture,
};
pub use fixloop::{LoopOutcome, run_loop};
pub use helper::{
    HelperArgsError, HelperCheckError, HelperError, exec_helper_main, helper_binary,
    supervised_command,
};
pub use patch::FileEdit;
pub use report::{FailureCategory, Framework, TestCounts, TestFailure, TestReport};
pub use runner::{CommandOutput, Jail};
pub use tree::TreeError;
