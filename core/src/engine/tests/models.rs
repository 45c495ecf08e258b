//! AI stages: routing, model switches on classified failures, multi-model
//! selection, budgets, usage, the codex-sandbox task and codex-auto-fix.

use cascade_proto::{Failure, FailureClass, TaskOutcome};
use serde_json::{Value, json};

use super::{Sim, plan_of, task_result, timers};
use crate::engine::{Effect, TimerId};
use crate::plan::NodeKind;

fn models_of(sim: &Sim) -> Vec<(String, Option<String>)> {
    sim.effects
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::DispatchTask(s) => Some((s.task_id.to_string(), s.model.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn auto_select_routes_by_flag_and_sends_the_context() {
    let mut sim = Sim::of(
        r#"
name: route
stages:
  - stage_id: first
    skill: echo
    inputs: {x: 1}
  - stage_id: research
    model: auto-select
    skill: ask
    inputs: {current_info: true, topic: "${first.x}"}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let spec = sim
        .effects
        .iter()
        .find_map(|(_, e)| match e {
            Effect::DispatchTask(s) if s.stage_id.as_str() == "research" => Some(s.clone()),
            _ => None,
        })
        .expect("dispatched");
    assert_eq!(spec.model.as_deref(), Some("gemini-search"));
    let ctx = spec.context.expect("an AI task carries the context");
    assert_eq!(ctx["first"], json!({"x": 1}));
    assert_eq!(sim.stage("research")["model_used"], json!("gemini-search"));
}

#[test]
fn a_prompt_too_large_for_the_model_is_routed_to_a_larger_context() {
    let big = "word ".repeat(200_000); // ~250k tokens: more than claude's 200k
    let yaml = format!(
        "name: big\nstages:\n  - stage_id: read\n    model: auto-select\n    skill: ask\n    inputs: {{doc: \"{big}\"}}\n"
    );
    let mut sim = Sim::new(plan_of(&yaml));
    sim.start(json!({}));
    sim.run();
    let (_, model) = &models_of(&sim)[0];
    let chosen = model.clone().expect("a model");
    assert_ne!(chosen, "claude");
    let ctx = sim
        .engine
        .plan()
        .models
        .get(&chosen)
        .expect("known")
        .context;
    assert!(ctx > 250_000, "{chosen} has {ctx}");
}

#[test]
fn context_overflow_switches_to_a_larger_model_whatever_the_strategy() {
    let mut sim = Sim::of(
        r#"
name: overflow
stages:
  - stage_id: read
    model: claude
    skill: ask
    inputs: {fail: {claude: context_overflow}}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let models: Vec<Option<String>> = models_of(&sim).into_iter().map(|(_, m)| m).collect();
    assert_eq!(models[0].as_deref(), Some("claude"));
    let second = models[1].clone().expect("switched");
    assert!(
        sim.engine
            .plan()
            .models
            .get(&second)
            .expect("known")
            .context
            > 200_000,
        "{second}"
    );
    assert_eq!(sim.status("read"), "success");
    let notes = sim.stage("read")["notes"].to_string();
    assert!(notes.contains("ran out of context"), "{notes}");
}

#[test]
fn model_switch_walks_the_fallback_chain_on_refusals_and_malformed_output() {
    let mut sim = Sim::of(
        r#"
name: switch
stages:
  - stage_id: write
    model: claude
    skill: ask
    inputs: {fail: {claude: refusal, gemini-megacontext: malformed}}
    error_handling: {strategy: model-switch, max_retries: 0}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let models: Vec<String> = models_of(&sim).into_iter().filter_map(|(_, m)| m).collect();
    // claude -> gemini-megacontext (its fallback) -> claude is tried: next untried in the chain.
    assert_eq!(models[0], "claude");
    assert_eq!(models[1], "gemini-megacontext");
    assert_eq!(
        models.len(),
        2,
        "the chain claude -> gemini-megacontext -> claude ends: {models:?}"
    );
    assert_eq!(sim.status("write"), "failed");

    let mut ok = Sim::of(
        r#"
name: switch-ok
stages:
  - stage_id: write
    model: claude
    skill: ask
    inputs: {fail: {claude: refusal}}
    error_handling: {strategy: model-switch}
"#,
    );
    ok.start(json!({}));
    ok.run();
    assert_eq!(ok.status("write"), "success");
    assert_eq!(ok.output("write")["text"], json!("from gemini-megacontext"));
    let used = ok.stage("write")["model_used"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        used.contains("claude") && used.contains("gemini-megacontext"),
        "{used}"
    );
}

#[test]
fn an_explicit_fallback_model_comes_first_and_auth_failures_never_switch() {
    let mut sim = Sim::of(
        r#"
name: fb
stages:
  - stage_id: a
    model: claude
    skill: ask
    inputs: {fail: {claude: overloaded}}
    error_handling: {strategy: model-switch, fallback: codex-auto}
  - stage_id: b
    model: claude
    skill: ask
    dependencies: []
    inputs: {fail: {claude: auth}}
    error_handling: {strategy: model-switch, continue_on_failure: true}
"#,
    );
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.output("a")["text"], json!("from codex-auto"));
    assert_eq!(sim.status("b"), "failed");
    let b: Vec<_> = models_of(&sim)
        .into_iter()
        .filter(|(id, _)| id.starts_with("b#"))
        .collect();
    assert_eq!(b.len(), 1, "an auth failure is terminal: {b:?}");
}

#[test]
fn retry_after_stretches_the_backoff() {
    let mut sim = Sim::of(
        r#"
name: ra
stages:
  - stage_id: a
    model: claude
    skill: ask
    inputs: {fail: {claude: rate_limited}, retry_after_ms: 45000}
    error_handling: {strategy: retry, max_retries: 1, backoff: {type: linear, base: 1s}}
"#,
    );
    sim.start(json!({}));
    while sim.step(&mut |_| 0) {
        if !timers(&sim).is_empty() {
            break;
        }
    }
    let t = timers(&sim);
    assert!(
        matches!(&t[0], (TimerId::Retry { .. }, d) if *d >= 45_000),
        "{t:?}"
    );
}

#[test]
fn multi_model_all_keeps_every_answer_and_vote_takes_the_majority() {
    let mut all = Sim::of(
        r#"
name: all
stages:
  - stage_id: review
    type: multi-model
    models: [claude, codex, gemini]
    select: all
    skill: ask
    inputs: {fail: {gemini: server}}
"#,
    );
    all.start(json!({}));
    all.run();
    let out = all.output("review");
    assert_eq!(out["answers"]["claude"]["text"], json!("from claude"));
    assert_eq!(out["answers"]["codex"]["text"], json!("from codex"));
    assert!(out["failed"]["gemini"].as_str().is_some(), "{out}");
    assert_eq!(all.stage("review")["tokens"], json!(450));

    let mut vote = Sim::of(
        r#"
name: vote
stages:
  - stage_id: classify
    models: [claude, codex, gemini]
    select: vote
    skill: ask
    inputs:
      answers:
        claude: {label: "bug "}
        codex: {label: feature}
        gemini: {label: bug}
"#,
    );
    vote.start(json!({}));
    vote.run_seeded(7);
    let out = vote.output("classify");
    assert_eq!(out["label"].as_str().map(str::trim), Some("bug"));
    assert_eq!(out["votes"]["count"], json!(2));
    assert_eq!(out["votes"]["for"], json!(["claude", "gemini"]));
}

#[test]
fn multi_model_first_takes_the_first_answer_and_cancels_the_rest() {
    let mut sim = Sim::of(
        r#"
name: first
stages:
  - stage_id: q
    models: [claude, codex]
    select: first
    skill: ask
"#,
    );
    sim.start(json!({}));
    let second = sim.take("q#1");
    sim.deliver(second);
    assert_eq!(sim.output("q")["text"], json!("from codex"));
    assert_eq!(sim.cancelled(), vec![("q#0".to_owned(), 1)]);
}

#[test]
fn multi_model_judge_asks_the_judge_and_takes_its_choice() {
    let mut sim = Sim::of(
        r#"
name: judged
stages:
  - stage_id: plan
    models: [claude, codex]
    select: judge
    judge: gemini
    skill: ask
    inputs:
      goal: a plan
      answers: {claude: {plan: A}, codex: {plan: B, best: true}}
"#,
    );
    sim.start(json!({}));
    sim.run();
    let judge = sim
        .effects
        .iter()
        .find_map(|(_, e)| match e {
            Effect::DispatchTask(s) if s.skill.as_str() == "judge" => Some(s.clone()),
            _ => None,
        })
        .expect("a judge task");
    assert_eq!(judge.model.as_deref(), Some("gemini"));
    assert_eq!(judge.inputs["candidates"][1]["model"], json!("codex"));
    assert_eq!(judge.inputs["question"]["goal"], json!("a plan"));
    let out = sim.output("plan");
    assert_eq!(out["plan"], json!("B"));
    assert_eq!(out["judge"]["chose"], json!("codex"));
    // Two answers and the judge: three calls.
    assert_eq!(sim.stage("plan")["usage"]["calls"], json!(3));
}

#[test]
fn budgets_refuse_before_dispatch_and_fail_after_an_overrun() {
    let mut before = Sim::of(
        r#"
name: tight
budget: {max_tokens: 10}
stages:
  - stage_id: a
    model: claude
    skill: ask
"#,
    );
    before.start(json!({}));
    before.run();
    assert_eq!(before.status("a"), "failed");
    let err = before.stage("a")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(err.starts_with("budget exceeded (estimated)"), "{err}");
    assert!(models_of(&before).is_empty());

    let mut after = Sim::of(
        r#"
name: overrun
stages:
  - stage_id: a
    model: claude
    skill: ask
    inputs: {tokens: 5000}
    budget: {max_tokens: 1200, max_cost_usd: 5}
"#,
    );
    after.start(json!({}));
    after.run();
    assert_eq!(after.status("a"), "failed");
    let err = after.stage("a")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        err.contains("5100 tokens, over its max_tokens of 1200"),
        "{err}"
    );
    let report = after.engine.report();
    assert_eq!(report.usage.calls, 1);
    assert!((report.usage.cost_usd - 0.01).abs() < 1e-9);
    let spec = after
        .effects
        .iter()
        .find_map(|(_, e)| match e {
            Effect::DispatchTask(s) => Some(s.clone()),
            _ => None,
        })
        .expect("dispatched");
    let budget = spec
        .budget
        .expect("the remaining budget travels with the task");
    assert_eq!(budget.max_tokens, Some(1200));
}

#[test]
fn a_codex_sandbox_stage_is_one_loop_task_with_its_settings() {
    let plan = plan_of(
        r#"
name: fix
stages:
  - stage_id: audit
    type: codex-sandbox
    model: codex-auto
    skill: run-unit-tests
    test_suite: comprehensive
    inputs: {project: sample, source: "proj"}
    codex_config: {max_iterations: 3, network_disabled: true, sandbox: required, fix_command: ./fix.sh}
"#,
    );
    let NodeKind::Tasks { skills, .. } = &plan.nodes[0].kind else {
        panic!("a task stage");
    };
    assert_eq!(skills.len(), 1);
    assert_eq!(skills[0].skill, "codex-sandbox");
    let i = &skills[0].inputs;
    assert_eq!(i["test_skill"], json!("run-unit-tests"));
    assert_eq!(
        i["test_inputs"],
        json!({"project": "sample", "suite": "comprehensive"})
    );
    assert_eq!(i["source"], json!("proj"));
    assert_eq!(i["max_iterations"], json!(3));
    assert_eq!(i["network_disabled"], json!(true));
    assert_eq!(i["sandbox"], json!("required"));
    assert_eq!(i["fix_command"], json!("./fix.sh"));
}

#[test]
fn codex_auto_fix_runs_the_loop_then_retries_the_task() {
    let mut sim = Sim::of(
        r#"
name: autofix
stages:
  - stage_id: build
    skill: compile
    error_handling: {strategy: codex-auto-fix, max_retries: 2}
    fix_strategy: {fix_command: ./fix.sh}
"#,
    );
    sim.start(json!({}));
    let first = sim.take("build#0");
    assert!(matches!(first.outcome, TaskOutcome::Failed(_)));
    sim.deliver(task_result(
        "build#0",
        1,
        TaskOutcome::Failed(Failure::retryable("2 tests failed")),
    ));
    let fix = sim
        .effects
        .iter()
        .find_map(|(_, e)| match e {
            Effect::DispatchTask(s) if s.skill.as_str() == "codex-sandbox" => Some(s.clone()),
            _ => None,
        })
        .expect("the fix loop is dispatched");
    assert_eq!(fix.inputs["test_skill"], json!("compile"));
    assert_eq!(fix.inputs["apply"], json!(true));
    assert_eq!(fix.inputs["fix_command"], json!("./fix.sh"));
    sim.ready.clear();
    sim.deliver(task_result(
        fix.task_id.as_str(),
        1,
        TaskOutcome::Succeeded {
            outputs: json!({"status": "green", "iterations": 2, "applied": true}),
        },
    ));
    assert_eq!(sim.dispatched().last(), Some(&("build#0".to_owned(), 2)));
    sim.ready.clear();
    sim.deliver(task_result(
        "build#0",
        2,
        TaskOutcome::Succeeded {
            outputs: json!({"ok": true}),
        },
    ));
    assert_eq!(sim.status("build"), "success");
    let notes = sim.stage("build")["notes"].to_string();
    assert!(notes.contains("green after 2 iteration"), "{notes}");
}

#[test]
fn an_exhausted_loop_is_escalated_with_its_history() {
    let mut sim = Sim::of(
        r#"
name: exhaust
stages:
  - stage_id: audit
    type: codex-sandbox
    codex_config: {test_command: make test, fix_command: ./fix.sh}
"#,
    );
    sim.start(json!({}));
    sim.ready.clear();
    let mut f = Failure::terminal("1 test still failing after 5 iterations: t");
    f.class = Some(FailureClass::Exhausted);
    f.details = Some(Box::new(
        json!({"iterations": 5, "history": [], "escalation": {"reason": "exhausted"}}),
    ));
    sim.deliver(task_result("audit#0", 1, TaskOutcome::Failed(f)));
    assert_eq!(sim.status("audit"), "failed");
    assert_eq!(sim.stage("audit")["iterations"], json!(5));
    assert_eq!(sim.stage("audit")["details"]["iterations"], json!(5));
    let report = sim.engine.report();
    assert_eq!(
        report.escalations[0]["escalation"],
        json!({"reason": "exhausted"})
    );
    let _: Value = report.escalations[0].clone();
}

#[test]
fn a_multi_model_stage_capped_by_max_agents_sends_every_model_in_turn() {
    let mut sim = Sim::of(
        r#"
name: capped
stages:
  - stage_id: q
    models: [claude, codex, gemini]
    select: all
    skill: ask
    swarm_config: {max_agents: 1}
"#,
    );
    sim.start(json!({}));
    sim.run();
    assert_eq!(sim.status("q"), "success");
    assert_eq!(
        sim.output("q")["models"],
        json!(["claude", "codex", "gemini"])
    );
}

#[test]
fn a_templated_model_is_chosen_by_the_run_and_explicit_names_are_not_rerouted() {
    let mut sim = Sim::of(
        r#"
name: templated
inputs: {m: {default: codex}}
stages:
  - stage_id: a
    model: "${inputs.m}"
    skill: ask
"#,
    );
    sim.start(json!({}));
    sim.run();
    assert_eq!(models_of(&sim)[0].1.as_deref(), Some("codex"));
    assert_eq!(sim.status("a"), "success");
}

#[test]
fn a_resent_attempt_keeps_its_model_and_budget() {
    let mut sim = Sim::of(
        r#"
name: resend
budget: {max_tokens: 100000}
stages:
  - stage_id: a
    model: auto-select
    skill: ask
    inputs: {current_info: true}
"#,
    );
    sim.start(json!({}));
    let sent = sim
        .effects
        .iter()
        .find_map(|(_, e)| match e {
            Effect::DispatchTask(s) => Some(s.clone()),
            _ => None,
        })
        .expect("dispatched");
    let again = sim.engine.in_flight();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].model, sent.model);
    assert_eq!(again[0].budget, sent.budget);
    assert!(again[0].budget.is_some());
}
