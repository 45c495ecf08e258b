//! The swarm client commands (`submit`, `status`, `watch`, `cancel`,
//! `results`, `workers`) through the real binary against a real
//! nats-server per test. No coordinator serves here: the tests play its
//! part, writing run records and reports by hand with the keys and
//! encodings `coordinator serve` uses.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_proto::wire::{self, RunRecord, RunState, Submission, WorkerInfo, WorkerRole};
use cascade_proto::{RunId, decode, encode};
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect};
use cascade_tests::{NatsServer, await_condition, write_tree};
use serde_json::{Value, json};

const MAIN: &str = "cascade: release\nstages:\n  - stage: audit\n    cascade: deep-audit\n  - stage: build\n    skill: echo\n    depends_on: [audit]\n    inputs:\n      msg: hi\n";
const DEEP: &str = "cascade: deep\nstages:\n  - stage: inner\n    skill: echo\n";
const WAIT: Duration = Duration::from_secs(30);

struct Env {
    server: NatsServer,
    rt: tokio::runtime::Runtime,
    swarm: Swarm,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let server = NatsServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let args = NatsArgs {
            url: server.client_url.clone(),
            ..Default::default()
        };
        let swarm = rt.block_on(async {
            let client = connect(&args, "test").await.expect("connect");
            Swarm::setup(client, QueueSettings::default())
                .await
                .expect("setup")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(
            dir.path(),
            &[("main.yaml", MAIN), ("deep-audit.yaml", DEEP)],
        );
        Env {
            server,
            rt,
            swarm,
            dir,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = cascade_tests::coordinator_command();
        cmd.env("NATS_URL", &self.server.client_url)
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("the coordinator runs")
    }

    fn submitted(&self) -> u64 {
        self.rt.block_on(async {
            let mut s = self.swarm.submit.clone();
            s.info().await.expect("stream info").state.messages
        })
    }

    fn put_record(&self, r: &RunRecord) {
        self.rt.block_on(async {
            self.swarm
                .raw()
                .runs
                .put(
                    wire::token(r.run_id.as_str()),
                    encode(r).expect("encode").into(),
                )
                .await
                .expect("put record");
        });
    }

    fn record(&self, run: &str) -> RunRecord {
        self.rt.block_on(async {
            let v = self
                .swarm
                .raw()
                .runs
                .get(wire::token(run))
                .await
                .expect("get")
                .expect("a record");
            decode(&v).expect("decodes")
        })
    }

    fn put_report(&self, run: &str, report: &Value) {
        self.rt.block_on(async {
            self.swarm
                .raw()
                .reports
                .put(wire::token(run), encode(report).expect("encode").into())
                .await
                .expect("put report");
        });
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn record(run: &str, state: RunState, stages: &[(&str, &str)]) -> RunRecord {
    RunRecord {
        v: 1,
        run_id: RunId::new(run),
        cascade: "release".into(),
        state,
        created_at: 1,
        updated_at: 2,
        owner: Some("coord-1".into()),
        stages: stages
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        error: None,
        cancel_requested: None,
        waiting: Default::default(),
        degraded: None,
    }
}

fn report(run: &str, status: &str) -> Value {
    json!({
        "cascade": "release", "status": status, "duration": 0.5, "run_id": run,
        "stages": {
            "audit": {"status": "success", "output": {"n": 1}},
            "build": {"status": status, "output": {"msg": "hi"}}
        },
        "memory_snapshot": {}, "escalations": [], "stats": {}
    })
}

#[test]
fn submit_validates_bundles_and_publishes_once_per_run() {
    let env = Env::new();
    let out = env.run(&["submit", "main.yaml", "--input", "who=me"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = stdout(&out).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&run).is_ok(), "not a run id: {run}");
    assert_eq!(env.submitted(), 1);

    let (msg, stored) = env.rt.block_on(async {
        let msg = env
            .swarm
            .submit
            .get_last_raw_message_by_subject(wire::SUBJECT_SUBMIT)
            .await
            .expect("the submission message");
        let stored = env
            .swarm
            .raw()
            .submissions
            .get(wire::token(&run))
            .await
            .expect("get")
            .expect("in the submissions bucket");
        (msg, stored)
    });
    let sub: Submission = decode(&msg.payload).expect("a submission");
    assert_eq!(sub.run_id.as_str(), run);
    assert_eq!(sub.main, "main.yaml");
    assert_eq!(
        sub.files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["deep-audit.yaml", "main.yaml"]
    );
    assert_eq!(sub.inputs.get("who"), Some(&json!("me")));
    assert_eq!(
        msg.headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned()),
        Some(run.clone())
    );
    assert_eq!(decode::<Submission>(&stored).expect("decodes"), sub);
}

#[test]
fn the_same_idempotency_key_gives_one_run() {
    let env = Env::new();
    let args = ["submit", "main.yaml", "--idempotency-key", "release 1.0"];
    let first = env.run(&args);
    let second = env.run(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&first), stdout(&second));
    assert!(
        stderr(&second).contains("already submitted"),
        "{}",
        stderr(&second)
    );
    assert_eq!(env.submitted(), 1);
    let other = env.run(&["submit", "main.yaml", "--idempotency-key", "release 2.0"]);
    assert_ne!(stdout(&other), stdout(&first));
    assert_eq!(env.submitted(), 2);
}

#[test]
fn an_invalid_cascade_is_refused_like_validate_and_nothing_is_sent() {
    let env = Env::new();
    write_tree(
        env.dir.path(),
        &[(
            "bad.yaml",
            "cascade: bad\nstages:\n  - stage: a\n    skill: echo\n    depends_on: [nope]\n  - stage: b\n    cascade: missing\n",
        )],
    );
    let validate = env.run(&["validate", "bad.yaml"]);
    let submit = env.run(&["submit", "bad.yaml"]);
    assert_eq!(submit.status.code(), Some(2), "{}", stderr(&submit));
    assert_eq!(validate.status.code(), Some(2));
    let diagnostics = |o: &Output| -> Vec<String> {
        let e = stderr(o);
        let lines: Vec<&str> = e.lines().collect();
        lines[..lines.len() - 1]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    };
    assert_eq!(diagnostics(&submit), diagnostics(&validate));
    assert!(stderr(&submit).contains("not submitted"));
    assert!(stdout(&submit).is_empty());
    assert_eq!(env.submitted(), 0);
}

#[test]
fn workers_lists_the_registered_workers() {
    let env = Env::new();
    let info = WorkerInfo {
        v: 1,
        name: "w-lint-1".into(),
        skills: vec!["lint".into(), "test".into()],
        labels: BTreeMap::from([("zone".into(), "eu".into())]),
        role: WorkerRole::Lead,
        concurrency: 4,
        in_flight: 3,
        draining: false,
        started_at: 0,
        heartbeat_at: 0,
        completed: 0,
        failed: 0,
        version: "0.1.0".into(),
        models: vec!["claude".into()],
        capabilities: Vec::new(),
    };
    env.rt.block_on(async {
        for (key, value) in [
            ("w-lint-1", encode(&info).expect("encode")),
            ("garbage", b"\xc1not msgpack".to_vec()),
        ] {
            env.swarm
                .raw()
                .workers
                .put(key, value.into())
                .await
                .expect("put worker");
        }
    });
    let out = env.run(&["workers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for part in [
        "w-lint-1",
        "lint,test",
        "claude",
        "zone=eu",
        "lead",
        "3/4",
        "no",
    ] {
        assert!(text.contains(part), "no `{part}` in:\n{text}");
    }
    assert!(stderr(&out).contains("`garbage` in bucket `cascade-workers`"));
    let json_out = env.run(&["workers", "--json"]);
    let list: Value = serde_json::from_slice(&json_out.stdout).expect("JSON");
    assert_eq!(list[0]["name"], "w-lint-1");
    assert_eq!(list[0]["in_flight"], 3);
    assert_eq!(list[0]["models"], json!(["claude"]));
    assert!(list[0]["heartbeat_age_s"].as_f64().is_some());
}

#[test]
fn status_results_and_cancel_read_and_write_the_run_record() {
    let env = Env::new();
    let run = "run-1";
    env.put_record(&record(
        run,
        RunState::Running,
        &[("audit", "success"), ("build", "running")],
    ));

    let status = env.run(&["status", run]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    assert!(
        text.contains("running") && text.contains("coord-1") && text.contains("build"),
        "{text}"
    );
    let listed = env.run(&["status", "--json"]);
    let runs: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(runs[0]["run_id"], run);
    assert_eq!(runs[0]["stages"]["build"], "running");

    let early = env.run(&["results", run]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        stderr(&early).contains("not finished"),
        "{}",
        stderr(&early)
    );

    let cancel = env.run(&["cancel", run]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert!(env.record(run).cancel_requested.is_some());
    assert_eq!(env.record(run).stages["build"], "running");

    // The coordinator finishes the run: report first, then the record.
    env.put_report(run, &report(run, "success"));
    env.put_record(&record(
        run,
        RunState::Success,
        &[("audit", "success"), ("build", "success")],
    ));
    let results = env.run(&["results", run]);
    assert!(results.status.success(), "{}", stderr(&results));
    let got: Value = serde_json::from_slice(&results.stdout).expect("JSON");
    assert_eq!(got, report(run, "success"));
    assert_eq!(env.run(&["cancel", run]).status.code(), Some(1));
    assert_eq!(env.run(&["cancel", "no-such-run"]).status.code(), Some(2));
    assert_eq!(env.run(&["status", "no-such-run"]).status.code(), Some(2));
}

#[test]
fn a_large_report_is_read_from_the_object_store() {
    let env = Env::new();
    let run = "run-big";
    let big = report(run, "success");
    env.rt.block_on(async {
        let bytes = encode(&big).expect("encode");
        env.swarm
            .raw()
            .objects
            .put("report-run-big", &mut bytes.as_slice())
            .await
            .expect("put object");
    });
    env.put_report(run, &json!({"$ref": "report-run-big"}));
    env.put_record(&record(run, RunState::Success, &[("build", "success")]));
    let out = env.dir.path().join("results.json");
    let results = env.run(&["results", run, "--output", "results.json"]);
    assert!(results.status.success(), "{}", stderr(&results));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results file")).expect("JSON");
    assert_eq!(written, big);
}

/// A child process whose stdout is collected as it comes.
struct Watched {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().expect("stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("lock").push_str(&text);
            }
        });
        Watched { child, out }
    }

    fn text(&self) -> String {
        self.out.lock().expect("lock").clone()
    }

    fn await_text(&self, what: &str) {
        await_condition(&format!("`{what}` in the output"), WAIT, || {
            self.text().contains(what).then_some(())
        });
    }

    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = await_condition("the process to exit", WAIT, || {
            self.child.try_wait().expect("try_wait")
        });
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        // The reader thread sees EOF once the process is gone.
        await_condition("the rest of stdout", WAIT, || {
            (Arc::strong_count(&self.out) == 1).then_some(())
        });
        (status.code(), self.text(), err)
    }
}

#[test]
fn watch_prints_stage_changes_and_exits_when_the_run_ends() {
    let env = Env::new();
    let run = "run-w";
    env.put_record(&record(
        run,
        RunState::Running,
        &[("audit", "running"), ("build", "pending")],
    ));
    let w = Watched::spawn(env.cmd(&["watch", run]));
    w.await_text("▶ audit");
    env.put_record(&record(
        run,
        RunState::Running,
        &[("audit", "success"), ("build", "running")],
    ));
    w.await_text("▶ build");
    let mut last = record(
        run,
        RunState::Failed,
        &[("audit", "success"), ("build", "failed")],
    );
    last.error = Some("stage build failed".into());
    env.put_record(&last);
    let (code, out, err) = w.finish();
    assert_eq!(code, Some(1), "{err}");
    for line in [
        "✓ audit",
        "✗ build failed",
        "run run-w: failed: stage build failed",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("↺ build"), "{out}");

    let ok = "run-ok";
    env.put_record(&record(ok, RunState::Running, &[("audit", "running")]));
    let w = Watched::spawn(env.cmd(&["watch", ok]));
    w.await_text("▶ audit");
    env.put_record(&record(ok, RunState::Success, &[("audit", "success")]));
    let (code, out, err) = w.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("✓ audit"), "{out}");
}

