//! Running one shell command inside the sandbox.
//!
//! ```text
//!  Bwrap:      helper [cgroup, rlimits] ─spawn─► bwrap --unshare-all ... ─► sh -c CMD
//!  Landlock:   helper [cgroup, rlimits, landlock] ─spawn─► sh -c CMD
//!  Subprocess: helper [cgroup, rlimits] ─spawn─► sh -c CMD        (mode off: sh -c CMD)
//! ```
//!
//! The helper supervises (`--supervise`): it kills the command and its descendants when
//! the worker dies, even by SIGKILL.
//!
//! The child leads its own process group. When it exits, times out, is cancelled or the
//! future is dropped, the group and the pids cgroup are killed (bwrap's pid namespace
//! dies with it: `--die-with-parent`), so nothing a test started outlives the run.
//! stdout and stderr are read into one bounded buffer in arrival order.
//!
//! The sandbox root (the jail's only writable place) holds:
//!
//! ```text
//!  <root>/work     the copy of the project (commands run here)
//!  <root>/tmp      TMPDIR on every backend (the host's /tmp stays read-only)
//!  <root>/target   CARGO_TARGET_DIR
//!  <root>/cache    XDG_CACHE_HOME, GOCACHE, npm's cache
//!  <root>/cascade  files for the fixer (the request as JSON)
//! ```

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use cascade_proto::{Failure, FailureKind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

use super::backend::{self, Backend};
use super::cgroup::PidsCgroup;
use super::config::Limits;
use super::helper::{HELPER_ERROR_CODE, HELPER_ERROR_PREFIX, HELPER_MARKER, HelperArgs};

/// Output kept from the start of a command (the rest is kept from its end).
const HEAD_BYTES: usize = 1024 * 1024;
/// Output kept from the end of a command.
const TAIL_BYTES: usize = 4 * 1024 * 1024;
/// Environment variables whose names contain one of these are not passed to sandboxed
/// commands: tests and fixers are untrusted code, the worker's credentials stay outside.
const SECRET_MARKERS: [&str; 7] = [
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "CREDENTIAL",
    "NATS_",
    "AUTH",
];

/// How commands are isolated: one per loop, shared by the tests and the command fixer.
#[derive(Clone, Debug)]
pub struct Jail {
    pub backend: Backend,
    /// `false` for mode `off`: no helper, no limits.
    pub use_helper: bool,
    /// The program that handles [`HELPER_MARKER`] (the worker binary).
    pub helper: PathBuf,
    pub limits: Limits,
    pub network: bool,
    /// The one writable directory tree.
    pub root: PathBuf,
}

/// How one command ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// stdout and stderr interleaved (cut in the middle when very long).
    pub output: String,
    pub timed_out: bool,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// `exited with code 1`, `was killed by SIGKILL`, `timed out`.
    pub fn describe(&self) -> String {
        if self.timed_out {
            return "timed out".into();
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => {
                let name = Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.to_string());
                format!("was killed by {name}")
            }
            (None, None) => "ended without a status".into(),
        }
    }
}

impl Jail {
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Creates the sandbox layout below `root` (except `work`).
    pub fn prepare_dirs(&self) -> std::io::Result<()> {
        for dir in ["tmp", "target", "cache", "cascade"] {
            std::fs::create_dir_all(self.root.join(dir))?;
        }
        Ok(())
    }

