//! The swarm worker in-process (`runner::run`) against a real nats-server:
//! execution and results, competing workers, backpressure, claim fencing,
//! dead letters, star routing, cancellation, large values and the drain.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cascade_exec::SkillRegistry;
use cascade_proto::wire::{
    self, CancelRequest, Claim, DeadLetter, ResultRecord, Route, TaskMessage,
};
use cascade_proto::{
    Attempt, FailureKind, PROTOCOL_VERSION, TaskOutcome, TaskSpec, decode, encode,
};
use cascade_swarm::{QueueSettings, Swarm};
use cascade_tests::{NatsServer, write_tree};
use cascade_worker::runner::{self, Config, RunnerError};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{
    self, await_stream_empty, eventually, is_registered, publish_raw, publish_task, stream_messages,
};

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> QueueSettings {
    QueueSettings {
        ack_wait: Duration::from_secs(30),
        ..QueueSettings::default()
    }
}

async fn swarm(server: &NatsServer) -> Swarm {
    support::swarm(server, settings()).await
}

fn config(server: &NatsServer, name: &str, skills: &[&str], registry: SkillRegistry) -> Config {
    let mut c = Config::new(
        name,
        skills.iter().map(|s| (*s).to_owned()).collect(),
        registry,
    );
    c.nats.url = server.client_url.clone();
    c.settings = settings();
    c.grace = Duration::from_secs(10);
    c
}

struct Worker {
    stop: CancellationToken,
    handle: JoinHandle<Result<(), RunnerError>>,
}

impl Worker {
    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("worker drains");
        r.expect("worker task").expect("worker run ends cleanly");
    }
}

/// Starts a worker and waits until it is registered (its queues exist by then).
async fn start(swarm: &Swarm, config: Config) -> Worker {
    let name = config.name.clone();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(runner::run(config, stop.clone()));
    let workers = swarm.raw().workers.clone();
    eventually("the worker's registration", WAIT, || {
        let workers = workers.clone();
        let key = wire::token(&name);
        async move { workers.get(key).await.ok().flatten() }
    })
    .await;
    Worker { stop, handle }
}

fn spec(run: &str, task: &str, skill: &str, inputs: Value) -> TaskSpec {
    support::task_spec(run, "stage", task, skill, inputs)
}

fn key(run: &str, task: &str) -> String {
    wire::key_result_attempt(&run.into(), &task.into(), Attempt::FIRST)
}

async fn result(swarm: &Swarm, key: &str) -> ResultRecord {
    let results = swarm.raw().results.clone();
    let bytes = eventually(&format!("result `{key}`"), WAIT, || {
        let (results, key) = (results.clone(), key.to_owned());
        async move { support::any_result(&results, key).await.ok().flatten() }
    })
    .await;
    decode(&bytes).expect("result record decodes")
}

fn outputs(rec: &ResultRecord) -> &Value {
    match &rec.result.outcome {
        TaskOutcome::Succeeded { outputs } => outputs,
        TaskOutcome::Failed(f) => panic!("expected success, got {f:?}"),
    }
}

