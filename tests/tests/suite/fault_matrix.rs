//! The fault matrix: each fault applied to a real swarm (nats-server,
//! `coordinator serve`, workers) running the same fan-out, once per seed,
//! and measured: runs, tasks, lost, executed twice, completed twice, stuck.
//!
//! ```text
//!  seed ─▶ when the fault strikes (after k of the tasks started) and which process
//!  fan-out of TASKS stages ─▶ each appends `start <stage>` / `done <stage>` to files
//!  measured:  lost            stages not successful in the results
//!             executed twice  stages with more than one `done` (at-least-once: counted)
//!             completed twice stages credited to more than one worker for one attempt
//!             stuck           the run did not end within its deadline
//! ```
//! Every fault is its own test (they run in parallel); each writes its row
//! to `target/fault-matrix/<fault>.json`, which `scripts/faults` gathers
//! into `tests/FAULTS.md`. `CASCADE_FAULT_SEEDS` sets the seeds per fault
//! (default 3, as CI runs it; `scripts/faults --seeds 20` for the full
//! matrix). Expected in every cell: 0 lost, 0 completed twice, 0 stuck.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cascade_tests::{TestSwarm, await_condition, write_tree};
use serde_json::{Value, json};

/// Stages of the fan-out.
const TASKS: usize = 12;
/// How long a run may take before it counts as stuck.
const DEADLINE: Duration = Duration::from_secs(90);

