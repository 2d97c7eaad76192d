//! The messages a [`Worker`] proxy takes, and how it answers them.
//!
//! The reply to a [`Call`] is not computed in the handler: the proxy parks actix's own response
//! sender under the request's correlation id and completes it when the worker's reply frame
//! arrives. No future or task is created per request.

use std::fmt;
use std::time::Duration;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;

use super::actor::Worker;
use super::generation::Held;
use super::handover::Replaced;
use super::inflight::InFlight;
use super::metered::SlotFigures;
use crate::error::ExitReason;
use crate::error::{CallError, ReplaceError};
use crate::event::WorkerInfo;
use crate::messaging::table::{ReplyTo, Routed};
use crate::messaging::{Peer, Via, WorkerStats};
use crate::state::WorkerState;
use crate::worker::WorkerActor;

/// A request to a worker of type `A`; the caller awaits `A::Reply`.
///
/// ```no_run
/// # use procactor::prelude::*;
/// # use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
/// # async fn f(w: Addr<Worker<Echo>>) -> Result<(), procactor::Error> {
/// let reply: EchoReply = w.send(Call(EchoMsg::Ping)).await??;
/// # Ok(()) }
/// ```
///
/// A message of another type does not compile:
///
/// ```compile_fail
/// # use procactor::prelude::*;
/// # use procactor::actors::echo::Echo;
/// # async fn f(w: Addr<Worker<Echo>>) {
/// let _ = w.send(Call(42u32)).await; // u32 is not Echo's Msg
/// # }
/// ```
pub struct Call<A: WorkerActor>(pub A::Msg);

impl<A: WorkerActor> Message for Call<A> {
    type Result = Result<A::Reply, CallError>;
}

/// A one-way message to a worker of type `A`.
///
/// `send(Tell(..)).await` resolves once the message is queued; when much is already waiting to be
/// written to the worker (a sixteenth of `max_outbox_bytes`), it resolves only once that has
/// drained, which paces a fast sender to the worker's speed. Past `max_outbox_bytes` the message
/// is refused with [`CallError::Backpressure`].
pub struct Tell<A: WorkerActor>(pub A::Msg);

impl<A: WorkerActor> Message for Tell<A> {
    type Result = Result<(), CallError>;
}

/// One-way messages to a worker of type `A`, queued together, in order: one actix message for
/// the lot, so a stream of small messages costs about what encoding them costs (a `Tell` each
/// costs a mailbox trip and a response channel).
///
/// All or none: refused whole with [`CallError::Backpressure`] when the outbox holds
/// `max_outbox_bytes` already (a batch may take it past its limit by its own size, as one large
/// message may), or with [`CallError::Frame`] when one of them cannot be encoded within
/// `max_frame_bytes`. Paced as [`Tell`] is.
///
/// ```no_run
/// # use procactor::prelude::*;
/// # use procactor::TellBatch;
/// # use procactor::actors::echo::{Echo, EchoMsg};
/// # async fn f(w: Addr<Worker<Echo>>) -> Result<(), Box<dyn std::error::Error>> {
/// let batch: Vec<EchoMsg> = (0..64).map(EchoMsg::Seq).collect();
/// w.send(TellBatch(batch)).await??;
/// # Ok(()) }
/// ```
pub struct TellBatch<A: WorkerActor>(pub Vec<A::Msg>);

impl<A: WorkerActor> Message for TellBatch<A> {
    type Result = Result<(), CallError>;
}

