//! The worker's side of the channel down from the master: the [`Reader`] decodes frames, answers
//! pings and the master's answers to this worker's asks itself, and hands requests and one-way
//! messages to the handler loop through the [`Inbox`], a queue bounded in bytes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use tokio::net::unix::pipe;

use crate::codec::{decode_envelope, decode_value, FrameDecoder, HEADER_LEN};
use crate::error::{FrameError, ProtocolError};
use crate::messaging::{Peer, Via};
use crate::protocol::Envelope;
use crate::worker::asks::Asks;
use crate::worker::uplink::Uplink;

/// Payload bytes that may wait for the handler loop. Past it the reader stops reading, the pipe
/// fills, and the master's outbox for this worker applies backpressure. Below it the reader keeps
/// reading while a handler is busy, so heartbeats are answered.
const INBOX_BYTES: usize = 16 * 1024 * 1024;

/// What the reader hands to the handler loop: requests and one-way messages decoded already.
pub(crate) enum Inbound<M> {
    Request {
        id: u64,
        from: Peer,
        msg: M,
    },
    Tell {
        from: Peer,
        via: Via,
        msg: M,
    },
    /// A request whose payload did not decode: answered `Failed`, in its turn.
    Undecodable {
        id: u64,
        error: String,
    },
    /// Stop gracefully, then exit with this status.
    Shutdown(i32),
}

/// Requests and one-way messages read but not yet handled, in order, with their payload bytes.
///
/// Filled by the [`Reader`] and emptied by the handler loop, both polled by the run loop in the
/// same pass: neither wakes the other (the run loop goes round again while
/// [`moved`](Self::moved) changes).
pub(crate) struct Inbox<M> {
    /// Each item with the bytes its payload took on the wire.
    items: RefCell<VecDeque<(usize, Inbound<M>)>>,
    bytes: Cell<usize>,
    moved: Cell<u64>,
    /// The reader has ended: once empty, there is nothing more.
    closed: Cell<bool>,
}

impl<M> Default for Inbox<M> {
    fn default() -> Self {
        Self {
            items: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            moved: Cell::new(0),
            closed: Cell::new(false),
        }
    }
}

impl<M> Inbox<M> {
    fn put(&self, len: usize, item: Inbound<M>) {
        // Charged for its frame and its place in the queue as well as its payload: a message
        // of no bytes on the wire still takes room.
        let len = HEADER_LEN + len + std::mem::size_of::<(usize, Inbound<M>)>();
        self.bytes.set(self.bytes.get() + len);
        self.items.borrow_mut().push_back((len, item));
        self.moved.set(self.moved.get() + 1);
    }

    /// The next item; `Ready(None)` once the reader has ended and all is taken. `Pending`
    /// registers no waker: the run loop polls the handler loop again whenever an item arrives.
    pub(crate) fn poll_take(&self) -> Poll<Option<Inbound<M>>> {
        let Some((len, item)) = self.items.borrow_mut().pop_front() else {
            return if self.closed.get() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        };
        self.bytes.set(self.bytes.get() - len);
        self.moved.set(self.moved.get() + 1);
        Poll::Ready(Some(item))
    }

    /// The next item, or `None` once the reader has ended and all is taken.
    pub(crate) async fn take(&self) -> Option<Inbound<M>> {
        std::future::poll_fn(|_| self.poll_take()).await
    }

    /// Lets go of a burst's queue once it is handled: called when the worker goes idle (doing
    /// it each time the queue empties under load cost a third of the one-way rate).
    pub(crate) fn trim(&self) {
        let mut items = self.items.borrow_mut();
        if items.is_empty() && items.capacity() > 4096 {
            items.shrink_to(1024);
        }
    }

