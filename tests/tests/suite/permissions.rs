//! The generated NATS permissions (`coordinator permissions`) against a
//! real nats-server that enforces them: a coordinator, workers and a client,
//! each connected as its own restricted user, run cascades end to end (mesh
//! queues, a worker's own queue, a team lead, values through the object
//! store) without one permissions violation; a worker's user is refused
//! other skills' queues and subjects while it may use its own; and the
//! attacks of issue 10, made with another skill's worker credentials while a
//! run is in flight (eavesdropping on inboxes, forged results and claims,
//! purging and deleting, submitting, reading memory and grant secrets), are
//! refused by the server or dropped by the coordinator and workers, and the
//! run succeeds with its real output.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cascade_proto::wire;
use cascade_swarm::{NatsArgs, QueueSettings, Swarm, connect_as};
use cascade_tests::{Proc, TEST_ACK_WAIT, TEST_WORKER_TTL, await_condition, binary, write_tree};
use futures::StreamExt;
use serde_json::Value;

/// A NATS user of the test server: its name, password, and the arguments
/// of `coordinator permissions` that generate its permissions.
struct User {
    name: &'static str,
    password: &'static str,
    args: &'static [&'static str],
}

const COORDINATOR: User = User {
    name: "cascade-coordinator",
    password: "pw-coordinator",
    args: &["--role", "coordinator"],
};
const CLIENT: User = User {
    name: "cascade-client",
    password: "pw-client",
    args: &["--role", "client"],
};
/// A pool of two members sharing one user (as a StatefulSet's pods do).
const POOL: User = User {
    name: "cascade-worker-pool",
    password: "pw-pool",
    args: &[
        "--role",
        "worker",
        "--name",
        "pool-0,pool-1",
        "--skills",
        "echo,big,measure,gate",
    ],
};
/// Another skill's worker: the attacker's credentials.
const LEDGER: User = User {
    name: "cascade-worker-ledger",
    password: "pw-ledger",
    args: &[
        "--role", "worker", "--name", "ledger-0", "--skills", "ledger",
    ],
};
const LEAD: User = User {
    name: "cascade-worker-lead",
    password: "pw-lead",
    args: &[
        "--role", "worker", "--name", "lead-0", "--skills", "echo", "--lead",
    ],
};
const USERS: [&User; 5] = [&COORDINATOR, &CLIENT, &POOL, &LEAD, &LEDGER];

/// A nats-server whose only users are the generated ones, in one account
/// with JetStream; passwords come from its environment, as in the Helm
/// values.
struct AuthServer {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

#[derive(serde::Deserialize)]
struct Ports {
    nats: Vec<String>,
}

fn generated(user: &User) -> String {
    let out = Command::new(binary("coordinator"))
        .arg("permissions")
        .args(user.args)
        .args(["--user", user.name, "--format", "nats-conf"])
        .output()
        .expect("run coordinator permissions");
    assert!(
        out.status.success(),
        "coordinator permissions {:?}: {}",
        user.args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn password_var(user: &User) -> String {
    format!("{}_PASSWORD", user.name.to_uppercase().replace('-', "_"))
}

impl AuthServer {
    fn start() -> AuthServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let users: Vec<String> = USERS.iter().map(|u| generated(u)).collect();
        let conf = format!(
            "accounts {{\n  CASCADE {{\n    jetstream: enabled\n    users: [\n{}\n    ]\n  }}\n}}\n",
            users.join("\n")
        );
        let conf_path = dir.path().join("server.conf");
        std::fs::write(&conf_path, conf).expect("write server.conf");
        let mut cmd = Command::new("nats-server");
        cmd.arg("-c")
            .arg(&conf_path)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for u in USERS {
            cmd.env(password_var(u), u.password);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}); run the suite with scripts/test, which installs it"
            )
        });
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let ports: Ports = await_condition(
            "the nats-server ports file",
            Duration::from_secs(20),
            || serde_json::from_str(&std::fs::read_to_string(&ports_file).ok()?).ok(),
        );
        let url = ports.nats.first().cloned().expect("a client URL");
        AuthServer { child, dir, url }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn violations(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }

    /// A process of the swarm connected as `user`.
    fn command(&self, bin: &str, user: &User) -> Command {
        let mut cmd = Command::new(binary(bin));
        cmd.env("NATS_URL", &self.url)
            .env("NATS_USER", user.name)
            .env("NATS_PASSWORD", user.password)
            .env("CASCADE_ACK_WAIT", TEST_ACK_WAIT)
            .env("CASCADE_WORKER_TTL", TEST_WORKER_TTL)
            .env_remove("NATS_CREDS")
            .env_remove("CASCADE_SKILLS_DIR");
        cmd
    }

    fn args(&self, user: &User) -> NatsArgs {
        NatsArgs {
            url: self.url.clone(),
            user: Some(user.name.to_owned()),
            password: Some(user.password.to_owned()),
            ..Default::default()
        }
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- nats-server log ----\n{}", self.log());
        }
    }
}

