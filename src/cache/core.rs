//! [`CacheCore`], the one owner of the cache's state; see the [module docs](crate::cache).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::cache::config::CacheConfig;
use crate::cache::counters::{OpCounters, OpKind};
use crate::cache::locks::{LockRequest, LockTable, Reply};
use crate::cache::ops::{
    self, BatchOp, CacheAnswer, CacheError, CacheEvent, CacheOp, CacheStats, Change,
};
use crate::cache::snapshot;
use crate::cache::store::{RemoveReason, Removed, SnapshotEntry, Store};
use crate::cache::subs::Subscribers;
use crate::messaging::table::SharedRouting;
use crate::messaging::Peer;

/// What became of an operation handed to [`CacheCore::serve`].
#[derive(Debug)]
pub(crate) enum Served {
    /// Done: the answer.
    Answer(Result<CacheAnswer, CacheError>),
    /// Answered later (a lock, which may have to wait in line; any operation on the
    /// cluster's cache in Redis): the caller gives it somewhere to send the answer, with
    /// [`SharedCache::lock`](crate::cache::SharedCache::lock).
    NeedsReply(Later),
}

/// An operation answered later; see [`Served::NeedsReply`].
#[derive(Debug)]
pub(crate) enum Later {
    /// A lock in the embedded store.
    Lock(LockRequest),
    /// An operation on the cluster's cache in Redis, from this process.
    Remote(Peer, CacheOp),
}

type Answer = Result<CacheAnswer, CacheError>;

/// The answer to a key-value operation, its value shared with the store.
#[derive(Debug)]
enum KvAnswer {
    Done,
    Value(Option<Bytes>),
    Bool(bool),
    Ttl(Option<Option<Duration>>),
    Int(i64),
    Tracked {
        value: Option<Bytes>,
        ttl: Option<Duration>,
        position: Option<u64>,
    },
}

/// Bytes of answers one batch builds at most before the rest of it is refused (`Limit`); under
/// the default frame size, so a batch's answer still fits in a frame.
pub(crate) const MAX_BATCH_ANSWER_BYTES: usize = 8 * 1024 * 1024;

impl KvAnswer {
    /// As it travels in a batch, borrowing its value.
    fn wire(&self) -> ops::Answer<'_> {
        match self {
            KvAnswer::Done => ops::Answer::Done,
            KvAnswer::Value(v) => ops::Answer::Value(v.as_deref()),
            KvAnswer::Bool(b) => ops::Answer::Bool(*b),
            KvAnswer::Ttl(t) => ops::Answer::Ttl(*t),
            KvAnswer::Int(n) => ops::Answer::Int(*n),
            KvAnswer::Tracked {
                value,
                ttl,
                position,
            } => ops::Answer::Tracked {
                value: value.as_deref(),
                ttl: *ttl,
                position: *position,
            },
        }
    }
}

impl From<KvAnswer> for CacheAnswer {
    fn from(answer: KvAnswer) -> Self {
        match answer {
            KvAnswer::Done => CacheAnswer::Done,
            KvAnswer::Value(v) => CacheAnswer::Value(v.map(|v| ByteBuf::from(v.to_vec()))),
            KvAnswer::Bool(b) => CacheAnswer::Bool(b),
            KvAnswer::Ttl(t) => CacheAnswer::Ttl(t),
            KvAnswer::Int(n) => CacheAnswer::Int(n),
            // Only in a batch; alone, it is a get.
            KvAnswer::Tracked { value, .. } => {
                CacheAnswer::Value(value.map(|v| ByteBuf::from(v.to_vec())))
            }
        }
    }
}

/// The store, the subscriptions, the locks and the schedule of their deadlines; see the
/// [module docs](crate::cache).
#[derive(Debug)]
pub(crate) struct CacheCore {
    store: Box<dyn Store>,
    subs: Subscribers,
    locks: LockTable,
    snapshot: Option<PathBuf>,
    snapshot_error: Option<String>,
    snapshots_written: u64,
    snapshots_skipped: u64,
    /// Operations served, by kind and outcome (locks: in `locks`).
    ops: OpCounters,
    /// The deadline the actor's timer is set for.
    armed: Option<Instant>,
    /// An operation may have brought the next deadline forward since the last look.
    deadline_moved: bool,
    /// See [`CacheStats::bad_input`].
    bad_input: u64,
}

