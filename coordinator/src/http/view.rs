//! A run as the dashboard shows it: one row per stage in a layered order
//! (by dependency depth within each block, nested blocks under their
//! stage), each row versioned so a client asks only for what changed.
//!
//! ```text
//!  submission ─▶ plan (as the driver plans it) ─▶ layout: rows, levels, nesting
//!  event log  ─▶ engine.apply (read only, never an effect) ─▶ engine.report() ┐
//!  final report (cascade-reports), once the run is over ──────────────────────┴▶ rows
//!                                                        changed rows get a new version
//! ```
//! A view is refreshed at most every [`MIN_REFRESH`] and reads at most
//! [`MAX_ENTRIES`] log entries per refresh, so a page of a large run costs
//! the server bounded work per poll; the few most recently viewed runs are
//! cached ([`CACHED_RUNS`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_core::models::ModelCatalog;
use cascade_proto::RunId;
use cascade_proto::wire::{RunRecord, Submission};
use cascade_swarm::Swarm;
use cascade_swarm::store::{StoreError, Stores};
use serde_json::{Map, Value, json};

use cascade_core::engine::Engine;
use cascade_core::plan::{BlockId, NodeId, NodeKind, Plan};

/// A view is brought up to date at most this often (polls in between get
/// the rows as they are).
const MIN_REFRESH: Duration = Duration::from_millis(400);
/// Log entries applied per refresh at most; the next refresh goes on.
const MAX_ENTRIES: usize = 1024;
/// Runs whose views are kept.
const CACHED_RUNS: usize = 16;
/// Characters of a stage's output shown in a row.
const OUTPUT_PREVIEW: usize = 400;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ViewError {
    #[error("no run `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One stage's row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: String,
    /// Depth by dependencies within its block (0: no dependency).
    pub level: usize,
    /// Blocks it is nested in (branches, substages, sub-cascades).
    pub nest: usize,
    /// `stage › branch` for a row inside a composite stage.
    pub under: Option<String>,
    pub deps: Vec<String>,
    /// The row's fields as the API sends them.
    pub data: Map<String, Value>,
    hash: u64,
    pub version: u64,
}

/// What the run's header shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    pub cascade: String,
    pub state: String,
    pub owner: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub error: Option<String>,
    pub cancel_requested: Option<String>,
}

pub(crate) struct RunView {
    pub run_id: RunId,
    pub header: Header,
    pub rows: Vec<Row>,
    pos: HashMap<String, usize>,
    /// Bumped by every refresh that changed a row.
    pub version: u64,
    /// The run is over and its final report was read: nothing changes.
    pub finished: bool,
    /// Why the plan could not be shown (rows then come from the record).
    pub note: Option<String>,
    pub memory: Map<String, Value>,
    engine: Option<Engine>,
    plan_tried: bool,
    last_seq: u64,
    report: Option<Value>,
    refreshed: Option<Instant>,
}

type Shared = Arc<tokio::sync::Mutex<RunView>>;

/// The views of recently viewed runs, and their order of use (the least
/// recently viewed is dropped first).
#[derive(Default)]
pub(crate) struct Cache {
    views: std::sync::Mutex<(HashMap<RunId, Shared>, VecDeque<RunId>)>,
}

impl Cache {
    /// The run's view, refreshed; the guard keeps it consistent while read.
    pub async fn get(
        &self,
        swarm: &Swarm,
        models: &Arc<ModelCatalog>,
        run: &RunId,
    ) -> Result<tokio::sync::OwnedMutexGuard<RunView>, ViewError> {
        let view = {
            let mut guard = self
                .views
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (map, order) = &mut *guard;
            let view = map
                .entry(run.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(RunView::new(run.clone()))))
                .clone();
            order.retain(|r| r != run);
            order.push_back(run.clone());
            while order.len() > CACHED_RUNS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
            view
        };
        let mut view = view.lock_owned().await;
        view.refresh(swarm, models).await?;
        Ok(view)
    }
}

impl RunView {
    fn new(run_id: RunId) -> Self {
        RunView {
            run_id,
            header: Header::default(),
            rows: Vec::new(),
            pos: HashMap::new(),
            version: 0,
            finished: false,
            note: None,
            memory: Map::new(),
            engine: None,
            plan_tried: false,
            last_seq: 0,
            report: None,
            refreshed: None,
        }
    }

