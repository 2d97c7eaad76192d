//! The cache's operations, answers and events, as they travel between processes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One cache operation; every process sends the same ones (the master through the cache's
/// mailbox, a worker through its pipe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheOp {
    /// The value of a key.
    Get {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// Sets a key, with an optional time to live.
    Set {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The value, postcard-encoded by the caller.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Time to live.
        ttl: Option<Duration>,
    },
    /// Deletes a key.
    Delete {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// Whether a key exists.
    Exists {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// Sets or clears a key's time to live.
    Expire {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The new time to live; `None` keeps the key for good.
        ttl: Option<Duration>,
    },
    /// A key's remaining time to live.
    Ttl {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
    /// Adds to an integer (an absent key counts from 0).
    Increment {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// How much.
        by: i64,
    },
    /// Sets (or deletes, with `new: None`) a key only if its value is `expected` (`None`:
    /// absent).
    CompareAndSet {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The value expected now.
        expected: Option<serde_bytes::ByteBuf>,
        /// The value to set.
        new: Option<serde_bytes::ByteBuf>,
        /// Time to live of the new value.
        ttl: Option<Duration>,
    },
    /// The keys that start with a prefix, sorted.
    Keys {
        /// The collection.
        collection: String,
        /// The prefix.
        prefix: String,
    },
    /// The entries whose keys start with a prefix, sorted by key.
    Entries {
        /// The collection.
        collection: String,
        /// The prefix.
        prefix: String,
    },
    /// Receive the changes to keys of a collection that start with a prefix.
    Subscribe {
        /// The subscriber's id for it (chosen by the subscriber).
        id: u64,
        /// The collection.
        collection: String,
        /// The prefix.
        prefix: String,
    },
    /// Stop receiving a subscription's changes.
    Unsubscribe {
        /// The subscriber's id for it.
        id: u64,
    },
    /// Takes an exclusive lock, waiting in line (first come, first served) for at most `wait`;
    /// it is released by `Unlock`, when its lease runs out, or when the holder's process ends.
    Lock {
        /// The lock's name.
        name: String,
        /// How long the holder may keep it.
        lease: Duration,
        /// How long to wait for it.
        wait: Duration,
    },
    /// Releases a lock taken with this token.
    Unlock {
        /// The lock's name.
        name: String,
        /// The token its `Lock` returned.
        token: u64,
    },
    /// The store's figures.
    Stats,
    /// Key-value operations served together, in order, answered with [`CacheAnswer::Batch`];
    /// built by [`CacheBatch`](crate::cache::CacheBatch), whose encoding (private to this
    /// crate) the bytes are.
    Batch(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Makes the caller's subscription `subscription` a near-cache's
    /// ([`CacheClient::near_cache`](crate::cache::CacheClient::near_cache)): from now on it
    /// hears only of the keys of its collection the near-cache has fetched (at most `max_keys`
    /// of them), each once, at the first change after the fetch, and its events are never
    /// dropped. Answered with `Int`: the number of events sent to it so far.
    Track {
        /// The subscription.
        subscription: u64,
        /// Most keys tracked at once; beyond them, the one fetched longest ago is dropped and
        /// reported as `Evicted`.
        max_keys: u32,
    },
}

impl CacheOp {
    /// The operation as a batch carries it, borrowed, if it is a key-value one served the same
    /// alone or in a batch. `Set` and `CompareAndSet` are not: alone, their values move into
    /// the store uncopied.
    pub(crate) fn key_value(&self) -> Option<BatchOp<'_>> {
        Some(match self {
            CacheOp::Get { collection, key } => BatchOp::Get { collection, key },
            CacheOp::Delete { collection, key } => BatchOp::Delete { collection, key },
            CacheOp::Exists { collection, key } => BatchOp::Exists { collection, key },
            CacheOp::Expire {
                collection,
                key,
                ttl,
            } => BatchOp::Expire {
                collection,
                key,
                ttl: *ttl,
            },
            CacheOp::Ttl { collection, key } => BatchOp::Ttl { collection, key },
            CacheOp::Increment {
                collection,
                key,
                by,
            } => BatchOp::Increment {
                collection,
                key,
                by: *by,
            },
            _ => return None,
        })
    }
}

/// The answer to a [`CacheOp`].
// `Stats` is the large one, and rare; boxing it would change the public type.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheAnswer {
    /// Done.
    Done,
    /// A value, if there is one.
    Value(Option<serde_bytes::ByteBuf>),
    /// Yes or no.
    Bool(bool),
    /// To `Ttl`: `None` for no such key, `Some(None)` for a key without a time to live.
    Ttl(Option<Option<Duration>>),
    /// To `Increment`: the new value.
    Int(i64),
    /// To `Keys`.
    Keys(Vec<String>),
    /// To `Entries`.
    Entries(Vec<(String, serde_bytes::ByteBuf)>),
    /// To `Lock`: the token that releases it.
    Locked(u64),
    /// To `Stats`.
    Stats(CacheStats),
    /// To `Batch`: the answers, one per operation, read by
    /// [`BatchAnswers`](crate::cache::BatchAnswers).
    Batch(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The value is larger than its collection may hold.
    #[error("value too large: {0}")]
    TooLarge(String),
    /// `increment` on a value that is not an integer, or past `i64`.
    #[error("not an integer: {0}")]
    NotAnInteger(String),
    /// The lock was not free within the wait.
    #[error("lock {0:?} not acquired within the wait")]
    LockTimeout(String),
    /// `unlock` with a token that does not hold the lock (its lease ran out, say).
    #[error("lock {0:?} is not held with this token")]
    NotHeld(String),
    /// The value did not encode or decode as the caller's type.
    #[error("value: {0}")]
    Codec(String),
    /// The cache could not be reached (the channel to the master is closed, it timed out).
    #[error("cache unreachable: {0}")]
    Unreachable(String),
    /// The store failed for a reason of its own (a backend's lost connection, say).
    #[error("store: {0}")]
    Storage(String),
    /// The cluster-wide cache could not reach Redis (down, too slow): the reason. Nothing was
    /// changed, or (an answer lost on its way) it is not known whether it was; try again.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// A bound of the cache was reached: a process's near-caches, say.
    #[error("limit: {0}")]
    Limit(String),
}

/// A change to a key, delivered to subscribers in the order the changes happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEvent {
    /// The subscription it is for.
    pub subscription: u64,
    /// Its number among the events sent to its subscription, from 1: a gap means some were
    /// dropped (for a worker whose outbox was full; see the README's Bounds).
    pub seq: u64,
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// What happened.
    pub change: Change,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// It was set to this value.
    Set(serde_bytes::ByteBuf),
    /// It was deleted.
    Deleted,
    /// Its time to live ran out.
    Expired,
    /// It was evicted to make room (least recently used).
    Evicted,
}

/// The cache's figures: per collection, per kind of operation, of its locks, of its snapshots.
///
/// The counts are cumulative since the cache started (the cluster's start; they are not kept
/// in a snapshot); the figures said to be "now" are what is there at the moment they are
/// taken.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheStats {
    /// Per collection: entries, bytes, hits, misses, evictions, expiries.
    pub collections: Vec<CollectionStats>,
    /// `get`s of collections never written, which keep no figures of their own: misses that
    /// are in no collection's `misses`.
    pub unknown_misses: u64,
    /// Operations served, by kind: every kind is here, zeros included, named as its
    /// [`CacheOp`] variant in snake case (`get`, `set`, `delete`, `exists`, `expire`, `ttl`,
    /// `increment`, `compare_and_set`, `keys`, `entries`, `subscribe`, `unsubscribe`, `lock`,
    /// `unlock`, `stats`, `batch`, `track`). Whoever sent them: workers, the master,
    /// near-caches. A batch counts once as `batch` (an `error` when it did not decode) and each
    /// of its operations as its own kind; a near-cache's fetch counts as a `get`, and the reads
    /// it answers itself not at all. A `lock` counts when it is answered: `ok` when granted,
    /// `error` when its wait ran out or its process ended in line.
    pub operations: BTreeMap<String, OpCounts>,
    /// Locks granted, waited for, timed out, lost by lease or by the holder's exit.
    pub locks: LockStats,
    /// Locks held now.
    pub locks_held: usize,
    /// Processes waiting in line for a lock now.
    pub lock_waiters: usize,
    /// Subscriptions now.
    pub subscriptions: usize,
    /// Why the snapshot could not be loaded at start, if it could not (it was set aside).
    pub snapshot_error: Option<String>,
    /// Snapshots written since start (at the interval; the one at stop comes after any count).
    pub snapshots_written: u64,
    /// Snapshots due at the interval but skipped because the previous one was still being
    /// written.
    pub snapshots_skipped: u64,
    /// The cluster-wide cache (in Redis) only: values under its keys of another type or
    /// layout than this crate writes (their operations failed with [`CacheError::Storage`]),
    /// and messages on its change channel that are not its events (dropped).
    pub bad_input: u64,
}

/// How many operations of one kind the cache served, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Served without an error (a `get` that found nothing is one; misses are counted per
    /// collection).
    pub ok: u64,
    /// Refused or failed: too large, a limit, not an integer, a lock not held or not acquired
    /// within its wait, a batch that did not decode.
    pub error: u64,
}

