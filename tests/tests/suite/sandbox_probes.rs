//! What the sandbox holds back, probed on every backend this machine has (a backend
//! whose probe fails is skipped with the reason printed): network access, writes outside
//! the sandbox, fork bombs, huge files. Each probe also runs a control that must work, so
//! a probe cannot pass by accident.

use std::path::Path;
use std::time::Duration;

use cascade_exec::sandbox::{self, Backend, Jail, Limits};
use tokio_util::sync::CancellationToken;

use crate::support;

const LIMIT: Duration = Duration::from_secs(120);

/// A jail rooted in a fresh directory (with its `work` dir).
fn jail(backend: Backend, root: &Path) -> Jail {
    let jail = Jail {
        backend,
        use_helper: true,
        helper: cascade_tests::binary("worker"),
        limits: Limits::default(),
        network: false,
        root: root.to_path_buf(),
    };
    jail.prepare_dirs().expect("sandbox dirs");
    std::fs::create_dir_all(jail.work_dir()).expect("work dir");
    jail
}

async fn sh(jail: &Jail, command: &str, timeout: Duration) -> sandbox::CommandOutput {
    jail.run(
        &jail.work_dir(),
        command,
        &[],
        None,
        timeout,
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|f| panic!("`{command}` could not run: {}", f.message))
}

#[tokio::test]
async fn network_is_off_unless_allowed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10); print('connected')\""
    );
    for backend in support::sandbox_backends() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut jail = jail(backend, root.path());
        let denied = sh(&jail, &connect, LIMIT).await;
        assert!(
            !denied.success(),
            "{backend:?} let a test connect: {denied:?}"
        );
        assert!(!denied.output.contains("connected"));

        jail.network = true;
        let allowed = sh(&jail, &connect, LIMIT).await;
        assert!(
            allowed.success(),
            "{backend:?} with network allowed: {allowed:?}"
        );
    }
}

#[tokio::test]
async fn writes_stay_inside_the_sandbox() {
    let outside_tmp = tempfile::tempdir().expect("tempdir");
    let outside_target = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    for backend in support::sandbox_backends() {
        let root = tempfile::tempdir().expect("tempdir");
        let jail = jail(backend, root.path());
        for outside in [outside_tmp.path(), outside_target.path()] {
            let target = outside.join(format!("escaped-{}", backend.as_str()));
            let out = sh(&jail, &format!("echo x > '{}'", target.display()), LIMIT).await;
            assert!(
                !out.success(),
                "{backend:?} wrote {}: {out:?}",
                target.display()
            );
            assert!(!target.exists(), "{backend:?}: {} exists", target.display());
        }
        let out = sh(
            &jail,
            "echo inside > kept && mkdir -p d && echo t > \"$TMPDIR/t\" && echo done",
            LIMIT,
        )
        .await;
        assert!(out.success(), "{backend:?}: {out:?}");
        assert_eq!(
            std::fs::read_to_string(jail.work_dir().join("kept")).expect("written"),
            "inside\n"
        );
    }
}

#[tokio::test]
async fn huge_files_are_cut_at_the_limit() {
    const MB10: u64 = 10 * 1024 * 1024;
    for backend in support::sandbox_backends() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut jail = jail(backend, root.path());
        jail.limits.file_size = Some(MB10);
        let out = sh(
            &jail,
            "head -c 2G /dev/zero > big; echo \"head: $?\"",
            LIMIT,
        )
        .await;
        let size = std::fs::metadata(jail.work_dir().join("big"))
            .expect("big")
            .len();
        assert!(size <= MB10, "{backend:?}: {size} bytes written");
        assert!(size > 0, "the control: writing up to the limit works");
        assert!(
            !out.output.contains("head: 0"),
            "{backend:?}: head did not notice: {out:?}"
        );
    }
}

#[tokio::test]
async fn fork_bombs_are_contained() {
    if !sandbox::process_limit_enforced() {
        eprintln!(
            "skipping: running as root without a writable pids cgroup, so nothing would hold \
             a fork bomb back (RLIMIT_NPROC does not apply to root)"
        );
        return;
    }
    for backend in support::sandbox_backends() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut jail = jail(backend, root.path());
        jail.limits.processes = Some(64);
        // The bomb forks until the process limit; `sleep` keeps the command going until
        // the test timeout kills the whole tree.
        let out = sh(
            &jail,
            "bash -c ':(){ :|:& };:; sleep 600'",
            Duration::from_secs(5),
        )
        .await;
        assert!(out.timed_out, "{backend:?}: {out:?}");
        let after = std::process::Command::new("sh")
            .args(["-c", "echo alive"])
            .output()
            .expect("the machine still forks");
        assert_eq!(String::from_utf8_lossy(&after.stdout), "alive\n");
    }
}

#[tokio::test]
async fn timeouts_kill_the_whole_tree() {
    for backend in support::sandbox_backends() {
        let root = tempfile::tempdir().expect("tempdir");
        let jail = jail(backend, root.path());
        // A background grandchild holds a lock on `held`; the command says `locked` once it
        // does, then sleeps past its limit. Killing the tree must release the lock.
        let command = "flock -x held sleep 600 & while flock -n held true; do :; done; echo locked; sleep 600";
        let out = sh(&jail, command, Duration::from_secs(5)).await;
        assert!(out.timed_out, "{backend:?}: {out:?}");
        assert!(
            out.output.contains("locked"),
            "{backend:?}: the grandchild never took the lock: {out:?}"
        );
        let held = std::fs::File::open(jail.work_dir().join("held")).expect("lock file");
        cascade_tests::await_condition("the grandchild to be gone", LIMIT, || held.try_lock().ok());
    }
}
