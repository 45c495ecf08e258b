//! In-memory copies of a KV bucket (`cascade-runs`, `cascade-workers`),
//! kept by a watch with history: the dashboard lists runs and workers and
//! the metrics count them without a read per key per request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Pause before watching again after the watch failed or ended.
const REWATCH: Duration = Duration::from_secs(1);

/// A bucket's live entries by key, decoded.
#[derive(Debug)]
pub(crate) struct Index<T> {
    map: RwLock<BTreeMap<String, T>>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            map: RwLock::new(BTreeMap::new()),
        }
    }
}

impl<T: Clone> Index<T> {
    /// Every value, in key order.
    pub fn values(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, T>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, T>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a watch of a bucket stopped (it is started again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("cannot watch: {0}")]
    Watch(#[source] async_nats::jetstream::kv::WatchError),
    #[error("watch failed: {0}")]
    Watcher(#[source] async_nats::jetstream::kv::WatcherError),
    #[error("the watch ended")]
    Ended,
}

/// Follows `store` into `index` until `stop`, watching again after a
/// failure (the history replays the current values).
pub(crate) async fn follow<T: DeserializeOwned + Clone>(
    store: Store,
    index: Arc<Index<T>>,
    stop: CancellationToken,
) -> Result<(), IndexError> {
    while !stop.is_cancelled() {
        if let Err(e) = watch_once(&store, &index, &stop).await {
            tracing::warn!(bucket = %store.name, error = %e, "dashboard index: watch failed; watching again");
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(REWATCH) => {}
        }
    }
    Ok(())
}

async fn watch_once<T: DeserializeOwned + Clone>(
    store: &Store,
    index: &Index<T>,
    stop: &CancellationToken,
) -> Result<(), IndexError> {
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(IndexError::Watch)?;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            n = watch.next() => n,
        };
        let entry = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(IndexError::Watcher(e)),
            None => return Err(IndexError::Ended),
        };
        match entry.operation {
            Operation::Put => match cascade_proto::decode::<T>(&entry.value) {
                Ok(v) => {
                    index.write().insert(entry.key, v);
                }
                Err(e) => {
                    tracing::debug!(key = entry.key, error = %e, "dashboard index: undecodable entry skipped")
                }
            },
            Operation::Delete | Operation::Purge => {
                index.write().remove(&entry.key);
            }
        }
    }
}
