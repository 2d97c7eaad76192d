//! The proxy's part in messaging between processes: what its worker sends (routed by its
//! [`Router`](crate::messaging::router::Router)), what others send to its worker, and the
//! answers in between.

use actix::prelude::*;
use bytes::Bytes;

use super::actor::{Worker, ASK_FAILED, ASK_REPLY, CREDIT, DELIVER, NOTIFY, PEER_REQUEST};
use super::links::FromWorker;
use crate::error::CallError;
use crate::messaging::router::Outcome;
use crate::messaging::table::{AskDone, ReplyTo, Routed};
use crate::messaging::{AskError, Peer, Route, SystemOp};
use crate::protocol::Envelope;
use crate::state::WorkerId;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Worker<A> {
    /// A one-way message from this worker to others, or to the master's handlers.
    pub(super) fn route_send(
        &mut self,
        generation: u64,
        pid: u32,
        to: Route<'_>,
        ack: Option<u64>,
        payload: &[u8],
        ctx: &mut Context<Self>,
    ) {
        // A one-way message to one worker is in its sender's window until credited.
        let window = match to {
            Route::Worker(worker) if ack.is_none() => Some(worker),
            _ => None,
        };
        let answer = match self.router.send(generation, pid, to, ack, payload) {
            Outcome::Routed => return,
            Outcome::Answer(answer) => answer,
            Outcome::Master => {
                self.deliver_event(generation, pid, payload);
                Ok(Bytes::new())
            }
        };
        if answer.is_err() {
            self.counters.errors += 1;
        }
        match (ack, answer) {
            (Some(id), answer) => self.answer_worker(generation, id, answer, ctx),
            (None, Err(e)) => {
                tracing::warn!(worker = self.id, error = %e, "message not delivered");
                if let Some(worker) = window {
                    // Never taken in (no such worker): its place in the window comes back.
                    self.credit(pid, worker as WorkerId, 1, ctx);
                }
            }
            (None, Ok(_)) => {}
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
        match self.router.ask(generation, pid, id, to, payload) {
            Outcome::Routed => {}
            Outcome::Answer(answer) => self.answer_worker(generation, id, answer, ctx),
            Outcome::Master => {
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
                self.answer_later(generation, id, handler(from, payload), ctx);
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
                let joined = self.router.join(group).map(|()| Bytes::new());
                self.answer_worker(generation, id, joined, ctx)
            }
            SystemOp::Leave(group) => {
                self.router.leave(group);
                self.answer_worker(generation, id, Ok(Bytes::new()), ctx)
            }
            SystemOp::Cache(op) => {
                // Served here and now; a lock answers later, when it is granted or times out.
                match self.links.cache.serve(self.router.peer(pid), op) {
                    crate::cache::Served::Answer(answer) => {
                        let answer = crate::cache::encode_answer(&answer);
                        self.answer_worker(generation, id, answer, ctx);
                    }
                    crate::cache::Served::NeedsReply(lock) => {
                        if let Some(reply) = self.router.reply_to(generation, id) {
                            self.links.cache.lock(lock, reply);
                        }
                    }
                }
            }
            SystemOp::RequestReload => {
                let answer = self.reload_requested(generation, pid);
                self.answer_worker(generation, id, answer.map(|()| Bytes::new()), ctx)
            }
            op => {
                let answer = self.links.system.serve(self.router.peer(pid), op);
                self.answer_later(generation, id, answer, ctx);
            }
        }
    }

    /// Answers what process `generation` asked under `id` once `answer` resolves. A task of its
    /// own, which hands the answer back as [`AskDone`]: actix polls every future of a context on
    /// each wake-up, so a thousand requests in flight as context futures would slow the loop.
    fn answer_later(
        &self,
        generation: u64,
        id: u64,
        answer: impl std::future::Future<Output = Result<Bytes, AskError>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        let proxy = ctx.address();
        actix::spawn(async move {
            let result = answer.await;
            proxy.do_send(AskDone {
                generation,
                id,
                result,
            });
        });
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
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.gate.answered();
        if !p.is_running() {
            return;
        }
        // Answers bypass the outbox limit (the worker waits for them); the master stops reading
        // the worker's requests while its outbox is full, so they cannot pile up past one
        // answer per request in flight (see `gate`).
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
            Ok(bytes) => {
                self.counters.sent(kind, bytes);
                self.kick_writer(generation, ctx);
            }
            Err(e) => tracing::warn!(worker, id, error = %e, "answer not sent"),
        }
    }

    /// A cache change for the subscriptions of process `pid`, if it still serves the slot.
    fn notify(&mut self, pid: u32, payload: &[u8], must_arrive: bool, ctx: &mut Context<Self>) {
        let generation = self.proc.generation;
        if self.proc.pid() != Some(pid) || !self.proc.is_running() {
            return;
        }
        let event = Envelope::Notify { payload };
        let pushed = if must_arrive {
            self.proc.stdin.push_control(&event)
        } else {
            self.proc.stdin.push(self.id, &event)
        };
        match self.counters.refusal(pushed) {
            Ok(bytes) => {
                self.counters.sent(NOTIFY, bytes);
                self.kick_writer(generation, ctx);
            }
            Err(e) => {
                self.counters.errors += 1;
                tracing::warn!(worker = self.id, error = %e, "cache event not delivered");
            }
        }
    }

    /// Credit for process `pid` of this slot: `worker` took in `count` more of its messages.
    fn credit(&mut self, pid: u32, worker: WorkerId, count: u64, ctx: &mut Context<Self>) {
        let generation = self.proc.generation;
        if self.proc.pid() != Some(pid) || !self.proc.is_running() {
            return;
        }
        let credit = Envelope::Credit {
            worker: worker as u64,
            count,
        };
        if let Ok(bytes) = self.proc.stdin.push_control(&credit) {
            self.counters.sent(CREDIT, bytes);
            self.kick_writer(generation, ctx);
        }
    }

    /// Pays the credit owed for what process `generation` took in, once its outbox is under its
    /// limit (or at once, with `now`: the messages are gone with the process).
    pub(crate) fn pay_credits(&mut self, generation: u64, now: bool) {
        let full = self.proc_mut(generation).is_some_and(|p| p.stdin.is_full());
        if (full && !now) || !self.owed.keys().any(|(g, ..)| *g == generation) {
            return;
        }
        let paid: Vec<_> = self
            .owed
            .iter()
            .filter(|((g, ..), _)| *g == generation)
            .map(|(&(_, sender, pid), &count)| (sender, pid, count))
            .collect();
        self.owed.retain(|(g, ..), _| *g != generation);
        for (sender, pid, count) in paid {
            self.pay(sender, pid, count);
        }
    }

    /// Credits process `pid` of slot `sender` with `count` messages.
    fn pay(&self, sender: WorkerId, pid: u32, count: u64) {
        if let Some(slot) = self.links.routing.borrow().slots.get(sender) {
            slot.do_send(Routed::Credit {
                pid,
                worker: self.id,
                count,
            });
        }
    }

    /// A message for this worker from another process.
    fn deliver(&mut self, routed: Routed, ctx: &mut Context<Self>) {
        let routed = match routed {
            Routed::Notify {
                pid,
                payload,
                must_arrive,
            } => return self.notify(pid, &payload, must_arrive, ctx),
            Routed::Credit { pid, worker, count } => return self.credit(pid, worker, count, ctx),
            other => other,
        };
        // A one-way message from a worker to this one, in the sender's window: taken in even
        // past the outbox's limit (the windows bound it), and paid for in credit once the
        // outbox is under its limit again.
        let windowed = match &routed {
            Routed::Tell {
                from: Peer::Worker { id, pid },
                windowed: true,
                ..
            } => Some((*id, *pid)),
            _ => None,
        };
        if let Err(e) = self.accepting() {
            if let Some((sender, pid)) = windowed {
                // Not taken in: its place in the window comes back at once.
                self.pay(sender, pid, 1);
            }
            self.counters.errors += 1;
            match routed {
                Routed::Tell { ack: Some(ack), .. } | Routed::Ask { reply: ack, .. } => {
                    ack.answer(Err(AskError::from_call(&e)))
                }
                Routed::Tell { from, .. } => {
                    tracing::debug!(worker = self.id, ?from, error = %e, "message dropped")
                }
                Routed::Notify { .. } | Routed::Credit { .. } => {}
            }
            return;
        }
        if let Some((sender, pid)) = windowed {
            let taker = self.proc.generation;
            *self.owed.entry((taker, sender, pid)).or_default() += 1;
        }
        let id = self.next_id;
        let Some((pushed, waiter, kind)) = self.push_routed(id, routed, windowed.is_some()) else {
            return;
        };
        match self.counters.refusal(pushed) {
            Ok(bytes) => {
                self.counters.sent(kind, bytes);
                if let Some(waiter) = waiter {
                    self.next_id += 1;
                    let request = kind == PEER_REQUEST;
                    if request {
                        self.counters.requests += 1;
                    }
                    self.proc.in_flight.insert_peer(id, waiter, request);
                }
                self.kick_writer(self.proc.generation, ctx);
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

    /// Queues a message from another process as a frame (under `id`, if it wants an answer):
    /// whether it went in, who waits for its answer, and the frame's kind.
    fn push_routed(
        &mut self,
        id: u64,
        routed: Routed,
        windowed: bool,
    ) -> Option<(Result<usize, CallError>, Option<ReplyTo>, usize)> {
        Some(match routed {
            Routed::Tell {
                from,
                via,
                payload,
                ack,
                ..
            } => {
                let env = Envelope::Deliver {
                    from,
                    via,
                    ack: ack.as_ref().map(|_| id),
                    payload: &payload,
                };
                let pushed = if windowed {
                    self.proc.stdin.push_control(&env)
                } else {
                    self.proc.stdin.push(self.id, &env)
                };
                (pushed, ack, DELIVER)
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
                (
                    self.proc.stdin.push(self.id, &env),
                    Some(reply),
                    PEER_REQUEST,
                )
            }
            Routed::Notify { .. } | Routed::Credit { .. } => return None,
        })
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
