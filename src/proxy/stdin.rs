//! The frames waiting for one process's stdin.
//!
//! The queue is bounded in bytes: past `max_outbox_bytes` a request or message is refused with
//! [`CallError::Backpressure`] rather than queued; control frames (`Shutdown`) always go in. The
//! bytes queued while a burst of messages is handled leave together, in one `write(2)`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use crate::codec::{encode_frame, encode_frame_value, VALUE_FRAME_OVERHEAD};
use crate::error::CallError;
use crate::protocol::Envelope;
use crate::state::WorkerId;

/// A one-way sender waits while the queue holds more than this fraction of its limit
/// (`limit / HELD_TELL_FRACTION`): a fast sender is paced long before it meets backpressure.
pub(crate) const HELD_TELL_FRACTION: usize = 16;

/// Frames waiting for the worker's stdin: appended by handlers, written by the `Flush` future of
/// `pipes`.
///
/// Held in chunks of about [`CHUNK_BYTES`], written with one `writev(2)` of many chunks: a queue
/// that grows to tens of megabytes never copies what it holds to grow (one `Vec` doubling past
/// 32 MiB would hold the event loop for tens of milliseconds).
#[derive(Debug)]
pub(crate) struct StdinQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk written already.
    written: usize,
    /// Bytes not yet written, over every chunk.
    len: usize,
    /// Written chunks of [`CHUNK_BYTES`], kept for the next frames (at most [`SPARE_CHUNKS`]).
    spare: Vec<Vec<u8>>,
    stdin: Option<pipe::Sender>,
    pub(crate) flushing: bool,
    max_frame_bytes: usize,
    limit: usize,
}

/// The size a chunk of the queue is started with; a larger frame gets a chunk of its own size.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes one `writev(2)` takes at most. The kernel holds the pipe's lock while it copies a
/// write in, and the worker's reads wait for it (spinning): in pieces this size the worker
/// copies one piece out while the next goes in (64 KiB messages: 1.3–1.5 → 2.1–2.3 GB/s).
const BYTES_PER_WRITE: usize = 64 * 1024;
/// Chunks one `writev(2)` takes.
const CHUNKS_PER_WRITE: usize = 64;
/// Written chunks kept for reuse: a steady stream allocates nothing.
const SPARE_CHUNKS: usize = 8;

