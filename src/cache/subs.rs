//! Who hears of which changes: subscriptions by collection and key prefix, and the near-caches'
//! subscriptions, which track keys one by one.
//!
//! A worker's events go to its proxy through the routing table, tagged with the pid that
//! subscribed, so a replacement process of the same slot does not get its predecessor's events;
//! a master subscriber's go down a channel. Events are sent in the order the changes are made,
//! numbered per subscription, and a change is built only when somebody wants it.
//!
//! A near-cache's subscription ([`Subscribers::track`]) hears only of the keys its near-cache
//! has fetched ([`Subscribers::track_key`]), each once: the first change after a fetch is sent
//! and the key is no longer tracked, until it is fetched again. So what one subscription may
//! have in flight is bounded by the keys it tracks, at most its `max_keys` (the one fetched
//! longest ago is dropped to make room, and reported as evicted), and its events are sent even
//! past the outbox's limit: a near-cache must not miss one.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;

use crate::cache::ops::{CacheError, CacheEvent, Change};
use crate::messaging::table::{Routed, SharedRouting};
use crate::messaging::Peer;

/// Most keys one near-cache's subscription tracks, whatever it asks for.
pub(crate) const MAX_TRACKED_KEYS: usize = 1 << 16;

/// Most near-caches one process keeps at once: with [`MAX_TRACKED_KEYS`], what the master
/// tracks for a process is bounded.
pub(crate) const MAX_NEAR_CACHES: usize = 16;

#[derive(Debug)]
enum Owner {
    Worker { id: usize, pid: u32 },
    Master(mpsc::UnboundedSender<CacheEvent>),
}

#[derive(Debug)]
struct Sub {
    owner: Owner,
    id: u64,
    collection: String,
    prefix: String,
    /// Events sent to it so far.
    seq: u64,
    /// A near-cache's: the keys it tracks instead of a prefix.
    tracking: Option<Tracking>,
}

/// The keys a near-cache has fetched and not yet heard of a change to, in the order fetched.
#[derive(Debug, Default)]
struct Tracking {
    keys: HashMap<Box<str>, u64>,
    order: BTreeMap<u64, Box<str>>,
    next: u64,
    max: usize,
}

impl Tracking {
    fn remove(&mut self, key: &str) -> bool {
        match self.keys.remove(key) {
            Some(n) => {
                self.order.remove(&n);
                true
            }
            None => false,
        }
    }

    /// Tracks `key`; returns the key dropped to make room, if one was.
    fn add(&mut self, key: &str) -> Option<Box<str>> {
        if self.keys.contains_key(key) {
            return None;
        }
        let dropped = if self.keys.len() >= self.max {
            self.order.pop_first().map(|(_, k)| {
                self.keys.remove(&k);
                k
            })
        } else {
            None
        };
        self.next += 1;
        self.keys.insert(key.into(), self.next);
        self.order.insert(self.next, key.into());
        dropped
    }
}

impl Sub {
    fn wants(&self, collection: &str, key: &str) -> bool {
        self.collection == collection
            && match &self.tracking {
                Some(t) => t.keys.contains_key(key),
                None => key.starts_with(&self.prefix),
            }
    }

    fn belongs_to(&self, who: Peer) -> bool {
        match (&self.owner, who) {
            (Owner::Worker { id, pid }, Peer::Worker { id: w, pid: p }) => *id == w && *pid == p,
            (Owner::Master(_), Peer::Master) => true,
            _ => false,
        }
    }

    /// Sends the next event; false when its master subscriber has gone.
    fn send(&mut self, routing: &SharedRouting, key: &str, change: Change) -> bool {
        self.seq += 1;
        let event = CacheEvent {
            subscription: self.id,
            seq: self.seq,
            collection: self.collection.clone(),
            key: key.to_owned(),
            change,
        };
        match &self.owner {
            Owner::Master(tx) => tx.send(event).is_ok(),
            Owner::Worker { id, pid } => {
                let mut payload = Vec::new();
                if crate::codec::encode_value(&mut payload, &event).is_err() {
                    return true;
                }
                if let Some(slot) = routing.borrow().slots.get(*id) {
                    slot.do_send(Routed::Notify {
                        pid: *pid,
                        payload: payload.into(),
                        must_arrive: self.tracking.is_some(),
                    });
                }
                true
            }
        }
    }
}

