//! Near-caches: a process's own bounded copy of the entries of one collection that it reads,
//! kept coherent by invalidations from the master, so that a read it holds costs no round trip.
//!
//! A near-cache fetches what it does not hold with a tracked get: the master answers it with
//! the value, the time it has left, and how many invalidations it has sent the near-cache so far
//! (its position), and from then on tracks the key for this near-cache. At the first change to a
//! tracked key (a set, a delete, an expiry, an eviction, an increment), the master sends the
//! near-cache an invalidation, numbered, and stops tracking the key until it is fetched again.
//! So a process pays for the invalidations of what it read, once per change, and nothing for
//! the rest of the collection (Redis's client-side caching in its default, tracking mode).
//!
//! A fetch's answer also says how many invalidations were sent before it: the near-cache keeps
//! a fetched value only if none it has not taken in yet could be about it, drops an entry only
//! for an invalidation sent after its fetch, and answers nothing from what it holds while
//! invalidations it has heard of (from a fetch's answer) are still on their way. A write through
//! the near-cache drops the key at once and again when it is answered, and a fetch answered
//! before it (or before it in its batch) is not kept. What a reader may observe, and the
//! limits, are in the [cache's docs](crate::cache#near-caches).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::batch::{self, BatchAnswers, CacheBatch, Pending};
use crate::cache::client::{CacheClient, CacheTransport, Subscription};
use crate::cache::ops::{BatchOp, CacheAnswer, CacheError, CacheEvent, CacheOp};
use crate::cache::subs::MAX_TRACKED_KEYS;

/// The bounds of a [`NearCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearLimits {
    /// Most entries held (at most [`MAX_TRACKED_KEYS`](Self::MAX_TRACKED_KEYS)).
    pub max_entries: usize,
    /// Most bytes held, counting each entry as its key length plus its value length.
    pub max_bytes: usize,
}

impl NearLimits {
    /// Most keys one near-cache may hold, whatever its limits say: the master tracks as many
    /// for it.
    pub const MAX_TRACKED_KEYS: usize = MAX_TRACKED_KEYS;
}

impl Default for NearLimits {
    /// 4 096 entries, 4 MiB.
    fn default() -> Self {
        Self {
            max_entries: 4096,
            max_bytes: 4 << 20,
        }
    }
}

/// A near-cache's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NearStats {
    /// Reads answered by the near-cache.
    pub hits: u64,
    /// Reads sent to the master.
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now: key lengths plus value lengths.
    pub bytes: usize,
    /// Invalidations taken in.
    pub invalidations: u64,
    /// Times it emptied itself (invalidations out of order, or the cache unreachable).
    pub resets: u64,
}

/// A bounded local copy of the entries of one collection that this process reads, coherent
/// with the cache; see [`CacheClient::near_cache`], and the [cache's
/// docs](crate::cache#near-caches) for what a reader may observe. Clones share the copy.
pub struct NearCache<T: CacheTransport> {
    client: CacheClient<T>,
    collection: Rc<str>,
    state: Rc<RefCell<NearState<T>>>,
}

impl<T: CacheTransport> Clone for NearCache<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            collection: Rc::clone(&self.collection),
            state: Rc::clone(&self.state),
        }
    }
}

impl<T: CacheTransport> std::fmt::Debug for NearCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("collection", &self.collection)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The copy, and what it knows of the master's invalidations.
struct NearState<T: CacheTransport> {
    subscription: Subscription<T>,
    /// The cache is reachable.
    open: bool,
    /// The number of the last invalidation taken in.
    seen: u64,
    /// The number of invalidations sent before the latest fetch answered: while `seen` is
    /// below it, some are on their way, and nothing held is answered.
    known: u64,
    /// Batches sent so far; each is numbered in the order sent.
    sent: u64,
    /// The number of the last batch sent with writes that has been answered: what batches sent
    /// before it fetched is not kept.
    write_fence: u64,
    entries: HashMap<Box<str>, Entry>,
    /// The entries in the order kept, for the clock that picks which one goes: one read since
    /// its last pass keeps an entry for one more round. Entries removed otherwise stay here
    /// until their turn comes (or `ring` is compacted).
    ring: VecDeque<(Box<str>, u64)>,
    /// The number of the next entry kept.
    next: u64,
    bytes: usize,
    limits: NearLimits,
    stats: NearStats,
}

