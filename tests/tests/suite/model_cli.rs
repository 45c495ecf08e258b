//! CLI agents through `ModelClient`: real processes (the fake agents of
//! `tests/fixtures/fake-agents`), each test with its own `PATH` given to the client.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cascade_core::models::{ModelCatalog, ModelEnv};
use cascade_exec::model::{ClientOptions, ModelClient, ModelRequest};
use cascade_proto::{FailureClass, FailureKind};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fake-agents")
        .join(name)
}

/// A temporary `bin` directory holding fixture `script` under the name `program`, a
/// catalog with one model `agent` of `provider`, and a client whose `PATH` starts there.
struct Agent {
    dir: TempDir,
    client: ModelClient,
}

impl Agent {
    fn new(provider: &str, program: &str, script: &str, extra: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let target = bin.join(program);
        std::fs::copy(fixture(script), &target).expect("copy fake agent");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let yaml = format!(
            "models:\n  agent:\n    provider: {provider}\n    model: fake-model\n    \
             context: 100000\n    price: {{input: 0.001, output: 0.002}}\n{extra}"
        );
        let catalog = ModelCatalog::parse(&yaml, Path::new("models.yaml")).expect("catalog");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = BTreeMap::from([("PATH".to_owned(), path)]);
        env.insert(
            "FAKE_ARGS_FILE".into(),
            dir.path().join("args").display().to_string(),
        );
        env.insert(
            "FAKE_PID_FILE".into(),
            dir.path().join("pid").display().to_string(),
        );
        let options = ClientOptions {
            env: ModelEnv::fixed(env),
            retries: 0,
            ..ClientOptions::default()
        };
        Agent {
            client: ModelClient::with_options(Arc::new(catalog), options),
            dir,
        }
    }

    fn args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("args"))
            .expect("the agent wrote its arguments")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn workdir(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).expect("workdir");
        work
    }
}

fn request(prompt: &str) -> ModelRequest {
    ModelRequest {
        prompt: prompt.to_owned(),
        ..ModelRequest::default()
    }
}

#[tokio::test]
async fn claude_answer_and_usage() {
    let agent = Agent::new("claude-cli", "claude", "claude-ok", "");
    let req = ModelRequest {
        system: Some("be brief".into()),
        ..request("say hi")
    };
    let done = agent
        .client
        .complete("agent", &req, &CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(done.text, "fake claude answer");
    assert_eq!(done.model, "agent");
    assert_eq!(done.usage.input_tokens, 150, "cache reads count as input");
    assert_eq!(done.usage.output_tokens, 45);
    assert_eq!(done.usage.cost_usd, 0.0123, "the agent's own cost figure");
    assert_eq!(done.usage.calls, 1);
    assert_eq!(
        agent.args(),
        [
            "-p",
            "--output-format",
            "json",
            "--model",
            "fake-model",
            "--append-system-prompt",
            "be brief",
            "say hi"
        ]
    );
}

#[tokio::test]
async fn claude_error_carries_its_message() {
    let agent = Agent::new("claude-cli", "claude", "claude-error", "");
    let err = agent
        .client
        .complete("agent", &request("hi"), &CancellationToken::new())
        .await
        .expect_err("is_error");
    assert!(
        err.message.contains("API Error: 500 internal server error"),
        "{}",
        err.message
    );
    assert!(err.message.contains("exit 1"), "{}", err.message);
    assert_eq!(err.kind, FailureKind::Retryable);
}

#[tokio::test]
async fn claude_auth_error_is_terminal() {
    let agent = Agent::new("claude-cli", "claude", "claude-error", "");
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        agent.client.env().var("PATH").expect("PATH"),
    );
    env.insert(
        "FAKE_MESSAGE".to_owned(),
        "Invalid API key · Please run /login".to_owned(),
    );
    let client = ModelClient::with_options(
        Arc::new(agent.client.catalog().clone()),
        ClientOptions {
            env: ModelEnv::fixed(env),
            ..ClientOptions::default()
        },
    );
    let err = client
        .complete("agent", &request("hi"), &CancellationToken::new())
        .await
        .expect_err("auth");
    assert_eq!(err.class, FailureClass::Auth);
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(err.message.contains("Please run /login"), "{}", err.message);
}

