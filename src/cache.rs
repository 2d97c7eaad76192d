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

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::messaging::Peer;
use crate::routing::{ReplyTo, SharedRouting};

mod client;
mod core;
pub(crate) mod ops;
pub mod snapshot;
pub mod store;

pub(crate) use self::core::CacheCore;
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
    #[serde(with = "crate::config::opt_millis")]
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

/// Re-arms the expiry timer after an operation served inline gave a key a time to live.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Rearm;

/// The cache actor; see the [module docs](self).
///
/// The store and the subscriptions live in a [`CacheCore`] that the worker proxies share (they
/// run on the same thread): a worker's operation is served by its proxy as the frame arrives,
/// with no message to this actor and back. The actor keeps what needs timers: expiry, and the
/// locks with their leases and waits.
pub struct Cache {
    core: Rc<RefCell<CacheCore>>,
    locks: HashMap<String, LockState>,
    next_ticket: u64,
    expiry: Option<(Instant, SpawnHandle)>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("locks", &self.locks.len())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache over `store`, loading the configured snapshot into it.
    pub(crate) fn new(store: Box<dyn Store>, config: CacheConfig, routing: SharedRouting) -> Self {
        Self {
            core: Rc::new(RefCell::new(CacheCore::new(store, config, routing))),
            locks: HashMap::new(),
            next_ticket: 1,
            expiry: None,
        }
    }

    /// The store and subscriptions, for the proxies to serve operations inline.
    pub(crate) fn core(&self) -> Rc<RefCell<CacheCore>> {
        Rc::clone(&self.core)
    }

    /// Removes what has expired and sleeps until the next expiry.
    fn arm_expiry(&mut self, ctx: &mut Context<Self>) {
        let next = {
            let mut core = self.core.borrow_mut();
            core.purge_expired(Instant::now());
            core.next_expiry()
        };
        let Some(next) = next else {
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
        let wait = next.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.expiry = None;
            act.arm_expiry(ctx);
        });
        self.expiry = Some((next, handle));
    }

    fn run(&mut self, from: Peer, op: CacheOp, reply: ReplyTo, ctx: &mut Context<Self>) {
        let answer = match op {
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
            CacheOp::Stats => {
                let mut stats = self.core.borrow().stats();
                stats.locks_held = self.locks.values().filter(|l| l.holder.is_some()).count();
                stats.lock_waiters = self.locks.values().map(|l| l.queue.len()).sum();
                Ok(CacheAnswer::Stats(stats))
            }
            op => {
                let (answer, rearm) = {
                    let mut core = self.core.borrow_mut();
                    let answer = core.serve(from, op).unwrap_or_else(|op| {
                        Err(CacheError::Codec(format!("not served inline: {op:?}")))
                    });
                    (answer, core.take_rearm())
                };
                if rearm {
                    self.arm_expiry(ctx);
                }
                answer
            }
        };
        reply.answer(encode_answer(&answer));
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

pub(crate) fn encode_answer(
    answer: &Result<CacheAnswer, CacheError>,
) -> Result<Bytes, crate::AskError> {
    let mut buf = Vec::new();
    crate::codec::encode_value(&mut buf, answer)
        .map_err(|e| crate::AskError::Failed(e.to_string()))?;
    Ok(buf.into())
}

impl Actor for Cache {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm_expiry(ctx);
        if let Some(every) = self.core.borrow().snapshot_interval() {
            ctx.run_interval(every, |act, _| act.core.borrow().save());
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
        self.core.borrow_mut().subscribe_local(sub);
        Ok(())
    }
}

impl Handler<ProcessGone> for Cache {
    type Result = ();

    fn handle(&mut self, ProcessGone(who): ProcessGone, ctx: &mut Context<Self>) {
        let Peer::Worker { id, pid } = who else {
            return;
        };
        self.core.borrow_mut().process_gone(id, pid);
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
        self.core.borrow().save();
        ctx.stop();
    }
}

impl Handler<Rearm> for Cache {
    type Result = ();

    fn handle(&mut self, _: Rearm, ctx: &mut Context<Self>) {
        self.arm_expiry(ctx);
    }
}
