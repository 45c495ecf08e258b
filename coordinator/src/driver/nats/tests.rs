//! The NATS driver on the in-memory stores: takeover, lease loss, sweeps
//! and group commits in milliseconds, on tokio's paused clock, with the
//! tests playing the workers and the other coordinators.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cascade_core::models::ModelCatalog;
use cascade_proto::wire::{Claim, ResultRecord, RunRecord, RunState, Submission, TaskMessage};
use cascade_proto::{Event, EventRecord, Millis, PROTOCOL_VERSION, RunId, TaskOutcome, TaskResult};
use cascade_swarm::QueueSettings;
use cascade_swarm::store::memory::InMemory;
use cascade_swarm::store::{Acquired, ClaimKey, ResultKey};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::run;
use super::state::RunError;
use super::{Registry, ServeOptions, Shared};

const LEASE_TTL: Duration = Duration::from_millis(300);

/// Milliseconds on tokio's clock (paused in these tests).
fn test_clock() -> Millis {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    1_000_000
        + BASE
            .get_or_init(tokio::time::Instant::now)
            .elapsed()
            .as_millis() as u64
}

fn coordinator(mem: &Arc<InMemory>, name: &str) -> Arc<Shared> {
    let settings = QueueSettings {
        ack_wait: Duration::from_secs(1),
        worker_ttl: Duration::from_secs(1),
        ..QueueSettings::default()
    };
    Arc::new(Shared {
        stores: mem.stores(settings),
        opts: ServeOptions {
            name: name.to_owned(),
            lease_ttl: LEASE_TTL,
            models: Arc::new(ModelCatalog::builtin()),
            allow_submitted_commands: false,
        },
        registry: Registry::default(),
        clock: test_clock,
        degraded: Default::default(),
    })
}

const TWO_STAGES: &str = "\
cascade:
  name: two
stages:
  - stage: a
    skill: echo
  - stage: b
    skill: echo
    inputs:
      x: ${a.out}
";

const FAN_OUT: &str = "\
cascade:
  name: fan
stages:
  - stage: many
    type: swarm-parallel
    skills: [s1, s2, s3, s4]
";

async fn submit(mem: &Arc<InMemory>, run: &str, yaml: &str) -> RunId {
    let stores = mem.stores(QueueSettings::default());
    let run_id = RunId::new(run);
    let sub = Submission {
        v: PROTOCOL_VERSION,
        run_id: run_id.clone(),
        idempotency_key: None,
        main: "main.yaml".into(),
        files: BTreeMap::from([("main.yaml".to_owned(), yaml.to_owned())]),
        inputs: Default::default(),
        submitted_at: test_clock(),
        submitted_by: String::new(),
    };
    stores.submissions.create(&sub).await.expect("submission");
    run_id
}

/// Takes the lease and drives the run on a task of its own.
async fn drive(
    shared: &Arc<Shared>,
    run: &RunId,
) -> (JoinHandle<Result<(), RunError>>, CancellationToken) {
    let sent = tokio::time::Instant::now();
    let acquired = shared
        .stores
        .leases
        .acquire(run, &shared.opts.name, None, shared.now(), LEASE_TTL)
        .await
        .expect("lease store");
    let Acquired::Held(held) = acquired else {
        panic!("the lease is not free: {acquired:?}")
    };
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(run::drive(shared.clone(), held, sent, 0, cancel.clone()));
    (handle, cancel)
}

/// Waits (on the paused clock) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

fn sent_for_stage(mem: &InMemory, stage: &str) -> Vec<TaskMessage> {
    mem.sent()
        .into_iter()
        .flat_map(|s| s.tasks)
        .filter(|t| t.spec.stage_id.as_str() == stage)
        .collect()
}

/// A worker's successful result for a task.
async fn complete(mem: &Arc<InMemory>, task: &TaskMessage, outputs: Value) {
    answer(mem, task, TaskOutcome::Succeeded { outputs }).await;
}

