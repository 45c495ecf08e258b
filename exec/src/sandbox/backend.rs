//! Which isolation this machine offers, probed once per process.
//!
//! ```text
//!  mode        bwrap works   landlock works   ->  backend
//!  off         -             -                    Subprocess (plain, no helper)
//!  best-effort yes           -                    Bwrap
//!  best-effort no            yes                  Landlock
//!  best-effort no            no                   Subprocess + a loud warning
//!  required    yes / no      - / yes              Bwrap / Landlock
//!  required    no            no                   refused (terminal failure)
//! ```
//!
//! bwrap is probed by running `bwrap --unshare-all --die-with-parent --ro-bind / / --dev
//! /dev --proc /proc true` (it fails in most default Kubernetes pods, where user
//! namespaces are off); landlock by creating (not enforcing) a ruleset.

use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};

use landlock::{ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr};
use serde::{Deserialize, Serialize};

use super::cgroup;

/// How sandboxed commands are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// bubblewrap: read-only root, private /tmp, no network, own pid namespace.
    Bwrap,
    /// Landlock: writes only below the sandbox, TCP denied (ABI 4+), plus rlimits.
    Landlock,
    /// A plain child process (rlimits only, unless the mode is `off`).
    Subprocess,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bwrap => "bwrap",
            Self::Landlock => "landlock",
            Self::Subprocess => "subprocess",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "bwrap" | "bubblewrap" => Some(Self::Bwrap),
            "landlock" => Some(Self::Landlock),
            "subprocess" | "none" | "plain" => Some(Self::Subprocess),
            _ => None,
        }
    }
}

/// What the task asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Refuse to run without bwrap or landlock.
    Required,
    /// The best available backend; a plain subprocess with a warning when none is.
    #[default]
    BestEffort,
    /// No isolation at all.
    Off,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::BestEffort => "best-effort",
            Self::Off => "off",
        }
    }
}

/// Why one isolation backend does not work on this machine.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`bwrap` is not installed")]
    BwrapMissing,
    #[error("cannot run `bwrap`: {0}")]
    BwrapUnrunnable(#[source] Arc<std::io::Error>),
    #[error("`bwrap` probe failed ({status}): {stderr}")]
    BwrapFailed { status: ExitStatus, stderr: String },
    #[error("not supported by this kernel: {0}")]
    LandlockUnsupported(#[source] Arc<landlock::RulesetError>),
}

/// Why a loop cannot have the isolation it asks for.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "sandbox `required` but no isolation is available: bubblewrap: {bwrap}; landlock: {landlock}"
    )]
    NoIsolation {
        bwrap: ProbeError,
        landlock: ProbeError,
    },
    #[error("sandbox `required` but backend `subprocess` isolates nothing")]
    SubprocessRequired,
    #[error("bubblewrap: {0}")]
    Bwrap(#[source] ProbeError),
    #[error("landlock: {0}")]
    Landlock(#[source] ProbeError),
}

#[derive(Debug)]
struct Probe {
    bwrap: Result<(), ProbeError>,
    landlock: Result<(), ProbeError>,
    landlock_net: bool,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

fn probed() -> &'static Probe {
    PROBE.get_or_init(|| Probe {
        bwrap: probe_bwrap(),
        landlock: probe_landlock(),
        landlock_net: probe_landlock_net(),
    })
}

/// The backend `mode` gets on this machine, or why `required` cannot be met.
pub fn probe(mode: SandboxMode) -> Result<Backend, BackendError> {
    if mode == SandboxMode::Off {
        return Ok(Backend::Subprocess);
    }
    let p = probed();
    match (&p.bwrap, &p.landlock) {
        (Ok(()), _) => Ok(Backend::Bwrap),
        (Err(_), Ok(())) => Ok(Backend::Landlock),
        (Err(b), Err(l)) if mode == SandboxMode::Required => Err(BackendError::NoIsolation {
            bwrap: b.clone(),
            landlock: l.clone(),
        }),
        (Err(_), Err(_)) => Ok(Backend::Subprocess),
    }
}

/// Whether `backend` works here (an explicit choice skips the preference order).
pub fn check(backend: Backend) -> Result<(), BackendError> {
    let p = probed();
    match backend {
        Backend::Bwrap => p.bwrap.clone().map_err(BackendError::Bwrap),
        Backend::Landlock => p.landlock.clone().map_err(BackendError::Landlock),
        Backend::Subprocess => Ok(()),
    }
}

/// Whether landlock can deny TCP here (ABI 4+).
pub fn landlock_denies_network() -> bool {
    probed().landlock_net
}

/// The worker's advertised capability: `sandbox:bwrap`, `sandbox:landlock` or
/// `sandbox:none`.
pub fn capability() -> String {
    match probe(SandboxMode::BestEffort) {
        Ok(Backend::Subprocess) | Err(_) => "sandbox:none".to_owned(),
        Ok(b) => format!("sandbox:{}", b.as_str()),
    }
}

/// Whether a fork bomb is held to the process limit here: by a pids cgroup, or by
/// `RLIMIT_NPROC` for a user other than root (the kernel never applies it to root).
pub fn process_limit_enforced() -> bool {
    cgroup::available() || !is_root()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The system every bwrap jail sees: `/` read-only, its own `/dev` and `/proc`. The
/// probe mounts the same, so a backend that passes it can run the jail.
pub(crate) const BWRAP_SYSTEM_MOUNTS: [&str; 7] =
    ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];

fn probe_bwrap() -> Result<(), ProbeError> {
    let out = Command::new("bwrap")
        .args(["--unshare-all", "--die-with-parent"])
        .args(BWRAP_SYSTEM_MOUNTS)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProbeError::BwrapMissing,
            _ => ProbeError::BwrapUnrunnable(Arc::new(e)),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(ProbeError::BwrapFailed {
        status: out.status,
        stderr: stderr.trim().to_owned(),
    })
}

fn probe_landlock() -> Result<(), ProbeError> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .map(drop)
        .map_err(|e| ProbeError::LandlockUnsupported(Arc::new(e)))
}

fn probe_landlock_net() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessNet::from_all(ABI::V4))
        .and_then(|r| r.create())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_needs_no_probe_and_required_never_falls_back() {
        assert!(matches!(probe(SandboxMode::Off), Ok(Backend::Subprocess)));
        match probe(SandboxMode::Required) {
            Ok(b) => assert_ne!(b, Backend::Subprocess),
            Err(e) => assert!(e.to_string().contains("no isolation"), "{e}"),
        }
        let cap = capability();
        assert!(cap.starts_with("sandbox:"), "{cap}");
    }
}
