//! The cache: a store in the master shared by every process, with change notifications and
//! locks.
//!
//! The [`Cache`] actor owns a [`Store`] (the in-memory [`MemoryStore`] by default; the trait is
//! the seam for a Redis store when a cluster spans hosts). The master reaches it through
//! [`Cluster::cache`](crate::Cluster::cache), a worker through
//! [`WorkerHandle::cache`](crate::WorkerHandle::cache); both get the same typed
//! [`CacheClient`]: values are serde types at the call site and postcard bytes in between.
//!
//! - Operations run one at a time, in the order they arrive: a counter incremented from every
//!   worker at once ends exact.
//! - Each collection may be bounded (entries and bytes); the least recently used entries are
//!   evicted to make room. Keys with a time to live expire on time, without a scan of the store.
//! - [`CacheClient::subscribe`] delivers the sets, deletes, expiries and evictions of a
//!   collection's keys (by prefix) in the order they happened; a [`Replica`] keeps a local copy
//!   in sync with them.
//! - [`CacheClient::lock`] takes an exclusive lock across all processes, first come first
//!   served, with a lease; it is released when its guard is dropped, when the lease runs out, or
//!   when the holder's process ends, however it ends.
//! - With a snapshot path, the store is written atomically (temporary file, then rename) at an
//!   interval and when the cluster stops, and loaded when it starts. A snapshot that does not
//!   check out is set aside, reported in [`CacheStats::snapshot_error`] and the log, and never
//!   loaded.
//!
//! The cache lives in the master: it survives every worker crash, and an operation is applied
//! whole or not at all.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::messaging::Peer;
use crate::routing::{ReplyTo, Routed, SharedRouting};

mod client;
mod ops;
pub mod snapshot;
pub mod store;

pub use client::{CacheClient, CacheTransport, LockGuard, MasterCache, Replica, Subscription};
pub use ops::{CacheAnswer, CacheError, CacheEvent, CacheOp, CacheStats, Change, CollectionStats};
pub use store::{Limits, MemoryStore, RemoveReason, Removed, Store, StoreError, StoreStats};

/// How the cluster's cache is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Limits of every collection (default: unbounded).
    pub limits: CacheLimits,
    /// Limits of named collections, overriding `limits`.
    pub collections: Vec<(String, CacheLimits)>,
    /// Where the snapshot is kept; `None` keeps nothing on disk.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written besides at stop; `None`: only at stop.
    #[serde(with = "opt_millis")]
    pub snapshot_interval: Option<Duration>,
}

/// The bounds of a collection; the serde form of [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheLimits {
    /// At most this many entries.
    pub max_entries: Option<usize>,
    /// At most this many bytes of keys and values.
    pub max_bytes: Option<usize>,
}

impl From<CacheLimits> for Limits {
    fn from(l: CacheLimits) -> Self {
        Limits {
            max_entries: l.max_entries,
            max_bytes: l.max_bytes,
        }
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// A cache operation for the [`Cache`] actor, answered through `reply`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CacheCall {
    pub(crate) from: Peer,
    pub(crate) op: CacheOp,
    pub(crate) reply: ReplyTo,
}

/// A subscription from the master itself, whose events go to `tx`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CacheError>")]
pub(crate) struct SubscribeLocal {
    pub(crate) id: u64,
    pub(crate) collection: String,
    pub(crate) prefix: String,
    pub(crate) tx: mpsc::UnboundedSender<CacheEvent>,
}

/// A process ended: its locks are released and its subscriptions end.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ProcessGone(pub(crate) Peer);

/// Writes the snapshot (if configured) and stops the cache; sent when the cluster stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Flush;

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

struct Waiter {
    who: Peer,
    lease: Duration,
    reply: ReplyTo,
    ticket: u64,
}

#[derive(Default)]
struct LockState {
    holder: Option<(Peer, u64)>,
    queue: VecDeque<Waiter>,
}

/// The cache actor; see the [module docs](self).
pub struct Cache {
    store: Box<dyn Store>,
    config: CacheConfig,
    routing: SharedRouting,
    subs: Vec<Sub>,
    locks: HashMap<String, LockState>,
    next_ticket: u64,
    expiry: Option<(Instant, SpawnHandle)>,
    snapshot_error: Option<String>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("subscriptions", &self.subs.len())
            .field("locks", &self.locks.len())
            .finish_non_exhaustive()
    }
}

