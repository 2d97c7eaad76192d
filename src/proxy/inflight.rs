//! One table of what waits for an answer from one process, by correlation id.
//!
//! Two kinds of waiter share it, and one counter numbers them: a caller in the master (a
//! [`Call`](crate::Call), whose actix response sender is parked here, not boxed in a future) and
//! another process (a peer's request or acknowledged message, answered through its proxy). A
//! `Reply` or `Failed` frame from the worker takes its entry out; a reply for an id not in the
//! table is a protocol error of that worker.
//!
//! The table is shared (`Rc`) because actix hands a call's response sender over after the
//! handler returned, through [`MessageResponse`](actix::dev::MessageResponse), which has no
//! access to the actor. Everything runs on the master's one thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use actix::dev::OneshotSender;
use bytes::Bytes;

use crate::error::{AskError, CallError};
use crate::messaging::table::ReplyTo;

/// A map keyed by correlation ids the master hands out. Hashed with foldhash, not SipHash: the
/// keys are the master's own counter, so there is no flooding to resist.
pub(crate) type Ids<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// Slots of a [`Table`]'s ring: the ids it covers past its oldest entry.
const RING_SLOTS: usize = 4096;

/// Entries by correlation id. Ids are handed out in order and mostly answered in order, so the
/// entries live in a ring indexed by `id - base` (no hashing, no probing: a pipelined call spent
/// a tenth of its time in a hash map); an entry that falls more than [`RING_SLOTS`] behind the
/// newest (a request a worker never answers while it answers the later ones) moves to a map, so
/// the ring stays short whatever a worker does.
#[derive(Debug)]
struct Table<V> {
    /// The id of `ring[0]`.
    base: u64,
    ring: VecDeque<Option<V>>,
    /// Entries out of the ring's reach.
    overflow: Ids<V>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            base: 0,
            ring: VecDeque::new(),
            overflow: Ids::default(),
        }
    }
}

impl<V> Table<V> {
    fn insert(&mut self, id: u64, value: V) {
        if self.ring.is_empty() {
            self.base = id;
        }
        let Some(at) = id.checked_sub(self.base).map(|at| at as usize) else {
            self.overflow.insert(id, value);
            return;
        };
        if at >= self.ring.len() + RING_SLOTS {
            // Far ahead of everything in the ring: the ring starts again from here.
            self.spill(self.ring.len());
            self.base = id;
            self.ring.push_back(Some(value));
            return;
        }
        if at >= self.ring.len() {
            self.ring.resize_with(at + 1, || None);
        }
        self.ring[at] = Some(value);
        if self.ring.len() > RING_SLOTS {
            self.spill(self.ring.len() - RING_SLOTS);
        }
    }

    fn take(&mut self, id: u64) -> Option<V> {
        let at = id.checked_sub(self.base).map(|at| at as usize);
        let Some(value) = at.and_then(|at| self.ring.get_mut(at)?.take()) else {
            return self.overflow.remove(&id);
        };
        // Answered entries at the front are done with.
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    /// Moves the first `n` slots of the ring to the overflow map.
    fn spill(&mut self, n: usize) {
        for slot in self.ring.drain(..n) {
            if let Some(value) = slot {
                self.overflow.insert(self.base, value);
            }
            self.base += 1;
        }
    }

    fn len(&self) -> usize {
        self.ring.iter().filter(|slot| slot.is_some()).count() + self.overflow.len()
    }

    fn drain(&mut self) -> Vec<V> {
        let mut all: Vec<V> = self.ring.drain(..).flatten().collect();
        all.extend(self.overflow.drain().map(|(_, v)| v));
        all
    }
}

/// The sender of a parked [`Call`](crate::Call)'s reply.
pub(crate) type CallerTx<R> = OneshotSender<Result<R, CallError>>;

/// Who waits for the answer under one correlation id.
#[derive(Debug)]
pub(crate) enum Waiter<R> {
    /// A caller in the master; `None` when it sent without awaiting the reply (`do_send`).
    Caller(Option<CallerTx<R>>),
    /// Another process, through its proxy.
    Peer(ReplyTo),
}

/// A waiter; whether it waits for the answer to a request (not for the receipt of an
/// acknowledged message); when the request was queued, when requests are timed.
#[derive(Debug)]
struct Entry<R> {
    waiter: Waiter<R>,
    request: bool,
    since: Option<Instant>,
}

/// What [`InFlight::take`] hands back: the waiter, and for a request, when it was queued
/// (if timed).
#[derive(Debug)]
pub(crate) struct Taken<R> {
    pub(crate) waiter: Waiter<R>,
    pub(crate) request: bool,
    pub(crate) since: Option<Instant>,
}

/// What waits for answers from one process; see the module docs.
#[derive(Debug)]
pub(crate) struct InFlight<R> {
    entries: Rc<RefCell<Table<Entry<R>>>>,
    /// Whether each request notes when it was made (for the latency histogram).
    timed: bool,
    /// Requests failed because the process ended, counted for the slot (shared by its
    /// processes' tables).
    abandoned: Rc<Cell<u64>>,
}

impl<R> Default for InFlight<R> {
    fn default() -> Self {
        Self::new(false, Rc::default())
    }
}

impl<R> Clone for InFlight<R> {
    fn clone(&self) -> Self {
        Self {
            entries: Rc::clone(&self.entries),
            timed: self.timed,
            abandoned: Rc::clone(&self.abandoned),
        }
    }
}

impl<R> InFlight<R> {
    /// An empty table; `timed`: each request notes when it was made; `abandoned` counts the
    /// requests [`fail_all`](Self::fail_all) fails.
    pub(crate) fn new(timed: bool, abandoned: Rc<Cell<u64>>) -> Self {
        Self {
            entries: Rc::new(RefCell::new(Table::default())),
            timed,
            abandoned,
        }
    }

