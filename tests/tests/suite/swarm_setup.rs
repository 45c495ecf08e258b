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
    let mut info = sc.raw().tasks.clone();
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

/// An append sent again after its acknowledgement was lost (what the
/// event log's retry in place sends: the same entry, the same expected
/// sequence, the same writer) is reported written at the first one's
/// sequence: one entry in the log, and not `Superseded`. Another writer
/// after the same sequence, or another entry of ours, is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_sent_again_is_written_once_and_not_superseded() {
    use cascade_proto::{EventRecord, PROTOCOL_VERSION, RunId};
    use cascade_swarm::store::Appended;

    let server = NatsServer::start();
    let client = connect(&args(&server), "log").await.expect("connect");
    let stores = Swarm::setup(client, QueueSettings::default())
        .await
        .expect("setup")
        .stores();
    let run = RunId::new("run-1");
    let entry = |at| EventRecord {
        v: PROTOCOL_VERSION,
        at,
        events: Vec::new(),
        object: None,
    };
    let first = stores.events.append(&run, &entry(1), 0, "coord-a").await;
    let Ok(Appended::At(seq)) = first else {
        panic!("first append: {first:?}");
    };
    for _ in 0..2 {
        let again = stores.events.append(&run, &entry(1), 0, "coord-a").await;
        assert!(
            matches!(again, Ok(Appended::At(s)) if s == seq),
            "the same append again: {again:?}"
        );
    }
    let after = stores.events.next_after(&run, 0).await.expect("read");
    assert!(matches!(after, Some((s, Ok(_))) if s == seq));
    assert!(
        stores
            .events
            .next_after(&run, seq)
            .await
            .expect("read")
            .is_none(),
        "the append sent again was written twice"
    );
    let other_writer = stores.events.append(&run, &entry(1), 0, "coord-b").await;
    assert!(
        matches!(other_writer, Ok(Appended::Superseded)),
        "{other_writer:?}"
    );
    let other_entry = stores.events.append(&run, &entry(2), 0, "coord-a").await;
    assert!(
        matches!(other_entry, Ok(Appended::Superseded)),
        "{other_entry:?}"
    );
    let next = stores.events.append(&run, &entry(3), seq, "coord-a").await;
    assert!(matches!(next, Ok(Appended::At(s)) if s > seq), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_under_its_content_name_is_written_once() {
    let server = NatsServer::start();
    let swarm = crate::support::swarm(&server, QueueSettings::default()).await;
    let stores = swarm.stores();
    let value = serde_json::json!({"big": "x".repeat(1000)});
    let name = cascade_swarm::store::content_name("outputs.r.t.1", &value).expect("name");
    stores
        .objects
        .put_json(&name, &value)
        .await
        .expect("first put");
    let objects = swarm.raw().objects;
    let first = objects.info(&name).await.expect("info");
    // A redelivered attempt stores the same outputs again: already there.
    stores
        .objects
        .put_json(&name, &value)
        .await
        .expect("second put");
    let second = objects.info(&name).await.expect("info");
    assert_eq!(first.nuid, second.nuid, "not rewritten");
    assert_eq!(stores.objects.get_json(&name).await.expect("get"), value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_count_is_refused_by_a_server_and_ignored_by_a_client() {
    let server = NatsServer::start();
    let a = connect(&args(&server), "a").await.expect("connect a");
    Swarm::setup(a, QueueSettings::default())
        .await
        .expect("setup R1");
    let b = connect(&args(&server), "b").await.expect("connect b");
    let err = Swarm::setup(
        b,
        QueueSettings {
            replicas: 3,
            ..Default::default()
        },
    )
    .await
    .expect_err("a server with another replica count");
    let text = err.to_string();
    assert!(
        text.contains("exists with 1 replica(s); this process expects 3"),
        "{text}"
    );
    let c = connect(&args(&server), "c").await.expect("connect c");
    Swarm::setup(
        c,
        QueueSettings {
            replicas: 3,
            align_existing: false,
            ..Default::default()
        },
    )
    .await
    .expect("a client only creates with its count");
}
