//! CLI agents as subprocesses: `claude`, `codex` and `gemini` in non-interactive mode.
//!
//! | provider   | command line                                                        | stdout                                |
//! |------------|---------------------------------------------------------------------|---------------------------------------|
//! | claude-cli | `claude -p --output-format json [--model ID] [--append-system-prompt S] PROMPT` | one JSON result object  |
//! | codex-cli  | `codex exec --json --sandbox workspace-write --skip-git-repo-check [-m ID] PROMPT` | JSONL events          |
//! | gemini-cli | `gemini -p PROMPT --output-format json [-m ID]`                     | one JSON object; exit 41 = no login    |
//!
//! Each agent runs in the request's working directory, in its own process group, with
//! stdin closed (or fed a prompt too large for an argument, then closed). At the model's
//! timeout or on cancellation the whole group is killed with SIGKILL and the agent reaped
//! before the call returns; when the agent exits on its own the group is killed too, so a
//! straggler cannot hold stdout open. `codex` with no network retries forever: only the
//! timeout ends it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use cascade_proto::{FailureClass, FailureKind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio_util::sync::CancellationToken;

use super::error::{ModelError, truncate_chars};
use super::request::{Answer, ModelRequest, system_prompt, u64_at};
use cascade_core::models::ModelEnv;
use cascade_core::models::{ModelDef, Provider};

/// Prompts longer than this go on stdin: Linux refuses a single argument over 128 KiB.
const MAX_ARG_PROMPT_BYTES: usize = 100 * 1024;
/// An agent's stdout past this is cut off (and the answer treated as malformed).
const MAX_STDOUT_BYTES: usize = 16 * 1024 * 1024;
/// How much of the end of stderr is kept for messages.
const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// Gemini CLI's exit code for "not authenticated".
const GEMINI_EXIT_AUTH: i32 = 41;

/// The argv and stdin of one agent call.
struct Invocation {
    args: Vec<String>,
    stdin: Option<String>,
}

/// What a finished agent left.
struct Output {
    status: ExitStatus,
    stdout: String,
    truncated: bool,
    stderr_tail: String,
}

pub(crate) async fn run(
    def: &ModelDef,
    req: &ModelRequest,
    env: &ModelEnv,
    cancel: &CancellationToken,
) -> Result<Answer, ModelError> {
    let program = env.find_program(def.program()).ok_or_else(|| {
        ModelError::new(
            FailureClass::Unavailable,
            format!(
                "model `{}` needs the `{}` program ({}), which is not on PATH",
                def.name,
                def.program(),
                def.provider
            ),
        )
    })?;
    let invocation = match def.provider {
        Provider::ClaudeCli => claude_args(def, req),
        Provider::CodexCli => codex_args(def, req),
        Provider::GeminiCli => gemini_args(def, req),
        Provider::Anthropic | Provider::Openai | Provider::Gemini => {
            return Err(ModelError::terminal(
                FailureClass::Malformed,
                format!("model `{}` is an HTTP API, not a CLI agent", def.name),
            ));
        }
    };
    let out = execute(
        def,
        &program,
        invocation,
        req.workdir.as_deref(),
        env,
        cancel,
    )
    .await?;
    if out.truncated {
        return Err(ModelError::new(
            FailureClass::Malformed,
            format!(
                "{} wrote more than {} MiB to stdout",
                def.program(),
                MAX_STDOUT_BYTES / (1024 * 1024)
            ),
        ));
    }
    match def.provider {
        Provider::ClaudeCli => parse_claude(def, &out),
        Provider::CodexCli => parse_codex(def, &out),
        _ => parse_gemini(def, &out),
    }
}

/// The system prompt, with the JSON instruction when JSON is wanted.
fn system_text(req: &ModelRequest) -> Option<String> {
    system_prompt(req.system.as_deref(), req.json)
}

/// Agents without a system-prompt flag get it in front of the prompt.
fn prompt_with_system(req: &ModelRequest) -> String {
    match system_text(req) {
        Some(system) => format!("{system}\n\n{}", req.prompt),
        None => req.prompt.clone(),
    }
}

fn claude_args(def: &ModelDef, req: &ModelRequest) -> Invocation {
    let mut args: Vec<String> = vec!["-p".into(), "--output-format".into(), "json".into()];
    if !def.model_id.is_empty() {
        args.extend(["--model".into(), def.model_id.clone()]);
    }
    if let Some(system) = system_text(req) {
        args.extend(["--append-system-prompt".into(), system]);
    }
    // `claude -p` reads the prompt from stdin when no argument is given.
    prompt_last(args, req.prompt.clone(), None)
}