    /// Runs `sh -c command` in `cwd` (inside the root) with `stdin` fed and closed.
    pub async fn run(
        &self,
        cwd: &Path,
        command: &str,
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, Failure> {
        let cgroup = if self.use_helper {
            self.limits.processes.and_then(PidsCgroup::create)
        } else {
            None
        };
        let mut cmd = self.command(cwd, command, cgroup.as_ref().map(PidsCgroup::path));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            Failure::terminal(format!("sandbox: cannot start `{program}`: {e}"))
        })?;
        let mut guard = GroupGuard {
            group: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
            cgroup,
        };
        let mut capture = Capture::default();
        let mut status: Option<std::io::Result<ExitStatus>> = None;
        let stopped = {
            let work = run_child(&mut child, stdin, &mut capture, &mut status, &guard);
            tokio::pin!(work);
            tokio::select! {
                () = &mut work => None,
                () = tokio::time::sleep(timeout) => Some(FailureKind::Timeout),
                () = cancel.cancelled() => Some(FailureKind::Cancelled),
            }
        };
        // Whether the command itself had ended when the limit hit: then only a straggler
        // outside the group held its output open, and the command did not time out.
        let ended_first = status.is_some();
        guard.kill();
        if status.is_none() {
            status = Some(child.wait().await);
        }
        if let Some(cgroup) = guard.cgroup.take() {
            cgroup.remove().await;
        }
        drop(guard);
        if stopped == Some(FailureKind::Cancelled) && !ended_first {
            return Err(Failure::new(
                FailureKind::Cancelled,
                "cancelled while a sandboxed command ran",
            ));
        }
        let status = match status {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(Failure::retryable(format!(
                    "sandbox: cannot wait for the command: {e}"
                )));
            }
            None => return Err(Failure::retryable("sandbox: the command's status was lost")),
        };
        let output = capture.into_string();
        let timed_out = stopped == Some(FailureKind::Timeout) && !ended_first;
        let result = CommandOutput {
            exit_code: status.code(),
            signal: status.signal(),
            output,
            timed_out,
        };
        if self.use_helper
            && result.exit_code == Some(HELPER_ERROR_CODE)
            && let Some(line) = result
                .output
                .lines()
                .find(|l| l.starts_with(HELPER_ERROR_PREFIX))
        {
            let why = line.trim_start_matches(HELPER_ERROR_PREFIX).trim();
            return Err(Failure::terminal(format!("sandbox setup failed: {why}")));
        }
        Ok(result)
    }

    fn command(&self, cwd: &Path, command: &str, cgroup: Option<&Path>) -> Command {
        let shell: Vec<OsString> = vec!["sh".into(), "-c".into(), command.into(), "sandbox".into()];
        let mut cmd = if self.use_helper {
            let argv = match self.backend {
                Backend::Bwrap => self.bwrap_argv(cwd, shell),
                Backend::Landlock | Backend::Subprocess => shell,
            };
            let args = HelperArgs {
                file_size: self.limits.file_size,
                processes: self.limits.processes.map(u64::from),
                memory: self.limits.memory,
                cpu_seconds: self.limits.cpu_seconds,
                cgroup: cgroup.map(Path::to_path_buf),
                landlock: self.backend == Backend::Landlock,
                writable: vec![self.root.clone()],
                deny_net: !self.network && backend::landlock_denies_network(),
                // Dies with the worker, whichever thread started it.
                supervise: Some(std::process::id()),
                argv,
            };
            let mut c = Command::new(&self.helper);
            c.arg(HELPER_MARKER).args(args.to_args());
            c
        } else {
            let mut c = Command::new("sh");
            c.args(&shell[1..]);
            c
        };
        cmd.current_dir(cwd);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_secret) {
                cmd.env_remove(key);
            }
        }
        // The sandbox's own tmp on every backend: the host's /tmp stays
        // visible read-only (a project or a fix script may live there).
        let tmp = self.root.join("tmp");
        let cache = self.root.join("cache");
        cmd.env("TMPDIR", tmp)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .env("CARGO_TERM_COLOR", "never")
            .env("RUST_BACKTRACE", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("NO_COLOR", "1")
            .env("XDG_CACHE_HOME", &cache)
            .env("GOCACHE", cache.join("go"))
            .env("npm_config_cache", cache.join("npm"))
            .env(
                "CASCADE_SANDBOX",
                if self.use_helper {
                    self.backend.as_str()
                } else {
                    "off"
                },
            );
        cmd
    }

    fn bwrap_argv(&self, cwd: &Path, shell: Vec<OsString>) -> Vec<OsString> {
        let root: OsString = self.root.clone().into();
        let mut argv: Vec<OsString> = ["bwrap", "--unshare-all"].map(OsString::from).to_vec();
        if self.network {
            argv.push("--share-net".into());
        }
        argv.extend(
            ["--die-with-parent", "--new-session", "--cap-drop", "ALL"].map(OsString::from),
        );
        argv.extend(backend::BWRAP_SYSTEM_MOUNTS.map(OsString::from));
        argv.push("--bind".into());
        argv.push(root.clone());
        argv.push(root);
        argv.push("--chdir".into());
        argv.push(cwd.into());
        argv.push("--".into());
        argv.extend(shell);
        argv
    }
}

