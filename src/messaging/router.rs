//! A proxy's router: where what its worker sends goes, decided from the routing table.
//!
//! Each proxy owns one. A worker names a [`Route`]; the router stamps the sender (the worker of
//! the pipe the frame came on, never what the worker claims), finds the receivers' proxies and
//! hands them the message ([`Routed`]), with where an answer goes ([`ReplyTo`]). What is left
//! for the proxy — answering its worker now, or passing a message to the master's handlers,
//! which are typed by the worker's type — comes back as an [`Outcome`].

use actix::prelude::*;
use bytes::Bytes;

use std::time::Duration;

use crate::error::AskError;
use crate::messaging::table::{AskDone, ReplyTo, Routed, SharedRouting};
use crate::messaging::table::{Outbound, RemoteLink};
use crate::messaging::{Peer, Route, Via};
use crate::state::WorkerId;

/// What is left for the proxy once the router has done its part.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Sent on; an answer, if one is due, comes back through the proxy ([`AskDone`]).
    Routed,
    /// Answer the worker now.
    Answer(Result<Bytes, AskError>),
    /// For the master's handlers; `ack` is answered once they have it.
    Master,
}

/// A proxy's router; see the module docs.
#[derive(Debug)]
pub(crate) struct Router {
    id: WorkerId,
    routing: SharedRouting,
    /// The proxy, where answers to its worker's requests come back; set when it starts.
    me: Option<Recipient<AskDone>>,
}

impl Router {
    /// The router of worker `id`'s proxy.
    pub(crate) fn new(id: WorkerId, routing: SharedRouting) -> Self {
        Self {
            id,
            routing,
            me: None,
        }
    }

    /// The proxy has started: answers come back to `me`.
    pub(crate) fn attach(&mut self, me: Recipient<AskDone>) {
        self.me = Some(me);
    }

    /// The sender of what process `pid` of this worker sends, as the master stamps it.
    pub(crate) fn peer(&self, pid: u32) -> Peer {
        Peer::Worker { id: self.id, pid }
    }

    /// Where the answer to request `id` of process `generation` goes.
    pub(crate) fn reply_to(&self, generation: u64, id: u64) -> Option<ReplyTo> {
        Some(ReplyTo::proxy(self.me.clone()?, generation, id))
    }

    fn target(&self, worker: u64) -> Result<Recipient<Routed>, AskError> {
        let routing = self.routing.borrow();
        usize::try_from(worker)
            .ok()
            .and_then(|w| routing.slots.get(w).cloned())
            .ok_or(AskError::NoSuchWorker(worker as WorkerId))
    }

    /// The receivers of a one-way message to `to` (never the sender itself).
    fn receivers(&self, to: &Route<'_>) -> Result<Vec<(Recipient<Routed>, Via)>, AskError> {
        let routing = self.routing.borrow();
        Ok(match to {
            Route::Master => Vec::new(),
            Route::Worker(w) => vec![(self.target(*w)?, Via::Direct)],
            Route::All => routing
                .slots
                .iter()
                .enumerate()
                .filter(|(w, _)| *w != self.id)
                .map(|(_, t)| (t.clone(), Via::Broadcast))
                .collect(),
            Route::Node { worker, .. } => vec![(self.target(*worker)?, Via::Direct)],
            Route::Group(group) => routing
                .members(group)
                .into_iter()
                .filter(|w| *w != self.id)
                .filter_map(|w| routing.slots.get(w).cloned())
                .map(|t| (t, Via::Group((*group).to_owned())))
                .collect(),
        })
    }

