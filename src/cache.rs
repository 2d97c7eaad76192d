//! The cache: a store in the master shared by every process, with change notifications and
//! locks.
//!
//! The cache keeps a [`Store`] (the in-memory [`MemoryStore`] by default; the trait is the seam
//! for a Redis store when a cluster spans hosts). The master reaches it through
//! [`Cluster::cache`](crate::Cluster::cache), a worker through
//! [`WorkerHandle::cache`](crate::WorkerHandle::cache); both get the same typed
//! [`CacheClient`]: values are serde types at the call site and postcard bytes in between.
//!
//! - Operations run one at a time, in the order they arrive: a counter incremented from every
//!   worker at once ends exact.
//! - Each collection may be bounded (entries and bytes, [`Limits`]); the least recently used
//!   entries are evicted to make room. Keys with a time to live expire on time, without a scan
//!   of the store.
//! - [`CacheClient::subscribe`] delivers the sets, deletes, expiries and evictions of a
//!   collection's keys (by prefix) in the order they happened; a [`Replica`] keeps a local copy
//!   in sync with them.
//! - [`CacheClient::batch`] sends many key-value operations in one message each way, served
//!   back to back in the order added (a Redis pipeline, at a fraction of the cost per
//!   operation); [`CacheClient::near_cache`] keeps a process's own bounded copy of what it
//!   reads of a collection, coherent by invalidations (see [Near-caches](#near-caches)).
//! - [`CacheClient::lock`] takes an exclusive lock across all processes, first come first
//!   served, with a lease; it is released when its guard is dropped, when the lease runs out, or
//!   when the holder's process ends, however it ends.
//! - With a snapshot path, the store is written atomically (temporary file, then rename) at an
//!   interval and when the cluster stops, and loaded when it starts. The writing happens on a
//!   blocking thread, never on the master's event loop; a write that outlasts the interval makes
//!   the next one be skipped (counted in [`CacheStats::snapshots_skipped`]), not queued. A
//!   snapshot that does not check out is set aside, reported in [`CacheStats::snapshot_error`]
//!   and the log, and never loaded. The file format is private to this crate.
//!
//! - [`CacheStats`] holds the cache's figures: per collection (entries, bytes, hits, misses,
//!   evictions, expiries), operations by kind and outcome, and locks (grants, waits and their
//!   time, timeouts, leases lost by time or by the holder's exit), counted since the cache
//!   started with plain adds on the master's thread; the master's metrics read them.
//!
//! The cache lives in the master: it survives every worker crash, and an operation is applied
//! whole or not at all.
//!
//! # Near-caches
//! A [`NearCache`] answers a read of a key it holds in the reading process, with no round
//! trip; it fetches (and keeps) what it does not hold, and writes through to the master. The
//! master tracks the keys each near-cache has fetched and sends it one invalidation at the first
//! change to each (Redis's client-side caching, tracking mode). What a reader may observe,
//! through one near-cache:
//! - **Never a value the key did not have.** A read answered by the near-cache returns what the
//!   master held for the key at some earlier moment.
//! - **Its own writes at once.** Once a [`set`](NearCache::set) or [`delete`](NearCache::delete)
//!   made through the near-cache has been answered, every later read sees it or a later change;
//!   in one [`NearBatch`], a read added after a write of its key goes to the master with it.
//!   A write the process makes with a plain [`CacheClient`] call is not one of these: it is
//!   seen once its invalidation has been taken in, as a change learned of otherwise (below).
//! - **Writes that happened before it through the cluster.** The master sends the invalidation
//!   of a change as it applies it, before it answers the writer, ahead of anything sent to the
//!   reader's process after it. So when a process has written and then sent the reader's
//!   process a message (a tell, an ask, a publish, a request of the master's own code), every
//!   read made after that message has been taken in sees the write or a later change.
//! - **In order, never back.** Reads see the changes in the order the master made them: a read
//!   never returns a value older than one an earlier read (of any key) implied, and successive
//!   reads of a key never go back to an older value. While invalidations the near-cache has
//!   heard of (from a fetch's answer) are still on their way, it answers nothing itself.
//! - **Not at once for a change learned of otherwise.** A change learned of outside the cluster
//!   (a file, a socket, the clock) may not be seen yet: until its invalidation is taken in
//!   (microseconds on an idle machine; longer while the process is busy), a read may return the
//!   value before it. A near-cache is sequentially consistent, not linearizable; a plain
//!   [`CacheClient::get`] is the master's own answer, linearizable, and may be newer than what
//!   the near-cache answers next.
//! - **Never past a time to live.** The near-cache's deadline for a value is at or before the
//!   master's.
//! - **No invalidation is lost.** They are queued for the reader's process even past its
//!   outbox's limit (what a near-cache may have in flight is bounded by the keys it tracks). If
//!   some ever came out of order, or the cache became unreachable, the near-cache empties
//!   itself (once unreachable, every read goes to the master and fails).
//!
//! Limits: at most [`NearLimits::max_entries`] entries (and
//! [`NearLimits::MAX_TRACKED_KEYS`]) and [`NearLimits::max_bytes`] of keys and values, and 16
//! near-caches per process at once (then [`CacheError::Limit`]); to make
//! room, a clock picks an entry not read lately (about the least recently used). The master
//! tracks as many keys for it, the ones fetched most recently (a key it stops tracking is
//! invalidated). Reads answered by a near-cache are not counted in the master's hits and misses
//! and do not refresh the key's recency there: a key read only from near-caches may be evicted
//! from a bounded collection (which invalidates it; the next read fetches it again). Only reads
//! are answered locally: locks, counters, scans and subscriptions are the [`CacheClient`]'s. A
//! near-cache covers one collection and is used from the thread that made it.
//!
//! # One owner
//! The store, the subscriptions, the locks and the schedule of their deadlines belong to one
//! `CacheCore`, and nothing else holds any of them. The cluster's shared context owns the core
//! (as it owns the routing table), and the supervisor and every worker proxy hold a handle to
//! it on the master's one thread. A worker's operation is served by its proxy the moment its
//! frame arrives, with no message to an actor and back. That is why the core is not an actor's
//! private state: with two mailbox hops per operation the bench's `cache_vs_redis` was 0.44×,
//! served inline it is 0.6–0.8× (`cargo run --release --example bench -- --json`), and with
//! batches (one frame each way for 64 operations) and near-caches in the workers it is
//! well above 1.5×.
//!
//! The core has no clock and no timers: every operation takes `now`, and the core names its
//! next deadline (the first expiry, lease or wait). The cache's actor owns nothing (it holds the
//! core by a weak reference): it sleeps until that deadline and calls the core then, and it is
//! told when an operation brings the deadline forward, only then. It also writes the snapshots
//! and carries the operations of master callers, whose client may be on another thread.
//!
//! # On several hosts
//! When the cluster has a [`Backend`](crate::backend::Backend), the cache is the cluster's, in
//! Redis: every node's workers and master see the same keys through the same [`CacheClient`]
//! (opt out with [`RedisBackend::local_cache`](crate::backend::RedisBackend::local_cache):
//! each node then keeps an embedded cache of its own, seen by its workers only). Without a
//! backend nothing of this runs and the embedded store serves as above, on the same path.
//!
//! - **The seam.** The embedded [`Store`] stays synchronous on the master's thread. An
//!   operation for Redis is queued the moment it arrives and answered when Redis answers
//!   (`cache/remote.rs`); nothing waits on the master's loop. The queue sends what has
//!   accumulated as one pipeline, one at a time, so a process's operations run in the order
//!   it sent them (its set, then its get, sees the set). At most 8192 operations per node are
//!   queued or in flight; past that an operation fails at once with [`CacheError::Limit`]
//!   (counted as an error of its kind).
//! - **Keys and values**: `procactor:{<cluster>}:cache:<collection>:<key>`, strings, TTLs kept
//!   by Redis (`PX`); counters are decimal text so that Redis adds them exactly, converted to
//!   the postcard `i64` the client decodes (the layout is in `backend/store.rs`).
//! - **Changes** are published by the Lua script that writes (one atomic step) on
//!   `procactor:{<cluster>}:cache:events`; each node subscribes once and hands them to its own
//!   subscribers, the writer's node included. Notified: sets, deletes, increments,
//!   compare-and-sets, `expire(…, 0)`. **Not** notified: a key whose TTL Redis runs out, and
//!   Redis's own evictions (that would need keyspace notifications, a server setting; a
//!   [`Replica`] may therefore keep an expired key). Events published while the node's
//!   subscription is down (Redis unreachable) are lost. A message on the channel that is not
//!   an event is dropped, logged once and counted in [`CacheStats::bad_input`].
//! - **Ordering and near-caches.** A write is answered before its event reaches the
//!   subscribers (another connection), not after as in the embedded store. A [`NearCache`]
//!   keeps nothing on Redis (each read is a fetch): its guarantees rest on the master sending
//!   invalidations before answers, which a separate pub/sub connection cannot promise.
//! - **Locks are leases with fencing tokens.** A grant is one script (`INCR
//!   procactor:{<cluster>}:fence`, seeded from the server's clock in µs, then `SET
//!   lock:<name> <token>:<node> PX lease` if free); [`LockGuard::fencing_token`] returns the
//!   token. While the holder's process lives, its master renews the lease every third of it
//!   (compare-and-`PEXPIRE`): on Redis a lock is held until released or its holder ends —
//!   the lease is how long it outlives a node that stopped renewing, so a lock of a node that
//!   dies is free at most one lease later. A holder whose master could not renew for a whole
//!   lease has lost it (counted in `lease_expiries`). A release (compare-and-delete) publishes
//!   a release event: waiters on every node try again at once, with a poll backing off to
//!   200 ms as a fallback. A worker that ends releases its locks at once. Waiters are served
//!   in no set order across nodes (whoever's try lands first).
//! - **Redis unreachable**: each operation fails within the heartbeat (a pipeline's bound)
//!   with [`CacheError::Unavailable`] and the reason; the connection is made anew for the
//!   next one, and operations work again as soon as Redis answers. Nothing else of the node
//!   stops. A value under the cache's keys of another type or layout fails its operation with
//!   [`CacheError::Storage`] and is counted in [`CacheStats::bad_input`].
//! - **Figures**: operations are counted by kind and outcome as for the embedded store; the
//!   per-collection figures (entries, bytes, hits) are the embedded store's only (empty here),
//!   and so are snapshots (a snapshot path is ignored: Redis keeps the data).
//! - `keys` and `entries` are a `SCAN` of the database (plus `MGET`): they cost in proportion
//!   to every key Redis holds, and hold this node's later operations meanwhile.
//!
//! # Limits
//! - Everything runs on the master's thread: a slow operation (a `keys` scan of a large
//!   collection, an `entries` copy of one) holds up every other operation and every worker's
//!   frames for its duration. Exporting a snapshot's entries is such a scan too (the values are
//!   shared, not copied); encoding and writing them are not.
//! - A snapshot holds what was in the store at its export; what changed after it and before a
//!   crash is lost. At stop, the last snapshot is written after every worker has stopped.

