//! NATS permissions for each kind of process of a swarm, generated from the
//! names in [`wire`] so they cannot drift from what the code uses.
//!
//! Three roles:
//! - **worker**: pulls and acks only its own skills' queues (and its own
//!   `worker-<name>` queue, `lead-<name>` when it leads a team), writes
//!   claims, results and its own heartbeat key, reads run records, and
//!   reads and writes large values in the object store. It creates no
//!   stream: coordinators do (start them first).
//! - **coordinator**: the swarm's streams, buckets and subjects (it creates
//!   them), and nothing outside them.
//! - **client** (`submit`, `status`, `watch`, `cancel`, `results`,
//!   `workers`): submits, reads run state and reports, requests cancels.
//!
//! No role subscribes to `_INBOX.>`: each process connects with its own
//! inbox prefix (`wire::INBOX_COORDINATOR`, `wire::INBOX_CLIENT`,
//! `wire::inbox_worker(name)`), where async-nats receives JetStream API
//! replies, pull batches and KV watches, and its user may subscribe to that
//! prefix only: nobody reads another's deliveries.
//!
//! What a worker cannot do: purge, delete or update any stream, bucket or
//! object store; publish tasks, submissions, events or cancels; read run
//! memory, submissions, leases (where the grant secrets live) or reports;
//! write a result under another worker's name (result keys end with the
//! writer's name, `wire::key_result`). What it still can: write any claim
//! key (claims without a proof of delivery are ignored), and replace any
//! object of the object store (objects are named after their content, so a
//! replaced one reads as an error); see ARCHITECTURE.md, "Least privilege".
//!
//! The subjects a KV bucket `B` uses (async-nats 0.51, nats-server 2.10+):
//! put, create, update and delete publish to `$KV.B.<key>`; get is a direct
//! get `$JS.API.DIRECT.GET.KV_B.$KV.B.<key>`; `keys` and `watch` create an
//! ordered consumer with `$JS.API.CONSUMER.CREATE.KV_B` and answer its flow
//! control on `$JS.FC.KV_B.>`; opening the bucket reads
//! `$JS.API.STREAM.INFO.KV_B`. The object store `O` is the same with
//! `$O.O.>` and the stream `OBJ_O`. An ack (also progress, nak, term) is a
//! publish to the message's reply subject `$JS.ACK.<stream>.<consumer>.>`,
//! or `$JS.ACK.<domain>.<account>.<stream>.<consumer>.>` from servers that
//! send the longer form.

use serde::Serialize;

use crate::wire::{self, BUCKETS, token};

/// What one NATS user may publish and subscribe to: allow lists; the server
/// refuses anything else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The prefix of every JetStream API request.
const API: &str = "$JS.API";

/// Replies to a connection with inbox prefix `prefix`.
fn inbox(p: &mut Permissions, prefix: &str) {
    p.subscribe(format!("{prefix}.>"));
}

impl Permissions {
    fn publish(&mut self, subject: impl Into<String>) {
        let s = subject.into();
        if !self.publish.contains(&s) {
            self.publish.push(s);
        }
    }

    fn subscribe(&mut self, subject: impl Into<String>) {
        let s = subject.into();
        if !self.subscribe.contains(&s) {
            self.subscribe.push(s);
        }
    }

    /// Whether a publish to `subject` is allowed (NATS wildcard matching).
    pub fn allows_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subject_matches(p, subject))
    }

    /// Whether a subscription to `subject` (itself possibly a wildcard) is
    /// allowed: it must lie entirely within one allowed pattern.
    pub fn allows_subscribe(&self, subject: &str) -> bool {
        self.subscribe.iter().any(|p| subject_matches(p, subject))
    }
}

