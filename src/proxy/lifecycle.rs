//! Heartbeats, faults, graceful stops, respawns and settling a slot for good.

use std::time::Duration;

use actix::prelude::*;

use super::actor::*;
use super::generation::Beat;
use crate::error::{CallError, ExitReason};
use crate::protocol::Envelope;
use crate::state::WorkerState;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Worker<A> {
    /// Pings process `generation` every heartbeat interval while it lives; kills it after
    /// `heartbeat_misses` pings in a row go unanswered.
    pub(super) fn start_heartbeat(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let interval = self.spawn.config.heartbeat_interval;
        if interval.is_zero() || self.plain() {
            return;
        }
        let misses = u64::from(self.spawn.config.heartbeat_misses.max(1));
        ctx.run_interval(interval, move |act, ctx| {
            let span = act.span(generation);
            let _entered = span.as_ref().map(tracing::Span::enter);
            let id = act.id;
            let alive = act
                .proc_mut(generation)
                .is_some_and(|p| matches!(p.state, WorkerState::Ready | WorkerState::Stopping));
            if !alive {
                // This process is gone; a new one runs its own heartbeat.
                ctx.cancel_future(ctx.handle());
                return;
            }
            if act.links.log.queue.full_for(id) {
                // Its stdout is not being read while the logger catches up: no verdict now.
                return;
            }
            let Some(p) = act.proc_mut(generation) else {
                return;
            };
            match p.heartbeat(misses) {
                Beat::Missed => act.fault(generation, ExitReason::HeartbeatTimeout, ctx),
                Beat::Paused => {}
                Beat::Ping(seq) => {
                    // A full queue is a missed heartbeat too; the worker is not reading.
                    if let Ok(bytes) = p.stdin.push(id, &Envelope::Ping { seq }) {
                        act.counters.sent(PING, bytes);
                        act.kick_writer(generation, ctx);
                    }
                }
            }
        });
    }

    /// Ends process `generation` for `reason`: kills its process group and fails what is in
    /// flight to it.
    pub(crate) fn fault(&mut self, generation: u64, reason: ExitReason, _ctx: &mut Context<Self>) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let id = self.id;
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        let pid = p.pid();
        if !p.fault(id, reason.clone()) {
            return;
        }
        match &reason {
            ExitReason::Protocol(e) => {
                tracing::error!(worker = id, pid, generation, error = %e, "protocol violation; killing worker");
            }
            other => {
                tracing::warn!(worker = id, pid, generation, reason = %other, "killing worker")
            }
        }
    }

    /// Starts a graceful stop of process `generation`: `Shutdown` (SIGTERM for a plain
    /// program), then SIGKILL after the shutdown timeout.
    pub(crate) fn begin_stop(&mut self, generation: u64, ctx: &mut Context<Self>) {
        self.begin_stop_with(generation, 0, ctx);
    }

    /// As [`begin_stop`](Self::begin_stop); a worker then exits with `status`.
    pub(crate) fn begin_stop_with(
        &mut self,
        generation: u64,
        status: i32,
        ctx: &mut Context<Self>,
    ) {
        let span = self.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let id = self.id;
        let plain = self.plain();
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !matches!(
            p.state,
            WorkerState::Starting | WorkerState::Online | WorkerState::Ready
        ) {
            return;
        }
        p.state = WorkerState::Stopping;
        if plain {
            p.terminate();
        } else {
            // Past the limit or not, Shutdown must go out: bypass the backpressure check.
            let shutdown = match status {
                0 => Envelope::Shutdown,
                status => Envelope::ShutdownWith { status },
            };
            match p.stdin.push_control(&shutdown) {
                Ok(bytes) => self.counters.sent(shutdown.index(), bytes),
                Err(e) => {
                    tracing::warn!(worker = id, error = %e, "cannot queue Shutdown; killing");
                    self.fault(generation, ExitReason::ShutdownTimeout, ctx);
                    return;
                }
            }
            self.kick_writer(generation, ctx);
        }
        ctx.run_later(self.spawn.config.shutdown_timeout, move |act, ctx| {
            let stopping = act
                .proc_mut(generation)
                .is_some_and(|p| p.state == WorkerState::Stopping);
            if stopping {
                act.fault(generation, ExitReason::ShutdownTimeout, ctx);
            }
        });
    }

    /// Stops the slot gracefully: its serving process, and a replacement under way is killed.
    pub(crate) fn stop_slot(&mut self, ctx: &mut Context<Self>) {
        if let Some(generation) = self.handover.incoming() {
            self.fault(generation, ExitReason::Killed, ctx);
        }
        if self.proc.state == WorkerState::Backoff {
            self.settle(WorkerState::Exited, ctx);
        } else {
            self.begin_stop(self.proc.generation, ctx);
        }
    }

    /// Ends the slot's serving process gracefully with exit status `status` (a replacement under
    /// way is killed); `false` when no process runs.
    pub(crate) fn terminate_slot(&mut self, status: i32, ctx: &mut Context<Self>) -> bool {
        if let Some(generation) = self.handover.incoming() {
            self.fault(generation, ExitReason::Killed, ctx);
        }
        if !matches!(
            self.proc.state,
            WorkerState::Starting | WorkerState::Online | WorkerState::Ready
        ) {
            // Not running, or stopping already (with the status it was given).
            return false;
        }
        self.begin_stop_with(self.proc.generation, status, ctx);
        true
    }

    /// Kills the slot's serving process (and a replacement under way).
    pub(crate) fn kill_slot(&mut self, ctx: &mut Context<Self>) {
        if let Some(generation) = self.handover.incoming() {
            self.fault(generation, ExitReason::Killed, ctx);
        }
        self.fault(self.proc.generation, ExitReason::Killed, ctx);
    }

    /// Starts a new process in this slot after `delay` (the supervisor's restart decision).
    pub(crate) fn schedule_respawn(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if !matches!(self.proc.state, WorkerState::Exited | WorkerState::Failed) {
            return;
        }
        if let Some(handle) = self.respawn.take() {
            ctx.cancel_future(handle);
        }
        if delay.is_zero() {
            self.spawn_process(ctx);
            return;
        }
        self.proc.state = WorkerState::Backoff;
        self.respawn = Some(ctx.run_later(delay, |act, ctx| {
            act.respawn = None;
            if act.proc.state == WorkerState::Backoff {
                act.spawn_process(ctx);
            }
        }));
    }

    /// Leaves the slot down for good: cancels a scheduled restart and fails what waits for it.
    pub(crate) fn settle(&mut self, state: WorkerState, ctx: &mut Context<Self>) {
        if let Some(handle) = self.respawn.take() {
            ctx.cancel_future(handle);
        }
        if matches!(
            self.proc.state,
            WorkerState::Exited | WorkerState::Backoff | WorkerState::Failed
        ) {
            self.proc.state = state;
            let reason = self.last_exit.clone().unwrap_or(ExitReason::Killed);
            self.proc.stdin.detach();
            self.proc.fail_in_flight(&CallError::WorkerExited {
                worker: self.id,
                reason: reason.clone(),
            });
            for tx in self.ready_waiters.drain(..) {
                let _ = tx.send(Err(reason.clone()));
            }
            for tx in self.exit_waiters.drain(..) {
                let _ = tx.send(reason.clone());
            }
        }
    }
}