fn codex_args(def: &ModelDef, req: &ModelRequest) -> Invocation {
    let mut args: Vec<String> = ["exec", "--json", "--sandbox", "workspace-write"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    // Task directories are rarely git repositories; codex refuses them without this.
    args.push("--skip-git-repo-check".into());
    if !def.model_id.is_empty() {
        args.extend(["-m".into(), def.model_id.clone()]);
    }
    // `codex exec -` reads the prompt from stdin.
    prompt_last(args, prompt_with_system(req), Some("-"))
}

fn gemini_args(def: &ModelDef, req: &ModelRequest) -> Invocation {
    let prompt = prompt_with_system(req);
    let (arg, stdin) = if prompt.len() > MAX_ARG_PROMPT_BYTES {
        // `-p` is appended to what arrives on stdin.
        ("Follow the instructions above.".to_owned(), Some(prompt))
    } else {
        (prompt, None)
    };
    let mut args = vec!["-p".into(), arg, "--output-format".into(), "json".into()];
    if !def.model_id.is_empty() {
        args.extend(["-m".into(), def.model_id.clone()]);
    }
    Invocation { args, stdin }
}

/// The prompt as the last argument, or on stdin (with `stdin_marker` as the argument,
/// if the agent needs one) when it is too large for an argument.
fn prompt_last(mut args: Vec<String>, prompt: String, stdin_marker: Option<&str>) -> Invocation {
    if prompt.len() > MAX_ARG_PROMPT_BYTES {
        args.extend(stdin_marker.map(str::to_owned));
        Invocation {
            args,
            stdin: Some(prompt),
        }
    } else {
        args.push(prompt);
        Invocation { args, stdin: None }
    }
}

async fn execute(
    def: &ModelDef,
    program: &Path,
    invocation: Invocation,
    workdir: Option<&Path>,
    env: &ModelEnv,
    cancel: &CancellationToken,
) -> Result<Output, ModelError> {
    let argv: Vec<std::ffi::OsString> = std::iter::once(program.as_os_str().to_owned())
        .chain(invocation.args.iter().map(Into::into))
        .collect();
    // Supervised (when this binary is the helper): the agent dies with the worker.
    let mut cmd = crate::sandbox::helper::command_for(&argv);
    cmd.stdin(if invocation.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .process_group(0);
    if let Some(dir) = workdir {
        if !dir.is_dir() {
            return Err(ModelError::terminal(
                FailureClass::Malformed,
                format!("working directory `{}` does not exist", dir.display()),
            ));
        }
        cmd.current_dir(dir);
    }
    for (k, v) in env.overlay() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        ModelError::new(
            FailureClass::Unavailable,
            format!(
                "cannot start `{}` for model `{}`: {e}",
                program.display(),
                def.name
            ),
        )
    })?;
    // The agent leads its own group (`process_group(0)`): its pid is the group id. The
    // guard kills the group even if this future is dropped half-way.
    let group = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let ended = {
        let work = async {
            let wait = async {
                let status = child.wait().await;
                group.kill();
                status
            };
            tokio::join!(
                feed(stdin, invocation.stdin),
                read_head(stdout, MAX_STDOUT_BYTES),
                read_tail(stderr, STDERR_TAIL_BYTES),
                wait
            )
        };
        tokio::select! {
            (_, out, err, status) = work => Ok((out, err, status)),
            () = tokio::time::sleep(def.timeout) => Err(ModelError::timeout(def)),
            () = cancel.cancelled() => Err(ModelError::cancelled(&def.name)),
        }
    };
    match ended {
        Ok(((stdout, truncated), stderr_tail, status)) => {
            let status = status.map_err(|e| {
                ModelError::new(
                    FailureClass::Server,
                    format!("cannot wait for `{}`: {e}", program.display()),
                )
            })?;
            if let Some(why) =
                crate::sandbox::helper::helper_failure(status, stderr_tail.as_bytes())
            {
                return Err(ModelError::new(
                    FailureClass::Unavailable,
                    format!(
                        "cannot start `{}` for model `{}`: {why}",
                        program.display(),
                        def.name
                    ),
                ));
            }
            Ok(Output {
                status,
                stdout,
                truncated,
                stderr_tail,
            })
        }
        Err(err) => {
            group.kill();
            // SIGKILL cannot be caught: this returns promptly, and the agent is reaped
            // before the caller hears about the timeout.
            let _ = child.wait().await;
            Err(err)
        }
    }
}

