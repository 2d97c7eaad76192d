//! The part of the cache that serves operations: the store and the subscriptions. The worker
//! proxies share it with the cache actor (one thread), so that a worker's operation is served
//! the moment its frame arrives.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cache::{
    snapshot, CacheAnswer, CacheConfig, CacheError, CacheEvent, CacheOp, CacheStats, Change,
    CollectionStats, RemoveReason, Removed, Store, StoreError, SubscribeLocal,
};
use crate::messaging::Peer;
use crate::routing::{Routed, SharedRouting};

enum Owner {
    Worker { id: usize, pid: u32 },
    Master(mpsc::UnboundedSender<CacheEvent>),
}

struct Sub {
    owner: Owner,
    id: u64,
    collection: String,
    prefix: String,
}

/// The store and its subscriptions; see the [module docs](self).
pub(crate) struct CacheCore {
    store: Box<dyn Store>,
    config: CacheConfig,
    routing: SharedRouting,
    subs: Vec<Sub>,
    snapshot_error: Option<String>,
    /// A key got a time to live: the actor's expiry timer must look again.
    rearm: bool,
}

impl std::fmt::Debug for CacheCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCore")
            .field("subscriptions", &self.subs.len())
            .finish_non_exhaustive()
    }
}

impl CacheCore {
    /// A cache over `store`, loading the configured snapshot into it.
    pub(crate) fn new(
        mut store: Box<dyn Store>,
        config: CacheConfig,
        routing: SharedRouting,
    ) -> Self {
        let mut snapshot_error = None;
        if let Some(path) = &config.snapshot {
            let now = Instant::now();
            match snapshot::load(path) {
                Ok(Some(entries)) => {
                    let count = entries.len();
                    store.import(entries, now);
                    tracing::info!(path = %path.display(), entries = count, "cache snapshot loaded");
                }
                Ok(None) => {}
                Err(e) => {
                    let aside = snapshot::set_aside(path);
                    let aside = match &aside {
                        Ok(p) => p.display().to_string(),
                        Err(err) => format!("(could not be set aside: {err})"),
                    };
                    tracing::error!(path = %path.display(), error = %e, set_aside = %aside, "cache snapshot is corrupt; starting empty");
                    snapshot_error = Some(format!("{e}; set aside as {aside}"));
                }
            }
        }
        Self {
            store,
            config,
            routing,
            subs: Vec::new(),
            snapshot_error,
            rearm: false,
        }
    }

    pub(crate) fn save(&self) {
        let Some(path) = &self.config.snapshot else {
            return;
        };
        if let Err(e) = snapshot::save(self.store.as_ref(), path, Instant::now()) {
            tracing::error!(path = %path.display(), error = %e, "cache snapshot not written");
        }
    }

    pub(crate) fn snapshot_interval(&self) -> Option<Duration> {
        self.config
            .snapshot
            .as_ref()
            .and(self.config.snapshot_interval)
    }

    /// Whether a time to live was set since the last call.
    pub(crate) fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    pub(crate) fn purge_expired(&mut self, now: Instant) {
        let expired = self.store.purge_expired(now);
        self.removed(expired);
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.store.next_expiry()
    }

    pub(crate) fn subscribe_local(&mut self, sub: SubscribeLocal) {
        self.subs.push(Sub {
            owner: Owner::Master(sub.tx),
            id: sub.id,
            collection: sub.collection,
            prefix: sub.prefix,
        });
    }

    /// A worker's process ended: its subscriptions end.
    pub(crate) fn process_gone(&mut self, id: usize, pid: u32) {
        self.subs
            .retain(|s| !matches!(s.owner, Owner::Worker { id: w, pid: p } if w == id && p == pid));
    }

    /// Tells subscribers about a change.
    fn notify(&mut self, collection: &str, key: &str, change: &Change) {
        self.subs.retain(|sub| {
            if sub.collection != collection || !key.starts_with(&sub.prefix) {
                return true;
            }
            let event = CacheEvent {
                subscription: sub.id,
                collection: collection.to_owned(),
                key: key.to_owned(),
                change: change.clone(),
            };
            match &sub.owner {
                Owner::Master(tx) => tx.send(event).is_ok(),
                Owner::Worker { id, pid } => {
                    let mut payload = Vec::new();
                    if crate::codec::encode_value(&mut payload, &event).is_err() {
                        return true;
                    }
                    if let Some(slot) = self.routing.borrow().slots.get(*id) {
                        slot.do_send(Routed::Notify {
                            pid: *pid,
                            payload: payload.into(),
                        });
                    }
                    true
                }
            }
        });
    }

    fn removed(&mut self, removed: Vec<Removed>) {
        for r in removed {
            let change = match r.reason {
                RemoveReason::Evicted => Change::Evicted,
                RemoveReason::Expired => Change::Expired,
            };
            self.notify(&r.collection, &r.key, &change);
        }
    }

