//! File skills: one child process per attempt.
//!
//! The child runs in its own process group, so a timeout or cancellation can kill the whole
//! tree (`killpg(SIGKILL)`), grandchildren included. When the child exits on its own, the
//! group is killed too: a straggler holding stdout open would otherwise keep the attempt
//! waiting for EOF forever. In a binary that handles the sandbox helper's marker (the
//! worker, the coordinator), the child is the helper supervising the command
//! (`sandbox::supervised_command`): it leads the group, and kills the command and every
//! process it started when this process dies, even by SIGKILL, so no skill outlives a
//! killed worker beside the redelivered attempt.
//!
//! Inputs reach the child three ways, none of them through the shell: as a JSON object on
//! stdin (then closed) and as `CASCADE_INPUT_<NAME>` variables (values over
//! [`MAX_ENV_INPUT_BYTES`] only on stdin). Stdout is
//! captured up to [`MAX_STDOUT_BYTES`]; only the tail of stderr is kept.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use cascade_proto::{Failure, TaskSpec};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};

use super::Limit;
use crate::sandbox::helper::{command_for, helper_failure};
use crate::skills::{SkillDef, SkillKind};

/// Past this much stdout the attempt fails: outputs are meant to be small JSON documents.
pub const MAX_STDOUT_BYTES: usize = 16 * 1024 * 1024;
/// How much of the end of stderr is kept.
const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// How many lines of that tail are reported as `stderr_tail`.
const STDERR_TAIL_LINES: usize = 20;
/// Inputs larger than this are left out of the environment (they are still on stdin):
/// Linux refuses to exec with a single variable over 128 KiB.
pub const MAX_ENV_INPUT_BYTES: usize = 64 * 1024;

pub(super) async fn run(
    skill: &SkillDef,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
    limit: &Limit<'_>,
) -> Result<Value, Failure> {
    let name = skill.name.as_str();
    let (mut cmd, program) = command(skill, task, inputs)?;
    let mut child = cmd.spawn().map_err(|e| spawn_failure(name, &program, &e))?;
    // The child leads its own group (`process_group(0)`), so its pid is the group id.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    // `kill_on_drop` reaches the child only (the supervising helper, which then cannot
    // clean up): a dropped attempt kills the whole group.
    let _guard = GroupGuard(group);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let payload = serde_json::to_vec(inputs).unwrap_or_default();

    let ended = {
        let work = async {
            let wait = async {
                let status = child.wait().await;
                kill_group(group);
                status
            };
            tokio::join!(
                feed_stdin(stdin, payload),
                read_stdout(stdout, group),
                read_tail(stderr),
                wait
            )
        };
        tokio::select! {
            (_, out, err, status) = work => Ok((out, err, status)),
            stopped = limit.reached() => Err(stopped),
        }
    };
    let (stdout, stderr, status) = match ended {
        Ok(done) => done,
        Err(stopped) => {
            kill_group(group);
            // SIGKILL cannot be caught: this returns promptly.
            let _ = child.wait().await;
            return Err(limit.failure(stopped));
        }
    };
    let Some(stdout) = stdout else {
        return Err(Failure::terminal(format!(
            "skill `{name}` wrote more than {} MiB to stdout",
            MAX_STDOUT_BYTES / (1024 * 1024)
        )));
    };
    let status = status.map_err(|e| {
        Failure::retryable(format!("skill `{name}`: cannot wait for `{program}`: {e}"))
    })?;
    finish(name, status, &stdout, &stderr)
}

/// Builds the command and returns it with the program name for error messages.
fn command(
    skill: &SkillDef,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
) -> Result<(Command, String), Failure> {
    let name = skill.name.as_str();
    let argv: Vec<OsString> = match &skill.kind {
        // `$0` is the skill name, so the shell's own messages name the skill.
        SkillKind::Shell { run } => vec!["sh".into(), "-c".into(), run.into(), name.into()],
        SkillKind::Command { argv } if !argv.is_empty() => argv.iter().map(Into::into).collect(),
        SkillKind::Command { .. } => {
            return Err(Failure::terminal(format!(
                "skill `{name}` has an empty command"
            )));
        }
        SkillKind::Builtin(_) | SkillKind::Model(_) => {
            return Err(Failure::terminal(format!(
                "skill `{name}` is not a command"
            )));
        }
    };
    let program = argv[0].to_string_lossy().into_owned();
    let mut cmd = command_for(&argv);
    if let Some(dir) = &task.workdir {
        if !Path::new(dir).is_dir() {
            return Err(Failure::terminal(format!(
                "skill `{name}`: working directory `{dir}` does not exist"
            )));
        }
        cmd.current_dir(dir);
    }
    cmd.envs(&skill.env);
    if let Some(dir) = skill.dir() {
        cmd.env("CASCADE_SKILL_DIR", dir);
    }
    cmd.env("CASCADE_RUN_ID", task.run_id.as_str())
        .env("CASCADE_STAGE_ID", task.stage_id.as_str())
        .env("CASCADE_TASK_ID", task.task_id.as_str())
        .env("CASCADE_ATTEMPT", task.attempt.to_string());
    if let Some(model) = &task.model {
        cmd.env("CASCADE_MODEL", model);
    }
    for (key, value) in inputs {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if value.contains('\0') {
            return Err(Failure::terminal(format!(
                "skill `{name}`: input `{key}` contains a NUL byte, \
                 which cannot be passed in the environment"
            )));
        }
        if value.len() > MAX_ENV_INPUT_BYTES {
            tracing::debug!(skill = name, input = %key, "input too large for the environment");
            continue;
        }
        cmd.env(input_var(key), value);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok((cmd, program))
}

/// `CASCADE_INPUT_` + the name upper-cased, every char other than `A-Z0-9` as `_`.
pub(crate) fn input_var(name: &str) -> String {
    let mut var = String::from("CASCADE_INPUT_");
    var.extend(name.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        }
    }));
    var
}

