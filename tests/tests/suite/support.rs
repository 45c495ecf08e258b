//! Helpers the suite's modules share that need the workspace's crates (the
//! harness in `cascade_tests` depends on none of them): task specs, an async
//! `eventually`, and a swarm client with its task stream.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_proto::wire::{Route, TaskMessage};
use cascade_proto::{Attempt, PROTOCOL_VERSION, TaskSpec, encode};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use cascade_tests::NatsServer;
use serde_json::Value;

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
    };
    publish_raw(swarm, subject, encode(&msg).expect("encode")).await;
}

/// Publishes `bytes` on `subject` and waits for JetStream's ack.
pub async fn publish_raw(swarm: &Swarm, subject: String, bytes: Vec<u8>) {
    swarm
        .js
        .publish(subject, Bytes::from(bytes))
        .await
        .expect("publish")
        .await
        .expect("publish ack");
}

/// How many messages the task stream holds.
pub async fn stream_messages(swarm: &Swarm) -> u64 {
    let mut s = swarm.tasks.clone();
    s.info().await.expect("stream info").state.messages
}

/// Waits until the task stream is empty: every task acked, none left behind.
pub async fn await_stream_empty(swarm: &Swarm, timeout: Duration) {
    eventually("an empty task stream", timeout, || async {
        (stream_messages(swarm).await == 0).then_some(())
    })
    .await;
}