#[tokio::test]
async fn gemini_answer_and_usage() {
    let agent = Agent::new("gemini-cli", "gemini", "gemini-ok", "");
    let done = agent
        .client
        .complete("agent", &request("hello"), &CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(done.text, "fake gemini answer");
    assert_eq!((done.usage.input_tokens, done.usage.output_tokens), (11, 7));
    assert!((done.usage.cost_usd - (0.011 * 0.001 + 0.007 * 0.002)).abs() < 1e-12);
    assert_eq!(
        agent.args(),
        ["-p", "hello", "--output-format", "json", "-m", "fake-model"]
    );
}

#[tokio::test]
async fn gemini_without_login_is_auth() {
    let agent = Agent::new("gemini-cli", "gemini", "gemini-noauth", "");
    let err = agent
        .client
        .complete("agent", &request("hello"), &CancellationToken::new())
        .await
        .expect_err("exit 41");
    assert_eq!(err.class, FailureClass::Auth);
    assert_eq!(err.kind, FailureKind::Terminal);
    assert!(err.message.contains("exit 41"), "{}", err.message);
    assert!(err.message.contains("GEMINI_API_KEY"), "{}", err.message);
    assert!(
        err.message.contains("Please set an Auth method"),
        "stderr is quoted: {}",
        err.message
    );
}

#[tokio::test]
async fn codex_answer_usage_and_workdir() {
    let agent = Agent::new("codex-cli", "codex", "codex-ok", "");
    let work = agent.workdir();
    let req = ModelRequest {
        workdir: Some(work.clone()),
        ..request("fix it")
    };
    let done = agent
        .client
        .complete("agent", &req, &CancellationToken::new())
        .await
        .expect("answer");
    assert_eq!(done.text, "fake codex answer", "the last agent message");
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (200, 30)
    );
    assert!(
        work.join("codex-was-here.txt").is_file(),
        "codex ran in the workdir"
    );
    assert_eq!(
        agent.args(),
        [
            "exec",
            "--json",
            "--sandbox",
            "workspace-write",
            "--skip-git-repo-check",
            "-m",
            "fake-model",
            "fix it"
        ]
    );
}

#[tokio::test]
async fn codex_failed_turn() {
    let agent = Agent::new("codex-cli", "codex", "codex-failed", "");
    let err = agent
        .client
        .complete("agent", &request("fix it"), &CancellationToken::new())
        .await
        .expect_err("turn.failed");
    assert_eq!(err.class, FailureClass::RateLimited);
    assert!(
        err.message.contains("429 Too Many Requests"),
        "{}",
        err.message
    );
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .expect("the agent wrote its pid")
        .trim()
        .parse()
        .expect("a pid")
}

#[tokio::test]
async fn hanging_codex_is_killed_at_the_timeout() {
    let agent = Agent::new("codex-cli", "codex", "codex-hang", "    timeout: 300ms\n");
    let err = agent
        .client
        .complete("agent", &request("fix it"), &CancellationToken::new())
        .await
        .expect_err("hangs");
    assert_eq!(err.kind, FailureKind::Timeout, "{err:?}");
    let pid = pid_in(&agent.dir.path().join("pid"));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the agent (pid {pid}) was killed and reaped before the call returned"
    );
    let failure = err.into_failure();
    assert_eq!(failure.kind, FailureKind::Timeout);
}

#[tokio::test]
async fn cancelling_kills_the_agent() {
    let agent = Agent::new("codex-cli", "codex", "codex-hang", "");
    let cancel = CancellationToken::new();
    let pid_file = agent.dir.path().join("pid");
    let canceller = {
        let cancel = cancel.clone();
        let pid_file = pid_file.clone();
        // Cancel once the agent is running (it writes its pid file on start).
        tokio::spawn(async move {
            while !pid_file.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        })
    };
    let err = agent
        .client
        .complete("agent", &request("fix it"), &cancel)
        .await
        .expect_err("cancelled");
    canceller.await.expect("canceller");
    assert_eq!(err.kind, FailureKind::Cancelled);
    let pid = pid_in(&pid_file);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is gone"
    );
    assert_eq!(err.into_failure().class, None);
}

#[tokio::test]
async fn missing_program_is_unavailable() {
    let agent = Agent::new(
        "claude-cli",
        "claude",
        "claude-ok",
        "    command: no-such-agent-program\n",
    );
    assert!(agent.client.available().is_empty());
    let err = agent
        .client
        .complete("agent", &request("hi"), &CancellationToken::new())
        .await
        .expect_err("not on PATH");
    assert_eq!(err.class, FailureClass::Unavailable);
    assert_eq!(
        err.kind,
        FailureKind::Retryable,
        "another worker may have it"
    );
    assert!(
        err.message.contains("no-such-agent-program"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn available_finds_the_program_on_the_given_path() {
    let agent = Agent::new("claude-cli", "claude", "claude-ok", "");
    assert_eq!(agent.client.available(), ["agent"]);
}
