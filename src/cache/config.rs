//! How the cluster's cache is set up; part of [`ClusterConfig`](crate::ClusterConfig).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::memory::MemoryStore;
use crate::cache::store::Limits;

/// How the cluster's cache is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Limits of every collection (default: unbounded).
    pub limits: Limits,
    /// Limits of named collections, overriding `limits`.
    pub collections: Vec<(String, Limits)>,
    /// Where the snapshot is kept; `None` keeps nothing on disk.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written besides at stop; `None`: only at stop. A write still
    /// running when the next is due is not queued behind: that one is skipped, and the next
    /// takes the state of its own time.
    #[serde(with = "crate::millis::opt_millis")]
    pub snapshot_interval: Option<Duration>,
}

impl CacheConfig {
    /// A [`MemoryStore`] with these limits.
    pub(crate) fn memory_store(&self) -> MemoryStore {
        let mut store = MemoryStore::new(self.limits);
        for (name, limits) in &self.collections {
            store.set_limits(name, *limits, Instant::now());
        }
        store
    }

    /// How often to save, when there is somewhere to save to.
    pub(crate) fn save_every(&self) -> Option<Duration> {
        self.snapshot.as_ref().and(self.snapshot_interval)
    }
}
