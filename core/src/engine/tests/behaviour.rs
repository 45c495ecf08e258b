//! One test per behaviour of a run that goes well: ordering, fan-out,
//! for_each, gates, skipping, loops, sub-cascades and memory.

use serde_json::{Value, json};

use super::Sim;
use crate::engine::Effect;

#[test]
fn linear_pipeline_runs_in_list_order_and_passes_outputs() {
    let mut sim = Sim::of(
        r#"
name: linear
stages:
  - stage_id: a
    skill: echo
    inputs: {x: 1}
  - stage_id: b
    skill: echo
    inputs: {y: "${a.x}", z: "a said ${a.x}"}
  - stage_id: c
    skill: noop
"#,
    );
    let fx = sim.start(json!({}));
    let first: Vec<_> = fx
        .iter()
        .filter(|e| matches!(e, Effect::DispatchTask(_)))
        .collect();
    assert_eq!(first.len(), 1, "only `a` starts: {fx:?}");
    sim.run();
    assert_eq!(
        sim.dispatched(),
        [("a#0".into(), 1), ("b#0".into(), 1), ("c#0".into(), 1)]
    );
    sim.expect(&[
        ("a", "success", Some(json!({"x": 1}))),
        ("b", "success", Some(json!({"y": 1, "z": "a said 1"}))),
        ("c", "success", Some(json!({}))),
    ]);
    assert_eq!(sim.run_status(), "success");
    assert!(matches!(
        sim.effects.last(),
        Some((_, Effect::FinishRun { .. }))
    ));
}

#[test]
fn parallel_fan_out_and_join() {
    let mut sim = Sim::of(
        r#"
name: fan
stages:
  - stage_id: fan
    type: parallel
    skills: [echo, noop, {skill: fail, inputs: {times: 0}}]
    inputs: {v: 7}
  - stage_id: left
    skill: echo
    dependencies: []
    inputs: {side: left}
  - stage_id: right
    skill: echo
    dependencies: []
    inputs: {side: right}
  - stage_id: join
    skill: echo
    dependencies: [fan, left, right]
    inputs: {v: "${fan.echo.v}", sides: "${left.side}+${right.side}"}
"#,
    );
    let fx = sim.start(json!({}));
    let n = fx
        .iter()
        .filter(|e| matches!(e, Effect::DispatchTask(_)))
        .count();
    assert_eq!(n, 5, "three fan tasks, left and right start at once");
    // Deliver the last sent first: the join must wait for all of them.
    while sim.step(&mut |len| len - 1) {}
    sim.expect(&[
        (
            "fan",
            "success",
            Some(json!({"echo": {"v": 7}, "noop": {}, "fail": {"attempt": 1}})),
        ),
        (
            "join",
            "success",
            Some(json!({"v": 7, "sides": "left+right"})),
        ),
    ]);
    assert_eq!(
        sim.dispatched().last().map(|d| d.0.as_str()),
        Some("join#0")
    );
}

#[test]
fn for_each_keeps_item_order_whatever_the_delivery_order() {
    for (ty, at_once) in [("sequential", 1), ("parallel", 3)] {
        let mut sim = Sim::of(&format!(
            r#"
name: each
stages:
  - stage_id: each
    type: {ty}
    skill: echo
    for_each: ["x", "y", "z"]
    inputs: {{item: "${{item}}", index: "${{item_index}}"}}
"#
        ));
        let fx = sim.start(json!({}));
        let n = fx
            .iter()
            .filter(|e| matches!(e, Effect::DispatchTask(_)))
            .count();
        assert_eq!(n, at_once, "{ty}");
        while sim.step(&mut |len| len - 1) {}
        sim.expect(&[(
            "each",
            "success",
            Some(json!({"items": [
                {"item": "x", "index": 0},
                {"item": "y", "index": 1},
                {"item": "z", "index": 2},
            ]})),
        )]);
    }
}

#[test]
fn for_each_over_an_empty_list_succeeds_without_tasks() {
    let mut sim = Sim::of(
        "name: e\nstages:\n  - stage_id: each\n    skill: echo\n    for_each: \"${inputs.list}\"\n",
    );
    sim.start(json!({"list": []}));
    sim.run();
    sim.expect(&[("each", "success", Some(json!({"items": []})))]);
    assert!(sim.dispatched().is_empty());
}

