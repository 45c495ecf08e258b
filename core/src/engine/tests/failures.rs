//! Error handling: dependency failures, retries with backoff, fallback,
//! escalation, fail-fast, partial runs, timeouts, cancel, and inputs that do
//! not fit the state (stale, duplicate, unknown, after the end).

use cascade_proto::{Failure, TaskOutcome};
use serde_json::json;

use super::{Sim, ok, task_result, timers};
use crate::engine::{Effect, Event, TimerId};

#[test]
fn a_failed_dependency_cancels_its_dependents() {
    let mut sim = Sim::of(
        r#"
name: deps
stages:
  - stage_id: a
    skill: fail
    error_handling: {continue_on_failure: true}
  - stage_id: b
    skill: noop
  - stage_id: c
    skill: noop
  - stage_id: free
    skill: echo
    dependencies: []
    inputs: {x: 1}
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[
        ("a", "failed", None),
        ("b", "cancelled", None),
        ("c", "cancelled", None),
        ("free", "success", Some(json!({"x": 1}))),
    ]);
    assert_eq!(
        sim.stage("b")["error"],
        json!("dependency `a` did not succeed")
    );
    assert_eq!(
        sim.stage("c")["error"],
        json!("dependency `b` did not succeed")
    );
    assert_eq!(sim.run_status(), "partial");
}

#[test]
fn fail_strategy_stops_the_run_and_cancels_in_flight_siblings() {
    let mut sim = Sim::of(
        r#"
name: failfast
stages:
  - stage_id: par
    type: parallel
    skills: [{skill: sleep, inputs: {seconds: 10}}, fail]
  - stage_id: other
    skill: sleep
    dependencies: []
    inputs: {seconds: 10}
  - stage_id: later
    skill: noop
    dependencies: [par]
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[
        ("par", "failed", None),
        ("other", "cancelled", None),
        ("later", "cancelled", None),
    ]);
    let mut cancelled = sim.cancelled();
    cancelled.sort();
    assert_eq!(cancelled, [("other#0".into(), 1), ("par#0".into(), 1)]);
    assert_eq!(sim.run_status(), "failed");
    // No retry for the default strategy; the sleepers never reported.
    assert_eq!(sim.dispatched().len(), 3);
    assert_eq!(sim.now, 1_000_000, "the run ended without waiting");
}

#[test]
fn continue_on_failure_makes_the_run_partial() {
    let mut sim = Sim::of(
        r#"
name: partial
error_handling: {continue_on_failure: true}
stages:
  - stage_id: a
    skill: fail
  - stage_id: b
    skill: noop
    dependencies: []
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[("a", "failed", None), ("b", "success", None)]);
    assert_eq!(sim.run_status(), "partial");
}

#[test]
fn retry_with_exponential_backoff_grows_capped_delays_and_attempts() {
    let mut sim = Sim::of(
        r#"
name: retry
stages:
  - stage_id: flaky
    skill: fail
    inputs: {times: 4}
    error_handling:
      strategy: retry
      max_retries: 5
      backoff: {type: exponential, base: 1s, max: 3s, jitter: false}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let attempts: Vec<u32> = sim.dispatched().iter().map(|d| d.1).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    let delays: Vec<u64> = timers(&sim)
        .into_iter()
        .filter(|(t, _)| matches!(t, TimerId::Retry { .. }))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(delays, [1000, 2000, 3000, 3000]);
    assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    sim.expect(&[("flaky", "success", Some(json!({"attempt": 5})))]);
    assert_eq!(sim.stage("flaky")["attempts"], json!(5));
    assert_eq!(sim.engine.stats().retries, 4);
    assert_eq!(sim.now, 1_000_000 + 9000, "the retries waited on the clock");
}

#[test]
fn retry_delays_with_jitter_stay_capped_and_replay_identically() {
    let yaml = r#"
name: jitter
stages:
  - stage_id: flaky
    skill: fail
    inputs: {times: 6}
    error_handling:
      strategy: retry
      max_retries: 6
      backoff: {type: exponential, base: 100ms, max: 1s, jitter: true}
"#;
    let delays = || {
        let mut sim = Sim::of(yaml);
        sim.start(json!({}));
        sim.run();
        assert_eq!(sim.run_status(), "success");
        timers(&sim).into_iter().map(|(_, d)| d).collect::<Vec<_>>()
    };
    let first = delays();
    assert_eq!(first.len(), 6);
    for (n, d) in first.iter().enumerate() {
        let raw = (100u64 << n).min(1000);
        assert!(*d >= raw / 2 && *d <= raw, "retry {}: {d} vs {raw}", n + 1);
    }
    assert_eq!(first, delays(), "jitter is deterministic");
}

#[test]
fn retries_run_out_then_the_stage_fails() {
    let mut sim = Sim::of(
        r#"
name: out
stages:
  - stage_id: bad
    skill: fail
    error_handling: {strategy: retry, max_retries: 2, backoff: immediate}
"#,
    );
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.dispatched().len(), 3, "1 try + 2 retries");
    assert!(timers(&sim).is_empty(), "immediate backoff needs no timer");
    sim.expect(&[("bad", "failed", None)]);
    assert_eq!(sim.run_status(), "failed");
}