/// Kills the agent's process group on request and when dropped.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pgid = pgid.as_raw(), "cannot kill agent group: {e}"),
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn feed(stdin: Option<ChildStdin>, text: Option<String>) {
    if let (Some(mut stdin), Some(text)) = (stdin, text) {
        // An agent that exits without reading its prompt is reported by its exit status.
        let _ = stdin.write_all(text.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
}

/// The first `max` bytes, draining the rest so the writer never blocks.
async fn read_head<R: AsyncRead + Unpin>(reader: Option<R>, max: usize) -> (String, bool) {
    let Some(mut reader) = reader else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                truncated |= n > room;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// The last `max` bytes.
async fn read_tail<R: AsyncRead + Unpin>(reader: Option<R>, max: usize) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > max {
                    tail.drain(..tail.len() - max);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).trim().to_owned()
}

/// A class for an agent's error text: what it says about keys, limits and sizes.
fn classify_text(text: &str) -> FailureClass {
    let lower = text.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if any(&[
        "api key",
        "api_key",
        "/login",
        "not logged in",
        "log in",
        "login",
        "authenticat",
        "unauthorized",
        "401",
        "credential",
    ]) {
        FailureClass::Auth
    } else if any(&[
        "prompt is too long",
        "context length",
        "context window",
        "too many tokens",
    ]) {
        FailureClass::ContextOverflow
    } else if any(&["overloaded", "529"]) {
        FailureClass::Overloaded
    } else if any(&["rate limit", "rate_limit", "429", "quota"]) {
        FailureClass::RateLimited
    } else {
        FailureClass::Other
    }
}

/// A failed agent run: the class from its text, its exit code, its stderr tail.
fn agent_failure(def: &ModelDef, out: &Output, what: &str) -> ModelError {
    let text = if what.trim().is_empty() {
        out.stderr_tail.as_str()
    } else {
        what
    };
    let class = classify_text(text);
    let exit = match out.status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".to_owned(),
    };
    let mut message = format!(
        "{} ({}, model `{}`) failed ({exit}): {}",
        def.program(),
        def.provider,
        def.name,
        truncate_chars(text.trim(), 2000)
    );
    if class == FailureClass::Auth {
        message.push_str(&format!(
            " (log the `{}` CLI in on this worker)",
            def.program()
        ));
    }
    ModelError {
        kind: if class == FailureClass::Auth {
            FailureKind::Terminal
        } else {
            FailureKind::Retryable
        },
        ..ModelError::new(class, message)
    }
}

/// The JSON object of a single-object output: the whole stdout, else its last line that
/// parses (agents sometimes print warnings first).
fn json_object(stdout: &str) -> Option<Value> {
    serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .filter(Value::is_object)
        .or_else(|| {
            stdout
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .find(Value::is_object)
        })
}

fn parse_claude(def: &ModelDef, out: &Output) -> Result<Answer, ModelError> {
    let Some(v) = json_object(&out.stdout) else {
        let why = if out.status.success() {
            "printed no JSON result".to_owned()
        } else {
            out.stderr_tail.clone()
        };
        return Err(agent_failure(def, out, &why));
    };
    let result = v.get("result").and_then(Value::as_str).unwrap_or_default();
    let answer = Answer {
        text: result.to_owned(),
        input_tokens: u64_at(&v, "/usage/input_tokens")
            + u64_at(&v, "/usage/cache_creation_input_tokens")
            + u64_at(&v, "/usage/cache_read_input_tokens"),
        output_tokens: u64_at(&v, "/usage/output_tokens"),
        stop_reason: v.get("subtype").and_then(Value::as_str).map(str::to_owned),
        cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
    };
    let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    if is_error || !out.status.success() {
        let what = if result.trim().is_empty() {
            format!(
                "{} {}",
                answer.stop_reason.as_deref().unwrap_or("error"),
                out.stderr_tail
            )
        } else {
            result.to_owned()
        };
        return Err(agent_failure(def, out, &what).with_usage(answer.usage(def)));
    }
    non_empty(def, answer)
}

fn parse_codex(def: &ModelDef, out: &Output) -> Result<Answer, ModelError> {
    let mut answer = Answer::default();
    let mut failed: Option<String> = None;
    let mut errors: Vec<String> = Vec::new();
    let mut saw_turn = false;
    for v in out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
    {
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "item.completed" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                let kind = item
                    .get("type")
                    .or_else(|| item.get("item_type"))
                    .and_then(Value::as_str);
                if matches!(kind, Some("agent_message" | "assistant_message"))
                    && let Some(text) = item.get("text").and_then(Value::as_str)
                {
                    answer.text = text.to_owned();
                }
            }
            "turn.completed" => {
                saw_turn = true;
                answer.input_tokens += u64_at(&v, "/usage/input_tokens");
                answer.output_tokens += u64_at(&v, "/usage/output_tokens");
            }
            "turn.failed" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("turn failed");
                failed = Some(message.to_owned());
            }
            "error" => {
                let message = v.get("message").and_then(Value::as_str).unwrap_or("error");
                errors.push(message.to_owned());
            }
            _ => {}
        }
    }
    let usage = answer.usage(def);
    if let Some(message) = failed {
        return Err(agent_failure(def, out, &message).with_usage(usage));
    }
    if !out.status.success() || (answer.text.is_empty() && !errors.is_empty()) {
        let what = errors.last().cloned().unwrap_or_default();
        return Err(agent_failure(def, out, &what).with_usage(usage));
    }
    if !saw_turn && answer.text.is_empty() {
        return Err(ModelError::new(
            FailureClass::Malformed,
            format!("{} printed no events (model `{}`)", def.program(), def.name),
        ));
    }
    answer.stop_reason = Some("completed".to_owned());
    non_empty(def, answer)
}

