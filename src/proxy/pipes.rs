//! The proxy's pipe futures: the stdin writer, the frame reader and the line reader (stderr,
//! and a plain program's stdout).
//!
//! Both pipe futures run inside the proxy's own actix context, so they touch the actor's state
//! directly, with no channel between them. actix polls context futures after the mailbox is
//! drained, so every frame queued while a burst of messages is handled leaves in one `write(2)`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::ActorFuture;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::actor::Worker;
use crate::codec::FrameDecoder;
use crate::logger::{LogLink, Record, Source, Stream};
use crate::worker::WorkerActor;

/// Longest stderr line kept whole; the rest of a longer line is dropped and counted.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines of stderr kept for the exit event.
pub(crate) const STDERR_TAIL_LINES: usize = 20;
/// Reads per poll of the frame reader before it yields to the proxy's other work.
const READS_PER_POLL: usize = 32;

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
        match result {
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
        }
    }
}

/// Reads frames from one process's stdout and hands them to the proxy.
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

impl<A: WorkerActor> ActorFuture<Worker<A>> for ReadFrames {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Worker<A>,
        ctx: &mut actix::Context<Worker<A>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let generation = this.generation;
        let span = act.span(generation);
        let _entered = span.as_ref().map(tracing::Span::enter);
        for _ in 0..READS_PER_POLL {
            loop {
                if act.proc_mut(generation).is_none() {
                    return Poll::Ready(());
                }
                match this.decoder.decode(&mut this.buf) {
                    Ok(Some(frame)) => {
                        if let Err(e) = act.on_frame(generation, &frame, ctx) {
                            act.fault(generation, e.into(), ctx);
                            act.stdout_closed(generation);
                            return Poll::Ready(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        act.fault(generation, e.into(), ctx);
                        act.stdout_closed(generation);
                        return Poll::Ready(());
                    }
                }
            }
            if act.links.log.queue.full_for(act.id) {
                // The log writer is behind with this worker's records: read no more from it
                // until the writer has caught up, rather than queue them without bound.
                act.links.log.queue.wait(cx.waker());
                return Poll::Pending;
            }
            if this.buf.capacity() - this.buf.len() < 64 * 1024 {
                this.buf.reserve(256 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.pipe), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(result) => {
                    // End of stream (or a read error, which ends it too).
                    if let Err(e) = this.decoder.decode_eof(&this.buf) {
                        act.fault(generation, e.into(), ctx);
                    } else if let Err(e) = result {
                        tracing::debug!(worker = act.id, error = %e, "read from worker failed");
                    }
                    act.stdout_closed(generation);
                    return Poll::Ready(());
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
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
