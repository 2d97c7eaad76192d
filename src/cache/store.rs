//! The storage behind the cache: named collections of opaque byte values, with TTLs and an LRU
//! bound per collection.
//!
//! [`Store`] is the seam between the cache and a backend (a Redis backend could implement it
//! later); [`MemoryStore`](super::MemoryStore) is the in-process one. Values are opaque [`Bytes`], postcard-encoded
//! by callers; a counter kept by [`Store::increment`] is a postcard `i64`, so it can be read with
//! `get` and decoded as one.
//!
//! # Time
//! Every method takes the caller's `now`, and nothing reads a clock: expiry is a pure function of
//! the `Instant`s given, so tests use a fake clock. A TTL too large to add to `now` never expires.
//!
//! # Expiry and what is reported
//! An entry whose deadline has passed (`now >= deadline`) is absent to every operation, but only
//! a write that replaces it, an eviction, or [`Store::purge_expired`] removes it, and each of
//! these returns it as a [`Removed`] with [`RemoveReason::Expired`]. So every entry that leaves
//! the store other than by an explicit delete or an overwrite of a live value is reported exactly
//! once, for change notifications. The cache calls `purge_expired` when [`Store::next_expiry`]
//! comes due; until then an expired entry still counts against its collection's limits.
//!

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cache::ops::CacheError;
pub use crate::cache::ops::CollectionStats;

/// A key-value store of named collections, used by the cache on the master's thread.
///
/// Every method takes the caller's clock (`now`) and treats entries that have expired by then as
/// absent. Methods that write return the entries they removed as a side effect (see the module
/// docs), so the caller can notify about them.
///
/// The trait is object-safe: the cache holds a `Box<dyn Store>`.
pub trait Store: std::fmt::Debug + 'static {
    /// The value of `key`, counting a hit or a miss and making the entry the most recently used.
    fn get(&mut self, collection: &str, key: &str, now: Instant) -> Option<Bytes>;

    /// Stores `value` under `key`, replacing any value and TTL there, with a TTL when `ttl` is
    /// `Some`. Returns the entries removed to make room (least recently used first), and an
    /// expired entry this one replaced.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] when the entry alone exceeds the collection's byte limit, and
    /// [`StoreError::NoCapacity`] when the collection may hold no entry; nothing changes then.
    fn set(
        &mut self,
        collection: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Vec<Removed>, StoreError>;

    /// Removes `key`; `false` when there was no live entry to remove.
    fn delete(&mut self, collection: &str, key: &str, now: Instant) -> bool;

    /// Whether `key` has a live entry. Counts nothing and leaves recency alone.
    fn exists(&mut self, collection: &str, key: &str, now: Instant) -> bool;

    /// Sets (`Some`) or clears (`None`) the TTL of an existing key, counting from `now`; `false`
    /// when there is no such key. Leaves recency alone.
    fn expire(&mut self, collection: &str, key: &str, ttl: Option<Duration>, now: Instant) -> bool;

    /// The time `key` has left: `None` when there is no such key, `Some(None)` when it has no
    /// TTL.
    fn ttl(&mut self, collection: &str, key: &str, now: Instant) -> Option<Option<Duration>>;

    /// Adds `by` to the counter at `key` (an absent key counts from 0 and gets `ttl_if_new`; an
    /// existing one keeps its TTL) and returns the new value, with the entries removed to make
    /// room as for [`Store::set`].
    ///
    /// # Errors
    /// [`StoreError::NotAnInteger`] when the value is not a postcard `i64`,
    /// [`StoreError::Overflow`] when the sum does not fit in one, and the errors of
    /// [`Store::set`]; nothing changes then.
    fn increment(
        &mut self,
        collection: &str,
        key: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
        now: Instant,
    ) -> Result<(i64, Vec<Removed>), StoreError>;

    /// Writes `new` (stored with `ttl`; `None` deletes the key) only if the current value is
    /// `expected` (`None`: the key must be absent). Returns whether it wrote, with the entries
    /// removed to make room as for [`Store::set`].
    ///
    /// # Errors
    /// The errors of [`Store::set`], when the values matched but `new` does not fit.
    fn compare_and_set(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Bytes>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(bool, Vec<Removed>), StoreError>;

    /// The live keys of `collection` that start with `prefix`, sorted.
    fn keys(&mut self, collection: &str, prefix: &str, now: Instant) -> Vec<String>;

    /// Removes every entry that has expired by `now` and returns them, soonest deadline first.
    fn purge_expired(&mut self, now: Instant) -> Vec<Removed>;

    /// The earliest deadline of any entry, so the caller can sleep until then; `None` when no
    /// entry has a TTL (or the backend expires entries itself).
    fn next_expiry(&self) -> Option<Instant>;

    /// Counters and sizes, per collection.
    fn stats(&self) -> StoreStats;

    /// The live entries, for a snapshot: collections by name, and in each the least recently
    /// used first, so that [`Store::import`] restores recency.
    fn export(&self, now: Instant) -> Vec<SnapshotEntry>;

    /// Stores `entries` as [`Store::set`] would, in order, skipping those whose TTL has run out
    /// and those that do not fit; returns how many were stored. Meant for an empty store at
    /// startup: nothing it removes is reported.
    fn import(&mut self, entries: Vec<SnapshotEntry>, now: Instant) -> usize;
}

/// An entry removed by the store itself rather than by a caller's delete or overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Its collection.
    pub collection: String,
    /// Its key.
    pub key: String,
    /// Why it went.
    pub reason: RemoveReason,
}