/// A worker's result for the task, with this outcome.
async fn answer(mem: &Arc<InMemory>, task: &TaskMessage, outcome: TaskOutcome) {
    let spec = &task.spec;
    let record = ResultRecord {
        v: PROTOCOL_VERSION,
        run_id: spec.run_id.clone(),
        result: TaskResult {
            task_id: spec.task_id.clone(),
            attempt: spec.attempt,
            worker: "w1".into(),
            duration_ms: 1,
            outcome,
            usage: None,
            model: None,
            notes: Vec::new(),
        },
        outputs_ref: None,
        route: Some(task.route.clone()),
        proof: None,
    };
    let key = ResultKey::new(&spec.run_id, &spec.task_id, spec.attempt);
    mem.stores(QueueSettings::default())
        .results
        .create(&key, &record)
        .await
        .expect("result");
}

fn finished(mem: &InMemory, run: &RunId) -> Option<RunState> {
    mem.record(run)
        .map(|r: RunRecord| r.state)
        .filter(|s| s.is_final())
}

#[tokio::test(start_paused = true)]
async fn a_run_is_driven_to_its_end_on_the_in_memory_stores() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let a = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&a, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({"out": 1})).await;
    until("stage b is sent", || !sent_for_stage(&mem, "b").is_empty()).await;
    assert_eq!(sent_for_stage(&mem, "b")[0].spec.inputs, json!({"x": 1}));
    complete(&mem, &sent_for_stage(&mem, "b")[0], json!({})).await;
    let outcome = handle.await.expect("driver task");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(finished(&mem, &run), Some(RunState::Success));
    assert!(mem.report(&run).is_some());
    assert!(
        mem.lease(&run).is_none(),
        "a finished run's lease is released"
    );
}

#[tokio::test(start_paused = true)]
async fn after_lease_loss_the_new_owner_takes_over_and_finishes() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let first = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&first, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    // Another coordinator writes the lease: the next renewal fails.
    mem.steal_lease(&run, "c2", test_clock());
    let outcome = handle.await.expect("driver task");
    assert!(
        matches!(outcome, Err(RunError::LeaseLost(_))),
        "{outcome:?}"
    );
    let second = coordinator(&mem, "c2");
    let (handle, _cancel) = drive(&second, &run).await;
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({"out": 2})).await;
    until("stage b is sent", || !sent_for_stage(&mem, "b").is_empty()).await;
    complete(&mem, &sent_for_stage(&mem, "b")[0], json!({})).await;
    assert!(handle.await.expect("driver task").is_ok());
    assert_eq!(finished(&mem, &run), Some(RunState::Success));
}

