//! The sections around a run, end to end: `github_integration` (contract
//! tests of every REST call against wiremock, a pull request carrying a
//! real codex-sandbox patch, an issue with a failed loop's fix history,
//! commit statuses), `notifications` (a webhook and a Slack-compatible
//! hook receiving events; failures noted, never fatal), `quality_gates`
//! (a failed gate fails the run) and `hooks` (files written by the task
//! and run hooks); embedded and on a swarm. Only the remote services are
//! mocked.

use std::path::Path;
use std::process::Command;

use cascade_coordinator::integrations::github::{
    self, ACCEPT, API_VERSION, GithubClient, IssueDraft, Proposal,
};
use cascade_tests::{TestSwarm, binary, write_tree};
use serde_json::{Value, json};
use wiremock::matchers::{
    body_partial_json, body_string_contains, header, method, path, query_param,
};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

const TOKEN: &str = "ghs_test_token_0123456789";
const TOKEN_ENV: &str = "CASCADE_TEST_GH_TOKEN";
const REPO: &str = "/repos/acme/invoice";

/// A GitHub REST call as the API expects it: method, path and the headers
/// every request must carry.
fn gh(verb: &str, p: &str) -> MockBuilder {
    Mock::given(method(verb))
        .and(path(p))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", ACCEPT))
        .and(header("x-github-api-version", API_VERSION))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn created(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(body)
}

/// Standard base64 with GitHub's line breaks.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 15 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "__pycache__" || name == ".cascade" {
            continue;
        }
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(name));
        } else {
            std::fs::copy(entry.path(), to.join(name)).expect("copy");
        }
    }
}

/// The test-and-fix example (its project copied beside it) with a GitHub
/// section pointing at `uri`.
fn test_and_fix(dir: &Path, uri: &str, max_iterations: u32) {
    copy_dir(
        &examples().join("buggy-project"),
        &dir.join("buggy-project"),
    );
    let example = std::fs::read_to_string(examples().join("test-and-fix.yaml")).expect("example");
    let example = example.replace(
        "max_iterations: 5",
        &format!("max_iterations: {max_iterations}"),
    );
    let github = format!(
        "
github_integration:
  create_pr: on_success
  report_issues: on_failure
  repository: acme/invoice
  base: main
  sha: deadbeef
  labels: [cascade, automated]
  api_url: {uri}
  token_env: {TOKEN_ENV}
"
    );
    std::fs::write(dir.join("cascade.yaml"), example + &github).expect("write cascade");
}

/// `coordinator run cascade.yaml --output results.json` in `dir`, with the
/// token set and nothing else from a CI environment.
fn run_embedded(dir: &Path, file: &str, extra: &[&str]) -> (i32, Value, String) {
    let out = dir.join("results.json");
    let run = Command::new(binary("coordinator"))
        .arg("run")
        .arg(file)
        .arg("--output")
        .arg(&out)
        .args(extra)
        .current_dir(dir)
        .env(TOKEN_ENV, TOKEN)
        .env("TEST_SLACK_URL", "")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_REPOSITORY")
        .env_remove("GITHUB_SHA")
        .env_remove("GITHUB_API_URL")
        .env_remove("CASCADE_MODELS")
        .output()
        .expect("run coordinator");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let results = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no results file; stderr:\n{stderr}"));
    (run.status.code().unwrap_or(-1), results, stderr)
}

