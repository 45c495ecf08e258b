//! Connecting to a real nats-server and laying out the swarm's streams,
//! buckets and consumers: idempotent, concurrent-safe, verified.

use std::time::Duration;

use cascade_proto::wire;
use cascade_swarm::{NatsArgs, NatsError, QueueSettings, Swarm, connect};
use cascade_tests::NatsServer;

fn args(server: &NatsServer) -> NatsArgs {
    NatsArgs {
        url: server.client_url.clone(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_safe_to_race() {
    let server = NatsServer::start();
    let a = connect(&args(&server), "a").await.expect("connect a");
    let b = connect(&args(&server), "b").await.expect("connect b");
    let (sa, sb) = tokio::join!(
        Swarm::setup(a, QueueSettings::default()),
        Swarm::setup(b, QueueSettings::default())
    );
    let (sa, _sb) = (sa.expect("setup a"), sb.expect("setup b"));
    // And once more on an existing layout.
    let c = connect(&args(&server), "c").await.expect("connect c");
    let sc = Swarm::setup(c, QueueSettings::default())
        .await
        .expect("setup c");
    let mut info = sc.tasks.clone();
    let cfg = info.info().await.expect("stream info").config.clone();
    assert_eq!(cfg.name, wire::STREAM_TASKS);
    sa.task_consumer(
        &wire::consumer_skill("lint"),
        &wire::subject_task_skill("lint"),
        false,
    )
    .await
    .expect("consumer");
    sc.task_consumer(
        &wire::consumer_skill("lint"),
        &wire::subject_task_skill("lint"),
        false,
    )
    .await
    .expect("same consumer again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_other_settings_is_refused() {
    let server = NatsServer::start();
    let a = Swarm::setup(
        connect(&args(&server), "a").await.expect("connect"),
        QueueSettings::default(),
    )
    .await
    .expect("setup");
    a.task_consumer(
        &wire::consumer_skill("test"),
        &wire::subject_task_skill("test"),
        false,
    )
    .await
    .expect("consumer");
    let other = QueueSettings {
        ack_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let b = Swarm::setup(connect(&args(&server), "b").await.expect("connect"), other)
        .await
        .expect("setup");
    let err = b
        .task_consumer(
            &wire::consumer_skill("test"),
            &wire::subject_task_skill("test"),
            false,
        )
        .await
        .expect_err("mismatch");
    assert!(matches!(err, NatsError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("--ack-wait"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let err = connect(
        &NatsArgs {
            url: "nats://127.0.0.1:1".into(),
            ..Default::default()
        },
        "x",
    )
    .await
    .expect_err("no server");
    assert!(
        err.to_string()
            .contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{err}"
    );
}