fn spawn_failure(skill: &str, program: &str, err: &std::io::Error) -> Failure {
    let why = match err.kind() {
        std::io::ErrorKind::NotFound => format!("program `{program}` not found"),
        std::io::ErrorKind::PermissionDenied => format!("permission denied running `{program}`"),
        _ => format!("cannot run `{program}`: {err}"),
    };
    Failure::terminal(format!("skill `{skill}`: {why}"))
}

/// Kills every process of the group; a group that is already gone is fine.
fn kill_group(group: Option<Pid>) {
    if let Some(pgid) = group {
        match killpg(pgid, Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = pgid.as_raw(), "cannot kill process group: {e}"),
        }
    }
}

/// Kills the process group when dropped (an attempt whose future is dropped half-way).
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Writes the inputs and closes stdin. A child that never reads stdin is fine: the write
/// error (broken pipe) is expected and ignored.
async fn feed_stdin(stdin: Option<ChildStdin>, payload: Vec<u8>) {
    if let Some(mut stdin) = stdin {
        if let Err(e) = stdin.write_all(&payload).await {
            tracing::trace!("skill did not read all of stdin: {e}");
        }
        drop(stdin);
    }
}

/// All of stdout, or `None` (after killing the group) once it passes [`MAX_STDOUT_BYTES`].
async fn read_stdout(out: Option<impl AsyncRead + Unpin>, group: Option<Pid>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let Some(out) = out else { return Some(buf) };
    let limit = u64::try_from(MAX_STDOUT_BYTES).unwrap_or(u64::MAX);
    let mut bounded = out.take(limit + 1);
    if let Err(e) = bounded.read_to_end(&mut buf).await {
        tracing::debug!("cannot read skill stdout: {e}");
    }
    if buf.len() > MAX_STDOUT_BYTES {
        kill_group(group);
        return None;
    }
    Some(buf)
}

/// The last [`STDERR_TAIL_BYTES`] of a stream, read to its end in bounded memory.
async fn read_tail(err: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut err) = err else { return tail };
    let mut chunk = vec![0u8; 8 * 1024];
    let mut truncated = false;
    loop {
        match err.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.extend_from_slice(&chunk[..n]),
        }
        if tail.len() > 2 * STDERR_TAIL_BYTES {
            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
            truncated = true;
        }
    }
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        truncated = true;
    }
    if truncated {
        // The first line was cut somewhere in the middle: drop it.
        if let Some(nl) = tail.iter().position(|&b| b == b'\n') {
            tail.drain(..=nl);
        }
    }
    tail
}

/// The last [`STDERR_TAIL_LINES`] lines of stderr, or `None` when it was empty.
fn stderr_tail(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let tail = lines[start..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

fn finish(skill: &str, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Result<Value, Failure> {
    if status.success() {
        return Ok(outputs(stdout));
    }
    if let Some(why) = helper_failure(status, stderr) {
        return Err(Failure::terminal(format!("skill `{skill}`: {why}")));
    }
    let tail = stderr_tail(stderr);
    let last_line = tail
        .as_deref()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()));
    let mut message = match (status.code(), status.signal()) {
        (Some(code), _) => format!("skill `{skill}` exited with code {code}"),
        (None, Some(sig)) => {
            let signal = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("skill `{skill}` was killed by signal {signal}")
        }
        (None, None) => format!("skill `{skill}` failed: {status}"),
    };
    if let Some(line) = last_line {
        message.push_str(": ");
        message.push_str(line.trim());
    }
    let mut failure = Failure::retryable(message);
    failure.exit_code = status.code();
    failure.stderr_tail = tail;
    Err(failure)
}

/// A JSON object on stdout is the outputs; anything else is wrapped.
fn outputs(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text.trim()) {
        return Value::Object(map);
    }
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    json!({ "stdout": text, "exit_code": 0 })
}

