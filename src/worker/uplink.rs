//! The worker's channel up to the master: frames are appended to one [`Uplink`] by everything
//! in the worker that writes (replies, events, requests, log records, pongs), and one writer
//! sends them, many per `write(2)`.
//!
//! The writer is polled by the worker's run loop after the handlers in every pass
//! ([`runtime`](super::runtime)), so a reply written by a handler leaves in the same pass as the
//! request that caused it, with no wake-up between. A frame pushed from outside a pass (a task
//! the worker spawned) wakes the run loop.
//!
//! # Caveats
//! The uplink is not bounded in bytes: a worker that writes faster than the master reads grows
//! its own memory, not the master's (the master pauses reading from it instead).

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use crate::codec::{encode_frame, encode_frame_value, encode_value, value_size};
use crate::error::FrameError;
use crate::protocol::Envelope;

/// Frames waiting to be written to the master, shared by everything in the worker that writes.
#[derive(Debug)]
pub(crate) struct Uplink {
    buf: RefCell<Vec<u8>>,
    /// Set once the pipe is closed (or the worker is ending): frames are refused.
    pub(crate) broken: Cell<bool>,
    /// Frames pushed so far: the run loop goes round again while it grows.
    pushed: Cell<u64>,
    /// Whether the run loop is in a pass (it polls the writer before it sleeps).
    in_pass: Cell<bool>,
    /// The run loop's waker, for a frame pushed outside a pass.
    waker: RefCell<Option<Waker>>,
    max_frame_bytes: usize,
}

impl Uplink {
    pub(crate) fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            broken: Cell::new(false),
            pushed: Cell::new(0),
            in_pass: Cell::new(false),
            waker: RefCell::new(None),
            max_frame_bytes,
        }
    }

    pub(crate) fn push(&self, envelope: &Envelope<'_>) -> Result<(), FrameError> {
        self.open()?;
        encode_frame(&mut self.buf.borrow_mut(), envelope, self.max_frame_bytes)?;
        self.pushed();
        Ok(())
    }

    /// Pushes `envelope` (given with an empty payload, its last field) with `value` encoded
    /// straight into the uplink as its payload.
    pub(crate) fn push_value<T: serde::Serialize + ?Sized>(
        &self,
        envelope: &Envelope<'_>,
        value: &T,
    ) -> Result<(), FrameError> {
        self.open()?;
        // The buffer is taken out while the value encodes: its `Serialize` is the user's code,
        // which may log, and a log record is pushed here too.
        let size = value_size(value)?;
        let mut buf = std::mem::take(&mut *self.buf.borrow_mut());
        let encoded = encode_frame_value(&mut buf, envelope, value, size, self.max_frame_bytes);
        {
            let mut cell = self.buf.borrow_mut();
            // What was pushed meanwhile follows this frame.
            buf.extend_from_slice(&cell);
            *cell = buf;
        }
        encoded?;
        self.pushed();
        Ok(())
    }

    pub(crate) fn push_event<T: serde::Serialize>(
        &self,
        scratch: &mut Vec<u8>,
        event: &T,
    ) -> Result<(), FrameError> {
        encode_value(scratch, event)?;
        self.push(&Envelope::Event { payload: scratch })
    }

    fn open(&self) -> Result<(), FrameError> {
        if self.broken.get() {
            return Err(FrameError::Io("the channel to the master is closed".into()));
        }
        Ok(())
    }

    fn pushed(&self) {
        self.pushed.set(self.pushed.get() + 1);
        if !self.in_pass.get() {
            self.wake();
        }
    }

    /// Wakes the run loop (to write, or to end).
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Frames pushed so far.
    pub(crate) fn count(&self) -> u64 {
        self.pushed.get()
    }

    /// A pass of the run loop begins (`Some`, with its waker) or ends (`None`).
    pub(crate) fn pass(&self, waker: Option<&Waker>) {
        if let Some(waker) = waker {
            let mut slot = self.waker.borrow_mut();
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        self.in_pass.set(waker.is_some());
    }
}

/// Bytes one `write(2)` takes at most: the kernel holds the pipe's lock while it copies a write
/// in, and the master's reads wait for it; in pieces, one is read out while the next goes in.
const BYTES_PER_WRITE: usize = 64 * 1024;

/// Writes what is pushed to the [`Uplink`], many frames per `write(2)`.
#[derive(Debug)]
pub(crate) struct Writer {
    pipe: pipe::Sender,
    /// Bytes taken from the uplink, being written.
    spare: Vec<u8>,
    written: usize,
}

impl Writer {
    pub(crate) fn new(pipe: pipe::Sender) -> Self {
        Self {
            pipe,
            spare: Vec::with_capacity(64 * 1024),
            written: 0,
        }
    }

    /// Writes until the uplink is empty (`Pending`) or the pipe is full (`Pending`, woken when
    /// it has room); `Ready` once the master is gone, or the uplink is broken and all is
    /// written.
    pub(crate) fn poll(&mut self, outbox: &Uplink, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.written == self.spare.len() {
                self.spare.clear();
                self.written = 0;
                if self.spare.capacity() > 8 * 1024 * 1024 {
                    self.spare = Vec::with_capacity(64 * 1024);
                }
                std::mem::swap(&mut *outbox.buf.borrow_mut(), &mut self.spare);
                if self.spare.is_empty() {
                    return if outbox.broken.get() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    };
                }
            }
            let end = self.spare.len().min(self.written + BYTES_PER_WRITE);
            match Pin::new(&mut self.pipe).poll_write(cx, &self.spare[self.written..end]) {
                Poll::Ready(Ok(n)) if n > 0 => self.written += n,
                Poll::Ready(_) => {
                    // The master is gone.
                    outbox.broken.set(true);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