impl Cache {
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
            locks: HashMap::new(),
            next_ticket: 1,
            expiry: None,
            snapshot_error,
        }
    }

    fn save(&self) {
        let Some(path) = &self.config.snapshot else {
            return;
        };
        if let Err(e) = snapshot::save(self.store.as_ref(), path, Instant::now()) {
            tracing::error!(path = %path.display(), error = %e, "cache snapshot not written");
        }
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

    /// Removes what has expired and sleeps until the next expiry.
    fn arm_expiry(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let expired = self.store.purge_expired(now);
        self.removed(expired);
        let Some(next) = self.store.next_expiry() else {
            if let Some((_, handle)) = self.expiry.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if let Some((at, handle)) = self.expiry {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(next.saturating_duration_since(now), |act, ctx| {
            act.expiry = None;
            act.arm_expiry(ctx);
        });
        self.expiry = Some((next, handle));
    }

    fn run(&mut self, from: Peer, op: CacheOp, reply: ReplyTo, ctx: &mut Context<Self>) {
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
                            self.arm_expiry(ctx);
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
                    self.arm_expiry(ctx);
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
                            self.arm_expiry(ctx);
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
            CacheOp::Lock { name, lease, wait } => {
                return self.lock(from, name, lease, wait, reply, ctx);
            }
            CacheOp::Unlock { name, token } => {
                let held = self
                    .locks
                    .get(&name)
                    .and_then(|l| l.holder)
                    .is_some_and(|(_, t)| t == token);
                if held {
                    self.release(&name, ctx);
                    Ok(CacheAnswer::Done)
                } else {
                    Err(CacheError::NotHeld(name))
                }
            }
            CacheOp::Stats => Ok(CacheAnswer::Stats(self.stats())),
        };
        reply.answer(encode_answer(&answer));
    }

    fn stats(&self) -> CacheStats {
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
            locks_held: self.locks.values().filter(|l| l.holder.is_some()).count(),
            subscriptions: self.subs.len(),
            snapshot_error: self.snapshot_error.clone(),
        }
    }

    fn lock(
        &mut self,
        who: Peer,
        name: String,
        lease: Duration,
        wait: Duration,
        reply: ReplyTo,
        ctx: &mut Context<Self>,
    ) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let state = self.locks.entry(name.clone()).or_default();
        state.queue.push_back(Waiter {
            who,
            lease,
            reply,
            ticket,
        });
        if state.holder.is_none() {
            self.grant(&name, ctx);
            return;
        }
        ctx.run_later(wait, move |act, _| {
            let Some(state) = act.locks.get_mut(&name) else {
                return;
            };
            if let Some(pos) = state.queue.iter().position(|w| w.ticket == ticket) {
                let waiter = state.queue.remove(pos).expect("position is in range");
                waiter
                    .reply
                    .answer(encode_answer(&Err(CacheError::LockTimeout(name.clone()))));
            }
        });
    }

    /// Gives a free lock to the first in line.
    fn grant(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(state) = self.locks.get_mut(name) else {
            return;
        };
        debug_assert!(state.holder.is_none());
        let Some(waiter) = state.queue.pop_front() else {
            self.locks.remove(name);
            return;
        };
        let token = waiter.ticket;
        state.holder = Some((waiter.who, token));
        waiter
            .reply
            .answer(encode_answer(&Ok(CacheAnswer::Locked(token))));
        let name = name.to_owned();
        ctx.run_later(waiter.lease, move |act, ctx| {
            let held = act
                .locks
                .get(&name)
                .and_then(|l| l.holder)
                .is_some_and(|(_, t)| t == token);
            if held {
                tracing::warn!(lock = %name, "lock lease ran out; released");
                act.release(&name, ctx);
            }
        });
    }

    fn release(&mut self, name: &str, ctx: &mut Context<Self>) {
        if let Some(state) = self.locks.get_mut(name) {
            state.holder = None;
        }
        self.grant(name, ctx);
    }
}

fn encode_answer(answer: &Result<CacheAnswer, CacheError>) -> Result<Bytes, crate::AskError> {
    let mut buf = Vec::new();
    crate::codec::encode_value(&mut buf, answer)
        .map_err(|e| crate::AskError::Failed(e.to_string()))?;
    Ok(buf.into())
}

impl Actor for Cache {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm_expiry(ctx);
        if let (Some(every), Some(_)) = (self.config.snapshot_interval, &self.config.snapshot) {
            ctx.run_interval(every, |act, _| act.save());
        }
    }
}

impl Handler<CacheCall> for Cache {
    type Result = ();

    fn handle(&mut self, call: CacheCall, ctx: &mut Context<Self>) {
        self.run(call.from, call.op, call.reply, ctx);
    }
}

impl Handler<SubscribeLocal> for Cache {
    type Result = Result<(), CacheError>;

    fn handle(&mut self, sub: SubscribeLocal, _ctx: &mut Context<Self>) -> Self::Result {
        self.subs.push(Sub {
            owner: Owner::Master(sub.tx),
            id: sub.id,
            collection: sub.collection,
            prefix: sub.prefix,
        });
        Ok(())
    }
}

impl Handler<ProcessGone> for Cache {
    type Result = ();

    fn handle(&mut self, ProcessGone(who): ProcessGone, ctx: &mut Context<Self>) {
        let Peer::Worker { id, pid } = who else {
            return;
        };
        self.subs
            .retain(|s| !matches!(s.owner, Owner::Worker { id: w, pid: p } if w == id && p == pid));
        let held: Vec<String> = self
            .locks
            .iter_mut()
            .filter_map(|(name, state)| {
                state.queue.retain(|w| w.who != who);
                state
                    .holder
                    .filter(|(holder, _)| *holder == who)
                    .map(|_| name.clone())
            })
            .collect();
        for name in held {
            tracing::info!(lock = %name, worker = id, pid, "holder's process ended; lock released");
            self.release(&name, ctx);
        }
    }
}

impl Handler<Flush> for Cache {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.save();
        ctx.stop();
    }
}