/// Why a hook did not succeed: the message names the hook, its exit code or
/// signal (or the time limit) and ends with the last line of its stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFailure {
    pub message: String,
    pub exit_code: Option<i32>,
    pub stderr_tail: Option<String>,
}

/// Runs one cascade hook (`hooks.pre_task`, `post_task`, `on_run_end`):
/// `sh -c COMMAND` in `dir` (when it exists), `input` as JSON on stdin,
/// `env` added, in its own process group, killed with the group at
/// `timeout` or on `cancel`. Its stdout is not read: a hook reports through
/// its exit code (and files it writes).
pub async fn run_hook(
    name: &str,
    command: &str,
    dir: Option<&Path>,
    input: &Value,
    env: &[(&str, String)],
    timeout: std::time::Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), HookFailure> {
    let fail = |message: String| HookFailure {
        message,
        exit_code: None,
        stderr_tail: None,
    };
    let mut cmd = command_for(&["sh".into(), "-c".into(), command.into(), name.into()]);
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("{name} hook: cannot run `sh`: {e}")))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    // `kill_on_drop` reaches the child only (the supervising helper, which then cannot
    // clean up): a dropped attempt kills the whole group.
    let _guard = GroupGuard(group);
    let payload = serde_json::to_vec(input).unwrap_or_default();
    let (stdin, stderr) = (child.stdin.take(), child.stderr.take());
    let work = async {
        let wait = async {
            let status = child.wait().await;
            kill_group(group);
            status
        };
        let (_, err, status) = tokio::join!(feed_stdin(stdin, payload), read_tail(stderr), wait);
        (err, status)
    };
    let stopped = tokio::select! {
        (err, status) = work => Ok((err, status)),
        () = tokio::time::sleep(timeout) => Err(format!("{name} hook timed out after {:.1}s", timeout.as_secs_f64())),
        () = cancel.cancelled() => Err(format!("{name} hook was cancelled")),
    };
    let (stderr, status) = match stopped {
        Ok(done) => done,
        Err(message) => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(fail(message));
        }
    };
    let status = status.map_err(|e| fail(format!("{name} hook: cannot wait for it: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let tail = stderr_tail(&stderr);
    let mut message = match (status.code(), status.signal()) {
        (Some(code), _) => format!("{name} hook exited with code {code}"),
        (None, Some(sig)) => format!("{name} hook was killed by signal {sig}"),
        (None, None) => format!("{name} hook failed: {status}"),
    };
    if let Some(line) = tail
        .as_deref()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
    {
        message.push_str(": ");
        message.push_str(line.trim());
    }
    Err(HookFailure {
        message,
        exit_code: status.code(),
        stderr_tail: tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_variable_names() {
        let table = [
            ("name", "CASCADE_INPUT_NAME"),
            ("file-path", "CASCADE_INPUT_FILE_PATH"),
            ("a.b c", "CASCADE_INPUT_A_B_C"),
            ("x9", "CASCADE_INPUT_X9"),
            ("été", "CASCADE_INPUT__T_"),
        ];
        for (name, var) in table {
            assert_eq!(input_var(name), var, "{name}");
        }
    }

    #[test]
    fn outputs_from_stdout() {
        let table = [
            ("{\"a\": 1}\n", json!({"a": 1})),
            ("  {\"a\": 1}  ", json!({"a": 1})),
            ("hello\n", json!({"stdout": "hello", "exit_code": 0})),
            ("two\n\n", json!({"stdout": "two\n", "exit_code": 0})),
            ("[1, 2]\n", json!({"stdout": "[1, 2]", "exit_code": 0})),
            ("", json!({"stdout": "", "exit_code": 0})),
        ];
        for (stdout, want) in table {
            assert_eq!(outputs(stdout.as_bytes()), want, "{stdout:?}");
        }
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let many: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes()).expect("non-empty");
        assert_eq!(tail.lines().count(), STDERR_TAIL_LINES);
        assert!(tail.ends_with("line 50"));
        assert_eq!(stderr_tail(b"\n \n"), None);
    }

    #[tokio::test]
    async fn read_tail_is_bounded() {
        let big: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("l{i}\n").into_bytes())
            .collect();
        let tail = read_tail(Some(&big[..])).await;
        assert!(tail.len() <= STDERR_TAIL_BYTES);
        assert!(tail.starts_with(b"l"), "starts at a line boundary");
        assert!(tail.ends_with(b"l9999\n"));
    }
}
