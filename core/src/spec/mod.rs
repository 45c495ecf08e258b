//! The cascade language: reading files (YAML or JSON) into one normalised
//! model, with every problem reported at its file, line and column.
//!
//! ```text
//!  file ──yaml::parse──▶ Node tree (with locations, limits)
//!        ──normalize──▶ Cascade (one model for every variant)
//!        ──load───────▶ + sub-cascades resolved beside the file
//! ```
//! Graph-level checks (dependencies, cycles, references) belong to `plan`.

pub mod diag;
mod fields;
pub mod load;
pub mod model;
pub mod normalize;
pub mod schema;
pub mod yaml;

#[cfg(test)]
mod tests;

pub use diag::{Diagnostic, Severity};
pub use load::{LoadError, Loaded, collect_bundle, load_bundle, load_file, load_str};
pub use model::*;
pub use yaml::Loc;