macro_rules! opaque_debug {
    ($($ty:ident),*) => {$(
        impl<A: WorkerActor> fmt::Debug for $ty<A> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}
opaque_debug!(Call, Tell, TellBatch);

/// Stops the worker gracefully and resolves with its exit reason once it has been reaped (and
/// the old process of a [`Replace`] still draining, if any, has exited too).
///
/// The worker gets `Shutdown`, handles what it was sent before it, runs its `stopping` hook and
/// exits; it is killed with its process group if it has not exited within the shutdown timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop;

impl Message for Stop {
    type Result = ExitReason;
}

/// Ends the worker gracefully with exit status `.0`: it handles what it was sent, runs its
/// `stopping` hook and exits with that status (killed after the shutdown timeout). Unlike a
/// [`Stop`] through the cluster, the slot is not stopped for good: the restart policy decides
/// by the status. Resolves with the exit reason once reaped, or `None` when no process ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminate(pub i32);

impl Message for Terminate {
    type Result = Option<ExitReason>;
}

/// Kills the worker's process group with SIGKILL at once; resolves when it has been reaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kill;

impl Message for Kill {
    type Result = ExitReason;
}

/// Resolves when the worker is ready, or with its exit reason if it exits first.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwaitReady;

impl Message for AwaitReady {
    type Result = Result<(), ExitReason>;
}

/// Asks for the worker's [`WorkerInfo`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GetInfo;

impl Message for GetInfo {
    type Result = WorkerInfo;
}

/// The answer to a [`Call`]: given now, or parked until the worker replies.
pub struct CallResponse<A: WorkerActor>(CallInner<A>);

enum CallInner<A: WorkerActor> {
    Now(Result<A::Reply, CallError>),
    Parked(u64, InFlight<A::Reply>),
}

impl<A: WorkerActor> fmt::Debug for CallResponse<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CallInner::Now(r) => f.debug_tuple("Now").field(&r.as_ref().err()).finish(),
            CallInner::Parked(id, _) => f.debug_tuple("Parked").field(id).finish(),
        }
    }
}

impl<A: WorkerActor> MessageResponse<Worker<A>, Call<A>> for CallResponse<A> {
    fn handle(
        self,
        _ctx: &mut Context<Worker<A>>,
        tx: Option<OneshotSender<Result<A::Reply, CallError>>>,
    ) {
        match self.0 {
            CallInner::Now(result) => {
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            CallInner::Parked(id, in_flight) => {
                in_flight.park_caller(id, tx);
            }
        }
    }
}

impl<A: WorkerActor> Handler<Call<A>> for Worker<A> {
    type Result = CallResponse<A>;

    fn handle(&mut self, Call(msg): Call<A>, ctx: &mut Context<Self>) -> CallResponse<A> {
        match self.send_request(&msg, ctx) {
            Ok(id) => CallResponse(CallInner::Parked(id, self.in_flight().clone())),
            Err(e) => CallResponse(CallInner::Now(Err(e))),
        }
    }
}

/// The answer to a [`Tell`]: given now, or held until the outbox drains.
pub struct TellResponse(TellInner);

enum TellInner {
    Now(Result<(), CallError>),
    Held(Held),
}

impl fmt::Debug for TellResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TellInner::Now(r) => f.debug_tuple("Now").field(r).finish(),
            TellInner::Held(_) => f.write_str("Held"),
        }
    }
}

impl TellResponse {
    /// Answers now, or parks `tx` until the outbox drains.
    fn respond(self, tx: Option<OneshotSender<Result<(), CallError>>>) {
        let Some(tx) = tx else { return };
        match self.0 {
            TellInner::Now(result) => {
                let _ = tx.send(result);
            }
            TellInner::Held(held) => held.borrow_mut().push_back(tx),
        }
    }
}

impl<A: WorkerActor> MessageResponse<Worker<A>, Tell<A>> for TellResponse {
    fn handle(self, _: &mut Context<Worker<A>>, tx: Option<OneshotSender<Result<(), CallError>>>) {
        self.respond(tx);
    }
}

impl<A: WorkerActor> MessageResponse<Worker<A>, TellBatch<A>> for TellResponse {
    fn handle(self, _: &mut Context<Worker<A>>, tx: Option<OneshotSender<Result<(), CallError>>>) {
        self.respond(tx);
    }
}

