//! The cluster-wide cache: the operations of this node's workers and master served by Redis,
//! the changes made on any node delivered to this node's subscribers, and locks as leases with
//! fencing tokens; see [On several hosts](crate::cache#on-several-hosts).
//!
//! Every operation is queued for Redis the moment it arrives (`backend/store.rs` keeps them in
//! order) and answered, through the same [`Reply`] as a lock of the embedded store, when Redis
//! answers; nothing waits on the master's loop. Subscriptions stay in the master
//! ([`CacheCore`]): the node subscribes once to the cluster's change channel and hands each
//! change to them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use redis::Value;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, Notify};

use crate::backend::{
    from_stored, parse_event, px, Inbound, Job, Lua, StoreEvent, StoreLink, StoreQueue,
    MAX_IN_FLIGHT,
};
use crate::cache::core::{CacheCore, MAX_BATCH_ANSWER_BYTES};
use crate::cache::counters::OpKind;
use crate::cache::locks::Reply;
use crate::cache::ops::{self, CacheAnswer, CacheError, CacheOp, Change};
use crate::cache::remote_ops::{self, Got, BAD_VALUE};
use crate::messaging::Peer;

type Answer = Result<CacheAnswer, CacheError>;

/// A lock this node's process holds in Redis.
#[derive(Debug)]
struct Held {
    who: Peer,
    token: u64,
    renewal: tokio::task::JoinHandle<()>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Remote {
    link: StoreLink,
    queue: StoreQueue,
    core: Weak<RefCell<CacheCore>>,
    held: RefCell<HashMap<String, Held>>,
    /// Waiters per lock name, woken by its release event.
    released: RefCell<HashMap<String, Rc<Notify>>>,
    /// Processes gone while they waited for a lock: a grant that comes for one is released.
    gone: RefCell<HashMap<Peer, usize>>,
    waiting: RefCell<HashMap<Peer, usize>>,
    bad_events: Cell<u64>,
    _events: crate::backend::Subscription,
}

impl Remote {
    /// Starts the queue and the subscription to the change events on the current thread's
    /// `LocalSet` (the master's loop).
    pub(crate) fn start(link: StoreLink, core: Weak<RefCell<CacheCore>>) -> Rc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = link.subscribe(tx);
        let remote = Rc::new(Self {
            queue: link.start(),
            link,
            core,
            held: RefCell::default(),
            released: RefCell::default(),
            gone: RefCell::default(),
            waiting: RefCell::default(),
            bad_events: Cell::new(0),
            _events: events,
        });
        tokio::task::spawn_local(listen(Rc::downgrade(&remote), rx));
        remote
    }

    /// Whether `op` is served by Redis (the rest — subscriptions, figures — by the master).
    pub(crate) fn serves(op: &CacheOp) -> bool {
        !matches!(
            op,
            CacheOp::Subscribe { .. }
                | CacheOp::Unsubscribe { .. }
                | CacheOp::Track { .. }
                | CacheOp::Stats
        )
    }

    /// Queues `op` now and answers `reply` when Redis has.
    pub(crate) fn serve(self: &Rc<Self>, who: Peer, op: CacheOp, reply: Reply) {
        let kind = OpKind::of(&op);
        if let CacheOp::Lock { name, lease, wait } = op {
            let this = Rc::clone(self);
            tokio::task::spawn_local(async move {
                reply.answer(this.lock(who, name, lease, wait).await);
            });
            return;
        }
        let answer = self.submit(who, op);
        let core = self.core.clone();
        tokio::task::spawn_local(async move {
            let answer = answer.await;
            tally(&core, kind, &answer);
            reply.answer(answer);
        });
    }