struct Entry {
    value: Option<Box<[u8]>>,
    /// The number of invalidations sent before the value was read: those up to it are older.
    position: u64,
    deadline: Option<Instant>,
    /// Its number in `ring`.
    number: u64,
    /// Read since the clock last passed it.
    used: bool,
}

impl<T: CacheTransport> CacheClient<T> {
    /// A near-cache of `collection` in this process, bounded by `limits`: reads of keys it
    /// holds are answered without a round trip, every other read fetches the key and keeps it,
    /// and the master invalidates what it holds as the keys change. See the
    /// [near-cache docs](crate::cache::NearCache) for what a reader may observe.
    ///
    /// # Example
    /// ```no_run
    /// use procactor::cache::{CacheClient, CacheError, CacheTransport, NearLimits};
    ///
    /// async fn profile<T: CacheTransport>(cache: &CacheClient<T>) -> Result<(), CacheError> {
    ///     let near = cache.near_cache("profiles", NearLimits::default()).await?;
    ///     near.set("alice", &"admin", None).await?;
    ///     // Fetched once, then answered here until somebody changes it.
    ///     let role: Option<String> = near.get("alice").await?;
    ///     assert_eq!(role.as_deref(), Some("admin"));
    ///     let mut batch = near.batch();
    ///     let alice = batch.get::<String>("alice");
    ///     let bob = batch.get::<String>("bob");
    ///     let answers = batch.run().await?;
    ///     assert_eq!(answers.take(alice)?.as_deref(), Some("admin"));
    ///     let _ = answers.take(bob)?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// [`CacheError::Limit`] when this process keeps 16 near-caches already;
    /// [`CacheError::Unreachable`].
    pub async fn near_cache(
        &self,
        collection: &str,
        limits: NearLimits,
    ) -> Result<NearCache<T>, CacheError> {
        let limits = NearLimits {
            max_entries: limits.max_entries.clamp(1, MAX_TRACKED_KEYS),
            ..limits
        };
        let subscription = self.subscribe(collection, "").await?;
        let track = CacheOp::Track {
            subscription: subscription.id(),
            max_keys: limits.max_entries as u32,
        };
        let seen = match self.transport().call(track).await? {
            CacheAnswer::Int(n) => n as u64,
            other => return Err(CacheError::Codec(format!("unexpected answer {other:?}"))),
        };
        let state = NearState {
            subscription,
            open: true,
            seen,
            known: seen,
            sent: 0,
            write_fence: 0,
            entries: HashMap::new(),
            ring: VecDeque::new(),
            next: 0,
            bytes: 0,
            limits,
            stats: NearStats::default(),
        };
        Ok(NearCache {
            client: self.clone(),
            collection: collection.into(),
            state: Rc::new(RefCell::new(state)),
        })
    }
}

impl<T: CacheTransport> NearCache<T> {
    /// Its collection.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Its figures.
    pub fn stats(&self) -> NearStats {
        let state = self.state.borrow();
        NearStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            ..state.stats.clone()
        }
    }

    /// An empty batch of this near-cache's operations; see [`NearBatch`].
    pub fn batch(&self) -> NearBatch<T> {
        NearBatch {
            near: self.clone(),
            inner: self.client.batch(),
            fetches: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// The value of `key`, decoded as a `V`: from the near-cache if it holds it, else fetched
    /// (and kept).
    ///
    /// # Errors
    /// As [`CacheClient::get`].
    pub async fn get<V: DeserializeOwned>(&self, key: &str) -> Result<Option<V>, CacheError> {
        let mut batch = self.batch();
        let value = batch.get(key);
        batch.run().await?.take(value)
    }

    /// Sets `key` to `value` in the cache, for `ttl` if given (write-through).
    ///
    /// # Errors
    /// As [`CacheClient::set`].
    pub async fn set<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let mut batch = self.batch();
        let done = batch.set(key, value, ttl)?;
        batch.run().await?.take(done)
    }

    /// Deletes `key` in the cache; true if it was there.
    ///
    /// # Errors
    /// As [`CacheClient::delete`].
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut batch = self.batch();
        let done = batch.delete(key);
        batch.run().await?.take(done)
    }
}