/// NATS subject matching: `*` is one token, a final `>` one or more. A
/// wildcard in `subject` matches only the same or a wider wildcard in
/// `pattern` (a subscription must not be wider than what is allowed).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(_), Some("*")) => return false,
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Every stream of the swarm: the four of its own, one per KV bucket, the
/// object store's.
pub fn swarm_streams() -> Vec<String> {
    let mut out: Vec<String> = [
        wire::STREAM_TASKS,
        wire::STREAM_SUBMIT,
        wire::STREAM_EVENTS,
        wire::STREAM_DLQ,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    out.extend(BUCKETS.iter().map(|b| kv_stream(b)));
    out.push(obj_stream());
    out
}

fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

fn obj_stream() -> String {
    format!("OBJ_{}", wire::OBJECT_STORE)
}

/// Opening the swarm (every process checks every stream and bucket).
fn read_layout(p: &mut Permissions) {
    for stream in swarm_streams() {
        p.publish(format!("{API}.STREAM.INFO.{stream}"));
    }
}

/// `get` of any key of a bucket.
fn kv_get(p: &mut Permissions, bucket: &str) {
    p.publish(format!(
        "{API}.DIRECT.GET.{}.$KV.{bucket}.>",
        kv_stream(bucket)
    ));
}

/// `keys`, `watch`: an ordered consumer on the bucket's stream.
fn kv_watch(p: &mut Permissions, bucket: &str) {
    let stream = kv_stream(bucket);
    p.publish(format!("{API}.CONSUMER.CREATE.{stream}"));
    p.publish(format!("$JS.FC.{stream}.>"));
}

/// put, create, update, delete of keys matching `keys` (`>` for all).
fn kv_write(p: &mut Permissions, bucket: &str, keys: &str) {
    p.publish(format!("$KV.{bucket}.{keys}"));
}

/// Reading objects: their info (a direct get) and chunks (an ordered
/// consumer).
fn objects_read(p: &mut Permissions) {
    let (store, stream) = (wire::OBJECT_STORE, obj_stream());
    p.publish(format!("{API}.DIRECT.GET.{stream}.$O.{store}.>"));
    p.publish(format!("{API}.CONSUMER.CREATE.{stream}"));
    p.publish(format!("$JS.FC.{stream}.>"));
}

/// Writing objects. A worker's objects are named after its own result key,
/// so it never replaces another's; replacing its own (a redelivered
/// attempt) leaves the old chunks to the store's age limit, since a purge
/// of the store's stream could empty it.
fn objects_write(p: &mut Permissions) {
    p.publish(format!("$O.{}.>", wire::OBJECT_STORE));
}

/// Pulling from and acking one durable consumer of the task queue, and
/// creating it (with exactly its filter) when it is missing.
fn task_queue(p: &mut Permissions, consumer: &str, filter: &str) {
    let stream = wire::STREAM_TASKS;
    p.publish(format!("{API}.CONSUMER.INFO.{stream}.{consumer}"));
    p.publish(format!(
        "{API}.CONSUMER.CREATE.{stream}.{consumer}.{filter}"
    ));
    p.publish(format!("{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"));
    p.publish(format!("$JS.ACK.{stream}.{consumer}.>"));
    p.publish(format!("$JS.ACK.*.*.{stream}.{consumer}.>"));
}

/// A worker, or a pool of workers sharing one NATS user: `names` are the
/// worker names (`--name`) the user may run as (a StatefulSet's pod names,
/// say), `skills` the skills they take (`--skills`), `lead` whether they
/// run with `--role lead`.
pub fn worker_permissions(names: &[String], skills: &[String], lead: bool) -> Permissions {
    let mut p = Permissions::default();
    read_layout(&mut p);
    for skill in skills {
        task_queue(
            &mut p,
            &wire::consumer_skill(skill),
            &wire::subject_task_skill(skill),
        );
    }
    for name in names {
        task_queue(
            &mut p,
            &wire::consumer_worker(name),
            &wire::subject_task_worker(name),
        );
        if lead {
            task_queue(
                &mut p,
                &wire::consumer_lead(name),
                &wire::subject_task_lead(name),
            );
        }
        // Its registration and heartbeats, and nobody else's.
        kv_write(&mut p, wire::BUCKET_WORKERS, &token(name));
        // Its results: the key's last token is the writer.
        kv_write(
            &mut p,
            wire::BUCKET_RESULTS,
            &format!("*.*.*.{}", token(name)),
        );
        inbox(&mut p, &wire::inbox_worker(name));
    }
    // Claims fence deliveries (any worker of the skill may take one over).
    kv_get(&mut p, wire::BUCKET_CLAIMS);
    kv_write(&mut p, wire::BUCKET_CLAIMS, ">");
    // Whether an attempt has a result: every writer's key of it, in order
    // (a direct get by subject filter, which names the stream only).
    kv_get(&mut p, wire::BUCKET_RESULTS);
    p.publish(format!(
        "{API}.DIRECT.GET.{}",
        kv_stream(wire::BUCKET_RESULTS)
    ));
    // Is the run still wanted (not cancelled, not over)?
    kv_get(&mut p, wire::BUCKET_RUNS);
    // Inputs and outputs too large for a message.
    objects_read(&mut p);
    objects_write(&mut p);
    // A message that is no task is dead-lettered by the worker that got it.
    p.publish(wire::subject_dlq("undecodable"));
    if lead {
        // A lead lists the members, hands each task of a batch to one (or
        // to the skill's queue), watches the results and reports.
        kv_get(&mut p, wire::BUCKET_WORKERS);
        kv_watch(&mut p, wire::BUCKET_WORKERS);
        kv_watch(&mut p, wire::BUCKET_RESULTS);
        p.publish(any_last_token(&wire::subject_task_worker("x")));
        p.publish(any_last_token(&wire::subject_task_skill("x")));
        p.publish(any_last_token(&wire::subject_batch_report(
            &crate::RunId::new("x"),
        )));
    }
    p.subscribe(wire::CANCEL_WILDCARD);
    p
}

/// `a.b.x` -> `a.b.*`: the subject builders in `wire` tokenise their
/// argument (a `*` would be escaped), so wildcards are made from a real
/// subject and keep the prefix defined there.
fn any_last_token(subject: &str) -> String {
    match subject.rsplit_once('.') {
        Some((prefix, _)) => format!("{prefix}.*"),
        None => subject.to_owned(),
    }
}

/// `coordinator serve`: creates and manages the swarm's streams, buckets
/// and consumers; dispatches tasks; logs events; dead-letters.
pub fn coordinator_permissions() -> Permissions {
    let mut p = Permissions::default();
    p.publish(format!("{API}.INFO"));
    for stream in swarm_streams() {
        for verb in ["INFO", "CREATE", "UPDATE", "MSG.GET", "MSG.DELETE"] {
            p.publish(format!("{API}.STREAM.{verb}.{stream}"));
        }
        p.publish(format!("{API}.DIRECT.GET.{stream}"));
        p.publish(format!("{API}.DIRECT.GET.{stream}.>"));
        p.publish(format!("{API}.CONSUMER.CREATE.{stream}"));
        p.publish(format!("{API}.CONSUMER.CREATE.{stream}.>"));
        p.publish(format!("{API}.CONSUMER.INFO.{stream}.*"));
        // Queue depths for metrics and routing.
        p.publish(format!("{API}.CONSUMER.LIST.{stream}"));
        p.publish(format!("{API}.CONSUMER.NAMES.{stream}"));
        p.publish(format!("{API}.CONSUMER.MSG.NEXT.{stream}.*"));
        p.publish(format!("$JS.ACK.{stream}.>"));
        p.publish(format!("$JS.ACK.*.*.{stream}.>"));
        p.publish(format!("$JS.FC.{stream}.>"));
    }
    for bucket in BUCKETS {
        kv_write(&mut p, bucket, ">");
    }
    objects_write(&mut p);
    // A report or event object rewritten under its name drops the old
    // chunks (only coordinators may purge, and only the object store).
    p.publish(format!("{API}.STREAM.PURGE.{}", obj_stream()));
    for wildcard in [
        wire::TASKS_WILDCARD,
        wire::EVENTS_WILDCARD,
        wire::DLQ_WILDCARD,
        wire::CANCEL_WILDCARD,
    ] {
        p.publish(wildcard);
    }
    inbox(&mut p, wire::INBOX_COORDINATOR);
    p.subscribe(wire::advisory_max_deliveries("*"));
    p
}

/// The one-shot commands: `submit` (with `--wait`), `status`, `watch`,
/// `cancel`, `results`, `workers`.
pub fn client_permissions() -> Permissions {
    let mut p = Permissions::default();
    read_layout(&mut p);
    p.publish(wire::SUBJECT_SUBMIT);
    // The submission's files, its idempotency key, and cancel requests
    // (written into the run's record before a coordinator took it).
    for bucket in [
        wire::BUCKET_SUBMISSIONS,
        wire::BUCKET_IDEMPOTENCY,
        wire::BUCKET_RUNS,
    ] {
        kv_get(&mut p, bucket);
        kv_write(&mut p, bucket, ">");
    }
    p.publish(any_last_token(&wire::subject_cancel(&crate::RunId::new(
        "x",
    ))));
    // Run state, reports and the worker list.
    for bucket in [
        wire::BUCKET_RUNS,
        wire::BUCKET_REPORTS,
        wire::BUCKET_WORKERS,
    ] {
        kv_get(&mut p, bucket);
        kv_watch(&mut p, bucket);
    }
    objects_read(&mut p);
    // `coordinator dlq`: read letters by id and delete them; `doctor`:
    // list the task consumers.
    for verb in ["MSG.GET", "MSG.DELETE"] {
        p.publish(format!("{API}.STREAM.{verb}.{}", wire::STREAM_DLQ));
    }
    p.publish(format!("{API}.CONSUMER.LIST.{}", wire::STREAM_TASKS));
    inbox(&mut p, wire::INBOX_CLIENT);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wildcards_match_like_the_server() {
        for (pattern, subject, ok) in [
            ("a.b", "a.b", true),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.>", "a.b.c", true),
            ("a.>", "a", false),
            ("a.b", "a.*", false),
            ("a.*", "a.*", true),
            ("a.>", "a.*", true),
            ("a.*", "a.>", false),
            ("$KV.b.>", "$KV.b.k", true),
        ] {
            assert_eq!(
                subject_matches(pattern, subject),
                ok,
                "{pattern} ~ {subject}"
            );
        }
    }

    #[test]
    fn a_worker_pulls_and_acks_only_its_own_queues() {
        let p = worker_permissions(&strings(&["w1"]), &strings(&["lint", "test"]), false);
        for ok in [
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.skill-lint",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.skill-test",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.worker-w1",
            "$JS.API.CONSUMER.CREATE.CASCADE_TASKS.skill-lint.cascade.task.skill.lint",
            "$JS.API.CONSUMER.INFO.CASCADE_TASKS.worker-w1",
            "$JS.ACK.CASCADE_TASKS.skill-lint.1.2.3.4.5",
            "$JS.ACK.hub.acc.CASCADE_TASKS.skill-test.1.2.3.4.5.0",
        ] {
            assert!(p.allows_publish(ok), "{ok}");
        }
        for refused in [
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.skill-deploy",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.worker-w2",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.lead-w1",
            "$JS.ACK.CASCADE_TASKS.skill-deploy.1.2.3.4.5",
            // Not even with another filter under its own consumer's name.
            "$JS.API.CONSUMER.CREATE.CASCADE_TASKS.skill-lint.cascade.task.>",
            "$JS.API.CONSUMER.DELETE.CASCADE_TASKS.skill-lint",
            "$JS.API.STREAM.CREATE.CASCADE_TASKS",
            "$JS.API.STREAM.PURGE.CASCADE_TASKS",
            "$JS.API.STREAM.DELETE.KV_cascade-runs",
            // No publishing tasks, submitting, logging events.
            "cascade.task.skill.deploy",
            "cascade.task.skill.lint",
            "cascade.submit",
            "cascade.event.r1",
            "cascade.cancel.r1",
        ] {
            assert!(!p.allows_publish(refused), "{refused}");
        }
    }

    #[test]
    fn a_worker_writes_its_own_heartbeat_claims_and_results_only() {
        let p = worker_permissions(&strings(&["pool-0", "pool-1"]), &strings(&["echo"]), false);
        for ok in [
            "$KV.cascade-workers.pool-0",
            "$KV.cascade-workers.pool-1",
            "$KV.cascade-claims.run.task.1",
            "$KV.cascade-results.run.task.1.pool-0",
            "$KV.cascade-results.run.task.1.pool-1",
            "$JS.API.DIRECT.GET.KV_cascade-results.$KV.cascade-results.run.task.1.w",
            "$JS.API.DIRECT.GET.KV_cascade-results",
            "$JS.API.DIRECT.GET.KV_cascade-runs.$KV.cascade-runs.run",
            "$JS.API.STREAM.INFO.KV_cascade-memory",
            "$O.cascade-objects.C.nuid",
            "cascade.dlq.undecodable",
        ] {
            assert!(p.allows_publish(ok), "{ok}");
        }
        for refused in [
            "$KV.cascade-workers.pool-2",
            "$KV.cascade-runs.run",
            "$KV.cascade-leases.run",
            "$KV.cascade-memory.global.k",
            "$JS.API.DIRECT.GET.KV_cascade-submissions.$KV.cascade-submissions.r",
            "$JS.API.DIRECT.GET.KV_cascade-memory.$KV.cascade-memory.run.r.k",
            "$JS.API.DIRECT.GET.KV_cascade-leases.$KV.cascade-leases.r.grant",
            "$JS.API.CONSUMER.CREATE.KV_cascade-workers",
            "cascade.dlq.echo",
            // Another worker's result, or one without a writer.
            "$KV.cascade-results.run.task.1.pool-2",
            "$KV.cascade-results.run.task.1",
            "$KV.cascade-results.run.task.1.pool-0.x",
        ] {
            assert!(!p.allows_publish(refused), "{refused}");
        }
        assert!(p.allows_subscribe("_INBOX_worker_pool-0.abc.*"));
        assert!(p.allows_subscribe("_INBOX_worker_pool-1.>"));
        for other in [
            "_INBOX.>",
            "_INBOX.abc.*",
            "_INBOX_worker_pool-2.>",
            "_INBOX_coordinator.>",
            ">",
        ] {
            assert!(!p.allows_subscribe(other), "{other}");
        }
        assert!(p.allows_subscribe("cascade.cancel.>"));
        assert!(!p.allows_subscribe("cascade.>"));
        assert!(!p.allows_subscribe("cascade.task.skill.echo"));
    }

    #[test]
    fn a_lead_also_fans_out_and_watches() {
        let member = worker_permissions(&strings(&["l"]), &strings(&["echo"]), false);
        let lead = worker_permissions(&strings(&["l"]), &strings(&["echo"]), true);
        for subject in [
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.lead-l",
            "cascade.task.worker.m1",
            "cascade.task.skill.other",
            "cascade.batch.run",
            "$JS.API.CONSUMER.CREATE.KV_cascade-results",
            "$JS.FC.KV_cascade-results.x.y",
            "$JS.API.DIRECT.GET.KV_cascade-workers.$KV.cascade-workers.m1",
        ] {
            assert!(lead.allows_publish(subject), "{subject}");
            assert!(!member.allows_publish(subject), "{subject}");
        }
        assert!(!lead.allows_publish("cascade.task.lead.other"));
    }

    #[test]
    fn names_and_skills_are_tokenised_like_the_wire() {
        let p = worker_permissions(&strings(&["host.1"]), &strings(&["a.b"]), false);
        assert!(p.allows_publish("$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.skill-a=2Eb"));
        assert!(p.allows_publish("$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.worker-host=2E1"));
        assert!(p.allows_publish("$KV.cascade-workers.host=2E1"));
        assert!(!p.publish.iter().any(|s| s.contains("skill-a.b")));
    }

    #[test]
    fn the_coordinator_stays_within_the_swarm() {
        let p = coordinator_permissions();
        for ok in [
            "$JS.API.STREAM.CREATE.CASCADE_TASKS",
            "$JS.API.STREAM.UPDATE.KV_cascade-workers",
            "$JS.API.STREAM.MSG.DELETE.CASCADE_TASKS",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_SUBMIT.coordinators",
            "$JS.ACK.CASCADE_SUBMIT.coordinators.1.2.3.4.5",
            "$JS.API.DIRECT.GET.CASCADE_EVENTS",
            "$JS.API.CONSUMER.CREATE.KV_cascade-results",
            "$JS.API.CONSUMER.LIST.CASCADE_TASKS",
            "$KV.cascade-leases.run",
            "cascade.task.skill.any",
            "cascade.event.run",
            "cascade.dlq.echo",
            "$O.cascade-objects.M.x",
        ] {
            assert!(p.allows_publish(ok), "{ok}");
        }
        for refused in [
            "$JS.API.STREAM.DELETE.CASCADE_TASKS",
            "$JS.API.STREAM.PURGE.CASCADE_EVENTS",
            "$JS.API.STREAM.CREATE.OTHER",
            "$KV.other.k",
            "other.subject",
            "cascade.submit",
        ] {
            assert!(!p.allows_publish(refused), "{refused}");
        }
        assert!(p.allows_subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CASCADE_TASKS.*"));
        assert!(p.allows_subscribe("_INBOX_coordinator.x.*"));
        assert!(!p.allows_subscribe("_INBOX.>"));
    }

    #[test]
    fn no_worker_purges_deletes_or_updates_anything() {
        let p = worker_permissions(&strings(&["w"]), &strings(&["echo"]), true);
        for s in &p.publish {
            for verb in [".PURGE.", ".DELETE.", ".UPDATE.", "STREAM.CREATE"] {
                assert!(!s.contains(verb), "{s}");
            }
        }
        for stream in swarm_streams() {
            for verb in ["PURGE", "DELETE", "UPDATE", "CREATE", "MSG.DELETE"] {
                let subject = format!("$JS.API.STREAM.{verb}.{stream}");
                assert!(!p.allows_publish(&subject), "{subject}");
            }
        }
        assert!(!p.allows_publish("cascade.submit"));
    }

    #[test]
    fn a_client_submits_and_reads_but_runs_nothing() {
        let p = client_permissions();
        for ok in [
            "cascade.submit",
            "$KV.cascade-submissions.run",
            "$KV.cascade-runs.run",
            "cascade.cancel.run",
            "$JS.API.CONSUMER.CREATE.KV_cascade-workers",
            "$JS.API.DIRECT.GET.KV_cascade-reports.$KV.cascade-reports.run",
        ] {
            assert!(p.allows_publish(ok), "{ok}");
        }
        for refused in [
            "cascade.task.skill.echo",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_TASKS.skill-echo",
            "$JS.API.CONSUMER.MSG.NEXT.CASCADE_SUBMIT.coordinators",
            "$KV.cascade-results.r.t.1",
            "$KV.cascade-reports.r",
            "$O.cascade-objects.C.x",
            "$JS.API.STREAM.PURGE.OBJ_cascade-objects",
            "$JS.API.STREAM.CREATE.CASCADE_SUBMIT",
        ] {
            assert!(!p.allows_publish(refused), "{refused}");
        }
        assert!(p.allows_subscribe("_INBOX_client.x.*"));
        assert!(!p.allows_subscribe("_INBOX.>"));
    }

    #[test]
    fn no_duplicates_and_every_stream_is_known() {
        for p in [
            worker_permissions(&strings(&["w"]), &strings(&["a", "a"]), true),
            coordinator_permissions(),
            client_permissions(),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            assert!(p.publish.iter().all(|s| seen.insert(s.clone())));
        }
        assert_eq!(swarm_streams().len(), 4 + BUCKETS.len() + 1);
    }
}