/// The cache's lock figures since it started; see [`CacheStats::locks`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStats {
    /// Locks granted, at once or after waiting in line.
    pub grants: u64,
    /// Grants that had to wait in line first (the lock was held when asked for).
    pub waits: u64,
    /// Time spent in line by the callers granted a lock, summed.
    pub wait_time: Duration,
    /// Time spent in line by each grant (0 for one granted at once).
    pub wait_histogram: WaitHistogram,
    /// Waits that ran out before the lock was free (answered
    /// [`CacheError::LockTimeout`](crate::cache::CacheError::LockTimeout)).
    pub timeouts: u64,
    /// Leases that ran out while held: the holder lost the lock by time, without releasing it.
    pub lease_expiries: u64,
    /// Locks released because their holder's process ended.
    pub freed_by_exit: u64,
}

/// A histogram of lock waits with fixed bounds, in Prometheus's shape: cumulative buckets, a
/// count and a sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitHistogram {
    /// `(upper bound, waits at or below it)`, bounds ascending (1 ms, 5 ms, 10 ms, 50 ms,
    /// 100 ms, 500 ms, 1 s, 5 s, 10 s); the counts are cumulative. The `+Inf` bucket is
    /// [`count`](Self::count).
    pub buckets: Vec<(Duration, u64)>,
    /// Waits observed: one per grant.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
}