#[tokio::test(start_paused = true)]
async fn a_superseded_writer_gives_the_run_up() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let first = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&first, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    // Another coordinator appends to the log behind this one's back.
    let last = mem.log(&run).last().map_or(0, |(s, _)| *s);
    let entry = EventRecord {
        v: PROTOCOL_VERSION,
        at: test_clock(),
        events: Vec::new(),
        object: None,
    };
    let stores = mem.stores(QueueSettings::default());
    stores
        .events
        .append(&run, &entry, last, "c2")
        .await
        .expect("append");
    // Its next entry (this result) no longer follows the last one.
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({"out": 1})).await;
    let outcome = handle.await.expect("driver task");
    assert!(
        matches!(outcome, Err(RunError::Superseded(_))),
        "{outcome:?}"
    );
    assert!(
        sent_for_stage(&mem, "b").is_empty(),
        "nothing acted on after losing the log"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_re_enqueues_an_attempt_nobody_will_finish() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let c = coordinator(&mem, "c1");
    let (handle, cancel) = drive(&c, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    let task = sent_for_stage(&mem, "a")[0].clone();
    // A worker (not heartbeating) claimed it, then a late ack deleted the
    // message: no result will ever come.
    let (seq, _) = mem.queued().into_iter().next().expect("queued");
    let key = ClaimKey::attempt(&run, &task.spec.task_id, task.spec.attempt);
    let claim = Claim {
        v: PROTOCOL_VERSION,
        worker: "gone".into(),
        delivered: 1,
        at: test_clock(),
        stream_seq: Some(seq),
        proof: None,
    };
    c.stores.claims.create(&key, &claim).await.expect("claim");
    mem.remove_queued(seq);
    until("the attempt is sent again", || {
        mem.sent().iter().any(|s| s.msg_id.contains(":swept"))
    })
    .await;
    let again = sent_for_stage(&mem, "a");
    assert_eq!(again.len(), 2);
    assert_eq!(
        again[1].spec.attempt, task.spec.attempt,
        "the same attempt, re-sent"
    );
    assert_eq!(mem.queued().len(), 1, "queued again");
    cancel.cancel();
    let _ = handle.await;
}

#[tokio::test(start_paused = true)]
async fn a_group_commit_too_large_for_one_entry_is_split() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", FAN_OUT).await;
    let c = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&c, &run).await;
    until("the fan-out is sent", || {
        sent_for_stage(&mem, "many").len() == 4
    })
    .await;
    let big = "x".repeat(100 * 1024);
    // Every result there at once: one group, over the entry limit.
    for task in sent_for_stage(&mem, "many") {
        complete(&mem, &task, json!({"big": big})).await;
    }
    assert!(handle.await.expect("driver task").is_ok());
    assert_eq!(finished(&mem, &run), Some(RunState::Success));
    let entries: Vec<usize> = mem
        .log(&run)
        .iter()
        .map(|(_, rec)| {
            rec.events
                .iter()
                .filter(|e| matches!(e, Event::TaskFinished(_)))
                .count()
        })
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(entries.iter().sum::<usize>(), 4);
    assert!(
        entries.len() >= 2,
        "split into several entries: {entries:?}"
    );
    for (_, rec) in mem.log(&run) {
        let size = cascade_proto::encode(&rec).map_or(0, |b| b.len());
        assert!(
            size <= cascade_proto::wire::INLINE_LIMIT,
            "entry of {size} bytes"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn after_failover_only_unfinished_attempts_are_sent_again() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let first = coordinator(&mem, "c1");
    let (handle, cancel) = drive(&first, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({"out": 3})).await;
    until("stage b is sent", || !sent_for_stage(&mem, "b").is_empty()).await;
    // The first coordinator shuts down and hands the run over.
    cancel.cancel();
    assert!(matches!(
        handle.await.expect("driver task"),
        Err(RunError::LeaseLost(_))
    ));
    let before = mem.sent().len();
    let second = coordinator(&mem, "c2");
    let (handle, _cancel) = drive(&second, &run).await;
    until("b is sent again", || sent_for_stage(&mem, "b").len() == 2).await;
    let resent: Vec<_> = mem.sent()[before..].to_vec();
    assert_eq!(resent.len(), 1, "only b: {resent:?}");
    assert_eq!(resent[0].tasks[0].spec.stage_id.as_str(), "b");
    assert!(!resent[0].queued, "same message id: deduplicated");
    assert_eq!(resent[0].tasks[0].spec.inputs, json!({"x": 3}));
    complete(&mem, &sent_for_stage(&mem, "b")[0], json!({})).await;
    assert!(handle.await.expect("driver task").is_ok());
    assert_eq!(sent_for_stage(&mem, "a").len(), 1, "a never ran again");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_is_taken_while_a_sweep_is_under_way() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", FAN_OUT).await;
    let c = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&c, &run).await;
    until("the fan-out is sent", || {
        sent_for_stage(&mem, "many").len() == 4
    })
    .await;
    // A slow server: the sweep of four stragglers takes 40 s.
    mem.slow_claims(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut record = mem.record(&run).expect("record");
    record.cancel_requested = Some("stop".into());
    c.stores.runs.write(&record).await.expect("cancel");
    let asked = test_clock();
    let logged = |mem: &InMemory| {
        mem.log(&run).iter().any(|(_, rec)| {
            rec.events
                .iter()
                .any(|e| matches!(e, Event::CancelRequested { .. }))
        })
    };
    until("the cancel is logged", || logged(&mem)).await;
    let waited = test_clock() - asked;
    assert!(
        waited < 1_000,
        "the cancel waited {waited} ms behind the sweep"
    );
    assert!(handle.await.expect("driver task").is_ok());
    assert_eq!(finished(&mem, &run), Some(RunState::Failed));
}

const STAR: &str = "\
cascade:
  name: star
stages:
  - stage: a
    skill: echo
    swarm_config:
      topology: star
";

fn worker(name: &str, heartbeat_at: Millis) -> cascade_proto::wire::WorkerInfo {
    cascade_proto::wire::WorkerInfo {
        v: PROTOCOL_VERSION,
        name: name.to_owned(),
        skills: vec!["echo".into()],
        labels: BTreeMap::new(),
        role: cascade_proto::wire::WorkerRole::Member,
        concurrency: 4,
        in_flight: 0,
        draining: false,
        started_at: heartbeat_at,
        heartbeat_at,
        completed: 0,
        failed: 0,
        version: String::new(),
        models: Vec::new(),
        capabilities: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_re_routes_an_attempt_stranded_on_a_gone_worker() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", STAR).await;
    let c = coordinator(&mem, "c1");
    c.registry
        .workers
        .insert("w1".into(), worker("w1", test_clock()));
    let (handle, cancel) = drive(&c, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    assert_eq!(mem.sent()[0].subject, "cascade.task.worker.w1");
    // w1 stops beating: only its own consumer could take the task.
    until("the attempt is re-routed", || {
        mem.sent().iter().any(|s| s.msg_id.contains(":swept"))
    })
    .await;
    let swept = mem.sent().into_iter().last().expect("sent");
    assert_eq!(swept.subject, "cascade.task.skill.echo", "to the mesh");
    assert_eq!(swept.tasks[0].route, cascade_proto::wire::Route::Mesh);
    cancel.cancel();
    let _ = handle.await;
}

#[tokio::test(start_paused = true)]
async fn a_log_that_cannot_be_read_fails_the_run_visibly() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let first = coordinator(&mem, "c1");
    let (handle, cancel) = drive(&first, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    cancel.cancel();
    let _ = handle.await;
    let (seq, _) = mem.log(&run)[0].clone();
    mem.corrupt_entry(seq);
    let second = coordinator(&mem, "c2");
    let (handle, _cancel) = drive(&second, &run).await;
    let outcome = handle.await.expect("driver task");
    assert!(
        matches!(&outcome, Err(e) if !e.is_retryable()),
        "{outcome:?}"
    );
    let record = mem.record(&run).expect("record");
    assert_eq!(record.state, RunState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("event log entry")),
        "{record:?}"
    );
    assert!(mem.lease(&run).is_none(), "given up at once");
}

/// A coordinator serving ownership only (the owner loop), as `serve` runs it.
fn own(shared: &Arc<Shared>) -> (JoinHandle<()>, CancellationToken) {
    let cancel = CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let (s, c) = (shared.clone(), cancel.clone());
    let handle = tokio::spawn(async move {
        // The sender stays alive: only the scan and the watch feed it.
        let _tx = _tx;
        let _ = super::own_runs(s, rx, tracker.clone(), c).await;
        tracker.close();
        tracker.wait().await;
    });
    (handle, cancel)
}

/// A coordinator whose wall clock is an hour fast, and one five minutes slow.
fn fast_clock() -> Millis {
    test_clock() + 3_600_000
}

fn slow_clock() -> Millis {
    test_clock() - 300_000
}

#[tokio::test(start_paused = true)]
async fn a_dead_owners_lease_is_taken_over_within_a_ttl_whatever_its_clock_said() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    // The owner's clock was an hour fast: its lease "expires" in an hour.
    // It died right after writing it.
    mem.steal_lease(&run, "dead", fast_clock());
    let second = coordinator(&mem, "c2");
    let start = tokio::time::Instant::now();
    let (owner, cancel) = own(&second);
    until("c2 drives the run", || {
        mem.lease(&run).is_some_and(|l| l.owner == "c2")
    })
    .await;
    let waited = start.elapsed();
    assert!(
        waited >= LEASE_TTL && waited <= LEASE_TTL + LEASE_TTL / 2,
        "taken over after {waited:?}, the TTL is {LEASE_TTL:?}"
    );
    cancel.cancel();
    owner.await.expect("owner loop");
}

#[tokio::test(start_paused = true)]
async fn a_renewed_lease_is_never_taken_whatever_the_owners_clock_says() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    // The owner's clock is five minutes slow: every lease it writes
    // "expired" long ago by the other coordinator's clock.
    let slow = Arc::new(Shared {
        clock: slow_clock,
        degraded: Default::default(),
        ..Arc::into_inner(coordinator(&mem, "slow")).expect("one reference")
    });
    let (driver, _stop) = drive(&slow, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    let fast = Arc::new(Shared {
        clock: fast_clock,
        degraded: Default::default(),
        ..Arc::into_inner(coordinator(&mem, "fast")).expect("one reference")
    });
    let (owner, cancel) = own(&fast);
    tokio::time::sleep(10 * LEASE_TTL).await;
    assert_eq!(mem.lease(&run).map(|l| l.owner).as_deref(), Some("slow"));
    assert!(!driver.is_finished(), "the owner still drives the run");
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({"out": 1})).await;
    until("stage b is sent", || !sent_for_stage(&mem, "b").is_empty()).await;
    complete(&mem, &sent_for_stage(&mem, "b")[0], json!({})).await;
    assert!(driver.await.expect("driver task").is_ok());
    assert_eq!(finished(&mem, &run), Some(RunState::Success));
    cancel.cancel();
    owner.await.expect("owner loop");
}

