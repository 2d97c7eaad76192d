//! The typed face of the cache, the same in the master and in every worker.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Addr;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cache::actor::{CacheActor, MasterCall, SubscribeMaster};
use crate::cache::ops::{CacheAnswer, CacheError, CacheEvent, CacheOp, CacheStats, Change};

/// How a [`CacheClient`] reaches the cache: [`MasterCache`] in the master, a
/// [`WorkerHandle`](crate::WorkerHandle) in a worker. Only this crate implements it.
pub trait CacheTransport: Clone + 'static {
    /// Runs one operation.
    fn call(&self, op: CacheOp) -> impl Future<Output = Result<CacheAnswer, CacheError>>;

    /// Registers a subscription to the keys of `collection` that start with `prefix`.
    fn subscribe(
        &self,
        collection: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Subscription<Self>, CacheError>>;

    /// Runs an operation without waiting for its answer (a lock released by a dropped guard).
    fn send_and_forget(&self, op: CacheOp);
}

/// The master's way to the cache: the mailbox of the cache's actor, so that it may be used from
/// any thread. Answers come typed, never encoded.
#[derive(Debug, Clone)]
pub struct MasterCache {
    actor: Addr<CacheActor>,
}

impl MasterCache {
    pub(crate) fn new(actor: Addr<CacheActor>) -> Self {
        Self { actor }
    }
}

impl CacheTransport for MasterCache {
    async fn call(&self, op: CacheOp) -> Result<CacheAnswer, CacheError> {
        self.actor
            .send(MasterCall(op))
            .await
            .map_err(|e| CacheError::Unreachable(e.to_string()))?
    }

    async fn subscribe(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Subscription<Self>, CacheError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.actor
            .send(SubscribeMaster {
                id,
                collection: collection.to_owned(),
                prefix: prefix.to_owned(),
                tx,
            })
            .await
            .map_err(|e| CacheError::Unreachable(e.to_string()))?;
        Ok(Subscription::new(self.clone(), id, rx))
    }

    fn send_and_forget(&self, op: CacheOp) {
        self.actor.do_send(MasterCall(op));
    }
}

fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, CacheError> {
    let mut buf = Vec::new();
    crate::codec::encode_value(&mut buf, value).map_err(|e| CacheError::Codec(e.to_string()))?;
    Ok(buf)
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, CacheError> {
    crate::codec::decode_value(bytes).map_err(|e| CacheError::Codec(e.to_string()))
}

fn unexpected(answer: CacheAnswer) -> CacheError {
    CacheError::Codec(format!("unexpected answer {answer:?}"))
}

/// Typed access to the cluster's cache, from the master or from a worker.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
///
/// use procactor::cache::CacheError;
/// use procactor::prelude::*;
///
/// async fn visit<A: WorkerActor>(cluster: &Cluster<A>) -> Result<(), CacheError> {
///     let cache = cluster.cache();
///     let mut changes = cache.subscribe("sessions", "").await?;
///     let minute = Some(Duration::from_secs(60));
///     cache.set("sessions", "s1", &"alice", minute).await?;
///     let user: Option<String> = cache.get("sessions", "s1").await?;
///     assert_eq!(user.as_deref(), Some("alice"));
///     let visits = cache.increment("counters", "visits", 1).await?;
///     {
///         // Exclusive across every process until dropped (or 30 s).
///         let _guard = cache
///             .lock("report", Duration::from_secs(30), Duration::from_secs(5))
///             .await?;
///         cache.set("reports", "last", &visits, None).await?;
///     }
///     let event = changes.recv().await.expect("the set of s1");
///     assert_eq!(event.key, "s1");
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CacheClient<T> {
    transport: T,
}

impl<T: CacheTransport> CacheClient<T> {
    pub(crate) fn new(transport: T) -> Self {
        Self { transport }
    }

    async fn call(&self, op: CacheOp) -> Result<CacheAnswer, CacheError> {
        self.transport.call(op).await
    }

    /// How it reaches the cache.
    pub(crate) fn transport(&self) -> &T {
        &self.transport
    }

    /// The value of `key` in `collection`, decoded as a `V`.
    ///
    /// # Errors
    /// [`CacheError::Codec`] when it is not a `V`; [`CacheError::Unreachable`].
    pub async fn get<V: DeserializeOwned>(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<V>, CacheError> {
        match self
            .call(CacheOp::Get {
                collection: collection.into(),
                key: key.into(),
            })
            .await?
        {
            CacheAnswer::Value(Some(bytes)) => decode(&bytes).map(Some),
            CacheAnswer::Value(None) => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value`, for `ttl` if given.
    ///
    /// # Errors
    /// [`CacheError::TooLarge`] when it cannot fit its collection; [`CacheError::Unreachable`].
    pub async fn set<V: Serialize>(
        &self,
        collection: &str,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let value = encode(value)?;
        self.call(CacheOp::Set {
            collection: collection.into(),
            key: key.into(),
            value,
            ttl,
        })
        .await
        .map(drop)
    }

    /// Deletes `key`; true if it was there.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn delete(&self, collection: &str, key: &str) -> Result<bool, CacheError> {
        self.bool(CacheOp::Delete {
            collection: collection.into(),
            key: key.into(),
        })
        .await
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn exists(&self, collection: &str, key: &str) -> Result<bool, CacheError> {
        self.bool(CacheOp::Exists {
            collection: collection.into(),
            key: key.into(),
        })
        .await
    }

    /// Sets (`Some`) or clears (`None`) the time to live of an existing `key`; false if absent.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn expire(
        &self,
        collection: &str,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        self.bool(CacheOp::Expire {
            collection: collection.into(),
            key: key.into(),
            ttl,
        })
        .await
    }

    /// The remaining time to live of `key`: `None` if absent, `Some(None)` if it has none.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn ttl(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Option<Duration>>, CacheError> {
        match self
            .call(CacheOp::Ttl {
                collection: collection.into(),
                key: key.into(),
            })
            .await?
        {
            CacheAnswer::Ttl(ttl) => Ok(ttl),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `by` to the integer at `key` (0 when absent) and returns the new value; read it
    /// back with `get::<i64>`.
    ///
    /// # Errors
    /// [`CacheError::NotAnInteger`] when the value is not one, or on overflow.
    pub async fn increment(&self, collection: &str, key: &str, by: i64) -> Result<i64, CacheError> {
        match self
            .call(CacheOp::Increment {
                collection: collection.into(),
                key: key.into(),
                by,
            })
            .await?
        {
            CacheAnswer::Int(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `new` (deletes it for `None`) only if its value is `expected` now (`None`:
    /// absent); true if it did.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn compare_and_set<V: Serialize>(
        &self,
        collection: &str,
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        let expected = expected.map(encode).transpose()?.map(Into::into);
        let new = new.map(encode).transpose()?.map(Into::into);
        self.bool(CacheOp::CompareAndSet {
            collection: collection.into(),
            key: key.into(),
            expected,
            new,
            ttl,
        })
        .await
    }

    /// The keys of `collection` that start with `prefix`, sorted.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn keys(&self, collection: &str, prefix: &str) -> Result<Vec<String>, CacheError> {
        match self
            .call(CacheOp::Keys {
                collection: collection.into(),
                prefix: prefix.into(),
            })
            .await?
        {
            CacheAnswer::Keys(keys) => Ok(keys),
            other => Err(unexpected(other)),
        }
    }

    /// The entries of `collection` whose keys start with `prefix`, decoded as `V`.
    ///
    /// # Errors
    /// [`CacheError::Codec`] when one is not a `V`; [`CacheError::Unreachable`].
    pub async fn entries<V: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, V>, CacheError> {
        match self
            .call(CacheOp::Entries {
                collection: collection.into(),
                prefix: prefix.into(),
            })
            .await?
        {
            CacheAnswer::Entries(entries) => entries
                .into_iter()
                .map(|(k, v)| Ok((k, decode(&v)?)))
                .collect(),
            other => Err(unexpected(other)),
        }
    }

    /// The cache's figures.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        match self.call(CacheOp::Stats).await? {
            CacheAnswer::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// Takes the exclusive lock `name` across all processes, waiting in line for at most
    /// `wait`. It is held until the guard is dropped (or [`LockGuard::release`]d), the
    /// `lease` runs out, or this process ends.
    ///
    /// # Errors
    /// [`CacheError::LockTimeout`] when it was not free within `wait`.
    pub async fn lock(
        &self,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard<T>, CacheError> {
        match self
            .call(CacheOp::Lock {
                name: name.into(),
                lease,
                wait,
            })
            .await?
        {
            CacheAnswer::Locked(token) => Ok(LockGuard {
                transport: self.transport.clone(),
                name: name.into(),
                token: Some(token),
                fence: token,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Receives every change to the keys of `collection` that start with `prefix`, in order,
    /// until the subscription is dropped or this process ends.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`].
    pub async fn subscribe(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Subscription<T>, CacheError> {
        self.transport.subscribe(collection, prefix).await
    }

    /// A local copy of the entries of `collection` under `prefix`, kept in sync by a
    /// subscription.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe) and [`entries`](Self::entries).
    pub async fn replica<V: DeserializeOwned>(
        &self,
        collection: &str,
        prefix: &str,
    ) -> Result<Replica<T, V>, CacheError> {
        // Subscribe first: every change after the copy is taken arrives after it.
        let subscription = self.subscribe(collection, prefix).await?;
        let entries = self.entries(collection, prefix).await?;
        Ok(Replica {
            subscription,
            entries,
        })
    }

    async fn bool(&self, op: CacheOp) -> Result<bool, CacheError> {
        match self.call(op).await? {
            CacheAnswer::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }
}

/// An exclusive lock held until dropped; see [`CacheClient::lock`].
#[derive(Debug)]
pub struct LockGuard<T: CacheTransport> {
    transport: T,
    name: String,
    token: Option<u64>,
    fence: u64,
}

impl<T: CacheTransport> LockGuard<T> {
    /// This grant's fencing token: it grows with every grant of any of the cache's locks (on
    /// several hosts, across the cluster: a counter kept in Redis). A lock is a lease — a
    /// holder paused past it may still act — so pass the token to what the lock protects, and
    /// have it refuse a token lower than one it has seen.
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// Releases the lock and waits until the cache has.
    ///
    /// # Errors
    /// [`CacheError::NotHeld`] when the lease had already run out.
    pub async fn release(mut self) -> Result<(), CacheError> {
        let Some(token) = self.token.take() else {
            return Ok(());
        };
        self.transport
            .call(CacheOp::Unlock {
                name: self.name.clone(),
                token,
            })
            .await
            .map(drop)
    }
}

impl<T: CacheTransport> Drop for LockGuard<T> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.transport.send_and_forget(CacheOp::Unlock {
                name: std::mem::take(&mut self.name),
                token,
            });
        }
    }
}

/// Changes to subscribed keys, in the order they happened; see [`CacheClient::subscribe`].
#[derive(Debug)]
pub struct Subscription<T: CacheTransport> {
    transport: T,
    id: u64,
    events: mpsc::UnboundedReceiver<CacheEvent>,
}

impl<T: CacheTransport> Subscription<T> {
    /// A subscription `id` made through `transport`, whose events arrive on `events`.
    pub(crate) fn new(transport: T, id: u64, events: mpsc::UnboundedReceiver<CacheEvent>) -> Self {
        Self {
            transport,
            id,
            events,
        }
    }

    /// The next change; `None` once the cache is gone.
    pub async fn recv(&mut self) -> Option<CacheEvent> {
        self.events.recv().await
    }

    /// The next change if one has arrived.
    pub fn try_recv(&mut self) -> Option<CacheEvent> {
        self.events.try_recv().ok()
    }

    /// Its id, as the cache knows it.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The next change if one has arrived; `Err` once the cache is gone.
    pub(crate) fn next_event(&mut self) -> Result<Option<CacheEvent>, ()> {
        match self.events.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
    }
}

impl<T: CacheTransport> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.transport
            .send_and_forget(CacheOp::Unsubscribe { id: self.id });
    }
}