impl CacheCore {
    /// A cache over `store`, loading the configured snapshot into it.
    pub(crate) fn new(
        mut store: Box<dyn Store>,
        config: &CacheConfig,
        routing: SharedRouting,
    ) -> Self {
        let snapshot_error = config
            .snapshot
            .as_deref()
            .and_then(|path| load(store.as_mut(), path));
        Self {
            store,
            subs: Subscribers::new(routing),
            locks: LockTable::default(),
            snapshot: config.snapshot.clone(),
            snapshot_error,
            snapshots_written: 0,
            snapshots_skipped: 0,
            ops: OpCounters::default(),
            armed: None,
            deadline_moved: false,
            bad_input: 0,
        }
    }

    /// Serves `op` now, or hands back a lock request that needs somewhere to send its answer;
    /// counts it by kind and outcome (a lock: once [`LockTable`] answers it).
    pub(crate) fn serve(&mut self, from: Peer, op: CacheOp, now: Instant) -> Served {
        let kind = OpKind::of(&op);
        let served = self.serve_op(from, op, now);
        if let Served::Answer(answer) = &served {
            self.ops.count(kind, answer.is_ok());
        }
        served
    }

    fn serve_op(&mut self, from: Peer, op: CacheOp, now: Instant) -> Served {
        if let Some(kv) = op.key_value() {
            return Served::Answer(self.apply(from, kv, now).map(CacheAnswer::from));
        }
        Served::Answer(match op {
            CacheOp::Set {
                collection,
                key,
                value,
                ttl,
            } => self
                .set(&collection, &key, Bytes::from(value), ttl, now)
                .map(|()| CacheAnswer::Done),
            CacheOp::CompareAndSet {
                collection,
                key,
                expected,
                new,
                ttl,
            } => {
                let new = new.map(|v| Bytes::from(v.into_vec()));
                let expected = expected.as_deref().map(|v| &v[..]);
                self.compare_and_set(&collection, &key, expected, new, ttl, now)
                    .map(CacheAnswer::Bool)
            }
            CacheOp::Keys { collection, prefix } => Ok(CacheAnswer::Keys(self.store.keys(
                &collection,
                &prefix,
                now,
            ))),
            CacheOp::Entries { collection, prefix } => Ok(self.entries(&collection, &prefix, now)),
            CacheOp::Subscribe {
                id,
                collection,
                prefix,
            } => self.subscribe(from, id, collection, prefix),
            CacheOp::Unsubscribe { id } => {
                self.subs.remove(id, from);
                Ok(CacheAnswer::Done)
            }
            CacheOp::Lock { name, lease, wait } => {
                let request = LockRequest {
                    who: from,
                    name,
                    lease,
                    wait,
                };
                return Served::NeedsReply(Later::Lock(request));
            }
            CacheOp::Unlock { name, token } => {
                self.deadline_moved = true;
                self.locks.unlock(&name, token, from, now)
            }
            CacheOp::Stats => Ok(CacheAnswer::Stats(self.stats())),
            CacheOp::Batch(ops) => self.batch(from, &ops, now),
            CacheOp::Track {
                subscription,
                max_keys,
            } => self
                .subs
                .track(subscription, from, max_keys as usize)
                .map(|seen| CacheAnswer::Int(seen as i64)),
            // Served by `apply` above.
            CacheOp::Get { .. }
            | CacheOp::Delete { .. }
            | CacheOp::Exists { .. }
            | CacheOp::Expire { .. }
            | CacheOp::Ttl { .. }
            | CacheOp::Increment { .. } => unreachable!("a key-value operation"),
        })
    }

    /// Takes a lock now or puts the caller in line; the answer goes to `reply`.
    pub(crate) fn lock(&mut self, request: LockRequest, reply: Reply, now: Instant) {
        self.deadline_moved = true;
        self.locks.lock(request, reply, now);
    }

    /// Counts an operation served elsewhere (in Redis).
    pub(crate) fn count(&mut self, kind: OpKind, ok: bool) {
        self.ops.count(kind, ok);
    }

    /// Counts a value or a message from Redis that this crate did not write.
    pub(crate) fn bad_input(&mut self) {
        self.bad_input += 1;
    }

    /// Tells the subscribers of `key` of a change made elsewhere (in Redis).
    pub(crate) fn notify(&mut self, collection: &str, key: &str, change: Change) {
        self.subs.notify(collection, key, || change);
    }

    /// The lock figures, for the locks kept in Redis.
    pub(crate) fn lock_counters(&mut self) -> &mut crate::cache::counters::LockCounters {
        self.locks.counters_mut()
    }

    /// A process ended: its locks are released and its subscriptions end.
    pub(crate) fn process_gone(&mut self, who: Peer, now: Instant) {
        self.deadline_moved = true;
        self.subs.process_gone(who);
        self.locks.process_gone(who, now);
    }

