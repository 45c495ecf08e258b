//! Normalisation: one test per variant of CASCADE-FORMAT.md, each showing
//! that the variant lands in the one model; and every seed example that is
//! a cascade loads (the prose ones are refused with a clear message).

use std::path::Path;

use serde_json::{Value, json};

use super::*;

mod sections;
mod seeds;

/// Loads `text` as the file `t.yaml`.
pub(crate) fn load(text: &str) -> Loaded {
    load_str(Path::new("t.yaml"), text)
}

/// The error diagnostics of a load, as printed.
pub(crate) fn errors(l: &Loaded) -> Vec<String> {
    l.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

/// Loads `text`, which must have no errors.
fn ok(text: &str) -> Cascade {
    let l = load(text);
    assert!(errors(&l).is_empty(), "{:#?}", errors(&l));
    l.cascade.expect("a cascade")
}

/// Loads `text`, which must have an error containing `fragment`.
pub(crate) fn fails(text: &str, fragment: &str) {
    let l = load(text);
    let errs = errors(&l);
    assert!(
        errs.iter().any(|e| e.contains(fragment)),
        "no error containing `{fragment}` in {errs:#?}"
    );
}

fn stage<'a>(c: &'a Cascade, id: &str) -> &'a Stage {
    c.all_stages()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no stage `{id}`"))
}

fn skills(s: &Stage) -> Vec<&str> {
    s.skills.iter().map(|r| r.skill.as_str()).collect()
}

fn deps(s: &Stage) -> Option<Vec<&str>> {
    s.dependencies
        .as_ref()
        .map(|d| d.iter().map(|(id, _)| id.as_str()).collect())
}

fn holds(cond: &CondSpec, stage_outputs: &[(&str, Value)], inputs: Value) -> bool {
    let mut ctx = cascade_eval::Context::new(inputs, json!({}), json!({"name": "t"}));
    for (id, out) in stage_outputs {
        ctx.set_stage_output(id, out.clone());
    }
    cond.cond.evaluate(&ctx).expect("evaluates")
}

// ---- document shapes -----------------------------------------------------

