//! Cascade memory effects on the `Memory` store: global memory shared by
//! every run, cascade memory for one run.

use cascade_proto::RunId;
use cascade_swarm::store::{MemoryScope as Scope, StoreError};
use serde_json::{Map, Value};

use super::Shared;
use cascade_core::engine::Effect;
use cascade_core::spec::MemoryScope;

fn scope(run: &RunId, s: MemoryScope) -> Scope<'_> {
    match s {
        MemoryScope::Global => Scope::Global,
        MemoryScope::Cascade => Scope::Run(run),
    }
}

/// The memory a run starts with: its scope's keys. An error is the
/// driver's to act on (try again later, or fail the run visibly): starting
/// with memory missing would silently change what the run computes.
pub async fn load(
    shared: &Shared,
    run: &RunId,
    s: MemoryScope,
) -> Result<Map<String, Value>, StoreError> {
    shared.stores.memory.load(scope(run, s)).await
}

/// Performs a memory effect. An error is returned, never only logged: a
/// later stage may read what this one wrote.
pub async fn perform(shared: &Shared, run: &RunId, effect: &Effect) -> Result<(), StoreError> {
    let memory = &shared.stores.memory;
    let outcome = match effect {
        Effect::PutMemory {
            scope: s,
            key,
            value,
        } => memory.put(scope(run, *s), key, value).await,
        Effect::DeleteMemory { scope: s, key } => memory.delete(scope(run, *s), key).await,
        Effect::ClearRunMemory => memory.clear_run(run).await,
        _ => Ok(()),
    };
    if let Err(e) = &outcome {
        tracing::error!(run_id = %run, error = %e, "memory write failed");
    }
    outcome
}
