//! The worker's side of the channel down from the master: the [`Reader`] decodes frames, answers
//! pings and the master's answers to this worker's asks itself, and hands requests and one-way
//! messages to the handler loop through the [`Inbox`], a queue bounded in bytes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::net::unix::pipe;

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

/// Requests and one-way messages read but not yet handled, in order, with their payload bytes.
///
/// Filled by the [`Reader`] and emptied by the handler loop, both polled by the run loop in the
/// same pass: neither wakes the other (the run loop goes round again while
/// [`moved`](Self::moved) changes).
#[derive(Default)]
pub(crate) struct Inbox {
    items: RefCell<VecDeque<Inbound>>,
    bytes: Cell<usize>,
    moved: Cell<u64>,
    /// The reader has ended: once empty, there is nothing more.
    closed: Cell<bool>,
}

impl Inbox {
    fn put(&self, item: Inbound) {
        self.bytes.set(self.bytes.get() + item.len());
        self.items.borrow_mut().push_back(item);
        self.moved.set(self.moved.get() + 1);
    }

    /// The next item; `Ready(None)` once the reader has ended and all is taken. `Pending`
    /// registers no waker: the run loop polls the handler loop again whenever an item arrives.
    pub(crate) fn poll_take(&self) -> Poll<Option<Inbound>> {
        let Some(item) = self.items.borrow_mut().pop_front() else {
            return if self.closed.get() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        };
        self.bytes.set(self.bytes.get() - item.len());
        self.moved.set(self.moved.get() + 1);
        Poll::Ready(Some(item))
    }

    /// The next item, or `None` once the reader has ended and all is taken.
    pub(crate) async fn take(&self) -> Option<Inbound> {
        std::future::poll_fn(|_| self.poll_take()).await
    }

    /// Items put or taken so far.
    pub(crate) fn moved(&self) -> u64 {
        self.moved.get()
    }

    /// Whether the reader should wait for the handler loop to catch up (the item just put
    /// counts too, so a single item larger than the limit cannot wedge the reader).
    fn full(&self) -> bool {
        self.bytes.get() > INBOX_BYTES
    }
}

/// Reads frames from the master: answers pings, the master's answers to this worker's asks,
/// credits and cache events at once, and puts requests and one-way messages in the [`Inbox`].
pub(crate) struct Reader {
    pipe: pipe::Receiver,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// Bytes one read asks for; the buffer is reused once the frames read into it are handled.
const READ_BYTES: usize = 256 * 1024;

impl Reader {
    pub(crate) fn new(pipe: pipe::Receiver, decoder: FrameDecoder) -> Self {
        Self {
            pipe,
            buf: BytesMut::with_capacity(READ_BYTES),
            decoder,
        }
    }

    /// Handles the frames read so far, then reads once more. `Pending` when the pipe is empty
    /// (woken when it is not) or the inbox is full (the run loop polls again once the handler
    /// loop takes from it); `Ready` when the stream ends or breaks.
    ///
    /// Returns (`Pending`) as soon as it has put items in the inbox, before reading again: the
    /// run loop, which goes round while the inbox moves, lets the handler loop take them first,
    /// so the buffer is handed back (and reused, with no allocation) before the next read.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        inbox: &Inbox,
        outbox: &Uplink,
        asks: &Asks,
    ) -> Poll<Result<(), ProtocolError>> {
        let result = self.poll_frames(cx, inbox, outbox, asks);
        if result.is_ready() {
            inbox.closed.set(true);
            asks.close_all();
        }
        if let Poll::Ready(Err(e)) = &result {
            tracing::error!(error = %e, "the master's stream is corrupt; exiting");
            eprintln!("procactor worker: the master's stream is corrupt: {e}");
        }
        result
    }

    fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        inbox: &Inbox,
        outbox: &Uplink,
        asks: &Asks,
    ) -> Poll<Result<(), ProtocolError>> {
        loop {
            if inbox.full() {
                return Poll::Pending;
            }
            let before = inbox.moved();
            while let Some(frame) = self.decoder.decode(&mut self.buf)? {
                let frame = frame.freeze();
                if let Some(item) = inbound(&frame, outbox, asks)? {
                    inbox.put(item);
                    if inbox.full() {
                        break;
                    }
                }
            }
            if inbox.moved() != before {
                // The handler loop takes these first; the run loop comes back for more.
                return Poll::Pending;
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(READ_BYTES);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.pipe), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.decoder.decode_eof(&self.buf)?;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FrameError::from(e).into())),
            }
        }
    }
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
