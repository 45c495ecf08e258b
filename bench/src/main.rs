//! `cascade-bench`: the Cascade benchmarks of issue 3 item 10.
//!
//! Starts its own nats-server (loopback, `-p -1`, ports file, temp store),
//! one `coordinator serve` and 2 `worker --skills noop,sleep --concurrency 2`
//! processes, and measures, after a warm-up, N runs of:
//!
//! - W1: one stage fanning out 10,000 `noop` tasks (tasks/s, submit to done);
//! - W2: 4 x `sleep 0.5` on 4 slots (makespan);
//! - W3: a chain of 200 dependent `noop` stages (ms per hop);
//! - W4: a diamond 1 -> 1000 -> 1 (wall);
//! - W5: one stage of 100,000 `noop` tasks (wall, and the peak memory,
//!   VmHWM, of the coordinator and of each worker; fresh processes per run);
//! - READY: spawning a `worker` until it logs `ready`;
//! - the same W1-W4 on the embedded default (`coordinator run`).
//!
//! Swarm runs are submitted and followed in-process (the same writes as
//! `coordinator submit`: the submission into `cascade-submissions`, then a
//! publish on `cascade.submit`; done = the run record in `cascade-runs`
//! turns final), so no process start-up is timed; `PROC` reports that
//! start-up separately. Output: one JSON line per workload (the format of
//! `../shared/bench/peers`, so its `aggregate.py` pools them with the peers)
//! on stdout and in `<out>/cascade.jsonl`, and a markdown table
//! `<out>/cascade.md` with the targets. Never asserts timings.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cascade_proto::wire::{RunState, Submission};
use cascade_proto::{PROTOCOL_VERSION, RunId};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Map, Value, json};

const W1_TASKS: usize = 10_000;
const W3_HOPS: usize = 200;
const W4_FAN: usize = 1_000;
const W5_TASKS: usize = 100_000;

