//! The phases of a stage and of a task, and the only two places either
//! changes: [`stage_transition`] and [`task_transition`], each one match
//! over `(from, to)`. A pair not listed is an [`IllegalTransition`]: the
//! engine refuses it, counts it and notes it (never a panic, never applied).
//!
//! A stage ([`StageStatus`]):
//! ```text
//!   Pending ──▶ Running ──▶ Success | Failed | Skipped | Cancelled
//!      │                              │
//!      ├──▶ Skipped | Cancelled       │   (a dependency did not succeed, a
//!      │                              │    branch was not taken, the run stopped)
//!      ◀──────────────────────────────┘   loop reset: a `repeat` body (and
//!                                          the running `repeat` stage itself)
//!                                          goes back with generation + 1
//! ```
//! A task ([`TaskPhase`]); `Failed` lasts only while the failure policy
//! chooses what comes next:
//! ```text
//!   Pending ──▶ InFlight ──▶ Done(outputs)
//!                 ▲  │ └──▶ GaveUp(error)            (over budget)
//!                 │  ▼
//!                 ├─ Failed ──▶ GaveUp(error)
//!   retry now,    │   ├──▶ BackingOff ──▶ InFlight   (retry timer)
//!   switch model, │   └──▶ Fixing ─────▶ InFlight    (fix loop green)
//!   fallback ─────┘
//!   Pending | InFlight | Failed | BackingOff | Fixing ──▶ Cancelled
//! ```

use cascade_proto::TaskId;
use serde_json::Value;

use super::types::{IllegalTransition, StageStatus, Subject};

/// Where a task is in its life. Outputs exist only once it is done, an
/// error only once it was given up on.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum TaskPhase {
    /// Created, not sent yet (queued behind the stage's limit).
    Pending,
    /// The attempt `TaskState::attempt` is out; only its result counts.
    InFlight,
    /// That attempt failed; the failure policy is choosing what next.
    Failed,
    /// Waiting for a retry timer.
    BackingOff,
    /// Waiting for its codex-auto-fix loop to go green.
    Fixing,
    /// Succeeded with these outputs.
    Done(Value),
    /// Given up on, with the error (multi-model stages go on without it).
    GaveUp(String),
    /// Stopped by the engine: its stage settled or the run stopped.
    Cancelled,
}

impl TaskPhase {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Failed => "failed",
            Self::BackingOff => "backing_off",
            Self::Fixing => "fixing",
            Self::Done(_) => "done",
            Self::GaveUp(_) => "gave_up",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the task may still do something (and so can be cancelled).
    pub(super) fn is_live(&self) -> bool {
        !matches!(self, Self::Done(_) | Self::GaveUp(_) | Self::Cancelled)
    }
}

/// How a stage ends: the only statuses [`Engine::settle`] takes.
///
/// [`Engine::settle`]: super::Engine
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settled {
    Success,
    Failed,
    Skipped,
    Cancelled,
}

impl From<Settled> for StageStatus {
    fn from(s: Settled) -> Self {
        match s {
            Settled::Success => StageStatus::Success,
            Settled::Failed => StageStatus::Failed,
            Settled::Skipped => StageStatus::Skipped,
            Settled::Cancelled => StageStatus::Cancelled,
        }
    }
}

/// Whether a stage may move from `from` to `to`.
pub(super) fn stage_transition(
    stage: &str,
    from: StageStatus,
    to: StageStatus,
) -> Result<(), IllegalTransition> {
    use StageStatus::*;
    match (from, to) {
        // Dependencies settled: it starts.
        (Pending, Running)
        // Never started: a dependency failed or was skipped, its branch was
        // not taken, the run stopped.
        | (Pending, Skipped | Cancelled)
        // Ran: its work ended, its gate was false, the run stopped.
        | (Running, Success | Failed | Skipped | Cancelled)
        // A loop goes round again: the `repeat` stage (still running) and
        // its settled body get a new generation.
        | (Running | Success | Failed | Skipped | Cancelled, Pending) => Ok(()),
        (Pending, Pending | Success | Failed)
        | (Running, Running)
        | (Success | Failed | Skipped | Cancelled, _) => Err(IllegalTransition {
            what: Subject::Stage(stage.to_owned()),
            from: from.as_str(),
            to: to.as_str(),
        }),
    }
}

