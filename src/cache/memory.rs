//! [`MemoryStore`], the in-process [`Store`].
//!
//! # Costs (n entries in the collection, k entries reported)
//! | operation | cost |
//! |---|---|
//! | `get`, `set`, `delete`, `expire`, `increment`, `compare_and_set` | O(log n) |
//! | each eviction a write causes | O(log n) |
//! | `exists`, `ttl` | O(1) |
//! | `keys` | O(n + m log m) for m matches: a scan, then a sort |
//! | `purge_expired` | O(k log n): only what has expired is touched |
//! | `next_expiry` | O(log n) |
//!
//! Collections are created by their first write (or [`MemoryStore::set_limits`]) and are never
//! dropped, so their statistics survive them being emptied; reads never create one, so a reader
//! cannot grow the store with names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::store::{
    CollectionStats, Limits, RemoveReason, Removed, SnapshotEntry, Store, StoreError, StoreStats,
};

/// The in-process [`Store`]: hash maps with an LRU order per collection and one expiry index.
///
/// Per collection, a `HashMap` from key to entry, and a `BTreeMap` from a per-collection access
/// tick to key, so the least recently used entry is the first one and a touch is a remove and
/// an insert, O(log n). Across collections, a `BTreeMap` from `(deadline, sequence)` to
/// `(collection, key)`, kept exact (a delete or a new TTL removes the old slot), so the next
/// deadline is its first key and a purge pops only what is due. Keys and collection names are
/// `Arc<str>`, shared by the three maps. [`Default`] is unlimited.
#[derive(Debug, Default)]
pub struct MemoryStore {
    default_limits: Limits,
    collections: HashMap<Arc<str>, Collection>,
    expiry: ExpiryIndex,
    unknown_misses: u64,
}

#[derive(Debug)]
struct Collection {
    name: Arc<str>,
    limits: Limits,
    entries: HashMap<Arc<str>, Entry>,
    /// Access tick → key; the first is the least recently used.
    lru: BTreeMap<u64, Arc<str>>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
    expiries: u64,
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    /// Its key in [`Collection::lru`].
    tick: u64,
    /// Its key in [`ExpiryIndex::slots`].
    expires: Option<(Instant, u64)>,
}

#[derive(Debug, Default)]
struct ExpiryIndex {
    slots: BTreeMap<(Instant, u64), (Arc<str>, Arc<str>)>,
    seq: u64,
}

const LRU_HOLDS_EVERY_ENTRY: &str = "every entry has an LRU slot";

impl MemoryStore {
    /// A store whose collections get `default_limits` unless [`MemoryStore::set_limits`] says
    /// otherwise.
    pub fn new(default_limits: Limits) -> Self {
        Self {
            default_limits,
            ..Self::default()
        }
    }

    /// Sets the limits of `collection` (creating it if need be) and evicts, least recently used
    /// first, until it is within them; returns what it removed.
    pub fn set_limits(&mut self, collection: &str, limits: Limits, now: Instant) -> Vec<Removed> {
        let col = collection_mut(&mut self.collections, self.default_limits, collection);
        col.limits = limits;
        col.make_room(0, 0, &mut self.expiry, now)
    }

    fn live(&self, collection: &str, key: &str, now: Instant) -> Option<&Entry> {
        let entry = self.collections.get(collection)?.entries.get(key)?;
        entry.is_live(now).then_some(entry)
    }

    /// Stores an entry with an absolute deadline: what `set`, `increment`, `compare_and_set`
    /// and `import` have in common.
    fn write(
        &mut self,
        collection: &str,
        key: &str,
        value: Bytes,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<Vec<Removed>, StoreError> {
        let col = collection_mut(&mut self.collections, self.default_limits, collection);
        let size = key.len() + value.len();
        col.check(size)?;
        let value = match col.replace(key, value, deadline, &mut self.expiry, now) {
            Ok(()) => return Ok(Vec::new()),
            Err(value) => value,
        };
        let mut removed = Vec::new();
        let key = match col.remove(key, &mut self.expiry) {
            Some((key, old)) => {
                if !old.is_live(now) {
                    col.expiries += 1;
                    removed.push(col.removed(&key, RemoveReason::Expired));
                }
                key
            }
            None => Arc::from(key),
        };
        removed.extend(col.make_room(1, size, &mut self.expiry, now));
        col.insert(key, value, deadline, &mut self.expiry);
        Ok(removed)
    }

    #[cfg(test)]
    fn assert_consistent(&self) {
        let mut timed = 0;
        for col in self.collections.values() {
            assert_eq!(col.lru.len(), col.entries.len(), "{}", col.name);
            let bytes: usize = col
                .entries
                .iter()
                .map(|(k, e)| k.len() + e.value.len())
                .sum();
            assert_eq!(bytes, col.bytes, "{}", col.name);
            for (key, entry) in &col.entries {
                assert_eq!(col.lru[&entry.tick], *key);
                if let Some(slot) = entry.expires {
                    assert_eq!(self.expiry.slots[&slot], (col.name.clone(), key.clone()));
                    timed += 1;
                }
            }
        }
        assert_eq!(timed, self.expiry.slots.len());
    }
}

impl Store for MemoryStore {
    fn get(&mut self, collection: &str, key: &str, now: Instant) -> Option<Bytes> {
        let Some(col) = self.collections.get_mut(collection) else {
            self.unknown_misses += 1;
            return None;
        };
        let value = col.touch(key, now).map(|e| e.value.clone());
        match value {
            Some(_) => col.hits += 1,
            None => col.misses += 1,
        }
        value
    }

