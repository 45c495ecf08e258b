//! A pids cgroup per sandboxed command, when this process may create one.
//!
//! `RLIMIT_NPROC` does not hold root back (the kernel exempts the root user even inside a
//! user namespace), so a fork bomb run by a root worker would fill the machine's pid table
//! until the test timeout. When the pids controller is writable (root on cgroup v1, or a
//! delegated cgroup v2 subtree), every command gets its own cgroup with `pids.max`: the
//! helper joins it before `exec`, and the runner kills whatever is left in it when the
//! command ends. Directories are named `cascade-sandbox-<worker pid>-<n>`; ones left by
//! dead workers are removed when the hierarchy is first looked up.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PREFIX: &str = "cascade-sandbox-";
/// Kill rounds before giving up on a cgroup that keeps forking (each round kills every
/// member; `pids.max` bounds how many can be born in between).
const KILL_ROUNDS: usize = 64;

/// How often and how patiently a cgroup whose killed members are not reaped yet is
/// removed again.
const REMOVE_ATTEMPTS: usize = 100;
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One command's cgroup. Dropping it kills its members and removes it.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
}

/// Whether commands can be confined to a pids cgroup here.
pub fn available() -> bool {
    base().is_some()
}

fn base() -> Option<&'static Path> {
    BASE.get_or_init(|| {
        let base = find_base()?;
        sweep(&base);
        Some(base)
    })
    .as_deref()
}

impl PidsCgroup {
    /// A new cgroup holding at most `max` tasks, or `None` when that is not possible here.
    pub fn create(max: u32) -> Option<Self> {
        let base = base()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{PREFIX}{}-{n}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            tracing::debug!(dir = %dir.display(), "cannot create pids cgroup: {e}");
            return None;
        }
        let cgroup = PidsCgroup { dir };
        match std::fs::write(cgroup.dir.join("pids.max"), max.to_string()) {
            Ok(()) => Some(cgroup),
            Err(e) => {
                tracing::debug!(dir = %cgroup.dir.display(), "cannot set pids.max: {e}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs every member until none is left (or [`KILL_ROUNDS`] passed).
    pub fn kill_all(&self) {
        kill_members(&self.dir);
    }

    /// Kills what is left and removes the cgroup, giving killed members a moment to be
    /// reaped (a busy cgroup stays until the next worker's sweep).
    pub async fn remove(self) {
        for _ in 0..REMOVE_ATTEMPTS {
            kill_members(&self.dir);
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                    tokio::time::sleep(REMOVE_PAUSE).await;
                }
                Err(_) => return,
            }
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        kill_members(&self.dir);
        // Killed members may take a moment to be reaped; a directory still busy now is
        // removed by the next worker's sweep.
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::debug!(dir = %self.dir.display(), "pids cgroup not removed yet: {e}");
            }
            _ => {}
        }
    }
}

fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether a process has exited and only waits to be reaped (a zombie
/// stays listed in its cgroup until then).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

fn kill_members(dir: &Path) {
    for round in 0..KILL_ROUNDS {
        let pids: Vec<i32> = members(dir)
            .into_iter()
            .filter(|&p| !is_zombie(p))
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // SIGKILL is delivered asynchronously: give the kernel a moment
        // (at most KILL_ROUNDS ms in all) before looking again.
        if round > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    tracing::warn!(dir = %dir.display(), "processes still alive in the sandbox cgroup after {KILL_ROUNDS} kill rounds");
}

/// Removes empty cgroups left by workers that are gone.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        let alive =
            Path::new("/proc").join(owner).exists() && owner != std::process::id().to_string();
        if !alive {
            kill_members(&entry.path());
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The directory of this process's pids cgroup in a hierarchy where it may create
/// children, if any.
fn find_base() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split_whitespace().collect();
        let theirs: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(mount), Some(fstype)) =
            (fields.get(3), fields.get(4), theirs.first())
        else {
            continue;
        };
        let path = match *fstype {
            "cgroup"
                if theirs
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|x| x == "pids")) =>
            {
                own_path(&own, |c| c.split(',').any(|x| x == "pids"))
            }
            "cgroup2" if cgroup2_has_pids(Path::new(mount)) => own_path(&own, str::is_empty),
            _ => None,
        };
        let Some(path) = path else { continue };
        let relative = Path::new(&path).strip_prefix(root).ok()?.to_path_buf();
        let dir = Path::new(mount).join(relative);
        if probe_dir(&dir) {
            return Some(dir);
        }
    }
    None
}

fn cgroup2_has_pids(mount: &Path) -> bool {
    std::fs::read_to_string(mount.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"))
}

/// This process's path in the hierarchy whose controller list matches.
fn own_path(own: &str, controllers: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let list = parts.next()?;
        let path = parts.next()?;
        controllers(list).then(|| path.to_owned())
    })
}

/// Whether a child cgroup with a working `pids.max` can be made in `dir`.
fn probe_dir(dir: &Path) -> bool {
    let probe = dir.join(format!("{PREFIX}{}-probe", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let ok = std::fs::write(probe.join("pids.max"), "1").is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}
