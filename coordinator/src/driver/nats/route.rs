//! Topologies as routing: where a task goes.
//!
//! - mesh (default): the skill's queue; every worker with the skill competes;
//! - star: the coordinator picks one worker by `strategy` and sends the task
//!   to that worker's own queue: balanced (fewest tasks in flight),
//!   specialized (narrowest skill set, then most matching labels), adaptive
//!   (best observed success rate, then latency);
//! - hierarchical: batches go to team leads, which fan out to members;
//! - `max_agents` caps the distinct workers a stage uses (star routing);
//! - swarm-recovery: a retry goes to a different worker than the one the
//!   task failed on.

use std::collections::{BTreeMap, BTreeSet};

use cascade_proto::Millis;
use cascade_proto::wire::{WorkerInfo, WorkerRole};
use dashmap::DashMap;

use cascade_core::spec::{Strategy, Topology};

/// What the driver knows of the workers: their heartbeats (from the
/// registry bucket) and what it observed of their work.
#[derive(Debug, Default)]
pub struct Registry {
    pub workers: DashMap<String, WorkerInfo>,
    pub observed: DashMap<String, Observed>,
}

#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub assigned: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub total_ms: u64,
}

impl Observed {
    /// Higher is better: success rate, with a prior so a new worker gets a
    /// chance, and latency breaking ties.
    fn score(&self) -> (u64, u64) {
        let done = self.succeeded + self.failed;
        let rate = (self.succeeded + 1) * 1000 / (done + 2);
        let mean = self.total_ms.checked_div(self.succeeded).unwrap_or(0);
        (rate, u64::MAX - mean)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Mesh,
    Worker(String),
    Lead(String),
}

/// Per-stage routing memory: which workers a stage has used.
#[derive(Debug, Default)]
pub struct StageAgents {
    pub used: BTreeMap<String, BTreeSet<String>>,
}

pub struct Want<'a> {
    pub stage: &'a str,
    pub skill: &'a str,
    pub topology: Topology,
    pub strategy: Strategy,
    pub max_agents: Option<u32>,
    pub labels: &'a BTreeMap<String, String>,
    /// Workers not to use (swarm-recovery: where it failed).
    pub avoid: Option<&'a str>,
    /// The task's model: only workers that advertise it can call it.
    pub model: Option<&'a str>,
}