#[test]
fn model_switch_retries_with_a_note() {
    let mut sim = Sim::of(
        r#"
name: ms
stages:
  - stage_id: s
    skill: fail
    inputs: {times: 1}
    error_handling: {strategy: model-switch, backoff: immediate}
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[("s", "success", Some(json!({"attempt": 2})))]);
    let notes = sim.stage("s")["notes"].to_string();
    assert!(notes.contains("model-switch"), "{notes}");
}

#[test]
fn terminal_failures_are_not_retried() {
    let mut sim = Sim::of(
        r#"
name: term
stages:
  - stage_id: s
    skill: fail
    inputs: {terminal: true}
    error_handling: {strategy: retry, max_retries: 5, backoff: immediate}
"#,
    );
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.dispatched().len(), 1);
    sim.expect(&[("s", "failed", None)]);
}

#[test]
fn fallback_skill_runs_after_retries() {
    let mut sim = Sim::of(
        r#"
name: fb
stages:
  - stage_id: s
    skill: fail
    inputs: {v: 1}
    error_handling: {strategy: retry, max_retries: 1, backoff: immediate, fallback: echo}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let skills: Vec<(String, u32)> = sim
        .effects
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::DispatchTask(s) => Some((s.skill.to_string(), s.attempt.0)),
            _ => None,
        })
        .collect();
    assert_eq!(
        skills,
        [("fail".into(), 1), ("fail".into(), 2), ("echo".into(), 3)]
    );
    sim.expect(&[("s", "success", Some(json!({"v": 1})))]);
    let notes = sim.stage("s")["notes"].to_string();
    assert!(notes.contains("fell back to skill `echo`"), "{notes}");
}

