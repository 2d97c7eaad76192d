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

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use actix::dev::OneshotSender;
use bytes::Bytes;

use crate::error::{AskError, CallError};
use crate::messaging::table::ReplyTo;

/// A map keyed by correlation ids the master hands out. Hashed with foldhash, not SipHash: the
/// keys are the master's own counter, so there is no flooding to resist, and a call spends
/// two lookups here (about a tenth of a pipelined call's time with SipHash).
pub(crate) type Ids<V> = HashMap<u64, V, foldhash::fast::RandomState>;

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

/// What waits for answers from one process; see the module docs.
#[derive(Debug)]
pub(crate) struct InFlight<R> {
    entries: Rc<RefCell<Ids<Waiter<R>>>>,
}

impl<R> Default for InFlight<R> {
    fn default() -> Self {
        Self {
            entries: Rc::default(),
        }
    }
}

impl<R> Clone for InFlight<R> {
    fn clone(&self) -> Self {
        Self {
            entries: Rc::clone(&self.entries),
        }
    }
}

impl<R> InFlight<R> {
    /// Parks the reply sender of call `id` (from `MessageResponse::handle`).
    pub(crate) fn park_caller(&self, id: u64, tx: Option<CallerTx<R>>) {
        self.entries.borrow_mut().insert(id, Waiter::Caller(tx));
    }

    /// Holds where the answer to routed message `id` goes.
    pub(crate) fn insert_peer(&self, id: u64, reply: ReplyTo) {
        self.entries.borrow_mut().insert(id, Waiter::Peer(reply));
    }

    /// Takes the waiter of `id`, if there is one.
    pub(crate) fn take(&self, id: u64) -> Option<Waiter<R>> {
        self.entries.borrow_mut().remove(&id)
    }

    /// Fails every waiter: callers with `error`, peers with its [`AskError`] form.
    pub(crate) fn fail_all(&self, error: &CallError) {
        let drained: Vec<Waiter<R>> = self.entries.borrow_mut().drain().map(|(_, w)| w).collect();
        let peer_error = AskError::from_call(error);
        for waiter in drained {
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