/// The bodies of the requests `s` received on `p`.
async fn bodies(s: &MockServer, p: &str) -> Vec<Value> {
    s.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn github_rest_calls_match_the_api_contract() {
    let s = MockServer::start().await;
    gh("GET", REPO)
        .respond_with(ok(
            json!({"full_name": "acme/invoice", "default_branch": "trunk"}),
        ))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/git/ref/heads/release/1.x"))
        .respond_with(ok(
            json!({"ref": "refs/heads/release/1.x", "object": {"sha": "c0", "type": "commit"}}),
        ))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/git/commits/c0"))
        .respond_with(ok(json!({"sha": "c0", "tree": {"sha": "t0"}})))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/git/trees/t0"))
        .respond_with(ok(json!({"sha": "t0", "tree": [
            {"path": "run.sh", "mode": "100755", "type": "blob", "sha": "b1"}]})))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/git/blobs/b1"))
        .respond_with(ok(
            json!({"sha": "b1", "encoding": "base64", "content": base64(b"#!/bin/sh\necho hi\n")}),
        ))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/blobs"))
        .and(body_partial_json(
            json!({"content": "x\n", "encoding": "utf-8"}),
        ))
        .respond_with(created(json!({"sha": "b2"})))
        .expect(1)
        .mount(&s)
        .await;
    let entry = json!({"path": "run.sh", "mode": "100755", "type": "blob", "sha": "b2"});
    gh("POST", &format!("{REPO}/git/trees"))
        .and(body_partial_json(
            json!({"base_tree": "t0", "tree": [entry]}),
        ))
        .respond_with(created(json!({"sha": "t1"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/commits"))
        .and(body_partial_json(
            json!({"message": "m", "tree": "t1", "parents": ["c0"]}),
        ))
        .respond_with(created(json!({"sha": "c1"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/refs"))
        .and(body_partial_json(
            json!({"ref": "refs/heads/cascade/x", "sha": "c1"}),
        ))
        .respond_with(created(json!({"ref": "refs/heads/cascade/x"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("PATCH", &format!("{REPO}/git/refs/heads/cascade/x"))
        .and(body_partial_json(json!({"sha": "c1", "force": true})))
        .respond_with(ok(json!({"ref": "refs/heads/cascade/x"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/pulls"))
        .and(query_param("head", "acme:cascade/x"))
        .and(query_param("state", "all"))
        .respond_with(ok(json!([{"number": 5, "html_url": "https://gh/pull/5"}])))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/pulls"))
        .and(body_partial_json(
            json!({"title": "T", "head": "cascade/x", "base": "trunk", "body": "B", "draft": true}),
        ))
        .respond_with(created(
            json!({"number": 6, "html_url": "https://gh/pull/6"}),
        ))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/issues/6/labels"))
        .and(body_partial_json(json!({"labels": ["a", "b"]})))
        .respond_with(ok(json!([{"name": "a"}, {"name": "b"}])))
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/issues"))
        .and(query_param("state", "open"))
        .and(query_param("labels", "a,b"))
        .respond_with(ok(json!([
            {"number": 1, "html_url": "https://gh/pull/1", "body": "<!-- m -->", "pull_request": {}},
            {"number": 2, "html_url": "https://gh/issues/2", "body": "other"},
            {"number": 3, "html_url": "https://gh/issues/3", "body": "x <!-- m --> y"}
        ])))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/issues/3/comments"))
        .and(body_partial_json(json!({"body": "again"})))
        .respond_with(created(json!({"html_url": "https://gh/issues/3#c"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/issues"))
        .and(body_partial_json(
            json!({"title": "New", "body": "first", "labels": ["a"]}),
        ))
        .respond_with(created(
            json!({"number": 9, "html_url": "https://gh/issues/9"}),
        ))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/statuses/c0"))
        .and(body_partial_json(
            json!({"state": "success", "context": "cascade/x"}),
        ))
        .respond_with(created(json!({"state": "success"})))
        .expect(1)
        .mount(&s)
        .await;

    let c = GithubClient::connect(&s.uri(), TOKEN.into(), "acme/invoice").expect("client");
    assert_eq!(c.default_branch().await.expect("repo"), "trunk");
    assert_eq!(c.branch_head("release/1.x").await.expect("ref"), "c0");
    assert_eq!(c.commit_tree("c0").await.expect("commit"), "t0");
    let tree = c.tree("t0").await.expect("tree");
    assert_eq!(
        (tree[0].mode.as_str(), tree[0].sha.as_str()),
        ("100755", "b1")
    );
    assert_eq!(c.blob("b1").await.expect("blob"), "#!/bin/sh\necho hi\n");
    assert_eq!(c.create_blob("x\n").await.expect("blob"), "b2");
    assert_eq!(c.create_tree("t0", &[entry]).await.expect("tree"), "t1");
    assert_eq!(
        c.create_commit("m", "t1", "c0").await.expect("commit"),
        "c1"
    );
    assert!(c.create_branch("cascade/x", "c1").await.expect("ref"));
    c.force_branch("cascade/x", "c1").await.expect("force");
    assert_eq!(
        c.find_pull("cascade/x")
            .await
            .expect("pulls")
            .map(|p| p.number),
        Some(5)
    );
    let pr = c
        .create_pull("T", "cascade/x", "trunk", "B", true)
        .await
        .expect("pull");
    assert_eq!((pr.number, pr.url.as_str()), (6, "https://gh/pull/6"));
    c.add_labels(6, &["a".into(), "b".into()])
        .await
        .expect("labels");
    let labels = ["a".to_owned(), "b".to_owned()];
    let open = github::report_failure(
        &c,
        &IssueDraft {
            marker: "<!-- m -->".into(),
            title: "unused".into(),
            body: "again".into(),
            labels: labels.to_vec(),
        },
    )
    .await
    .expect("comment on the open issue");
    assert_eq!((open.number, open.created), (3, false));
    let new = c
        .create_issue("New", "first", &["a".into()])
        .await
        .expect("issue");
    assert_eq!(new.number, 9);
    c.set_status("c0", "success", "ok", "cascade/x")
        .await
        .expect("status");
    s.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_errors_name_the_call_and_never_the_token() {
    let s = MockServer::start().await;
    gh("POST", &format!("{REPO}/git/refs"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"message": "Reference already exists"})),
        )
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/pulls"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .expect(1)
        .mount(&s)
        .await;
    // Reads are retried on a 5xx: two failures, then the answer.
    gh("GET", REPO)
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&s)
        .await;
    gh("GET", REPO)
        .respond_with(ok(json!({"default_branch": "main"})))
        .expect(1)
        .mount(&s)
        .await;
    let c = GithubClient::connect(&s.uri(), TOKEN.into(), "acme/invoice").expect("client");
    assert!(!c.create_branch("b", "c").await.expect("422 is `exists`"));
    let err = c
        .create_pull("t", "b", "main", "", false)
        .await
        .expect_err("401");
    let text = err.to_string();
    assert!(
        text.contains("POST /repos/acme/invoice/pulls") && text.contains("Bad credentials"),
        "{text}"
    );
    assert!(!text.contains(TOKEN) && !format!("{c:?}").contains(TOKEN));
    assert_eq!(c.default_branch().await.expect("after retries"), "main");
    s.verify().await;
}

/// Every GitHub call of a pull request for the test-and-fix example's patch.
async fn mount_pull_request_flow(s: &MockServer, original: &str, fixed: &str) {
    gh("GET", &format!("{REPO}/git/ref/heads/main"))
        .respond_with(ok(
            json!({"ref": "refs/heads/main", "object": {"sha": "base-sha", "type": "commit"}}),
        ))
        .expect(1)
        .mount(s)
        .await;
    gh("GET", &format!("{REPO}/git/commits/base-sha"))
        .respond_with(ok(json!({"sha": "base-sha", "tree": {"sha": "root-tree"}})))
        .expect(1)
        .mount(s)
        .await;
    gh("GET", &format!("{REPO}/git/trees/root-tree"))
        .respond_with(ok(json!({"sha": "root-tree", "truncated": false, "tree": [
            {"path": "README.md", "mode": "100644", "type": "blob", "sha": "b-readme"},
            {"path": "invoice", "mode": "040000", "type": "tree", "sha": "invoice-tree"},
            {"path": "tests", "mode": "040000", "type": "tree", "sha": "tests-tree"}]})))
        .expect(1)
        .mount(s)
        .await;
    gh("GET", &format!("{REPO}/git/trees/invoice-tree"))
        .respond_with(ok(json!({"sha": "invoice-tree", "tree": [
            {"path": "__init__.py", "mode": "100644", "type": "blob", "sha": "b-init"},
            {"path": "totals.py", "mode": "100644", "type": "blob", "sha": "b-totals"}]})))
        .expect(1)
        .mount(s)
        .await;
    gh("GET", &format!("{REPO}/git/blobs/b-totals"))
        .respond_with(ok(json!({"sha": "b-totals", "encoding": "base64", "content": base64(original.as_bytes())})))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/git/blobs"))
        .and(body_partial_json(
            json!({"content": fixed, "encoding": "utf-8"}),
        ))
        .respond_with(created(json!({"sha": "b-fixed"})))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/git/trees"))
        .and(body_partial_json(
            json!({"base_tree": "root-tree", "tree": [
            {"path": "invoice/totals.py", "mode": "100644", "type": "blob", "sha": "b-fixed"}]}),
        ))
        .respond_with(created(json!({"sha": "new-tree"})))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/git/commits"))
        .and(body_partial_json(
            json!({"tree": "new-tree", "parents": ["base-sha"]}),
        ))
        .respond_with(created(json!({"sha": "new-commit"})))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/git/refs"))
        .and(body_partial_json(json!({"sha": "new-commit"})))
        .and(body_string_contains("\"refs/heads/cascade/test-and-fix/"))
        .respond_with(created(json!({"ref": "refs/heads/cascade/test-and-fix/x"})))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/pulls"))
        .and(body_partial_json(json!({"base": "main", "draft": false})))
        .and(body_string_contains("\"head\":\"cascade/test-and-fix/"))
        .respond_with(created(
            json!({"number": 7, "html_url": "https://github.example/acme/invoice/pull/7"}),
        ))
        .expect(1)
        .mount(s)
        .await;
    gh("POST", &format!("{REPO}/issues/7/labels"))
        .and(body_partial_json(
            json!({"labels": ["cascade", "automated"]}),
        ))
        .respond_with(ok(json!([{"name": "cascade"}, {"name": "automated"}])))
        .expect(1)
        .mount(s)
        .await;
}

async fn mount_statuses(s: &MockServer, last: &str) {
    for state in ["pending", last] {
        gh("POST", &format!("{REPO}/statuses/deadbeef"))
            .and(body_partial_json(
                json!({"state": state, "context": "cascade/test-and-fix"}),
            ))
            .respond_with(created(json!({"state": state})))
            .expect(1)
            .mount(s)
            .await;
    }
}

/// The example's project file with the fixes its fixer knows applied.
fn fixed_totals() -> (String, String) {
    let project = examples().join("buggy-project");
    let original = std::fs::read_to_string(project.join("invoice/totals.py")).expect("totals.py");
    let fixes: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("tools/fixes.json")).expect("fixes.json"),
    )
    .expect("json");
    let mut fixed = original.clone();
    for f in fixes.as_array().expect("a list") {
        let (find, replace) = (
            f["find"].as_str().unwrap_or_default(),
            f["replace"].as_str().unwrap_or_default(),
        );
        fixed = fixed.replacen(find, replace, 1);
    }
    assert_ne!(original, fixed);
    (original, fixed)
}

#[test]
fn a_green_sandbox_run_opens_a_pull_request_with_its_patch() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(MockServer::start());
    let (original, fixed) = fixed_totals();
    rt.block_on(mount_pull_request_flow(&s, &original, &fixed));
    rt.block_on(mount_statuses(&s, "success"));
    rt.block_on(
        Mock::given(method("POST"))
            .and(path(format!("{REPO}/issues")))
            .respond_with(created(json!({})))
            .expect(0)
            .mount(&s),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    test_and_fix(dir.path(), &s.uri(), 5);
    let (code, results, stderr) = run_embedded(dir.path(), "cascade.yaml", &[]);
    assert_eq!(code, 0, "{stderr}\n{results:#}");
    let pr = &results["integrations"]["github"]["pull_request"];
    assert_eq!(pr["number"], json!(7), "{results:#}");
    assert_eq!(
        pr["url"],
        json!("https://github.example/acme/invoice/pull/7")
    );
    assert_eq!(pr["base"], json!("main"));
    let branch = pr["branch"].as_str().unwrap_or_default();
    let run_id = results["run_id"].as_str().unwrap_or_default();
    assert_eq!(branch, format!("cascade/test-and-fix/{run_id}"));
    assert_eq!(
        results["integrations"]["github"]["status"],
        json!({"sha": "deadbeef", "state": "success", "context": "cascade/test-and-fix"})
    );
    // The patch the pull request carries is the one the loop produced.
    let patch_text = results["stages"]["functionality-audit"]["output"]["patch"]
        .as_str()
        .unwrap_or_default();
    let files = cascade_core::diff::split(patch_text).expect("the loop's patch splits");
    assert_eq!(files[0].apply(&original).expect("applies"), fixed);
    let body = rt.block_on(bodies(&s, &format!("{REPO}/pulls")));
    let text = body[0]["body"].as_str().unwrap_or_default();
    for want in [
        "- `invoice/totals.py`",
        "tests: 6/6 passing",
        "### Fix history",
        run_id,
    ] {
        assert!(
            text.contains(want),
            "missing {want:?} in the pull request body:\n{text}"
        );
    }
    assert!(
        body[0]["title"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cascade test-and-fix: changes to 1 file")
    );
    let all = results.to_string() + &stderr;
    assert!(!all.contains(TOKEN), "the token leaked");
    rt.block_on(s.verify());
}

#[test]
fn a_failed_sandbox_run_opens_an_issue_with_the_fix_history() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(MockServer::start());
    rt.block_on(mount_statuses(&s, "failure"));
    rt.block_on(async {
        gh("GET", &format!("{REPO}/issues"))
            .and(query_param("state", "open"))
            .and(query_param("labels", "cascade,automated"))
            .respond_with(ok(
                json!([{"number": 2, "html_url": "https://gh/issues/2", "body": "unrelated"}]),
            ))
            .expect(1)
            .mount(&s)
            .await;
        gh("POST", &format!("{REPO}/issues"))
            .and(body_partial_json(json!({
                "title": "Cascade `test-and-fix` failed at stage `functionality-audit`",
                "labels": ["cascade", "automated"]})))
            .respond_with(created(
                json!({"number": 12, "html_url": "https://github.example/acme/invoice/issues/12"}),
            ))
            .expect(1)
            .mount(&s)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{REPO}/pulls")))
            .respond_with(created(json!({})))
            .expect(0)
            .mount(&s)
            .await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    // One iteration fixes one of two bugs: the loop is exhausted.
    test_and_fix(dir.path(), &s.uri(), 1);
    let (code, results, stderr) = run_embedded(dir.path(), "cascade.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        results["integrations"]["github"]["issue"],
        json!({"number": 12, "url": "https://github.example/acme/invoice/issues/12", "created": true})
    );
    let sent = rt.block_on(bodies(&s, &format!("{REPO}/issues")));
    let body = sent[0]["body"].as_str().unwrap_or_default();
    for want in [
        "### Stage `functionality-audit`",
        "2 tests still failing after 1 iteration(s)",
        "### Fix history",
        "| 1 | 3 | improved | 4/6 passing |",
        "Escalation: exhausted after 1 iteration(s)",
        "<details><summary>Last patch tried</summary>",
        "<!-- cascade-failure: test-and-fix -->",
    ] {
        assert!(
            body.contains(want),
            "missing {want:?} in the issue:\n{body}"
        );
    }
    rt.block_on(s.verify());
}

const NOTIFY: &str = r#"
name: notify-demo
inputs: {score: 91}
stages:
  - stage_id: gate
    type: conditional
    branches:
      - name: ship
        condition: "${inputs.score} >= 80"
        stages: [{stage_id: report, skill: echo, inputs: {verdict: ship}}]
      - name: improve
        default: true
        stages: [{stage_id: fix, skill: echo, inputs: {verdict: improve}}]
notifications:
  - {type: webhook, url: "URI/hooks/run", on: [success, branch]}
  - {type: slack, url: "URI/slack/T000/SECRET", blocks: true, retries: 2}
  - {type: webhook, url: "URI/hooks/broken", retries: 3}
  - {type: slack, url_env: TEST_SLACK_URL}
  - {type: log, on: all}
"#;

#[test]
fn notifications_reach_a_webhook_and_slack_and_never_fail_the_run() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(MockServer::start());
    rt.block_on(async {
        Mock::given(method("POST"))
            .and(path("/hooks/run"))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(204))
            .expect(2)
            .mount(&s)
            .await;
        // Slack is down once: the retry delivers.
        Mock::given(method("POST"))
            .and(path("/slack/T000/SECRET"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(1)
            .expect(1)
            .mount(&s)
            .await;
        Mock::given(method("POST"))
            .and(path("/slack/T000/SECRET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .expect(1)
            .mount(&s)
            .await;
        // A 404 is not retried.
        Mock::given(method("POST"))
            .and(path("/hooks/broken"))
            .respond_with(ResponseTemplate::new(404))
            .expect(1)
            .mount(&s)
            .await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[("cascade.yaml", &NOTIFY.replace("URI", &s.uri()))],
    );
    let (code, results, stderr) = run_embedded(dir.path(), "cascade.yaml", &[]);
    assert_eq!(
        code, 0,
        "a notification never fails the run: {stderr}\n{results:#}"
    );
    let run_id = results["run_id"].clone();
    let hooks = rt.block_on(bodies(&s, "/hooks/run"));
    let branch = hooks
        .iter()
        .find(|b| b["event"] == json!("branch"))
        .expect("branch event");
    assert_eq!(
        (
            &branch["stage"],
            &branch["branch"],
            &branch["run_id"],
            &branch["cascade"]
        ),
        (
            &json!("gate"),
            &json!("ship"),
            &run_id,
            &json!("notify-demo")
        )
    );
    let done = hooks
        .iter()
        .find(|b| b["event"] == json!("success"))
        .expect("success event");
    assert_eq!(done["status"], json!("success"));
    assert_eq!(done["failed_stages"], json!([]));
    assert!(
        done["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("✅ cascade `notify-demo` succeeded")
    );
    let slack = rt.block_on(bodies(&s, "/slack/T000/SECRET"));
    assert_eq!(slack.len(), 2);
    assert!(
        slack[1]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("✅ cascade `notify-demo` succeeded")
    );
    assert_eq!(slack[1]["blocks"][0]["type"], json!("section"));
    let records = results["integrations"]["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let slack_record = records
        .iter()
        .find(|r| {
            r["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with("slack 127.0.0.1")
        })
        .expect("slack record");
    assert_eq!(
        (&slack_record["delivered"], &slack_record["attempts"]),
        (&json!(true), &json!(2))
    );
    let notes = results["notes"].to_string();
    assert!(
        notes.contains("(success) not delivered after 1 attempt(s): answered 404 Not Found"),
        "{notes}"
    );
    assert!(
        notes.contains("`TEST_SLACK_URL` (the target's URL) is not set"),
        "{notes}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["target"] == json!("log") && r["event"] == json!("branch"))
    );
    assert!(
        !results.to_string().contains("SECRET"),
        "a Slack URL is a secret: only its host is recorded"
    );
    rt.block_on(s.verify());
}

const GATES: &str = r#"
name: gated
inputs: {coverage: 72}
stages:
  - stage_id: measure
    skill: echo
    inputs: {coverage: "${inputs.coverage}", tests: {passed: 12, total: 12}}
  - stage_id: publish
    skill: echo
    inputs: {done: true}
quality_gates:
  - {name: coverage, metric: measure.coverage, min: 80}
  - {name: all-tests, condition: "${measure.tests.passed} == ${measure.tests.total}"}
"#;

#[test]
fn a_failing_quality_gate_fails_the_run_naming_gate_value_and_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            ("cascade.yaml", GATES),
            (
                "after.yaml",
                &GATES
                    .replace("name: gated", "name: gated-early")
                    .replace("min: 80}", "min: 80, after: measure}"),
            ),
        ],
    );
    let (code, results, stderr) = run_embedded(dir.path(), "cascade.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(results["status"], json!("failed"));
    assert_eq!(
        results["error"],
        json!("quality gate `coverage` failed: `measure.coverage` is 72, needs >= 80")
    );
    assert_eq!(
        results["quality_gates"],
        json!([
            {"name": "coverage", "passed": false, "value": 72, "threshold": ">= 80",
             "message": "quality gate `coverage` failed: `measure.coverage` is 72, needs >= 80"},
            {"name": "all-tests", "passed": true, "value": true,
             "threshold": "${measure.tests.passed} == ${measure.tests.total}"}
        ])
    );
    // Every stage ran: an end-of-run gate judges the finished run.
    assert_eq!(results["stages"]["publish"]["status"], json!("success"));

    let (code, results, stderr) =
        run_embedded(dir.path(), "cascade.yaml", &["--input", "coverage=85"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(results["quality_gates"][0]["passed"], json!(true));

    // Checked right after its stage: the run stops there.
    let (code, results, stderr) = run_embedded(dir.path(), "after.yaml", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        results["error"],
        json!("quality gate `coverage` failed: `measure.coverage` is 72, needs >= 80")
    );
    assert_ne!(results["stages"]["publish"]["status"], json!("success"));
}

const HOOKS: &str = r#"
name: hooked
stages:
  - {stage_id: first, skill: echo, inputs: {n: 1}}
  - stage_id: second
    skill: echo
    inputs: {n: 2}
    error_handling: {strategy: retry, max_retries: 2, backoff: immediate}
hooks:
  pre_task: |
    cat > "hooks/pre-$CASCADE_STAGE_ID-$CASCADE_ATTEMPT.json"
    if [ "$CASCADE_STAGE_ID" = second ] && [ "$CASCADE_ATTEMPT" = 1 ]; then echo "not ready yet" >&2; exit 4; fi
  post_task: 'cat > "hooks/post-$CASCADE_STAGE_ID-$CASCADE_ATTEMPT.json"'
  on_run_end: ['cat > hooks/run-end.json', 'echo boom >&2; exit 2']
  timeout: 20s
"#;

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", p.display()))
}

#[test]
fn hooks_run_around_each_task_and_at_the_end_in_the_cascades_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[("proj/cascade.yaml", HOOKS), ("proj/hooks/.keep", "")],
    );
    // Run from elsewhere: the hooks run in the cascade's directory.
    let (code, results, stderr) = run_embedded(dir.path(), "proj/cascade.yaml", &[]);
    assert_eq!(code, 0, "{stderr}\n{results:#}");
    let hooks = dir.path().join("proj/hooks");
    let pre = read_json(&hooks.join("pre-first-1.json"));
    assert_eq!(
        (
            &pre["hook"],
            &pre["stage_id"],
            &pre["skill"],
            &pre["attempt"],
            &pre["inputs"]
        ),
        (
            &json!("pre_task"),
            &json!("first"),
            &json!("echo"),
            &json!(1),
            &json!({"n": 1})
        )
    );
    assert_eq!(pre["run_id"], results["run_id"]);
    let post = read_json(&hooks.join("post-first-1.json"));
    assert_eq!(
        post["result"],
        json!({"status": "succeeded", "outputs": {"n": 1}})
    );
    // A failing pre_task hook fails the attempt (retryably) with its stderr.
    let second = &results["stages"]["second"];
    assert_eq!(
        (&second["status"], &second["attempts"]),
        (&json!("success"), &json!(2))
    );
    assert!(
        second["errors"]
            .to_string()
            .contains("pre_task hook exited with code 4: not ready yet"),
        "{second:#}"
    );
    let failed_post = read_json(&hooks.join("post-second-1.json"));
    assert_eq!(failed_post["result"]["status"], json!("failed"));
    assert!(hooks.join("post-second-2.json").is_file());
    let end = read_json(&hooks.join("run-end.json"));
    assert_eq!(
        (&end["run_id"], &end["status"]),
        (&results["run_id"], &json!("success"))
    );
    assert_eq!(end["stages"]["second"]["attempts"], json!(2));
    // A failing on_run_end hook is noted, not fatal.
    assert!(
        results["notes"]
            .to_string()
            .contains("on_run_end hook exited with code 2: boom"),
        "{results:#}"
    );
}

#[test]
fn on_a_swarm_workers_run_task_hooks_and_the_owner_acts_on_the_end_once() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(MockServer::start());
    rt.block_on(async {
        Mock::given(method("POST"))
            .and(path("/hooks/run"))
            .respond_with(ResponseTemplate::new(200))
            .expect(2)
            .mount(&s)
            .await;
        for state in ["pending", "failure"] {
            gh("POST", &format!("{REPO}/statuses/cafe"))
                .and(body_partial_json(
                    json!({"state": state, "context": "cascade/swarm-ops"}),
                ))
                .respond_with(created(json!({})))
                .expect(1)
                .mount(&s)
                .await;
        }
        gh("GET", &format!("{REPO}/issues"))
            .and(query_param("labels", "cascade"))
            .respond_with(ok(json!([])))
            .expect(1)
            .mount(&s)
            .await;
        gh("POST", &format!("{REPO}/issues"))
            .and(body_string_contains("quality gate `coverage` failed"))
            .respond_with(created(
                json!({"number": 4, "html_url": "https://gh/issues/4"}),
            ))
            .expect(1)
            .mount(&s)
            .await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let o = out_dir.display();
    let cascade = format!(
        r#"
name: swarm-ops
stages:
  - {{stage_id: measure, skill: echo, inputs: {{coverage: 72}}}}
quality_gates:
  - {{name: coverage, metric: measure.coverage, min: 80}}
hooks:
  pre_task: 'cat > "{o}/pre-$CASCADE_STAGE_ID.json"'
  post_task: 'cat > "{o}/post-$CASCADE_STAGE_ID.json"'
  on_run_end: 'cat > "{o}/run-end.json"'
notifications:
  - {{type: webhook, url: "{uri}/hooks/run", on: [started, failure]}}
github_integration:
  repository: acme/invoice
  api_url: {uri}
  sha: cafe
  labels: [cascade]
  token_env: {TOKEN_ENV}
"#,
        uri = s.uri()
    );
    write_tree(dir.path(), &[("cascade.yaml", &cascade)]);
    let mut swarm = TestSwarm::new();
    swarm.env.push((TOKEN_ENV.into(), TOKEN.into()));
    swarm.start_coordinator("c1");
    swarm.start_worker("w1", "echo", &[]);
    let out = dir.path().join("results.json");
    let (code, _, stderr) = swarm.submit_wait(&dir.path().join("cascade.yaml"), &out, &[]);
    assert_eq!(code, 1, "{stderr}");
    let results = read_json(&out);
    assert_eq!(
        results["error"],
        json!("quality gate `coverage` failed: `measure.coverage` is 72, needs >= 80")
    );
    let pre = read_json(&out_dir.join("pre-measure.json"));
    assert_eq!(
        (&pre["hook"], &pre["inputs"]),
        (&json!("pre_task"), &json!({"coverage": 72}))
    );
    let post = read_json(&out_dir.join("post-measure.json"));
    assert_eq!(post["result"]["status"], json!("succeeded"));
    let end = read_json(&out_dir.join("run-end.json"));
    assert_eq!(
        (&end["run_id"], &end["status"]),
        (&results["run_id"], &json!("failed"))
    );
    assert_eq!(
        results["integrations"]["github"]["issue"]["number"],
        json!(4)
    );
    assert_eq!(results["stages"]["measure"]["workers"], json!(["w1"]));
    let events: Vec<Value> = rt
        .block_on(bodies(&s, "/hooks/run"))
        .into_iter()
        .map(|b| b["event"].clone())
        .collect();
    assert_eq!(events.len(), 2);
    assert!(events.contains(&json!("started")) && events.contains(&json!("failure")));
    rt.block_on(s.verify());
}

#[tokio::test(flavor = "multi_thread")]
async fn proposing_a_run_again_reuses_its_branch_and_pull_request() {
    // The end of a run acted on twice (its coordinator died before writing
    // the report): the branch exists, its pull request is found, no second
    // one is opened. The patch's paths sit under `patch_dir` in the repo.
    let s = MockServer::start().await;
    let get = [
        ("/git/ref/heads/main", json!({"object": {"sha": "c0"}})),
        ("/git/commits/c0", json!({"tree": {"sha": "t0"}})),
        (
            "/git/trees/t0",
            json!({"tree": [{"path": "sub", "mode": "040000", "type": "tree", "sha": "t-sub"}]}),
        ),
        (
            "/git/trees/t-sub",
            json!({"tree": [{"path": "x.txt", "mode": "100644", "type": "blob", "sha": "b-x"}]}),
        ),
        (
            "/git/blobs/b-x",
            json!({"encoding": "base64", "content": base64(b"a\n")}),
        ),
    ];
    for (p, body) in get {
        gh("GET", &format!("{REPO}{p}"))
            .respond_with(ok(body))
            .expect(1)
            .mount(&s)
            .await;
    }
    gh("POST", &format!("{REPO}/git/blobs"))
        .and(body_partial_json(json!({"content": "b\n"})))
        .respond_with(created(json!({"sha": "b-y"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/trees"))
        .and(body_partial_json(
            json!({"tree": [{"path": "sub/x.txt", "mode": "100644", "sha": "b-y"}]}),
        ))
        .respond_with(created(json!({"sha": "t1"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/commits"))
        .respond_with(created(json!({"sha": "c1"})))
        .expect(1)
        .mount(&s)
        .await;
    gh("POST", &format!("{REPO}/git/refs"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"message": "Reference already exists"})),
        )
        .expect(1)
        .mount(&s)
        .await;
    gh("GET", &format!("{REPO}/pulls"))
        .and(query_param("head", "acme:cascade/x"))
        .respond_with(ok(json!([{"number": 7, "html_url": "https://gh/pull/7"}])))
        .expect(1)
        .mount(&s)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/pulls")))
        .respond_with(created(json!({})))
        .expect(0)
        .mount(&s)
        .await;
    let c = GithubClient::connect(&s.uri(), TOKEN.into(), "acme/invoice").expect("client");
    let p = Proposal {
        base: Some("main".into()),
        branch: "cascade/x".into(),
        title: "t".into(),
        body: "b".into(),
        message: "m".into(),
        labels: vec!["l".into()],
        draft: false,
        files: cascade_core::diff::split("--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\n")
            .expect("split"),
        dir: Some("sub".into()),
    };
    let pr = github::open_pull_request(&c, &p).await.expect("reused");
    assert_eq!((pr.number, pr.reused), (7, true));
    s.verify().await;
}

#[test]
fn submitted_hooks_run_on_a_worker_only_when_it_allows_submitted_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = dir.path().display();
    let cascade = format!(
        "name: opt-in\nstages:\n  - {{stage_id: hooked, skill: echo, inputs: {{n: 1}}}}\nhooks:\n  pre_task: 'echo ran >> \"{o}/pre-ran\"'\n"
    );
    write_tree(dir.path(), &[("cascade.yaml", &cascade)]);
    let file = dir.path().join("cascade.yaml");
    let mut swarm = TestSwarm::new();
    swarm.start_coordinator("c1");
    // Started without the opt-in (the harness sets it for every other test).
    swarm
        .env
        .push(("CASCADE_ALLOW_SUBMITTED_COMMANDS".into(), "false".into()));
    let refusing = swarm.start_worker("w-refuses", "echo", &[]);
    let out = dir.path().join("refused.json");
    let (code, _, stderr) = swarm.submit_wait(&file, &out, &[]);
    assert_eq!(code, 1, "{stderr}");
    let results = read_json(&out);
    assert_eq!(results["stages"]["hooked"]["status"], json!("failed"));
    let error = results["stages"]["hooked"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("commands from the submitted cascade")
            && error.contains("--allow-submitted-commands")
            && error.contains("CASCADE_ALLOW_SUBMITTED_COMMANDS"),
        "{error}"
    );
    assert!(!dir.path().join("pre-ran").exists(), "the hook never ran");

    swarm.workers[refusing].kill();
    swarm.env.clear();
    swarm.start_worker("w-allows", "echo", &["--allow-submitted-commands"]);
    let out = dir.path().join("allowed.json");
    let (code, _, stderr) = swarm.submit_wait(&file, &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        read_json(&out)["stages"]["hooked"]["workers"],
        json!(["w-allows"])
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pre-ran")).expect("the hook ran"),
        "ran\n"
    );
}

#[test]
fn a_submitted_on_run_end_hook_runs_on_serve_only_when_it_allows_submitted_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("run-end.json");
    let cascade = format!(
        "name: ends\nstages:\n  - {{stage_id: a, skill: echo}}\nhooks:\n  on_run_end: 'cat > \"{}\"'\n",
        marker.display()
    );
    write_tree(dir.path(), &[("cascade.yaml", &cascade)]);
    for allowed in [false, true] {
        let _ = std::fs::remove_file(&marker);
        let mut swarm = TestSwarm::new();
        swarm.env.push((
            "CASCADE_ALLOW_SUBMITTED_COMMANDS".into(),
            allowed.to_string(),
        ));
        swarm.start_coordinator("c1");
        swarm.start_worker("w1", "echo", &[]);
        let out = dir.path().join("results.json");
        let (code, _, stderr) = swarm.submit_wait(&dir.path().join("cascade.yaml"), &out, &[]);
        assert_eq!(code, 0, "{stderr}");
        let results = read_json(&out);
        let notes = results["notes"].to_string();
        if allowed {
            assert!(marker.exists(), "the hook ran: {results}");
        } else {
            assert!(!marker.exists(), "a submitted hook ran on the coordinator");
            assert!(
                notes.contains("on_run_end hooks not run")
                    && notes.contains("--allow-submitted-commands"),
                "{results}"
            );
        }
    }
}