#[test]
fn escalate_after_records_an_escalation() {
    let mut sim = Sim::of(
        r#"
name: esc
stages:
  - stage_id: s
    skill: fail
    error_handling:
      strategy: retry
      max_retries: 5
      backoff: immediate
      escalate_after: 2
      escalation: {type: human-review, notify: ops}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let report = sim.engine.report();
    assert_eq!(report.escalations.len(), 1, "{:?}", report.escalations);
    let e = &report.escalations[0];
    assert_eq!(e["stage_id"], json!("s"));
    assert_eq!(e["failed_attempts"], json!(2));
    assert_eq!(
        e["escalation"],
        json!({"type": "human-review", "notify": "ops"})
    );
    assert_eq!(sim.dispatched().len(), 2);
    sim.expect(&[("s", "failed", None)]);
}

#[test]
fn stage_timeout_fails_the_stage_and_cancels_its_task() {
    let mut sim = Sim::of(
        r#"
name: slow
stages:
  - stage_id: slow
    skill: sleep
    inputs: {seconds: 10}
    timeout: 1s
    error_handling: {continue_on_failure: true}
  - stage_id: after
    skill: noop
    dependencies: []
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[("slow", "failed", None), ("after", "success", None)]);
    let err = sim.stage("slow")["error"].to_string();
    assert!(err.contains("timed out after 1.0s"), "{err}");
    assert_eq!(sim.cancelled(), [("slow#0".into(), 1)]);
    assert_eq!(sim.now, 1_001_000);
    assert_eq!(sim.run_status(), "partial");
}

#[test]
fn task_timeout_backstop_fails_an_attempt_whose_worker_vanished() {
    let mut sim = Sim::of(
        r#"
name: vanish
stages:
  - stage_id: s
    skill: sleep
    inputs: {seconds: 100}
    task_timeout: 2s
"#,
    );
    let fx = sim.start(json!({}));
    let spec = fx.iter().find_map(|e| match e {
        Effect::DispatchTask(s) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(spec.and_then(|s| s.timeout_ms), Some(2000));
    let t: Vec<_> = timers(&sim);
    assert!(
        matches!(&t[..], [(TimerId::TaskTimeout { .. }, 7000)]),
        "{t:?}"
    );
    sim.run();
    sim.expect(&[("s", "failed", None)]);
    assert_eq!(sim.now, 1_007_000);
}

#[test]
fn cancel_request_stops_everything() {
    let mut sim = Sim::of(
        r#"
name: cancel
stages:
  - stage_id: a
    skill: sleep
    inputs: {seconds: 5}
  - stage_id: b
    skill: noop
"#,
    );
    sim.start(json!({}));
    sim.advance_to(1_002_000);
    let fx = sim.apply(Event::CancelRequested {
        reason: "user".into(),
    });
    assert!(fx.contains(&Effect::CancelTask {
        task_id: "a#0".into(),
        attempt: cascade_proto::Attempt(1),
    }));
    sim.expect(&[("a", "cancelled", None), ("b", "cancelled", None)]);
    assert_eq!(sim.run_status(), "failed");
    assert_eq!(
        sim.engine.report().error.as_deref(),
        Some("cancelled: user")
    );
    sim.run();
    assert_eq!(sim.dispatched().len(), 1, "nothing runs after a cancel");
}

#[test]
fn stale_duplicate_and_unknown_results_are_ignored_and_counted() {
    let mut sim = Sim::of(
        r#"
name: fence
stages:
  - stage_id: s
    skill: fail
    inputs: {times: 1}
    error_handling: {strategy: retry, backoff: {type: linear, base: 1s, jitter: false}}
"#,
    );
    sim.start(json!({}));
    let first = sim.take("s#0");
    sim.deliver(first.clone());
    // Backing off: the same failure again, and a late success for attempt 1.
    assert!(sim.deliver(first.clone()).is_empty());
    assert!(sim.deliver(task_result("s#0", 1, ok(json!({})))).is_empty());
    // A result from the future, and for a task that does not exist.
    assert!(sim.deliver(task_result("s#0", 9, ok(json!({})))).is_empty());
    assert!(
        sim.deliver(task_result("nope#0", 1, ok(json!({}))))
            .is_empty()
    );
    assert_eq!(sim.engine.stats().ignored_results, 4);
    sim.run();
    sim.expect(&[("s", "success", Some(json!({"attempt": 2})))]);
    // After success the attempt is answered: a duplicate changes nothing.
    let before = sim.engine.report();
    let dup = task_result("s#0", 2, TaskOutcome::Failed(Failure::retryable("late")));
    assert!(sim.deliver(dup).is_empty());
    assert_eq!(sim.engine.stats().ignored_results, 5);
    assert_eq!(sim.engine.report().stages, before.stages);
    let notes: Vec<String> = sim
        .engine
        .report()
        .notes
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        notes.contains(&"result for unknown task `nope#0` ignored".to_owned()),
        "{notes:?}"
    );
    // Each stale result is noted, once per (task, attempt); the duplicate
    // after the finish is an event after the finish.
    for attempt in [1, 9] {
        let stale = format!(
            "stale result for task `s#0` attempt {attempt} ignored (not the attempt in flight)"
        );
        assert!(notes.contains(&stale), "{notes:?}");
    }
    assert!(
        notes.contains(&"event after the run finished ignored".to_owned()),
        "{notes:?}"
    );
    assert_eq!(notes.len(), 5, "{notes:?}");
    assert_eq!(sim.engine.stats().illegal_transitions, 0);
}

#[test]
fn a_duplicate_while_in_flight_is_applied_once() {
    let mut sim = Sim::of(
        "name: d\nstages:\n  - stage_id: a\n    skill: echo\n    inputs: {v: 1}\n  - stage_id: b\n    skill: noop\n",
    );
    sim.start(json!({}));
    let r = sim.take("a#0");
    sim.deliver(r.clone());
    assert!(sim.deliver(r).is_empty());
    sim.run();
    assert_eq!(sim.engine.stats().ignored_results, 1);
    assert_eq!(sim.dispatched().len(), 2, "`b` dispatched once");
}

#[test]
fn events_after_the_finish_are_ignored() {
    let mut sim = Sim::of("name: f\nstages:\n  - stage_id: a\n    skill: noop\n");
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.run_status(), "success");
    let report = sim.engine.report();
    let events = [
        Event::TaskFinished(task_result("a#0", 1, ok(json!({})))),
        Event::TimerFired(TimerId::RunTimeout),
        Event::CancelRequested {
            reason: "late".into(),
        },
        Event::RunStarted {
            run_id: "again".into(),
            inputs: Default::default(),
            memory: Default::default(),
        },
    ];
    for e in events {
        assert!(sim.apply(e).is_empty());
    }
    let after = sim.engine.report();
    assert_eq!(after.status, "success");
    assert_eq!(after.stages, report.stages);
    assert_eq!(
        after.stats.ignored_results,
        report.stats.ignored_results + 1
    );
    // Four events after the finish: one note, three repeats counted.
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let notes: Vec<String> = after.notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        notes,
        [
            "event after the run finished ignored",
            "3 more note(s) dropped (repeats of a note above, or past the first 1000)"
        ]
    );
}