    fn set(
        &mut self,
        collection: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Vec<Removed>, StoreError> {
        self.write(collection, key, value, deadline(now, ttl), now)
    }

    fn delete(&mut self, collection: &str, key: &str, now: Instant) -> bool {
        // An expired entry is left for `purge_expired`, which reports it.
        if self.live(collection, key, now).is_none() {
            return false;
        }
        let col = self.collections.get_mut(collection).expect("live entry");
        col.remove(key, &mut self.expiry).is_some()
    }

    fn exists(&mut self, collection: &str, key: &str, now: Instant) -> bool {
        self.live(collection, key, now).is_some()
    }

    fn expire(&mut self, collection: &str, key: &str, ttl: Option<Duration>, now: Instant) -> bool {
        let Some(col) = self.collections.get_mut(collection) else {
            return false;
        };
        let Some(entry) = col.entries.get_mut(key).filter(|e| e.is_live(now)) else {
            return false;
        };
        if let Some(slot) = entry.expires.take() {
            self.expiry.slots.remove(&slot);
        }
        // The shared key, from the LRU map: the entry map lends it only immutably.
        let shared = &col.lru[&entry.tick];
        entry.expires = deadline(now, ttl).map(|at| self.expiry.insert(at, &col.name, shared));
        true
    }

    fn ttl(&mut self, collection: &str, key: &str, now: Instant) -> Option<Option<Duration>> {
        let entry = self.live(collection, key, now)?;
        Some(entry.expires.map(|(at, _)| at - now))
    }

    fn increment(
        &mut self,
        collection: &str,
        key: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
        now: Instant,
    ) -> Result<(i64, Vec<Removed>), StoreError> {
        let (start, deadline) = match self.live(collection, key, now) {
            Some(entry) => {
                let n = decode_i64(&entry.value).ok_or_else(|| StoreError::NotAnInteger {
                    collection: collection.to_owned(),
                    key: key.to_owned(),
                })?;
                (n, entry.expires.map(|(at, _)| at))
            }
            None => (0, deadline(now, ttl_if_new)),
        };
        let n = start.checked_add(by).ok_or_else(|| StoreError::Overflow {
            collection: collection.to_owned(),
            key: key.to_owned(),
        })?;
        let removed = self.write(collection, key, encode_i64(n), deadline, now)?;
        Ok((n, removed))
    }

    fn compare_and_set(
        &mut self,
        collection: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Bytes>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(bool, Vec<Removed>), StoreError> {
        let current = self.live(collection, key, now).map(|e| &e.value[..]);
        if current != expected {
            return Ok((false, Vec::new()));
        }
        match new {
            Some(value) => Ok((
                true,
                self.write(collection, key, value, deadline(now, ttl), now)?,
            )),
            None => {
                self.delete(collection, key, now);
                Ok((true, Vec::new()))
            }
        }
    }

    fn keys(&mut self, collection: &str, prefix: &str, now: Instant) -> Vec<String> {
        let Some(col) = self.collections.get(collection) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = col
            .entries
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.is_live(now))
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort_unstable();
        keys
    }

    fn purge_expired(&mut self, now: Instant) -> Vec<Removed> {
        let mut removed = Vec::new();
        while let Some((collection, key)) = self.expiry.pop_due(now) {
            let col = self
                .collections
                .get_mut(&collection)
                .expect("indexed entry");
            col.remove(&key, &mut self.expiry);
            col.expiries += 1;
            removed.push(col.removed(&key, RemoveReason::Expired));
        }
        removed
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.expiry.slots.first_key_value().map(|(&(at, _), _)| at)
    }

    fn stats(&self) -> StoreStats {
        let mut collections: Vec<CollectionStats> = self
            .collections
            .values()
            .map(|col| CollectionStats {
                name: col.name.to_string(),
                entries: col.entries.len(),
                bytes: col.bytes,
                hits: col.hits,
                misses: col.misses,
                evictions: col.evictions,
                expiries: col.expiries,
            })
            .collect();
        collections.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        StoreStats {
            collections,
            unknown_misses: self.unknown_misses,
        }
    }

    fn export(&self, now: Instant) -> Vec<SnapshotEntry> {
        let mut collections: Vec<&Collection> = self.collections.values().collect();
        collections.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for col in collections {
            for key in col.lru.values() {
                let entry = &col.entries[key];
                if entry.is_live(now) {
                    out.push(SnapshotEntry {
                        collection: col.name.to_string(),
                        key: key.to_string(),
                        value: entry.value.clone(),
                        ttl: entry.expires.map(|(at, _)| at - now),
                    });
                }
            }
        }
        out
    }

    fn import(&mut self, entries: Vec<SnapshotEntry>, now: Instant) -> usize {
        let mut stored = 0;
        for e in entries {
            if e.ttl == Some(Duration::ZERO) {
                continue;
            }
            let deadline = deadline(now, e.ttl);
            if self
                .write(&e.collection, &e.key, e.value, deadline, now)
                .is_ok()
            {
                stored += 1;
            }
        }
        stored
    }
}

impl Collection {
    fn new(name: Arc<str>, limits: Limits) -> Self {
        Self {
            name,
            limits,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            hits: 0,
            misses: 0,
            evictions: 0,
            expiries: 0,
        }
    }