impl Registry {
    /// Live workers (heartbeat within `ttl_ms`) with the skill, not draining.
    pub fn candidates(
        &self,
        skill: &str,
        role: Option<WorkerRole>,
        now: Millis,
        ttl_ms: u64,
    ) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .iter()
            .filter(|w| {
                !w.draining
                    && now.saturating_sub(w.heartbeat_at) <= ttl_ms
                    && w.skills.iter().any(|s| s == skill)
                    && role.is_none_or(|r| w.role == r)
            })
            .map(|w| w.value().clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether any live worker offers the skill (draining ones do not).
    pub fn offers(&self, skill: &str, now: Millis, ttl_ms: u64) -> bool {
        self.workers.iter().any(|w| {
            !w.draining
                && now.saturating_sub(w.heartbeat_at) <= ttl_ms
                && w.skills.iter().any(|s| s == skill)
        })
    }

    pub fn live_leads(&self, skill: &str, now: Millis, ttl_ms: u64) -> Vec<String> {
        self.candidates(skill, Some(WorkerRole::Lead), now, ttl_ms)
            .into_iter()
            .map(|w| w.name)
            .collect()
    }

    pub fn route(
        &self,
        want: &Want<'_>,
        agents: &mut StageAgents,
        now: Millis,
        ttl_ms: u64,
    ) -> Target {
        if want.topology == Topology::Hierarchical
            && let Some(lead) = self.live_leads(want.skill, now, ttl_ms).first()
        {
            return Target::Lead(lead.clone());
        }
        let mut pool = self.candidates(want.skill, None, now, ttl_ms);
        // A model only some of the skill's workers can call (key or CLI
        // present) goes to one of those; when none advertise it, the mesh
        // (the worker that claims it says which key is missing).
        let mut by_model = false;
        if let Some(m) = want.model {
            let serving = pool
                .iter()
                .filter(|w| w.models.iter().any(|x| x == m))
                .count();
            if serving > 0 && serving < pool.len() {
                pool.retain(|w| w.models.iter().any(|x| x == m));
                by_model = true;
            }
        }
        let direct = by_model
            || want.topology == Topology::Star
            || want.max_agents.is_some()
            || want.avoid.is_some();
        if !direct {
            return Target::Mesh;
        }
        if let Some(bad) = want.avoid
            && pool.iter().any(|w| w.name != bad)
        {
            pool.retain(|w| w.name != bad);
        }
        let used = agents.used.entry(want.stage.to_owned()).or_default();
        if let Some(cap) = want.max_agents
            && used.len() >= cap as usize
        {
            pool.retain(|w| used.contains(&w.name));
        }
        let Some(best) = self.pick(&pool, want) else {
            return Target::Mesh;
        };
        used.insert(best.clone());
        self.observed.entry(best.clone()).or_default().assigned += 1;
        Target::Worker(best)
    }

    fn in_flight(&self, w: &WorkerInfo) -> u64 {
        // What it reported, plus what we sent since its last heartbeat is
        // not known exactly: our own assignments count too.
        u64::from(w.in_flight)
            + self
                .observed
                .get(&w.name)
                .map_or(0, |o| o.assigned.saturating_sub(o.succeeded + o.failed))
    }

    fn pick(&self, pool: &[WorkerInfo], want: &Want<'_>) -> Option<String> {
        let best = match want.strategy {
            Strategy::Balanced => pool
                .iter()
                .min_by_key(|w| (self.in_flight(w), w.name.clone())),
            Strategy::Specialized => pool.iter().min_by_key(|w| {
                let matching = want
                    .labels
                    .iter()
                    .filter(|(k, v)| w.labels.get(*k) == Some(*v))
                    .count();
                (
                    w.skills.len(),
                    usize::MAX - matching,
                    self.in_flight(w),
                    w.name.clone(),
                )
            }),
            Strategy::Adaptive => pool.iter().max_by_key(|w| {
                let score = self
                    .observed
                    .get(&w.name)
                    .map(|o| o.score())
                    .unwrap_or((500, u64::MAX));
                (
                    score,
                    u64::MAX - self.in_flight(w),
                    std::cmp::Reverse(w.name.clone()),
                )
            }),
        };
        best.map(|w| w.name.clone())
    }

    pub fn record(&self, worker: &str, ok: bool, ms: u64) {
        let mut o = self.observed.entry(worker.to_owned()).or_default();
        if ok {
            o.succeeded += 1;
            o.total_ms += ms;
        } else {
            o.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, skills: &[&str], in_flight: u32) -> WorkerInfo {
        WorkerInfo {
            v: 1,
            name: name.into(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            role: WorkerRole::Member,
            concurrency: 4,
            in_flight,
            draining: false,
            started_at: 0,
            heartbeat_at: 1000,
            completed: 0,
            failed: 0,
            version: String::new(),
            models: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    fn want<'a>(
        topology: Topology,
        strategy: Strategy,
        labels: &'a BTreeMap<String, String>,
    ) -> Want<'a> {
        Want {
            stage: "s",
            skill: "lint",
            topology,
            strategy,
            max_agents: None,
            labels,
            avoid: None,
            model: None,
        }
    }

    #[test]
    fn a_model_goes_to_a_worker_that_can_call_it() {
        let r = Registry::default();
        let mut keyed = worker("keyed", &["lint"], 3);
        keyed.models = vec!["claude".into()];
        r.workers.insert("keyed".into(), keyed);
        r.workers
            .insert("plain".into(), worker("plain", &["lint"], 0));
        let labels = BTreeMap::new();
        let mut w = want(Topology::Mesh, Strategy::Balanced, &labels);
        w.model = Some("claude");
        let mut agents = StageAgents::default();
        assert_eq!(
            r.route(&w, &mut agents, 1000, 5000),
            Target::Worker("keyed".into())
        );
        // Nobody advertises it: the mesh, where the worker says what is missing.
        w.model = Some("gemini");
        assert_eq!(r.route(&w, &mut agents, 1000, 5000), Target::Mesh);
    }

    #[test]
    fn strategies_pick_as_documented() {
        let r = Registry::default();
        r.workers
            .insert("a".into(), worker("a", &["lint", "test", "build"], 0));
        r.workers.insert("b".into(), worker("b", &["lint"], 3));
        r.workers.insert("c".into(), worker("c", &["test"], 0));
        let labels = BTreeMap::new();
        let mut agents = StageAgents::default();
        assert_eq!(
            r.route(
                &want(Topology::Mesh, Strategy::Balanced, &labels),
                &mut agents,
                1000,
                5000
            ),
            Target::Mesh
        );
        assert_eq!(
            r.route(
                &want(Topology::Star, Strategy::Balanced, &labels),
                &mut agents,
                1000,
                5000
            ),
            Target::Worker("a".into())
        );
        assert_eq!(
            r.route(
                &want(Topology::Star, Strategy::Specialized, &labels),
                &mut agents,
                1000,
                5000
            ),
            Target::Worker("b".into())
        );
        r.record("a", false, 10);
        r.record("a", false, 10);
        r.record("b", true, 10);
        assert_eq!(
            r.route(
                &want(Topology::Star, Strategy::Adaptive, &labels),
                &mut agents,
                1000,
                5000
            ),
            Target::Worker("b".into())
        );
    }

    #[test]
    fn max_agents_and_avoid() {
        let r = Registry::default();
        for n in ["a", "b", "c"] {
            r.workers.insert(n.into(), worker(n, &["lint"], 0));
        }
        let labels = BTreeMap::new();
        let mut agents = StageAgents::default();
        let mut w = want(Topology::Mesh, Strategy::Balanced, &labels);
        w.max_agents = Some(2);
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            if let Target::Worker(n) = r.route(&w, &mut agents, 1000, 5000) {
                seen.insert(n);
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        let mut w = want(Topology::Mesh, Strategy::Balanced, &labels);
        w.avoid = Some("a");
        for _ in 0..5 {
            assert_ne!(
                r.route(&w, &mut StageAgents::default(), 1000, 5000),
                Target::Worker("a".into())
            );
        }
    }

    #[test]
    fn dead_and_draining_workers_are_not_candidates() {
        let r = Registry::default();
        r.workers.insert("old".into(), worker("old", &["lint"], 0));
        let mut d = worker("d", &["lint"], 0);
        d.draining = true;
        r.workers.insert("d".into(), d);
        assert!(r.candidates("lint", None, 100_000, 5000).is_empty());
    }
}