    async fn refresh(
        &mut self,
        swarm: &Swarm,
        models: &Arc<ModelCatalog>,
    ) -> Result<(), ViewError> {
        if self.finished || self.refreshed.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        self.refreshed = Some(Instant::now());
        let stores = swarm.stores();
        let record = stores.runs.get(&self.run_id).await?;
        let submission = if record.is_none() || !self.plan_tried {
            stores.submissions.get(&self.run_id).await?
        } else {
            None
        };
        if record.is_none() && submission.is_none() {
            return Err(ViewError::NotFound(self.run_id.to_string()));
        }
        if !self.plan_tried
            && let Some(sub) = &submission
        {
            self.plan_tried = true;
            self.lay_out(sub, models);
        }
        let Some(record) = record else {
            // Submitted, not started by any coordinator yet.
            self.header.state = "submitted".into();
            self.header.cascade = submission.map(|s| s.main).unwrap_or_default();
            return Ok(());
        };
        self.set_header(&record);
        if record.state.is_final()
            && let Some(report) = stores.reports.get(&self.run_id).await?
        {
            self.apply_report(&report);
            self.report = Some(report);
            self.engine = None;
            self.finished = true;
            return Ok(());
        }
        if self.engine.is_some() {
            self.tail_log(&stores).await?;
            if let Some(engine) = &self.engine {
                let report = serde_json::to_value(engine.report()).unwrap_or(Value::Null);
                self.apply_report(&report);
            }
        } else {
            self.apply_statuses(&record);
        }
        Ok(())
    }

    fn set_header(&mut self, r: &RunRecord) {
        self.header = Header {
            cascade: r.cascade.clone(),
            state: super::metrics::state_label(r.state).to_owned(),
            owner: r.owner.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            error: r.error.clone(),
            cancel_requested: r.cancel_requested.clone(),
        };
    }