#[test]
fn gate_condition_runs_or_skips_the_stage() {
    let cases = [
        (json!({"go": true}), "success", "success"),
        (json!({"go": false}), "skipped", "success"),
    ];
    for (inputs, gated, run) in cases {
        let mut sim = Sim::of(
            r#"
name: gate
stages:
  - stage_id: gated
    skill: noop
    condition: "${inputs.go}"
  - stage_id: free
    skill: noop
    dependencies: []
"#,
        );
        sim.start(inputs.clone());
        sim.run();
        sim.expect(&[(("gated"), gated, None), ("free", "success", None)]);
        assert_eq!(sim.run_status(), run, "{inputs}");
    }
}

#[test]
fn a_skipped_dependency_skips_its_dependents_transitively() {
    let mut sim = Sim::of(
        r#"
name: skip
stages:
  - stage_id: a
    skill: noop
    condition: "${inputs.n} > 5"
  - stage_id: b
    skill: noop
  - stage_id: c
    skill: noop
  - stage_id: other
    skill: noop
    dependencies: []
"#,
    );
    sim.start(json!({"n": 1}));
    sim.run();
    sim.expect(&[
        ("a", "skipped", None),
        ("b", "skipped", None),
        ("c", "skipped", None),
        ("other", "success", None),
    ]);
    assert_eq!(sim.run_status(), "success");
    assert_eq!(sim.stage("b")["error"], json!("dependency `a` was skipped"));
    assert_eq!(sim.dispatched(), [("other#0".into(), 1)]);
}

#[test]
fn repeat_runs_the_body_max_iterations_times() {
    let mut sim = Sim::of(
        r#"
name: loop
stages:
  - stage_id: body
    skill: echo
    inputs: {n: "${iteration}"}
  - stage_id: check
    skill: noop
    repeat: body
    max_iterations: 3
  - stage_id: after
    skill: echo
    inputs: {last: "${body.n}"}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let ids: Vec<String> = sim.dispatched().into_iter().map(|d| d.0).collect();
    assert_eq!(
        ids,
        [
            "body#0",
            "check#0",
            "body#0@1",
            "check#0@1",
            "body#0@2",
            "check#0@2",
            "after#0"
        ]
    );
    sim.expect(&[
        ("body", "success", Some(json!({"n": 3}))),
        ("check", "success", None),
        ("after", "success", Some(json!({"last": 3}))),
    ]);
    assert_eq!(sim.stage("check")["iterations"], json!(3));
}

#[test]
fn repeat_stops_when_its_condition_turns_false() {
    // The body counts in memory; the loop goes on while the count is < 3.
    let mut sim = Sim::of(
        r#"
name: loop
memory: {persistence: true}
stages:
  - stage_id: body
    skill: echo
    inputs: {count: "${iteration}"}
    memory: {write_keys: [count]}
  - stage_id: check
    skill: noop
    condition: "${memory.count} < 3"
    repeat: body
    max_iterations: 10
"#,
    );
    sim.start(json!({}));
    sim.run();
    let bodies = sim
        .dispatched()
        .iter()
        .filter(|d| d.0.starts_with("body"))
        .count();
    assert_eq!(bodies, 3, "count 1, 2, 3: {:?}", sim.dispatched());
    sim.expect(&[("body", "success", Some(json!({"count": 3})))]);
    assert_eq!(sim.engine.report().memory_snapshot["count"], json!(3));
    assert_eq!(sim.stage("check")["iterations"], json!(3));
    assert_eq!(sim.run_status(), "success");
}

#[test]
fn sub_cascade_runs_in_its_own_scope() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("child.yaml"),
        r#"
name: child
inputs:
  - {name: who, required: true}
  - {name: greeting, default: hello}
stages:
  - stage_id: greet
    skill: echo
    inputs: {msg: "${inputs.greeting} ${inputs.who}"}
"#,
    )
    .expect("write child");
    let parent = dir.path().join("parent.yaml");
    std::fs::write(
        &parent,
        r#"
name: parent
stages:
  - stage_id: sub
    cascade: child
    inputs: {who: "${inputs.name}"}
  - stage_id: use
    skill: echo
    inputs: {got: "${sub.greet.msg}", flat: "${sub.msg}"}
"#,
    )
    .expect("write parent");
    let plan = super::compile_loaded(crate::spec::load_file(&parent));
    let mut sim = Sim::new(plan);
    sim.start(json!({"name": "bob"}));
    sim.run();
    sim.expect(&[
        ("sub/greet", "success", Some(json!({"msg": "hello bob"}))),
        (
            "sub",
            "success",
            Some(json!({"msg": "hello bob", "greet": {"msg": "hello bob"}})),
        ),
        (
            "use",
            "success",
            Some(json!({"got": "hello bob", "flat": "hello bob"})),
        ),
    ]);
    assert_eq!(sim.run_status(), "success");
}

