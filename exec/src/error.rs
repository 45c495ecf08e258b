//! The crate's one error type, [`Error`]: every typed error a module of
//! cascade-exec returns, for a caller that handles them together. Each module
//! keeps its own enum (its functions return that, so a caller matches only
//! what can happen there); each wraps into [`Error`] with `?`.
//!
//! A task attempt never fails with these: [`crate::Executor::execute`] turns
//! every failure into a classified `cascade_proto::Failure` (data on the wire)
//! where it happens.

use crate::model::ModelError;
use crate::sandbox::{
    BackendError, ConfigError, HelperArgsError, HelperCheckError, HelperError, TreeError,
};
use crate::skills::SkillLoadError;

/// Anything a cascade-exec function can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A skills directory or skill file.
    #[error(transparent)]
    SkillLoad(#[from] SkillLoadError),
    /// A model call, classified.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The inputs of a `codex-sandbox` task.
    #[error(transparent)]
    SandboxConfig(#[from] ConfigError),
    /// The isolation a sandbox asks for is not available here.
    #[error(transparent)]
    SandboxBackend(#[from] BackendError),
    /// A path, a fixer's proposal, or applying the fix to the source.
    #[error(transparent)]
    SandboxTree(#[from] TreeError),
    /// The binary cannot serve as the sandbox helper.
    #[error(transparent)]
    HelperCheck(#[from] HelperCheckError),
    /// The sandbox helper's arguments.
    #[error(transparent)]
    HelperArgs(#[from] HelperArgsError),
    /// The sandbox helper could not apply its limits.
    #[error(transparent)]
    Helper(#[from] HelperError),
}