/// Whether a task may move from `from` to `to`.
pub(super) fn task_transition(
    id: &TaskId,
    from: &TaskPhase,
    to: &TaskPhase,
) -> Result<(), IllegalTransition> {
    use TaskPhase::*;
    match (from, to) {
        // Sent: first attempt, retry now (model switch, fallback, no
        // backoff), retry timer, fix loop green.
        (Pending | Failed | BackingOff | Fixing, InFlight)
        // The attempt's result.
        | (InFlight, Done(_) | Failed)
        // Over budget on its result; or no retry left.
        | (InFlight | Failed, GaveUp(_))
        // The failure policy waits: for a timer, for the fix loop.
        | (Failed, BackingOff | Fixing)
        | (Pending | InFlight | Failed | BackingOff | Fixing, Cancelled) => Ok(()),
        _ => Err(IllegalTransition {
            what: Subject::Task(id.clone()),
            from: from.as_str(),
            to: to.as_str(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all_tasks() -> Vec<TaskPhase> {
        use TaskPhase::*;
        vec![
            Pending,
            InFlight,
            Failed,
            BackingOff,
            Fixing,
            Done(json!({"x": 1})),
            GaveUp("boom".into()),
            Cancelled,
        ]
    }

    const ALL_STAGES: [StageStatus; 6] = [
        StageStatus::Pending,
        StageStatus::Running,
        StageStatus::Success,
        StageStatus::Failed,
        StageStatus::Skipped,
        StageStatus::Cancelled,
    ];

    #[test]
    fn stage_transitions_table() {
        use StageStatus::*;
        let legal = [
            (Pending, Running),
            (Pending, Skipped),
            (Pending, Cancelled),
            (Running, Success),
            (Running, Failed),
            (Running, Skipped),
            (Running, Cancelled),
            (Running, Pending),
            (Success, Pending),
            (Failed, Pending),
            (Skipped, Pending),
            (Cancelled, Pending),
        ];
        for from in ALL_STAGES {
            for to in ALL_STAGES {
                let got = stage_transition("s", from, to);
                if legal.contains(&(from, to)) {
                    assert_eq!(got, Ok(()), "{from:?} -> {to:?}");
                } else {
                    assert_eq!(
                        got,
                        Err(IllegalTransition {
                            what: Subject::Stage("s".into()),
                            from: from.as_str(),
                            to: to.as_str(),
                        }),
                        "{from:?} -> {to:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn illegal_stage_transitions_say_what_and_where() {
        use StageStatus::*;
        for (from, to, text) in [
            (
                Success,
                Failed,
                "stage `a.b`: illegal transition success -> failed ignored",
            ),
            (
                Failed,
                Success,
                "stage `a.b`: illegal transition failed -> success ignored",
            ),
            (
                Pending,
                Success,
                "stage `a.b`: illegal transition pending -> success ignored",
            ),
            (
                Running,
                Running,
                "stage `a.b`: illegal transition running -> running ignored",
            ),
            (
                Cancelled,
                Running,
                "stage `a.b`: illegal transition cancelled -> running ignored",
            ),
        ] {
            let e = stage_transition("a.b", from, to).expect_err("illegal");
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn task_transitions_table() {
        let legal = [
            ("pending", "in_flight"),
            ("failed", "in_flight"),
            ("backing_off", "in_flight"),
            ("fixing", "in_flight"),
            ("in_flight", "done"),
            ("in_flight", "failed"),
            ("in_flight", "gave_up"),
            ("failed", "gave_up"),
            ("failed", "backing_off"),
            ("failed", "fixing"),
            ("pending", "cancelled"),
            ("in_flight", "cancelled"),
            ("failed", "cancelled"),
            ("backing_off", "cancelled"),
            ("fixing", "cancelled"),
        ];
        let id = TaskId::new("s#0");
        let mut accepted = 0;
        for from in all_tasks() {
            for to in all_tasks() {
                let got = task_transition(&id, &from, &to);
                if legal.contains(&(from.as_str(), to.as_str())) {
                    accepted += 1;
                    assert_eq!(got, Ok(()), "{from:?} -> {to:?}");
                } else {
                    assert_eq!(
                        got,
                        Err(IllegalTransition {
                            what: Subject::Task(id.clone()),
                            from: from.as_str(),
                            to: to.as_str(),
                        }),
                        "{from:?} -> {to:?}"
                    );
                }
            }
        }
        assert_eq!(accepted, legal.len());
    }

    #[test]
    fn settled_tasks_never_move_and_live_ones_can_stop() {
        let id = TaskId::new("s#0");
        for from in all_tasks() {
            for to in all_tasks() {
                if !from.is_live() {
                    assert!(task_transition(&id, &from, &to).is_err(), "{from:?}");
                }
            }
            if from.is_live() {
                assert!(task_transition(&id, &from, &TaskPhase::Cancelled).is_ok());
            }
        }
        let e = task_transition(&id, &TaskPhase::Done(json!(1)), &TaskPhase::InFlight)
            .expect_err("done is final");
        assert_eq!(
            e.to_string(),
            "task `s#0`: illegal transition done -> in_flight ignored"
        );
    }
}