fn parse_gemini(def: &ModelDef, out: &Output) -> Result<Answer, ModelError> {
    if out.status.code() == Some(GEMINI_EXIT_AUTH) {
        return Err(ModelError::terminal(
            FailureClass::Auth,
            format!(
                "the `{}` CLI is not authenticated (exit {GEMINI_EXIT_AUTH}): run `{}` once to \
                 log in, or set GEMINI_API_KEY for it: {}",
                def.program(),
                def.program(),
                truncate_chars(&out.stderr_tail, 1000)
            ),
        ));
    }
    let v = json_object(&out.stdout);
    let mut answer = Answer::default();
    if let Some(models) = v
        .as_ref()
        .and_then(|v| v.pointer("/stats/models"))
        .and_then(Value::as_object)
    {
        for stats in models.values() {
            answer.input_tokens += u64_at(stats, "/tokens/prompt");
            answer.output_tokens += u64_at(stats, "/tokens/candidates");
        }
    }
    if !out.status.success() {
        let what = v
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map_or_else(|| out.stderr_tail.clone(), str::to_owned);
        return Err(agent_failure(def, out, &what).with_usage(answer.usage(def)));
    }
    answer.text = v
        .as_ref()
        .and_then(|v| v.get("response"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    non_empty(def, answer)
}

fn non_empty(def: &ModelDef, answer: Answer) -> Result<Answer, ModelError> {
    if answer.text.trim().is_empty() {
        return Err(answer.failure(
            def,
            FailureClass::Malformed,
            format!(
                "{} returned no answer (model `{}`)",
                def.program(),
                def.name
            ),
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_classes() {
        let table = [
            ("Invalid API key · Please run /login", FailureClass::Auth),
            ("Not logged in", FailureClass::Auth),
            ("Prompt is too long", FailureClass::ContextOverflow),
            ("API Error: 529 overloaded_error", FailureClass::Overloaded),
            ("API Error: 429 rate_limit_error", FailureClass::RateLimited),
            ("Reached max turns", FailureClass::Other),
        ];
        for (text, want) in table {
            assert_eq!(classify_text(text), want, "{text}");
        }
    }

    #[test]
    fn large_prompts_go_on_stdin() {
        let def_args = prompt_last(
            vec!["exec".into()],
            "x".repeat(MAX_ARG_PROMPT_BYTES + 1),
            Some("-"),
        );
        assert_eq!(def_args.args, ["exec", "-"]);
        assert!(def_args.stdin.is_some());
        let small = prompt_last(vec![], "hi".into(), None);
        assert_eq!(small.args, ["hi"]);
        assert!(small.stdin.is_none());
    }
}