use std::cell::RefCell;
use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use actix::{Actor, Addr};
use nix::fcntl::{Flock, FlockArg};

use crate::messaging::table::{ReplyTo, SharedRouting};
use crate::messaging::Peer;

mod actor;
mod batch;
mod client;
mod config;
mod core;
mod counters;
#[cfg(test)]
mod direct;
mod locks;
mod memory;
mod near;
pub(crate) mod ops;
mod remote;
mod remote_ops;
mod snapshot;
mod store;
mod subs;

pub(crate) use self::core::{Later, Served};
pub(crate) use locks::encode_answer;

pub use batch::{BatchAnswers, CacheBatch, Pending};
pub use client::{CacheClient, CacheTransport, LockGuard, MasterCache, Replica, Subscription};
pub use config::CacheConfig;
pub use memory::MemoryStore;
pub use near::{NearBatch, NearCache, NearLimits, NearStats};
pub use ops::{
    CacheAnswer, CacheError, CacheEvent, CacheOp, CacheStats, Change, LockStats, OpCounts,
    WaitHistogram,
};
pub use store::{
    CollectionStats, Limits, RemoveReason, Removed, SnapshotEntry, Store, StoreError, StoreStats,
};

/// The cluster's cache, as the master's own actors hold it: the one core, and the actor that
/// keeps its time; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct SharedCache {
    core: Rc<RefCell<self::core::CacheCore>>,
    /// The cluster-wide cache in Redis, when the cluster has a backend (and does not keep its
    /// cache on this node).
    remote: Option<Rc<remote::Remote>>,
    actor: Addr<actor::CacheActor>,
    /// The advisory lock on the snapshot path, held until the cluster stops.
    snapshot_lock: Rc<RefCell<Option<Flock<File>>>>,
}

