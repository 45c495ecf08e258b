//! Every accepted shape of the four sections, and the diagnostics for the
//! usual mistakes.

use super::*;
use crate::spec::tests::{self as spec_tests, errors, load};

/// A one-stage cascade with `sections` after its stages.
fn with_sections(sections: &str) -> String {
    format!("name: n\nstages:\n  - {{stage_id: a, skill: echo}}\n{sections}")
}

fn ops(sections: &str) -> Operations {
    let l = load(&with_sections(sections));
    assert!(errors(&l).is_empty(), "{:#?}", errors(&l));
    let warnings: Vec<String> = l.diagnostics.iter().map(ToString::to_string).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    l.cascade.expect("cascade").operations
}

fn fails(sections: &str, fragment: &str) {
    spec_tests::fails(&with_sections(sections), fragment);
}

#[test]
fn github_shapes() {
    let seed = ops("github_integration:\n  create_pr: on_success\n  report_issues: on_failure\n");
    let g = seed.github.expect("github");
    assert!(g.create_pr && g.report_issues && g.status);
    assert_eq!(g.token_env, "GITHUB_TOKEN");
    assert!(ops("github_integration: enabled\n").github.is_some());
    assert!(ops("github_integration: disabled\n").github.is_none());
    let full = ops(
        "github_integration: {repo: o/r, base: main, create_pr: false, report_issues: never,
              labels: [bot, ci], token_env: GH_PAT, api_url: 'http://127.0.0.1:9', patch_dir: /sub/,
              sha: '${inputs.sha}', status: false}\n",
    )
    .github
    .expect("github");
    assert_eq!(full.repository.as_deref(), Some("o/r"));
    assert!(!full.create_pr && !full.report_issues && !full.status);
    assert_eq!(full.labels, ["bot", "ci"]);
    assert_eq!(full.patch_dir.as_deref(), Some("sub"));
    fails(
        "github_integration: {token: ghp_x}\n",
        "a token never goes in the file",
    );
    fails(
        "github_integration: {create_pr: on_sucess}\n",
        "did you mean `on_success`?",
    );
    fails(
        "github_integration: {repository: nope}\n",
        "is not `owner/name`",
    );
    fails(
        "github_integration: {lables: [x]}\n",
        "did you mean `labels`?",
    );
    fails(
        "github_integration: {patch_stage: b}\n",
        "names no stage `b`",
    );
}