    /// Queues `op` now; its answer to come.
    fn submit(
        self: &Rc<Self>,
        who: Peer,
        op: CacheOp,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>> {
        let ready =
            |answer: Answer| -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>> {
                Box::pin(async move { answer })
            };
        match op {
            CacheOp::Keys { collection, prefix } => self.scan(&collection, &prefix, false),
            CacheOp::Entries { collection, prefix } => self.scan(&collection, &prefix, true),
            CacheOp::Unlock { name, token } => self.unlock(who, name, token),
            CacheOp::Batch(bytes) => match ops::decode_ops(&bytes) {
                Ok(ops) => {
                    let mut cmds = Vec::with_capacity(ops.len());
                    let wants: Vec<_> = ops
                        .iter()
                        .map(|op| {
                            (
                                OpKind::of_batch(op),
                                remote_ops::plan(&self.link, op, &mut cmds),
                            )
                        })
                        .collect();
                    let answer = self.queue(Job::Cmds(cmds));
                    let core = self.core.clone();
                    Box::pin(async move { batch(answer.await?, &wants, &core) })
                }
                Err(e) => ready(Err(e)),
            },
            op => {
                let Some(kv) = remote_ops::key_value(&op) else {
                    return ready(Err(CacheError::Storage(format!(
                        "not served by Redis: {op:?}"
                    ))));
                };
                let mut cmds = Vec::with_capacity(2);
                let want = remote_ops::plan(&self.link, &kv, &mut cmds);
                let answer = self.queue(Job::Cmds(cmds));
                Box::pin(async move {
                    let values = answer.await?;
                    remote_ops::read(want, &mut values.into_iter()).map(CacheAnswer::from)
                })
            }
        }
    }

    /// Queues `job`; its answers, or why there are none.
    fn queue(&self, job: Job) -> impl std::future::Future<Output = Result<Vec<Value>, CacheError>> {
        let answer = self.queue.submit(job);
        async move {
            match answer {
                Some(answer) => answer.await.map_err(CacheError::Unavailable),
                None => Err(CacheError::Limit(format!(
                    "{MAX_IN_FLIGHT} cache operations are already on their way to Redis"
                ))),
            }
        }
    }

    fn scan(
        &self,
        collection: &str,
        prefix: &str,
        values: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>> {
        let (pattern, strip) = self.link.pattern(collection, prefix);
        let answer = self.queue(Job::Scan { pattern, values });
        Box::pin(async move {
            let mut found = answer.await?.into_iter();
            let (Some(Value::Array(keys)), Some(Value::Array(vals))) = (found.next(), found.next())
            else {
                return Err(CacheError::Storage("Redis answered a scan oddly".into()));
            };
            let name = |k: Value| match k {
                Value::BulkString(b) => String::from_utf8(b.get(strip..)?.to_vec()).ok(),
                _ => None,
            };
            if !values {
                let mut keys: Vec<String> = keys.into_iter().filter_map(name).collect();
                keys.sort();
                keys.dedup();
                return Ok(CacheAnswer::Keys(keys));
            }
            let mut entries: Vec<(String, ByteBuf)> = keys
                .into_iter()
                .zip(vals)
                .filter_map(|(k, v)| match v {
                    Value::BulkString(b) => Some((name(k)?, ByteBuf::from(from_stored(&b)?))),
                    _ => None,
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
            Ok(CacheAnswer::Entries(entries))
        })
    }
}

/// Counts an answer by kind and outcome, and a bad value in it.
fn tally<T>(core: &Weak<RefCell<CacheCore>>, kind: OpKind, answer: &Result<T, CacheError>) {
    if let Some(core) = core.upgrade() {
        let mut core = core.borrow_mut();
        core.count(kind, answer.is_ok());
        if is_bad(answer) {
            core.bad_input();
        }
    }
}

fn is_bad<T>(answer: &Result<T, CacheError>) -> bool {
    matches!(answer, Err(CacheError::Storage(reason)) if reason.starts_with(BAD_VALUE))
}

/// The answers of a batch, encoded as the embedded store's are; each operation counted.
fn batch(
    values: Vec<Value>,
    wants: &[(OpKind, remote_ops::Want)],
    core: &Weak<RefCell<CacheCore>>,
) -> Answer {
    let mut values = values.into_iter();
    let mut out = Vec::with_capacity(4 * wants.len());
    let core = core.upgrade();
    for &(kind, want) in wants {
        let got = remote_ops::read(want, &mut values);
        let got = match got {
            Ok(_) if out.len() >= MAX_BATCH_ANSWER_BYTES => Err(CacheError::Limit(format!(
                "the batch's answers passed {MAX_BATCH_ANSWER_BYTES} bytes: not served"
            ))),
            other => other,
        };
        if let Some(core) = &core {
            let mut core = core.borrow_mut();
            core.count(kind, got.is_ok());
            if is_bad(&got) {
                core.bad_input();
            }
        }
        ops::encode_answer(&mut out, &got.as_ref().map(Got::wire));
    }
    Ok(CacheAnswer::Batch(out))
}

impl Remote {
    /// Takes lock `name` in Redis for `who`, trying again at each release event (and at
    /// growing intervals, in case one is missed) until `wait` runs out.
    async fn lock(
        self: Rc<Self>,
        who: Peer,
        name: String,
        lease: Duration,
        wait: Duration,
    ) -> Answer {
        let asked = Instant::now();
        let deadline = asked.checked_add(wait);
        let released = Rc::clone(
            self.released
                .borrow_mut()
                .entry(name.clone())
                .or_insert_with(|| Rc::new(Notify::new())),
        );
        *self.waiting.borrow_mut().entry(who).or_default() += 1;
        let answer = self.take(who, &name, lease, deadline, &released).await;
        if Rc::strong_count(&released) == 2 {
            self.released.borrow_mut().remove(&name);
        }
        // Read before `done_waiting`, which forgets a gone process once its last wait ends.
        let was_gone = self.gone.borrow().contains_key(&who);
        self.done_waiting(who);
        let granted = matches!(answer, Ok(CacheAnswer::Locked(_)));
        if let Some(core) = self.core.upgrade() {
            let mut core = core.borrow_mut();
            let counters = core.lock_counters();
            match &answer {
                Ok(_) => {
                    counters.granted(asked.elapsed(), asked.elapsed() > Duration::from_millis(1))
                }
                Err(CacheError::LockTimeout(_)) => counters.timed_out(),
                Err(_) => counters.waiter_gone(),
            }
        }
        if granted && was_gone {
            if let Ok(CacheAnswer::Locked(token)) = answer {
                let release = self.unlock(who, name, token);
                tokio::task::spawn_local(async move {
                    let _ = release.await;
                });
            }
            return Err(CacheError::Unreachable("the process has ended".into()));
        }
        answer
    }

    async fn take(
        self: &Rc<Self>,
        who: Peer,
        name: &str,
        lease: Duration,
        deadline: Option<Instant>,
        released: &Notify,
    ) -> Answer {
        let mut backoff = Duration::from_millis(10);
        loop {
            if self.gone.borrow().contains_key(&who) {
                // The waiter's process ended: nothing is to be granted to it any more.
                return Err(CacheError::Unreachable("the process has ended".into()));
            }
            let woken = released.notified();
            let mut woken = std::pin::pin!(woken);
            woken.as_mut().enable();
            let key = self.link.lock_key(name);
            let fence = self.link.fence_key();
            let ms = px(lease);
            let args: [&[u8]; 2] = [self.link.node().as_bytes(), ms.as_bytes()];
            let cmd = Lua::Lock.call(&[&key, &fence], &args);
            let mut values = self.queue(Job::Cmds(vec![cmd])).await?.into_iter();
            let left = match values.next() {
                Some(Value::Array(a)) => match &a[..] {
                    [Value::Int(1), Value::BulkString(token)] => {
                        let token = std::str::from_utf8(token).ok().and_then(|t| t.parse().ok());
                        let token = token.ok_or_else(remote_ops::bad_value)?;
                        self.hold(who, name, token, lease);
                        return Ok(CacheAnswer::Locked(token));
                    }
                    [Value::Int(0), Value::Int(ms)] => Duration::from_millis(ms.unsigned_abs()),
                    _ => return Err(remote_ops::bad_value()),
                },
                Some(Value::ServerError(e)) => {
                    return Err(CacheError::Storage(format!("{BAD_VALUE}: {e}")))
                }
                _ => return Err(remote_ops::bad_value()),
            };
            let now = Instant::now();
            let nap = match deadline {
                Some(deadline) if deadline <= now => {
                    return Err(CacheError::LockTimeout(name.to_owned()))
                }
                Some(deadline) => backoff.min(deadline - now),
                None => backoff,
            };
            let nap = nap.min(left.max(Duration::from_millis(1)));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(nap) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn done_waiting(&self, who: Peer) {
        let mut waiting = self.waiting.borrow_mut();
        if let Some(n) = waiting.get_mut(&who) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&who);
                self.gone.borrow_mut().remove(&who);
            }
        }
    }

    /// Keeps the lock: renewed every third of its lease while the holder lives.
    fn hold(self: &Rc<Self>, who: Peer, name: &str, token: u64, lease: Duration) {
        let renewal =
            tokio::task::spawn_local(renew(Rc::downgrade(self), name.to_owned(), token, lease));
        let old = self.held.borrow_mut().insert(
            name.to_owned(),
            Held {
                who,
                token,
                renewal,
            },
        );
        if let Some(old) = old {
            old.renewal.abort();
        }
    }

    /// Releases lock `name` held with `token`: compare-and-delete, and a release event.
    fn unlock(
        self: &Rc<Self>,
        who: Peer,
        name: String,
        token: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer>>> {
        {
            // Only the holder releases (as with the embedded store): another process of this
            // node knowing the token is refused, though Redis would take this node's value.
            let mut held = self.held.borrow_mut();
            if !held
                .get(&name)
                .is_some_and(|h| h.token == token && h.who == who)
            {
                return Box::pin(async move { Err(CacheError::NotHeld(name)) });
            }
            if let Some(h) = held.remove(&name) {
                h.renewal.abort();
            }
        }
        let value = format!("{token}:{}", self.link.node());
        let event = format!("L{name}");
        let events = self.link.events();
        let args: [&[u8]; 3] = [value.as_bytes(), events.as_bytes(), event.as_bytes()];
        let cmd = Lua::Unlock.call(&[&self.link.lock_key(&name)], &args);
        let answer = self.queue(Job::Cmds(vec![cmd]));
        Box::pin(async move {
            match answer.await?.first() {
                Some(Value::Int(1)) => Ok(CacheAnswer::Done),
                Some(Value::ServerError(e)) => Err(CacheError::Storage(e.to_string())),
                _ => Err(CacheError::NotHeld(name)),
            }
        })
    }

    /// A process ended: its locks are released at once, a grant it still waits for too.
    pub(crate) fn process_gone(self: &Rc<Self>, who: Peer) {
        if let Some(n) = self.waiting.borrow().get(&who) {
            self.gone.borrow_mut().insert(who, *n);
        }
        let mine: Vec<(String, u64)> = self
            .held
            .borrow()
            .iter()
            .filter(|(_, h)| h.who == who)
            .map(|(name, h)| (name.clone(), h.token))
            .collect();
        for (name, token) in mine {
            if let Some(core) = self.core.upgrade() {
                core.borrow_mut().lock_counters().freed_by_exit();
            }
            let release = self.unlock(who, name, token);
            tokio::task::spawn_local(async move {
                let _ = release.await;
            });
        }
    }

    /// A change event from the channel.
    fn event(&self, bytes: &[u8]) {
        let change = match parse_event(bytes) {
            Some(StoreEvent::Released(name)) => {
                if let Some(waiters) = self.released.borrow().get(name) {
                    waiters.notify_waiters();
                }
                return;
            }
            Some(StoreEvent::Key {
                kind,
                collection,
                key,
                stored,
            }) => {
                let change = match kind {
                    b'S' => from_stored(stored).map(|v| Change::Set(v.into())),
                    b'D' => Some(Change::Deleted),
                    _ => Some(Change::Expired),
                };
                change.map(|c| (collection, key, c))
            }
            None => None,
        };
        match (change, self.core.upgrade()) {
            (Some((collection, key, change)), Some(core)) => {
                core.borrow_mut().notify(collection, key, change);
            }
            (Some(_), None) => {}
            (None, core) => {
                let bad = self.bad_events.get() + 1;
                self.bad_events.set(bad);
                if let Some(core) = core {
                    core.borrow_mut().bad_input();
                }
                if bad == 1 {
                    tracing::warn!(
                        channel = %self.link.events(),
                        "a message that is not a cache event was dropped (further ones are \
                         only counted)"
                    );
                }
            }
        }
    }
}

/// Renews the lease of lock `name` every third of it while it is held; a renewal refused (the
/// lease ran out, someone else holds it) or none answered for a whole lease loses it.
async fn renew(remote: Weak<Remote>, name: String, token: u64, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(5));
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Some(this) = remote.upgrade() else {
            return;
        };
        let value = format!("{token}:{}", this.link.node());
        let ms = px(lease);
        let args: [&[u8]; 2] = [value.as_bytes(), ms.as_bytes()];
        let cmd = Lua::Renew.call(&[&this.link.lock_key(&name)], &args);
        let answer = this.queue(Job::Cmds(vec![cmd]));
        drop(this);
        let lost = match answer.await {
            Ok(values) if matches!(values.first(), Some(Value::Int(1))) => {
                renewed = Instant::now();
                false
            }
            Ok(_) => true,
            Err(_) => renewed.elapsed() >= lease,
        };
        if lost {
            let Some(this) = remote.upgrade() else {
                return;
            };
            let mut held = this.held.borrow_mut();
            if held.get(&name).is_some_and(|h| h.token == token) {
                held.remove(&name);
                if let Some(core) = this.core.upgrade() {
                    core.borrow_mut().lock_counters().lease_expired();
                }
            }
            return;
        }
    }
}

/// Hands the change events of the channel to the subscribers, until the cache is gone.
async fn listen(remote: Weak<Remote>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    let mut lost_once = false;
    while let Some(inbound) = rx.recv().await {
        let Some(this) = remote.upgrade() else {
            return;
        };
        match inbound {
            Inbound::Frame(bytes) => this.event(&bytes),
            Inbound::Subscribed => lost_once = false,
            Inbound::Lost(reason) => {
                if !lost_once {
                    tracing::warn!(%reason, "the cache's change events are lost until Redis answers again");
                    lost_once = true;
                }
            }
        }
    }
}
