//! The planner: a pure function from a loaded [`Cascade`] to a [`Plan`],
//! the DAG the engine runs, returning *all* graph problems at once.
//!
//! ```text
//! Plan
//!  ├─ scopes[0]  the cascade (inputs, its stage ids)      one per sub-cascade use
//!  ├─ blocks[0]  the top-level stage list ─┐             blocks: branch stages,
//!  │                                       ├─ nodes      substages, sub-cascades
//!  └─ nodes[i]   one per stage, deps within its block
//! ```
//! Invariants of a plan that compiled without errors:
//! - every dependency is a node of the same block, and each block is acyclic;
//! - a repeat target is the node itself or one of its ancestors, and
//!   `loop_body` lists the nodes between them (inclusive);
//! - node ids are unique; nested sub-cascade nodes are `parent/child`.

mod check;
mod compile;
mod options;
pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use std::sync::Arc;

use crate::models::ModelCatalog;

use crate::spec::{
    Budget, CondSpec, Diagnostic, ErrorHandling, InputDecl, Loc, MemoryConfig, Select, SkillRef,
    StageMemory, StageType, SwarmConfig,
};

pub use compile::compile;
pub use options::{PlanOptions, SANDBOX_SKILL};
pub use render::{Format, render};

pub type NodeId = usize;
pub type BlockId = usize;
pub type ScopeId = usize;

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub nodes: Vec<PlanNode>,
    pub blocks: Vec<Block>,
    pub scopes: Vec<Scope>,
    pub root: BlockId,
    pub memory: MemoryConfig,
    pub timeout: Option<Duration>,
    /// The run's model budget.
    pub budget: Option<Budget>,
    /// The models file: routing, context limits, prices, fallback chains.
    pub models: Arc<ModelCatalog>,
    /// Skills known to be model skills (`prompt:`): their tasks get the
    /// context for their prompt even when the stage names no model.
    pub model_skills: std::collections::BTreeSet<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The namespace a set of stages reads: the cascade's own inputs and stage
/// ids. Branch stages and substages share their parent's scope; a
/// sub-cascade gets a new one.
#[derive(Clone, Debug)]
pub struct Scope {
    pub cascade: String,
    pub version: String,
    pub inputs: Vec<InputDecl>,
    pub dir: PathBuf,
    pub parent: Option<(ScopeId, NodeId)>,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub nodes: Vec<NodeId>,
    pub owner: Option<NodeId>,
    pub scope: ScopeId,
}

#[derive(Clone, Debug)]
pub struct PlanNode {
    /// Unique in the plan; `parent/child` inside sub-cascades.
    pub id: String,
    /// The stage id as written: the key of its outputs in its scope's context.
    pub local_id: String,
    pub name: Option<String>,
    pub block: BlockId,
    pub scope: ScopeId,
    pub deps: Vec<NodeId>,
    pub ty: StageType,
    pub kind: NodeKind,
    pub model: Option<String>,
    pub inputs: Map<String, Value>,
    pub input_locs: std::collections::BTreeMap<String, Loc>,
    /// A gate: when false the stage is skipped. With `repeat` it is the
    /// loop condition instead; with branches, the selector.
    pub condition: Option<CondSpec>,
    pub repeat: Option<Repeat>,
    pub error: ErrorHandling,
    pub timeout: Option<Duration>,
    pub task_timeout: Option<Duration>,
    pub memory: StageMemory,
    pub swarm: Option<SwarmConfig>,
    /// Most tasks of this stage running at once (`swarm_config.max_agents`).
    pub max_parallel: Option<u32>,
    /// Whether a failure here stops the run (strategy `fail` and no
    /// `continue_on_failure`).
    pub fail_fast: bool,
    /// `models: [..]`: each task runs once per model; `select` combines.
    pub models: Vec<String>,
    pub select: Option<Select>,
    /// The stage's model budget.
    pub budget: Option<Budget>,
    /// Settings of the sandbox loop that `codex-auto-fix` runs.
    pub sandbox: Map<String, Value>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// Runs skills: one after another, or all at once (`parallel`), once or
    /// per `for_each` item.
    Tasks {
        skills: Vec<SkillRef>,
        parallel: bool,
        for_each: Option<Value>,
    },
    /// No skill: the stage's outputs are its rendered inputs.
    Pass,
    /// A conditional: one branch's block runs, the others are skipped.
    Branch {
        branches: Vec<PlanBranch>,
        default: Option<usize>,
        selector: BranchSelector,
    },
    /// `substages`: a block in the same scope.
    Group { block: BlockId },
    /// `cascade: NAME`: a block in a new scope whose inputs are this
    /// stage's rendered inputs.
    Sub {
        block: BlockId,
        scope: ScopeId,
        cascade: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchSelector {
    /// First branch whose condition holds.
    FirstMatch,
    /// The stage's condition may name a branch; else first match.
    Named,
    /// The stage's condition picks `pass` (true) or `fail` (false).
    PassFail,
}

#[derive(Clone, Debug)]
pub struct PlanBranch {
    pub name: String,
    pub condition: Option<CondSpec>,
    pub block: BlockId,
}

#[derive(Clone, Debug)]
pub struct Repeat {
    pub target: NodeId,
    pub max_iterations: u32,
    /// Nodes re-run on each iteration, in block order (target ..= this node).
    pub body: Vec<NodeId>,
}

impl Plan {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Every node nested under `block`, recursively (for skipping a branch).
    pub fn nodes_within(&self, block: BlockId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut stack = vec![block];
        while let Some(b) = stack.pop() {
            for &n in &self.blocks[b].nodes {
                out.push(n);
                stack.extend(self.child_blocks(n));
            }
        }
        out
    }

    pub fn child_blocks(&self, node: NodeId) -> Vec<BlockId> {
        match &self.nodes[node].kind {
            NodeKind::Branch { branches, .. } => branches.iter().map(|b| b.block).collect(),
            NodeKind::Group { block } | NodeKind::Sub { block, .. } => vec![*block],
            NodeKind::Tasks { .. } | NodeKind::Pass => Vec::new(),
        }
    }

    pub fn node_by_id(&self, id: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.id == id)
    }
}