    /// Rows from the plan of the submission, in layered order.
    fn lay_out(&mut self, sub: &Submission, models: &Arc<ModelCatalog>) {
        let plan = match plan_of(sub, models) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                self.note = Some(format!("the cascade does not plan: {e}"));
                return;
            }
        };
        let mut rows = Vec::with_capacity(plan.nodes.len());
        walk(&plan, plan.root, 0, None, &mut rows);
        self.pos = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        self.rows = rows;
        self.engine = Some(Engine::new(plan));
    }

    /// Applies the run's log entries written since the last refresh.
    async fn tail_log(&mut self, stores: &Stores) -> Result<(), ViewError> {
        for _ in 0..MAX_ENTRIES {
            let Some((seq, rec)) = stores
                .events
                .next_after(&self.run_id, self.last_seq)
                .await?
            else {
                break;
            };
            self.last_seq = seq;
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    self.note = Some(e.to_string());
                    continue;
                }
            };
            if let Some(engine) = &mut self.engine {
                for event in rec.events {
                    // Read only: the effects are the driver's to perform.
                    let _ = engine.apply(event, rec.at);
                }
            }
        }
        Ok(())
    }

    /// Rows from a report (the engine's live one or the final one).
    fn apply_report(&mut self, report: &Value) {
        if let Some(m) = report.get("memory_snapshot").and_then(Value::as_object) {
            self.memory = m.clone();
        }
        // The record names the file; the report the cascade.
        if let Some(name) = report.get("cascade").and_then(Value::as_str) {
            self.header.cascade = name.to_owned();
        }
        let Some(stages) = report.get("stages").and_then(Value::as_object) else {
            return;
        };
        let next = self.version + 1;
        let mut changed = false;
        for (id, stage) in stages {
            changed |= self.set_row(id, row_data(stage), next);
        }
        if changed {
            self.version = next;
        }
    }

    /// Without a plan: the statuses the record holds.
    fn apply_statuses(&mut self, r: &RunRecord) {
        let next = self.version + 1;
        let mut changed = false;
        for (id, status) in &r.stages {
            let mut data = Map::new();
            data.insert("status".into(), json!(status));
            changed |= self.set_row(id, data, next);
        }
        if changed {
            self.version = next;
        }
    }

    fn set_row(&mut self, id: &str, mut data: Map<String, Value>, version: u64) -> bool {
        let i = match self.pos.get(id) {
            Some(&i) => i,
            None => {
                self.rows.push(Row {
                    id: id.to_owned(),
                    level: 0,
                    nest: 0,
                    under: None,
                    deps: Vec::new(),
                    data: Map::new(),
                    hash: 0,
                    version: 0,
                });
                self.pos.insert(id.to_owned(), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        let mut h = DefaultHasher::new();
        serde_json::to_string(&data)
            .unwrap_or_default()
            .hash(&mut h);
        let hash = h.finish();
        if hash == row.hash && row.version > 0 {
            return false;
        }
        data.insert("i".into(), json!(i));
        data.insert("id".into(), json!(row.id));
        data.insert("level".into(), json!(row.level));
        data.insert("nest".into(), json!(row.nest));
        data.insert("deps".into(), json!(row.deps));
        if let Some(u) = &row.under {
            data.insert("under".into(), json!(u));
        }
        row.data = data;
        row.hash = hash;
        row.version = version;
        true
    }

    /// Stages per status.
    pub fn counts(&self) -> Map<String, Value> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for r in &self.rows {
            let s = r
                .data
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("pending");
            *counts.entry(s.to_owned()).or_default() += 1;
        }
        counts.into_iter().map(|(k, v)| (k, json!(v))).collect()
    }

    /// The run's report: the final one, or the engine's as of now.
    pub fn report(&self) -> Option<Value> {
        if let Some(r) = &self.report {
            return Some(r.clone());
        }
        self.engine
            .as_ref()
            .map(|e| serde_json::to_value(e.report()).unwrap_or(Value::Null))
    }

    /// Header and the rows changed after `since` (all rows for 0).
    pub fn to_json(&self, since: u64) -> Value {
        let stages: Vec<&Map<String, Value>> = self
            .rows
            .iter()
            .filter(|r| since == 0 || r.version > since)
            .map(|r| &r.data)
            .collect();
        json!({
            "run_id": self.run_id.as_str(),
            "cascade": self.header.cascade,
            "state": self.header.state,
            "owner": self.header.owner,
            "created_at": self.header.created_at,
            "updated_at": self.header.updated_at,
            "error": self.header.error,
            "cancel_requested": self.header.cancel_requested,
            "note": self.note,
            "finished": self.finished,
            "version": self.version,
            "since": since,
            "total": self.rows.len(),
            "counts": self.counts(),
            "stages": stages,
        })
    }
}

/// The fields of a row, from a stage of a report.
fn row_data(stage: &Value) -> Map<String, Value> {
    let mut d = Map::new();
    let get = |k: &str| stage.get(k).cloned().unwrap_or(Value::Null);
    for k in [
        "status",
        "type",
        "attempts",
        "duration",
        "branch_taken",
        "model_used",
        "started_at",
        "finished_at",
        "iterations",
    ] {
        d.insert(k.into(), get(k));
    }
    let list = |k: &str| -> String {
        stage
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    d.insert("workers".into(), json!(list("workers")));
    d.insert("skills".into(), json!(list("skills")));
    let error = stage
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            stage
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|a| a.last())
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    d.insert("error".into(), json!(error));
    let output = match stage.get("output") {
        None | Some(Value::Null) => String::new(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    };
    d.insert("output".into(), json!(preview(&output)));
    d
}

/// At most [`OUTPUT_PREVIEW`] characters, cut on a character boundary.
pub(crate) fn preview(s: &str) -> String {
    match s.char_indices().nth(OUTPUT_PREVIEW) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Rows of `block` in order of dependency depth (then as written), each
/// followed by the rows of the blocks it owns.
fn walk(plan: &Plan, block: BlockId, nest: usize, under: Option<&str>, out: &mut Vec<Row>) {
    let nodes = &plan.blocks[block].nodes;
    let levels = levels(plan, nodes);
    let mut order: Vec<(usize, usize, NodeId)> = nodes
        .iter()
        .enumerate()
        .map(|(pos, &n)| (levels.get(&n).copied().unwrap_or(0), pos, n))
        .collect();
    order.sort_unstable();
    for (level, _, n) in order {
        let node = &plan.nodes[n];
        out.push(Row {
            id: node.id.clone(),
            level,
            nest,
            under: under.map(str::to_owned),
            deps: node
                .deps
                .iter()
                .map(|&d| plan.nodes[d].id.clone())
                .collect(),
            data: Map::new(),
            hash: 0,
            version: 0,
        });
        match &node.kind {
            NodeKind::Branch { branches, .. } => {
                for b in branches {
                    let label = format!("{} › {}", node.id, b.name);
                    walk(plan, b.block, nest + 1, Some(&label), out);
                }
            }
            NodeKind::Group { block } | NodeKind::Sub { block, .. } => {
                walk(plan, *block, nest + 1, Some(&node.id), out);
            }
            NodeKind::Tasks { .. } | NodeKind::Pass => {}
        }
    }
}

/// Longest dependency path to each node of a block (dependencies stay
/// within the block, which is acyclic in a plan without errors).
fn levels(plan: &Plan, nodes: &[NodeId]) -> HashMap<NodeId, usize> {
    let mut level: HashMap<NodeId, usize> = HashMap::with_capacity(nodes.len());
    let mut indegree: HashMap<NodeId, usize> = nodes
        .iter()
        .map(|&n| (n, plan.nodes[n].deps.len()))
        .collect();
    let mut dependents: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &n in nodes {
        for &d in &plan.nodes[n].deps {
            dependents.entry(d).or_default().push(n);
        }
    }
    let mut ready: VecDeque<NodeId> = nodes
        .iter()
        .copied()
        .filter(|n| indegree.get(n) == Some(&0))
        .collect();
    while let Some(n) = ready.pop_front() {
        let l = *level.entry(n).or_insert(0);
        for &m in dependents.get(&n).map_or(&[][..], Vec::as_slice) {
            let lm = level.entry(m).or_insert(0);
            *lm = (*lm).max(l + 1);
            if let Some(d) = indegree.get_mut(&m) {
                *d = d.saturating_sub(1);
                if *d == 0 {
                    ready.push_back(m);
                }
            }
        }
    }
    level
}

/// The plan the driver runs for this submission (the driver's own
/// loading and options).
fn plan_of(
    sub: &Submission,
    models: &Arc<ModelCatalog>,
) -> Result<Plan, crate::driver::nats::PlanError> {
    crate::driver::nats::plan_of(sub, models).map(|(plan, _)| plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(yaml: &str) -> Vec<Row> {
        let sub = Submission {
            v: 1,
            run_id: RunId::new("r"),
            idempotency_key: None,
            main: "c.yaml".into(),
            files: [("c.yaml".to_owned(), yaml.to_owned())].into(),
            inputs: Map::new(),
            submitted_at: 0,
            submitted_by: String::new(),
        };
        let plan = plan_of(&sub, &Arc::new(ModelCatalog::builtin())).expect("plans");
        let mut rows = Vec::new();
        walk(&plan, plan.root, 0, None, &mut rows);
        rows
    }

    #[test]
    fn rows_are_layered_by_dependency_depth_with_nested_blocks_under_their_stage() {
        let rows = rows_of(
            "name: c\nstages:\n\
             \x20 - {stage: last, skill: noop, dependencies: [mid, first]}\n\
             \x20 - {stage: first, skill: noop, dependencies: []}\n\
             \x20 - {stage: mid, skill: noop, dependencies: [first]}\n\
             \x20 - stage: gate\n\
             \x20   dependencies: []\n\
             \x20   branches:\n\
             \x20     - {name: yes, condition: \"1 == 1\", stages: [{stage: inner, skill: noop}]}\n\
             \x20     - {name: no, default: true, stages: [{stage: other, skill: noop}]}\n",
        );
        let got: Vec<(&str, usize, usize)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.level, r.nest))
            .collect();
        assert_eq!(
            got,
            [
                ("first", 0, 0),
                ("gate", 0, 0),
                ("inner", 0, 1),
                ("other", 0, 1),
                ("mid", 1, 0),
                ("last", 2, 0),
            ]
        );
        assert_eq!(rows[2].under.as_deref(), Some("gate › yes"));
        assert_eq!(rows[5].deps, ["mid", "first"]);
    }

    #[test]
    fn a_changed_row_gets_the_new_version_and_an_unchanged_one_keeps_its_own() {
        let mut v = RunView::new(RunId::new("r"));
        let report = |a: &str, b: &str| json!({"stages": {"a": {"status": a}, "b": {"status": b}}, "memory_snapshot": {"k": 1}});
        v.apply_report(&report("running", "pending"));
        assert_eq!(v.version, 1);
        v.apply_report(&report("success", "pending"));
        assert_eq!(v.version, 2);
        let delta = v.to_json(1);
        assert_eq!(delta["stages"].as_array().map(Vec::len), Some(1));
        assert_eq!(delta["stages"][0]["id"], "a");
        assert_eq!(v.to_json(0)["stages"].as_array().map(Vec::len), Some(2));
        v.apply_report(&report("success", "pending"));
        assert_eq!(v.version, 2, "nothing changed");
        assert_eq!(v.memory["k"], 1);
        assert_eq!(
            preview(&"é".repeat(500)).chars().count(),
            OUTPUT_PREVIEW + 1
        );
    }
}