    /// Counts as movement without an item: the run loop goes round again.
    fn stir(&self) {
        self.moved.set(self.moved.get() + 1);
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
    pub(crate) fn poll<M: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
        inbox: &Inbox<M>,
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

    fn poll_frames<M: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
        inbox: &Inbox<M>,
        outbox: &Uplink,
        asks: &Asks,
    ) -> Poll<Result<(), ProtocolError>> {
        let mut read = false;
        loop {
            if inbox.full() {
                return Poll::Pending;
            }
            let before = inbox.moved();
            while let Some(len) = self.decoder.next_len(&mut self.buf)? {
                let body = &self.buf[HEADER_LEN..HEADER_LEN + len];
                match inbound(body, outbox, asks)? {
                    Taken::Item(bytes, item) => inbox.put(bytes, item),
                    Taken::Done => {}
                    Taken::AskReply(id, range) => {
                        // The payload is handed over as it is, without a copy.
                        self.buf.advance(HEADER_LEN);
                        let frame = self.buf.split_to(len).freeze();
                        asks.answer(id, Ok(frame.slice(range)));
                        continue;
                    }
                }
                self.buf.advance(HEADER_LEN + len);
                if inbox.full() {
                    break;
                }
            }
            if inbox.moved() != before {
                // The handler loop takes these first; the run loop comes back for more.
                return Poll::Pending;
            }
            if read {
                // A read that gave the handler loop nothing (pings, credits, answers): the
                // others go first too (pongs to write), then the run loop comes back for more.
                inbox.stir();
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
                Poll::Ready(Ok(_)) => read = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(FrameError::from(e).into())),
            }
        }
    }
}

/// What became of one frame from the master.
enum Taken<M> {
    /// A request or one-way message for the handler loop, with its payload's size.
    Item(usize, Inbound<M>),
    /// The answer to an ask: its payload's place in the frame body.
    AskReply(u64, std::ops::Range<usize>),
    /// Dealt with here (a ping, a credit, a cache event, a request that did not decode).
    Done,
}

/// What one frame body from the master asks of this worker: an item for the handler loop, or
/// nothing more (a ping, an answer to one of its asks, a cache event: dealt with here).
fn inbound<M: DeserializeOwned>(
    body: &[u8],
    outbox: &Uplink,
    asks: &Asks,
) -> Result<Taken<M>, ProtocolError> {
    let (id, from, via, payload) = match decode_envelope(body)? {
        Envelope::Request { id, payload } => (Some(id), Peer::Master, Via::Direct, payload),
        Envelope::Tell { payload } => (None, Peer::Master, Via::Direct, payload),
        Envelope::PeerRequest { id, from, payload } => (Some(id), from, Via::Direct, payload),
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
            (None, from, via, payload)
        }
        Envelope::AskReply { id, payload } => {
            let start = payload.as_ptr() as usize - body.as_ptr() as usize;
            return Ok(Taken::AskReply(id, start..start + payload.len()));
        }
        Envelope::AskFailed { id, error } => {
            asks.answer(id, Err(error));
            return Ok(Taken::Done);
        }
        Envelope::Notify { payload } => {
            match decode_value(payload) {
                Ok(event) => asks.notify(event),
                Err(e) => tracing::warn!(error = %e, "cache event did not decode"),
            }
            return Ok(Taken::Done);
        }
        Envelope::Credit { worker, count } => {
            asks.windows.credit(worker, count);
            return Ok(Taken::Done);
        }
        Envelope::Shutdown => return Ok(Taken::Item(0, Inbound::Shutdown(0))),
        Envelope::ShutdownWith { status } => return Ok(Taken::Item(0, Inbound::Shutdown(status))),
        Envelope::Ping { seq } => {
            // Answered here, not by the handler loop: a worker awaiting a long
            // handler is busy, not hung.
            let _ = outbox.push(&Envelope::Pong { seq });
            return Ok(Taken::Done);
        }
        other => {
            return Err(ProtocolError::unexpected(
                other.kind(),
                "reading from the master",
            ))
        }
    };
    // The message is decoded here, from the read buffer, so nothing of the frame is kept.
    let len = payload.len();
    Ok(match (decode_value::<M>(payload), id) {
        (Ok(msg), Some(id)) => Taken::Item(len, Inbound::Request { id, from, msg }),
        (Ok(msg), None) => Taken::Item(len, Inbound::Tell { from, via, msg }),
        (Err(e), Some(id)) => Taken::Item(
            len,
            Inbound::Undecodable {
                id,
                error: format!("request did not decode: {e}"),
            },
        ),
        (Err(e), None) => {
            tracing::warn!(?from, error = %e, "one-way message did not decode");
            Taken::Done
        }
    })
}
