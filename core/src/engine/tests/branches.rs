//! Conditional stages: list, map (named and selector) and pass/fail
//! branches, `branch_taken` and `${stage.*.field}`.

use serde_json::{Value, json};

use super::Sim;

/// Runs `yaml` with `inputs`; returns the route's branch and a reader's
/// outputs (the reader echoes `branch_taken` and the wildcard field).
fn route(yaml: &str, inputs: Value) -> Sim {
    let mut sim = Sim::of(yaml);
    sim.start(inputs);
    sim.run();
    sim
}

const READER: &str = r#"
  - stage_id: reader
    skill: echo
    dependencies: [route]
    inputs: {taken: "${route.branch_taken}", level: "${route.*.level}"}
"#;

#[test]
fn list_branches_first_match_then_default() {
    let yaml = format!(
        r#"
name: list
stages:
  - stage_id: route
    branches:
      - name: high
        condition: "${{inputs.score}} >= 80"
        stages: [{{stage_id: hi, skill: echo, inputs: {{level: high}}}}]
      - name: mid
        condition: "${{inputs.score}} >= 50"
        stages: [{{stage_id: md, skill: echo, inputs: {{level: mid}}}}]
      - name: low
        default: true
        stages: [{{stage_id: lo, skill: echo, inputs: {{level: low}}}}]
{READER}"#
    );
    let cases = [
        (
            95,
            "high",
            [("hi", "success"), ("md", "skipped"), ("lo", "skipped")],
        ),
        (
            60,
            "mid",
            [("hi", "skipped"), ("md", "success"), ("lo", "skipped")],
        ),
        (
            10,
            "low",
            [("hi", "skipped"), ("md", "skipped"), ("lo", "success")],
        ),
    ];
    for (score, taken, statuses) in cases {
        let sim = route(&yaml, json!({ "score": score }));
        assert_eq!(sim.run_status(), "success", "score {score}");
        assert_eq!(sim.stage("route")["branch_taken"], json!(taken));
        for (stage, status) in statuses {
            assert_eq!(sim.status(stage), status, "score {score}: `{stage}`");
        }
        sim.expect(&[(
            "reader",
            "success",
            Some(json!({"taken": taken, "level": taken})),
        )]);
    }
}

#[test]
fn list_branches_without_match_or_default_fail_the_stage() {
    let sim = route(
        r#"
name: nodefault
stages:
  - stage_id: route
    branches:
      - {name: high, condition: "${inputs.score} >= 80", stages: [{stage_id: hi, skill: noop}]}
  - stage_id: after
    skill: noop
"#,
        json!({"score": 1}),
    );
    sim.expect(&[
        ("route", "failed", None),
        // The run stops: the untaken branch's stages end cancelled.
        ("hi", "cancelled", None),
        ("after", "cancelled", None),
    ]);
    let err = sim.stage("route")["error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        err.contains("no branch selected and no default branch"),
        "{err}"
    );
    assert_eq!(sim.run_status(), "failed");
    assert!(sim.dispatched().is_empty());
}

#[test]
fn map_branches_by_condition_then_named_default() {
    let yaml = format!(
        r#"
name: map
stages:
  - stage_id: route
    branches:
      fast:
        condition: "${{inputs.size}} < 10"
        skill: echo
        inputs: {{level: fast}}
      slow:
        skill: echo
        inputs: {{level: slow}}
      default: slow
{READER}"#
    );
    for (size, taken) in [(1, "fast"), (100, "slow")] {
        let sim = route(&yaml, json!({ "size": size }));
        assert_eq!(sim.run_status(), "success");
        sim.expect(&[(
            "reader",
            "success",
            Some(json!({"taken": taken, "level": taken})),
        )]);
    }
}

#[test]
fn map_branches_selected_by_the_stage_condition_naming_one() {
    let yaml = format!(
        r#"
name: selector
stages:
  - stage_id: route
    condition: "${{inputs.mode}}"
    branches:
      alpha: {{skill: echo, inputs: {{level: alpha}}}}
      beta: {{skill: echo, inputs: {{level: beta}}}}
      default: alpha
{READER}"#
    );
    let cases = [("beta", "beta"), ("alpha", "alpha"), ("gamma", "alpha")];
    for (mode, taken) in cases {
        let sim = route(&yaml, json!({ "mode": mode }));
        assert_eq!(sim.run_status(), "success", "mode {mode}");
        sim.expect(&[(
            "reader",
            "success",
            Some(json!({"taken": taken, "level": taken})),
        )]);
    }
}

#[test]
fn pass_fail_branches_follow_the_condition() {
    let yaml = format!(
        r#"
name: passfail
stages:
  - stage_id: route
    condition: "${{inputs.ok}}"
    branches:
      pass: [{{stage_id: yes, skill: echo, inputs: {{level: pass}}}}]
      fail: [{{stage_id: no, skill: echo, inputs: {{level: fail}}}}]
{READER}"#
    );
    for (ok, taken) in [(true, "pass"), (false, "fail")] {
        let sim = route(&yaml, json!({ "ok": ok }));
        assert_eq!(sim.run_status(), "success");
        sim.expect(&[(
            "reader",
            "success",
            Some(json!({"taken": taken, "level": taken})),
        )]);
        let other = if ok { "no" } else { "yes" };
        assert_eq!(sim.status(other), "skipped");
    }
}

#[test]
fn a_branch_stage_failing_with_continue_on_failure_does_not_fail_the_conditional() {
    let sim = route(
        r#"
name: branchfail
stages:
  - stage_id: route
    condition: "true"
    branches:
      pass: [{stage_id: boom, skill: fail, error_handling: {continue_on_failure: true}}]
      fail: [{stage_id: fine, skill: noop}]
  - stage_id: free
    skill: noop
    dependencies: []
"#,
        json!({}),
    );
    sim.expect(&[
        ("boom", "failed", None),
        (
            "route",
            "success",
            Some(json!({"pass": {}, "branch_taken": "pass"})),
        ),
        ("fine", "skipped", None),
        ("free", "success", None),
    ]);
    assert_eq!(sim.run_status(), "partial");
}

#[test]
fn a_failing_branch_stage_fails_the_conditional_and_the_run() {
    let sim = route(
        r#"
name: branchfail
stages:
  - stage_id: route
    condition: "true"
    branches:
      pass: [{stage_id: boom, skill: fail}]
      fail: [{stage_id: fine, skill: noop}]
"#,
        json!({}),
    );
    sim.expect(&[("boom", "failed", None), ("fine", "skipped", None)]);
    assert_eq!(sim.run_status(), "failed");
}