    /// Serves `op` now, or gives it back when it needs the actor (locks, stats).
    pub(crate) fn serve(
        &mut self,
        from: Peer,
        op: CacheOp,
    ) -> Result<Result<CacheAnswer, CacheError>, CacheOp> {
        let now = Instant::now();
        let store_err = |e: StoreError| match e {
            StoreError::TooLarge { .. } | StoreError::NoCapacity { .. } => {
                CacheError::TooLarge(e.to_string())
            }
            other => CacheError::NotAnInteger(other.to_string()),
        };
        let answer: Result<CacheAnswer, CacheError> = match op {
            CacheOp::Get { collection, key } => Ok(CacheAnswer::Value(
                self.store
                    .get(&collection, &key, now)
                    .map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
            )),
            CacheOp::Set {
                collection,
                key,
                value,
                ttl,
            } => {
                let value = Bytes::from(value);
                match self.store.set(&collection, &key, value.clone(), ttl, now) {
                    Ok(evicted) => {
                        self.removed(evicted);
                        self.notify(&collection, &key, &Change::Set(value.to_vec().into()));
                        if ttl.is_some() {
                            self.rearm = true;
                        }
                        Ok(CacheAnswer::Done)
                    }
                    Err(e) => Err(store_err(e)),
                }
            }
            CacheOp::Delete { collection, key } => {
                let deleted = self.store.delete(&collection, &key, now);
                if deleted {
                    self.notify(&collection, &key, &Change::Deleted);
                }
                Ok(CacheAnswer::Bool(deleted))
            }
            CacheOp::Exists { collection, key } => {
                Ok(CacheAnswer::Bool(self.store.exists(&collection, &key, now)))
            }
            CacheOp::Expire {
                collection,
                key,
                ttl,
            } => {
                let done = self.store.expire(&collection, &key, ttl, now);
                if done && ttl.is_some() {
                    self.rearm = true;
                }
                Ok(CacheAnswer::Bool(done))
            }
            CacheOp::Ttl { collection, key } => {
                Ok(CacheAnswer::Ttl(self.store.ttl(&collection, &key, now)))
            }
            CacheOp::Increment {
                collection,
                key,
                by,
            } => match self.store.increment(&collection, &key, by, None, now) {
                Ok((n, evicted)) => {
                    self.removed(evicted);
                    if !self.subs.is_empty() {
                        let mut value = Vec::new();
                        if crate::codec::encode_value(&mut value, &n).is_ok() {
                            self.notify(&collection, &key, &Change::Set(value.into()));
                        }
                    }
                    Ok(CacheAnswer::Int(n))
                }
                Err(e) => Err(store_err(e)),
            },
            CacheOp::CompareAndSet {
                collection,
                key,
                expected,
                new,
                ttl,
            } => {
                let new_value = new.map(|v| Bytes::from(v.into_vec()));
                match self.store.compare_and_set(
                    &collection,
                    &key,
                    expected.as_deref().map(|v| &v[..]),
                    new_value.clone(),
                    ttl,
                    now,
                ) {
                    Ok((true, evicted)) => {
                        self.removed(evicted);
                        match new_value {
                            Some(v) => {
                                self.notify(&collection, &key, &Change::Set(v.to_vec().into()))
                            }
                            // Deleting what was there (an absent key "deleted" is no change).
                            None if expected.is_some() => {
                                self.notify(&collection, &key, &Change::Deleted)
                            }
                            None => {}
                        }
                        if ttl.is_some() {
                            self.rearm = true;
                        }
                        Ok(CacheAnswer::Bool(true))
                    }
                    Ok((false, _)) => Ok(CacheAnswer::Bool(false)),
                    Err(e) => Err(store_err(e)),
                }
            }
            CacheOp::Keys { collection, prefix } => Ok(CacheAnswer::Keys(self.store.keys(
                &collection,
                &prefix,
                now,
            ))),
            CacheOp::Entries { collection, prefix } => {
                let keys = self.store.keys(&collection, &prefix, now);
                let entries = keys
                    .into_iter()
                    .filter_map(|k| {
                        let v = self.store.get(&collection, &k, now)?;
                        Some((k, serde_bytes::ByteBuf::from(v.to_vec())))
                    })
                    .collect();
                Ok(CacheAnswer::Entries(entries))
            }
            CacheOp::Subscribe {
                id,
                collection,
                prefix,
            } => match from {
                Peer::Worker { id: worker, pid } => {
                    self.subs.push(Sub {
                        owner: Owner::Worker { id: worker, pid },
                        id,
                        collection,
                        prefix,
                    });
                    Ok(CacheAnswer::Done)
                }
                Peer::Master => Err(CacheError::Unreachable(
                    "the master subscribes through CacheClient::subscribe".into(),
                )),
            },
            CacheOp::Unsubscribe { id } => {
                self.subs.retain(|s| {
                    !(s.id == id
                        && match (&s.owner, from) {
                            (Owner::Worker { id: w, pid: p }, Peer::Worker { id, pid }) => {
                                *w == id && *p == pid
                            }
                            (Owner::Master(_), Peer::Master) => true,
                            _ => false,
                        })
                });
                Ok(CacheAnswer::Done)
            }
            op @ (CacheOp::Lock { .. } | CacheOp::Unlock { .. } | CacheOp::Stats) => {
                return Err(op)
            }
        };
        Ok(answer)
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let store = self.store.stats();
        CacheStats {
            collections: store
                .collections
                .into_iter()
                .map(|(name, c)| CollectionStats {
                    name,
                    entries: c.entries,
                    bytes: c.bytes,
                    hits: c.hits,
                    misses: c.misses,
                    evictions: c.evictions,
                    expiries: c.expiries,
                })
                .collect(),
            locks_held: 0,
            lock_waiters: 0,
            subscriptions: self.subs.len(),
            snapshot_error: self.snapshot_error.clone(),
        }
    }
}
