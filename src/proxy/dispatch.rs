//! Frames from a worker, read top to bottom: decode the envelope, let the process's state
//! machine admit it ([`Proc::admit`](super::generation::Proc::admit)), then act on it by family
//! — lifecycle, answers to requests, or what the worker sends to others and to the master.

use std::time::Duration;

use actix::prelude::*;

use super::actor::Worker;
use super::generation::Admitted;
use super::links::FromWorker;
use crate::codec::{decode_envelope, decode_value};
use crate::error::{CallError, ProtocolError};
use crate::event::WorkerEventKind;
use crate::logger::{Fields, Record};
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
        self.counters.received[envelope.index()] += 1;
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
                let waiter = p
                    .in_flight
                    .take(id)
                    .ok_or(ProtocolError::UnknownReply { id })?;
                waiter.reply(payload, |bytes| {
                    decode_value(bytes).map_err(|e| CallError::BadReply(e.to_string()))
                });
            }
            Envelope::Failed { id, error } => {
                let waiter = p
                    .in_flight
                    .take(id)
                    .ok_or(ProtocolError::UnknownReply { id })?;
                self.counters.errors += 1;
                waiter.failed(error);
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
            Envelope::ReloadRequest => {
                self.emit(generation, Some(pid), WorkerEventKind::ReloadRequested)
            }
            _ => {}
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
        let fields = match serde_json::from_str(fields) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                let mut map = serde_json::Map::new();
                map.insert("raw".into(), fields.into());
                map
            }
        };
        let time = std::time::UNIX_EPOCH + Duration::from_nanos(time_ns);
        let source = self.source(generation, pid);
        let record = Record::new(source, kind, Fields(fields)).at(time);
        self.links.log.send_always(record);
    }

    /// A one-way message to the master's handlers.
    pub(super) fn deliver_event(&self, generation: u64, pid: u32, payload: &[u8]) {
        for listener in self.links.handlers.listeners.iter() {
            match decode_value::<A::Event>(payload) {
                Ok(msg) => listener.do_send(FromWorker {
                    worker: self.id,
                    pid,
                    generation,
                    msg,
                }),
                Err(e) => {
                    tracing::warn!(worker = self.id, pid, error = %e, "event from worker did not decode; dropped");
                    return;
                }
            }
        }
    }
}
