//! Helpers the suite's modules share that need the workspace's crates (the
//! harness in `cascade_tests` depends on none of them): task specs, an async
//! `eventually`, a swarm client with its task stream, a wiremock answer that changes, the
//! sandbox backends, and the list of examples.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_exec::sandbox::{self, Backend};
use cascade_proto::wire::{self, Route, TaskMessage};
use cascade_proto::{Attempt, PROTOCOL_VERSION, TaskSpec, encode};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use cascade_tests::NatsServer;
use serde_json::Value;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The first attempt of task `task` of stage `stage` in run `run`: `skill`
/// with `inputs`, and nothing else set.
pub fn task_spec(run: &str, stage: &str, task: &str, skill: &str, inputs: Value) -> TaskSpec {
    TaskSpec {
        run_id: run.into(),
        task_id: task.into(),
        stage_id: stage.into(),
        skill: skill.into(),
        attempt: Attempt::FIRST,
        inputs,
        timeout_ms: None,
        model: None,
        workdir: None,
        context: None,
        budget: None,
        hooks: None,
    }
}

/// Polls `check` until it returns `Some`; panics naming `what` after `timeout`.
/// The async twin of [`cascade_tests::await_condition`].
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A client of `server`'s swarm, its streams and buckets set up with `settings`.
pub async fn swarm(server: &NatsServer, settings: QueueSettings) -> Swarm {
    let args = NatsArgs {
        url: server.client_url.clone(),
        ..Default::default()
    };
    let client = connect(&args, "test").await.expect("connect");
    Swarm::setup(client, settings).await.expect("setup")
}

/// Publishes `spec` on `subject` as a current-version task message.
pub async fn publish_task(swarm: &Swarm, subject: String, spec: TaskSpec, route: Route) {
    let msg = TaskMessage {
        v: PROTOCOL_VERSION,
        spec,
        route,
        dispatched_at: 0,
        inputs_ref: None,
        grant: None,
    };
    publish_raw(swarm, subject, encode(&msg).expect("encode")).await;
}

/// The first result stored for an attempt (`wire::key_result_attempt`),
/// whoever wrote it (each writer has its own key under the attempt's).
pub async fn any_result(
    results: &async_nats::jetstream::kv::Store,
    attempt_key: impl AsRef<str>,
) -> Result<Option<Bytes>, async_nats::jetstream::stream::DirectGetError> {
    let filter = format!(
        "$KV.{}.{}.*",
        cascade_proto::wire::BUCKET_RESULTS,
        attempt_key.as_ref()
    );
    match results
        .stream
        .direct_get_next_for_subject(filter, None)
        .await
    {
        Ok(m) => Ok(Some(m.payload)),
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Publishes `bytes` on `subject` and waits for JetStream's ack.
pub async fn publish_raw(swarm: &Swarm, subject: String, bytes: Vec<u8>) {
    swarm
        .raw()
        .js
        .publish(subject, Bytes::from(bytes))
        .await
        .expect("publish")
        .await
        .expect("publish ack");
}

/// How many messages the task stream holds.
pub async fn stream_messages(swarm: &Swarm) -> u64 {
    let mut s = swarm.raw().tasks.clone();
    s.info().await.expect("stream info").state.messages
}

/// Waits until the task stream is empty: every task acked, none left behind.
pub async fn await_stream_empty(swarm: &Swarm, timeout: Duration) {
    eventually("an empty task stream", timeout, || async {
        (stream_messages(swarm).await == 0).then_some(())
    })
    .await;
}

/// Whether worker `name` is in the swarm's worker registry.
pub async fn is_registered(swarm: &Swarm, name: &str) -> bool {
    swarm
        .raw()
        .workers
        .get(wire::token(name))
        .await
        .expect("kv")
        .is_some()
}

/// Serves the first request to `at` with `first` and every later one with
/// `then` (a failure and the retry that works, say).
pub async fn answer_once_then(
    server: &MockServer,
    at: &str,
    first: ResponseTemplate,
    then: ResponseTemplate,
) {
    Mock::given(path(at))
        .respond_with(first)
        .up_to_n_times(1)
        .mount(server)
        .await;
    Mock::given(path(at)).respond_with(then).mount(server).await;
}

/// The sandbox backends this machine has; a skipped one is printed with the
/// reason its probe failed.
pub fn sandbox_backends() -> Vec<Backend> {
    [Backend::Bwrap, Backend::Landlock]
        .into_iter()
        .filter(|b| match sandbox::backend::check(*b) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping the {} backend: {e}", b.as_str());
                false
            }
        })
        .collect()
}

/// The workspace's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .join("examples")
}

/// The top-level examples, sorted: the cascade files (`*.yaml`, `*.yml`,
/// `*.json`) directly in `examples/`, except the sub-cascades other examples
/// call (`*.child.yaml`) and the default models file (`models.yaml`).
pub fn top_level_examples() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
                && !name.ends_with(".child.yaml")
                && name != "models.yaml"
        })
        .collect();
    found.sort();
    found
}

/// Invokes `$m! { test_name => "file", ... }` with every top-level example, so
/// that the modules testing each example (`examples`, `swarm_examples`) share
/// one list. A new example needs a line here; the modules' coverage tests
/// compare this list with [`top_level_examples`].
macro_rules! with_every_example {
    ($m:ident) => {
        $m! {
            quickstart => "quickstart.yaml",
            linear_pipeline => "linear-pipeline.yaml",
            parallel_fanout => "parallel-fanout.yaml",
            conditional_branches => "conditional-branches.yaml",
            iterative_refinement => "iterative-refinement.yaml",
            error_handling => "error-handling.yaml",
            workflows_variant => "workflows-variant.yaml",
            sub_cascade => "sub-cascade.yaml",
            data_pipeline => "data-pipeline.json",
            test_and_fix => "test-and-fix.yaml",
        }
    };
}
pub(crate) use with_every_example;

/// libfaketime, to preload into a process to skew its clock (`LD_PRELOAD`
/// and `FAKETIME`), or None with a note: the caller skips.
pub fn faketime() -> Option<&'static str> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    if found.is_none() {
        eprintln!("skipped: libfaketime is not installed (scripts/test installs it as root)");
    }
    found
}

/// A field of the first run `coordinator status --json` lists (the newest).
pub fn latest_run(swarm: &cascade_tests::TestSwarm, field: &str) -> Option<String> {
    let o = swarm
        .coordinator_cmd()
        .args(["status", "--json"])
        .output()
        .ok()?;
    let all: Value = serde_json::from_slice(&o.stdout).ok()?;
    all.as_array()?.first()?[field].as_str().map(str::to_owned)
}
