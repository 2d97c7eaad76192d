//! Requests this worker awaits answers to from the master (asks to peers, to the master, system
//! operations, cache operations), and its cache subscriptions.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::cache::CacheEvent;
use crate::messaging::AskError;

/// Requests this worker awaits answers to, by correlation id.
#[derive(Debug, Default)]
pub(crate) struct Asks {
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<Result<Bytes, AskError>>>>,
    next_subscription: Cell<u64>,
    subscriptions: RefCell<HashMap<u64, mpsc::UnboundedSender<CacheEvent>>>,
    /// One-way messages to each receiver not yet taken in.
    pub(crate) windows: super::window::TellWindows,
}

impl Asks {
    pub(crate) fn open(&self) -> (u64, oneshot::Receiver<Result<Bytes, AskError>>) {
        let id = self.next.get();
        self.next.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        (id, rx)
    }

    pub(crate) fn close(&self, id: u64) {
        self.waiting.borrow_mut().remove(&id);
    }

    /// An answer from the master; one nobody awaits any more (timed out) is dropped.
    pub(crate) fn answer(&self, id: u64, result: Result<Bytes, AskError>) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// The master is gone: every request fails and every subscription ends.
    pub(crate) fn close_all(&self) {
        for (_, tx) in self.waiting.borrow_mut().drain() {
            let _ = tx.send(Err(AskError::Closed));
        }
        self.subscriptions.borrow_mut().clear();
    }

    /// A new cache subscription: its id, and where its events arrive.
    pub(crate) fn subscribe(&self) -> (u64, mpsc::UnboundedReceiver<CacheEvent>) {
        let id = self.next_subscription.get();
        self.next_subscription.set(id + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscriptions.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// Subscription `id` ends.
    pub(crate) fn unsubscribe(&self, id: u64) {
        self.subscriptions.borrow_mut().remove(&id);
    }

    /// A cache change for one of this worker's subscriptions.
    pub(crate) fn notify(&self, event: CacheEvent) {
        let mut subs = self.subscriptions.borrow_mut();
        if let Some(tx) = subs.get(&event.subscription) {
            if tx.send(event.clone()).is_err() {
                subs.remove(&event.subscription);
            }
        }
    }
}