    /// Refuses an entry of `size` bytes that could never fit.
    fn check(&self, size: usize) -> Result<(), StoreError> {
        if self.limits.max_entries == Some(0) {
            return Err(StoreError::NoCapacity {
                collection: self.name.to_string(),
            });
        }
        match self.limits.max_bytes {
            Some(limit) if size > limit => Err(StoreError::TooLarge {
                collection: self.name.to_string(),
                size,
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// The live entry at `key`, made the most recently used.
    fn touch(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        let entry = self.entries.get_mut(key).filter(|e| e.is_live(now))?;
        self.tick += 1;
        let key = self.lru.remove(&entry.tick).expect(LRU_HOLDS_EVERY_ENTRY);
        self.lru.insert(self.tick, key);
        entry.tick = self.tick;
        Some(entry)
    }

    fn insert(
        &mut self,
        key: Arc<str>,
        value: Bytes,
        deadline: Option<Instant>,
        expiry: &mut ExpiryIndex,
    ) {
        self.tick += 1;
        let expires = deadline.map(|at| expiry.insert(at, &self.name, &key));
        self.bytes += key.len() + value.len();
        self.lru.insert(self.tick, Arc::clone(&key));
        let entry = Entry {
            value,
            tick: self.tick,
            expires,
        };
        self.entries.insert(key, entry);
    }

    /// Overwrites the live entry at `key` where it is, when that needs no eviction: what
    /// removing it and inserting the new one would do, with one lookup. Hands `value` back
    /// otherwise.
    fn replace(
        &mut self,
        key: &str,
        value: Bytes,
        deadline: Option<Instant>,
        expiry: &mut ExpiryIndex,
        now: Instant,
    ) -> Result<(), Bytes> {
        let Some(entry) = self.entries.get_mut(key).filter(|e| e.is_live(now)) else {
            return Err(value);
        };
        let bytes = self.bytes - entry.value.len() + value.len();
        if self.limits.max_bytes.is_some_and(|max| bytes > max) {
            return Err(value);
        }
        self.bytes = bytes;
        self.tick += 1;
        let shared = self.lru.remove(&entry.tick).expect(LRU_HOLDS_EVERY_ENTRY);
        if let Some(slot) = entry.expires.take() {
            expiry.slots.remove(&slot);
        }
        entry.expires = deadline.map(|at| expiry.insert(at, &self.name, &shared));
        self.lru.insert(self.tick, shared);
        entry.tick = self.tick;
        entry.value = value;
        Ok(())
    }

    /// Removes `key` from all three maps, live or not.
    fn remove(&mut self, key: &str, expiry: &mut ExpiryIndex) -> Option<(Arc<str>, Entry)> {
        let (key, entry) = self.entries.remove_entry(key)?;
        self.lru.remove(&entry.tick);
        if let Some(slot) = entry.expires {
            expiry.slots.remove(&slot);
        }
        self.bytes -= key.len() + entry.value.len();
        Some((key, entry))
    }

    /// Evicts least recently used entries until `entries` more entries of `bytes` more bytes
    /// fit; an expired victim is counted and reported as expired.
    fn make_room(
        &mut self,
        entries: usize,
        bytes: usize,
        expiry: &mut ExpiryIndex,
        now: Instant,
    ) -> Vec<Removed> {
        let fits = |col: &Self| {
            let Limits {
                max_entries,
                max_bytes,
            } = col.limits;
            max_entries.is_none_or(|max| col.entries.len() + entries <= max)
                && max_bytes.is_none_or(|max| col.bytes + bytes <= max)
        };
        let mut removed = Vec::new();
        while !fits(self) {
            let Some(key) = self.lru.first_key_value().map(|(_, k)| Arc::clone(k)) else {
                break;
            };
            let (key, entry) = self.remove(&key, expiry).expect(LRU_HOLDS_EVERY_ENTRY);
            let reason = if entry.is_live(now) {
                self.evictions += 1;
                RemoveReason::Evicted
            } else {
                self.expiries += 1;
                RemoveReason::Expired
            };
            removed.push(self.removed(&key, reason));
        }
        removed
    }

    fn removed(&self, key: &str, reason: RemoveReason) -> Removed {
        Removed {
            collection: self.name.to_string(),
            key: key.to_owned(),
            reason,
        }
    }
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(at, _)| now < at)
    }
}

impl ExpiryIndex {
    fn insert(&mut self, at: Instant, collection: &Arc<str>, key: &Arc<str>) -> (Instant, u64) {
        self.seq += 1;
        let slot = (at, self.seq);
        self.slots
            .insert(slot, (Arc::clone(collection), Arc::clone(key)));
        slot
    }

    /// Takes the first slot if its deadline has come.
    fn pop_due(&mut self, now: Instant) -> Option<(Arc<str>, Arc<str>)> {
        let entry = self.slots.first_entry().filter(|e| e.key().0 <= now)?;
        Some(entry.remove())
    }
}

/// The collection `name`, created with `limits` if need be.
fn collection_mut<'a>(
    collections: &'a mut HashMap<Arc<str>, Collection>,
    limits: Limits,
    name: &str,
) -> &'a mut Collection {
    if !collections.contains_key(name) {
        let col = Collection::new(Arc::from(name), limits);
        collections.insert(Arc::clone(&col.name), col);
    }
    collections.get_mut(name).expect("just inserted")
}

/// `now + ttl`; a TTL too large to represent never expires.
fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.and_then(|ttl| now.checked_add(ttl))
}

fn encode_i64(n: i64) -> Bytes {
    // A postcard i64 is a zigzag varint of at most 10 bytes.
    let mut buf = [0u8; 10];
    let used = postcard::to_slice(&n, &mut buf).expect("an i64 fits in 10 bytes");
    Bytes::copy_from_slice(used)
}

fn decode_i64(bytes: &[u8]) -> Option<i64> {
    match postcard::take_from_bytes::<i64>(bytes) {
        Ok((n, [])) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: `at(s)` is `s` seconds after a fixed base.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }

        fn at(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn removed(key: &str, reason: RemoveReason) -> Removed {
        Removed {
            collection: "c".into(),
            key: key.into(),
            reason,
        }
    }

    fn limited(max_entries: Option<usize>, max_bytes: Option<usize>) -> MemoryStore {
        MemoryStore::new(Limits {
            max_entries,
            max_bytes,
        })
    }

    fn stats(store: &MemoryStore, collection: &str) -> CollectionStats {
        let stats = store.stats().collections;
        let found = stats.into_iter().find(|c| c.name == collection);
        found.expect("the collection has statistics")
    }

    #[test]
    fn set_then_get_returns_the_value() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        assert_eq!(s.set("c", "k", b("v"), None, clock.at(0)), Ok(vec![]));
        assert_eq!(s.get("c", "k", clock.at(1)), Some(b("v")));
        assert_eq!(s.get("c", "other", clock.at(1)), None);
        s.assert_consistent();
    }

    #[test]
    fn set_overwrites_value_and_ttl() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("one"), secs(5), clock.at(0)).unwrap();
        s.set("c", "k", b("two"), None, clock.at(1)).unwrap();
        assert_eq!(s.get("c", "k", clock.at(10)), Some(b("two")));
        assert_eq!(s.ttl("c", "k", clock.at(10)), Some(None));
        assert_eq!(s.next_expiry(), None);
        assert_eq!(stats(&s, "c").bytes, 4);
        s.assert_consistent();
    }

    #[test]
    fn delete_removes_a_live_key_once() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), secs(5), clock.at(0)).unwrap();
        assert!(s.delete("c", "k", clock.at(1)));
        assert!(!s.delete("c", "k", clock.at(1)));
        assert!(!s.delete("nope", "k", clock.at(1)));
        assert_eq!(s.get("c", "k", clock.at(1)), None);
        assert_eq!(s.next_expiry(), None, "the expiry slot goes with the entry");
        s.assert_consistent();
    }

    #[test]
    fn delete_of_an_expired_key_leaves_it_for_purge() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), secs(5), clock.at(0)).unwrap();
        assert!(!s.delete("c", "k", clock.at(5)));
        assert_eq!(
            s.purge_expired(clock.at(5)),
            [removed("k", RemoveReason::Expired)]
        );
    }

    #[test]
    fn exists_sees_only_live_keys() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), secs(5), clock.at(0)).unwrap();
        assert!(s.exists("c", "k", clock.at(4)));
        assert!(!s.exists("c", "k", clock.at(5)));
        assert!(!s.exists("c", "x", clock.at(0)));
        assert!(!s.exists("nope", "k", clock.at(0)));
        assert_eq!(stats(&s, "c").hits + stats(&s, "c").misses, 0);
    }

    #[test]
    fn get_after_the_ttl_is_a_miss() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), secs(5), clock.at(0)).unwrap();
        assert_eq!(s.get("c", "k", clock.at(4)), Some(b("v")));
        assert_eq!(s.get("c", "k", clock.at(5)), None);
        assert_eq!(stats(&s, "c").misses, 1);
    }

    #[test]
    fn expire_sets_and_clears_a_ttl() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), None, clock.at(0)).unwrap();
        assert!(s.expire("c", "k", secs(10), clock.at(2)));
        assert_eq!(s.ttl("c", "k", clock.at(4)), Some(secs(8)));
        assert_eq!(s.next_expiry(), Some(clock.at(12)));
        s.assert_consistent();
        assert!(s.expire("c", "k", secs(1), clock.at(4)));
        assert_eq!(s.next_expiry(), Some(clock.at(5)), "the old slot is gone");
        s.assert_consistent();
        assert!(s.expire("c", "k", None, clock.at(4)));
        assert_eq!(s.ttl("c", "k", clock.at(100)), Some(None));
        assert_eq!(s.next_expiry(), None);
        s.assert_consistent();
    }

    #[test]
    fn expire_of_a_missing_or_expired_key_is_false() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        assert!(!s.expire("c", "k", secs(1), clock.at(0)));
        s.set("c", "k", b("v"), secs(5), clock.at(0)).unwrap();
        assert!(!s.expire("c", "missing", secs(1), clock.at(0)));
        assert!(!s.expire("c", "k", None, clock.at(5)));
        assert_eq!(s.ttl("c", "k", clock.at(5)), None);
    }

    #[test]
    fn ttl_reports_remaining_time() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "timed", b("v"), secs(10), clock.at(0)).unwrap();
        s.set("c", "forever", b("v"), None, clock.at(0)).unwrap();
        assert_eq!(s.ttl("c", "timed", clock.at(3)), Some(secs(7)));
        assert_eq!(s.ttl("c", "forever", clock.at(3)), Some(None));
        assert_eq!(s.ttl("c", "missing", clock.at(3)), None);
        assert_eq!(s.ttl("nope", "timed", clock.at(3)), None);
    }

    #[test]
    fn a_ttl_too_large_to_represent_never_expires() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v"), Some(Duration::MAX), clock.at(0))
            .unwrap();
        assert_eq!(s.ttl("c", "k", clock.at(0)), Some(None));
        assert!(s.expire("c", "k", Some(Duration::MAX), clock.at(0)));
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn purge_returns_exactly_the_expired_entries() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "soon", b("v"), secs(5), clock.at(0)).unwrap();
        s.set("c", "sooner", b("v"), secs(3), clock.at(0)).unwrap();
        s.set("c", "later", b("v"), secs(10), clock.at(0)).unwrap();
        s.set("c", "never", b("v"), None, clock.at(0)).unwrap();
        s.set("d", "soon", b("v"), secs(5), clock.at(0)).unwrap();
        assert_eq!(s.next_expiry(), Some(clock.at(3)));
        let purged = s.purge_expired(clock.at(5));
        let expected = [
            removed("sooner", RemoveReason::Expired),
            removed("soon", RemoveReason::Expired),
            Removed {
                collection: "d".into(),
                key: "soon".into(),
                reason: RemoveReason::Expired,
            },
        ];
        assert_eq!(purged, expected);
        assert_eq!(s.next_expiry(), Some(clock.at(10)));
        assert_eq!(s.keys("c", "", clock.at(5)), ["later", "never"]);
        assert_eq!(stats(&s, "c").expiries, 2);
        assert_eq!(stats(&s, "c").entries, 2);
        s.assert_consistent();
    }

    #[test]
    fn purge_with_nothing_due_touches_nothing() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        for i in 0..100 {
            s.set("c", &format!("k{i}"), b("v"), secs(10 + i), clock.at(0))
                .unwrap();
        }
        let before = s.stats();
        assert_eq!(s.purge_expired(clock.at(9)), []);
        assert_eq!(s.stats(), before);
        assert_eq!(s.next_expiry(), Some(clock.at(10)));
        // Due entries are popped from the front of the index, one per expiry.
        assert_eq!(s.purge_expired(clock.at(12)).len(), 3);
        assert_eq!(s.expiry.slots.len(), 97);
        s.assert_consistent();
    }

    #[test]
    fn next_expiry_follows_deletes_and_overwrites() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "a", b("v"), secs(5), clock.at(0)).unwrap();
        s.set("c", "b", b("v"), secs(8), clock.at(0)).unwrap();
        s.delete("c", "a", clock.at(1));
        assert_eq!(s.next_expiry(), Some(clock.at(8)));
        s.set("c", "b", b("v"), secs(1), clock.at(1)).unwrap();
        assert_eq!(s.next_expiry(), Some(clock.at(2)));
        s.assert_consistent();
    }

    #[test]
    fn an_expired_entry_replaced_by_a_write_is_reported() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("old"), secs(5), clock.at(0)).unwrap();
        let removed_now = s.set("c", "k", b("new"), None, clock.at(6)).unwrap();
        assert_eq!(removed_now, [removed("k", RemoveReason::Expired)]);
        assert_eq!(s.purge_expired(clock.at(100)), [], "reported once");
        assert_eq!(stats(&s, "c").expiries, 1);
        s.assert_consistent();
    }

    #[test]
    fn lru_bound_by_entries_evicts_the_least_recently_used() {
        let (clock, mut s) = (Clock::new(), limited(Some(3), None));
        for k in ["a", "b", "c"] {
            assert_eq!(s.set("c", k, b("v"), None, clock.at(0)), Ok(vec![]));
        }
        assert!(
            s.get("c", "a", clock.at(1)).is_some(),
            "a is now the most recent"
        );
        let evicted = s.set("c", "d", b("v"), None, clock.at(2)).unwrap();
        assert_eq!(evicted, [removed("b", RemoveReason::Evicted)]);
        // Overwriting a present key needs no room.
        assert_eq!(s.set("c", "c", b("w"), None, clock.at(3)), Ok(vec![]));
        let evicted = s.set("c", "e", b("v"), None, clock.at(4)).unwrap();
        assert_eq!(evicted, [removed("a", RemoveReason::Evicted)]);
        assert_eq!(s.keys("c", "", clock.at(4)), ["c", "d", "e"]);
        assert_eq!(stats(&s, "c").evictions, 2);
        s.assert_consistent();
    }

    #[test]
    fn an_overwrite_makes_the_key_the_most_recent_and_one_that_grows_makes_room() {
        // Each entry: a 1-byte key and a 2-byte value.
        let (clock, mut s) = (Clock::new(), limited(Some(3), Some(10)));
        for k in ["a", "b", "c"] {
            s.set("c", k, b("vv"), None, clock.at(0)).unwrap();
        }
        // In place: a becomes the most recent, with a TTL now.
        assert_eq!(s.set("c", "a", b("ww"), secs(9), clock.at(1)), Ok(vec![]));
        assert_eq!(s.next_expiry(), Some(clock.at(10)));
        s.assert_consistent();
        let evicted = s.set("c", "d", b("vv"), None, clock.at(2)).unwrap();
        assert_eq!(evicted, [removed("b", RemoveReason::Evicted)]);
        // Growing c past the byte bound: the least recently used others make room.
        let evicted = s.set("c", "c", b("vvvvv"), None, clock.at(3)).unwrap();
        assert_eq!(evicted, [removed("a", RemoveReason::Evicted)]);
        assert_eq!(s.keys("c", "", clock.at(3)), ["c", "d"]);
        assert_eq!((stats(&s, "c").bytes, s.next_expiry()), (9, None));
        s.assert_consistent();
    }

    #[test]
    fn lru_bound_by_bytes_evicts_until_the_entry_fits() {
        // Each entry: a 1-byte key and a 4-byte value.
        let (clock, mut s) = (Clock::new(), limited(None, Some(12)));
        s.set("c", "a", b("aaaa"), None, clock.at(0)).unwrap();
        s.set("c", "b", b("bbbb"), None, clock.at(1)).unwrap();
        s.get("c", "a", clock.at(2));
        assert_eq!(stats(&s, "c").bytes, 10);
        let evicted = s.set("c", "c", b("cccccccccc"), None, clock.at(3)).unwrap();
        let expected = [
            removed("b", RemoveReason::Evicted),
            removed("a", RemoveReason::Evicted),
        ];
        assert_eq!(evicted, expected);
        assert_eq!(stats(&s, "c").bytes, 11);
        let evicted = s.set("c", "d", b(""), None, clock.at(4)).unwrap();
        assert_eq!(evicted, [], "1 more byte fits");
        s.assert_consistent();
    }

    #[test]
    fn an_expired_victim_is_reported_as_expired() {
        let (clock, mut s) = (Clock::new(), limited(Some(1), None));
        s.set("c", "a", b("v"), secs(1), clock.at(0)).unwrap();
        let out = s.set("c", "b", b("v"), None, clock.at(2)).unwrap();
        assert_eq!(out, [removed("a", RemoveReason::Expired)]);
        assert_eq!((stats(&s, "c").expiries, stats(&s, "c").evictions), (1, 0));
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn an_entry_larger_than_the_limit_is_refused_and_changes_nothing() {
        let (clock, mut s) = (Clock::new(), limited(None, Some(8)));
        s.set("c", "k", b("v"), None, clock.at(0)).unwrap();
        let err = s.set("c", "k", b("123456789"), None, clock.at(0));
        let expected = StoreError::TooLarge {
            collection: "c".into(),
            size: 10,
            limit: 8,
        };
        assert_eq!(err, Err(expected));
        assert_eq!(s.get("c", "k", clock.at(0)), Some(b("v")));
        assert_eq!(s.set("c", "k", b("1234567"), None, clock.at(0)), Ok(vec![]));
    }

    #[test]
    fn a_collection_limited_to_zero_entries_has_no_capacity() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        let none = Limits {
            max_entries: Some(0),
            max_bytes: None,
        };
        s.set_limits("c", none, clock.at(0));
        let err = s.set("c", "k", b("v"), None, clock.at(0));
        assert!(matches!(err, Err(StoreError::NoCapacity { .. })));
    }

    #[test]
    fn set_limits_evicts_down_to_the_new_bound() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        for k in ["a", "b", "c", "d"] {
            s.set("c", k, b("v"), None, clock.at(0)).unwrap();
        }
        s.get("c", "a", clock.at(1));
        let limits = Limits {
            max_entries: Some(2),
            max_bytes: None,
        };
        let out = s.set_limits("c", limits, clock.at(2));
        let expected = [
            removed("b", RemoveReason::Evicted),
            removed("c", RemoveReason::Evicted),
        ];
        assert_eq!(out, expected);
        assert_eq!(s.keys("c", "", clock.at(2)), ["a", "d"]);
        s.assert_consistent();
    }

    #[test]
    fn stats_count_hits_misses_evictions_and_expiries() {
        let (clock, mut s) = (Clock::new(), limited(Some(2), None));
        s.set("c", "a", b("vv"), secs(5), clock.at(0)).unwrap();
        s.set("c", "b", b("vv"), None, clock.at(0)).unwrap();
        s.get("c", "a", clock.at(1));
        s.get("c", "b", clock.at(1));
        s.get("c", "x", clock.at(1));
        s.set("c", "c", b("vv"), None, clock.at(2)).unwrap(); // evicts a
        s.set("c", "d", b("vv"), secs(1), clock.at(2)).unwrap(); // evicts b
        s.purge_expired(clock.at(3)); // d
        s.get("unknown", "k", clock.at(3));
        let expected = CollectionStats {
            name: "c".into(),
            entries: 1,
            bytes: 3,
            hits: 2,
            misses: 1,
            evictions: 2,
            expiries: 1,
        };
        assert_eq!(stats(&s, "c"), expected);
        assert_eq!(s.stats().unknown_misses, 1);
        assert!(s.stats().collections.iter().all(|c| c.name != "unknown"));
    }

    #[test]
    fn increment_counts_from_zero_and_reads_back_as_postcard_i64() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        assert_eq!(s.increment("c", "n", 5, None, clock.at(0)), Ok((5, vec![])));
        assert_eq!(
            s.increment("c", "n", -7, None, clock.at(0)),
            Ok((-2, vec![]))
        );
        let raw = s.get("c", "n", clock.at(0)).unwrap();
        assert_eq!(postcard::from_bytes::<i64>(&raw), Ok(-2));
        s.set(
            "c",
            "m",
            postcard::to_stdvec(&40i64).unwrap().into(),
            None,
            clock.at(0),
        )
        .unwrap();
        assert_eq!(
            s.increment("c", "m", 2, None, clock.at(0)),
            Ok((42, vec![]))
        );
        s.assert_consistent();
    }

    #[test]
    fn increment_gives_a_ttl_only_to_a_new_counter() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.increment("c", "n", 1, secs(10), clock.at(0)).unwrap();
        s.increment("c", "n", 1, secs(100), clock.at(4)).unwrap();
        s.increment("c", "n", 1, None, clock.at(5)).unwrap();
        assert_eq!(s.ttl("c", "n", clock.at(5)), Some(secs(5)));
        // Once it has expired, it starts again from 0 with the new TTL.
        assert_eq!(
            s.increment("c", "n", 1, secs(3), clock.at(10)).unwrap().0,
            1
        );
        assert_eq!(s.ttl("c", "n", clock.at(10)), Some(secs(3)));
        s.assert_consistent();
    }

    #[test]
    fn increment_of_a_non_integer_is_refused() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("text"), None, clock.at(0)).unwrap();
        let expected = StoreError::NotAnInteger {
            collection: "c".into(),
            key: "k".into(),
        };
        assert_eq!(s.increment("c", "k", 1, None, clock.at(0)), Err(expected));
        // A postcard i64 followed by anything is not one either.
        s.set("c", "k", Bytes::from_static(&[2, 0]), None, clock.at(0))
            .unwrap();
        assert!(s.increment("c", "k", 1, None, clock.at(0)).is_err());
        assert_eq!(
            s.get("c", "k", clock.at(0)),
            Some(Bytes::from_static(&[2, 0]))
        );
    }

    #[test]
    fn increment_overflow_is_an_error_and_keeps_the_value() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.increment("c", "n", i64::MAX, None, clock.at(0)).unwrap();
        let err = s.increment("c", "n", 1, None, clock.at(0));
        assert!(matches!(err, Err(StoreError::Overflow { .. })), "{err:?}");
        assert_eq!(
            s.increment("c", "n", 0, None, clock.at(0)).unwrap().0,
            i64::MAX
        );
        s.increment("c", "low", i64::MIN, None, clock.at(0))
            .unwrap();
        assert!(s.increment("c", "low", -1, None, clock.at(0)).is_err());
    }

    #[test]
    fn compare_and_set_on_an_absent_key() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        let cas = s.compare_and_set("c", "k", None, Some(b("v")), secs(5), clock.at(0));
        assert_eq!(cas, Ok((true, vec![])));
        assert_eq!(s.ttl("c", "k", clock.at(0)), Some(secs(5)));
        let cas = s.compare_and_set("c", "k", None, Some(b("w")), None, clock.at(0));
        assert_eq!(cas, Ok((false, vec![])), "present now");
        // Once expired, it is absent again.
        let cas = s.compare_and_set("c", "k", None, Some(b("w")), None, clock.at(5));
        assert_eq!(cas, Ok((true, vec![removed("k", RemoveReason::Expired)])));
        assert_eq!(s.get("c", "k", clock.at(5)), Some(b("w")));
        s.assert_consistent();
    }

    #[test]
    fn compare_and_set_on_a_present_key() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "k", b("v1"), None, clock.at(0)).unwrap();
        let cas = s.compare_and_set("c", "k", Some(b"v0"), Some(b("v2")), None, clock.at(0));
        assert_eq!(cas, Ok((false, vec![])));
        assert_eq!(s.get("c", "k", clock.at(0)), Some(b("v1")));
        let cas = s.compare_and_set("c", "k", Some(b"v1"), Some(b("v2")), None, clock.at(0));
        assert_eq!(cas, Ok((true, vec![])));
        assert_eq!(s.get("c", "k", clock.at(0)), Some(b("v2")));
        let cas = s.compare_and_set("c", "k", Some(b"v2"), None, None, clock.at(0));
        assert_eq!(cas, Ok((true, vec![])));
        assert!(!s.exists("c", "k", clock.at(0)));
        s.assert_consistent();
    }

    #[test]
    fn compare_and_set_that_does_not_fit_is_an_error() {
        let (clock, mut s) = (Clock::new(), limited(None, Some(4)));
        let cas = s.compare_and_set("c", "k", None, Some(b("toolong")), None, clock.at(0));
        assert!(matches!(cas, Err(StoreError::TooLarge { .. })));
    }

    #[test]
    fn keys_by_prefix_are_sorted_and_exclude_expired() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        for k in ["user:2", "user:1", "session:1", "user:10"] {
            s.set("c", k, b("v"), None, clock.at(0)).unwrap();
        }
        s.set("c", "user:3", b("v"), secs(1), clock.at(0)).unwrap();
        assert_eq!(s.keys("c", "user:", clock.at(0)).len(), 4);
        assert_eq!(
            s.keys("c", "user:", clock.at(1)),
            ["user:1", "user:10", "user:2"]
        );
        assert_eq!(s.keys("c", "", clock.at(1)).len(), 4);
        assert!(s.keys("c", "nothing", clock.at(1)).is_empty());
        assert!(s.keys("nope", "", clock.at(1)).is_empty());
    }

    #[test]
    fn collections_are_isolated() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        let one = Limits {
            max_entries: Some(1),
            max_bytes: None,
        };
        s.set_limits("small", one, clock.at(0));
        s.set("big", "k", b("big"), None, clock.at(0)).unwrap();
        s.set("small", "k", b("small"), None, clock.at(0)).unwrap();
        s.set("big", "k2", b("big"), None, clock.at(0)).unwrap();
        assert_eq!(s.get("big", "k", clock.at(0)), Some(b("big")));
        assert_eq!(s.get("small", "k", clock.at(0)), Some(b("small")));
        let out = s.set("small", "k2", b("v"), None, clock.at(0)).unwrap();
        assert_eq!(out.len(), 1, "only the small collection evicts");
        assert_eq!(out[0].collection, "small");
        assert!(s.delete("big", "k", clock.at(0)));
        assert!(!s.exists("small", "k", clock.at(0)));
        assert!(s.exists("small", "k2", clock.at(0)));
        assert_eq!(s.keys("big", "", clock.at(0)), ["k2"]);
        assert_eq!(stats(&s, "big").hits, 1);
        assert_eq!(stats(&s, "small").hits, 1);
        s.assert_consistent();
    }

    #[test]
    fn export_then_import_restores_values_ttls_and_recency() {
        let (clock, mut s) = (Clock::new(), MemoryStore::default());
        s.set("c", "a", b("1"), secs(10), clock.at(0)).unwrap();
        s.set("c", "b", b("2"), None, clock.at(0)).unwrap();
        s.set("c", "gone", b("3"), secs(1), clock.at(0)).unwrap();
        s.set("d", "x", b("4"), None, clock.at(0)).unwrap();
        s.get("c", "a", clock.at(2));
        let exported = s.export(clock.at(2));
        let order: Vec<_> = exported
            .iter()
            .map(|e| (&e.collection[..], &e.key[..]))
            .collect();
        assert_eq!(order, [("c", "b"), ("c", "a"), ("d", "x")]);
        assert_eq!(exported[1].ttl, secs(8));

        // A store with room for one entry per collection keeps the most recent.
        let (later, mut t) = (Clock::new(), limited(Some(1), None));
        assert_eq!(t.import(exported.clone(), later.at(0)), 3);
        assert_eq!(t.keys("c", "", later.at(0)), ["a"]);
        assert_eq!(t.ttl("c", "a", later.at(0)), Some(secs(8)));
        assert_eq!(t.get("d", "x", later.at(0)), Some(b("4")));
        t.assert_consistent();

        let mut spent = exported;
        spent[1].ttl = Some(Duration::ZERO);
        let mut u = MemoryStore::default();
        assert_eq!(u.import(spent, later.at(0)), 2);
        assert!(!u.exists("c", "a", later.at(0)));
    }

    #[test]
    fn the_store_is_object_safe() {
        let clock = Clock::new();
        let mut store: Box<dyn Store> = Box::new(MemoryStore::default());
        store.set("c", "k", b("v"), None, clock.at(0)).unwrap();
        assert_eq!(store.get("c", "k", clock.at(0)), Some(b("v")));
    }
}