/// The subscriptions of every process.
#[derive(Debug)]
pub(crate) struct Subscribers {
    subs: Vec<Sub>,
    routing: SharedRouting,
}

impl Subscribers {
    pub(crate) fn new(routing: SharedRouting) -> Self {
        Self {
            subs: Vec::new(),
            routing,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.subs.len()
    }

    fn add(&mut self, owner: Owner, id: u64, collection: String, prefix: String) {
        self.subs.push(Sub {
            owner,
            id,
            collection,
            prefix,
            seq: 0,
            tracking: None,
        });
    }

    /// A worker process's subscription `id`.
    pub(crate) fn add_worker(
        &mut self,
        (worker, pid): (usize, u32),
        id: u64,
        collection: String,
        prefix: String,
    ) {
        let owner = Owner::Worker { id: worker, pid };
        self.add(owner, id, collection, prefix);
    }

    /// A subscription from the master itself, whose events go down `tx`.
    pub(crate) fn add_master(
        &mut self,
        id: u64,
        collection: String,
        prefix: String,
        tx: mpsc::UnboundedSender<CacheEvent>,
    ) {
        self.add(Owner::Master(tx), id, collection, prefix);
    }

    fn find(&mut self, id: u64, who: Peer) -> Option<&mut Sub> {
        self.subs
            .iter_mut()
            .find(|s| s.id == id && s.belongs_to(who))
    }

    /// Makes `who`'s subscription `id` a near-cache's, tracking at most `max_keys` keys (and
    /// [`MAX_TRACKED_KEYS`]); the number of events sent to it so far.
    ///
    /// # Errors
    /// [`CacheError::Unreachable`] when there is no such subscription, [`CacheError::Limit`]
    /// when `who` keeps [`MAX_NEAR_CACHES`] near-caches already.
    pub(crate) fn track(&mut self, id: u64, who: Peer, max_keys: usize) -> Result<u64, CacheError> {
        let near_caches = self
            .subs
            .iter()
            .filter(|s| s.tracking.is_some() && s.belongs_to(who) && s.id != id)
            .count();
        if near_caches >= MAX_NEAR_CACHES {
            return Err(CacheError::Limit(format!(
                "a process keeps at most {MAX_NEAR_CACHES} near-caches at once"
            )));
        }
        let Some(sub) = self.find(id, who) else {
            return Err(CacheError::Unreachable(format!(
                "no subscription {id} to track keys with"
            )));
        };
        let max = max_keys.clamp(1, MAX_TRACKED_KEYS);
        sub.tracking.get_or_insert_with(Tracking::default).max = max;
        Ok(sub.seq)
    }

    /// `who`'s near-cache subscription `id` fetched `key` of `collection`: it tracks it now.
    /// Returns the number of events sent to it so far (after one for a key dropped to make
    /// room), or `None` if it is no near-cache's subscription of that collection.
    pub(crate) fn track_key(
        &mut self,
        id: u64,
        who: Peer,
        collection: &str,
        key: &str,
    ) -> Option<u64> {
        let routing = self.routing.clone();
        let sub = self.find(id, who)?;
        if sub.collection != collection {
            return None;
        }
        let dropped = sub.tracking.as_mut()?.add(key);
        if let Some(dropped) = dropped {
            // A master subscriber that has gone is removed at its next change.
            sub.send(&routing, &dropped, Change::Evicted);
        }
        Some(sub.seq)
    }

    /// Ends `who`'s subscription `id`.
    pub(crate) fn remove(&mut self, id: u64, who: Peer) {
        self.subs.retain(|s| !(s.id == id && s.belongs_to(who)));
    }

    /// A worker's process ended: its subscriptions end.
    pub(crate) fn process_gone(&mut self, who: Peer) {
        if matches!(who, Peer::Worker { .. }) {
            self.subs.retain(|s| !s.belongs_to(who));
        }
    }

    /// Tells the subscribers of `key` about a change, which `change` builds only if there are
    /// any; a near-cache's subscription stops tracking the key. A master subscriber that has
    /// gone is dropped.
    pub(crate) fn notify(&mut self, collection: &str, key: &str, change: impl FnOnce() -> Change) {
        if !self.subs.iter().any(|s| s.wants(collection, key)) {
            return;
        }
        let change = change();
        let routing = self.routing.clone();
        self.subs.retain_mut(|sub| {
            if !sub.wants(collection, key) {
                return true;
            }
            if let Some(tracking) = sub.tracking.as_mut() {
                tracking.remove(key);
            }
            sub.send(&routing, key, change.clone())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master_sub(subs: &mut Subscribers, id: u64) -> mpsc::UnboundedReceiver<CacheEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        subs.add_master(id, "c".into(), "".into(), tx);
        rx
    }

    fn keys(rx: &mut mpsc::UnboundedReceiver<CacheEvent>) -> Vec<(u64, String, Change)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.seq, e.key, e.change))
            .collect()
    }

