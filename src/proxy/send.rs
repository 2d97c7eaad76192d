//! Requests and one-way messages from the master to the serving process.

use actix::prelude::*;

use super::actor::*;
use super::pipes::Flush;
use crate::error::CallError;
use crate::protocol::Envelope;
use crate::state::WorkerState;
use crate::worker::WorkerActor;

/// The size of `msg` postcard-encoded, measured once and handed to the encoder.
fn encoded_size<T: serde::Serialize>(msg: &T) -> Result<usize, CallError> {
    crate::codec::value_size(msg).map_err(CallError::Frame)
}

impl<A: WorkerActor> Worker<A> {
    /// Makes sure a [`Flush`] runs while the outbox of process `generation` holds frames.
    pub(crate) fn kick_writer(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !p.stdin.flushing && p.stdin.is_attached() && p.stdin.len() > 0 {
            p.stdin.flushing = true;
            ctx.spawn(Flush::new(generation));
        }
    }

    /// Whether new messages are taken now; the error to give if not.
    pub(crate) fn accepting(&self) -> Result<(), CallError> {
        if self.plain() {
            return Err(CallError::NoChannel { worker: self.id });
        }
        match self.proc.state {
            WorkerState::Spawning
            | WorkerState::Starting
            | WorkerState::Online
            | WorkerState::Ready
            | WorkerState::Backoff => Ok(()),
            WorkerState::Exited | WorkerState::Failed => Err(match &self.last_exit {
                Some(reason) => CallError::WorkerExited {
                    worker: self.id,
                    reason: reason.clone(),
                },
                None => CallError::NotRunning { worker: self.id },
            }),
            _ => Err(CallError::NotRunning { worker: self.id }),
        }
    }

    /// Queues a request to the serving process and returns its correlation id; a failure is
    /// counted.
    pub(crate) fn send_request(
        &mut self,
        msg: &A::Msg,
        ctx: &mut Context<Self>,
    ) -> Result<u64, CallError> {
        let sent = self.queue_request(msg, ctx);
        self.counters.failure(sent)
    }

    fn queue_request(&mut self, msg: &A::Msg, ctx: &mut Context<Self>) -> Result<u64, CallError> {
        self.accepting()?;
        let size = encoded_size(msg)?;
        let id = self.next_id;
        let env = Envelope::Request { id, payload: &[] };
        let bytes = self.proc.stdin.push_value(self.id, &env, msg, size)?;
        self.next_id += 1;
        self.counters.sent(REQUEST, bytes);
        self.counters.requests += 1;
        self.kick_writer(self.proc.generation, ctx);
        Ok(id)
    }

    /// Queues a one-way message; `Ok(true)` when the sender should wait for the outbox to drain.
    /// A failure is counted.
    pub(crate) fn send_tell(
        &mut self,
        msg: &A::Msg,
        ctx: &mut Context<Self>,
    ) -> Result<bool, CallError> {
        let sent = self.queue_tell(msg, ctx);
        self.counters.failure(sent)
    }

    fn queue_tell(&mut self, msg: &A::Msg, ctx: &mut Context<Self>) -> Result<bool, CallError> {
        self.accepting()?;
        let size = encoded_size(msg)?;
        let env = Envelope::Tell { payload: &[] };
        let bytes = self.proc.stdin.push_value(self.id, &env, msg, size)?;
        self.counters.sent(TELL, bytes);
        self.kick_writer(self.proc.generation, ctx);
        Ok(self.proc.stdin.len() > self.proc.stdin.limit() / 16)
    }

    /// Queues one-way messages, all or none; `Ok(true)` when the sender should wait for the
    /// outbox to drain. A failure is counted (once for the batch).
    pub(crate) fn send_tells(
        &mut self,
        msgs: &[A::Msg],
        ctx: &mut Context<Self>,
    ) -> Result<bool, CallError> {
        let sent = self.queue_tells(msgs, ctx);
        self.counters.failure(sent)
    }

    fn queue_tells(&mut self, msgs: &[A::Msg], ctx: &mut Context<Self>) -> Result<bool, CallError> {
        self.accepting()?;
        let sizes = msgs
            .iter()
            .map(encoded_size)
            .collect::<Result<Vec<_>, _>>()?;
        // Each must fit in a frame (with room for its envelope) before any is queued.
        let max = self.proc.stdin.max_frame_bytes().saturating_sub(16);
        if let Some(&len) = sizes.iter().find(|&&len| len > max) {
            return Err(CallError::Frame(crate::error::FrameError::TooLarge {
                len,
                max,
            }));
        }
        self.proc.stdin.check_room(self.id)?;
        let env = Envelope::Tell { payload: &[] };
        let mark = self.proc.stdin.mark();
        let mut bytes = 0;
        for (msg, size) in msgs.iter().zip(&sizes) {
            match self.proc.stdin.push_value_past_limit(&env, msg, *size) {
                Ok(frame) => bytes += frame,
                Err(e) => {
                    // All or none, even for a value whose encoding changed between two passes.
                    self.proc.stdin.truncate(mark);
                    return Err(e);
                }
            }
        }
        self.counters.sent_many(TELL, msgs.len(), bytes);
        self.kick_writer(self.proc.generation, ctx);
        Ok(self.proc.stdin.len() > self.proc.stdin.limit() / 16)
    }
}