#[test]
fn sections_at_top_level_and_under_cascade_mean_the_same() {
    let nested = ok("cascade:
  name: n
  inputs: [{name: a}]
  stages: [{stage: s, skill: echo}]
  memory: {scope: global}
");
    let top = ok("cascade:
  name: n
inputs: [{name: a}]
stages: [{stage: s, skill: echo}]
memory: {scope: global}
");
    let flat = ok("name: n
inputs: [{name: a}]
stages: [{stage: s, skill: echo}]
memory: {scope: global}
");
    for c in [&nested, &top, &flat] {
        assert_eq!(c.name, "n");
        assert_eq!(c.inputs[0].name, "a");
        assert_eq!(c.stages[0].id, "s");
        assert_eq!(c.memory.scope, MemoryScope::Global);
        assert_eq!(c.version, "1.0.0");
    }
}

#[test]
fn a_section_both_at_top_level_and_under_cascade_is_an_error() {
    fails(
        "cascade:
  name: n
  stages: [{stage: a, skill: echo}]
stages: [{stage: b, skill: echo}]
",
        "`stages` is given both at the top level (line 4) and under `cascade:`",
    );
}

#[test]
fn cascade_name_shorthand_with_stages_beside() {
    let c = ok("cascade: quick
description: shorthand
stages:
  - stage: one
    skill: echo
");
    assert_eq!(c.name, "quick");
    assert_eq!(c.description.as_deref(), Some("shorthand"));
    assert_eq!(c.stages.len(), 1);
}

#[test]
fn a_cascade_needs_a_name_and_stages() {
    let l = load("description: nothing\n");
    let errs = errors(&l);
    assert!(
        errs.iter().any(|e| e.contains("a cascade needs a `name`")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("a cascade needs `stages`")),
        "{errs:?}"
    );
}

#[test]
fn json_documents_load_too() {
    let l = load_str(
        Path::new("t.json"),
        r#"{"cascade": {"name": "j", "stages": [{"stage_id": "a", "skill": "echo", "inputs": {"n": 1}}]}}"#,
    );
    assert!(errors(&l).is_empty(), "{:?}", errors(&l));
    let c = l.cascade.expect("cascade");
    assert_eq!(c.name, "j");
    assert_eq!(c.stages[0].inputs["n"], json!(1));
}

#[test]
fn a_numbered_list_of_stages_is_refused_as_prose() {
    fails(
        "cascade: prose
stages:
  1. gemini-search: \"Research\"
  2. codex-auto: \"Prototype\"
",
        "stages are written as a numbered list (`1. model: \"task\"`), which is prose, not a cascade",
    );
}

// ---- inputs ----------------------------------------------------------------

#[test]
fn inputs_as_a_list() {
    let c = ok("name: n
inputs:
  - name: repo
    type: string
    description: where
    required: true
  - name: level
    default: 3
  - bare
stages: [{stage: s, skill: echo}]
");
    let i = &c.inputs;
    assert_eq!((i[0].name.as_str(), i[0].required), ("repo", true));
    assert_eq!(i[0].ty.as_deref(), Some("string"));
    assert_eq!(i[0].description.as_deref(), Some("where"));
    assert_eq!(
        (i[1].name.as_str(), i[1].default.clone()),
        ("level", Some(json!(3)))
    );
    assert_eq!((i[2].name.as_str(), i[2].required), ("bare", false));
}

#[test]
fn inputs_as_a_map_and_the_name_default_shorthand() {
    let c = ok("name: n
inputs:
  repo: {type: string, required: true}
  threshold: 80
  flags: [a, b]
  nothing:
stages: [{stage: s, skill: echo}]
");
    let by = |n: &str| c.inputs.iter().find(|d| d.name == n).expect("declared");
    assert!(by("repo").required);
    assert_eq!(by("repo").ty.as_deref(), Some("string"));
    assert_eq!(by("threshold").default, Some(json!(80)));
    assert_eq!(by("flags").default, Some(json!(["a", "b"])));
    assert_eq!(by("nothing").default, None);
    assert!(!by("threshold").required);
}

#[test]
fn an_input_declared_twice_is_an_error() {
    fails(
        "name: n\ninputs: [{name: a}, {name: a}]\nstages: [{stage: s, skill: echo}]\n",
        "input `a` is declared twice (first at line 2)",
    );
}

// ---- stages ----------------------------------------------------------------

#[test]
fn skill_and_skills_as_strings_or_objects() {
    let c = ok("name: n
stages:
  - stage: one
    skill: echo
  - stage: many
    type: parallel
    skills: [lint, scan]
  - stage: single-string
    skills: lint
  - stage: objects
    skills:
      - skill: extract
        inputs: {path: x}
        outputs: {rows: int}
        model: claude
        priority: 2
      - name: load
        outputs: [done]
");
    assert_eq!(skills(stage(&c, "one")), ["echo"]);
    assert_eq!(skills(stage(&c, "many")), ["lint", "scan"]);
    assert_eq!(skills(stage(&c, "single-string")), ["lint"]);
    let o = stage(&c, "objects");
    assert_eq!(skills(o), ["extract", "load"]);
    assert_eq!(o.skills[0].inputs["path"], json!("x"));
    assert_eq!(o.skills[0].outputs, ["rows"]);
    assert_eq!(o.skills[0].model.as_deref(), Some("claude"));
    assert_eq!(o.skills[0].priority, Some(2));
    assert_eq!(o.skills[1].outputs, ["done"]);
}

#[test]
fn skill_together_with_skills_is_an_error() {
    fails(
        "name: n\nstages: [{stage: s, skill: a, skills: [b]}]\n",
        "give `skill` or `skills`, not both",
    );
}

#[test]
fn steps_are_skills() {
    let c = ok("name: n\nstages: [{stage: s, steps: [fetch, parse]}]\n");
    assert_eq!(skills(&c.stages[0]), ["fetch", "parse"]);
}

#[test]
fn stage_id_aliases_and_name_as_id() {
    let c = ok("name: n
stages:
  - stage_id: a
    skill: echo
  - stage: b
    skill: echo
  - skill_id: c
    skill: echo
  - id: d
    skill: echo
  - name: e
    skill: echo
  - stage: f
    name: Human Readable
    skill: echo
");
    let ids: Vec<&str> = c.stages.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(c.stages[5].name.as_deref(), Some("Human Readable"));
}

#[test]
fn stage_id_problems() {
    fails(
        "name: n\nstages: [{stage: a, id: b, skill: echo}]\n",
        "give one id, not `stage` and `id`",
    );
    fails(
        "name: n\nstages: [{name: Not An Id, skill: echo}]\n",
        "a stage needs a `stage_id`",
    );
    fails(
        "name: n\nstages: [{stage: 'has space', skill: echo}]\n",
        "stage id `has space` must start with a letter",
    );
}

#[test]
fn dependencies_and_depends_on() {
    let c = ok("name: n
stages:
  - stage: a
    skill: echo
  - stage: b
    skill: echo
  - stage: c
    skill: echo
    dependencies: [a]
  - stage: d
    skill: echo
    depends_on: [a, b]
  - stage: e
    skill: echo
    dependencies: []
  - stage: f
    skill: echo
    depends_on: c
");
    assert_eq!(
        deps(stage(&c, "b")),
        None,
        "implicitly after the previous stage"
    );
    assert_eq!(deps(stage(&c, "c")), Some(vec!["a"]));
    assert_eq!(deps(stage(&c, "d")), Some(vec!["a", "b"]));
    assert_eq!(deps(stage(&c, "e")), Some(vec![]));
    assert_eq!(deps(stage(&c, "f")), Some(vec!["c"]));
    fails(
        "name: n\nstages: [{stage: a, skill: echo}, {stage: b, skill: echo, dependencies: [a], depends_on: [a]}]\n",
        "give `dependencies` or `depends_on`, not both",
    );
}

#[test]
fn the_workflows_variant() {
    let c = ok("name: wf
workflows:
  - id: fetch
    type: parallel
    steps: [download, verify]
  - id: index
    steps: [build-index]
  - id: report
    steps: [summarise]
    depends_on: [fetch, index]
    condition: \"${fetch.ok}\"
");
    assert_eq!(c.name, "wf");
    assert_eq!(skills(stage(&c, "fetch")), ["download", "verify"]);
    assert_eq!(stage(&c, "fetch").ty, StageType::Parallel);
    // No depends_on means no dependency at all (not "after the previous").
    assert_eq!(deps(stage(&c, "index")), Some(vec![]));
    assert_eq!(deps(stage(&c, "report")), Some(vec!["fetch", "index"]));
    assert!(stage(&c, "report").condition.is_some());
    fails(
        "name: n\nstages: [{stage: a, skill: echo}]\nworkflows: [{id: b, steps: [echo]}]\n",
        "give either `stages` (line 2) or `workflows`, not both",
    );
}

#[test]
fn stage_types_and_their_default() {
    let c = ok("name: n
stages:
  - {stage: a, skill: echo}
  - {stage: b, type: swarm-parallel, skills: [x, y]}
  - {stage: c, branches: {pass: [{stage: p, skill: echo}], fail: []}, condition: 'true'}
");
    assert_eq!(stage(&c, "a").ty, StageType::Sequential);
    assert_eq!(stage(&c, "b").ty, StageType::SwarmParallel);
    assert_eq!(
        stage(&c, "c").ty,
        StageType::Conditional,
        "branches imply conditional"
    );
    fails(
        "name: n\nstages: [{stage: a, type: paralel, skill: echo}]\n",
        "unknown value `paralel` (expected one of: sequential, parallel, conditional, codex-sandbox, multi-model, swarm-parallel), did you mean `parallel`?",
    );
    fails(
        "name: n\nstages: [{stage: a, type: sequential | parallel, skill: echo}]\n",
        "`sequential | parallel` lists alternatives (a template placeholder); choose one of:",
    );
}

// ---- conditions ------------------------------------------------------------

#[test]
fn condition_as_an_expression_string() {
    let c = ok("name: n
inputs: {threshold: 80}
stages:
  - {stage: score, skill: echo}
  - stage: gate
    skill: echo
    condition: \"${score.value} >= ${inputs.threshold}\"
");
    let cond = stage(&c, "gate").condition.as_ref().expect("condition");
    assert_eq!(cond.text, "${score.value} >= ${inputs.threshold}");
    let inputs = json!({"threshold": 80});
    assert!(holds(
        cond,
        &[("score", json!({"value": 85}))],
        inputs.clone()
    ));
    assert!(!holds(cond, &[("score", json!({"value": 79}))], inputs));
}

#[test]
fn condition_as_a_structured_object() {
    let c = ok("name: n
stages:
  - {stage: score, skill: echo}
  - stage: threshold
    skill: echo
    condition: {type: threshold, metric: '${score.value}', threshold: 80, comparison: '>='}
  - stage: comparison
    skill: echo
    condition: {left: '${score.value}', operator: '<', right: 50}
");
    let out = [("score", json!({"value": 80}))];
    let t = stage(&c, "threshold")
        .condition
        .as_ref()
        .expect("condition");
    assert!(holds(t, &out, json!({})));
    let cmp = stage(&c, "comparison")
        .condition
        .as_ref()
        .expect("condition");
    assert!(
        !holds(cmp, &out, json!({})),
        "a missing `type` means comparison"
    );
}

#[test]
fn conditions_as_a_list_means_all_of_them() {
    let c = ok("name: n
stages:
  - {stage: score, skill: echo}
  - stage: gate
    skill: echo
    conditions:
      - \"${score.value} >= 80\"
      - {type: exists, path: '$.score.approved'}
");
    let cond = stage(&c, "gate").condition.as_ref().expect("condition");
    assert!(holds(
        cond,
        &[("score", json!({"value": 90, "approved": true}))],
        json!({})
    ));
    assert!(!holds(cond, &[("score", json!({"value": 90}))], json!({})));
    assert!(!holds(
        cond,
        &[("score", json!({"value": 10, "approved": true}))],
        json!({})
    ));
}

#[test]
fn condition_problems() {
    fails(
        "name: n\nstages: [{stage: a, skill: echo, condition: 'true', conditions: ['true']}]\n",
        "give `condition` or `conditions`, not both",
    );
    fails(
        "name: n\nstages: [{stage: a, skill: echo, condition: '${a.b} >='}]\n",
        "invalid condition",
    );
}

// ---- branches --------------------------------------------------------------

#[test]
fn branches_as_a_list() {
    let c = ok("name: n
stages:
  - {stage: score, skill: echo}
  - stage: gate
    type: conditional
    branches:
      - name: high
        condition: {type: threshold, metric: '${score.value}', threshold: 80, comparison: '>='}
        stages: [{name: deploy, skills: [deploy-fast]}]
      - name: low
        default: true
        stages: [{name: improve, skill: refactor}]
");
    let Some(Branches::List(bs)) = &stage(&c, "gate").branches else {
        panic!("a list of branches");
    };
    assert_eq!(bs.len(), 2);
    assert_eq!((bs[0].name.as_str(), bs[0].is_default), ("high", false));
    assert!(bs[0].condition.is_some());
    assert_eq!(bs[0].stages[0].id, "deploy");
    assert_eq!((bs[1].name.as_str(), bs[1].is_default), ("low", true));
    assert_eq!(skills(stage(&c, "improve")), ["refactor"]);
}

#[test]
fn branches_as_a_map_with_direct_skills_and_cascades() {
    let c = ok("name: n
stages:
  - {stage: analyze, skill: echo}
  - stage: decide
    type: conditional
    condition: ${analyze.quality_score}
    branches:
      high_quality:
        model: codex-auto
        skill: deploy-fast
      low_quality:
        model: multi-model
        skills: [audit, fix]
      staged:
        condition: 'false'
        stages: [{stage: nested, skill: echo}]
      default: high_quality
");
    let s = stage(&c, "decide");
    let Some(Branches::Map { branches, default }) = &s.branches else {
        panic!("a map of branches");
    };
    assert_eq!(
        default.as_ref().map(|(d, _)| d.as_str()),
        Some("high_quality")
    );
    let names: Vec<&str> = branches.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["high_quality", "low_quality", "staged"]);
    // A direct skill becomes one stage `<stage>-<branch>`.
    let direct = &branches[0].stages[0];
    assert_eq!(direct.id, "decide-high_quality");
    assert_eq!(direct.model.as_deref(), Some("codex-auto"));
    assert_eq!(skills(direct), ["deploy-fast"]);
    assert_eq!(skills(&branches[1].stages[0]), ["audit", "fix"]);
    assert_eq!(branches[2].stages[0].id, "nested");
    assert!(branches[2].condition.is_some());
}

#[test]
fn a_map_branch_with_a_sub_cascade() {
    let l = load(
        "name: n
stages:
  - stage: decide
    condition: \"'deep'\"
    branches:
      deep: {cascade: deep-audit}
",
    );
    // The sub-cascade is looked for beside t.yaml; only that is wrong here.
    let errs = errors(&l);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("sub-cascade `deep-audit` not found"),
        "{errs:?}"
    );
    let c = l.cascade.expect("cascade");
    let s = stage(&c, "decide-deep");
    assert_eq!(
        s.cascade.as_ref().map(|(n, _)| n.as_str()),
        Some("deep-audit")
    );
}

#[test]
fn pass_fail_branches() {
    let c = ok("name: n
stages:
  - {stage: test, skill: echo}
  - stage: gate
    condition: '${test.passed}'
    branches:
      pass: [{stage: ship, skill: echo}]
      fail: [{stage: fix, skill: echo}, {stage: retest, skill: echo}]
");
    let Some(Branches::PassFail { pass, fail }) = &stage(&c, "gate").branches else {
        panic!("pass/fail branches");
    };
    assert_eq!(pass[0].id, "ship");
    let fail_ids: Vec<&str> = fail.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(fail_ids, ["fix", "retest"]);
}

#[test]
fn a_branch_with_stages_and_a_direct_skill_is_an_error() {
    fails(
        "name: n
stages:
  - stage: gate
    branches:
      - name: a
        default: true
        skill: x
        stages: [{stage: y, skill: echo}]
",
        "a branch has either `stages` or a `skill`/`cascade` of its own, not both",
    );
}
