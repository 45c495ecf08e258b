//! The re-exec helper: how limits and landlock reach a sandboxed command without
//! `pre_exec` (the workspace forbids `unsafe`).
//!
//! The runner starts the worker's own binary as
//! `<helper> __cascade-sandbox-exec [options] -- <argv>`; the binary calls
//! [`exec_helper_main`] first thing in `main`, which applies, in this order,
//!
//! 1. `--cgroup DIR`: joins that pids cgroup (before anything else, so every process the
//!    command forks is counted against `pids.max`);
//! 2. the rlimits (`--fsize`, `--nproc`, `--as`, `--cpu`; core dumps off);
//! 3. `--landlock` with `--rw DIR`...: reads allowed everywhere, writes only below those
//!    directories (and to `/dev/null`-like devices), signals and abstract unix sockets
//!    scoped to the sandbox; `--deny-net` also denies TCP bind and connect;
//!
//! and then `exec`s `argv` (for the bwrap backend, argv is `bwrap ...`: landlock is never
//! combined with bwrap, which needs to mount). It never returns on success. With
//! `--supervise PID` it runs `argv` as its child instead and kills it, and everything it
//! started, when the process `PID` dies ([`super::supervise`]); [`supervised_command`]
//! builds such a command for skills and hooks. On a setup
//! error it prints one line starting with [`HELPER_ERROR_PREFIX`] and exits with
//! [`HELPER_ERROR_CODE`], which the runner reports as an infrastructure failure rather
//! than as a failing test.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};

use landlock::{
    ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};

pub use super::protocol::{HELPER_ERROR_CODE, HELPER_ERROR_PREFIX, HELPER_MARKER};
/// The landlock ABI whose rights we ask for; older kernels get what they support.
const LANDLOCK_ABI: ABI = ABI::V6;
/// Devices a sandboxed command may write to.
const WRITABLE_DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

/// What the helper applies before `exec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperArgs {
    pub file_size: Option<u64>,
    /// Processes on top of those the user already has.
    pub processes: Option<u64>,
    pub memory: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub cgroup: Option<PathBuf>,
    pub landlock: bool,
    pub writable: Vec<PathBuf>,
    pub deny_net: bool,
    /// Supervise `argv` on behalf of this process id instead of `exec`ing it.
    pub supervise: Option<u32>,
    pub argv: Vec<OsString>,
}

impl HelperArgs {
    /// The arguments after the marker.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut number = |flag: &str, value: Option<u64>| {
            if let Some(v) = value {
                args.push(flag.into());
                args.push(v.to_string().into());
            }
        };
        number("--fsize", self.file_size);
        number("--nproc", self.processes);
        number("--as", self.memory);
        number("--cpu", self.cpu_seconds);
        if let Some(dir) = &self.cgroup {
            args.push("--cgroup".into());
            args.push(dir.into());
        }
        if self.landlock {
            args.push("--landlock".into());
        }
        for dir in &self.writable {
            args.push("--rw".into());
            args.push(dir.into());
        }
        if self.deny_net {
            args.push("--deny-net".into());
        }
        if let Some(pid) = self.supervise {
            args.push("--supervise".into());
            args.push(pid.to_string().into());
        }
        args.push("--".into());
        args.extend(self.argv.iter().cloned());
        args
    }

    pub fn parse(args: &[OsString]) -> Result<Self, HelperArgsError> {
        let mut parsed = HelperArgs::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let flag = arg
                .to_str()
                .ok_or_else(|| HelperArgsError::NotUtf8(arg.clone()))?;
            let mut value = || {
                it.next()
                    .ok_or_else(|| HelperArgsError::NeedsValue(flag.to_owned()))
            };
            let mut number = || -> Result<u64, HelperArgsError> {
                let v = value()?;
                v.to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| HelperArgsError::NotANumber {
                        flag: flag.to_owned(),
                        value: v.clone(),
                    })
            };
            match flag {
                "--fsize" => parsed.file_size = Some(number()?),
                "--nproc" => parsed.processes = Some(number()?),
                "--as" => parsed.memory = Some(number()?),
                "--cpu" => parsed.cpu_seconds = Some(number()?),
                "--cgroup" => parsed.cgroup = Some(PathBuf::from(value()?)),
                "--landlock" => parsed.landlock = true,
                "--rw" => parsed.writable.push(PathBuf::from(value()?)),
                "--deny-net" => parsed.deny_net = true,
                "--supervise" => {
                    let pid = number()?;
                    parsed.supervise =
                        Some(u32::try_from(pid).map_err(|_| HelperArgsError::NotANumber {
                            flag: flag.to_owned(),
                            value: pid.to_string().into(),
                        })?);
                }
                "--" => {
                    parsed.argv = it.cloned().collect();
                    break;
                }
                other => return Err(HelperArgsError::UnknownOption(other.to_owned())),
            }
        }
        if parsed.argv.is_empty() {
            return Err(HelperArgsError::NoCommand);
        }
        Ok(parsed)
    }
}