impl<A: WorkerActor> Handler<Tell<A>> for Worker<A> {
    type Result = TellResponse;

    fn handle(&mut self, Tell(msg): Tell<A>, ctx: &mut Context<Self>) -> TellResponse {
        let queued = self.send_tell(&msg, ctx);
        self.tell_response(queued)
    }
}

impl<A: WorkerActor> Handler<TellBatch<A>> for Worker<A> {
    type Result = TellResponse;

    fn handle(&mut self, TellBatch(msgs): TellBatch<A>, ctx: &mut Context<Self>) -> TellResponse {
        let queued = self.send_tells(&msgs, ctx);
        self.tell_response(queued)
    }
}

impl<A: WorkerActor> Worker<A> {
    /// The answer to one-way messages queued (`Ok(true)`: once the outbox drains) or refused.
    fn tell_response(&self, queued: Result<bool, CallError>) -> TellResponse {
        match queued {
            Ok(true) => TellResponse(TellInner::Held(self.held().clone())),
            Ok(false) => TellResponse(TellInner::Now(Ok(()))),
            Err(e) => TellResponse(TellInner::Now(Err(e))),
        }
    }
}

fn when_exited<A: WorkerActor>(act: &mut Worker<A>) -> ResponseFuture<ExitReason> {
    // Waiting out a backoff, the slot has no process: its last one has exited already.
    if matches!(
        act.state(),
        WorkerState::Exited | WorkerState::Failed | WorkerState::Backoff
    ) {
        let reason = act.last_exit().cloned().unwrap_or(ExitReason::Killed);
        return Box::pin(async move { reason });
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    act.add_exit_waiter(tx);
    Box::pin(async move { rx.await.unwrap_or(ExitReason::Killed) })
}

impl<A: WorkerActor> Handler<Stop> for Worker<A> {
    type Result = ResponseFuture<ExitReason>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        self.stop_slot(ctx);
        // An old process still draining from a `Replace` is waited for as well.
        let (drained, exited) = (self.old_drained(), when_exited(self));
        Box::pin(async move {
            let reason = exited.await;
            drained.await;
            reason
        })
    }
}

impl<A: WorkerActor> Handler<Terminate> for Worker<A> {
    type Result = ResponseFuture<Option<ExitReason>>;

    fn handle(&mut self, Terminate(status): Terminate, ctx: &mut Context<Self>) -> Self::Result {
        if !self.terminate_slot(status, ctx) {
            return Box::pin(async { None });
        }
        let exited = when_exited(self);
        Box::pin(async move { Some(exited.await) })
    }
}

impl<A: WorkerActor> Handler<Kill> for Worker<A> {
    type Result = ResponseFuture<ExitReason>;

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) -> Self::Result {
        self.kill_slot(ctx);
        when_exited(self)
    }
}

impl<A: WorkerActor> Handler<AwaitReady> for Worker<A> {
    type Result = ResponseFuture<Result<(), ExitReason>>;

    fn handle(&mut self, _: AwaitReady, _ctx: &mut Context<Self>) -> Self::Result {
        match self.state() {
            WorkerState::Ready => Box::pin(async { Ok(()) }),
            WorkerState::Exited | WorkerState::Failed | WorkerState::Stopping => {
                let reason = self.last_exit().cloned().unwrap_or(ExitReason::Killed);
                Box::pin(async move { Err(reason) })
            }
            _ => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.add_ready_waiter(tx);
                Box::pin(async move { rx.await.unwrap_or(Err(ExitReason::Killed)) })
            }
        }
    }
}

impl<A: WorkerActor> Handler<GetInfo> for Worker<A> {
    type Result = MessageResult<GetInfo>;

    fn handle(&mut self, _: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.info())
    }
}