fn seeds() -> u64 {
    std::env::var("CASCADE_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// One seeded run's numbers.
#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    runs: u64,
    tasks: u64,
    lost: u64,
    executed_twice: u64,
    completed_twice: u64,
    stuck: u64,
}

impl Cell {
    fn add(&mut self, o: Cell) {
        self.runs += o.runs;
        self.tasks += o.tasks;
        self.lost += o.lost;
        self.executed_twice += o.executed_twice;
        self.completed_twice += o.completed_twice;
        self.stuck += o.stuck;
    }
}

/// A small deterministic generator (splitmix64): the seed decides when a
/// fault strikes and where.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The workload's files and the cascade.
struct Workload {
    dir: tempfile::TempDir,
}

impl Workload {
    /// `poison`: one stage whose skill kills the worker running it.
    fn new(poison: bool) -> Workload {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let mut stages = String::new();
        for i in 0..TASKS {
            stages.push_str(&format!("  - stage: t{i:02}\n    skill: work\n"));
        }
        if poison {
            stages.push_str("  - stage: poison\n    skill: crash\n");
        }
        write_tree(
            dir.path(),
            &[
                (
                    "skills/work.yaml",
                    &format!(
                        "run: |\n  echo \"$CASCADE_STAGE_ID\" >> {d}/starts\n  sleep 0.4\n  echo \"$CASCADE_STAGE_ID\" >> {d}/dones\n  echo '{{}}'\n"
                    ),
                ),
                // The skill's parent is the supervising helper; its
                // parent, the worker.
                (
                    "skills/crash.yaml",
                    "run: kill -9 $(ps -o ppid= -p $PPID); sleep 5\n",
                ),
                ("c.yaml", &format!("name: matrix\nstages:\n{stages}")),
            ],
        );
        Workload { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("c.yaml")
    }

    fn skills(&self) -> String {
        self.dir.path().join("skills").display().to_string()
    }

    fn count(&self, name: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        for line in text.lines() {
            *out.entry(line.to_owned()).or_default() += 1;
        }
        out
    }

    fn started(&self) -> usize {
        self.count("starts").values().sum::<u64>() as usize
    }
}

/// A `submit --wait` running on a thread.
struct Waiting {
    handle: std::thread::JoinHandle<(i32, String)>,
    out: PathBuf,
}

fn submit(swarm: &TestSwarm, w: &Workload, name: &str, extra: &[&str]) -> Waiting {
    let out = w.dir.path().join(format!("{name}.json"));
    let mut cmd = swarm.coordinator_cmd();
    cmd.arg("submit")
        .arg(w.file())
        .args(["--wait", "--output"])
        .arg(&out)
        .args(extra);
    let handle = std::thread::spawn(move || {
        let o = cmd.output().expect("submit");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    });
    Waiting { handle, out }
}

/// Waits for the run to end (or its deadline) and measures it. `expected`:
/// the stages that must succeed.
fn measure(w: &Workload, waiting: Waiting, started: Instant, expected: &[String]) -> Cell {
    let mut cell = Cell {
        runs: 1,
        tasks: expected.len() as u64,
        ..Cell::default()
    };
    while !waiting.handle.is_finished() {
        if started.elapsed() > DEADLINE {
            cell.stuck = 1;
            cell.lost = expected.len() as u64;
            return cell;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = waiting.handle.join();
    let report: Value = std::fs::read(&waiting.out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let dones = w.count("dones");
    for stage in expected {
        let s = &report["stages"][stage];
        if s["status"] != "success" {
            cell.lost += 1;
        }
        if dones.get(stage).copied().unwrap_or(0) > 1 {
            cell.executed_twice += 1;
        }
        let workers = s["workers"].as_array().map_or(0, Vec::len) as u64;
        let attempts = s["attempts"].as_u64().unwrap_or(1);
        if workers > attempts {
            cell.completed_twice += 1;
        }
    }
    cell
}

fn stages() -> Vec<String> {
    (0..TASKS).map(|i| format!("t{i:02}")).collect()
}

/// Waits until `k` tasks started (the moment the fault strikes).
fn after_starts(w: &Workload, k: usize) {
    await_condition("tasks to start", Duration::from_secs(60), || {
        (w.started() >= k).then_some(())
    });
}

fn workers(swarm: &mut TestSwarm, w: &Workload, names: &[&str]) {
    let skills = w.skills();
    for name in names {
        swarm.start_worker(
            name,
            "work,crash",
            &["--skills-dir", &skills, "--concurrency", "2"],
        );
    }
}

/// The common shape of a fault: one coordinator, two workers, the fan-out
/// submitted; `strike` is applied once some tasks (1 to `upto`, from the
/// seed) started.
fn struck(
    rng: &mut Rng,
    upto: u64,
    strike: impl FnOnce(&mut TestSwarm, &Workload, &mut Rng),
) -> Cell {
    let w = Workload::new(false);
    let mut swarm = TestSwarm::new();
    swarm.start_coordinator("c1");
    workers(&mut swarm, &w, &["w1", "w2"]);
    let t = Instant::now();
    let run = submit(&swarm, &w, "r", &[]);
    after_starts(&w, 1 + rng.below(upto) as usize);
    strike(&mut swarm, &w, rng);
    measure(&w, run, t, &stages())
}

/// The tests' ack window.
fn ack_wait() -> Duration {
    cascade_core::duration::parse_duration(cascade_tests::TEST_ACK_WAIT).expect("ack wait")
}

/// Runs `fault` once per seed and records its row; asserts the invariants.
fn matrix(fault: &str, mut one: impl FnMut(&mut Rng) -> Cell) {
    let mut total = Cell::default();
    for seed in 0..seeds() {
        let mut rng = Rng(seed.wrapping_mul(7919).wrapping_add(fault.len() as u64));
        let cell = one(&mut rng);
        eprintln!("{fault} seed {seed}: {cell:?}");
        total.add(cell);
    }
    let row = json!({
        "fault": fault,
        "seeds": seeds(),
        "runs": total.runs,
        "tasks": total.tasks,
        "lost": total.lost,
        "executed_twice": total.executed_twice,
        "completed_twice": total.completed_twice,
        "stuck": total.stuck,
    });
    let dir = rows_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{fault}.json")), row.to_string());
    assert_eq!(
        (total.lost, total.completed_twice, total.stuck),
        (0, 0, 0),
        "{fault}: {row}"
    );
}

/// `target/fault-matrix/` of this build.
fn rows_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/debug/deps/suite-… -> target/fault-matrix
    exe.ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .join("fault-matrix")
}

#[test]
fn worker_kill_mid_task() {
    matrix("worker kill mid-task", |rng| {
        struck(rng, TASKS as u64 / 2, |swarm, w, rng| {
            let victim = rng.below(2) as usize;
            swarm.workers[victim].kill();
            workers(swarm, w, &["w3"]);
        })
    });
}

#[test]
fn coordinator_kill() {
    matrix("coordinator kill", |rng| {
        struck(rng, TASKS as u64 - 1, |swarm, _, _| {
            swarm.coordinators[0].kill();
            swarm.start_coordinator("c2");
        })
    });
}

#[test]
fn two_coordinators_owner_killed() {
    matrix("two coordinators, the owner killed", |rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        swarm.start_coordinator("c1");
        swarm.start_coordinator("c2");
        workers(&mut swarm, &w, &["w1", "w2"]);
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        after_starts(&w, 1 + rng.below(TASKS as u64 - 1) as usize);
        // Whichever drives it: the status names the owner.
        let owner = crate::support::latest_run(&swarm, "owner").unwrap_or_default();
        let i = usize::from(owner == "c2");
        swarm.coordinators[i].kill();
        measure(&w, run, t, &stages())
    });
}

#[test]
fn server_restart() {
    matrix("server restart", |rng| {
        struck(rng, TASKS as u64 - 1, |swarm, _, _| swarm.nats.restart())
    });
}

#[test]
fn worker_paused_past_ack_wait() {
    matrix("worker paused past ack-wait", |rng| {
        struck(rng, TASKS as u64 / 2, |swarm, _, rng| {
            let victim = rng.below(2) as usize;
            swarm.workers[victim].signal("STOP");
            // Past its ack window: its tasks go elsewhere.
            std::thread::sleep(ack_wait() + Duration::from_millis(500 + rng.below(1500)));
            swarm.workers[victim].signal("CONT");
        })
    });
}

#[test]
fn parallel_duplicate_submits() {
    matrix("parallel duplicate submits", |rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        swarm.start_coordinator("c1");
        workers(&mut swarm, &w, &["w1", "w2"]);
        let t = Instant::now();
        let key = format!("dup-{}", rng.next());
        let runs: Vec<Waiting> = (0..5)
            .map(|i| submit(&swarm, &w, &format!("r{i}"), &["--idempotency-key", &key]))
            .collect();
        let mut cells = Cell::default();
        let mut first = None;
        for r in runs {
            let cell = measure(&w, r, t, &stages());
            first.get_or_insert(cell);
            cells.lost += cell.lost;
            cells.stuck += cell.stuck;
        }
        let mut cell = first.unwrap_or_default();
        cell.lost = cells.lost;
        cell.stuck = cells.stuck;
        // One run: each stage executed once although five submitted it.
        let dones = w.count("dones");
        cell.executed_twice = dones.values().filter(|n| **n > 1).count() as u64;
        cell
    });
}

#[test]
fn poison_task() {
    matrix("poison task", |_rng| {
        let w = Workload::new(true);
        let mut swarm = TestSwarm::new();
        swarm.env.push(("CASCADE_MAX_DELIVER".into(), "2".into()));
        swarm.start_coordinator("c1");
        workers(&mut swarm, &w, &["w1", "w2"]);
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        // Replace each worker the poison kills until the run ends.
        let mut next = 3;
        while !run.handle.is_finished() && t.elapsed() < DEADLINE && next < 12 {
            if let Some(i) = swarm
                .workers
                .iter_mut()
                .position(|p| matches!(p.child.try_wait(), Ok(Some(_))))
            {
                swarm.workers.remove(i);
                workers(&mut swarm, &w, &[&format!("w{next}")]);
                next += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = run.out.clone();
        let cell = measure(&w, run, t, &stages());
        // The poison itself must end dead-lettered, not stuck.
        let report: Value = std::fs::read(&out)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let error = report["stages"]["poison"]["error"].as_str().unwrap_or("");
        assert!(error.contains("dead-lettered"), "{report}");
        cell
    });
}

#[test]
fn clock_skew() {
    let Some(lib) = crate::support::faketime() else {
        return;
    };
    matrix("clock skew (owner +1 h, killed)", |rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        let fast =
            swarm.start_coordinator_with("c-fast", &[("LD_PRELOAD", lib), ("FAKETIME", "+1h")]);
        workers(&mut swarm, &w, &["w1", "w2"]);
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        after_starts(&w, 1 + rng.below(TASKS as u64 - 1) as usize);
        swarm.start_coordinator_with("c-slow", &[("LD_PRELOAD", lib), ("FAKETIME", "-5m")]);
        swarm.coordinators[fast].kill();
        measure(&w, run, t, &stages())
    });
}

#[test]
fn version_gate() {
    matrix("version gate", |_rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        swarm.start_coordinator("c1");
        workers(&mut swarm, &w, &["w1", "w2"]);
        // A submission of another protocol version beside a good run.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let client = async_nats::connect(&swarm.nats.client_url)
                .await
                .expect("connect");
            let sub = json!({"v": 99, "run_id": "future", "main": "c.yaml", "files": {}, "inputs": {}, "submitted_at": 0});
            let bytes = rmp_serde_bytes(&sub);
            client
                .publish(cascade_proto::wire::SUBJECT_SUBMIT, bytes.into())
                .await
                .expect("publish");
            client.flush().await.expect("flush");
        });
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        let cell = measure(&w, run, t, &stages());
        let o = swarm
            .coordinator_cmd()
            .args(["status", "future", "--json"])
            .output()
            .expect("status");
        assert!(!o.status.success(), "the v99 submission never became a run");
        cell
    });
}

