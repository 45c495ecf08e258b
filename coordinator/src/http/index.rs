//! In-memory copies of a KV bucket (`cascade-runs`, `cascade-workers`),
//! kept by a watch with history: the dashboard lists runs and workers and
//! the metrics count them without a read per key per request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cascade_proto::wire::{self, RunRecord, WorkerInfo};
use cascade_swarm::store::{Registry, RunChange, Runs, StoreError, Watch, WorkerChange};
use futures::StreamExt;
use futures::future::BoxFuture;
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

/// A change of an indexed entry: its key (as in the bucket) and its value,
/// or its key when it is gone.
pub(crate) enum Entry<T> {
    Up(String, T),
    Gone(String),
}

/// Why a watch stopped (it is started again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("cannot watch: {0}")]
    Watch(#[source] StoreError),
    #[error("watch failed: {0}")]
    Watcher(#[source] StoreError),
    #[error("the watch ended")]
    Ended,
}

type Opener<T> =
    Box<dyn Fn() -> BoxFuture<'static, Result<Watch<Entry<T>>, StoreError>> + Send + Sync>;

/// The runs bucket's records, by key.
pub(crate) fn runs(store: Arc<dyn Runs>) -> Opener<RunRecord> {
    Box::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let watch = store.watch_all().await?;
            Ok(watch
                .map(|c| {
                    c.map(|c| match c {
                        RunChange::Up(r) => Entry::Up(wire::token(r.run_id.as_str()), r),
                        RunChange::Gone(id) => Entry::Gone(wire::token(id.as_str())),
                    })
                })
                .boxed())
        })
    })
}

/// The workers bucket's registrations, by key.
pub(crate) fn workers(store: Arc<dyn Registry>) -> Opener<WorkerInfo> {
    Box::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let watch = store.watch().await?;
            Ok(watch
                .map(|c| {
                    c.map(|c| match c {
                        WorkerChange::Up(w) => Entry::Up(wire::token(&w.name), w),
                        WorkerChange::Gone(name) => Entry::Gone(wire::token(&name)),
                    })
                })
                .boxed())
        })
    })
}

/// Follows a watch into `index` until `stop`, watching again after a
/// failure (the history replays the current values).
pub(crate) async fn follow<T: Clone>(
    what: &'static str,
    open: Opener<T>,
    index: Arc<Index<T>>,
    stop: CancellationToken,
) -> Result<(), IndexError> {
    while !stop.is_cancelled() {
        if let Err(e) = watch_once(&open, &index, &stop).await {
            tracing::warn!(bucket = what, error = %e, "dashboard index: watch failed; watching again");
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(REWATCH) => {}
        }
    }
    Ok(())
}

async fn watch_once<T: Clone>(
    open: &Opener<T>,
    index: &Index<T>,
    stop: &CancellationToken,
) -> Result<(), IndexError> {
    let mut watch = open().await.map_err(IndexError::Watch)?;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            n = watch.next() => n,
        };
        match next {
            Some(Ok(Entry::Up(key, v))) => {
                index.write().insert(key, v);
            }
            Some(Ok(Entry::Gone(key))) => {
                index.write().remove(&key);
            }
            Some(Err(e)) => return Err(IndexError::Watcher(e)),
            None => return Err(IndexError::Ended),
        }
    }
}
