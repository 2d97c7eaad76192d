//! The proxy's pipe futures: the stdin writer, the frame reader and the line reader (stderr,
//! and a plain program's stdout).
//!
//! Both pipe futures run inside the proxy's own actix context, so they touch the actor's state
//! directly, with no channel between them. actix polls context futures after the mailbox is
//! drained, so every frame queued while a burst of messages is handled leaves in one `write(2)`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::ActorFuture;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::actor::Worker;
use super::gate::Pause;
use crate::codec::{FrameDecoder, HEADER_LEN};
use crate::logger::{LogLink, Record, Source, Stream};
use crate::worker::WorkerActor;

/// Longest stderr line kept whole; the rest of a longer line is dropped and counted.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines of stderr kept for the exit event.
pub(crate) const STDERR_TAIL_LINES: usize = 20;
/// Frames (and reads) one poll of the frame reader handles before it yields the event loop.
pub(crate) const FRAMES_PER_POLL: usize = 1024;
/// Time one poll of the frame reader may take before it yields the event loop (looked at every
/// 8 frames).
pub(crate) const TIME_PER_POLL: Duration = Duration::from_millis(1);
/// Bytes one poll of the frame reader consumes before it yields the event loop.
pub(crate) const BYTES_PER_POLL: usize = 1024 * 1024;

/// Writes the outbox of one process to its stdin until it is empty.
#[derive(Debug)]
pub(crate) struct Flush {
    generation: u64,
}

impl Flush {
    pub(crate) fn new(generation: u64) -> Self {
        Self { generation }
    }
}

impl<A: WorkerActor> ActorFuture<Worker<A>> for Flush {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Worker<A>,
        _ctx: &mut actix::Context<Worker<A>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let span = act.span(self.generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let id = act.id;
        let Some(p) = act.proc_mut(self.generation) else {
            return Poll::Ready(());
        };
        let result = p.stdin.poll_flush(cx);
        p.release_held_tells();
        let done = match result {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    // The worker closed its stdin or died; its exit is reported separately.
                    tracing::debug!(worker = id, error = %e, "write to worker failed");
                    p.stdin.detach();
                }
                p.stdin.flushing = false;
                Poll::Ready(())
            }
        };
        if p.gate.paused() == Some(Pause::Outbox) && !p.stdin.is_full() {
            p.gate.wake();
        }
        // After a burst of one-way messages, one credit per sender.
        act.pay_credits(self.generation, false);
        done
    }
}

/// Reads frames from one process's stdout and hands them to the proxy.
///
/// A poll handles at most [`FRAMES_PER_POLL`] frames or [`BYTES_PER_POLL`] bytes, then yields:
/// a worker flooding tiny frames holds the master's event loop for well under a millisecond at
/// a time. Before each frame the process's [`Gate`](super::gate::Gate) may pause the reader
/// (see there); it is woken when the pause ends.
#[derive(Debug)]
pub(crate) struct ReadFrames {
    generation: u64,
    pipe: pipe::Receiver,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl ReadFrames {
    pub(crate) fn new(generation: u64, pipe: pipe::Receiver, max_frame_bytes: usize) -> Self {
        Self {
            generation,
            pipe,
            buf: BytesMut::with_capacity(256 * 1024),
            decoder: FrameDecoder::new(max_frame_bytes),
        }
    }
}

/// What one step of the reader came to.
enum Step {
    /// Go on (a frame handled, or bytes read).
    More,
    /// The process is gone or its stream ended: the reader is done.
    Done,
    /// Wait to be woken.
    Wait,
}

impl<A: WorkerActor> ActorFuture<Worker<A>> for ReadFrames {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Worker<A>,
        ctx: &mut actix::Context<Worker<A>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let span = act.span(this.generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        let (mut frames, mut bytes) = (0, 0);
        let started = Instant::now();
        while frames < FRAMES_PER_POLL
            && bytes < BYTES_PER_POLL
            && (frames % 8 != 7 || started.elapsed() < TIME_PER_POLL)
        {
            let before = this.buf.len();
            let step = match this.next_frame(act, ctx, cx) {
                Some(step) => step,
                None => this.read(act, ctx, cx),
            };
            match step {
                Step::More => {
                    frames += 1;
                    bytes += before.abs_diff(this.buf.len());
                }
                Step::Done => return Poll::Ready(()),
                Step::Wait => return Poll::Pending,
            }
        }
        // Over budget: let the other workers' proxies run, and the runtime poll for I/O, then go
        // on. A plain `wake_by_ref` would put this task straight back in the run queue, and the
        // runtime looks at I/O only every so many tasks: every other pipe would wait for it.
        // `yield_now` defers the wake-up until the runtime has polled the I/O driver.
        let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        Poll::Pending
    }
}

impl ReadFrames {
    /// Handles the next whole frame in the buffer, if there is one and the gate is open.
    fn next_frame<A: WorkerActor>(
        &mut self,
        act: &mut Worker<A>,
        ctx: &mut actix::Context<Worker<A>>,
        cx: &mut TaskContext<'_>,
    ) -> Option<Step> {
        let generation = self.generation;
        let log_full = act.links.log.queue.full_for(act.id);
        let Some(p) = act.proc_mut(generation) else {
            return Some(Step::Done);
        };
        if let Some(pause) = p.gate.check(p.stdin.is_full(), log_full) {
            p.gate.wait(pause, cx.waker());
            if pause == Pause::Log {
                act.links.log.queue.wait(cx.waker());
            }
            return Some(Step::Wait);
        }
        p.gate.resumed();
        match self.decoder.next_len(&mut self.buf) {
            Ok(Some(len)) => {
                // Decoded in place: the frame is borrowed from the read buffer, then skipped.
                let body = &self.buf[HEADER_LEN..HEADER_LEN + len];
                if let Err(e) = act.on_frame(generation, body, ctx) {
                    act.fault(generation, e.into(), ctx);
                    act.stdout_closed(generation);
                    return Some(Step::Done);
                }
                self.buf.advance(HEADER_LEN + len);
                Some(Step::More)
            }
            Ok(None) => None,
            Err(e) => {
                act.fault(generation, e.into(), ctx);
                act.stdout_closed(generation);
                Some(Step::Done)
            }
        }
    }