#[test]
fn notification_shapes() {
    let list = ops("notifications:
  - {type: slack, url: 'https://hooks.example/T1', on: [success, branch], blocks: true, retries: 0}
  - {type: webhook, url_env: HOOK_URL, timeout: 2s}
  - {type: log, on: all}
")
    .notifications;
    assert_eq!(list.len(), 3);
    assert_eq!(
        list[0].target,
        NotifyTarget::Slack {
            url: UrlSource::Literal("https://hooks.example/T1".into()),
            blocks: true,
            channel: None
        }
    );
    assert_eq!(list[0].on, [NotifyEvent::Success, NotifyEvent::Branch]);
    assert_eq!(list[0].retries, 0);
    assert_eq!(
        list[1].target,
        NotifyTarget::Webhook {
            url: UrlSource::Env("HOOK_URL".into())
        }
    );
    assert_eq!(list[1].on, [NotifyEvent::Success, NotifyEvent::Failure]);
    assert_eq!(list[1].timeout, Duration::from_secs(2));
    assert_eq!(list[2].on.len(), 4);
    let by_type = ops(
            "notifications: {slack: 'https://s.example/x', webhook: ['https://a.example', {url: 'https://b.example', on: failure}], log: true, on: [failure]}\n",
        )
        .notifications;
    let kinds: Vec<(&str, Vec<NotifyEvent>)> = by_type
        .iter()
        .map(|n| (n.target.kind(), n.on.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("log", vec![NotifyEvent::Failure]),
            ("webhook", vec![NotifyEvent::Failure]),
            ("webhook", vec![NotifyEvent::Failure]),
            ("slack", vec![NotifyEvent::Failure]),
        ]
    );
    fails(
        "notifications: [{type: slak, url: 'https://x'}]\n",
        "did you mean `slack`?",
    );
    fails(
        "notifications: [{type: webhook, url: 'https://x', on: [sucess]}]\n",
        "did you mean `success`?",
    );
    fails(
        "notifications: [{type: webhook}]\n",
        "needs a `url` or a `url_env`",
    );
    fails(
        "notifications: [{type: webhook, url: ftp://x}]\n",
        "is not an http",
    );
    fails(
        "notifications: [{type: email, url: 'https://x'}]\n",
        "email is not sent",
    );
    fails(
        "notifications: [{type: webhook, url: 'https://x', blocks: true}]\n",
        "only `slack` targets take `blocks`",
    );
}

fn bounds(g: &QualityGate) -> Vec<(CmpOp, Value)> {
    match &g.check {
        GateCheck::Threshold { bounds, .. } => bounds.clone(),
        GateCheck::Condition(_) => Vec::new(),
    }
}

#[test]
fn quality_gate_shapes() {
    let list = ops("quality_gates:
  - {metric: coverage, min: 80}
  - {name: rate, metric: a.pass_rate, min: 90, max: 100, after: a}
  - {metric: errors, threshold: 3, comparison: '<'}
  - {name: ok, condition: '${a.ok} == true'}
  - {metric: x, min: '${inputs.floor}'}
")
    .quality_gates;
    let names: Vec<&str> = list.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["coverage", "rate", "errors", "ok", "x"]);
    assert_eq!(bounds(&list[0]), [(CmpOp::Ge, serde_json::json!(80))]);
    assert_eq!(
        bounds(&list[1]),
        [
            (CmpOp::Ge, serde_json::json!(90)),
            (CmpOp::Le, serde_json::json!(100))
        ]
    );
    assert_eq!(list[1].after.as_ref().map(|(s, _)| s.as_str()), Some("a"));
    assert_eq!(bounds(&list[2]), [(CmpOp::Lt, serde_json::json!(3))]);
    assert!(matches!(list[3].check, GateCheck::Condition(_)));
    let map = ops(
            "quality_gates: {min_coverage: 80, max_complexity: 10, error_rate: '< 0.01', tidy: '${a.todos} == 0', pass: {metric: a.rate, min: 1}}\n",
        )
        .quality_gates;
    let got: Vec<(&str, Vec<(CmpOp, Value)>)> =
        map.iter().map(|g| (g.name.as_str(), bounds(g))).collect();
    assert_eq!(
        got[0],
        ("min_coverage", vec![(CmpOp::Ge, serde_json::json!(80))])
    );
    assert_eq!(
        got[1],
        ("max_complexity", vec![(CmpOp::Le, serde_json::json!(10))])
    );
    assert_eq!(
        got[2],
        ("error_rate", vec![(CmpOp::Lt, serde_json::json!(0.01))])
    );
    assert!(matches!(map[3].check, GateCheck::Condition(_)));
    fails(
        "quality_gates: [{metric: c}]\n",
        "needs `min`, `max` or `threshold`",
    );
    fails(
        "quality_gates: [{metric: c, mni: 3}]\n",
        "did you mean `min`?",
    );
    fails(
        "quality_gates: [{metric: c, min: lots}]\n",
        "expected a number",
    );
    fails(
        "quality_gates: {coverage: 80}\n",
        "a bare number does not say which way",
    );
    fails(
        "quality_gates: [{metric: c, min: 1, after: b}]\n",
        "`after` names no stage `b`",
    );
    fails(
        "quality_gates: [{metric: c, min: 1}, {metric: c, max: 2}]\n",
        "quality gate `c` is given twice",
    );
    fails(
        "quality_gates: [{condition: '${a.x} >'}]\n",
        "invalid condition",
    );
}

#[test]
fn hook_shapes() {
    let h = ops("hooks:
  pre-task: npx claude-flow@alpha hooks pre-task --description start
  post_task: ['echo one', {run: 'echo two', timeout: 5s}]
  on_run_end: {command: 'cat > end.json'}
  timeout: 30s
")
    .hooks;
    assert_eq!(h.pre_task.len(), 1);
    assert_eq!(h.pre_task[0].timeout, Duration::from_secs(30));
    let post: Vec<(&str, Duration)> = h
        .post_task
        .iter()
        .map(|c| (c.run.as_str(), c.timeout))
        .collect();
    assert_eq!(
        post,
        [
            ("echo one", Duration::from_secs(30)),
            ("echo two", Duration::from_secs(5))
        ]
    );
    assert_eq!(h.on_run_end[0].run, "cat > end.json");
    fails("hooks: {pre_tsk: x}\n", "did you mean `pre_task`?");
    fails("hooks: {post_task: ''}\n", "command is empty");
    fails("hooks: {pre_task: x, pre-task: y}\n", "are the same hook");
    fails("hooks: {on_run_end: [3]}\n", "expected a shell command");
}