    /// A one-way message from process `pid` (of `generation`) to `to`. A message to one
    /// worker is acknowledged (`ack`) by its receiver; to several, once routed.
    pub(crate) fn send(
        &self,
        generation: u64,
        pid: u32,
        to: Route<'_>,
        ack: Option<u64>,
        payload: &[u8],
    ) -> Outcome {
        if to == Route::Master {
            return Outcome::Master;
        }
        if let Route::Node { node, worker, .. } = to {
            match self.elsewhere(node) {
                Ok(None) => {}
                Ok(Some(link)) => {
                    link.send(Outbound::Tell {
                        node: node.to_owned(),
                        worker: worker as WorkerId,
                        from: Some((self.id, pid)),
                        payload: Bytes::copy_from_slice(payload),
                    });
                    // Handed to the backend: an acknowledgement means no more than that.
                    return match ack {
                        Some(_) => Outcome::Answer(Ok(Bytes::new())),
                        None => Outcome::Routed,
                    };
                }
                Err(e) => return Outcome::Answer(Err(e)),
            }
        }
        let receivers = match self.receivers(&to) {
            Ok(receivers) => receivers,
            Err(e) => return Outcome::Answer(Err(e)),
        };
        if let Route::All | Route::Group(_) = to {
            self.fan_out(&to, pid, payload);
        }
        let direct = matches!(to, Route::Worker(_) | Route::Node { .. });
        // Only `tell_worker` counts in the worker's window (`worker/window.rs`): a message to
        // a worker of this node by node name does not.
        let windowed = ack.is_none() && matches!(to, Route::Worker(_));
        let (from, payload) = (self.peer(pid), Bytes::copy_from_slice(payload));
        for (target, via) in receivers {
            let ack = ack
                .filter(|_| direct)
                .and_then(|id| self.reply_to(generation, id));
            target.do_send(Routed::Tell {
                from,
                via,
                payload: payload.clone(),
                ack,
                windowed,
            });
        }
        match (ack, direct) {
            (Some(_), false) => Outcome::Answer(Ok(Bytes::new())),
            _ => Outcome::Routed,
        }
    }

    /// A request from process `pid` (of `generation`) under `id`, to the master or one worker.
    pub(crate) fn ask(
        &self,
        generation: u64,
        pid: u32,
        id: u64,
        to: Route<'_>,
        payload: &[u8],
    ) -> Outcome {
        match to {
            Route::Worker(w) => match self.target(w) {
                Ok(target) => {
                    if let Some(reply) = self.reply_to(generation, id) {
                        target.do_send(Routed::Ask {
                            from: self.peer(pid),
                            payload: Bytes::copy_from_slice(payload),
                            reply,
                        });
                    }
                    Outcome::Routed
                }
                Err(e) => Outcome::Answer(Err(e)),
            },
            Route::Node {
                node,
                worker,
                timeout_ms,
            } => match self.elsewhere(node) {
                Ok(None) => self.ask(generation, pid, id, Route::Worker(worker), payload),
                Ok(Some(link)) => {
                    if let Some(reply) = self.reply_to(generation, id) {
                        link.send(Outbound::Ask {
                            node: node.to_owned(),
                            worker: worker as WorkerId,
                            from: Some((self.id, pid)),
                            payload: Bytes::copy_from_slice(payload),
                            timeout: Duration::from_millis(timeout_ms),
                            reply,
                        });
                    }
                    Outcome::Routed
                }
                Err(e) => Outcome::Answer(Err(e)),
            },
            Route::Master => Outcome::Master,
            Route::All | Route::Group(_) => Outcome::Answer(Err(AskError::Invalid(
                "a request goes to the master or to one worker".into(),
            ))),
        }
    }

    /// A broadcast or a group publish goes to the other nodes too, when there are any.
    fn fan_out(&self, to: &Route<'_>, pid: u32, payload: &[u8]) {
        if let Some(link) = &self.routing.borrow().remote {
            link.send(Outbound::Fanout {
                group: match to {
                    Route::Group(group) => Some((*group).to_owned()),
                    _ => None,
                },
                from: Some((self.id, pid)),
                payload: Bytes::copy_from_slice(payload),
            });
        }
    }

    /// Where a message for node `node` goes: `None` when it is this node (the local path),
    /// the backend's link otherwise; [`AskError::NoSuchNode`] without a backend.
    fn elsewhere(&self, node: &str) -> Result<Option<RemoteLink>, AskError> {
        self.routing.borrow().elsewhere(node)
    }

    /// This worker joins topic `group` (refused past the limits of
    /// [`Routing::join`](crate::messaging::table::Routing::join)).
    pub(crate) fn join(&self, group: &str) -> Result<(), AskError> {
        self.routing.borrow_mut().join(group, self.id)
    }

    /// This worker leaves topic `group`.
    pub(crate) fn leave(&self, group: &str) {
        self.routing.borrow_mut().leave(group, self.id);
    }
}