#[tokio::test(start_paused = true)]
async fn an_owner_that_cannot_renew_gives_the_run_up_before_anyone_may_take_it() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let first = coordinator(&mem, "c1");
    let (driver, _stop) = drive(&first, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    let cut = tokio::time::Instant::now();
    mem.leases_unreachable(true);
    let outcome = driver.await.expect("driver task");
    assert!(
        matches!(outcome, Err(RunError::LeaseLost(_))),
        "{outcome:?}"
    );
    // Its last renewal was sent at most a third of a TTL before the cut;
    // an observer counts a whole TTL from seeing it.
    assert!(
        cut.elapsed() <= LEASE_TTL,
        "gave the run up {:?} after the cut",
        cut.elapsed()
    );
    mem.leases_unreachable(false);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_dead_letters_a_task_at_its_limit_whose_advisory_was_missed() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", TWO_STAGES).await;
    let c = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&c, &run).await;
    until("stage a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    let task = sent_for_stage(&mem, "a")[0].clone();
    // Its last allowed delivery was claimed by a worker that died; the
    // server announced the limit while no coordinator listened. The
    // message stays queued for ever.
    let (seq, _) = mem.queued().into_iter().next().expect("queued");
    let key = ClaimKey::attempt(&run, &task.spec.task_id, task.spec.attempt);
    let limit = u64::try_from(c.stores.settings.max_deliver).expect("limit");
    let claim = Claim {
        v: PROTOCOL_VERSION,
        worker: "gone".into(),
        delivered: limit,
        at: test_clock(),
        stream_seq: Some(seq),
        proof: None,
    };
    c.stores.claims.create(&key, &claim).await.expect("claim");
    let outcome = handle.await.expect("driver task");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(finished(&mem, &run), Some(RunState::Failed));
    let report = mem.report(&run).expect("report");
    let error = report["stages"]["a"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("dead-lettered"), "{report}");
    assert!(mem.queued().is_empty(), "taken out of the queue");
    assert_eq!(mem.dead_letters().len(), 1);
    assert!(
        !mem.sent().iter().any(|s| s.msg_id.contains(":swept")),
        "not re-sent: it would only reach its limit again"
    );
}