/// Why the helper's own arguments do not parse (a bug of the caller: they are
/// built by [`HelperArgs::to_args`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelperArgsError {
    #[error("argument {0:?} is not UTF-8")]
    NotUtf8(OsString),
    #[error("`{0}` needs a value")]
    NeedsValue(String),
    #[error("`{flag}`: {value:?} is not a number")]
    NotANumber { flag: String, value: OsString },
    #[error("unknown option `{0}`")]
    UnknownOption(String),
    #[error("no command after `--`")]
    NoCommand,
}

/// Why the helper could not put the command under its limits.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot join cgroup {}: {source}", dir.display())]
    JoinCgroup {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setrlimit {resource:?}: {source}")]
    Rlimit {
        resource: Resource,
        #[source]
        source: nix::Error,
    },
    #[error("landlock: {0}")]
    Landlock(#[source] landlock::RulesetError),
    #[error("landlock: this kernel does not enforce the ruleset")]
    LandlockNotEnforced,
}

/// Why a binary cannot serve as the helper (checked before a loop starts).
#[derive(Clone, Debug, thiserror::Error)]
pub enum HelperCheckError {
    #[error(
        "the sandbox helper `{}` does not handle `{HELPER_MARKER}` ({status}); its `main` must call \
         `cascade_exec::sandbox::exec_helper_main()` first: {stderr}",
        helper.display()
    )]
    NoMarker {
        helper: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("cannot run the sandbox helper `{}`: {source}", helper.display())]
    Unrunnable {
        helper: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// Call first thing in `main`: `None` when this process is not the helper, otherwise the
/// exit code to exit with (the helper only returns when it could not `exec`).
///
/// ```ignore
/// if let Some(code) = cascade_exec::sandbox::exec_helper_main() { std::process::exit(code); }
/// ```
///
/// In a process that is not the helper it also records that this binary handles the
/// marker: from then on [`supervised_command`] runs commands through it.
pub fn exec_helper_main() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(HELPER_MARKER)) {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let _ = THIS_BINARY.set(exe);
        return None;
    }
    let rest: Vec<OsString> = args.collect();
    let parsed = match HelperArgs::parse(&rest) {
        Ok(p) => p,
        Err(e) => return Some(fail(&format!("bad arguments: {e}"))),
    };
    Some(match prepare(&parsed) {
        Ok(()) => match parsed.supervise {
            Some(parent) => super::supervise::supervise(parent, &parsed.argv),
            None => exec(&parsed.argv),
        },
        Err(e) => fail(&e.to_string()),
    })
}

/// This binary, once its `main` called [`exec_helper_main`] (so it handles the marker).
static THIS_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The binary that handles [`HELPER_MARKER`] in this process: set by
/// [`exec_helper_main`]; `None` in a program that never called it (a test binary).
pub fn helper_binary() -> Option<&'static Path> {
    THIS_BINARY.get().map(PathBuf::as_path)
}

/// `argv` under the supervising helper when this binary is one (the worker, the
/// coordinator), so the command and everything it starts die with this process even when
/// it is killed with SIGKILL; otherwise (a test binary) `argv` itself. Used for skills,
/// hooks and CLI agents; read a failed status with [`helper_failure`].
pub fn command_for(argv: &[OsString]) -> tokio::process::Command {
    if let Some(std) = supervised_command(argv) {
        return tokio::process::Command::from(std);
    }
    let mut c = tokio::process::Command::new(argv.first().map_or(OsStr::new("sh"), |p| p));
    c.args(argv.iter().skip(1));
    c
}

/// A supervised command's own setup failure (the helper's exit codes and its error line,
/// the last one with [`HELPER_ERROR_PREFIX`] in `stderr`), e.g. "program `x` not found":
/// what a direct spawn would have failed with.
pub fn helper_failure(status: ExitStatus, stderr: &[u8]) -> Option<String> {
    // 126 and 127: the command could not be `exec`ed (as a shell reports it).
    if !matches!(status.code(), Some(HELPER_ERROR_CODE | 126 | 127)) {
        return None;
    }
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(HELPER_ERROR_PREFIX))?;
    Some(line[HELPER_ERROR_PREFIX.len()..].trim().to_owned())
}