#[test]
fn submit_wait_follows_the_run_and_writes_its_results() {
    let env = Env::new();
    let w = Watched::spawn(env.cmd(&[
        "submit",
        "main.yaml",
        "--wait",
        "--output",
        "results.json",
        "--idempotency-key",
        "k",
    ]));
    // Play the coordinator: find the run, finish it.
    let run = await_condition("the idempotency key", WAIT, || {
        env.rt.block_on(async {
            let v = env
                .swarm
                .raw()
                .idempotency
                .get(wire::token("k"))
                .await
                .ok()??;
            String::from_utf8(v.to_vec()).ok()
        })
    });
    await_condition("the submission", WAIT, || {
        (env.submitted() == 1).then_some(())
    });
    env.put_record(&record(&run, RunState::Running, &[("audit", "running")]));
    env.put_report(&run, &report(&run, "success"));
    env.put_record(&record(
        &run,
        RunState::Success,
        &[("audit", "success"), ("build", "success")],
    ));
    let (code, out, err) = w.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("submitted run {run}")), "{err}");
    // As `run` prints: the final stages' outputs.
    let answer: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(answer, json!({"build": {"msg": "hi"}}));
    let written = std::fs::read_to_string(env.dir.path().join("results.json")).expect("file");
    assert_eq!(
        serde_json::from_str::<Value>(&written).expect("JSON"),
        report(&run, "success")
    );
    assert!(!Path::new(&env.dir.path().join("results.tmp")).exists());
}