/// Why the store removed an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoveReason {
    /// Least recently used, removed to make room under the collection's limits.
    Evicted,
    /// Its TTL ran out.
    Expired,
}

/// Bounds on one collection; `None` is unbounded. [`Default`] is unbounded. In a
/// [`CacheConfig`](super::CacheConfig), an absent field is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most entries held.
    pub max_entries: Option<usize>,
    /// Most bytes held, counting each entry as its key length plus its value length.
    pub max_bytes: Option<usize>,
}

/// One live entry as exported for, or loaded from, a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Its collection.
    pub collection: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// The time it had left when exported (or has left when loaded); `None`: no TTL.
    pub ttl: Option<Duration>,
}

/// Counters and sizes of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Per collection, sorted by name.
    pub collections: Vec<CollectionStats>,
    /// Reads of collections that have never been written, which keep no statistics of their own.
    pub unknown_misses: u64,
}

/// Why a write was refused. Nothing changed in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The entry alone is larger than the collection's byte limit.
    #[error("entry of {size} bytes exceeds the {limit}-byte limit of collection {collection:?}")]
    TooLarge {
        /// The collection.
        collection: String,
        /// Key length plus value length.
        size: usize,
        /// The collection's `max_bytes`.
        limit: usize,
    },
    /// The collection's `max_entries` is 0.
    #[error("collection {collection:?} may hold no entries")]
    NoCapacity {
        /// The collection.
        collection: String,
    },
    /// `increment` found a value that is not a postcard `i64`.
    #[error("value of {key:?} in collection {collection:?} is not an integer")]
    NotAnInteger {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// `increment` would take the counter beyond the range of `i64`.
    #[error("incrementing {key:?} in collection {collection:?} overflows i64")]
    Overflow {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// The backend failed (a lost connection, an I/O error); [`MemoryStore`](super::MemoryStore)
    /// never returns it.
    #[error("store backend failed: {0}")]
    Backend(String),
}

impl From<StoreError> for CacheError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { .. } | StoreError::NoCapacity { .. } => {
                CacheError::TooLarge(e.to_string())
            }
            StoreError::NotAnInteger { .. } | StoreError::Overflow { .. } => {
                CacheError::NotAnInteger(e.to_string())
            }
            StoreError::Backend(reason) => CacheError::Storage(reason),
        }
    }
}
