//! The one way the runner starts a task: named, instrumented, and with its
//! error policy applied (an `Err` is logged once, here, with the task name).

use std::future::Future;

use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `fut` on `tracker` inside a span called `name`; an error it
/// returns is logged at warn level (the task is over: nobody else will).
pub fn spawn_named<F, E>(tracker: &TaskTracker, name: &'static str, fut: F)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let span = tracing::info_span!("task", name);
    tracker.spawn(
        async move {
            if let Err(e) = fut.await {
                tracing::warn!(task = name, "{e}");
            }
        }
        .instrument(span),
    );
}
