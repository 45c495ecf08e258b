//! The crate's one error type, [`Error`]: every typed error a module of
//! cascade-core returns, for a caller that handles them together. Each module
//! keeps its own specific enum (its functions return that, so a caller matches
//! only what can happen); each wraps into [`Error`] with `?`.
//!
//! Messages are lowercase and name the object (the file, stage or task); the
//! loader and the planner report through `Diagnostic`s instead, never
//! stopping at the first problem.

use crate::duration::DurationError;
use crate::engine::{IllegalTransition, StageError};
use crate::models::ModelsFileError;
use crate::spec::LoadError;

/// Anything a cascade-core function can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A duration (a cascade file, skill file, models file, flag or variable).
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A cascade file that cannot be read at all.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A models file that cannot be read at all.
    #[error(transparent)]
    ModelsFile(#[from] ModelsFileError),
    /// Why the engine failed a stage.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A phase change the run state machine refused.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
}
