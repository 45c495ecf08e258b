//! Cascade memory in the KV bucket: `global.<key>` shared by every run,
//! `run.<run>.<key>` for one run. Retention is the bucket's age limit.

use cascade_proto::{RunId, decode, encode, wire};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::Shared;
use cascade_core::engine::Effect;
use cascade_core::spec::MemoryScope;

fn key(run: &RunId, scope: MemoryScope, k: &str) -> String {
    match scope {
        MemoryScope::Global => wire::key_memory_global(k),
        MemoryScope::Cascade => wire::key_memory_run(run, k),
    }
}

fn prefix(run: &RunId, scope: MemoryScope) -> String {
    match scope {
        MemoryScope::Global => "global.".to_owned(),
        MemoryScope::Cascade => format!("run.{}.", wire::token(run.as_str())),
    }
}

/// The memory a run starts with: its scope's keys.
pub async fn load(shared: &Shared, run: &RunId, scope: MemoryScope) -> Map<String, Value> {
    let mut out = Map::new();
    let Ok(mut keys) = shared.swarm.memory.keys().await else {
        return out;
    };
    let prefix = prefix(run, scope);
    while let Some(Ok(k)) = keys.next().await {
        let Some(name) = k.strip_prefix(&prefix).and_then(wire::untoken) else {
            continue;
        };
        if let Ok(Some(bytes)) = shared.swarm.memory.get(&k).await
            && let Ok(v) = decode::<Value>(&bytes)
        {
            out.insert(name, v);
        }
    }
    out
}

pub async fn perform(shared: &Shared, run: &RunId, effect: &Effect) {
    let bucket = &shared.swarm.memory;
    let outcome = match effect {
        Effect::PutMemory {
            scope,
            key: k,
            value,
        } => match encode(value) {
            Ok(bytes) if bytes.len() <= wire::INLINE_LIMIT => bucket
                .put(key(run, *scope, k), bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Ok(bytes) => Err(format!(
                "memory value `{k}` is {} bytes, over the {} byte limit",
                bytes.len(),
                wire::INLINE_LIMIT
            )),
            Err(e) => Err(e.to_string()),
        },
        Effect::DeleteMemory { scope, key: k } => bucket
            .delete(key(run, *scope, k))
            .await
            .map_err(|e| e.to_string()),
        Effect::ClearRunMemory => {
            let p = prefix(run, MemoryScope::Cascade);
            if let Ok(mut keys) = bucket.keys().await {
                while let Some(Ok(k)) = keys.next().await {
                    if k.starts_with(&p) {
                        let _ = bucket.delete(&k).await;
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::error!(run_id = %run, error = %e, "memory write failed");
    }
}