#[test]
fn run_timeout_stops_the_run() {
    let mut sim = Sim::of(
        "name: t\ntimeout: 2s\nstages:\n  - stage_id: a\n    skill: sleep\n    inputs: {seconds: 60}\n",
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[("a", "cancelled", None)]);
    assert_eq!(sim.run_status(), "failed");
    assert_eq!(sim.now, 1_002_000);
}

/// The transition functions guard the engine itself: a stage settled twice
/// or a task moved out of a final phase is refused, counted and noted, and
/// changes nothing else.
#[test]
fn illegal_transitions_are_refused_counted_and_noted() {
    use crate::engine::phase::{Settled, TaskPhase};
    use cascade_proto::TaskId;

    let mut sim = Sim::of("name: i\nstages:\n  - stage_id: a\n    skill: noop\n");
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.run_status(), "success");
    let before = sim.engine.report();
    let mut fx = Vec::new();
    sim.engine
        .settle(0, Settled::Failed, Some("late".into()), &mut fx);
    sim.engine.fail_node(0, "late", &mut fx);
    let id = TaskId::new("a#0");
    assert!(!sim.engine.task_to(&id, TaskPhase::InFlight));
    assert!(fx.is_empty(), "{fx:?}");
    let after = sim.engine.report();
    assert_eq!(after.stages, before.stages);
    assert_eq!(after.stats.illegal_transitions, 3);
    let notes: Vec<String> = after.notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        notes,
        [
            "stage `a`: illegal transition success -> failed ignored",
            "task `a#0`: illegal transition done -> in_flight ignored",
            "1 more note(s) dropped (repeats of a note above, or past the first 1000)",
        ]
    );
    let json = serde_json::to_value(&after).expect("serializes");
    assert_eq!(json["stats"]["illegal_transitions"], 3);
    assert!(before.stats.illegal_transitions == 0);
    let clean = serde_json::to_value(&before).expect("serializes");
    assert!(clean["stats"].get("illegal_transitions").is_none());
}