fn rmp_serde_bytes(v: &Value) -> Vec<u8> {
    cascade_proto::encode(v).expect("encodes")
}

#[test]
fn slow_worker_with_late_acks() {
    matrix("slow worker with late acks", |rng| {
        struck(rng, TASKS as u64 / 2, |swarm, _, rng| {
            // One worker keeps missing its ack windows: stopped past one,
            // running for a moment, stopped again.
            let slow = rng.below(2) as usize;
            for _ in 0..3 {
                swarm.workers[slow].signal("STOP");
                std::thread::sleep(ack_wait() + Duration::from_millis(200 + rng.below(600)));
                swarm.workers[slow].signal("CONT");
                std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
            }
        })
    });
}

#[test]
fn redelivery_storm() {
    matrix("redelivery storm", |rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        swarm.start_coordinator("c1");
        let skills = w.skills();
        for name in ["w1", "w2"] {
            swarm.start_worker(
                name,
                "work",
                &["--skills-dir", &skills, "--concurrency", "6"],
            );
        }
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        after_starts(&w, 1 + rng.below(TASKS as u64 / 2) as usize);
        // Every worker dies with its deliveries in flight: they all come
        // back at once, one ack window later, to the new ones.
        for p in &mut swarm.workers {
            p.kill();
        }
        for name in ["w3", "w4"] {
            swarm.start_worker(
                name,
                "work",
                &["--skills-dir", &skills, "--concurrency", "6"],
            );
        }
        measure(&w, run, t, &stages())
    });
}

#[test]
fn kill_between_result_and_ack() {
    matrix("kill between result and ack", |_rng| {
        let w = Workload::new(false);
        let mut swarm = TestSwarm::new();
        swarm.start_coordinator("c1");
        let skills = w.skills();
        // w1 dies right after storing its first result, before its ack.
        swarm
            .env
            .push(("CASCADE_FAILPOINT".into(), "after-result-before-ack".into()));
        swarm.start_worker("w1", "work", &["--skills-dir", &skills]);
        swarm.env.pop();
        let t = Instant::now();
        let run = submit(&swarm, &w, "r", &[]);
        await_condition(
            "w1 to die at its failpoint",
            Duration::from_secs(60),
            || matches!(swarm.workers[0].child.try_wait(), Ok(Some(_))).then_some(()),
        );
        workers(&mut swarm, &w, &["w2"]);
        measure(&w, run, t, &stages())
    });
}