/// The supervisor's restart decision for a slot whose process has exited.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decided {
    /// Start a new process after this delay.
    Respawn(Duration),
    /// Leave the slot down in this state (`Exited` or `Failed`).
    Settle(WorkerState),
    /// Start a process in a slot that was stopped on purpose (scaled down, now scaled up): a
    /// start on the operator's word, not counted as a restart.
    Start,
}

impl Message for Decided {
    type Result = ();
}

impl<A: WorkerActor> Handler<Decided> for Worker<A> {
    type Result = ();

    fn handle(&mut self, decided: Decided, ctx: &mut Context<Self>) {
        match decided {
            Decided::Respawn(delay) => self.schedule_respawn(delay, ctx),
            Decided::Settle(state) => self.settle(state, ctx),
            Decided::Start => {
                if matches!(self.proc.state, WorkerState::Exited | WorkerState::Failed) {
                    self.uncounted = true;
                    self.schedule_respawn(Duration::ZERO, ctx);
                }
            }
        }
    }
}

/// Replaces the slot's process with a new one without a gap in service (one step of a rolling
/// restart); resolves at the hand-over, once the new process serves and the old one has been
/// told to stop. [`Replaced::old_exited`] resolves once the old process has finished and exited.
///
/// A new process of the program as it is on disk now is started beside the serving one. When it
/// is ready, it takes the slot's messages and the old one is stopped gracefully (`Shutdown`, its
/// `stopping` hook, SIGKILL after the shutdown timeout), still answering what it was sent. If the
/// new process exits or is not ready within the ready timeout, it is killed and the old one goes
/// on serving: the result is [`ReplaceError::Failed`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Replace;

impl Message for Replace {
    type Result = Result<Replaced, ReplaceError>;
}

impl<A: WorkerActor> Handler<Replace> for Worker<A> {
    type Result = ResponseFuture<Result<Replaced, ReplaceError>>;

    fn handle(&mut self, _: Replace, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.begin_replace(tx, ctx);
        let worker = self.id;
        Box::pin(async move { rx.await.unwrap_or(Err(ReplaceError::Gone { worker })) })
    }
}

/// A one-way message to a worker of type `A` that resolves once the worker has received it
/// (Node's `worker.send(msg, callback)`): the worker's runtime acknowledges it on arrival,
/// before its `tell` hook runs.
pub struct TellAck<A: WorkerActor>(pub A::Msg);

impl<A: WorkerActor> Message for TellAck<A> {
    type Result = Result<(), CallError>;
}

impl<A: WorkerActor> fmt::Debug for TellAck<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TellAck").finish_non_exhaustive()
    }
}

impl<A: WorkerActor> Handler<TellAck<A>> for Worker<A> {
    type Result = ResponseFuture<Result<(), CallError>>;

    fn handle(&mut self, TellAck(msg): TellAck<A>, ctx: &mut Context<Self>) -> Self::Result {
        let worker = self.id;
        let mut payload = Vec::new();
        if let Err(e) = crate::codec::encode_value(&mut payload, &msg) {
            return Box::pin(async move { Err(CallError::Frame(e)) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let routed = Routed::Tell {
            from: Peer::Master,
            via: Via::Direct,
            payload: payload.into(),
            ack: Some(ReplyTo::Local(tx)),
            windowed: false,
        };
        <Self as Handler<Routed>>::handle(self, routed, ctx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(CallError::Failed(e.to_string())),
                Err(_) => Err(CallError::NotRunning { worker }),
            }
        })
    }
}

/// Asks a proxy for its [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GetStats;

impl Message for GetStats {
    type Result = WorkerStats;
}

impl<A: WorkerActor> Handler<GetStats> for Worker<A> {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

/// Asks a proxy for its [`SlotFigures`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GetFigures;

impl Message for GetFigures {
    type Result = SlotFigures;
}

impl<A: WorkerActor> Handler<GetFigures> for Worker<A> {
    type Result = MessageResult<GetFigures>;

    fn handle(&mut self, _: GetFigures, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.figures())
    }
}