/// Takes the advisory lock of the snapshot at `path` (`flock(2)` on `<path>.lock`): one cluster
/// per snapshot path, or two would overwrite each other's saves.
fn lock_snapshot(path: &Path) -> Result<Flock<File>, String> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| {
            format!(
                "snapshot {}: cannot open its lock file: {e}",
                path.display()
            )
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => format!(
            "snapshot {}: another cluster keeps its snapshot there (it holds {})",
            path.display(),
            std::path::Path::new(&name).display()
        ),
        other => format!("snapshot {}: cannot lock it: {other}", path.display()),
    })
}

impl SharedCache {
    /// A cache set up as `config` says, its snapshot loaded; its events go out by `routing`.
    /// With `link`, the cache is the cluster's, in Redis (no snapshot then: Redis keeps it).
    ///
    /// # Errors
    /// When another cluster keeps its snapshot at the same path (it holds `<path>.lock`).
    pub(crate) fn start(
        config: &CacheConfig,
        routing: SharedRouting,
        link: Option<crate::backend::StoreLink>,
    ) -> Result<Self, String> {
        let mut config = config.clone();
        if link.is_some() {
            config.snapshot = None;
        }
        let config = &config;
        let snapshot_lock = match &config.snapshot {
            Some(path) => Some(lock_snapshot(path)?),
            None => None,
        };
        let store = Box::new(config.memory_store());
        let core = self::core::CacheCore::new(store, config, routing);
        let core = Rc::new(RefCell::new(core));
        let remote = link.map(|link| remote::Remote::start(link, Rc::downgrade(&core)));
        let actor = actor::CacheActor::new(Rc::downgrade(&core), config.save_every())
            .with_remote(remote.clone())
            .start();
        Ok(Self {
            core,
            remote,
            actor,
            snapshot_lock: Rc::new(RefCell::new(snapshot_lock)),
        })
    }

