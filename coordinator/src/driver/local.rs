//! The embedded driver: runs a plan with in-process workers, no server.
//!
//! ```text
//!            ┌──────────── results (bounded mpsc) ◀────────────┐
//!            ▼                                                 │
//!   loop: engine.apply(event, now) ──▶ effects ──▶ spawn task ─┴─ Executor
//!            ▲           │                          (semaphore = --concurrency)
//!            │           └──▶ timers (BTreeMap)  ──▶ TimerFired
//!            └── cancel token (Ctrl-C) ──▶ CancelRequested
//! ```
//! The loop owns the engine; tasks only ever send results back. Timers and
//! the effect interpreter are shared with the swarm driver (`effects::RunCore`). When the
//! run finishes, in-flight attempts are cancelled and awaited before
//! returning, so no process outlives the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_exec::Executor;
use cascade_proto::{Attempt, RunId, TaskId, TaskResult, TaskSpec};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::effects::{Effects, Mode, RunCore};
use super::store::MemoryStore;
use crate::integrations::RunIntegrations;
use cascade_core::engine::{Effect, Engine, Event, Millis, RunReport};
use cascade_core::plan::Plan;
use cascade_core::spec::MemoryScope;

/// Results waiting for the loop. The loop drains it continuously; the bound
/// only keeps a burst of completions from growing memory without limit.
const RESULT_CHANNEL_CAPACITY: usize = 4096;

pub struct LocalOptions {
    pub run_id: RunId,
    pub inputs: Map<String, Value>,
    /// Most tasks running at once.
    pub concurrency: usize,
    pub store: Arc<dyn MemoryStore>,
}

/// Wall-clock milliseconds that never go backwards within a run.
struct Clock {
    origin_ms: Millis,
    origin: Instant,
}

impl Clock {
    fn new() -> Self {
        let origin_ms = cascade_swarm::clock::now_ms();
        Clock {
            origin_ms,
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Millis {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }

    fn instant(&self, at: Millis) -> tokio::time::Instant {
        let offset = Duration::from_millis(at.saturating_sub(self.origin_ms));
        tokio::time::Instant::from_std(self.origin + offset)
    }
}

/// Runs `plan` to completion, with no integrations. `observe` sees every
/// effect as it is performed (progress display). Cancelling `cancel` stops
/// the run: the result is then a failed report saying so.
pub async fn run_local(
    plan: Arc<Plan>,
    executor: Arc<Executor>,
    opts: LocalOptions,
    cancel: CancellationToken,
    observe: impl FnMut(&Effect, &Engine),
) -> RunReport {
    let none = RunIntegrations::none(plan.clone(), &opts.run_id);
    let core = drive(plan, executor, opts, none, cancel, observe).await;
    core.engine.report()
}

/// [`run_local`] with the cascade's integrations: they see the run start,
/// every effect and result, may stop the run (a quality gate) and run the
/// end actions; the task hooks travel on each task. Returns the report with
/// what the end actions did.
pub async fn run_local_with(
    plan: Arc<Plan>,
    executor: Arc<Executor>,
    opts: LocalOptions,
    ops: RunIntegrations,
    cancel: CancellationToken,
    observe: impl FnMut(&Effect, &Engine),
) -> Value {
    let mut core = drive(plan, executor, opts, ops, cancel, observe).await;
    core.finish(None).await
}

async fn drive<F: FnMut(&Effect, &Engine)>(
    plan: Arc<Plan>,
    executor: Arc<Executor>,
    opts: LocalOptions,
    ops: RunIntegrations,
    cancel: CancellationToken,
    observe: F,
) -> RunCore {
    let mut core = RunCore::new(Engine::new(plan.clone()), ops);
    let mut io = Io {
        clock: Clock::new(),
        executor,
        semaphore: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        tracker: TaskTracker::new(),
        results: mpsc::channel(RESULT_CHANNEL_CAPACITY),
        running: HashMap::new(),
        store: opts.store,
        run_id: opts.run_id.clone(),
        observe,
        failed: None,
    };
    let memory = match plan.memory.scope {
        MemoryScope::Global if plan.memory.enabled => {
            match io.store.load(
                MemoryScope::Global,
                opts.run_id.as_str(),
                plan.memory.retention,
                io.clock.now(),
            ) {
                Ok(m) => m,
                // Running on without it would silently change what the run
                // computes: it stops at once, saying why.
                Err(e) => {
                    io.failed = Some(format!("global memory could not be read: {e}"));
                    Map::new()
                }
            }
        }
        _ => Map::new(),
    };
    let start = Event::RunStarted {
        run_id: opts.run_id.clone(),
        inputs: opts.inputs,
        memory,
    };
    core.started();
    core.step(start, io.clock.now(), Mode::Live, &mut io);

    let mut cancel_sent = false;
    while !core.engine.is_finished() {
        // Events the integrations raised (a failed gate stops the run)
        // come before anything new.
        let mut raised = core.take_raised();
        if let Some(reason) = io.failed.take() {
            raised.push(Event::CancelRequested { reason });
        }
        if !raised.is_empty() {
            for e in raised {
                core.step(e, io.clock.now(), Mode::Live, &mut io);
            }
            continue;
        }
        let next_timer = core.timers.next_at();
        let event = tokio::select! {
            Some(result) = io.results.1.recv() => {
                io.running.remove(&(result.task_id.clone(), result.attempt));
                Event::TaskFinished(result)
            }
            () = sleep_until(&io.clock, next_timer), if next_timer.is_some() => {
                let Some(timer) = core.timers.pop_first() else { continue };
                Event::TimerFired(timer)
            }
            () = cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                Event::CancelRequested { reason: "interrupted".into() }
            }
        };
        core.step(event, io.clock.now(), Mode::Live, &mut io);
    }
    io.shutdown().await;
    core
}

async fn sleep_until(clock: &Clock, at: Option<Millis>) {
    if let Some(at) = at {
        tokio::time::sleep_until(clock.instant(at)).await;
    }
}

struct Io<F> {
    clock: Clock,
    executor: Arc<Executor>,
    semaphore: Arc<Semaphore>,
    tracker: TaskTracker,
    results: (mpsc::Sender<TaskResult>, mpsc::Receiver<TaskResult>),
    running: HashMap<(TaskId, Attempt), CancellationToken>,
    store: Arc<dyn MemoryStore>,
    run_id: RunId,
    /// Sees every effect (progress display).
    observe: F,
    /// A memory write that failed: the run stops saying so (a later stage
    /// may read what it should have written).
    failed: Option<String>,
}

impl<F> Io<F> {
    /// Cancels whatever still runs and waits for it to end.
    async fn shutdown(self) {
        for token in self.running.values() {
            token.cancel();
        }
        self.tracker.close();
        drop(self.results);
        self.tracker.wait().await;
    }
}

impl<F: FnMut(&Effect, &Engine)> Effects for Io<F> {
    fn observe(&mut self, fx: &[Effect], engine: &Engine) {
        for effect in fx {
            (self.observe)(effect, engine);
        }
    }

