//! What the planner is told and the names it reserves: shared by
//! [`compile`](super::compile) and [`check`](super::check), which both read
//! them, so neither imports the other for them.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::models::ModelCatalog;

/// What the planner may check beyond the file itself.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Every skill that exists (built-ins included); `None`: not checked.
    pub skills: Option<BTreeSet<String>>,
    /// The inputs the run will get; `None`: required inputs not checked.
    pub inputs: Option<Map<String, Value>>,
    /// The models file; `None`: the built-in default.
    pub models: Option<Arc<ModelCatalog>>,
    /// Skills that are model skills (known where the skill files are).
    pub model_skills: BTreeSet<String>,
}

/// The built-in skill that runs the sandboxed test-and-fix loop.
pub const SANDBOX_SKILL: &str = "codex-sandbox";

/// Ids that name context namespaces rather than stages.
pub const RESERVED_IDS: &[&str] = &[
    "inputs",
    "memory",
    "cascade",
    "timestamp",
    "failed_stage",
    "error_message",
    "item",
    "item_index",
    "iteration",
    "previous",
    "run_id",
];
