//! Who hears of which changes: subscriptions by collection and key prefix.
//!
//! A worker's events go to its proxy through the routing table, tagged with the pid that
//! subscribed, so a replacement process of the same slot does not get its predecessor's events;
//! a master subscriber's go down a channel. Events are sent in the order the changes are made,
//! and a change is built only when somebody wants it.

use tokio::sync::mpsc;

use crate::cache::ops::{CacheEvent, Change};
use crate::messaging::table::{Routed, SharedRouting};
use crate::messaging::Peer;

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
}

impl Sub {
    fn wants(&self, collection: &str, key: &str) -> bool {
        self.collection == collection && key.starts_with(&self.prefix)
    }

    fn belongs_to(&self, who: Peer) -> bool {
        match (&self.owner, who) {
            (Owner::Worker { id, pid }, Peer::Worker { id: w, pid: p }) => *id == w && *pid == p,
            (Owner::Master(_), Peer::Master) => true,
            _ => false,
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

    /// A worker process's subscription `id`.
    pub(crate) fn add_worker(
        &mut self,
        (worker, pid): (usize, u32),
        id: u64,
        collection: String,
        prefix: String,
    ) {
        self.subs.push(Sub {
            owner: Owner::Worker { id: worker, pid },
            id,
            collection,
            prefix,
        });
    }

    /// A subscription from the master itself, whose events go down `tx`.
    pub(crate) fn add_master(
        &mut self,
        id: u64,
        collection: String,
        prefix: String,
        tx: mpsc::UnboundedSender<CacheEvent>,
    ) {
        self.subs.push(Sub {
            owner: Owner::Master(tx),
            id,
            collection,
            prefix,
        });
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
    /// any. A master subscriber that has gone is dropped.
    pub(crate) fn notify(&mut self, collection: &str, key: &str, change: impl FnOnce() -> Change) {
        if !self.subs.iter().any(|s| s.wants(collection, key)) {
            return;
        }
        let change = change();
        let routing = self.routing.borrow();
        self.subs.retain(|sub| {
            if !sub.wants(collection, key) {
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
                    if let Some(slot) = routing.slots.get(*id) {
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
}