    fn dispatch(&mut self, spec: TaskSpec, _engine: &Engine) {
        let token = CancellationToken::new();
        self.running
            .insert((spec.task_id.clone(), spec.attempt), token.clone());
        let executor = self.executor.clone();
        let semaphore = self.semaphore.clone();
        let tx = self.results.0.clone();
        self.tracker.spawn(async move {
            let result = tokio::select! {
                permit = semaphore.acquire_owned() => {
                    let Ok(_permit) = permit else { return };
                    executor.execute(&spec, &token).await
                }
                () = token.cancelled() => return,
            };
            // The loop may have finished; a closed channel is fine.
            let _ = tx.send(result).await;
        });
    }

    fn cancel(&mut self, task: TaskId, attempt: Attempt) {
        if let Some(token) = self.running.remove(&(task, attempt)) {
            token.cancel();
        }
    }

    fn memory(&mut self, effect: Effect) {
        let run = self.run_id.as_str();
        let failed = match effect {
            Effect::PutMemory { scope, key, value } => self
                .store
                .put(scope, run, &key, value, self.clock.now())
                .err()
                .map(|e| format!("memory write of `{key}` failed: {e}")),
            Effect::DeleteMemory { scope, key } => self
                .store
                .delete(scope, run, &key)
                .err()
                .map(|e| format!("memory delete of `{key}` failed: {e}")),
            // The run is over: its memory not cleaned up is only a warning.
            Effect::ClearRunMemory => {
                if let Err(e) = self.store.clear_run(run) {
                    tracing::warn!(error = %e, "memory cleanup failed");
                }
                None
            }
            _ => None,
        };
        if let Some(reason) = failed {
            tracing::error!("{reason}: stopping the run");
            self.failed.get_or_insert(reason);
        }
    }
}