#[derive(Debug, Parser)]
#[command(about = "Cascade benchmarks: W1-W5 on the swarm, W1-W4 embedded, worker readiness")]
struct Cli {
    /// all | swarm | embedded
    #[arg(default_value = "all")]
    mode: String,
    /// Measured runs per workload.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Unmeasured runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Measured runs of W5 (each on fresh coordinator and workers).
    #[arg(long, default_value_t = 2)]
    w5_runs: usize,
    /// W5 gives up after this many seconds (memory is still sampled then,
    /// and the line says `finished: false`).
    #[arg(long, default_value_t = 240)]
    w5_limit: u64,
    /// Comma list of W1,W2,W3,W4,W5,READY,PROC.
    #[arg(long, default_value = "W1,W2,W3,W4,W5,READY,PROC")]
    only: String,
    /// Results folder [default: bench/results/<timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where `coordinator` and `worker` are [default: target/release].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// nats-server binary [default: .tools/nats-server/bin/nats-server, else PATH].
    #[arg(long, env = "NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Slots per worker (2 workers).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Free text copied into every JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------- processes

/// A child process with its stderr in a file; SIGKILLed on drop if alive.
struct Proc {
    child: Child,
    name: String,
    stderr_path: PathBuf,
    spawned: Instant,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Result<Proc> {
        let stderr_path = logs.join(format!("{name}.stderr"));
        let err = std::fs::File::create(&stderr_path)?;
        let out = std::fs::File::create(logs.join(format!("{name}.stdout")))?;
        let spawned = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
            stderr_path,
            spawned,
        })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls (1 ms) until stderr holds `needle`; the time since spawn.
    fn await_output(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return Ok(self.spawned.elapsed());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                bail!(
                    "{} exited ({st}) before `{needle}`:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print `{needle}` within {timeout:?}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` and `VmRSS` of a live process, in MiB.
fn mem_mb(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Nats {
    proc: Proc,
    url: String,
}

fn start_nats(bin: &Path, dir: &Path) -> Result<Nats> {
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-js"])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(dir);
    let proc = Proc::spawn("nats-server", cmd, dir)?;
    let ports = dir.join(format!("nats-server_{}.ports", proc.pid()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ports)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(url) = v["nats"][0].as_str()
        {
            return Ok(Nats {
                proc,
                url: url.to_owned(),
            });
        }
        if Instant::now() > deadline {
            bail!("nats-server wrote no ports file:\n{}", proc.stderr());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Env {
    bins: PathBuf,
    dir: PathBuf,
    url: String,
    concurrency: usize,
    seq: usize,
}

impl Env {
    fn coordinator(&mut self) -> Result<Proc> {
        self.seq += 1;
        let mut cmd = Command::new(self.bins.join("coordinator"));
        cmd.env("NATS_URL", &self.url)
            .env_remove("CASCADE_SKILLS_DIR")
            .args(["serve", "--name", &format!("bench-coord-{}", self.seq)]);
        let mut p = Proc::spawn(&format!("coordinator-{}", self.seq), cmd, &self.dir)?;
        p.await_output("serving", Duration::from_secs(30))?;
        Ok(p)
    }

    fn worker_cmd(&mut self) -> (String, Command) {
        self.seq += 1;
        let name = format!("bench-worker-{}", self.seq);
        let mut cmd = Command::new(self.bins.join("worker"));
        cmd.env("NATS_URL", &self.url).args([
            "--name",
            &name,
            "--skills",
            "noop,sleep",
            "--concurrency",
            &self.concurrency.to_string(),
        ]);
        (name, cmd)
    }

    fn worker(&mut self) -> Result<(Proc, Duration)> {
        let (name, cmd) = self.worker_cmd();
        let mut p = Proc::spawn(&name, cmd, &self.dir)?;
        let ready = p.await_output("ready", Duration::from_secs(30))?;
        Ok((p, ready))
    }
}

// ---------------------------------------------------------------- workloads

struct Workload {
    name: &'static str,
    file: PathBuf,
    inputs_file: Option<PathBuf>,
    inputs: Map<String, Value>,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn fanout(dir: &Path, name: &'static str, n: usize) -> Result<Workload> {
    let file = dir.join(format!("{}.yaml", name.to_lowercase()));
    write(
        &file,
        &format!(
            "cascade:\n  name: {}-fanout-{n}\n  inputs:\n    - {{name: items}}\nstages:\n  - stage_id: fan\n    type: parallel\n    skill: noop\n    for_each: ${{inputs.items}}\n",
            name.to_lowercase()
        ),
    )?;
    let items: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    let mut inputs = Map::new();
    inputs.insert("items".into(), Value::Array(items));
    let inputs_file = dir.join(format!("{}.inputs.json", name.to_lowercase()));
    write(&inputs_file, &serde_json::to_string(&inputs)?)?;
    Ok(Workload {
        name,
        file,
        inputs_file: Some(inputs_file),
        inputs,
    })
}

fn workloads(dir: &Path) -> Result<BTreeMap<&'static str, Workload>> {
    let mut all = BTreeMap::new();
    all.insert("W1", fanout(dir, "W1", W1_TASKS)?);
    all.insert("W5", fanout(dir, "W5", W5_TASKS)?);

    let w2 = dir.join("w2.yaml");
    write(
        &w2,
        "cascade:\n  name: w2-sleep\nstages:\n  - stage_id: sleepers\n    type: parallel\n    skill: sleep\n    for_each: [1, 2, 3, 4]\n    inputs: {seconds: 0.5}\n",
    )?;
    all.insert(
        "W2",
        Workload {
            name: "W2",
            file: w2,
            inputs_file: None,
            inputs: Map::new(),
        },
    );

    let mut w3 = String::from("cascade:\n  name: w3-chain\nstages:\n");
    for i in 0..W3_HOPS {
        w3.push_str(&format!("  - stage_id: s{i:03}\n    skill: noop\n"));
    }
    let w3f = dir.join("w3.yaml");
    write(&w3f, &w3)?;
    all.insert(
        "W3",
        Workload {
            name: "W3",
            file: w3f,
            inputs_file: None,
            inputs: Map::new(),
        },
    );

    let items: Vec<String> = (0..W4_FAN).map(|i| i.to_string()).collect();
    let w4 = format!(
        "cascade:\n  name: w4-diamond\nstages:\n  - stage_id: source\n    skill: noop\n  - stage_id: fan\n    type: parallel\n    skill: noop\n    for_each: [{}]\n  - stage_id: sink\n    skill: noop\n",
        items.join(", ")
    );
    let w4f = dir.join("w4.yaml");
    write(&w4f, &w4)?;
    all.insert(
        "W4",
        Workload {
            name: "W4",
            file: w4f,
            inputs_file: None,
            inputs: Map::new(),
        },
    );

    let one = dir.join("one.yaml");
    write(
        &one,
        "cascade:\n  name: one-noop\nstages:\n  - stage_id: only\n    skill: noop\n",
    )?;
    all.insert(
        "ONE",
        Workload {
            name: "ONE",
            file: one,
            inputs_file: None,
            inputs: Map::new(),
        },
    );
    Ok(all)
}

// ---------------------------------------------------------------- swarm client

#[derive(Parser)]
struct NatsOnly {
    #[command(flatten)]
    nats: NatsArgs,
}

async fn open_swarm(url: &str) -> Result<Swarm> {
    let args = NatsOnly::parse_from(["bench", "--nats", url]).nats;
    let client = connect(&args, "cascade-bench")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Swarm::setup(
        client,
        QueueSettings {
            align_existing: false,
            ..QueueSettings::default()
        },
    )
    .await
    .map_err(|e| anyhow!("{e}"))
}

/// One swarm run, the way `coordinator submit --wait` does it, in-process.
/// Returns (submit-to-final seconds, submit phase seconds).
async fn swarm_run(swarm: &Swarm, w: &Workload) -> Result<(f64, f64)> {
    swarm_run_for(swarm, w, Duration::from_secs(600)).await
}

/// [`swarm_run`] giving up after `limit`.
async fn swarm_run_for(swarm: &Swarm, w: &Workload, limit: Duration) -> Result<(f64, f64)> {
    let (main, files) = cascade_core::spec::collect_bundle(&w.file)
        .map_err(|l| anyhow!("{}", l.render_diagnostics().join("\n")))?;
    let run_id = RunId::new(uuid::Uuid::now_v7().to_string());
    // Watch first (a real client also has it before the run ends); the
    // watch gives the current value, so nothing is missed.
    let stores = swarm.stores();
    let mut watch = stores.runs.watch(&run_id).await?;
    let t0 = Instant::now();
    let sub = Submission {
        v: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        idempotency_key: None,
        main,
        files,
        inputs: w.inputs.clone(),
        submitted_at: cascade_swarm::clock::now_ms(),
        submitted_by: "cascade-bench".into(),
    };
    stores.submissions.send(&sub).await?;
    let submitted = t0.elapsed().as_secs_f64();
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        let rec = match tokio::time::timeout(left, watch.next())
            .await
            .map_err(|_| anyhow!("run {run_id} ({}) did not end within {limit:?}", w.name))?
            .ok_or_else(|| anyhow!("watch ended"))?
        {
            Ok(r) => r,
            Err(cascade_swarm::store::StoreError::Decode { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if rec.state.is_final() {
            let wall = t0.elapsed().as_secs_f64();
            if !matches!(rec.state, RunState::Success) {
                bail!(
                    "run {run_id} ({}) ended {:?}: {:?}",
                    w.name,
                    rec.state,
                    rec.error
                );
            }
            return Ok((wall, submitted));
        }
    }
}

// ---------------------------------------------------------------- output

struct Out {
    file: std::fs::File,
    label: String,
    rows: Vec<Value>,
}

fn metric(workload: &str, wall: f64) -> (&'static str, f64) {
    match workload {
        "W1" => ("tasks_per_s", W1_TASKS as f64 / wall),
        "W3" => ("ms_per_hop", wall * 1000.0 / W3_HOPS as f64),
        "W5" => ("tasks_per_s", W5_TASKS as f64 / wall),
        "W2" => ("makespan_s", wall),
        _ => ("wall_s", wall),
    }
}

impl Out {
    fn emit(&mut self, variant: &str, workload: &str, walls: &[f64], extra: Value) -> Result<()> {
        let (name, _) = metric(workload, 1.0);
        let mut vals: Vec<f64> = walls.iter().map(|w| metric(workload, *w).1).collect();
        vals.sort_by(f64::total_cmp);
        let med = median(walls);
        let mut rec = json!({
            "peer": "cascade",
            "variant": variant,
            "label": self.label,
            "workload": workload,
            "wall_s_median": med,
            "wall_s_min": walls.iter().copied().fold(f64::INFINITY, f64::min),
            "wall_s_max": walls.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "metric": name,
            "value_median": metric(workload, med).1,
            "value_min": vals.first(),
            "value_max": vals.last(),
            "wall_s_samples": walls.iter().map(|w| (w * 1e6).round() / 1e6).collect::<Vec<_>>(),
            "host": {"cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                     "loadavg_1m_at_end": std::fs::read_to_string("/proc/loadavg").ok()
                        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()))},
        });
        if let (Value::Object(r), Value::Object(e)) = (&mut rec, extra) {
            r.extend(e);
        }
        let line = serde_json::to_string(&rec)?;
        println!("{line}");
        writeln!(self.file, "{line}")?;
        self.rows.push(rec);
        Ok(())
    }
}

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ws = workspace();
    let bins = cli
        .bin_dir
        .clone()
        .unwrap_or_else(|| ws.join("target/release"));
    for b in ["coordinator", "worker"] {
        if !bins.join(b).is_file() {
            bail!(
                "{} missing: run `cargo build --release --bins` (bench/run.sh does)",
                bins.join(b).display()
            );
        }
    }
    let nats_bin = cli.nats_server.clone().unwrap_or_else(|| {
        let local = ws.join(".tools/nats-server/bin/nats-server");
        if local.is_file() {
            local
        } else {
            PathBuf::from("nats-server")
        }
    });
    let out_dir = cli.out.clone().unwrap_or_else(|| {
        let ts = Command::new("date")
            .arg("+%Y%m%d-%H%M%S")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "now".into());
        ws.join("bench/results").join(ts)
    });
    std::fs::create_dir_all(&out_dir)?;
    let only: Vec<String> = cli
        .only
        .split(',')
        .map(|s| s.trim().to_uppercase())
        .collect();
    let want = |w: &str| only.iter().any(|o| o == w);
    let tmp = tempfile::Builder::new()
        .prefix("cascade-bench.")
        .tempdir()?;
    let wl = workloads(tmp.path())?;
    let mut out = Out {
        file: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_dir.join("cascade.jsonl"))?,
        label: cli.label.clone(),
        rows: Vec::new(),
    };
    log(format!(
        "results in {}, scratch in {}",
        out_dir.display(),
        tmp.path().display()
    ));
    let slots = 2 * cli.concurrency;

    if cli.mode == "all" || cli.mode == "swarm" {
        let logs = tmp.path().join("swarm");
        std::fs::create_dir_all(&logs)?;
        let nats = start_nats(&nats_bin, &logs)?;
        log(format!("nats-server {} at {}", nats.proc.pid(), nats.url));
        let mut env = Env {
            bins: bins.clone(),
            dir: logs.clone(),
            url: nats.url.clone(),
            concurrency: cli.concurrency,
            seq: 0,
        };
        let rt = tokio::runtime::Runtime::new()?;
        let mut coord = env.coordinator()?;
        let mut workers = vec![env.worker()?.0, env.worker()?.0];
        let swarm = rt.block_on(open_swarm(&nats.url))?;
        let variant = format!("swarm, 2 workers x {}", cli.concurrency);
        for name in ["W1", "W2", "W3", "W4"] {
            if !want(name) {
                continue;
            }
            let w = &wl[name];
            let mut walls = Vec::new();
            let mut subs = Vec::new();
            for i in 0..cli.warmup + cli.runs {
                let (wall, sub) = rt.block_on(swarm_run(&swarm, w))?;
                let tag = if i < cli.warmup { "warmup" } else { "run" };
                log(format!(
                    "swarm {name} {tag} {i}: {wall:.4}s (submit {:.1} ms)",
                    sub * 1e3
                ));
                if i >= cli.warmup {
                    walls.push(wall);
                    subs.push(sub);
                }
            }
            out.emit(
                &variant,
                name,
                &walls,
                json!({"submit_s_median": median(&subs)}),
            )?;
        }
        if want("PROC") {
            // Process start-up: `coordinator submit --wait` of one noop task
            // versus the same run submitted in-process.
            let w = &wl["ONE"];
            let mut procs = Vec::new();
            let mut inproc = Vec::new();
            for i in 0..cli.warmup + cli.runs {
                let t = Instant::now();
                let st = Command::new(bins.join("coordinator"))
                    .env("NATS_URL", &nats.url)
                    .arg("submit")
                    .arg(&w.file)
                    .arg("--wait")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?;
                let p = t.elapsed().as_secs_f64();
                if !st.success() {
                    bail!("coordinator submit --wait failed: {st}");
                }
                let (q, _) = rt.block_on(swarm_run(&swarm, w))?;
                if i >= cli.warmup {
                    procs.push(p);
                    inproc.push(q);
                }
            }
            log(format!(
                "one noop task: `submit --wait` process {:.1} ms, in-process {:.1} ms",
                median(&procs) * 1e3,
                median(&inproc) * 1e3
            ));
            out.emit(&variant, "ONE-submit-process", &procs, json!({}))?;
            out.emit(&variant, "ONE-in-process", &inproc, json!({}))?;
        }
        if want("READY") {
            let mut readies = Vec::new();
            for i in 0..cli.warmup + cli.runs {
                let (mut p, ready) = env.worker()?;
                log(format!(
                    "worker ready {i}: {:.1} ms",
                    ready.as_secs_f64() * 1e3
                ));
                if i >= cli.warmup {
                    readies.push(ready.as_secs_f64());
                }
                p.stop(Duration::from_secs(10));
            }
            out.emit(&variant, "READY", &readies, json!({"target_s": 0.3}))?;
        }
        if want("W5") {
            let w = &wl["W5"];
            let mut walls = Vec::new();
            let (mut coord_hwm, mut worker_hwm, mut nats_rss) =
                (Vec::new(), Vec::new(), Vec::new());
            let mut unfinished = false;
            for i in 0..cli.w5_runs {
                // Fresh processes: VmHWM is the peak of this run alone.
                coord.stop(Duration::from_secs(5));
                for wk in &mut workers {
                    wk.stop(Duration::from_secs(15));
                }
                coord = env.coordinator()?;
                workers = vec![env.worker()?.0, env.worker()?.0];
                let (wall, finished) = match rt.block_on(swarm_run_for(
                    &swarm,
                    w,
                    Duration::from_secs(cli.w5_limit),
                )) {
                    Ok((wall, _)) => (wall, true),
                    Err(e) => {
                        log(format!("swarm W5 run {i}: {e}"));
                        (cli.w5_limit as f64, false)
                    }
                };
                unfinished |= !finished;
                let c = mem_mb(coord.pid());
                let ws: Vec<(f64, f64)> = workers.iter().map(|p| mem_mb(p.pid())).collect();
                let n = mem_mb(nats.proc.pid());
                log(format!(
                    "swarm W5 run {i}: {wall:.3}s, coordinator VmHWM {:.1} MB (RSS {:.1}), workers VmHWM {:?} MB, nats-server RSS {:.1} MB",
                    c.0,
                    c.1,
                    ws.iter()
                        .map(|x| (x.0 * 10.0).round() / 10.0)
                        .collect::<Vec<_>>(),
                    n.1
                ));
                walls.push(wall);
                coord_hwm.push(c.0);
                worker_hwm.push(ws.iter().map(|x| x.0).fold(0.0, f64::max));
                nats_rss.push(n.1);
            }
            out.emit(
                &variant,
                "W5",
                &walls,
                json!({
                    "coordinator_vmhwm_mb_median": median(&coord_hwm),
                    "coordinator_vmhwm_mb_samples": coord_hwm,
                    "worker_vmhwm_mb_median": median(&worker_hwm),
                    "worker_vmhwm_mb_samples": worker_hwm,
                    "nats_server_vmrss_mb_median": median(&nats_rss),
                    "finished": !unfinished,
                    "limit_s": cli.w5_limit,
                }),
            )?;
        }
        drop(swarm);
        coord.stop(Duration::from_secs(5));
        for wk in &mut workers {
            wk.stop(Duration::from_secs(10));
        }
        drop(nats);
    }

    if cli.mode == "all" || cli.mode == "embedded" {
        let variant = format!("embedded, coordinator run --concurrency {slots}");
        let dir = tmp.path().join("embedded");
        std::fs::create_dir_all(&dir)?;
        for name in ["W1", "W2", "W3", "W4"] {
            if !want(name) {
                continue;
            }
            let w = &wl[name];
            let mut walls = Vec::new();
            let mut procs = Vec::new();
            for i in 0..cli.warmup + cli.runs {
                let results = dir.join(format!("{name}-{i}.json"));
                let mut cmd = Command::new(bins.join("coordinator"));
                cmd.env_remove("CASCADE_SKILLS_DIR")
                    .arg("run")
                    .arg(&w.file)
                    .args(["--concurrency", &slots.to_string(), "--data-dir"])
                    .arg(dir.join("data"))
                    .arg("--output")
                    .arg(&results);
                if let Some(f) = &w.inputs_file {
                    cmd.arg("--inputs-file").arg(f);
                }
                let t = Instant::now();
                let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
                let p = t.elapsed().as_secs_f64();
                if !st.success() {
                    bail!("coordinator run {name} failed: {st}");
                }
                let report: Value = serde_json::from_str(&std::fs::read_to_string(&results)?)?;
                let d = report["duration"].as_f64().unwrap_or(f64::NAN);
                let _ = std::fs::remove_file(&results);
                let tag = if i < cli.warmup { "warmup" } else { "run" };
                log(format!(
                    "embedded {name} {tag} {i}: run {d:.4}s, process {p:.4}s"
                ));
                if i >= cli.warmup {
                    walls.push(d);
                    procs.push(p);
                }
            }
            out.emit(
                &variant,
                name,
                &walls,
                json!({"process_wall_s_median": median(&procs), "process_wall_s_samples": procs,
                       "note": "wall = the report's `duration` (run start to end inside the process); process_wall includes start-up and writing results"}),
            )?;
        }
    }
    write_table(&out.rows, &out_dir.join("cascade.md"))?;
    log(format!("wrote {}", out_dir.join("cascade.md").display()));
    Ok(())
}

fn write_table(rows: &[Value], path: &Path) -> Result<()> {
    let targets: BTreeMap<&str, (&str, f64, bool)> = [
        ("W1", ("tasks/s", 25_000.0, true)),
        ("W2", ("makespan s", 0.510, false)),
        ("W3", ("ms/hop", 0.5, false)),
        ("W4", ("wall s", 0.05, false)),
        ("W5", ("tasks/s (no target)", f64::NAN, true)),
        ("READY", ("s to ready", 0.3, false)),
    ]
    .into_iter()
    .collect();
    let mut t = String::from(
        "| variant | workload | median | [min-max] | n | target | vs target |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let w = r["workload"].as_str().unwrap_or("");
        let samples: Vec<f64> = r["wall_s_samples"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let med = r["value_median"].as_f64().unwrap_or(f64::NAN);
        let (lo, hi) = (
            r["value_min"].as_f64().unwrap_or(f64::NAN),
            r["value_max"].as_f64().unwrap_or(f64::NAN),
        );
        let (unit, target, higher) = targets
            .get(w)
            .copied()
            .unwrap_or(("wall s", f64::NAN, false));
        let vs = if target.is_nan() {
            "-".to_owned()
        } else if (higher && med >= target) || (!higher && med <= target) {
            "met".to_owned()
        } else if higher {
            format!("missed: {:.1}x below", target / med)
        } else {
            format!("missed: {:.1}x over", med / target)
        };
        t.push_str(&format!(
            "| {} | {w} ({unit}) | {med:.4} | [{lo:.4}-{hi:.4}] | {} | {} | {vs} |\n",
            r["variant"].as_str().unwrap_or(""),
            samples.len(),
            if target.is_nan() {
                "-".into()
            } else {
                target.to_string()
            }
        ));
        if w == "W5" && r["finished"] == json!(false) {
            t.push_str(&format!(
                "| {} | W5 | did not finish within {} s (the value above is a bound) | | | | |\n",
                r["variant"].as_str().unwrap_or(""),
                r["limit_s"]
            ));
        }
        if w == "W5" {
            let c = r["coordinator_vmhwm_mb_median"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let k = r["worker_vmhwm_mb_median"].as_f64().unwrap_or(f64::NAN);
            t.push_str(&format!(
                "| {} | W5 coordinator VmHWM MB | {c:.1} | | {} | < 300 | {} |\n| {} | W5 worker VmHWM MB (max of 2) | {k:.1} | | {} | - | - |\n",
                r["variant"].as_str().unwrap_or(""), samples.len(),
                if c < 300.0 { "met".to_owned() } else { format!("missed: {:.1}x over", c / 300.0) },
                r["variant"].as_str().unwrap_or(""), samples.len()
            ));
        }
    }
    std::fs::write(path, t)?;
    Ok(())
}