impl Default for WaitHistogram {
    /// Every bucket, empty.
    fn default() -> Self {
        Self {
            buckets: WAIT_BOUNDS.iter().map(|&le| (le, 0)).collect(),
            count: 0,
            sum: Duration::ZERO,
        }
    }
}

/// The upper bounds of [`WaitHistogram::buckets`].
pub(crate) const WAIT_BOUNDS: [Duration; 9] = [
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(10),
];

/// Counters and sizes of one collection, as the store keeps them and as
/// [`CacheStats`] reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionStats {
    /// Its name.
    pub name: String,
    /// Entries held, including expired ones not yet purged.
    pub entries: usize,
    /// Bytes held: key lengths plus value lengths.
    pub bytes: usize,
    /// `get`s that found a live entry.
    pub hits: u64,
    /// `get`s that found none.
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Expired entries removed.
    pub expiries: u64,
}

/// One operation of a batch as it travels, borrowing its strings and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BatchOp<'a> {
    Get {
        collection: &'a str,
        key: &'a str,
    },
    Set {
        collection: &'a str,
        key: &'a str,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
        ttl: Option<Duration>,
    },
    Delete {
        collection: &'a str,
        key: &'a str,
    },
    Exists {
        collection: &'a str,
        key: &'a str,
    },
    Expire {
        collection: &'a str,
        key: &'a str,
        ttl: Option<Duration>,
    },
    Ttl {
        collection: &'a str,
        key: &'a str,
    },
    Increment {
        collection: &'a str,
        key: &'a str,
        by: i64,
    },
    CompareAndSet {
        collection: &'a str,
        key: &'a str,
        #[serde(borrow, with = "serde_bytes")]
        expected: Option<&'a [u8]>,
        #[serde(borrow, with = "serde_bytes")]
        new: Option<&'a [u8]>,
        ttl: Option<Duration>,
    },
    /// A `Get` by a near-cache, which then tracks the key through its `subscription`.
    TrackedGet {
        subscription: u64,
        collection: &'a str,
        key: &'a str,
    },
}

/// The answer to one operation of a batch as it travels, borrowing its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer<'a> {
    Done,
    Value(#[serde(borrow, with = "serde_bytes")] Option<&'a [u8]>),
    Bool(bool),
    Ttl(Option<Option<Duration>>),
    Int(i64),
    /// To `TrackedGet`: the value, the time it has left, and the number of events sent to the
    /// subscription so far (`None`: the key is not tracked, the subscription is gone).
    Tracked {
        #[serde(borrow, with = "serde_bytes")]
        value: Option<&'a [u8]>,
        ttl: Option<Duration>,
        position: Option<u64>,
    },
}

/// The operations of the bytes of a [`CacheOp::Batch`], all of them or none.
///
/// # Errors
/// [`CacheError::Codec`] when the bytes are not a batch.
pub(crate) fn decode_ops(mut bytes: &[u8]) -> Result<Vec<BatchOp<'_>>, CacheError> {
    let mut ops = Vec::with_capacity((bytes.len() / 16).min(MAX_BATCH_OPS));
    while !bytes.is_empty() {
        if ops.len() == MAX_BATCH_OPS {
            return Err(CacheError::Limit(format!(
                "a batch holds at most {MAX_BATCH_OPS} operations"
            )));
        }
        let (op, rest) = postcard::take_from_bytes(bytes)
            .map_err(|e| CacheError::Codec(format!("batch operation {}: {e}", ops.len())))?;
        ops.push(op);
        bytes = rest;
    }
    Ok(ops)
}

/// Operations one batch may hold.
pub(crate) const MAX_BATCH_OPS: usize = 65_536;

/// Appends the answer to one operation of a batch to `out`.
pub(crate) fn encode_answer(out: &mut Vec<u8>, answer: &Result<Answer<'_>, &CacheError>) {
    // Into a `Vec`, these types always encode.
    let _ = postcard::to_io(answer, out);
}