/// A dead letter of one attempt of `run`, as the coordinator writes it.
fn letter(run: &str) -> cascade_proto::wire::DeadLetter {
    let task: cascade_proto::TaskSpec = serde_json::from_value(json!({
        "run_id": run, "task_id": "build#0", "stage_id": "build", "skill": "echo",
        "attempt": 1, "inputs": {"msg": "hi"},
    }))
    .expect("a task spec");
    cascade_proto::wire::DeadLetter {
        v: cascade_proto::PROTOCOL_VERSION,
        stream_seq: 7,
        subject: "cascade.task.skill.echo".into(),
        deliveries: 5,
        task: Some(task),
        raw: None,
        reason: "delivered 5 times without a result: the worker crashed or lost it each time"
            .into(),
        at: 1,
    }
}

#[test]
fn dlq_replay_refuses_what_it_cannot_replay_and_drop_deletes() {
    let env = Env::new();
    env.put_record(&record(
        "r-running",
        RunState::Running,
        &[("build", "running")],
    ));
    env.put_record(&record("r-ok", RunState::Success, &[("build", "success")]));
    let garbage = cascade_proto::wire::DeadLetter {
        task: None,
        raw: Some(b"\xffnot msgpack".to_vec()),
        subject: "cascade.task.skill.echo".into(),
        reason: "undecodable".into(),
        ..letter("x")
    };
    let stores = env.swarm.stores();
    env.rt.block_on(async {
        for (subject, l) in [
            ("cascade.dlq.echo", letter("r-running")),
            ("cascade.dlq.echo", letter("r-ok")),
            ("cascade.dlq.undecodable", garbage),
        ] {
            stores
                .tasks
                .dead_letter(subject.into(), &l, None)
                .await
                .expect("a dead letter");
        }
    });
    let o = env.run(&["dlq", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all: Value = serde_json::from_slice(&o.stdout).expect("json");
    let ids: Vec<u64> = all
        .as_array()
        .expect("an array")
        .iter()
        .map(|l| l["id"].as_u64().expect("an id"))
        .collect();
    assert_eq!(ids.len(), 3, "{all}");
    let text = stdout(&env.run(&["dlq", "list"]));
    assert!(
        text.contains("r-running")
            && text.contains("build#0")
            && text.contains("delivered 5 times"),
        "{text}"
    );
    for (id, why) in [
        (ids[0], "is still running"),
        (ids[1], "succeeded anyway"),
        (ids[2], "holds no task"),
    ] {
        let o = env.run(&["dlq", "replay", &id.to_string()]);
        assert_eq!(o.status.code(), Some(1), "refused: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{why}: {}", stderr(&o));
    }
    assert_eq!(env.submitted(), 0, "nothing was submitted");
    let o = env.run(&["dlq", "show", "999"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut drop = vec!["dlq", "drop"];
    drop.extend(ids.iter().map(String::as_str));
    let o = env.run(&drop);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["dlq", "list", "--json"]);
    assert_eq!(stdout(&o).trim(), "[]");
    let o = env.run(&["dlq", "drop", &ids[0]]);
    assert_eq!(o.status.code(), Some(2), "gone: {}", stderr(&o));
}

#[test]
fn doctor_fails_when_the_server_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let o = cascade_tests::coordinator_command()
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
        .args(["doctor"])
        .stdin(Stdio::null())
        .output()
        .expect("doctor");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("FAIL  server:"), "{}", stdout(&o));
}
