//! The `worker` binary as a process against a real nats-server: readiness,
//! exit codes, SIGTERM drain, SIGKILL and SIGSTOP mid-task.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use cascade_proto::wire::{self, Claim, ResultRecord, Route};
use cascade_proto::{Attempt, TaskOutcome, decode};
use cascade_swarm::{QueueSettings, Swarm};
use cascade_tests::NatsServer;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::{
    self, await_stream_empty, eventually, is_registered, publish_task, stream_messages,
};

const WAIT: Duration = Duration::from_secs(30);

/// A worker process; killed on drop, its log printed when a test fails.
struct Proc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(server: &NatsServer, name: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("worker.log");
        let child = Command::new(cascade_tests::binary("worker"))
            .args(["--nats", &server.client_url, "--name", name])
            .args(args)
            .env_remove("NATS_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn worker");
        Proc {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&self) {
        eventually("the worker's ready line", WAIT, || async {
            self.log().contains("ready").then_some(())
        })
        .await;
    }

    fn signal(&self, s: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        kill(pid, s).expect("signal worker");
    }

    async fn exit(&mut self) -> ExitStatus {
        eventually("the worker to exit", WAIT, || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- worker log {} ---\n{}", self.log.display(), self.log());
        }
    }
}

async fn swarm(server: &NatsServer, ack_wait: Duration) -> Swarm {
    let settings = QueueSettings {
        ack_wait,
        ..QueueSettings::default()
    };
    support::swarm(server, settings).await
}

async fn publish_sleep(sw: &Swarm, task: &str, seconds: f64) {
    let spec = support::task_spec("r", "s", task, "sleep", json!({ "seconds": seconds }));
    publish_task(sw, wire::subject_task_skill("sleep"), spec, Route::Mesh).await;
}

fn key(task: &str) -> String {
    wire::key_result_attempt(&"r".into(), &task.into(), Attempt::FIRST)
}

async fn claim_of(sw: &Swarm, task: &str, holder: &str) -> Claim {
    eventually(&format!("`{holder}` to claim `{task}`"), WAIT, || async {
        let bytes = sw.raw().claims.get(key(task)).await.ok().flatten()?;
        let c: Claim = decode(&bytes).ok()?;
        (c.worker == holder).then_some(c)
    })
    .await
}

async fn result(sw: &Swarm, task: &str) -> ResultRecord {
    eventually(&format!("the result of `{task}`"), WAIT, || async {
        let bytes = support::any_result(&sw.raw().results, key(task))
            .await
            .ok()
            .flatten()?;
        decode(&bytes).ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_before_connecting() {
    for args in [
        vec!["--skills", "noop,lnit"],
        vec!["--skills", "noop", "--labels", "zone"],
        vec!["--skills", "noop", "--concurrency", "0"],
        vec!["--skills", "noop", "--ack-wait", "soon"],
    ] {
        let out = Command::new(cascade_tests::binary("worker"))
            .args(&args)
            .args(["--nats", "nats://127.0.0.1:1"])
            .output()
            .expect("run worker");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_task_finish_then_exits_0_and_deregisters() {
    let server = NatsServer::start();
    let sw = swarm(&server, Duration::from_secs(30)).await;
    let mut w = Proc::start(&server, "drainer", &["--skills", "sleep", "--grace", "20s"]);
    w.ready().await;
    assert!(is_registered(&sw, "drainer").await, "registered");
    publish_sleep(&sw, "t", 1.0).await;
    claim_of(&sw, "t", "drainer").await;
    w.signal(Signal::SIGTERM);
    let status = w.exit().await;
    assert_eq!(status.code(), Some(0), "{}", w.log());
    let rec = support::any_result(&sw.raw().results, key("t"))
        .await
        .expect("kv")
        .expect("the task finished during the drain");
    let rec: ResultRecord = decode(&rec).expect("decodes");
    assert!(
        matches!(rec.result.outcome, TaskOutcome::Succeeded { .. }),
        "{rec:?}"
    );
    assert_eq!(stream_messages(&sw).await, 0);
    assert!(!is_registered(&sw, "drainer").await, "deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_grace_runs_out_is_given_back_and_finished_elsewhere() {
    let server = NatsServer::start();
    let sw = swarm(&server, Duration::from_secs(30)).await;
    let mut a = Proc::start(&server, "a", &["--skills", "sleep", "--grace", "100ms"]);
    a.ready().await;
    publish_sleep(&sw, "t", 2.0).await;
    claim_of(&sw, "t", "a").await;
    a.signal(Signal::SIGTERM);
    assert_eq!(a.exit().await.code(), Some(0), "{}", a.log());
    assert!(
        support::any_result(&sw.raw().results, key("t"))
            .await
            .expect("kv")
            .is_none(),
        "not finished by a"
    );
    let b = Proc::start(&server, "b", &["--skills", "sleep"]);
    b.ready().await;
    let rec = result(&sw, "t").await;
    assert_eq!(rec.result.worker, "b");
    await_stream_empty(&sw, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_is_redelivered_and_completes_once() {
    let server = NatsServer::start();
    let sw = swarm(&server, Duration::from_secs(1)).await;
    let mut a = Proc::start(&server, "a", &["--skills", "sleep", "--ack-wait", "1s"]);
    a.ready().await;
    publish_sleep(&sw, "t", 1.5).await;
    claim_of(&sw, "t", "a").await;
    a.signal(Signal::SIGKILL);
    a.exit().await;
    let b = Proc::start(&server, "b", &["--skills", "sleep", "--ack-wait", "1s"]);
    b.ready().await;
    let claim = claim_of(&sw, "t", "b").await;
    assert!(claim.delivered >= 2, "a redelivery: {claim:?}");
    let rec = result(&sw, "t").await;
    assert_eq!(rec.result.worker, "b");
    await_stream_empty(&sw, WAIT).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_ack_window_cannot_complete_or_lose_the_task() {
    let server = NatsServer::start();
    let sw = swarm(&server, Duration::from_secs(1)).await;
    let mut a = Proc::start(&server, "a", &["--skills", "sleep", "--ack-wait", "1s"]);
    a.ready().await;
    publish_sleep(&sw, "t", 2.0).await;
    claim_of(&sw, "t", "a").await;
    a.signal(Signal::SIGSTOP);
    let mut b = Proc::start(&server, "b", &["--skills", "sleep", "--ack-wait", "1s"]);
    b.ready().await;
    claim_of(&sw, "t", "b").await; // redelivered to b after a's ack window
    a.signal(Signal::SIGCONT);
    let rec = result(&sw, "t").await;
    assert_eq!(rec.result.worker, "b", "the newer delivery's result wins");
    await_stream_empty(&sw, WAIT).await;
    for w in [&mut a, &mut b] {
        w.signal(Signal::SIGTERM);
        assert_eq!(w.exit().await.code(), Some(0), "{}", w.log());
    }
    assert!(
        a.log().contains("newer delivery"),
        "a noticed it lost the task:\n{}",
        a.log()
    );
    assert_eq!(stream_messages(&sw).await, 0, "nothing lost, nothing left");
}
