//! Frames from a worker, read top to bottom: decode the envelope, let the process's state
//! machine admit it ([`Proc::admit`](super::generation::Proc::admit)), then act on it by family
//! — lifecycle, answers to requests, or what the worker sends to others and to the master.

use actix::prelude::*;

use super::actor::Worker;
use super::generation::Admitted;
use super::links::FromWorker;
use crate::codec::{decode_envelope, decode_value};
use crate::error::{AskError, CallError, ProtocolError};
use crate::event::WorkerEventKind;
use crate::protocol::Envelope;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Worker<A> {
    /// Handles one frame from process `generation`; an error ends that process.
    pub(super) fn on_frame(
        &mut self,
        generation: u64,
        frame: &[u8],
        ctx: &mut Context<Self>,
    ) -> Result<(), ProtocolError> {
        let envelope = decode_envelope(frame)?;
        self.counters.received(envelope.index(), frame.len());
        let Some(p) = self.proc_mut(generation) else {
            return Ok(());
        };
        let pid = p.pid();
        match p.admit(envelope)? {
            Admitted::Done => {}
            Admitted::Online => self.emit(generation, pid, WorkerEventKind::Online),
            Admitted::Ready => self.on_ready(generation, ctx),
            Admitted::Answer(envelope) => self.on_answer(generation, envelope)?,
            Admitted::Outbound(envelope) => {
                self.on_outbound(generation, pid.unwrap_or_default(), envelope, ctx)
            }
        }
        Ok(())
    }

    /// `Reply` or `Failed`: the answer goes to whoever waits under its id.
    fn on_answer(&mut self, generation: u64, envelope: Envelope<'_>) -> Result<(), ProtocolError> {
        let Some(p) = self.proc_mut(generation) else {
            return Ok(());
        };
        match envelope {
            Envelope::Reply { id, payload } => {
                let taken = p
                    .in_flight
                    .take(id)
                    .ok_or(ProtocolError::UnknownReply { id })?;
                if taken.request {
                    self.counters.replied(taken.since);
                }
                taken.waiter.reply(payload, |bytes| {
                    decode_value(bytes).map_err(|e| CallError::BadReply(e.to_string()))
                });
            }
            Envelope::Failed { id, error } => {
                let taken = p
                    .in_flight
                    .take(id)
                    .ok_or(ProtocolError::UnknownReply { id })?;
                if taken.request {
                    self.counters.replied(taken.since);
                }
                self.counters.errors += 1;
                taken.waiter.failed(error);
            }
            _ => {}
        }
        Ok(())
    }

    /// What the worker sends on its own: to other processes, to the master, to the logs.
    fn on_outbound(
        &mut self,
        generation: u64,
        pid: u32,
        envelope: Envelope<'_>,
        ctx: &mut Context<Self>,
    ) {
        let asks = matches!(
            envelope,
            Envelope::Ask { .. } | Envelope::System { .. } | Envelope::Send { ack: Some(_), .. }
        );
        if let Some(p) = self.proc_mut(generation).filter(|_| asks) {
            // Answered through `answer_worker`, which counts it done.
            p.gate.asked();
        }
        match envelope {
            Envelope::Send { to, ack, payload } => {
                self.route_send(generation, pid, to, ack, payload, ctx)
            }
            Envelope::Ask { id, to, payload } => {
                self.route_ask(generation, pid, id, to, payload, ctx)
            }
            Envelope::System { id, op } => self.system_op(generation, pid, id, op, ctx),
            Envelope::Event { payload } => self.deliver_event(generation, pid, payload),
            Envelope::Log {
                kind,
                time_ns,
                fields,
            } => self.log_record(generation, pid, kind, time_ns, fields),
            // The one-way request of older workers: no one to answer.
            Envelope::ReloadRequest => {
                let _ = self.reload_requested(generation, pid);
            }
            _ => {}
        }
    }

    /// The process asks for a rolling reload: passed on to the supervisor once per process
    /// (a flood of requests is one request), which reloads where the config allows it; the
    /// answer says whether it does.
    pub(super) fn reload_requested(&mut self, generation: u64, pid: u32) -> Result<(), AskError> {
        if let Some(p) = self.proc_mut(generation) {
            if !std::mem::replace(&mut p.reload_asked, true) {
                self.emit(generation, Some(pid), WorkerEventKind::ReloadRequested);
            }
        }
        if self.spawn.config.worker_reload {
            Ok(())
        } else {
            Err(AskError::NotPermitted(
                "reloads from workers are off in this cluster's config \
                 (ClusterConfig::worker_reload)"
                    .into(),
            ))
        }
    }

    /// A record the worker logged on purpose; never dropped (the reader pauses instead).
    fn log_record(
        &self,
        generation: u64,
        pid: u32,
        kind: crate::logger::Kind,
        time_ns: u64,
        fields: &str,
    ) {
        let source = self.source(generation, pid);
        self.links.log.send_fields(source, kind, time_ns, fields);
    }

    /// A one-way message to the master's handlers. Each handler's copy counts against the
    /// process's [`Gate`](super::gate::Gate) until the handler is done with it.
    pub(super) fn deliver_event(&mut self, generation: u64, pid: u32, payload: &[u8]) {
        let handlers = std::rc::Rc::clone(&self.links.handlers);
        for listener in handlers.listeners.iter() {
            let msg = match decode_value::<A::Event>(payload) {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(worker = self.id, pid, error = %e, "event from worker did not decode; dropped");
                    return;
                }
            };
            let Some(p) = self.proc_mut(generation) else {
                return;
            };
            // A task of its own, not a future of the proxy's context: actix polls every future
            // of a context on each wake-up, and a thousand of them would cost the loop dearly.
            let gate = std::rc::Rc::clone(&p.gate);
            gate.handed();
            let handled = listener.send(FromWorker {
                worker: self.id,
                pid,
                generation,
                msg,
            });
            actix::spawn(async move {
                let _ = handled.await;
                gate.handled();
            });
        }
    }
}