/// A skills directory with `tally`: appends its task id to `<dir>/ran`, and
/// records how many tallies run at once in `<dir>/counts`.
fn tally_skills(dir: &Path) -> SkillRegistry {
    let script = format!(
        "run: |\n  d='{d}'\n  mkdir -p \"$d/running\"\n  touch \"$d/running/$$\"\n  \
         ls \"$d/running\" | wc -l >> \"$d/counts\"\n  echo \"$CASCADE_TASK_ID\" >> \"$d/ran\"\n  \
         sleep 0.05\n  rm \"$d/running/$$\"\n  echo '{{}}'\n",
        d = dir.display()
    );
    let skills = dir.join("skills");
    write_tree(&skills, &[("tally.yaml", &script)]);
    SkillRegistry::load(&[skills]).expect("skills load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_task_runs_stores_its_result_and_leaves_the_queue() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let w = start(
        &sw,
        config(&server, "w1", &["echo"], SkillRegistry::builtins()),
    )
    .await;
    publish_task(
        &sw,
        wire::subject_task_skill("echo"),
        spec("r1", "t#0", "echo", json!({"x": 1})),
        Route::Mesh,
    )
    .await;
    let rec = result(&sw, &key("r1", "t#0")).await;
    assert_eq!(outputs(&rec), &json!({"x": 1}));
    assert_eq!(rec.result.worker, "w1");
    assert_eq!(rec.route, Some(Route::Mesh));
    assert_eq!(rec.run_id.as_str(), "r1");
    await_stream_empty(&sw, WAIT).await;
    w.stop().await;
    assert!(!is_registered(&sw, "w1").await, "deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_workers_run_each_task_exactly_once_within_their_concurrency() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sw = swarm(&server).await;
    let mut ca = config(&server, "a", &["tally"], tally_skills(dir.path()));
    ca.concurrency = 2;
    let mut cb = config(&server, "b", &["tally"], tally_skills(dir.path()));
    cb.concurrency = 1;
    let (a, b) = (start(&sw, ca).await, start(&sw, cb).await);
    let n = 30;
    for i in 0..n {
        publish_task(
            &sw,
            wire::subject_task_skill("tally"),
            spec("r", &format!("t#{i}"), "tally", json!({})),
            Route::Mesh,
        )
        .await;
    }
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..n {
        let rec = result(&sw, &key("r", &format!("t#{i}"))).await;
        *by.entry(rec.result.worker).or_default() += 1;
    }
    await_stream_empty(&sw, WAIT).await;
    a.stop().await;
    b.stop().await;
    let ran = std::fs::read_to_string(dir.path().join("ran")).expect("ran log");
    let mut ids: Vec<&str> = ran.lines().collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, n, "every task ran once: {ran}");
    assert_eq!(ids.len(), n);
    assert_eq!(by.values().sum::<usize>(), n, "{by:?}");
    let counts = std::fs::read_to_string(dir.path().join("counts")).expect("counts");
    let max = counts
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .max()
        .expect("counts");
    assert!(max <= 3, "at most 2 + 1 tallies at once, saw {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_never_runs_more_than_its_concurrency() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sw = swarm(&server).await;
    let mut c = config(&server, "solo", &["tally"], tally_skills(dir.path()));
    c.concurrency = 3;
    let w = start(&sw, c).await;
    for i in 0..20 {
        publish_task(
            &sw,
            wire::subject_task_skill("tally"),
            spec("r", &format!("t#{i}"), "tally", json!({})),
            Route::Mesh,
        )
        .await;
    }
    for i in 0..20 {
        result(&sw, &key("r", &format!("t#{i}"))).await;
    }
    w.stop().await;
    let counts = std::fs::read_to_string(dir.path().join("counts")).expect("counts");
    let max = counts
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .max()
        .expect("counts");
    assert!(max <= 3, "concurrency 3, saw {max} at once");
}

fn newer_claim(holder: &str) -> Bytes {
    Bytes::from(
        encode(&Claim {
            v: PROTOCOL_VERSION,
            worker: holder.into(),
            delivered: 7,
            at: 0,
            stream_seq: Some(u64::MAX),
            proof: None,
        })
        .expect("encode"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_acks_a_delivery_whose_claim_a_newer_one_holds() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    // Taken before pickup: a newer delivery already holds the claim.
    sw.raw()
        .claims
        .create(key("r", "early"), newer_claim("other"))
        .await
        .expect("claim");
    let mut c = config(&server, "w", &["sleep"], SkillRegistry::builtins());
    c.concurrency = 1; // tasks are handled one after the other
    let w = start(&sw, c).await;
    publish_task(
        &sw,
        wire::subject_task_skill("sleep"),
        spec("r", "early", "sleep", json!({"seconds": 0})),
        Route::Mesh,
    )
    .await;
    // Taken while running: the claim moves to a newer delivery mid-task.
    publish_task(
        &sw,
        wire::subject_task_skill("sleep"),
        spec("r", "late", "sleep", json!({"seconds": 1})),
        Route::Mesh,
    )
    .await;
    let claims = sw.raw().claims.clone();
    let entry = eventually("the worker's claim on `late`", WAIT, || {
        let claims = claims.clone();
        async move { claims.entry(key("r", "late")).await.ok().flatten() }
    })
    .await;
    let held: Claim = decode(&entry.value).expect("claim decodes");
    assert_eq!(held.worker, "w");
    sw.raw()
        .claims
        .update(key("r", "late"), newer_claim("other"), entry.revision)
        .await
        .expect("take over");
    // A third task, handled only once both are over (concurrency 1).
    publish_task(
        &sw,
        wire::subject_task_skill("sleep"),
        spec("r", "after", "sleep", json!({"seconds": 0})),
        Route::Mesh,
    )
    .await;
    result(&sw, &key("r", "after")).await;
    for task in ["early", "late"] {
        assert!(
            support::any_result(&sw.raw().results, key("r", task))
                .await
                .expect("kv")
                .is_none(),
            "`{task}`: no result from a fenced worker"
        );
    }
    eventually("only the two fenced messages left", WAIT, || async {
        (stream_messages(&sw).await == 2).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(
        stream_messages(&sw).await,
        2,
        "fenced messages are neither acked nor termed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dead_lettered_and_not_retried() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let w = start(
        &sw,
        config(&server, "w", &["noop"], SkillRegistry::builtins()),
    )
    .await;
    publish_raw(
        &sw,
        wire::subject_task_skill("noop"),
        b"\xc1 not a task".to_vec(),
    )
    .await;
    let mut wrong_version = encode(&TaskMessage {
        grant: None,
        v: PROTOCOL_VERSION + 1,
        spec: spec("r", "v2", "noop", json!({})),
        route: Route::Mesh,
        dispatched_at: 0,
        inputs_ref: None,
    })
    .expect("encode");
    publish_raw(
        &sw,
        wire::subject_task_skill("noop"),
        std::mem::take(&mut wrong_version),
    )
    .await;
    let mut dlq = sw.raw().dlq.clone();
    eventually("two dead letters", WAIT, || {
        let mut dlq = dlq.clone();
        async move { (dlq.info().await.ok()?.state.messages == 2).then_some(()) }
    })
    .await;
    let mut raws = Vec::new();
    for seq in [1, 2] {
        let m = dlq.get_raw_message(seq).await.expect("dead letter");
        assert_eq!(m.subject.as_str(), wire::subject_dlq("undecodable"));
        let letter: DeadLetter = decode(&m.payload).expect("dead letter decodes");
        assert_eq!(letter.deliveries, 1);
        raws.push(letter.raw.expect("raw message kept"));
    }
    assert!(
        raws.iter().any(|r| r == b"\xc1 not a task"),
        "the garbage is kept as it came"
    );
    await_stream_empty(&sw, WAIT).await;
    // Still working afterwards.
    publish_task(
        &sw,
        wire::subject_task_skill("noop"),
        spec("r", "ok", "noop", json!({})),
        Route::Mesh,
    )
    .await;
    result(&sw, &key("r", "ok")).await;
    w.stop().await;
    assert_eq!(
        dlq.info().await.expect("info").state.messages,
        2,
        "dead-lettered once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_workers_own_subject_runs_on_that_worker_only() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let a = start(
        &sw,
        config(&server, "a", &["noop"], SkillRegistry::builtins()),
    )
    .await;
    let b = start(
        &sw,
        config(&server, "b.2", &["noop"], SkillRegistry::builtins()),
    )
    .await;
    for i in 0..6 {
        let target = if i % 2 == 0 { "a" } else { "b.2" };
        let route = Route::Direct {
            worker: target.into(),
        };
        publish_task(
            &sw,
            wire::subject_task_worker(target),
            spec("r", &format!("t{i}"), "noop", json!({})),
            route,
        )
        .await;
    }
    for i in 0..6 {
        let rec = result(&sw, &key("r", &format!("t{i}"))).await;
        let target = if i % 2 == 0 { "a" } else { "b.2" };
        assert_eq!(rec.result.worker, target, "task t{i}");
        assert_eq!(
            rec.route,
            Some(Route::Direct {
                worker: target.into()
            })
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_a_running_attempt() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let w = start(
        &sw,
        config(&server, "w", &["sleep"], SkillRegistry::builtins()),
    )
    .await;
    publish_task(
        &sw,
        wire::subject_task_skill("sleep"),
        spec("run-c", "t", "sleep", json!({"seconds": 300})),
        Route::Mesh,
    )
    .await;
    let claims = sw.raw().claims.clone();
    eventually("the claim", WAIT, || {
        let claims = claims.clone();
        async move { claims.get(key("run-c", "t")).await.ok().flatten() }
    })
    .await;
    let req = CancelRequest {
        v: PROTOCOL_VERSION,
        run_id: "run-c".into(),
        task_id: None,
        attempt: None,
    };
    let payload = Bytes::from(encode(&req).expect("encode"));
    // Core NATS is best effort: repeat until the attempt reports cancelled.
    let rec = eventually("a cancelled result", WAIT, || {
        let (sw, payload) = (&sw, payload.clone());
        async move {
            sw.raw()
                .client
                .publish(wire::subject_cancel(&"run-c".into()), payload)
                .await
                .ok()?;
            let bytes = support::any_result(&sw.raw().results, key("run-c", "t"))
                .await
                .ok()
                .flatten()?;
            decode::<ResultRecord>(&bytes).ok()
        }
    })
    .await;
    match rec.result.outcome {
        TaskOutcome::Failed(f) => assert_eq!(f.kind, FailureKind::Cancelled),
        other => panic!("expected cancelled, got {other:?}"),
    }
    await_stream_empty(&sw, WAIT).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_inputs_and_outputs_travel_through_the_object_store() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let w = start(
        &sw,
        config(&server, "w", &["echo"], SkillRegistry::builtins()),
    )
    .await;
    let big = "x".repeat(wire::INLINE_LIMIT + 10);
    let inputs = json!({"blob": big});
    let json_bytes = serde_json::to_vec(&inputs).expect("json");
    sw.raw()
        .objects
        .put("inputs.big", &mut json_bytes.as_slice())
        .await
        .expect("put inputs");
    let msg = TaskMessage {
        v: PROTOCOL_VERSION,
        spec: spec("r", "big", "echo", Value::Null),
        route: Route::Mesh,
        dispatched_at: 0,
        inputs_ref: Some("inputs.big".into()),
        grant: None,
    };
    publish_raw(
        &sw,
        wire::subject_task_skill("echo"),
        encode(&msg).expect("encode"),
    )
    .await;
    let rec = result(&sw, &key("r", "big")).await;
    assert_eq!(outputs(&rec), &Value::Null, "outputs not inline");
    let name = rec.outputs_ref.expect("outputs by reference");
    let mut object = sw.raw().objects.get(&name).await.expect("outputs object");
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .expect("read");
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).expect("json"),
        inputs
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_running_task_and_deregisters() {
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let w = start(
        &sw,
        config(&server, "w", &["sleep"], SkillRegistry::builtins()),
    )
    .await;
    publish_task(
        &sw,
        wire::subject_task_skill("sleep"),
        spec("r", "t", "sleep", json!({"seconds": 1})),
        Route::Mesh,
    )
    .await;
    let claims = sw.raw().claims.clone();
    eventually("the claim", WAIT, || {
        let claims = claims.clone();
        async move { claims.get(key("r", "t")).await.ok().flatten() }
    })
    .await;
    w.stop().await;
    let rec = support::any_result(&sw.raw().results, key("r", "t"))
        .await
        .expect("kv")
        .expect("finished within the grace period");
    let rec: ResultRecord = decode(&rec).expect("decodes");
    assert_eq!(outputs(&rec), &json!({"slept": 1}));
    assert_eq!(stream_messages(&sw).await, 0);
    assert!(!is_registered(&sw, "w").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_an_unknown_skill_is_a_configuration_error() {
    let c = Config::new("w", vec!["lnit".into()], SkillRegistry::builtins());
    let err = runner::run(c, CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(err.is_config(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_fans_a_batch_out_to_its_members_and_reports_once() {
    use cascade_proto::wire::{BatchMessage, BatchReport, WorkerRole};
    use futures::StreamExt;
    let server = NatsServer::start();
    let sw = swarm(&server).await;
    let m1 = start(
        &sw,
        config(&server, "m1", &["noop"], SkillRegistry::builtins()),
    )
    .await;
    let m2 = start(
        &sw,
        config(&server, "m2", &["noop"], SkillRegistry::builtins()),
    )
    .await;
    let mut lc = config(&server, "lead", &["noop"], SkillRegistry::builtins());
    lc.role = WorkerRole::Lead;
    let lead = start(&sw, lc).await;
    let mut reports = sw
        .raw()
        .client
        .subscribe(wire::subject_batch_report(&"rb".into()))
        .await
        .expect("subscribe");
    let batch = BatchMessage {
        v: PROTOCOL_VERSION,
        batch: "b1".into(),
        run_id: "rb".into(),
        tasks: (0..4)
            .map(|i| spec("rb", &format!("t{i}"), "noop", json!({})))
            .collect(),
        dispatched_at: 0,
        grants: Default::default(),
        grant: None,
    };
    publish_raw(
        &sw,
        wire::subject_task_lead("lead"),
        encode(&batch).expect("encode"),
    )
    .await;
    let mut ran_on = std::collections::BTreeSet::new();
    for i in 0..4 {
        let rec = result(&sw, &key("rb", &format!("t{i}"))).await;
        assert_eq!(
            rec.route,
            Some(Route::ViaLead {
                lead: "lead".into(),
                batch: "b1".into()
            })
        );
        ran_on.insert(rec.result.worker);
    }
    assert_eq!(
        ran_on,
        ["m1", "m2"].map(String::from).into(),
        "round-robin over the members"
    );
    let report = tokio::time::timeout(WAIT, reports.next())
        .await
        .expect("a report")
        .expect("subscription");
    let report: BatchReport = decode(&report.payload).expect("report decodes");
    assert_eq!(
        (report.succeeded, report.failed, report.lead.as_str()),
        (4, 0, "lead")
    );
    await_stream_empty(&sw, WAIT).await;
    for w in [lead, m1, m2] {
        w.stop().await;
    }
}
