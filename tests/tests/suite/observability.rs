//! Metrics, health and readiness of real `coordinator serve --http` and
//! `worker --http` processes: a run moves the counters it should, on both
//! sides, and readiness says why it is not ready.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use cascade_tests::{
    Proc, TestSwarm, await_condition, binary, http_get, http_request_with, write_tree,
};

/// The sum of every series of `name` whose labels include `labels`
/// (`None` when there is no such series).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue, // a longer name with this prefix
            },
        };
        let have: BTreeMap<&str, &str> = series
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            let v: f64 = value.trim().parse().expect("a metric value");
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn scrape(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

const CASCADE: &str = "\
name: observed
stages:
  - {stage: a, skill: noop, dependencies: []}
  - {stage: b, skill: noop, dependencies: []}
  - {stage: c, skill: noop, dependencies: []}
  - stage: hello
    skill: echo
    inputs: {greeting: hi}
    dependencies: [a, b, c]
  - stage: flaky
    skill: fail
    inputs: {times: 1}
    error_handling: {strategy: retry, max_retries: 2, backoff: immediate}
    dependencies: [hello]
";

#[test]
fn a_run_moves_the_counters_of_the_coordinator_and_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("c.yaml", CASCADE)]);
    let mut swarm = TestSwarm::new();
    swarm
        .env
        .push(("CASCADE_HTTP".into(), "127.0.0.1:0".into()));
    swarm.start_coordinator("c1");
    let coordinator = swarm.coordinators[0].http_addr();
    let w = swarm.start_worker("w1", "noop,echo,fail", &[]);
    let worker = swarm.workers[w].http_addr();

    for addr in [&coordinator, &worker] {
        assert_eq!(http_get(addr, "/healthz").0, 200);
        let (status, body) = http_get(addr, "/readyz");
        assert_eq!(status, 200, "{addr}/readyz: {body}");
    }

    let out = dir.path().join("r.json");
    let (code, _, stderr) = swarm.submit_wait(&dir.path().join("c.yaml"), &out, &[]);
    assert_eq!(code, 0, "{stderr}");

    // The worker: 6 attempts ran (5 tasks, one retried), 5 succeeded. Its
    // handlers end just after the result is stored: the in-flight gauge
    // settles.
    let worker_addr = worker.clone();
    let m = await_condition(
        "the worker's handlers to end",
        Duration::from_secs(30),
        || {
            let m = scrape(&worker_addr);
            (metric(&m, "cascade_tasks_in_flight", &[]) == Some(0.0)).then_some(m)
        },
    );
    let get = |name, labels: &[(&str, &str)]| metric(&m, name, labels).unwrap_or(0.0);
    assert_eq!(get("cascade_tasks_received_total", &[]), 6.0, "{m}");
    assert_eq!(get("cascade_tasks_redelivered_total", &[]), 0.0);
    for (skill, n) in [("noop", 3.0), ("echo", 1.0), ("fail", 1.0)] {
        assert_eq!(
            get("cascade_tasks_completed_total", &[("skill", skill)]),
            n,
            "{skill}: {m}"
        );
    }
    assert_eq!(
        get(
            "cascade_tasks_failed_total",
            &[("skill", "fail"), ("kind", "retryable")]
        ),
        1.0
    );
    assert_eq!(get("cascade_task_duration_seconds_count", &[]), 6.0);
    assert_eq!(
        get(
            "cascade_task_duration_seconds_bucket",
            &[("skill", "noop"), ("le", "+Inf")]
        ),
        3.0
    );
    assert_eq!(get("cascade_task_slots", &[]), 4.0);

    // The coordinator: one run, five stages, six dispatches, one retry.
    // The run is final (submit returned) a moment before its driver counts
    // it finished, and the swarm gauges follow watches of the buckets.
    let coordinator_addr = coordinator.clone();
    let m = await_condition(
        "the coordinator's run counters and swarm gauges",
        Duration::from_secs(30),
        || {
            let m = scrape(&coordinator_addr);
            let settled = metric(&m, "cascade_runs_finished_total", &[]) == Some(1.0)
                && metric(&m, "cascade_runs_driven", &[]) == Some(0.0)
                && metric(&m, "cascade_workers", &[]) == Some(1.0)
                && metric(&m, "cascade_runs", &[("state", "success")]) == Some(1.0);
            settled.then_some(m)
        },
    );
    let get = |name, labels: &[(&str, &str)]| metric(&m, name, labels).unwrap_or(0.0);
    assert_eq!(get("cascade_runs_started_total", &[]), 1.0, "{m}");
    assert_eq!(
        get("cascade_runs_finished_total", &[("status", "success")]),
        1.0
    );
    assert_eq!(
        get("cascade_stages_finished_total", &[("status", "success")]),
        5.0
    );
    assert_eq!(get("cascade_tasks_dispatched_total", &[]), 6.0);
    assert_eq!(
        get(
            "cascade_tasks_dispatched_total",
            &[("skill", "noop"), ("route", "mesh")]
        ),
        3.0
    );
    assert_eq!(
        get("cascade_tasks_retried_total", &[("skill", "fail")]),
        1.0
    );
    assert_eq!(
        get("cascade_task_results_total", &[("outcome", "success")]),
        5.0
    );
    assert_eq!(
        get("cascade_task_results_total", &[("outcome", "failure")]),
        1.0
    );
    assert_eq!(get("cascade_tasks_dead_lettered_total", &[]), 0.0);
    assert_eq!(get("cascade_worker_slots", &[]), 4.0);
    assert_eq!(get("cascade_queue_depth", &[("skill", "noop")]), 0.0);
    assert_eq!(get("cascade_runs", &[("state", "running")]), 0.0);
}