    /// A subscription from the master itself, whose events go down `tx`.
    pub(crate) fn subscribe_master(
        &mut self,
        id: u64,
        collection: String,
        prefix: String,
        tx: mpsc::UnboundedSender<CacheEvent>,
    ) {
        self.subs.add_master(id, collection, prefix, tx);
        self.ops.count(OpKind::Subscribe, true);
    }

    /// Does what is due by `now` (expiries, leases, waits) and returns the next deadline, which
    /// the caller sets its timer for.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Instant> {
        let expired = self.store.purge_expired(now);
        self.removed(expired);
        self.locks.expire(now);
        self.deadline_moved = false;
        self.armed = self.next_deadline();
        self.armed
    }

    /// The next deadline if the last operations brought it before the one the timer is set
    /// for; the caller sets the timer for it. `None` most of the time, and cheap then.
    pub(crate) fn earlier_deadline(&mut self) -> Option<Instant> {
        if !std::mem::take(&mut self.deadline_moved) {
            return None;
        }
        let next = self.next_deadline()?;
        if self.armed.is_some_and(|armed| armed <= next) {
            return None;
        }
        self.armed = Some(next);
        Some(next)
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.store.next_expiry(), self.locks.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Where the snapshot goes, if anywhere.
    pub(crate) fn snapshot_path(&self) -> Option<&Path> {
        self.snapshot.as_deref()
    }

    /// The live entries, for a snapshot. The values are shared with the store, not copied.
    pub(crate) fn export(&self, now: Instant) -> Vec<SnapshotEntry> {
        self.store.export(now)
    }

    /// A snapshot was written.
    pub(crate) fn snapshot_written(&mut self) {
        self.snapshots_written += 1;
    }

    /// A snapshot was due while the last was still being written, and skipped.
    pub(crate) fn snapshot_skipped(&mut self) {
        self.snapshots_skipped += 1;
    }

    /// Every figure of the cache: the store's, the counts since start, what is held now.
    pub(crate) fn stats(&self) -> CacheStats {
        let store = self.store.stats();
        CacheStats {
            collections: store.collections,
            unknown_misses: store.unknown_misses,
            operations: self.ops.report(self.locks.counters()),
            locks: self.locks.stats(),
            locks_held: self.locks.held(),
            lock_waiters: self.locks.waiting(),
            subscriptions: self.subs.len(),
            snapshot_error: self.snapshot_error.clone(),
            snapshots_written: self.snapshots_written,
            snapshots_skipped: self.snapshots_skipped,
            bad_input: self.bad_input,
        }
    }

    /// Serves the operations of a batch in order, one after another, and writes their answers
    /// one after another; a batch that does not decode is served not at all.
    ///
    /// Bounded: at most [`ops::MAX_BATCH_OPS`] operations, and once the answers reach
    /// [`MAX_BATCH_ANSWER_BYTES`] the rest are answered `Limit` without being served (a batch of
    /// many `get`s of a large value cannot make the master build more than a frame's worth).
    fn batch(&mut self, from: Peer, ops: &[u8], now: Instant) -> Answer {
        let ops = ops::decode_ops(ops)?;
        let mut out = Vec::with_capacity(4 * ops.len());
        for op in ops {
            let kind = OpKind::of_batch(&op);
            let answer = if out.len() < MAX_BATCH_ANSWER_BYTES {
                self.apply(from, op, now)
            } else {
                Err(CacheError::Limit(format!(
                    "the batch's answers passed {MAX_BATCH_ANSWER_BYTES} bytes: not served"
                )))
            };
            self.ops.count(kind, answer.is_ok());
            ops::encode_answer(&mut out, &answer.as_ref().map(KvAnswer::wire));
        }
        Ok(CacheAnswer::Batch(out))
    }

    /// Serves one key-value operation, alone or in a batch.
    fn apply(&mut self, from: Peer, op: BatchOp<'_>, now: Instant) -> Result<KvAnswer, CacheError> {
        Ok(match op {
            BatchOp::TrackedGet {
                subscription,
                collection,
                key,
            } => {
                let value = self.store.get(collection, key, now);
                let ttl = match value {
                    Some(_) => self.store.ttl(collection, key, now).flatten(),
                    None => None,
                };
                let position = self.subs.track_key(subscription, from, collection, key);
                KvAnswer::Tracked {
                    value,
                    ttl,
                    position,
                }
            }
            BatchOp::Get { collection, key } => {
                KvAnswer::Value(self.store.get(collection, key, now))
            }
            BatchOp::Set {
                collection,
                key,
                value,
                ttl,
            } => {
                self.set(collection, key, Bytes::copy_from_slice(value), ttl, now)?;
                KvAnswer::Done
            }
            BatchOp::Delete { collection, key } => {
                KvAnswer::Bool(self.delete(collection, key, now))
            }
            BatchOp::Exists { collection, key } => {
                KvAnswer::Bool(self.store.exists(collection, key, now))
            }
            BatchOp::Expire {
                collection,
                key,
                ttl,
            } => {
                self.deadline_moved |= ttl.is_some();
                KvAnswer::Bool(self.store.expire(collection, key, ttl, now))
            }
            BatchOp::Ttl { collection, key } => KvAnswer::Ttl(self.store.ttl(collection, key, now)),
            BatchOp::Increment {
                collection,
                key,
                by,
            } => KvAnswer::Int(self.increment(collection, key, by, now)?),
            BatchOp::CompareAndSet {
                collection,
                key,
                expected,
                new,
                ttl,
            } => {
                let new = new.map(Bytes::copy_from_slice);
                KvAnswer::Bool(self.compare_and_set(collection, key, expected, new, ttl, now)?)
            }
        })
    }

    fn set(
        &mut self,
        collection: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(), CacheError> {
        let evicted = self.store.set(collection, key, value.clone(), ttl, now)?;
        self.removed(evicted);
        self.subs
            .notify(collection, key, || Change::Set(value.to_vec().into()));
        self.deadline_moved |= ttl.is_some();
        Ok(())
    }

    fn delete(&mut self, collection: &str, key: &str, now: Instant) -> bool {
        let deleted = self.store.delete(collection, key, now);
        if deleted {
            self.subs.notify(collection, key, || Change::Deleted);
        }
        deleted
    }

    fn increment(
        &mut self,
        collection: &str,
        key: &str,
        by: i64,
        now: Instant,
    ) -> Result<i64, CacheError> {
        let (n, evicted) = self.store.increment(collection, key, by, None, now)?;
        self.removed(evicted);
        self.subs.notify(collection, key, || {
            let mut value = Vec::new();
            // An i64 always encodes.
            let _ = crate::codec::encode_value(&mut value, &n);
            Change::Set(value.into())
        });
        Ok(n)
    }

    fn compare_and_set(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<&[u8]>,
        new_value: Option<Bytes>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<bool, CacheError> {
        let (done, evicted) =
            self.store
                .compare_and_set(collection, key, expected, new_value.clone(), ttl, now)?;
        if !done {
            return Ok(false);
        }
        self.removed(evicted);
        match new_value {
            Some(v) => self
                .subs
                .notify(collection, key, || Change::Set(v.to_vec().into())),
            // Deleting what was there (an absent key "deleted" is no change).
            None if expected.is_some() => self.subs.notify(collection, key, || Change::Deleted),
            None => {}
        }
        self.deadline_moved |= ttl.is_some();
        Ok(true)
    }

    fn entries(&mut self, collection: &str, prefix: &str, now: Instant) -> CacheAnswer {
        let keys = self.store.keys(collection, prefix, now);
        let entries = keys
            .into_iter()
            .filter_map(|k| {
                let v = self.store.get(collection, &k, now)?;
                Some((k, ByteBuf::from(v.to_vec())))
            })
            .collect();
        CacheAnswer::Entries(entries)
    }

    fn subscribe(&mut self, from: Peer, id: u64, collection: String, prefix: String) -> Answer {
        match from {
            Peer::Worker { id: worker, pid } => {
                self.subs.add_worker((worker, pid), id, collection, prefix);
                Ok(CacheAnswer::Done)
            }
            Peer::Master => Err(CacheError::Unreachable(
                "the master subscribes through CacheClient::subscribe".into(),
            )),
            Peer::Remote { .. } => Err(CacheError::Unreachable(
                "a worker of another node subscribes through its own node".into(),
            )),
        }
    }

    fn removed(&mut self, removed: Vec<Removed>) {
        for r in removed {
            let change = match r.reason {
                RemoveReason::Evicted => Change::Evicted,
                RemoveReason::Expired => Change::Expired,
            };
            self.subs.notify(&r.collection, &r.key, || change);
        }
    }
}

/// Loads the snapshot at `path` into `store`; a corrupt one is set aside, and why is returned.
fn load(store: &mut dyn Store, path: &Path) -> Option<String> {
    match snapshot::load(path) {
        Ok(Some(entries)) => {
            let count = entries.len();
            store.import(entries, Instant::now());
            tracing::info!(path = %path.display(), entries = count, "cache snapshot loaded");
            None
        }
        Ok(None) => None,
        Err(e) => {
            let aside = match snapshot::set_aside(path) {
                Ok(p) => p.display().to_string(),
                Err(err) => format!("(could not be set aside: {err})"),
            };
            tracing::error!(path = %path.display(), error = %e, set_aside = %aside, "cache snapshot is corrupt; starting empty");
            Some(format!("{e}; set aside as {aside}"))
        }
    }
}
