//! Where memory lives between stages and between runs.
//!
//! A narrow trait so the engine's drivers can use local disk (embedded
//! mode), JetStream KV (the swarm) or memory (tests). Cascade-scoped memory
//! belongs to one run; global memory is shared by every run and survives
//! between them, each entry expiring after the cascade's `retention`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use cascade_core::engine::Millis;
use cascade_core::spec::MemoryScope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("memory store `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("memory store `{path}` is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub trait MemoryStore: Send + Sync {
    /// Entries of a scope, without those older than `retention`.
    fn load(
        &self,
        scope: MemoryScope,
        run_id: &str,
        retention: Option<Duration>,
        now: Millis,
    ) -> Result<Map<String, Value>, StoreError>;
    fn put(
        &self,
        scope: MemoryScope,
        run_id: &str,
        key: &str,
        value: Value,
        now: Millis,
    ) -> Result<(), StoreError>;
    fn delete(&self, scope: MemoryScope, run_id: &str, key: &str) -> Result<(), StoreError>;
    /// Forgets a run's cascade-scoped memory.
    fn clear_run(&self, run_id: &str) -> Result<(), StoreError>;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    value: Value,
    updated_ms: Millis,
}

type Entries = BTreeMap<String, Entry>;

/// One JSON file per scope under a data directory: `memory/global.json`
/// and `memory/runs/<run_id>.json`, replaced atomically on every write.
#[derive(Debug)]
pub struct FileMemoryStore {
    dir: PathBuf,
    /// Serialises read-modify-write of the files within this process.
    lock: Mutex<()>,
}

impl FileMemoryStore {
    pub fn new(data_dir: &Path) -> Self {
        FileMemoryStore {
            dir: data_dir.join("memory"),
            lock: Mutex::new(()),
        }
    }

    fn path(&self, scope: MemoryScope, run_id: &str) -> PathBuf {
        match scope {
            MemoryScope::Global => self.dir.join("global.json"),
            MemoryScope::Cascade => self
                .dir
                .join("runs")
                .join(format!("{}.json", sanitize(run_id))),
        }
    }

    fn read(path: &Path) -> Result<Entries, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entries::new()),
            Err(source) => Err(StoreError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write(path: &Path, entries: &Entries) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(entries).map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn modify(&self, path: &Path, f: impl FnOnce(&mut Entries)) -> Result<(), StoreError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut entries = Self::read(path)?;
        f(&mut entries);
        Self::write(path, &entries)
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl MemoryStore for FileMemoryStore {
    fn load(
        &self,
        scope: MemoryScope,
        run_id: &str,
        retention: Option<Duration>,
        now: Millis,
    ) -> Result<Map<String, Value>, StoreError> {
        let path = self.path(scope, run_id);
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = Self::read(&path)?;
        let keep = |e: &Entry| {
            retention.is_none_or(|r| now.saturating_sub(e.updated_ms) <= r.as_millis() as u64)
        };
        let expired = entries.values().any(|e| !keep(e));
        let live: Entries = entries.into_iter().filter(|(_, e)| keep(e)).collect();
        if expired {
            Self::write(&path, &live)?;
        }
        Ok(live.into_iter().map(|(k, e)| (k, e.value)).collect())
    }

    fn put(
        &self,
        scope: MemoryScope,
        run_id: &str,
        key: &str,
        value: Value,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.modify(&self.path(scope, run_id), |m| {
            m.insert(
                key.to_owned(),
                Entry {
                    value,
                    updated_ms: now,
                },
            );
        })
    }

    fn delete(&self, scope: MemoryScope, run_id: &str, key: &str) -> Result<(), StoreError> {
        self.modify(&self.path(scope, run_id), |m| {
            m.remove(key);
        })
    }

    fn clear_run(&self, run_id: &str) -> Result<(), StoreError> {
        let path = self.path(MemoryScope::Cascade, run_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn global_memory_survives_a_new_store_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileMemoryStore::new(dir.path());
        s.put(MemoryScope::Global, "r1", "a", json!(1), 1_000)
            .expect("put");
        s.put(MemoryScope::Global, "r1", "b", json!({"x": 2}), 50_000)
            .expect("put");
        let again = FileMemoryStore::new(dir.path());
        let all = again
            .load(MemoryScope::Global, "r2", None, 60_000)
            .expect("load");
        assert_eq!(Value::Object(all), json!({"a": 1, "b": {"x": 2}}));
        let fresh = again
            .load(
                MemoryScope::Global,
                "r2",
                Some(Duration::from_secs(30)),
                60_000,
            )
            .expect("load");
        assert_eq!(Value::Object(fresh), json!({"b": {"x": 2}}));
    }

    #[test]
    fn run_memory_is_per_run_and_clears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FileMemoryStore::new(dir.path());
        s.put(MemoryScope::Cascade, "r1", "k", json!("v"), 1)
            .expect("put");
        assert!(
            s.load(MemoryScope::Cascade, "r2", None, 2)
                .expect("load")
                .is_empty()
        );
        assert_eq!(
            s.load(MemoryScope::Cascade, "r1", None, 2)
                .expect("load")
                .len(),
            1
        );
        s.delete(MemoryScope::Cascade, "r1", "k").expect("delete");
        assert!(
            s.load(MemoryScope::Cascade, "r1", None, 2)
                .expect("load")
                .is_empty()
        );
        s.clear_run("r1").expect("clear");
        s.clear_run("never").expect("clear of nothing");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("memory")).expect("mkdir");
        std::fs::write(dir.path().join("memory/global.json"), b"{not json").expect("write");
        let err = FileMemoryStore::new(dir.path())
            .load(MemoryScope::Global, "r", None, 0)
            .expect_err("corrupt");
        assert!(err.to_string().contains("global.json"), "{err}");
    }
}