impl StdinQueue {
    pub(crate) fn new(max_frame_bytes: usize, limit: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            written: 0,
            len: 0,
            spare: Vec::new(),
            stdin: None,
            flushing: false,
            max_frame_bytes,
            limit,
        }
    }

    /// Bytes not yet written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds its limit or more: requests and messages are refused, and the master
    /// reads nothing more from the worker until it drains.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.limit
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
        self.chunks = VecDeque::new();
        self.spare = Vec::new();
        self.written = 0;
        self.len = 0;
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.stdin.is_some()
    }

    /// Queues one frame, refusing it when the outbox is over its limit.
    pub(crate) fn push(
        &mut self,
        worker: WorkerId,
        env: &Envelope<'_>,
    ) -> Result<usize, CallError> {
        self.check_room(worker)?;
        self.append(env)
    }

    /// Queues a control frame (`Shutdown`) even past the limit: it must reach the worker.
    pub(crate) fn push_control(&mut self, env: &Envelope<'_>) -> Result<usize, CallError> {
        self.append(env)
    }

    /// Queues one frame whose payload is `value`, encoded straight into the queue (see
    /// [`encode_frame_value`]), refusing it when the outbox is over its limit.
    pub(crate) fn push_value<T: serde::Serialize + ?Sized>(
        &mut self,
        worker: WorkerId,
        empty: &Envelope<'_>,
        value: &T,
        size: usize,
    ) -> Result<usize, CallError> {
        self.check_room(worker)?;
        self.push_value_past_limit(empty, value, size)
    }

    /// [`CallError::Backpressure`] when the outbox holds its limit or more.
    pub(crate) fn check_room(&self, worker: WorkerId) -> Result<(), CallError> {
        let queued = self.len();
        if queued >= self.limit {
            return Err(CallError::Backpressure {
                worker,
                queued,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// As [`push_value`](Self::push_value), whatever the outbox holds: for the rest of a batch
    /// admitted whole.
    pub(crate) fn push_value_past_limit<T: serde::Serialize + ?Sized>(
        &mut self,
        empty: &Envelope<'_>,
        value: &T,
        size: usize,
    ) -> Result<usize, CallError> {
        let max = self.max_frame_bytes;
        // A chunk with this much room takes the frame without growing.
        self.append_with(VALUE_FRAME_OVERHEAD + size, |chunk| {
            encode_frame_value(chunk, empty, value, size, max)
        })
    }

    /// Where the queue ends now, for [`truncate`](Self::truncate).
    pub(crate) fn mark(&self) -> (usize, usize, usize) {
        (
            self.chunks.len(),
            self.chunks.back().map_or(0, Vec::len),
            self.len,
        )
    }

    /// Drops what was queued after `mark` (nothing of it was written: writes happen between
    /// handlers, not during one).
    pub(crate) fn truncate(&mut self, (chunks, last, len): (usize, usize, usize)) {
        while self.chunks.len() > chunks {
            let chunk = self.chunks.pop_back().expect("more than `chunks`");
            self.recycle(chunk);
        }
        if let Some(back) = self.chunks.back_mut() {
            back.truncate(last);
        }
        self.len = len;
    }

    /// The largest frame body the worker takes.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Encodes one frame at the end of the last chunk.
    fn append(&mut self, env: &Envelope<'_>) -> Result<usize, CallError> {
        let max = self.max_frame_bytes;
        self.append_with(env.size_hint() + crate::codec::HEADER_LEN, |chunk| {
            encode_frame(chunk, env, max)
        })
    }

    /// Encodes one frame of about `need` bytes with `encode` at the end of the last chunk, or of
    /// a new one when it would not fit: a chunk never grows by copying what it holds.
    fn append_with(
        &mut self,
        need: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), crate::error::FrameError>,
    ) -> Result<usize, CallError> {
        if self
            .chunks
            .back()
            .is_none_or(|c| c.capacity() - c.len() < need)
        {
            let chunk = match self.spare.pop() {
                Some(chunk) if need <= CHUNK_BYTES => chunk,
                _ => Vec::with_capacity(need.max(CHUNK_BYTES)),
            };
            self.chunks.push_back(chunk);
        }
        let chunk = self.chunks.back_mut().expect("pushed above");
        let before = chunk.len();
        let encoded = encode(chunk).map_err(CallError::Frame);
        let appended = chunk.len() - before;
        self.len += appended;
        if chunk.is_empty() {
            let empty = self.chunks.pop_back().expect("looked at above");
            self.recycle(empty);
        }
        encoded.map(|()| appended)
    }

    /// Keeps a written chunk for reuse, if it is of the usual size and there is room.
    fn recycle(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() == CHUNK_BYTES && self.spare.len() < SPARE_CHUNKS {
            chunk.clear();
            self.spare.push(chunk);
        }
    }

    pub(super) fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let Some(stdin) = self.stdin.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let mut slices = [IoSlice::new(&[]); CHUNKS_PER_WRITE];
            let (mut count, mut bytes) = (0, 0);
            for (i, chunk) in self.chunks.iter().take(CHUNKS_PER_WRITE).enumerate() {
                let from = if i == 0 { self.written } else { 0 };
                let to = chunk.len().min(from + (BYTES_PER_WRITE - bytes));
                slices[i] = IoSlice::new(&chunk[from..to]);
                count += 1;
                bytes += to - from;
                if bytes == BYTES_PER_WRITE {
                    break;
                }
            }
            match Pin::new(stdin).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// `n` more bytes were written: drops the chunks written whole.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while let Some(front) = self.chunks.front() {
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            let done = self.chunks.pop_front().expect("looked at above");
            self.recycle(done);
        }
    }

    /// Whether a one-way sender should wait for the queue to drain before sending more.
    pub(crate) fn over_tell_mark(&self) -> bool {
        self.len() > self.limit / HELD_TELL_FRACTION
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::codec::{decode_envelope, FrameDecoder};

    #[test]
    fn a_truncated_queue_is_what_it_was_at_the_mark() {
        let mut queue = StdinQueue::new(1024 * 1024, 64 * 1024 * 1024);
        for seq in 0..100u64 {
            queue.push_control(&Envelope::Ping { seq }).unwrap();
        }
        let before: Vec<Vec<u8>> = queue.chunks.iter().cloned().collect();
        let mark = queue.mark();
        let big = vec![5u8; 200 * 1024];
        let size = crate::codec::value_size(&big).unwrap();
        for _ in 0..4 {
            queue
                .push_value_past_limit(&Envelope::Tell { payload: &[] }, &big, size)
                .unwrap();
        }
        assert!(queue.chunks.len() > before.len(), "new chunks were started");
        queue.truncate(mark);
        assert_eq!(queue.len(), mark.2);
        assert_eq!(queue.chunks.iter().cloned().collect::<Vec<_>>(), before);
    }

    #[tokio::test]
    async fn frames_across_many_chunks_arrive_whole_and_in_order() {
        let (tx, mut rx) = pipe::pipe().unwrap();
        let mut queue = StdinQueue::new(1024 * 1024, 64 * 1024 * 1024);
        queue.attach(tx);
        let big = vec![9u8; 300 * 1024];
        for seq in 0..2000u64 {
            let payload: &[u8] = if seq % 500 == 7 { &big } else { &[1, 2, 3] };
            queue.push(0, &Envelope::Tell { payload }).unwrap();
            queue.push_control(&Envelope::Ping { seq }).unwrap();
        }
        assert!(queue.chunks.len() > 4, "{} chunks", queue.chunks.len());
        let largest = big.len() + 64 + crate::codec::HEADER_LEN;
        assert!(
            queue
                .chunks
                .iter()
                .all(|c| c.capacity() == CHUNK_BYTES || c.capacity() == largest),
            "no chunk grew by copying"
        );
        let total = queue.len();
        let reader = tokio::spawn(async move {
            let mut bytes = Vec::new();
            rx.read_to_end(&mut bytes).await.unwrap();
            bytes
        });
        std::future::poll_fn(|cx| queue.poll_flush(cx))
            .await
            .unwrap();
        assert_eq!(queue.len(), 0);
        queue.detach();
        let bytes = reader.await.unwrap();
        assert_eq!(bytes.len(), total);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let decoder = FrameDecoder::new(1024 * 1024);
        for seq in 0..2000u64 {
            let tell = decoder.decode(&mut buf).unwrap().unwrap();
            let Envelope::Tell { payload } = decode_envelope(&tell).unwrap() else {
                panic!("a Tell first")
            };
            assert_eq!(payload.len(), if seq % 500 == 7 { big.len() } else { 3 });
            let ping = decoder.decode(&mut buf).unwrap().unwrap();
            assert!(
                matches!(decode_envelope(&ping).unwrap(), Envelope::Ping { seq: s } if s == seq)
            );
        }
        assert!(buf.is_empty());
    }
}
