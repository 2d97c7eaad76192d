//! The proxy's part in messaging between processes: what its worker sends to others, what
//! others send to its worker, and the answers in between. See [`crate::routing`].

use actix::prelude::*;
use bytes::Bytes;

use super::actor::{Worker, ASK_FAILED, ASK_REPLY, DELIVER, NOTIFY, PEER_REQUEST};
use super::links::FromWorker;
use crate::messaging::table::{AskDone, ReplyTo, Routed};
use crate::messaging::{AskError, Peer, Route, SystemOp, Via};
use crate::protocol::Envelope;
use crate::state::WorkerId;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Worker<A> {
    fn peer(&self, pid: u32) -> Peer {
        Peer::Worker { id: self.id, pid }
    }

    fn reply_to(&self, generation: u64, id: u64) -> Option<ReplyTo> {
        Some(ReplyTo::Proxy {
            proxy: self.me.clone()?,
            generation,
            id,
        })
    }

    fn target(&self, worker: u64) -> Result<Recipient<Routed>, AskError> {
        let routing = self.links.routing.borrow();
        usize::try_from(worker)
            .ok()
            .and_then(|w| routing.slots.get(w).cloned())
            .ok_or(AskError::NoSuchWorker(worker as WorkerId))
    }

    /// A one-way message from this worker to others.
    pub(super) fn route_send(
        &mut self,
        generation: u64,
        pid: u32,
        to: Route<'_>,
        ack: Option<u64>,
        payload: &[u8],
        ctx: &mut Context<Self>,
    ) {
        let from = self.peer(pid);
        let payload = Bytes::copy_from_slice(payload);
        let targets: Result<Vec<(Recipient<Routed>, Via)>, AskError> = match to {
            Route::Master => {
                self.deliver_event(generation, pid, &payload);
                Ok(Vec::new())
            }
            Route::Worker(w) => self.target(w).map(|t| vec![(t, Via::Direct)]),
            Route::All => {
                let routing = self.links.routing.borrow();
                Ok(routing
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(w, _)| *w != self.id)
                    .map(|(_, t)| (t.clone(), Via::Broadcast))
                    .collect())
            }
            Route::Group(group) => {
                let routing = self.links.routing.borrow();
                Ok(routing
                    .members(group)
                    .into_iter()
                    .filter(|w| *w != self.id)
                    .filter_map(|w| routing.slots.get(w).cloned())
                    .map(|t| (t, Via::Group(group.to_owned())))
                    .collect())
            }
        };
        let targets = match targets {
            Ok(targets) => targets,
            Err(e) => {
                self.counters.errors += 1;
                match ack {
                    Some(id) => self.answer_worker(generation, id, Err(e), ctx),
                    None => tracing::warn!(worker = self.id, error = %e, "message not delivered"),
                }
                return;
            }
        };
        // Only a message to one worker is acknowledged by its receiver; others once routed.
        let direct = matches!(to, Route::Worker(_));
        for (target, via) in targets {
            let ack = ack
                .filter(|_| direct)
                .and_then(|id| self.reply_to(generation, id));
            target.do_send(Routed::Tell {
                from,
                via,
                payload: payload.clone(),
                ack,
            });
        }
        if let (Some(id), false) = (ack, direct) {
            self.answer_worker(generation, id, Ok(Bytes::new()), ctx);
        }
    }

    /// A request from this worker to the master or another worker.
    pub(super) fn route_ask(
        &mut self,
        generation: u64,
        pid: u32,
        id: u64,
        to: Route<'_>,
        payload: &[u8],
        ctx: &mut Context<Self>,
    ) {
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
                }
                Err(e) => self.answer_worker(generation, id, Err(e), ctx),
            },
            Route::Master => {
                let Some(handler) = self.links.handlers.requests.clone() else {
                    self.answer_worker(generation, id, Err(AskError::NoHandler), ctx);
                    return;
                };
                let from = FromWorker {
                    worker: self.id,
                    pid,
                    generation,
                    msg: (),
                };
                let answer = handler(from, payload);
                ctx.spawn(
                    answer.into_actor(self).map(move |result, act, ctx| {
                        act.answer_worker(generation, id, result, ctx)
                    }),
                );
            }
            Route::All | Route::Group(_) => {
                let e = AskError::Invalid("a request goes to the master or to one worker".into());
                self.answer_worker(generation, id, Err(e), ctx);
            }
        }
    }

    /// A system operation asked by this worker.
    pub(super) fn system_op(
        &mut self,
        generation: u64,
        pid: u32,
        id: u64,
        op: SystemOp<'_>,
        ctx: &mut Context<Self>,
    ) {
        match op {
            SystemOp::Join(group) => {
                self.links.routing.borrow_mut().join(group, self.id);
                self.answer_worker(generation, id, Ok(Bytes::new()), ctx)
            }
            SystemOp::Leave(group) => {
                self.links.routing.borrow_mut().leave(group, self.id);
                self.answer_worker(generation, id, Ok(Bytes::new()), ctx)
            }
            SystemOp::Cache(op) => {
                // Served here and now; a lock answers later, when it is granted or times out.
                match self.links.cache.serve(self.peer(pid), op) {
                    crate::cache::Served::Answer(answer) => {
                        let answer = crate::cache::encode_answer(&answer);
                        self.answer_worker(generation, id, answer, ctx);
                    }
                    crate::cache::Served::NeedsReply(lock) => {
                        if let Some(reply) = self.reply_to(generation, id) {
                            self.links.cache.lock(lock, reply);
                        }
                    }
                }
            }
            op => {
                let answer = self.links.system.serve(self.peer(pid), op);
                ctx.spawn(
                    answer.into_actor(self).map(move |result, act, ctx| {
                        act.answer_worker(generation, id, result, ctx)
                    }),
                );
            }
        }
    }

    /// Writes the answer to what process `generation` asked under `id`, if it still runs.
    pub(super) fn answer_worker(
        &mut self,
        generation: u64,
        id: u64,
        result: Result<Bytes, AskError>,
        ctx: &mut Context<Self>,
    ) {
        let worker = self.id;
        let Some(p) = self.proc_mut(generation).filter(|p| p.is_running()) else {
            return;
        };
        // Answers bypass the outbox limit: the worker waits for them, and they are small.
        let (pushed, kind) = match &result {
            Ok(payload) => (
                p.stdin.push_control(&Envelope::AskReply { id, payload }),
                ASK_REPLY,
            ),
            Err(error) => (
                p.stdin.push_control(&Envelope::AskFailed {
                    id,
                    error: error.clone(),
                }),
                ASK_FAILED,
            ),
        };
        match pushed {
            Ok(()) => {
                self.counters.sent(kind);
                self.kick_writer(generation, ctx);
            }
            Err(e) => tracing::warn!(worker, id, error = %e, "answer not sent"),
        }
    }

    /// A cache change for the subscriptions of process `pid`, if it still serves the slot.
    fn notify(&mut self, pid: u32, payload: &[u8], ctx: &mut Context<Self>) {
        let generation = self.proc.generation;
        if self.proc.pid() != Some(pid) || !self.proc.is_running() {
            return;
        }
        match self.proc.stdin.push(self.id, &Envelope::Notify { payload }) {
            Ok(()) => {
                self.counters.sent(NOTIFY);
                self.kick_writer(generation, ctx);
            }
            Err(e) => {
                self.counters.errors += 1;
                tracing::warn!(worker = self.id, error = %e, "cache event not delivered");
            }
        }
    }

    /// A message for this worker from another process.
    fn deliver(&mut self, routed: Routed, ctx: &mut Context<Self>) {
        let routed = match routed {
            Routed::Notify { pid, payload } => return self.notify(pid, &payload, ctx),
            other => other,
        };
        if let Err(e) = self.accepting() {
            self.counters.errors += 1;
            match routed {
                Routed::Tell { ack: Some(ack), .. } | Routed::Ask { reply: ack, .. } => {
                    ack.answer(Err(AskError::from_call(&e)))
                }
                Routed::Tell { from, .. } => {
                    tracing::debug!(worker = self.id, ?from, error = %e, "message dropped")
                }
                Routed::Notify { .. } => {}
            }
            return;
        }
        let id = self.next_id;
        let generation = self.proc.generation;
        let (pushed, waiter, kind) = match routed {
            Routed::Tell {
                from,
                via,
                payload,
                ack,
            } => {
                let env = Envelope::Deliver {
                    from,
                    via,
                    ack: ack.as_ref().map(|_| id),
                    payload: &payload,
                };
                (self.proc.stdin.push(self.id, &env), ack, DELIVER)
            }
            Routed::Ask {
                from,
                payload,
                reply,
            } => {
                let env = Envelope::PeerRequest {
                    id,
                    from,
                    payload: &payload,
                };
                self.counters.requests += 1;
                (
                    self.proc.stdin.push(self.id, &env),
                    Some(reply),
                    PEER_REQUEST,
                )
            }
            Routed::Notify { .. } => return,
        };
        match pushed {
            Ok(()) => {
                self.counters.sent(kind);
                if let Some(waiter) = waiter {
                    self.next_id += 1;
                    self.proc.in_flight.insert_peer(id, waiter);
                }
                self.kick_writer(generation, ctx);
            }
            Err(e) => {
                self.counters.errors += 1;
                let error = AskError::from_call(&e);
                match waiter {
                    Some(waiter) => waiter.answer(Err(error)),
                    None => tracing::debug!(worker = self.id, %error, "message dropped"),
                }
            }
        }
    }
}

impl<A: WorkerActor> Handler<Routed> for Worker<A> {
    type Result = ();

    fn handle(&mut self, routed: Routed, ctx: &mut Context<Self>) {
        self.deliver(routed, ctx);
    }
}

impl<A: WorkerActor> Handler<AskDone> for Worker<A> {
    type Result = ();

    fn handle(&mut self, done: AskDone, ctx: &mut Context<Self>) {
        self.answer_worker(done.generation, done.id, done.result, ctx);
    }
}
