//! `coordinator doctor`: read-only checks of a swarm, one line each (ok,
//! warn or fail, and why): the server, every stream, bucket and the task
//! consumers (`cascade_swarm::verify`), whether this user may do the reads
//! its role needs, the clocks (this machine's and each worker's against the
//! server's write times), and whether a live worker offers every skill a
//! recent run needs. Nothing is created or changed.
//!
//! Exit codes: 0 every check ok or warn; 1 a check failed (an unreachable
//! server is one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cascade_core::models::ModelCatalog;
use cascade_core::plan::NodeKind;
use cascade_proto::Millis;
use cascade_proto::wire::{RunRecord, WorkerInfo};
use cascade_swarm::store::Stores;
use cascade_swarm::verify::{self, Check, Level};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use clap::Args;
use serde_json::json;

use super::{EXIT_OK, EXIT_RUN_FAILED};

/// Runs finished this long ago still count as recent for worker coverage.
const RECENT_MS: u64 = 24 * 3_600_000;
/// Clock differences under this are fine (a heartbeat's own latency).
const SKEW_WARN_MS: i64 = 2_000;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn doctor(a: DoctorArgs) -> u8 {
    let checks = checks(&a.nats).await;
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": !failed, "checks": checks}))
                .unwrap_or_default()
        );
    } else {
        for c in &checks {
            let level = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{level}  {}: {}", c.name, c.reason);
        }
    }
    if failed { EXIT_RUN_FAILED } else { EXIT_OK }
}

async fn checks(args: &NatsArgs) -> Vec<Check> {
    let client = match connect(args, "cascade-doctor").await {
        Ok(c) => c,
        Err(e) => return vec![Check::new("server", Level::Fail, e.to_string())],
    };
    let mut out = verify::check_server(&client);
    out.extend(verify::check_layout(&client).await);
    let swarm = match Swarm::open_existing(client, QueueSettings::default()).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::new("stores", Level::Fail, e.to_string()));
            return out;
        }
    };
    let stores = swarm.stores();
    let (perm, read) = permissions(&stores).await;
    out.push(perm);
    if let Some(workers) = &read.workers {
        out.push(clocks(workers, cascade_swarm::clock::now_ms()));
    }
    if let (Some(runs), Some(workers)) = (&read.runs, &read.workers) {
        out.push(coverage(&stores, runs, workers).await);
    }
    out
}

/// What the permission check read, for the checks after it.
#[derive(Default)]
struct Read {
    runs: Option<Vec<RunRecord>>,
    workers: Option<Vec<(WorkerInfo, Millis)>>,
}

/// The reads every client command needs (runs, workers, submissions,
/// reports, dead letters), tried: one that is refused fails the check.
async fn permissions(stores: &Stores) -> (Check, Read) {
    let mut refused = Vec::new();
    let mut read = Read::default();
    match stores.runs.list().await {
        Ok(r) => read.runs = Some(r),
        Err(e) => refused.push(format!("run records: {e}")),
    }
    match stores.registry.list_stamped().await {
        Ok(w) => read.workers = Some(w),
        Err(e) => refused.push(format!("workers: {e}")),
    }
    if let Err(e) = stores.dead_letters.list().await {
        refused.push(format!("dead letters: {e}"));
    }
    if let Some(run) = read
        .runs
        .as_ref()
        .and_then(|r| r.iter().max_by_key(|r| r.updated_at))
    {
        if let Err(e) = stores.submissions.get(&run.run_id).await {
            refused.push(format!("submissions: {e}"));
        }
        if let Err(e) = stores.reports.get(&run.run_id).await {
            refused.push(format!("reports: {e}"));
        }
    }
    let check = if refused.is_empty() {
        Check::new(
            "permissions",
            Level::Ok,
            "this user reads runs, submissions, reports, workers and dead letters",
        )
    } else {
        Check::new("permissions", Level::Fail, refused.join("; "))
    };
    (check, read)
}

/// Each worker's heartbeat carries its own clock (`heartbeat_at`) and the
/// server stamps the write: their difference is the worker's skew. This
/// machine's clock is bounded by the same entries: the server keeps an
/// entry only for the worker TTL, so the newest one was written between
/// one TTL ago and now.
fn clocks(workers: &[(WorkerInfo, Millis)], now: Millis) -> Check {
    let name = "clocks";
    if workers.is_empty() {
        return Check::new(
            name,
            Level::Warn,
            "no live worker: no server write time to compare with",
        );
    }
    let mut notes = Vec::new();
    let mut level = Level::Ok;
    for (w, at) in workers {
        let skew = signed(w.heartbeat_at) - signed(*at);
        if skew.abs() > SKEW_WARN_MS {
            level = Level::Warn;
            notes.push(format!("worker {} is {} the server", w.name, ahead(skew)));
        }
    }
    let newest = workers.iter().map(|(_, at)| *at).max().unwrap_or(0);
    let ttl = signed(QueueSettings::default().worker_ttl.as_millis() as u64);
    let behind = signed(newest) - signed(now);
    if behind > SKEW_WARN_MS {
        level = Level::Warn;
        notes.push(format!(
            "this machine is at least {} behind the server",
            ms(behind)
        ));
    } else if signed(now) - signed(newest) > ttl + SKEW_WARN_MS {
        level = Level::Warn;
        notes.push(format!(
            "this machine may be ahead of the server (its newest write is {} old, \
             past the default worker TTL)",
            ms(signed(now) - signed(newest))
        ));
    }
    if notes.is_empty() {
        notes.push(format!(
            "{} worker clocks and this machine's agree with the server's within {}",
            workers.len(),
            ms(SKEW_WARN_MS)
        ));
    } else {
        notes.push("leases do not compare clocks, but timestamps in logs and records do".into());
    }
    Check::new(name, level, notes.join("; "))
}