/// `argv` under a supervising helper that kills it, and every process it started, when
/// this process dies, even by SIGKILL (`None` when this binary is not a helper, see
/// [`helper_binary`]: then the caller runs `argv` directly, as before). The helper is
/// the child: put it in its own process group (`process_group(0)`) as for any command.
pub fn supervised_command(argv: &[OsString]) -> Option<std::process::Command> {
    let helper = helper_binary()?;
    let args = HelperArgs {
        supervise: Some(std::process::id()),
        argv: argv.to_vec(),
        ..HelperArgs::default()
    };
    let mut cmd = std::process::Command::new(helper);
    cmd.arg(HELPER_MARKER).args(args.to_args());
    Some(cmd)
}

fn fail(message: &str) -> i32 {
    eprintln!("{HELPER_ERROR_PREFIX} {message}");
    HELPER_ERROR_CODE
}

fn prepare(args: &HelperArgs) -> Result<(), HelperError> {
    if let Some(dir) = &args.cgroup {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).map_err(
            |source| HelperError::JoinCgroup {
                dir: dir.clone(),
                source,
            },
        )?;
    }
    set_limits(args)?;
    if args.landlock {
        apply_landlock(&args.writable, args.deny_net)?;
    }
    Ok(())
}

fn set_limits(args: &HelperArgs) -> Result<(), HelperError> {
    let set = |resource: Resource, soft: u64, hard: u64| {
        setrlimit(resource, soft, hard).map_err(|source| HelperError::Rlimit { resource, source })
    };
    set(Resource::RLIMIT_CORE, 0, 0)?;
    if let Some(bytes) = args.file_size {
        set(Resource::RLIMIT_FSIZE, bytes, bytes)?;
    }
    if let Some(extra) = args.processes {
        // RLIMIT_NPROC counts every process of the user, not just ours.
        let n = user_process_count().saturating_add(extra);
        set(Resource::RLIMIT_NPROC, n, n)?;
    }
    if let Some(bytes) = args.memory {
        set(Resource::RLIMIT_AS, bytes, bytes)?;
    }
    if let Some(secs) = args.cpu_seconds {
        // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        set(Resource::RLIMIT_CPU, secs, secs.saturating_add(1))?;
    }
    Ok(())
}

/// Processes owned by this process's user, from `/proc`.
pub fn user_process_count() -> u64 {
    let Ok(me) = std::fs::metadata("/proc/self") else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let count = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == me.uid()))
        .count();
    u64::try_from(count).unwrap_or(u64::MAX)
}

fn apply_landlock(writable: &[PathBuf], deny_net: bool) -> Result<(), HelperError> {
    let abi = LANDLOCK_ABI;
    let err = HelperError::Landlock;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if deny_net {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
    }
    let status = ruleset
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(writable, AccessFs::from_all(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            WRITABLE_DEVICES,
            AccessFs::from_file(abi),
        ))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(HelperError::LandlockNotEnforced);
    }
    Ok(())
}

/// Replaces this process with `argv`; returns an exit code only when that failed.
fn exec(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return fail("no command");
    };
    // A supervising helper starts us with its signals blocked (and a mask survives exec).
    if let Err(e) = nix::sys::signal::SigSet::empty().thread_set_mask() {
        return fail(&format!("cannot clear the signal mask: {e}"));
    }
    let err = std::process::Command::new(program).args(args).exec();
    let name = program.to_string_lossy();
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            eprintln!("{HELPER_ERROR_PREFIX} program `{name}` not found")
        }
        std::io::ErrorKind::PermissionDenied => {
            eprintln!("{HELPER_ERROR_PREFIX} permission denied running `{name}`");
        }
        _ => eprintln!("{HELPER_ERROR_PREFIX} cannot run `{name}`: {err}"),
    }
    match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let args = HelperArgs {
            file_size: Some(10 << 20),
            processes: Some(512),
            memory: None,
            cpu_seconds: Some(60),
            cgroup: Some("/sys/fs/cgroup/pids/x".into()),
            landlock: true,
            writable: vec!["/tmp/a".into(), "/tmp/b".into()],
            deny_net: true,
            supervise: Some(4242),
            argv: vec!["sh".into(), "-c".into(), "echo -- --fsize".into()],
        };
        assert_eq!(HelperArgs::parse(&args.to_args()), Ok(args));
    }

    #[test]
    fn bad_args() {
        let parse =
            |a: &[&str]| HelperArgs::parse(&a.iter().map(OsString::from).collect::<Vec<_>>());
        assert!(
            parse(&["--fsize", "x", "--", "true"])
                .expect_err("an error")
                .to_string()
                .contains("not a number")
        );
        assert!(
            parse(&["--what", "--", "true"])
                .expect_err("an error")
                .to_string()
                .contains("unknown option")
        );
        assert!(
            parse(&["--landlock", "--"])
                .expect_err("an error")
                .to_string()
                .contains("no command")
        );
    }

    #[test]
    fn counts_own_processes() {
        assert!(user_process_count() >= 1);
    }
}