/// A worker-local (or master-local) copy of part of a collection, kept in sync with the cache
/// by a subscription (cluster-rolling-restart's saveBroadcast / deleteCommand, done for you).
#[derive(Debug)]
pub struct Replica<T: CacheTransport, V> {
    subscription: Subscription<T>,
    entries: BTreeMap<String, V>,
}

impl<T: CacheTransport, V: DeserializeOwned> Replica<T, V> {
    /// Applies the changes that have arrived, then returns the copy.
    pub fn current(&mut self) -> &BTreeMap<String, V> {
        while let Some(event) = self.subscription.try_recv() {
            self.apply(event);
        }
        &self.entries
    }

    /// Waits for the next change, applies it and returns its key.
    pub async fn changed(&mut self) -> Option<String> {
        let event = self.subscription.recv().await?;
        let key = event.key.clone();
        self.apply(event);
        Some(key)
    }

    fn apply(&mut self, event: CacheEvent) {
        match event.change {
            Change::Set(bytes) => match decode(&bytes) {
                Ok(value) => {
                    self.entries.insert(event.key, value);
                }
                Err(e) => {
                    tracing::warn!(key = %event.key, error = %e, "replica: value of another type; dropped");
                    self.entries.remove(&event.key);
                }
            },
            Change::Deleted | Change::Expired | Change::Evicted => {
                self.entries.remove(&event.key);
            }
        }
    }
}
