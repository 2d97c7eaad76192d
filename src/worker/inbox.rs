//! The worker's side of the channel down from the master: the reader decodes frames, answers
//! pings and the master's answers to this worker's asks itself, and hands requests and one-way
//! messages to the handler loop through a queue bounded in bytes.

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, Notify};

use crate::codec::{decode_envelope, decode_value, FrameDecoder};
use crate::error::{FrameError, ProtocolError};
use crate::messaging::{Peer, Via};
use crate::protocol::Envelope;
use crate::worker::asks::Asks;
use crate::worker::uplink::Uplink;

/// Payload bytes that may wait for the handler loop. Past it the reader stops reading, the pipe
/// fills, and the master's outbox for this worker applies backpressure. Below it the reader keeps
/// reading while a handler is busy, so heartbeats are answered.
const INBOX_BYTES: usize = 16 * 1024 * 1024;

/// What the reader hands to the handler loop.
pub(crate) enum Inbound {
    Request {
        id: u64,
        from: Peer,
        payload: Bytes,
    },
    Tell {
        from: Peer,
        via: Via,
        payload: Bytes,
    },
    /// Stop gracefully, then exit with this status.
    Shutdown(i32),
}

impl Inbound {
    fn len(&self) -> usize {
        match self {
            Inbound::Request { payload, .. } | Inbound::Tell { payload, .. } => payload.len(),
            Inbound::Shutdown(_) => 0,
        }
    }
}

/// Bytes queued between the reader and the handler loop, and a wake-up for the reader.
#[derive(Default)]
pub(crate) struct InboxRoom {
    queued: Cell<usize>,
    freed: Notify,
}

impl InboxRoom {
    pub(crate) fn taken(&self, item: &Inbound) {
        self.queued.set(self.queued.get() - item.len());
        if self.queued.get() <= INBOX_BYTES {
            self.freed.notify_one();
        }
    }

    fn put(&self, item: &Inbound) {
        self.queued.set(self.queued.get() + item.len());
    }

    /// Waits until the handler loop has caught up (the item just sent counts too, so a single
    /// item larger than the limit cannot wedge the reader).
    async fn room(&self) {
        while self.queued.get() > INBOX_BYTES {
            self.freed.notified().await;
        }
    }
}

pub(crate) async fn read_loop(
    mut pipe: pipe::Receiver,
    decoder: FrameDecoder,
    (tx, room): (mpsc::UnboundedSender<Inbound>, Rc<InboxRoom>),
    outbox: Rc<Uplink>,
    asks: Rc<Asks>,
) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let result = async {
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                let frame = frame.freeze();
                let Some(inbound) = inbound(&frame, &outbox, &asks)? else {
                    continue;
                };
                room.put(&inbound);
                if tx.send(inbound).is_err() {
                    return Ok(());
                }
                room.room().await;
            }
            if buf.capacity() - buf.len() < 64 * 1024 {
                buf.reserve(256 * 1024);
            }
            if pipe.read_buf(&mut buf).await.map_err(FrameError::from)? == 0 {
                decoder.decode_eof(&buf)?;
                return Ok(());
            }
        }
    }
    .await;
    asks.close_all();
    if let Err(e) = &result {
        tracing::error!(error = %e, "the master's stream is corrupt; exiting");
        eprintln!("procactor worker: the master's stream is corrupt: {e}");
    }
    // End-of-file or a corrupt stream: either way the worker exits now.
    result
}

/// What one frame from the master asks of this worker: an item for the handler loop, or
/// nothing more (a ping, an answer to one of its asks, a cache event: dealt with here).
fn inbound(frame: &Bytes, outbox: &Uplink, asks: &Asks) -> Result<Option<Inbound>, ProtocolError> {
    let inbound = match decode_envelope(frame)? {
        Envelope::Request { id, payload } => Inbound::Request {
            id,
            from: Peer::Master,
            payload: frame.slice_ref(payload),
        },
        Envelope::Tell { payload } => Inbound::Tell {
            from: Peer::Master,
            via: Via::Direct,
            payload: frame.slice_ref(payload),
        },
        Envelope::PeerRequest { id, from, payload } => Inbound::Request {
            id,
            from,
            payload: frame.slice_ref(payload),
        },
        Envelope::Deliver {
            from,
            via,
            ack,
            payload,
        } => {
            if let Some(id) = ack {
                // Received: that is what the sender waits to hear.
                let _ = outbox.push(&Envelope::Reply { id, payload: &[] });
            }
            Inbound::Tell {
                from,
                via,
                payload: frame.slice_ref(payload),
            }
        }
        Envelope::AskReply { id, payload } => {
            asks.answer(id, Ok(frame.slice_ref(payload)));
            return Ok(None);
        }
        Envelope::AskFailed { id, error } => {
            asks.answer(id, Err(error));
            return Ok(None);
        }
        Envelope::Notify { payload } => {
            match decode_value(payload) {
                Ok(event) => asks.notify(event),
                Err(e) => tracing::warn!(error = %e, "cache event did not decode"),
            }
            return Ok(None);
        }
        Envelope::Credit { worker, count } => {
            asks.windows.credit(worker, count);
            return Ok(None);
        }
        Envelope::Shutdown => Inbound::Shutdown(0),
        Envelope::ShutdownWith { status } => Inbound::Shutdown(status),
        Envelope::Ping { seq } => {
            // Answered here, not by the handler loop: a worker awaiting a long
            // handler is busy, not hung.
            let _ = outbox.push(&Envelope::Pong { seq });
            return Ok(None);
        }
        other => {
            return Err(ProtocolError::unexpected(
                other.kind(),
                "reading from the master",
            ))
        }
    };
    Ok(Some(inbound))
}