fn is_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// Feeds stdin, reads both pipes, waits; kills the group as soon as the child exits so a
/// straggler holding a pipe cannot keep the run open.
async fn run_child(
    child: &mut Child,
    stdin: Option<Vec<u8>>,
    capture: &mut Capture,
    status: &mut Option<std::io::Result<ExitStatus>>,
    guard: &GroupGuard,
) {
    let input = child.stdin.take();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let wait = async {
        let s = child.wait().await;
        *status = Some(s);
        guard.kill();
    };
    tokio::join!(feed(input, stdin), pump(out, err, capture), wait);
}

async fn feed(stdin: Option<ChildStdin>, data: Option<Vec<u8>>) {
    if let (Some(mut pipe), Some(data)) = (stdin, data)
        && let Err(e) = pipe.write_all(&data).await
    {
        tracing::trace!("sandboxed command did not read all of stdin: {e}");
    }
}

async fn pump(
    mut out: Option<impl AsyncRead + Unpin>,
    mut err: Option<impl AsyncRead + Unpin>,
    capture: &mut Capture,
) {
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    while out.is_some() || err.is_some() {
        let (which, read) = tokio::select! {
            r = read_some(&mut out, &mut a) => (0, r),
            r = read_some(&mut err, &mut b) => (1, r),
        };
        match read {
            Ok(n) if n > 0 => capture.push(if which == 0 { &a[..n] } else { &b[..n] }),
            _ if which == 0 => out = None,
            _ => err = None,
        }
    }
}

async fn read_some(
    pipe: &mut Option<impl AsyncRead + Unpin>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Kills the command's process group and cgroup; also on drop (a dropped run future).
struct GroupGuard {
    group: Option<Pid>,
    cgroup: Option<PidsCgroup>,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.group {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(
                    pgid = pgid.as_raw(),
                    "cannot kill the sandbox's process group: {e}"
                ),
            }
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first [`HEAD_BYTES`] and the last [`TAIL_BYTES`] of a stream.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    tail: Vec<u8>,
    cut: u64,
}

impl Capture {
    fn push(&mut self, mut data: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let n = (HEAD_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * TAIL_BYTES {
            let drop = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..drop);
            self.cut += u64::try_from(drop).unwrap_or(u64::MAX);
        }
    }

    fn into_string(mut self) -> String {
        if self.tail.len() > TAIL_BYTES {
            let drop = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..drop);
            self.cut += u64::try_from(drop).unwrap_or(u64::MAX);
        }
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if self.cut > 0 {
            text.push_str(&format!("\n[... {} bytes of output cut ...]\n", self.cut));
        }
        text.push_str(&String::from_utf8_lossy(&self.tail));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = Capture::default();
        c.push(b"start\n");
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..12 {
            c.push(&chunk);
        }
        c.push(b"\nend\n");
        let text = c.into_string();
        assert!(text.starts_with("start\n"));
        assert!(text.ends_with("\nend\n"));
        assert!(text.contains("bytes of output cut"));
        assert!(text.len() <= HEAD_BYTES + TAIL_BYTES + 100);
    }

    #[test]
    fn secrets_stay_outside() {
        for name in [
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "NATS_URL",
            "aws_secret_access_key",
            "CASCADE_NATS_CREDS",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "CARGO_HOME", "LANG"] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[tokio::test]
    async fn plain_commands_time_out_and_keep_output() {
        let root = tempfile::tempdir().expect("tempdir");
        let jail = Jail {
            backend: Backend::Subprocess,
            use_helper: false,
            helper: PathBuf::new(),
            limits: Limits::default(),
            network: true,
            root: root.path().to_path_buf(),
        };
        jail.prepare_dirs().expect("dirs");
        let cancel = CancellationToken::new();
        let out = jail
            .run(
                root.path(),
                "echo out; echo err >&2; exit 3",
                &[],
                None,
                Duration::from_secs(60),
                &cancel,
            )
            .await
            .expect("runs");
        assert_eq!(out.exit_code, Some(3));
        assert!(
            out.output.contains("out\n") && out.output.contains("err\n"),
            "{:?}",
            out.output
        );

        let out = jail
            .run(
                root.path(),
                "cat",
                &[],
                Some(b"fed".to_vec()),
                Duration::from_secs(60),
                &cancel,
            )
            .await
            .expect("runs");
        assert_eq!(out.output, "fed");

        // The command never ends by itself: only the limit stops it.
        let out = jail
            .run(
                root.path(),
                "echo started; sleep 600",
                &[],
                None,
                Duration::from_millis(300),
                &cancel,
            )
            .await
            .expect("runs");
        assert!(out.timed_out, "{out:?}");
        assert!(out.output.contains("started"));
    }
}