    /// The same table, its failed requests counted in `abandoned`.
    pub(crate) fn counting(self, abandoned: Rc<Cell<u64>>) -> Self {
        Self { abandoned, ..self }
    }

    fn insert(&self, id: u64, waiter: Waiter<R>, request: bool) {
        let entry = Entry {
            waiter,
            request,
            since: (request && self.timed).then(Instant::now),
        };
        self.entries.borrow_mut().insert(id, entry);
    }

    /// Parks the reply sender of call `id` (from `MessageResponse::handle`).
    pub(crate) fn park_caller(&self, id: u64, tx: Option<CallerTx<R>>) {
        self.insert(id, Waiter::Caller(tx), true);
    }

    /// Holds where the answer to routed message `id` goes: a peer's request (`request`), or
    /// the receipt of an acknowledged message.
    pub(crate) fn insert_peer(&self, id: u64, reply: ReplyTo, request: bool) {
        self.insert(id, Waiter::Peer(reply), request);
    }

    /// Takes the waiter of `id`, if there is one.
    pub(crate) fn take(&self, id: u64) -> Option<Taken<R>> {
        let entry = self.entries.borrow_mut().take(id)?;
        Some(Taken {
            waiter: entry.waiter,
            request: entry.request,
            since: entry.since,
        })
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Fails every waiter: callers with `error`, peers with its [`AskError`] form.
    pub(crate) fn fail_all(&self, error: &CallError) {
        let drained = self.entries.borrow_mut().drain();
        let requests = drained.iter().filter(|entry| entry.request).count();
        self.abandoned.set(self.abandoned.get() + requests as u64);
        let peer_error = AskError::from_call(error);
        for Entry { waiter, .. } in drained {
            match waiter {
                Waiter::Caller(Some(tx)) => {
                    let _ = tx.send(Err(error.clone()));
                }
                Waiter::Caller(None) => {}
                Waiter::Peer(reply) => reply.answer(Err(peer_error.clone())),
            }
        }
    }
}

impl<R> Waiter<R> {
    /// Answers with a reply: a caller gets it decoded by `decode`, a peer the bytes.
    pub(crate) fn reply(self, payload: &[u8], decode: impl FnOnce(&[u8]) -> Result<R, CallError>) {
        match self {
            Waiter::Caller(Some(tx)) => {
                let _ = tx.send(decode(payload));
            }
            Waiter::Caller(None) => {}
            Waiter::Peer(reply) => reply.answer(Ok(Bytes::copy_from_slice(payload))),
        }
    }

    /// Answers with the worker's failure to handle the request.
    pub(crate) fn failed(self, error: &str) {
        match self {
            Waiter::Caller(Some(tx)) => {
                let _ = tx.send(Err(CallError::Failed(error.to_owned())));
            }
            Waiter::Caller(None) => {}
            Waiter::Peer(reply) => reply.answer(Err(AskError::Failed(error.to_owned()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_finds_every_entry_in_or_out_of_order_and_stays_short() {
        let mut table = Table::default();
        // One entry never answered, then many answered in order, a few out of order.
        table.insert(1, 1u64);
        for id in 2..20_000u64 {
            table.insert(id, id);
            if id % 3 == 0 {
                assert_eq!(table.take(id - 1), Some(id - 1));
                assert_eq!(table.take(id), Some(id));
            }
            assert!(table.ring.len() <= RING_SLOTS, "{} slots", table.ring.len());
        }
        assert_eq!(table.take(1), Some(1), "the old entry is still found");
        assert_eq!(table.take(1), None, "taken once");
        assert_eq!(table.take(5), None, "taken already");
        // Ids far ahead, and one behind the base.
        table.insert(1_000_000, 7);
        table.insert(3, 3);
        assert_eq!(table.take(1_000_000), Some(7));
        assert_eq!(table.take(3), Some(3));
        let left: std::collections::BTreeSet<u64> = table.drain().into_iter().collect();
        let expected: std::collections::BTreeSet<u64> = (2..20_000u64)
            .filter(|id| id % 3 == 1 && *id != 1)
            .collect();
        assert_eq!(left, expected);
        assert!(table.ring.is_empty() && table.overflow.is_empty());
    }
}