    #[test]
    fn a_process_keeps_a_bounded_number_of_near_caches() {
        let mut subs = Subscribers::new(Default::default());
        let worker = |pid| Peer::Worker { id: 0, pid };
        for id in 0..=MAX_NEAR_CACHES as u64 {
            subs.add_worker((0, 1), id, "c".into(), "".into());
        }
        subs.add_worker((0, 2), 99, "c".into(), "".into());
        for id in 0..MAX_NEAR_CACHES as u64 {
            assert_eq!(subs.track(id, worker(1), 8), Ok(0));
        }
        // Again for one it keeps: no new one.
        assert_eq!(subs.track(0, worker(1), 8), Ok(0));
        let over = subs.track(MAX_NEAR_CACHES as u64, worker(1), 8);
        assert!(matches!(over, Err(CacheError::Limit(_))), "{over:?}");
        // Another process has its own.
        assert_eq!(subs.track(99, worker(2), 8), Ok(0));
        subs.remove(0, worker(1));
        assert_eq!(subs.track(MAX_NEAR_CACHES as u64, worker(1), 8), Ok(0));
    }

    #[test]
    fn events_are_numbered_per_subscription() {
        let mut subs = Subscribers::new(Default::default());
        let mut all = master_sub(&mut subs, 1);
        subs.notify("c", "a", || Change::Deleted);
        subs.notify("other", "a", || Change::Deleted);
        subs.notify("c", "b", || Change::Expired);
        assert_eq!(
            keys(&mut all),
            [
                (1, "a".into(), Change::Deleted),
                (2, "b".into(), Change::Expired)
            ]
        );
    }

    #[test]
    fn a_tracking_subscription_hears_once_of_each_fetched_key_and_drops_the_oldest() {
        let mut subs = Subscribers::new(Default::default());
        let mut near = master_sub(&mut subs, 7);
        subs.notify("c", "x", || Change::Deleted);
        assert_eq!(subs.track(7, Peer::Master, 2), Ok(1));
        let none = subs.track(8, Peer::Master, 2);
        assert!(matches!(none, Err(CacheError::Unreachable(_))), "{none:?}");
        assert_eq!(subs.track_key(7, Peer::Master, "other", "a"), None);
        assert_eq!(subs.track_key(7, Peer::Master, "c", "a"), Some(1));
        // Not fetched: not heard of.
        subs.notify("c", "b", || Change::Deleted);
        subs.notify("c", "a", || Change::Expired);
        // Heard of once; fetched again, heard of again.
        subs.notify("c", "a", || Change::Deleted);
        assert_eq!(subs.track_key(7, Peer::Master, "c", "a"), Some(2));
        assert_eq!(subs.track_key(7, Peer::Master, "c", "b"), Some(2));
        // A third key makes room: the one fetched longest ago is reported evicted.
        assert_eq!(subs.track_key(7, Peer::Master, "c", "d"), Some(3));
        subs.notify("c", "a", || Change::Deleted);
        subs.notify("c", "b", || Change::Deleted);
        assert_eq!(
            keys(&mut near),
            [
                (1, "x".into(), Change::Deleted),
                (2, "a".into(), Change::Expired),
                (3, "a".into(), Change::Evicted),
                (4, "b".into(), Change::Deleted),
            ]
        );
        assert_eq!(subs.track(7, Peer::Master, usize::MAX), Ok(4));
        let max = subs.subs[0].tracking.as_ref().map(|t| t.max);
        assert_eq!(max, Some(MAX_TRACKED_KEYS));
    }
}
