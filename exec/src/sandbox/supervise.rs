//! The helper's supervising mode: a command that dies with the process that started it.
//!
//! A skill's process outlived a worker killed with SIGKILL (it was re-parented to pid 1
//! and finished its side effects beside the redelivered attempt). So the executor starts
//! commands through the helper (`__cascade-sandbox-exec --supervise <parent pid> -- argv`),
//! which, instead of `exec`ing, stays between the worker and the command:
//!
//! ```text
//!  worker ──spawn──► helper (own process group, child subreaper, PDEATHSIG = SIGUSR1)
//!                       └─spawn──► helper ─exec─► argv (same group) ──fork──► grandchildren
//!
//!  argv exits              ─► kill what is left of the group and every re-parented orphan,
//!                              then exit with argv's status (a signal is raised again)
//!  parent dies (SIGUSR1)   ─► the same kill, then exit
//!  SIGTERM / SIGINT / HUP  ─► the same kill, then exit
//!  SIGKILL of the group    ─► (the executor's timeout and cancel) everything in it dies
//! ```
//!
//! The parent-death signal fires when the *thread* that spawned the helper exits, not
//! only when the process does (a tokio blocking-pool thread exits when idle). The helper
//! then finds its parent unchanged (`getppid()`: the child is re-parented to another
//! thread of the same process) and keeps going; only a changed parent counts as death. A
//! parent that died before the signal was armed is caught by the same check, made after
//! arming it.
//!
//! Descendants are found in `/proc`: members of the helper's process group and the
//! helper's own children (as a subreaper it inherits every orphaned descendant, even one
//! that left the group with `setsid`). Each round kills those, reaps, and looks again until
//! nothing is left.

use std::ffi::OsString;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill, raise};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid, setpgid};

use super::protocol::{HELPER_ERROR_CODE, HELPER_ERROR_PREFIX, HELPER_MARKER};

/// The parent-death signal: caught (through `sigwait`), so the helper can clean up.
const PARENT_DEATH: Signal = Signal::SIGUSR1;
/// Rounds of kill-and-look before the helper gives up on a process that keeps forking
/// (a pids cgroup, when the sandbox has one, bounds that anyway).
const TEARDOWN_ROUNDS: u32 = 200;

/// Runs `argv` as a child and supervises it (see the module docs); returns the exit code
/// to exit with (or does not return: a command killed by a signal is mirrored).
pub(super) fn supervise(parent: u32, argv: &[OsString]) -> i32 {
    let Some(program) = argv.first() else {
        return fail("no command");
    };
    let me = getpid();
    // Lead our own group (the executor already made us a leader: then this is a no-op),
    // so the group we clean up is never the worker's.
    if getpgrp() != me && setpgid(me, me).is_err() {
        return fail("cannot lead a process group");
    }
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        PARENT_DEATH,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    // Blocked, then taken with sigwait: no handler, no `unsafe`.
    if let Err(e) = signals.thread_block() {
        return fail(&format!("cannot block signals: {e}"));
    }
    if let Err(e) = prctl::set_child_subreaper(true) {
        return fail(&format!("cannot become a child subreaper: {e}"));
    }
    if let Err(e) = prctl::set_pdeathsig(PARENT_DEATH) {
        return fail(&format!("cannot set the parent-death signal: {e}"));
    }
    if parent_gone(parent) {
        return fail("the process that started the command has exited");
    }
    // The child inherits our blocked signals, and only a `pre_exec` (`unsafe`) could
    // clear them between fork and exec: so the child is this binary once more, as the
    // plain helper, which clears the mask and `exec`s argv (or reports why it cannot).
    let child = match std::process::Command::new("/proc/self/exe")
        .arg(HELPER_MARKER)
        .arg("--")
        .args(argv)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start {program:?}: {e}")),
    };
    let child_pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // The std handle is not used to wait (waitpid(-1) below reaps everything).
    drop(child);
    loop {
        let signal = match signals.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        match signal {
            Signal::SIGCHLD => {
                if let Some(status) = reap(child_pid) {
                    teardown(me);
                    return mirror(status);
                }
            }
            s if s == PARENT_DEATH => {
                if parent_gone(parent) {
                    teardown(me);
                    return 128 + Signal::SIGKILL as i32;
                }
            }
            other => {
                teardown(me);
                return 128 + other as i32;
            }
        }
    }
}

fn fail(message: &str) -> i32 {
    eprintln!("{HELPER_ERROR_PREFIX} {message}");
    HELPER_ERROR_CODE
}

/// Whether the process that started us is gone (we were re-parented elsewhere).
fn parent_gone(parent: u32) -> bool {
    u32::try_from(getppid().as_raw()).ok() != Some(parent)
}

/// Reaps every child that has ended; the status of `child` when it was one of them.
fn reap(child: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(child) {
                    found = Some(status);
                }
            }
        }
    }
}

/// Kills every descendant (our group and our children, repeatedly) and reaps them.
fn teardown(me: Pid) {
    for _ in 0..TEARDOWN_ROUNDS {
        let victims = descendants(me);
        if victims.is_empty() {
            let _ = reap(me);
            return;
        }
        for (pid, _) in &victims {
            match kill(*pid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => eprintln!("{HELPER_ERROR_PREFIX} cannot kill {pid}: {e}"),
            }
        }
        // Our own children we can wait for (SIGKILL: promptly). Never a wait for any
        // child: an orphan re-parented to us after the scan is alive and would block it.
        let mut others = false;
        for (pid, ours) in &victims {
            if *ours {
                let _ = waitpid(*pid, None);
            } else {
                others = true;
            }
        }
        if others {
            // Another process's child dies when the kernel gets to it; look again soon.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    eprintln!("{HELPER_ERROR_PREFIX} processes kept appearing; gave up killing them");
}

/// Live processes (not zombies) in our process group or whose parent we are, each with
/// whether it is our child.
fn descendants(me: Pid) -> Vec<(Pid, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me.as_raw())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let s = parse_stat(&stat)?;
            let ours = s.ppid == me.as_raw();
            (!matches!(s.state, 'Z' | 'X') && (ours || s.pgrp == me.as_raw()))
                .then_some((Pid::from_raw(pid), ours))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    ppid: i32,
    pgrp: i32,
}

/// `pid (comm) state ppid pgrp ...`; `comm` may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgrp })
}

/// Our exit code for the command's status; a command killed by a signal is mirrored by
/// raising that signal (when it is not one we block or ignore, `128 + n` is returned).
fn mirror(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => {
            let mut own = SigSet::empty();
            own.add(signal);
            let _ = own.thread_unblock();
            let _ = raise(signal);
            128 + signal as i32
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("42 (sh) S 7 42 7 0 -1"),
            Some(Stat {
                state: 'S',
                ppid: 7,
                pgrp: 42
            })
        );
        assert_eq!(
            parse_stat("43 (a) b) (c) Z 1 9 9"),
            Some(Stat {
                state: 'Z',
                ppid: 1,
                pgrp: 9
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }
}