/// Operations of one [`NearCache`] sent to the cache together, as a [`CacheBatch`]: a read of
/// a key the near-cache holds is answered at once and not sent; the others are sent in one
/// message, in the order added, and the keys they fetch are kept.
pub struct NearBatch<T: CacheTransport> {
    near: NearCache<T>,
    inner: CacheBatch<T>,
    /// The tracked gets: their index in `inner`, and key.
    fetches: Vec<(usize, Box<str>)>,
    /// The writes: their index in `inner`, and key.
    writes: Vec<(usize, Box<str>)>,
}

impl<T: CacheTransport> std::fmt::Debug for NearBatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearBatch")
            .field("collection", &self.near.collection)
            .field("to_send", &self.inner.len())
            .finish_non_exhaustive()
    }
}

impl<T: CacheTransport> NearBatch<T> {
    /// Operations to send to the master so far (reads answered by the near-cache not
    /// counted).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether nothing is to be sent.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Adds a read of `key`, decoded as a `V`: answered now if the near-cache holds it (the
    /// [`Pending`] is ready), else fetched with the batch and kept.
    pub fn get<V: DeserializeOwned>(&mut self, key: &str) -> Pending<Option<V>> {
        let held = self.near.state.borrow_mut().read(key, |value| match value {
            Some(bytes) => batch::decode(bytes).map(Some),
            None => Ok(None),
        });
        if let Some(answer) = held {
            return Pending::ready(answer);
        }
        let index = self.inner.len();
        let subscription = self.near.state.borrow().subscription.id();
        let op = BatchOp::TrackedGet {
            subscription,
            collection: &self.near.collection,
            key,
        };
        let pending = self.inner.push(op, batch::read_value::<V>);
        self.fetches.push((index, key.into()));
        pending
    }

    /// Adds [`NearCache::set`].
    ///
    /// # Errors
    /// [`CacheError::Codec`] when `value` does not encode; nothing is added then.
    pub fn set<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<Pending<()>, CacheError> {
        let index = self.inner.len();
        let pending = self.inner.set(&self.near.collection, key, value, ttl)?;
        self.wrote(index, key);
        Ok(pending)
    }

    /// Adds [`NearCache::delete`].
    pub fn delete(&mut self, key: &str) -> Pending<bool> {
        let index = self.inner.len();
        let pending = self.inner.delete(&self.near.collection, key);
        self.wrote(index, key);
        pending
    }

    fn wrote(&mut self, index: usize, key: &str) {
        // A read added after it goes to the master with it.
        self.near.state.borrow_mut().remove(key);
        self.writes.push((index, key.into()));
    }

    /// Sends what the near-cache could not answer, and resolves with every answer once the
    /// master has served them (at once when nothing is to be sent).
    ///
    /// # Errors
    /// As [`CacheBatch::run`].
    pub async fn run(self) -> Result<BatchAnswers, CacheError> {
        let NearBatch {
            near,
            inner,
            fetches,
            writes,
        } = self;
        if inner.is_empty() {
            return inner.run().await;
        }
        // Numbered as it is sent: the send happens in this poll.
        let (number, sent_at) = (near.state.borrow_mut().send(), Instant::now());
        let answers = inner.run().await;
        let mut state = near.state.borrow_mut();
        state.answered(number, &writes);
        let answers = answers?;
        for (index, key) in fetches {
            // A fetch before a write of its key in the same batch is older than the write.
            if writes.iter().any(|(w, k)| *w > index && *k == key) {
                continue;
            }
            if let Some(fetched) = answers.tracked(index) {
                let deadline = fetched.ttl.map(|ttl| sent_at + ttl);
                state.keep(key, fetched.value, deadline, fetched.position, number);
            }
        }
        Ok(answers)
    }
}