    /// Serves a worker's operation now, or hands back a lock request for [`lock`](Self::lock).
    pub(crate) fn serve(&self, from: Peer, op: CacheOp) -> Served {
        if self.remote.is_some() && remote::Remote::serves(&op) {
            return Served::NeedsReply(Later::Remote(from, op));
        }
        let mut core = self.core.borrow_mut();
        let served = core.serve(from, op, Instant::now());
        self.wake_if_earlier(&mut core);
        served
    }

    /// Serves what [`serve`](Self::serve) handed back for a worker: takes a lock or puts it
    /// in line, or sends an operation to Redis; the answer goes to `reply`.
    pub(crate) fn lock(&self, later: Later, reply: ReplyTo) {
        match (later, &self.remote) {
            (Later::Remote(from, op), Some(remote)) => {
                remote.serve(from, op, locks::Reply::Worker(reply));
            }
            (Later::Remote(..), None) => {
                unreachable!("served in Redis only with a backend")
            }
            (Later::Lock(request), _) => {
                let mut core = self.core.borrow_mut();
                core.lock(request, locks::Reply::Worker(reply), Instant::now());
                self.wake_if_earlier(&mut core);
            }
        }
    }

    /// A process ended, however it ended: its locks are released and its subscriptions end.
    pub(crate) fn process_gone(&self, who: Peer) {
        if let Some(remote) = &self.remote {
            remote.process_gone(who);
        }
        let mut core = self.core.borrow_mut();
        core.process_gone(who, Instant::now());
        self.wake_if_earlier(&mut core);
    }

    /// Every figure of the cache, as [`CacheClient::stats`] gives them, taken now on the
    /// master's thread (no message to the cache's actor). Costs a copy of the per-collection
    /// figures and a few small allocations; not for a hot path.
    pub(crate) fn stats(&self) -> CacheStats {
        self.core.borrow().stats()
    }

    /// The typed client for callers in the master.
    pub(crate) fn client(&self) -> CacheClient<MasterCache> {
        CacheClient::new(MasterCache::new(self.actor.clone()))
    }

    /// Writes the last snapshot (if the cache keeps one) and stops the cache's actor; resolves
    /// once the snapshot is on disk, and lets its path go (another cluster may use it now).
    /// Nothing happens until it is polled.
    pub(crate) fn close(&self) -> impl Future<Output = ()> + 'static {
        let mailbox = self.actor.clone();
        let lock = Rc::clone(&self.snapshot_lock);
        async move {
            let _ = mailbox.send(actor::CloseCache).await;
            lock.borrow_mut().take();
        }
    }

    fn wake_if_earlier(&self, core: &mut self::core::CacheCore) {
        if let Some(at) = core.earlier_deadline() {
            self.actor.do_send(actor::Wake(at));
        }
    }
}
