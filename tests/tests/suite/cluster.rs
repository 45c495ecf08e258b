//! Clustered JetStream (fault F6): a fan-out on a 3-node cluster with R3
//! streams survives losing the leader of the task stream mid-run.

use std::collections::BTreeMap;
use std::time::Duration;

use cascade_tests::{NatsCluster, TestSwarm, await_condition, write_tree};

const TASKS: usize = 200;

/// The task stream's replica count, current leader's server name and
/// message count; `None` while the cluster does not answer (a request
/// times out during an election).
fn tasks_stream(url: &str) -> Option<(usize, Option<String>, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> = url
            .split(',')
            .map(|u| u.parse().expect("a server URL"))
            .collect();
        let client = async_nats::connect(addrs.as_slice()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js
            .get_stream(cascade_proto::wire::STREAM_TASKS)
            .await
            .ok()?;
        let info = s.info().await.ok()?;
        Some((
            info.config.num_replicas,
            info.cluster.as_ref().and_then(|c| c.leader.clone()),
            info.state.messages,
        ))
    })
}

#[test]
fn a_fan_out_survives_losing_the_task_stream_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let items: Vec<String> = (1..=TASKS).map(|i| i.to_string()).collect();
    write_tree(
        dir.path(),
        &[
            (
                "skills/mark.yaml",
                &format!(
                    "run: |\n  sleep 0.05\n  echo \"$CASCADE_TASK_ID\" >> {d}/executions\n  echo '{{\"ok\": true}}'\n"
                ),
            ),
            (
                "c.yaml",
                &format!(
                    "name: cluster-fan\nstages:\n  - stage: fan\n    type: parallel\n    skill: mark\n    for_each: [{}]\n",
                    items.join(", ")
                ),
            ),
        ],
    );
    let executions = dir.path().join("executions");
    let skills_dir = dir.path().join("skills").display().to_string();
    let mut cluster = NatsCluster::start();
    let urls = cluster.urls();
    // Every process gets the whole URL list and creates R3 streams; the
    // swarm's own single server is not used.
    let mut swarm = TestSwarm::new();
    swarm.env.push(("NATS_URL".into(), urls.clone()));
    swarm.env.push(("CASCADE_REPLICAS".into(), "3".into()));
    // An election takes seconds: the suite's 2 s ack-wait times five
    // deliveries is about the length of one.
    swarm.env.push(("CASCADE_ACK_WAIT".into(), "10s".into()));
    swarm.start_coordinator("c1");
    swarm.start_coordinator("c2");
    for w in ["w1", "w2"] {
        swarm.start_worker(
            w,
            "mark",
            &["--skills-dir", &skills_dir, "--concurrency", "4"],
        );
    }
    let (replicas, _, _) =
        await_condition("the task stream's info", Duration::from_secs(30), || {
            tasks_stream(&urls)
        });
    assert_eq!(replicas, 3, "the task stream is created R3 by the setting");

    let out = dir.path().join("r.json");
    let mut cmd = swarm.coordinator_cmd();
    cmd.arg("submit")
        .arg(dir.path().join("c.yaml"))
        .args(["--wait", "--output"])
        .arg(&out);
    let (done, waiter) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(cmd.output().expect("submit"));
    });

    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    await_condition(
        "a tenth of the tasks to run",
        Duration::from_secs(120),
        || (lines(&executions).len() >= TASKS / 10).then_some(()),
    );
    let leader = await_condition("the task stream's leader", Duration::from_secs(30), || {
        tasks_stream(&urls).and_then(|(_, l, _)| l)
    });
    let done_at_kill = lines(&executions).len();
    assert!(
        done_at_kill < TASKS,
        "the kill must land mid-run ({done_at_kill} of {TASKS} done)"
    );
    cluster.kill(&leader);
    let survivors: String = cluster
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| n.client_url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // A new leader is elected among the two left.
    let new_leader = await_condition(
        "a new leader of the task stream",
        Duration::from_secs(60),
        || {
            tasks_stream(&survivors)
                .and_then(|(_, l, _)| l)
                .filter(|l| *l != leader)
        },
    );

    let o = waiter
        .recv_timeout(Duration::from_secs(300))
        .unwrap_or_else(|_| {
            let st = swarm
                .coordinator_cmd()
                .args(["status", "--json"])
                .output()
                .expect("status");
            panic!(
                "the run did not end within 300 s of the kill ({} executions); status: {}",
                lines(&executions).len(),
                String::from_utf8_lossy(&st.stdout)
            )
        });
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "the run succeeds: {stderr}");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results file")).expect("results json");
    assert_eq!(r["stages"]["fan"]["status"], "success", "{r}");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in lines(&executions) {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), TASKS, "every task ran: {counts:?}");
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    // At-least-once: only a task in flight when the leader died (its
    // result or ack lost with it) may run again, at most 8 of them (two
    // workers of concurrency 4), and each at most twice.
    eprintln!(
        "leader {leader} killed after {done_at_kill} executions, new leader {new_leader}; \
         executed twice: {} {twice:?}",
        twice.len()
    );
    assert!(
        twice.len() <= 8 && twice.iter().all(|(_, n)| **n == 2),
        "executed more than at-least-once explains: {twice:?}"
    );
    // Nothing stuck: the work queue empties.
    await_condition("the task queue to empty", Duration::from_secs(60), || {
        tasks_stream(&survivors).and_then(|(_, _, messages)| (messages == 0).then_some(()))
    });
}