fn signed(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms(d: i64) -> String {
    format!("{:.1}s", d.unsigned_abs() as f64 / 1000.0)
}

fn ahead(skew: i64) -> String {
    if skew > 0 {
        format!("{} ahead of", ms(skew))
    } else {
        format!("{} behind", ms(skew))
    }
}

/// Every skill a recent run's plan uses, and whether a live worker offers
/// it: missing for a run still going fails (the stage waits for ever),
/// for a finished one warns.
async fn coverage(stores: &Stores, runs: &[RunRecord], workers: &[(WorkerInfo, Millis)]) -> Check {
    let name = "workers";
    let now = cascade_swarm::clock::now_ms();
    let offered: BTreeSet<&str> = workers
        .iter()
        .filter(|(w, _)| !w.draining)
        .flat_map(|(w, _)| w.skills.iter().map(String::as_str))
        .collect();
    let models = Arc::new(ModelCatalog::builtin());
    // Skill -> (needed by a live run, the runs needing it).
    let mut needed: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
    let mut unplanned = Vec::new();
    let mut considered = 0usize;
    for r in runs {
        let live = !r.state.is_final();
        if !live && now.saturating_sub(r.updated_at) > RECENT_MS {
            continue;
        }
        considered += 1;
        let sub = match stores.submissions.get(&r.run_id).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                unplanned.push(format!("{}: {e}", r.run_id));
                continue;
            }
        };
        let plan = match crate::driver::nats::plan_of(&sub, &models) {
            Ok((p, _)) => p,
            Err(e) => {
                unplanned.push(format!("{}: {e}", r.run_id));
                continue;
            }
        };
        for node in &plan.nodes {
            if let NodeKind::Tasks { skills, .. } = &node.kind {
                for s in skills {
                    let e = needed.entry(s.skill.clone()).or_default();
                    e.0 |= live;
                    e.1.insert(r.run_id.to_string());
                }
            }
        }
    }
    let mut missing_live = Vec::new();
    let mut missing_old = Vec::new();
    for (skill, (live, runs)) in &needed {
        if offered.contains(skill.as_str()) {
            continue;
        }
        let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
        let line = format!(
            "no live worker offers skill `{skill}` (runs {})",
            runs.join(", ")
        );
        if *live {
            missing_live.push(line);
        } else {
            missing_old.push(line);
        }
    }
    let mut notes: Vec<String> = missing_live.iter().chain(&missing_old).cloned().collect();
    notes.extend(unplanned.iter().map(|u| format!("cannot plan run {u}")));
    let level = if !missing_live.is_empty() {
        Level::Fail
    } else if !notes.is_empty() {
        Level::Warn
    } else {
        Level::Ok
    };
    if notes.is_empty() {
        notes.push(format!(
            "{} live workers cover the {} skills of {considered} recent runs",
            workers.len(),
            needed.len()
        ));
    }
    Check::new(name, level, notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, beat: Millis) -> WorkerInfo {
        serde_json::from_value(json!({
            "v": 1, "name": name, "skills": ["s"], "role": "member", "concurrency": 1,
            "in_flight": 0, "draining": false, "started_at": 0, "heartbeat_at": beat,
        }))
        .expect("worker info")
    }

    #[test]
    fn clocks_say_who_is_skewed() {
        let now = 1_000_000;
        let ok = clocks(&[(worker("a", now - 500), now - 600)], now);
        assert_eq!(ok.level, Level::Ok, "{}", ok.reason);
        let fast = clocks(&[(worker("a", now + 3_600_000), now - 100)], now);
        assert_eq!(fast.level, Level::Warn);
        assert!(fast.reason.contains("worker a is 3600"), "{}", fast.reason);
        let behind = clocks(&[(worker("a", now + 60_000), now + 60_000)], now);
        assert!(
            behind
                .reason
                .contains("this machine is at least 60.0s behind"),
            "{}",
            behind.reason
        );
        assert_eq!(clocks(&[], now).level, Level::Warn);
    }
}