#[test]
fn substages_run_as_a_group() {
    let mut sim = Sim::of(
        r#"
name: group
stages:
  - stage_id: g
    substages:
      - {stage_id: one, skill: echo, inputs: {a: 1}}
      - {stage_id: two, skill: echo, inputs: {b: "${one.a}"}}
  - stage_id: after
    skill: echo
    inputs: {b: "${g.b}"}
"#,
    );
    sim.start(json!({}));
    sim.run();
    sim.expect(&[
        ("two", "success", Some(json!({"b": 1}))),
        ("after", "success", Some(json!({"b": 1}))),
    ]);
}

#[test]
fn memory_writes_become_effects_and_the_snapshot() {
    let mut sim = Sim::of(
        r#"
name: mem
memory: {persistence: true, cleanup_on_exit: true}
stages:
  - stage_id: a
    skill: echo
    inputs: {score: 5, other: x}
    memory: {write_keys: [score]}
  - stage_id: b
    skill: echo
    inputs: {seen: "${memory.score}", old: "${memory.seed}"}
    memory: persistent
"#,
    );
    sim.start_with(json!({}), json!({"seed": "s"}));
    sim.run();
    let puts: Vec<(String, Value)> = sim
        .effects
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::PutMemory { key, value, .. } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        puts,
        [
            ("score".into(), json!(5)),
            ("b".into(), json!({"seen": 5, "old": "s"})),
        ]
    );
    let snap = sim.engine.report().memory_snapshot;
    assert_eq!(
        Value::Object(snap),
        json!({"seed": "s", "score": 5, "b": {"seen": 5, "old": "s"}})
    );
    // cleanup_on_exit: the run's memory is dropped, then the run ends.
    let tail: Vec<&Effect> = sim.effects.iter().rev().take(2).map(|(_, e)| e).collect();
    assert!(matches!(tail[0], Effect::FinishRun { .. }), "{tail:?}");
    assert_eq!(tail[1], &Effect::ClearRunMemory);
}

#[test]
fn no_memory_effects_with_persistence_off() {
    let mut sim = Sim::of(
        "name: m\nmemory: {persistence: false}\nstages:\n  - stage_id: a\n    skill: echo\n    inputs: {k: 1}\n    memory: {write_keys: [k]}\n",
    );
    sim.start(json!({}));
    sim.run();
    assert!(
        !sim.effects
            .iter()
            .any(|(_, e)| matches!(e, Effect::PutMemory { .. } | Effect::ClearRunMemory))
    );
    assert_eq!(sim.run_status(), "success");
}

#[test]
fn sequential_skills_see_the_previous_output() {
    let mut sim = Sim::of(
        r#"
name: seq
stages:
  - stage_id: s
    skills:
      - {skill: echo, inputs: {v: 1}}
      - {skill: echo, inputs: {prev: "${previous.v}"}}
"#,
    );
    sim.start(json!({}));
    assert_eq!(sim.ready.len(), 1, "one skill at a time");
    let r = sim.take("s#0");
    sim.deliver(r);
    sim.run();
    assert_eq!(
        sim.output("s"),
        json!({"echo": {"v": 1}, "echo#1": {"prev": 1}})
    );
}