/// The `--http` flag of a process, when this build has it (the operations
/// endpoint: its `/metrics` reads queues and workers, under the same
/// permissions).
fn http_flag(bin: &str, sub: &[&str]) -> Vec<&'static str> {
    let help = Command::new(binary(bin))
        .args(sub)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if help.contains("--http") {
        vec!["--http", "127.0.0.1:0"]
    } else {
        Vec::new()
    }
}

/// The address a process printed after `http listening on`.
fn http_addr(p: &mut Proc) -> String {
    p.await_output("http listening on", Duration::from_secs(30));
    let err = p.stderr();
    let rest = err
        .split("http listening on")
        .nth(1)
        .expect("the line was printed");
    // `host:port` (or `[v6]:port`), whatever follows it (colour codes).
    let addr: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
        .collect();
    assert!(addr.contains(':'), "an address follows: {rest}");
    addr
}

/// A plain HTTP/1.0 GET: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the http port");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

fn client(server: &AuthServer, args: &[&str]) -> (i32, String, String) {
    let out = server
        .command("coordinator", &CLIENT)
        .args(args)
        .output()
        .expect("run coordinator");
    cascade_tests::exit_and_output(&out)
}

fn submit(server: &AuthServer, file: &Path, out: &Path) -> Value {
    let (code, _, stderr) = client(
        server,
        &[
            "submit",
            &file.display().to_string(),
            "--wait",
            "--output",
            &out.display().to_string(),
        ],
    );
    assert_eq!(code, 0, "submit {}: {stderr}", file.display());
    serde_json::from_slice(&std::fs::read(out).expect("results file")).expect("results json")
}

const SKILLS: [(&str, &str); 3] = [
    (
        // Holds its task until the file named by its `gate` input exists.
        "skills/gate.yaml",
        "run: |\n  python3 -c 'import json,os,sys,time; d=json.load(sys.stdin)\n  for _ in range(1200):\n      if os.path.exists(d[\"gate\"]): break\n      time.sleep(0.05)\n  print(json.dumps({\"real\": True}))'\n",
    ),
    (
        "skills/big.yaml",
        "run: |\n  python3 -c 'import json; print(json.dumps({\"data\": \"x\" * 700000}))'\n",
    ),
    (
        "skills/measure.yaml",
        "run: |\n  python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({\"length\": len(d[\"data\"])}))'\n",
    ),
];