const RETRIED: &str = "\
cascade:
  name: retried
stages:
  - stage: a
    skill: echo
    error_handling: {strategy: retry, max_retries: 2, backoff: linear, base_delay: 20s, max_delay: 20s, jitter: false}
";

#[tokio::test(start_paused = true)]
async fn a_retry_set_on_a_fast_clock_fires_on_time_after_a_takeover() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", RETRIED).await;
    let fast = Arc::new(Shared {
        clock: fast_clock,
        ..Arc::into_inner(coordinator(&mem, "fast")).expect("one reference")
    });
    let (driver, _stop) = drive(&fast, &run).await;
    until("a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    // The attempt fails: a retry in 20 s, on the owner's clock (an hour fast).
    let task = sent_for_stage(&mem, "a")[0].clone();
    let flaky = TaskOutcome::Failed(cascade_proto::Failure::retryable("flaky"));
    answer(&mem, &task, flaky).await;
    until("the failure is logged", || mem.log(&run).len() >= 2).await;
    let failed = tokio::time::Instant::now();
    // The run idles (nothing logged) for a while, then the owner dies; its
    // last lease write carries its clock.
    tokio::time::sleep(Duration::from_secs(5)).await;
    mem.steal_lease(&run, "dead", fast_clock());
    let outcome = driver.await.expect("driver task");
    assert!(
        matches!(outcome, Err(RunError::LeaseLost(_))),
        "{outcome:?}"
    );
    // A coordinator on the right time takes over: the retry fires 20 s
    // after the failure, not an hour later (the run's clock from the
    // lease), nor 20 s after the takeover (the log's last time alone).
    let (owner, cancel) = own(&coordinator(&mem, "c2"));
    while sent_for_stage(&mem, "a").len() < 2 {
        assert!(failed.elapsed() < Duration::from_secs(120), "no retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = failed.elapsed();
    assert!(
        waited >= Duration::from_secs(20) && waited <= Duration::from_secs(21),
        "the retry came {waited:?} after the failure"
    );
    assert_eq!(sent_for_stage(&mem, "a")[1].spec.attempt.0, 2);
    cancel.cancel();
    owner.await.expect("owner loop");
}

const REMEMBERS: &str = "\
cascade:
  name: remembers
memory:
  persistence: enabled
  scope: cascade
  keys: [big]
stages:
  - stage: a
    skill: echo
    memory:
      write_keys: [big]
  - stage: b
    skill: echo
    inputs:
      x: ${memory.big}
";

#[tokio::test(start_paused = true)]
async fn a_memory_write_that_fails_fails_the_run_visibly_instead_of_being_dropped() {
    let mem = InMemory::new();
    let run = submit(&mem, "r1", REMEMBERS).await;
    let c = coordinator(&mem, "c1");
    let (handle, _cancel) = drive(&c, &run).await;
    until("a is sent", || !sent_for_stage(&mem, "a").is_empty()).await;
    // More than a memory value may hold: the store refuses it for good.
    let big = "x".repeat(cascade_proto::wire::INLINE_LIMIT + 1);
    complete(&mem, &sent_for_stage(&mem, "a")[0], json!({ "big": big })).await;
    let outcome = handle.await.expect("driver task");
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(finished(&mem, &run), Some(RunState::Failed));
    let error = mem.record(&run).and_then(|r| r.error).unwrap_or_default();
    assert!(error.contains("memory value `big`"), "{error}");
    assert!(
        sent_for_stage(&mem, "b").is_empty(),
        "b never ran without it"
    );
}
