//! The proxy's side of a rolling hand-over ([`Replace`](crate::Replace)): start a replacement,
//! hand the slot over once it is ready and resolve the `Replace` then, tell the
//! [`Replaced`](crate::Replaced) when the old process, stopped at the hand-over, has exited.

use actix::dev::OneshotSender;
use actix::prelude::*;

use super::actor::Worker;
use super::generation::Finished;
use super::handover::{Handover, ReplaceReply, Replaced};
use crate::error::{ExitReason, ReplaceError};
use crate::event::WorkerEventKind;
use crate::state::WorkerState;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Worker<A> {
    /// Process `generation` is ready: it serves the slot, or takes over from the serving one.
    pub(super) fn on_ready(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.state = WorkerState::Ready;
        let pid = p.pid();
        self.emit(generation, pid, WorkerEventKind::Ready);
        self.start_heartbeat(generation, ctx);
        if self.handover.incoming() == Some(generation) {
            self.hand_over(ctx);
        } else if self.proc.generation == generation {
            for tx in self.ready_waiters.drain(..) {
                let _ = tx.send(Ok(()));
            }
            if let Some(mut reply) = self.handover.take_promoted() {
                reply.new_pid = pid;
                let old_exit = self.last_exit.clone().unwrap_or(ExitReason::Killed);
                reply.resolve(self.id, generation, Ok(old_exit));
            }
        }
    }

    /// The replacement is ready: it becomes the serving process; the old one is stopped
    /// gracefully and finishes what it was sent.
    fn hand_over(&mut self, ctx: &mut Context<Self>) {
        let Handover::Replacing { new, mut reply } = self.handover.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.proc, new);
        let (old_generation, old_pid) = (old.generation, old.pid());
        reply.new_pid = self.proc.pid();
        tracing::info!(
            worker = self.id,
            old_pid,
            new_pid = reply.new_pid,
            generation = self.proc.generation,
            "replacement ready; retiring the old process"
        );
        for tx in self.ready_waiters.drain(..) {
            let _ = tx.send(Ok(()));
        }
        if old.is_running() {
            // The answer goes out now, and is acted on once this turn of the proxy is over:
            // by then the old process has been told to stop.
            let retire = reply.hand_over(self.id, self.proc.generation);
            self.handover = Handover::Draining { old, retire };
            self.begin_stop(old_generation, ctx);
        } else {
            // It exited while the replacement was starting (and was reported then).
            reply.resolve(self.id, self.proc.generation, Ok(ExitReason::Exited(0)));
        }
    }

    /// A process that is not the serving one has exited: a replacement that failed before it
    /// was ready, or an old process done draining.
    pub(super) fn retired(&mut self, generation: u64, finished: &Finished) {
        let (reason, pid) = (&finished.reason, finished.pid);
        match self.handover.take() {
            Handover::Replacing { new, reply } if new.generation == generation => {
                tracing::warn!(worker = self.id, pid, generation, %reason, "replacement failed; the old process keeps serving");
                let failed = ReplaceError::Failed {
                    worker: self.id,
                    reason: reason.clone(),
                    last_stderr: finished.last_stderr.clone(),
                };
                reply.resolve(self.id, self.proc.generation, Err(failed));
            }
            Handover::Draining { old, retire } if old.generation == generation => {
                tracing::info!(worker = self.id, pid, generation, %reason, "replaced process exited");
                retire.exited(reason.clone());
            }
            other => self.handover = other,
        }
    }

    /// The serving process has exited. A replacement under way takes the slot now (`true`),
    /// and the `Replace` resolves when it is ready or exits.
    pub(super) fn promote_replacement(&mut self) -> bool {
        match self.handover.take() {
            Handover::Replacing { new, reply } => {
                self.proc = new;
                self.handover = Handover::Promoted { reply };
                true
            }
            other => {
                self.handover = other;
                false
            }
        }
    }

    /// The promoted replacement exited before it was ready: the `Replace` fails.
    pub(super) fn promoted_failed(&mut self, reason: ExitReason, last_stderr: Vec<String>) {
        if let Some(reply) = self.handover.take_promoted() {
            let failed = ReplaceError::Failed {
                worker: self.id,
                reason,
                last_stderr,
            };
            reply.resolve(self.id, self.proc.generation, Err(failed));
        }
    }

    /// Resolves once the old process of a `Replace`, if one still drains, has exited: a stop of
    /// the slot waits for it too.
    pub(crate) fn old_drained(&self) -> impl std::future::Future<Output = ()> + 'static {
        let retiring = self.handover.retiring().map(|retire| retire.wait());
        async move {
            if let Some(retiring) = retiring {
                retiring.await;
            }
        }
    }

    /// Starts a replacement process for the slot; see [`Replace`](crate::Replace). While the
    /// old process of the last one still drains, it begins once that process has exited.
    pub(crate) fn begin_replace(
        &mut self,
        tx: OneshotSender<Result<Replaced, ReplaceError>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(retire) = self.handover.retiring() {
            tracing::info!(
                worker = self.id,
                "a replaced process still drains; the new Replace waits for its exit"
            );
            let drained = retire.wait();
            ctx.spawn(
                drained
                    .into_actor(self)
                    .map(move |(), act, ctx| act.begin_replace(tx, ctx)),
            );
            return;
        }
        if self.handover.busy() {
            let _ = tx.send(Err(ReplaceError::Busy { worker: self.id }));
            return;
        }
        if self.proc.state != WorkerState::Ready {
            let _ = tx.send(Err(ReplaceError::NotServing {
                worker: self.id,
                state: self.proc.state,
            }));
            return;
        }
        self.generations += 1;
        let generation = self.generations;
        self.handover = Handover::Replacing {
            new: self.new_proc(generation),
            reply: ReplaceReply::new(tx, self.proc.pid()),
        };
        tracing::info!(
            worker = self.id,
            pid = self.proc.pid(),
            generation,
            "starting a replacement"
        );
        self.start_process(generation, ctx);
    }
}
