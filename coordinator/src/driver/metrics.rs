//! Counters the run driver records, as one-line calls where things
//! happen. The driver owns them; `http::metrics` renders them with the
//! swarm gauges on `/metrics` (the driver never imports http).

use cascade_core::engine::StageStatus;
use cascade_proto::wire::Route;
use cascade_proto::{TaskOutcome, TaskResult, TaskSpec};
use metrics::{counter, gauge};

/// Describes the driver's counters (once, when the endpoint starts).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "cascade_runs_started_total",
        "Runs this coordinator started."
    );
    describe_counter!(
        "cascade_runs_finished_total",
        "Runs this coordinator finished, by status."
    );
    describe_gauge!("cascade_runs_driven", "Runs this coordinator drives now.");
    describe_counter!(
        "cascade_stages_finished_total",
        "Stages that reached a final status in runs this coordinator drove."
    );
    describe_counter!(
        "cascade_tasks_dispatched_total",
        "Task attempts published, by skill and route."
    );
    describe_counter!(
        "cascade_tasks_retried_total",
        "Task attempts published after the first."
    );
    describe_counter!(
        "cascade_task_results_total",
        "Task results the engine took, by outcome."
    );
    describe_counter!(
        "cascade_tasks_dead_lettered_total",
        "Task messages moved to the dead-letter stream."
    );
    describe_counter!(
        "cascade_tasks_reenqueued_total",
        "Lost attempts the sweeper published again."
    );
}

/// A run's driver started it (not a takeover).
pub fn run_started() {
    counter!("cascade_runs_started_total").increment(1);
}

/// A run this coordinator drove finished with `status` (and, with the
/// `otlp` feature, its root span is emitted).
pub fn run_finished(run: &cascade_proto::RunId, created_ms: u64, status: &str) {
    counter!("cascade_runs_finished_total", "status" => status.to_owned()).increment(1);
    cascade_swarm::ops::trace::run_finished(run, created_ms, status);
}

/// How many runs this coordinator drives now.
pub fn runs_driven(n: usize) {
    gauge!("cascade_runs_driven").set(n as f64);
}

/// A stage changed status (counted once it is final).
pub fn stage_changed(status: StageStatus) {
    if status.is_terminal() {
        counter!("cascade_stages_finished_total", "status" => status.as_str()).increment(1);
    }
}

/// An attempt was published (or put in a lead's batch).
pub fn task_dispatched(spec: &TaskSpec, route: &str) {
    let skill = spec.skill.to_string();
    if spec.attempt.0 > 1 {
        counter!("cascade_tasks_retried_total", "skill" => skill.clone()).increment(1);
    }
    counter!("cascade_tasks_dispatched_total", "skill" => skill, "route" => route.to_owned())
        .increment(1);
}

/// The route label of a task message.
pub fn route_label(route: &Route) -> &'static str {
    match route {
        Route::Mesh => "mesh",
        Route::Direct { .. } => "worker",
        Route::ViaLead { .. } => "lead",
    }
}

/// The engine took a result.
pub fn result_taken(result: &TaskResult) {
    let outcome = match result.outcome {
        TaskOutcome::Succeeded { .. } => "success",
        TaskOutcome::Failed(_) => "failure",
    };
    counter!("cascade_task_results_total", "outcome" => outcome).increment(1);
}

/// A task message reached its delivery limit and was dead-lettered.
pub fn task_dead_lettered(skill: &str) {
    counter!("cascade_tasks_dead_lettered_total", "skill" => skill.to_owned(), "reason" => "max_deliver")
        .increment(1);
}

/// The sweeper published a lost attempt again.
pub fn task_reenqueued(skill: &str) {
    counter!("cascade_tasks_reenqueued_total", "skill" => skill.to_owned()).increment(1);
}