impl<T: CacheTransport> NearState<T> {
    /// Takes in the invalidations that have arrived.
    fn drain(&mut self) {
        loop {
            match self.subscription.next_event() {
                Ok(Some(event)) => self.invalidate(event),
                Ok(None) => return,
                Err(()) => {
                    if self.open {
                        self.open = false;
                        self.reset();
                    }
                    return;
                }
            }
        }
    }

    fn invalidate(&mut self, event: CacheEvent) {
        self.stats.invalidations += 1;
        if event.seq != self.seen + 1 && event.seq > self.seen {
            // Some never arrived: what they were about is unknown.
            self.reset();
        }
        self.seen = self.seen.max(event.seq);
        let older = self
            .entries
            .get(event.key.as_str())
            .is_some_and(|e| e.position < event.seq);
        if older {
            self.remove(&event.key);
        }
    }

    fn reset(&mut self) {
        self.stats.resets += 1;
        self.entries.clear();
        self.ring.clear();
        self.bytes = 0;
    }

    /// The answer `read` makes of the value of `key` if the near-cache holds it.
    fn read<R>(&mut self, key: &str, read: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.drain();
        if self.seen < self.known {
            // Invalidations this process has heard of are on their way: what it holds may be
            // older than what it has seen.
            self.stats.misses += 1;
            return None;
        }
        let expired = match self.entries.get(key) {
            None => true,
            Some(entry) => entry.deadline.is_some_and(|at| at <= Instant::now()),
        };
        if expired {
            self.remove(key);
            self.stats.misses += 1;
            return None;
        }
        let entry = self.entries.get_mut(key)?;
        entry.used = true;
        self.stats.hits += 1;
        Some(read(entry.value.as_deref()))
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= key.len() + entry.value.as_ref().map_or(0, |v| v.len());
        }
    }

    /// Removes the entry the clock picks: the first in `ring` not read since its last pass.
    fn evict_one(&mut self) {
        while let Some((key, number)) = self.ring.pop_front() {
            match self.entries.get_mut(&key) {
                Some(entry) if entry.number == number && entry.used => {
                    entry.used = false;
                    self.ring.push_back((key, number));
                }
                Some(entry) if entry.number == number => {
                    self.remove(&key);
                    return;
                }
                // Removed, or kept again since: no longer its place.
                _ => {}
            }
        }
    }

    /// A batch is being sent: its number.
    fn send(&mut self) -> u64 {
        self.sent += 1;
        self.sent
    }

    /// Batch `number` has been answered (or has failed): what it wrote is dropped again, and
    /// what batches sent before it fetched is not kept.
    fn answered(&mut self, number: u64, writes: &[(usize, Box<str>)]) {
        self.drain();
        if writes.is_empty() {
            return;
        }
        self.write_fence = self.write_fence.max(number);
        for (_, key) in writes {
            self.remove(key);
        }
    }

    /// Keeps what batch `number` fetched of `key` at `position`, unless an invalidation or a
    /// write since may have made it old.
    fn keep(
        &mut self,
        key: Box<str>,
        value: Option<&[u8]>,
        deadline: Option<Instant>,
        position: u64,
        number: u64,
    ) {
        self.known = self.known.max(position);
        let size = key.len() + value.map_or(0, <[u8]>::len);
        if !self.open
            || position < self.seen
            || number < self.write_fence
            || size > self.limits.max_bytes
        {
            return;
        }
        self.remove(&key);
        while !self.entries.is_empty()
            && (self.entries.len() >= self.limits.max_entries
                || self.bytes + size > self.limits.max_bytes)
        {
            self.evict_one();
        }
        if self.ring.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.ring
                .retain(|(key, number)| entries.get(key).is_some_and(|e| e.number == *number));
        }
        self.next += 1;
        self.bytes += size;
        self.ring.push_back((key.clone(), self.next));
        let entry = Entry {
            value: value.map(Box::from),
            position,
            deadline,
            number: self.next,
            used: false,
        };
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::config::CacheConfig;
    use crate::cache::direct::{block_on, client, Direct};

    fn limits(max_entries: usize, max_bytes: usize) -> NearLimits {
        NearLimits {
            max_entries,
            max_bytes,
        }
    }

    fn near(max_entries: usize, max_bytes: usize) -> (CacheClient<Direct>, NearCache<Direct>) {
        let (cache, _) = client(&CacheConfig::default());
        let near = block_on(cache.near_cache("c", limits(max_entries, max_bytes))).unwrap();
        (cache, near)
    }

    fn held(near: &NearCache<Direct>, key: &str) -> Option<Option<u32>> {
        let mut state = near.state.borrow_mut();
        state.read(key, |v| v.map(|b| batch::decode(b).unwrap()))
    }

    #[test]
    fn a_read_is_fetched_once_then_held_until_a_change_invalidates_it() {
        let (cache, near) = near(16, 1 << 20);
        block_on(async {
            assert_eq!(near.get::<u32>("a").await.unwrap(), None);
            assert_eq!(held(&near, "a"), Some(None), "absence is held too");
            cache.set("c", "a", &1u32, None).await.unwrap();
            assert_eq!(held(&near, "a"), None, "invalidated");
            assert_eq!(near.get::<u32>("a").await.unwrap(), Some(1));
            assert_eq!(near.get::<u32>("a").await.unwrap(), Some(1));
            // Other keys and collections are not tracked: no invalidation for them.
            cache.set("c", "b", &2u32, None).await.unwrap();
            cache.set("d", "a", &3u32, None).await.unwrap();
            assert_eq!(held(&near, "a"), Some(Some(1)));
            near.set("a", &4u32, None).await.unwrap();
            assert_eq!(near.get::<u32>("a").await.unwrap(), Some(4));
            assert!(near.delete("a").await.unwrap());
            assert_eq!(near.get::<u32>("a").await.unwrap(), None);
        });
        let stats = near.stats();
        assert_eq!((stats.hits, stats.resets), (3, 0), "{stats:?}");
        assert_eq!(
            stats.invalidations, 3,
            "the set of a, and this cache's own set and delete"
        );
    }

    #[test]
    fn in_one_batch_a_read_after_a_write_sees_it_and_one_before_is_not_held() {
        let (cache, near) = near(16, 1 << 20);
        block_on(async {
            cache.set("c", "a", &1u32, None).await.unwrap();
            let mut batch = near.batch();
            let before = batch.get::<u32>("a");
            let write = batch.set("a", &2u32, None).unwrap();
            let after = batch.get::<u32>("b");
            let answers = batch.run().await.unwrap();
            assert_eq!(answers.take(before).unwrap(), Some(1));
            answers.take(write).unwrap();
            assert_eq!(answers.take(after).unwrap(), None);
            assert_eq!(held(&near, "a"), None, "the read before the write is old");
            let mut batch = near.batch();
            let _ = batch.delete("a");
            let after = batch.get::<u32>("a");
            let answers = batch.run().await.unwrap();
            assert_eq!(answers.take(after).unwrap(), None);
            assert_eq!(held(&near, "a"), Some(None));
        });
    }

    #[test]
    fn a_fetch_older_than_an_invalidation_or_a_write_is_not_kept() {
        let (_, near) = near(16, 1 << 20);
        let mut state = near.state.borrow_mut();
        let seen = state.seen;
        state.keep("a".into(), Some(&[1]), None, seen, 1);
        assert!(state.entries.contains_key("a"));
        // An invalidation of a after the fetch removes it; one from before does not.
        let event = |seq, key: &str| CacheEvent {
            subscription: 0,
            seq,
            collection: "c".into(),
            key: key.into(),
            change: crate::cache::Change::Deleted,
        };
        state.keep("b".into(), Some(&[1]), None, seen + 1, 1);
        state.invalidate(event(seen + 1, "b"));
        assert!(state.entries.contains_key("b"), "b was fetched after it");
        state.invalidate(event(seen + 2, "a"));
        assert!(!state.entries.contains_key("a"));
        // Fetched before the last invalidation taken in: maybe old, not kept.
        state.keep("c".into(), Some(&[1]), None, seen + 1, 1);
        assert!(!state.entries.contains_key("c"));
        // Fetched by a batch sent before an answered write: not kept.
        state.answered(5, &[(0, "x".into())]);
        state.keep("d".into(), Some(&[1]), None, seen + 2, 4);
        assert!(!state.entries.contains_key("d"));
        state.keep("d".into(), Some(&[1]), None, seen + 2, 5);
        assert!(state.entries.contains_key("d"));
        // A fetch answered at a later position: invalidations are on their way, and nothing
        // held is answered until they are in (the entry of d may be older than what e saw).
        state.keep("e".into(), Some(&[1]), None, seen + 4, 5);
        assert!(state.read("d", |_| ()).is_none());
        assert!(
            state.entries.contains_key("d"),
            "not dropped, only not answered"
        );
        state.invalidate(event(seen + 3, "zzz"));
        state.invalidate(event(seen + 4, "d"));
        assert!(state.read("d", |_| ()).is_none(), "invalidated");
        assert!(
            state.read("e", |_| ()).is_some(),
            "fetched after the last one"
        );
        // A lost invalidation (a gap): everything goes.
        state.invalidate(event(seen + 6, "zzz"));
        assert!(state.entries.is_empty());
        assert_eq!((state.stats.resets, state.bytes), (1, 0));
    }

    #[test]
    fn it_holds_no_more_than_its_bounds_and_keeps_what_is_read() {
        let (_, near) = near(3, 20);
        let mut state = near.state.borrow_mut();
        let seen = state.seen;
        for key in ["a", "b", "c"] {
            state.keep(key.into(), Some(&[0; 4]), None, seen, 1);
        }
        assert_eq!((state.entries.len(), state.bytes), (3, 15));
        assert!(state.read("a", |_| ()).is_some());
        state.keep("d".into(), Some(&[0; 4]), None, seen, 1);
        let mut keys: Vec<_> = state.entries.keys().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "c", "d"], "b went: a was read since");
        // By bytes: 15 + 10 > 20.
        state.keep("e".into(), Some(&[0; 9]), None, seen, 1);
        assert!(state.bytes <= 20 && state.entries.contains_key("e"));
        // Larger than the whole bound: not kept.
        state.keep("f".into(), Some(&[0; 20]), None, seen, 1);
        assert!(!state.entries.contains_key("f"));
        assert!(state.ring.len() <= 2 * state.entries.len() + 64);
    }

    #[test]
    fn a_value_is_not_read_past_its_time_to_live() {
        let (cache, near) = near(16, 1 << 20);
        block_on(async {
            let ttl = Some(Duration::from_millis(30));
            cache.set("c", "t", &1u32, ttl).await.unwrap();
            assert_eq!(near.get::<u32>("t").await.unwrap(), Some(1));
            assert_eq!(held(&near, "t"), Some(Some(1)));
            tokio::time::sleep(Duration::from_millis(40)).await;
            // The master has not purged it yet (no timer runs here): the deadline is local.
            assert_eq!(held(&near, "t"), None);
        });
    }
}
