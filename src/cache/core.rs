//! [`CacheCore`], the one owner of the cache's state; see the [module docs](crate::cache).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::cache::config::CacheConfig;
use crate::cache::locks::{LockRequest, LockTable, Reply};
use crate::cache::ops::{CacheAnswer, CacheError, CacheEvent, CacheOp, CacheStats, Change};
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
    /// A lock, which may have to wait in line: the caller gives it somewhere to send the
    /// answer, with [`CacheCore::lock`].
    NeedsReply(LockRequest),
}

type Answer = Result<CacheAnswer, CacheError>;

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
    /// The deadline the actor's timer is set for.
    armed: Option<Instant>,
    /// An operation may have brought the next deadline forward since the last look.
    deadline_moved: bool,
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
            armed: None,
            deadline_moved: false,
        }
    }

    /// Serves `op` now, or hands back a lock request that needs somewhere to send its answer.
    pub(crate) fn serve(&mut self, from: Peer, op: CacheOp, now: Instant) -> Served {
        Served::Answer(match op {
            CacheOp::Get { collection, key } => Ok(CacheAnswer::Value(
                self.store
                    .get(&collection, &key, now)
                    .map(|v| ByteBuf::from(v.to_vec())),
            )),
            CacheOp::Set {
                collection,
                key,
                value,
                ttl,
            } => self.set(&collection, &key, value, ttl, now),
            CacheOp::Delete { collection, key } => Ok(self.delete(&collection, &key, now)),
            CacheOp::Exists { collection, key } => {
                Ok(CacheAnswer::Bool(self.store.exists(&collection, &key, now)))
            }
            CacheOp::Expire {
                collection,
                key,
                ttl,
            } => {
                self.deadline_moved |= ttl.is_some();
                let done = self.store.expire(&collection, &key, ttl, now);
                Ok(CacheAnswer::Bool(done))
            }
            CacheOp::Ttl { collection, key } => {
                Ok(CacheAnswer::Ttl(self.store.ttl(&collection, &key, now)))
            }
            CacheOp::Increment {
                collection,
                key,
                by,
            } => self.increment(&collection, &key, by, now),
            CacheOp::CompareAndSet {
                collection,
                key,
                expected,
                new,
                ttl,
            } => self.compare_and_set(&collection, &key, expected, new, ttl, now),
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
                let who = from;
                let request = LockRequest {
                    who,
                    name,
                    lease,
                    wait,
                };
                return Served::NeedsReply(request);
            }
            CacheOp::Unlock { name, token } => {
                self.deadline_moved = true;
                self.locks.unlock(&name, token, from, now)
            }
            CacheOp::Stats => Ok(CacheAnswer::Stats(self.stats())),
        })
    }

    /// Takes a lock now or puts the caller in line; the answer goes to `reply`.
    pub(crate) fn lock(&mut self, request: LockRequest, reply: Reply, now: Instant) {
        self.deadline_moved = true;
        self.locks.lock(request, reply, now);
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

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            collections: self.store.stats().collections,
            locks_held: self.locks.held(),
            lock_waiters: self.locks.waiting(),
            subscriptions: self.subs.len(),
            snapshot_error: self.snapshot_error.clone(),
            snapshots_written: self.snapshots_written,
            snapshots_skipped: self.snapshots_skipped,
        }
    }

    fn set(
        &mut self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Answer {
        let value = Bytes::from(value);
        let evicted = self.store.set(collection, key, value.clone(), ttl, now)?;
        self.removed(evicted);
        self.subs
            .notify(collection, key, || Change::Set(value.to_vec().into()));
        self.deadline_moved |= ttl.is_some();
        Ok(CacheAnswer::Done)
    }

    fn delete(&mut self, collection: &str, key: &str, now: Instant) -> CacheAnswer {
        let deleted = self.store.delete(collection, key, now);
        if deleted {
            self.subs.notify(collection, key, || Change::Deleted);
        }
        CacheAnswer::Bool(deleted)
    }

    fn increment(&mut self, collection: &str, key: &str, by: i64, now: Instant) -> Answer {
        let (n, evicted) = self.store.increment(collection, key, by, None, now)?;
        self.removed(evicted);
        self.subs.notify(collection, key, || {
            let mut value = Vec::new();
            // An i64 always encodes.
            let _ = crate::codec::encode_value(&mut value, &n);
            Change::Set(value.into())
        });
        Ok(CacheAnswer::Int(n))
    }

    fn compare_and_set(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<ByteBuf>,
        new: Option<ByteBuf>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Answer {
        let new_value = new.map(|v| Bytes::from(v.into_vec()));
        let expected_bytes = expected.as_deref().map(|v| &v[..]);
        let (done, evicted) = self.store.compare_and_set(
            collection,
            key,
            expected_bytes,
            new_value.clone(),
            ttl,
            now,
        )?;
        if !done {
            return Ok(CacheAnswer::Bool(false));
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
        Ok(CacheAnswer::Bool(true))
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