    /// Reads more bytes from the pipe.
    fn read<A: WorkerActor>(
        &mut self,
        act: &mut Worker<A>,
        ctx: &mut actix::Context<Worker<A>>,
        cx: &mut TaskContext<'_>,
    ) -> Step {
        let generation = self.generation;
        if self.buf.capacity() - self.buf.len() < 64 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.pipe), cx, &mut self.buf) {
            Poll::Pending => Step::Wait,
            Poll::Ready(Ok(n)) if n > 0 => Step::More,
            Poll::Ready(result) => {
                // End of stream (or a read error, which ends it too).
                if let Err(e) = self.decoder.decode_eof(&self.buf) {
                    act.fault(generation, e.into(), ctx);
                } else if let Err(e) = result {
                    tracing::debug!(worker = act.id, error = %e, "read from worker failed");
                }
                act.stdout_closed(generation);
                Step::Done
            }
        }
    }
}

/// Reads a process's stderr (or a plain program's stdout) line by line into the log and the
/// tail kept for its exit event.
///
/// Lines are split on `\n`, decoded lossily (non-UTF-8 bytes become U+FFFD) and capped at
/// [`MAX_LINE_BYTES`]; the rest of a longer line is dropped.
///
/// Each line becomes an `output` record for the logger; when the logger's queue is full, lines
/// are dropped and counted, and a record of their number follows once there is room.
pub(crate) async fn read_lines(
    mut pipe: pipe::Receiver,
    source: Source,
    stream: Stream,
    log: LogLink,
    tail: std::rc::Rc<std::cell::RefCell<VecDeque<String>>>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut skipping = false;
    let dropped = std::cell::Cell::new(0u64);
    let emit = |bytes: &[u8], truncated: bool| {
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim_end_matches('\r');
        log.report_dropped(&source, &dropped);
        log.send(
            Record::output(source.clone(), stream, line, truncated),
            &dropped,
        );
        let mut tail = tail.borrow_mut();
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    };
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            if !skipping {
                emit(&line[..nl], false);
            }
            skipping = false;
        }
        if buf.len() >= MAX_LINE_BYTES {
            if !skipping {
                emit(&buf[..MAX_LINE_BYTES], true);
            }
            skipping = true;
            buf.clear();
        }
        buf.reserve(8 * 1024);
        match pipe.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => {
                if !buf.is_empty() && !skipping {
                    emit(&buf, false);
                }
                log.flush_dropped(&source, &dropped);
                return;
            }
        }
    }
}