#[test]
fn a_swarm_of_restricted_users_runs_cascades_without_a_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<(&str, &str)> = SKILLS.to_vec();
    files.extend([
        (
            "mesh.yaml",
            "name: mesh\nstages:\n  - stage: make\n    skill: big\n  - stage: copy\n    skill: echo\n    inputs: {data: \"${make.data}\"}\n  - stage: size\n    skill: measure\n    inputs: {data: \"${copy.data}\"}\n",
        ),
        (
            "star.yaml",
            "name: star\nstages:\n  - stage: fan\n    type: swarm-parallel\n    skill: echo\n    for_each: [1, 2, 3, 4]\n    inputs: {n: \"${item}\"}\n    swarm_config: {topology: star, strategy: balanced}\n",
        ),
        (
            "teams.yaml",
            "name: teams\nstages:\n  - stage: fan\n    type: swarm-parallel\n    skill: echo\n    for_each: [1, 2, 3, 4]\n    inputs: {n: \"${item}\"}\n    swarm_config: {topology: hierarchical}\n",
        ),
    ]);
    write_tree(dir.path(), &files);
    let skills_dir = dir.path().join("skills").display().to_string();
    let server = AuthServer::start();
    let logs = tempfile::tempdir().expect("log dir");

    // Coordinators create the layout; workers only open it.
    let mut cmd = server.command("coordinator", &COORDINATOR);
    let coordinator_http = http_flag("coordinator", &["serve"]);
    cmd.args(["serve", "--name", "c1", "--lease-ttl", "2s"])
        .args(&coordinator_http);
    let mut coordinator = Proc::spawn("c1", cmd, logs.path());
    coordinator.await_output("serving", Duration::from_secs(30));
    let coordinator_addr = (!coordinator_http.is_empty()).then(|| http_addr(&mut coordinator));
    let worker_http = http_flag("worker", &[]);
    let mut workers = Vec::new();
    for (name, user, skills, extra) in [
        ("pool-0", &POOL, "echo,big,measure,gate", &[][..]),
        ("pool-1", &POOL, "echo,big,measure,gate", &[][..]),
        ("lead-0", &LEAD, "echo", &["--role", "lead"][..]),
    ] {
        let mut cmd = server.command("worker", user);
        cmd.args([
            "--name",
            name,
            "--skills",
            skills,
            "--skills-dir",
            &skills_dir,
        ])
        .args(extra)
        .args(&worker_http);
        let mut p = Proc::spawn(name, cmd, logs.path());
        p.await_output("ready", Duration::from_secs(30));
        workers.push(p);
    }

    let r = submit(
        &server,
        &dir.path().join("mesh.yaml"),
        &dir.path().join("m.json"),
    );
    assert_eq!(r["stages"]["size"]["output"]["length"], 700_000, "{r}");
    let r = submit(
        &server,
        &dir.path().join("star.yaml"),
        &dir.path().join("s.json"),
    );
    assert_eq!(r["status"], "success", "{r}");
    let r = submit(
        &server,
        &dir.path().join("teams.yaml"),
        &dir.path().join("t.json"),
    );
    let ran: Vec<&str> = r["stages"]["fan"]["workers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        !ran.is_empty() && ran.iter().all(|w| w.starts_with("pool-")),
        "the lead handed its batch to the members: {r}"
    );

    // The client's other commands.
    let (code, listed, stderr) = client(&server, &["workers", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    for name in ["pool-0", "pool-1", "lead-0"] {
        assert!(listed.contains(name), "{name} in {listed}");
    }
    let (code, _, stderr) = client(&server, &["status"]);
    assert_eq!(code, 0, "{stderr}");
    let run = r["run_id"].as_str().expect("run id").to_owned();
    let (code, _, stderr) = client(&server, &["results", &run]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = client(&server, &["watch", &run]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = client(&server, &["cancel", &run]);
    assert_eq!(code, 1, "a finished run cannot be cancelled: {stderr}");
    // The operator tools, as the client user.
    let (code, listed, stderr) = client(&server, &["dlq", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed.trim(), "[]");
    let (code, report, stderr) = client(&server, &["doctor"]);
    assert!(
        !report.contains("FAIL") && report.contains("ok    permissions:"),
        "the client may do every check's reads: {report}{stderr}"
    );
    assert_eq!(code, 0, "{report}{stderr}");

    // The operations endpoints, where this build has them: the
    // coordinator's metrics read every skill's queue and the registry.
    if let Some(addr) = &coordinator_addr {
        let (code, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{body}");
        assert_eq!(http_get(addr, "/readyz").0, 200);
    }
    if !worker_http.is_empty() {
        let addr = http_addr(&mut workers[0]);
        assert_eq!(http_get(&addr, "/healthz").0, 200);
        assert_eq!(http_get(&addr, "/metrics").0, 200);
    }

    // A drain (SIGTERM) deregisters within the permissions too.
    for w in &mut workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        let name = w.name.clone();
        let status = await_condition(&format!("{name} to exit"), Duration::from_secs(30), || {
            w.child.try_wait().ok().flatten()
        });
        assert!(status.success(), "{name}: {status}\n{}", w.stderr());
    }
    let violations = server.violations();
    assert!(
        violations.is_empty(),
        "the generated permissions refused what the swarm does:\n{}",
        violations.join("\n")
    );
}

/// Server errors a connection received (permissions violations arrive so).
fn errors_of(events: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    events.lock().map(|e| e.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_user_is_refused_other_skills_and_may_use_its_own() {
    let server = AuthServer::start();
    // The coordinator lays out the swarm and queues a task for `echo` (the
    // pool's skill) and one for `deploy` (not the pool's), each with its
    // consumer, as workers with those skills would have made them.
    let coord = Swarm::setup(
        connect_as(&server.args(&COORDINATOR), "c", wire::INBOX_COORDINATOR)
            .await
            .expect("coordinator connects"),
        QueueSettings::default(),
    )
    .await
    .expect("coordinator sets up");
    for skill in ["echo", "deploy"] {
        coord
            .task_consumer(
                &wire::consumer_skill(skill),
                &wire::subject_task_skill(skill),
                false,
            )
            .await
            .expect("consumer");
        coord
            .raw()
            .js
            .publish(wire::subject_task_skill(skill), "task".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    // The pool's user, with the violations it is told about.
    let (nc, events) = connect_user(&server, &POOL, "pool-0").await;
    let refused = |subject: &str| refused_publish(&events, subject);

    // Publishing a task for another skill (or its own: only coordinators
    // and leads dispatch).
    for subject in ["cascade.task.skill.deploy", "cascade.task.skill.echo"] {
        nc.publish(subject, "forged".into()).await.expect("sent");
        nc.flush().await.expect("flush");
        refused(subject);
    }
    // Pulling from another skill's queue.
    let next_deploy = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        wire::STREAM_TASKS,
        wire::consumer_skill("deploy")
    );
    nc.publish_with_reply(next_deploy.clone(), nc.new_inbox(), "{\"batch\":1}".into())
        .await
        .expect("sent");
    nc.flush().await.expect("flush");
    refused(&next_deploy);
    // Watching the task subjects directly.
    let _sub = nc.subscribe("cascade.task.>").await.expect("sent");
    nc.flush().await.expect("flush");
    let events2 = events.clone();
    await_condition(
        "the server to refuse the subscription",
        Duration::from_secs(10),
        move || {
            errors_of(&events2)
                .iter()
                .any(|e| e.contains("permissions violation for subscription to \"cascade.task.>\""))
                .then_some(())
        },
    );
    // The deploy task is still there, untouched.
    let mut tasks = coord.raw().tasks.clone();
    let info = tasks.info().await.expect("stream info");
    assert_eq!(info.state.messages, 2, "nothing was taken");

    // Its own queue works for the same user: pull the echo task and ack it.
    let swarm = Swarm::setup(
        nc.clone(),
        QueueSettings {
            align_existing: false,
            ..QueueSettings::default()
        },
    )
    .await
    .expect("the pool opens the layout");
    let consumer = swarm
        .task_consumer(
            &wire::consumer_skill("echo"),
            &wire::subject_task_skill("echo"),
            false,
        )
        .await
        .expect("its own consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("pull");
    let msg = batch.next().await.expect("a message").expect("no error");
    assert_eq!(msg.payload.as_ref(), b"task");
    msg.double_ack().await.expect("ack");
    let mut tasks = coord.raw().tasks.clone();
    let info = tasks.info().await.expect("stream info");
    assert_eq!(info.state.messages, 1, "only the echo task was taken");

    // Large outputs: a redelivered attempt stores them again under the same
    // name. The pool may not purge the first copy's chunks (they age out),
    // the coordinator may; either way the object reads as the last write.
    for (who, stores) in [
        ("the pool", swarm.stores()),
        ("the coordinator", coord.coordinator_stores()),
    ] {
        for round in 0..2 {
            let value = serde_json::json!({ "data": "large", "round": round });
            stores
                .objects
                .put_json("run.task.1.pool-0", &value)
                .await
                .unwrap_or_else(|e| panic!("{who} stores an object (round {round}): {e}"));
        }
        let back = stores
            .objects
            .get_json("run.task.1.pool-0")
            .await
            .expect("read back");
        assert_eq!(
            back,
            serde_json::json!({ "data": "large", "round": 1 }),
            "{who}"
        );
    }
    refused(&format!("$JS.API.STREAM.PURGE.OBJ_{}", wire::OBJECT_STORE));

    // Any worker may replace any object (names cannot be restricted), but
    // an object under a content name (a task's large inputs, a report, an
    // event, large outputs) that was replaced reads as an error, never as
    // the replacement.
    let inputs = serde_json::json!({ "secret": "real inputs" });
    let name = cascade_swarm::store::content_name("inputs.run.task.1", &inputs).expect("name");
    let coordinator = coord.coordinator_stores();
    coordinator
        .objects
        .put_json(&name, &inputs)
        .await
        .expect("the coordinator stores the inputs");
    let pool = swarm.stores();
    assert_eq!(pool.objects.get_json(&name).await.expect("reads"), inputs);
    // Written raw, as an attacker would (the store's own put_json would see
    // the name already holds its content and write nothing).
    let injected = serde_json::to_vec(&serde_json::json!({ "secret": "injected" })).expect("json");
    match swarm
        .raw()
        .objects
        .put(name.as_str(), &mut injected.as_slice())
        .await
    {
        Ok(_) => {}
        // Replaced; only the old chunks could not be purged.
        Err(e) if e.kind() == async_nats::jetstream::object_store::PutErrorKind::PurgeOldChunks => {
        }
        Err(e) => panic!("the server lets the pool replace the object: {e}"),
    }
    for (who, stores) in [("the pool", &pool), ("the coordinator", &coordinator)] {
        let e = stores
            .objects
            .get_json(&name)
            .await
            .expect_err("a replaced object does not read");
        assert!(e.to_string().contains("replaced"), "{who}: {e}");
    }
}

/// Connects as `user` running as worker `name` (its own inbox prefix, as
/// the worker derives it), recording the server errors it is told about.
async fn connect_user(
    server: &AuthServer,
    user: &User,
    name: &str,
) -> (
    async_nats::Client,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = events.clone();
    let nc = async_nats::ConnectOptions::new()
        .user_and_password(user.name.into(), user.password.into())
        .custom_inbox_prefix(wire::inbox_worker(name))
        .event_callback(move |e| {
            let sink = sink.clone();
            async move {
                if let Ok(mut v) = sink.lock() {
                    v.push(e.to_string().to_lowercase());
                }
            }
        })
        .connect(server.url.as_str())
        .await
        .unwrap_or_else(|e| panic!("{} connects: {e}", user.name));
    (nc, events)
}

/// Waits for the server to tell the connection it refused `what` to `subject`.
fn refused_to(events: &std::sync::Arc<std::sync::Mutex<Vec<String>>>, what: &str, subject: &str) {
    let want = format!(
        "permissions violation for {what} \"{}\"",
        subject.to_lowercase()
    );
    let events = events.clone();
    await_condition(
        &format!("the server to refuse {what} {subject}"),
        Duration::from_secs(10),
        move || {
            errors_of(&events)
                .iter()
                .any(|e| e.contains(&want))
                .then_some(())
        },
    );
}

fn refused_publish(events: &std::sync::Arc<std::sync::Mutex<Vec<String>>>, subject: &str) {
    refused_to(events, "publish to", subject);
}

/// A forged result record for `(run, task, attempt)` credited to `worker`.
fn forged_result(
    run: &str,
    task: &str,
    attempt: u32,
    worker: &str,
    proof: Option<&str>,
) -> Vec<u8> {
    use cascade_proto::{Attempt, PROTOCOL_VERSION, TaskOutcome, TaskResult};
    cascade_proto::encode(&wire::ResultRecord {
        v: PROTOCOL_VERSION,
        run_id: run.into(),
        result: TaskResult {
            task_id: task.into(),
            attempt: Attempt(attempt),
            worker: worker.into(),
            duration_ms: 1,
            outcome: TaskOutcome::Succeeded {
                outputs: serde_json::json!({ "forged": true }),
            },
            usage: None,
            model: None,
            notes: Vec::new(),
        },
        outputs_ref: None,
        route: None,
        proof: proof.map(str::to_owned),
    })
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_skills_worker_cannot_eavesdrop_forge_or_destroy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = dir.path().join("go");
    let cascade = format!(
        "name: gated\nstages:\n  - stage: secret\n    skill: gate\n    inputs: {{gate: \"{}\", token: s3cret-input}}\n",
        gate.display()
    );
    let mut files: Vec<(&str, &str)> = SKILLS.to_vec();
    files.push(("gated.yaml", &cascade));
    write_tree(dir.path(), &files);
    let skills_dir = dir.path().join("skills").display().to_string();
    let server = AuthServer::start();
    let logs = tempfile::tempdir().expect("log dir");
    let mut cmd = server.command("coordinator", &COORDINATOR);
    cmd.args(["serve", "--name", "c1", "--lease-ttl", "2s"]);
    let mut coordinator = Proc::spawn("c1", cmd, logs.path());
    coordinator.await_output("serving", Duration::from_secs(30));
    let mut cmd = server.command("worker", &POOL);
    cmd.args([
        "--name",
        "pool-0",
        "--skills",
        "gate",
        "--skills-dir",
        &skills_dir,
    ]);
    let mut worker = Proc::spawn("pool-0", cmd, logs.path());
    worker.await_output("ready", Duration::from_secs(30));

    // The attacker: the `ledger` skill's worker user, with the inbox its
    // worker would use. Eavesdropping on anybody else's inbox is refused.
    let (nc, events) = connect_user(&server, &LEDGER, "ledger-0").await;
    let mut taps = Vec::new();
    for inbox in [
        "_INBOX.>".to_owned(),
        format!("{}.>", wire::inbox_worker("pool-0")),
        format!("{}.>", wire::INBOX_COORDINATOR),
        format!("{}.>", wire::INBOX_CLIENT),
    ] {
        taps.push(nc.subscribe(inbox.clone()).await.expect("sent"));
        nc.flush().await.expect("flush");
        refused_to(&events, "subscription to", &inbox);
    }

    // A run whose one task holds (secret inputs and all) until the gate opens.
    let out = dir.path().join("out.json");
    let mut cmd = server.command("coordinator", &CLIENT);
    cmd.args([
        "submit",
        &dir.path().join("gated.yaml").display().to_string(),
        "--wait",
        "--output",
    ])
    .arg(&out);
    let mut submit = Proc::spawn("submit", cmd, logs.path());
    // The attempt in flight, as the claims bucket names it (read as the
    // coordinator: the attacker may not list it).
    let admin = Swarm::setup(
        connect_as(&server.args(&COORDINATOR), "admin", wire::INBOX_COORDINATOR)
            .await
            .expect("admin connects"),
        QueueSettings {
            align_existing: false,
            ..QueueSettings::default()
        },
    )
    .await
    .expect("admin opens the layout");
    let claim_key = {
        let claims = admin.raw().claims.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let keys: Vec<String> = match claims.keys().await {
                Ok(k) => k.filter_map(|k| async move { k.ok() }).collect().await,
                Err(_) => Vec::new(),
            };
            if let Some(k) = keys.into_iter().next() {
                break k;
            }
            assert!(std::time::Instant::now() < deadline, "no claim appeared");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let parts: Vec<&str> = claim_key.split('.').collect();
    assert_eq!(parts.len(), 3, "{claim_key}");
    let (run_t, task_t) = (parts[0], parts[1]);
    let attempt: u32 = parts[2].parse().expect("attempt number");
    let run = wire::untoken(run_t).expect("run token");
    let task = wire::untoken(task_t).expect("task token");
    let results = format!("$KV.{}", wire::BUCKET_RESULTS);

    // Forged results. Under the real worker's key: refused by the server.
    let theirs = format!("{results}.{claim_key}.pool-0");
    nc.publish(
        theirs.clone(),
        forged_result(&run, &task, attempt, "pool-0", None).into(),
    )
    .await
    .expect("sent");
    nc.flush().await.expect("flush");
    refused_publish(&events, &theirs);
    // Under its own key, unproven (or credited to the real worker): stored,
    // and dropped by the coordinator as a security event.
    let own = format!("{results}.{claim_key}.ledger-0");
    for (credited, proof) in [("ledger-0", None), ("pool-0", Some("00ff"))] {
        let js = async_nats::jetstream::new(nc.clone());
        js.publish(
            own.clone(),
            forged_result(&run, &task, attempt, credited, proof).into(),
        )
        .await
        .expect("sent")
        .await
        .expect("the server stores what the permissions allow");
        coordinator.await_output("security: refused forged_result", Duration::from_secs(30));
    }

    // A forged claim, newer than any delivery: the holder finds it at its
    // next touch, overwrites it and goes on.
    let forged_claim = cascade_proto::encode(&wire::Claim {
        v: cascade_proto::PROTOCOL_VERSION,
        worker: "ledger-0".into(),
        delivered: 99,
        at: 0,
        stream_seq: Some(u64::MAX / 2),
        proof: None,
    })
    .expect("encode");
    let js = async_nats::jetstream::new(nc.clone());
    js.publish(
        format!("$KV.{}.{claim_key}", wire::BUCKET_CLAIMS),
        forged_claim.into(),
    )
    .await
    .expect("sent")
    .await
    .expect("stored");
    worker.await_output("security: refused forged_claim", Duration::from_secs(30));

    // Destroying, submitting, reading memory and the run's grant secret.
    for subject in [
        format!("$JS.API.STREAM.PURGE.OBJ_{}", wire::OBJECT_STORE),
        format!("$JS.API.STREAM.PURGE.KV_{}", wire::BUCKET_RESULTS),
        format!("$JS.API.STREAM.DELETE.KV_{}", wire::BUCKET_RESULTS),
        format!("$JS.API.STREAM.DELETE.OBJ_{}", wire::OBJECT_STORE),
        format!("$JS.API.STREAM.UPDATE.{}", wire::STREAM_TASKS),
        format!("$JS.API.STREAM.MSG.DELETE.{}", wire::STREAM_TASKS),
        format!(
            "$JS.API.CONSUMER.DELETE.{}.{}",
            wire::STREAM_TASKS,
            wire::consumer_skill("gate")
        ),
        format!(
            "$JS.API.DIRECT.GET.KV_{m}.$KV.{m}.{}",
            wire::key_memory_run(&run.as_str().into(), "k"),
            m = wire::BUCKET_MEMORY
        ),
        format!(
            "$JS.API.DIRECT.GET.KV_{l}.$KV.{l}.{}",
            wire::key_grant_secret(&run.as_str().into()),
            l = wire::BUCKET_LEASES
        ),
        wire::SUBJECT_SUBMIT.to_owned(),
    ] {
        nc.publish_with_reply(subject.clone(), nc.new_inbox(), "{}".into())
            .await
            .expect("sent");
        nc.flush().await.expect("flush");
        refused_publish(&events, &subject);
    }

    // The gate opens: the run succeeds with the real worker's real output.
    std::fs::write(&gate, "").expect("open the gate");
    let status = await_condition("submit to finish", Duration::from_secs(60), || {
        submit.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{}", submit.stderr());
    let text = std::fs::read_to_string(&out).expect("results file");
    let r: Value = serde_json::from_str(&text).expect("results json");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(
        r["stages"]["secret"]["output"],
        serde_json::json!({ "real": true }),
        "{r}"
    );
    assert!(!text.contains("forged"), "{text}");
    assert!(
        !text.contains("ledger-0"),
        "no credit to the attacker: {text}"
    );
    // Nothing of the run reached the attacker's taps.
    for mut tap in taps {
        let got = futures::FutureExt::now_or_never(tap.next());
        assert!(
            !matches!(got, Some(Some(_))),
            "a refused tap received {got:?}"
        );
    }
    // The server logged the violations.
    let violations = server.violations().join("\n");
    for needle in [
        "Subscription Violation - Subject \"_INBOX.>\"",
        "Publish Violation - Subject \"$JS.API.STREAM.PURGE.OBJ_cascade-objects\"",
        "Publish Violation - Subject \"cascade.submit\"",
    ] {
        assert!(violations.contains(needle), "{needle} in:\n{violations}");
    }
    assert!(
        violations
            .lines()
            .all(|l| l.contains("cascade-worker-ledger")),
        "only the attacker was refused anything:\n{violations}"
    );
}
