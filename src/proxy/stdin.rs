//! The frames waiting for one process's stdin.
//!
//! The queue is bounded in bytes: past `max_outbox_bytes` a request or message is refused with
//! [`CallError::Backpressure`] rather than queued; control frames (`Shutdown`) always go in. The
//! bytes queued while a burst of messages is handled leave together, in one `write(2)`.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use crate::codec::encode_frame;
use crate::error::CallError;
use crate::protocol::Envelope;
use crate::state::WorkerId;

/// A one-way sender waits while the queue holds more than this fraction of its limit
/// (`limit / HELD_TELL_FRACTION`): a fast sender is paced long before it meets backpressure.
pub(crate) const HELD_TELL_FRACTION: usize = 16;

/// Frames waiting for the worker's stdin: appended by handlers, written by the `Flush` future of `pipes`.
#[derive(Debug)]
pub(crate) struct StdinQueue {
    queued: Vec<u8>,
    writing: Vec<u8>,
    written: usize,
    stdin: Option<pipe::Sender>,
    pub(crate) flushing: bool,
    max_frame_bytes: usize,
    limit: usize,
}

impl StdinQueue {
    pub(crate) fn new(max_frame_bytes: usize, limit: usize) -> Self {
        Self {
            queued: Vec::new(),
            writing: Vec::new(),
            written: 0,
            stdin: None,
            flushing: false,
            max_frame_bytes,
            limit,
        }
    }

    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.queued.len() + self.writing.len() - self.written
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn attach(&mut self, stdin: pipe::Sender) {
        self.stdin = Some(stdin);
    }

    /// Drops the pipe and everything queued for it.
    pub(crate) fn detach(&mut self) {
        self.stdin = None;
        self.queued = Vec::new();
        self.writing = Vec::new();
        self.written = 0;
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.stdin.is_some()
    }

    /// Queues one frame, refusing it when the outbox is over its limit.
    pub(crate) fn push(&mut self, worker: WorkerId, env: &Envelope<'_>) -> Result<(), CallError> {
        let queued = self.len();
        if queued >= self.limit {
            return Err(CallError::Backpressure {
                worker,
                queued,
                limit: self.limit,
            });
        }
        encode_frame(&mut self.queued, env, self.max_frame_bytes).map_err(CallError::Frame)
    }

    /// Queues a control frame (`Shutdown`) even past the limit: it must reach the worker.
    pub(crate) fn push_control(&mut self, env: &Envelope<'_>) -> Result<(), CallError> {
        encode_frame(&mut self.queued, env, self.max_frame_bytes).map_err(CallError::Frame)
    }

    pub(super) fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.written == self.writing.len() {
                self.writing.clear();
                self.written = 0;
                if self.queued.is_empty() {
                    if self.writing.capacity() > 4 * 1024 * 1024 {
                        self.writing = Vec::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                std::mem::swap(&mut self.queued, &mut self.writing);
            }
            let Some(stdin) = self.stdin.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(stdin).poll_write(cx, &self.writing[self.written..]) {
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Whether a one-way sender should wait for the queue to drain before sending more.
    pub(crate) fn over_tell_mark(&self) -> bool {
        self.len() > self.limit / HELD_TELL_FRACTION
    }
}