#[test]
fn readiness_says_why_it_is_not_ready() {
    // A server that accepts connections and never speaks NATS: the
    // coordinator is alive but stays connecting (for its connect timeout).
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent port");
    let url = format!("nats://{}", silent.local_addr().expect("its address"));
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(binary("coordinator"));
    cmd.env("NATS_URL", &url)
        .args(["serve", "--name", "c-silent", "--http", "127.0.0.1:0"]);
    let mut coordinator = Proc::spawn("c-silent", cmd, logs.path());
    let addr = coordinator.http_addr();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connecting to NATS"), "{body}");
    let (status, body) = http_get(&addr, "/api/runs");
    assert_eq!(status, 503, "{body}");
    coordinator.kill();

    // A draining worker (SIGTERM while a task runs) is not ready.
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[(
            "c.yaml",
            "name: long\nstages:\n  - stage: nap\n    skill: sleep\n    inputs: {seconds: 600}\n",
        )],
    );
    let mut swarm = TestSwarm::new();
    swarm.start_coordinator("c1");
    let w = swarm.start_worker("w1", "sleep", &["--http", "127.0.0.1:0", "--grace", "600s"]);
    let worker = swarm.workers[w].http_addr();
    assert_eq!(http_get(&worker, "/readyz").0, 200);
    let submit = swarm
        .coordinator_cmd()
        .arg("submit")
        .arg(dir.path().join("c.yaml"))
        .output()
        .expect("coordinator submit");
    assert!(submit.status.success(), "{submit:?}");
    let w_addr = worker.clone();
    await_condition(
        "the worker to take the task",
        Duration::from_secs(30),
        || {
            let m = scrape(&w_addr);
            (metric(&m, "cascade_tasks_in_flight", &[]) == Some(1.0)).then_some(())
        },
    );
    swarm.workers[w].signal("TERM");
    let body = await_condition(
        "the draining worker to be unready",
        Duration::from_secs(30),
        || {
            let (status, body) = http_get(&worker, "/readyz");
            (status == 503).then_some(body)
        },
    );
    assert!(body.contains("draining"), "{body}");
    // Still alive: the task it finishes keeps it running.
    assert_eq!(http_get(&worker, "/healthz").0, 200);
    drop(silent);
}

#[test]
fn off_loopback_the_dashboard_and_api_need_the_token() {
    // A NATS that never answers: the endpoint serves while connecting.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent port");
    let url = format!("nats://{}", silent.local_addr().expect("its address"));
    let logs = tempfile::tempdir().expect("tempdir");
    let serve = |extra: &[&str]| {
        let mut cmd = Command::new(binary("coordinator"));
        cmd.env("NATS_URL", &url)
            .env_remove("CASCADE_HTTP_TOKEN")
            .args(["serve", "--name", "c-open", "--http", "0.0.0.0:0"])
            .args(extra);
        cmd
    };
    // Without a token it refuses to start, saying what to do.
    let out = serve(&[]).output().expect("serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http-token") && err.contains("loopback"),
        "{err}"
    );

    let token = "s3cret-token-0123456789";
    let mut coordinator = Proc::spawn("c-open", serve(&["--http-token", token]), logs.path());
    let addr = coordinator.http_addr();
    let request = |path: &str, headers: &[(&str, &str)]| {
        http_request_with(&addr, "GET", path, headers, None).expect("request")
    };
    assert_eq!(request("/healthz", &[]).0, 200, "probes stay open");
    assert_eq!(request("/api/runs", &[]).0, 401);
    assert_eq!(request("/", &[]).0, 401);
    let wrong = "Bearer s3cret-token-012345678X";
    assert_eq!(request("/api/runs", &[("Authorization", wrong)]).0, 401);
    let right = format!("Bearer {token}");
    // Past the guard: the API says it is still connecting.
    assert_eq!(request("/api/runs", &[("Authorization", &right)]).0, 503);
    // A browser logs in once; the cookie is HttpOnly and SameSite=Strict.
    let (status, _) = request(&format!("/login?token={token}"), &[]);
    assert_eq!(status, 303);
    let cookie = format!("cascade_token={token}");
    assert_eq!(request("/api/runs", &[("Cookie", &cookie)]).0, 503);
    coordinator.kill();
}
