//! The worker's run loop: the reader ([`inbox`](super::inbox)), the writer
//! ([`uplink`](super::uplink)), the log forwarder and the handler loop, as futures of one task.
//!
//! `started` runs first, then `Ready` goes up; requests and one-way messages are handled one at
//! a time, in order, until `Shutdown` (then `stopping` runs and what was written is flushed) or
//! until the master's stream ends or breaks (then the worker exits at once).

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use std::future::Future;
use std::task::{Context, Poll};

use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::codec::FrameDecoder;
use crate::error::Error;
use crate::messaging::Via;
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::worker::asks::Asks;
use crate::worker::context::WorkerContext;
use crate::worker::identity::{log_level, Identity};
use crate::worker::inbox::{Inbound, Inbox, Reader};
use crate::worker::log::{push_log, LogSender, Outgoing};
use crate::worker::uplink::{Uplink, Writer};
use crate::worker::WorkerActor;

/// Runs the worker; `Ok(status)`: the exit status the master asked for (0 for a plain stop or
/// when the master is gone).
pub(crate) async fn run<A: WorkerActor>(
    mut actor: A,
    identity: Identity,
    listeners: Vec<(String, OwnedFd)>,
    (from_master, to_master): (OwnedFd, OwnedFd),
) -> Result<i32, Error> {
    let reader = pipe::Receiver::from_owned_fd(from_master)?;
    let writer = pipe::Sender::from_owned_fd(to_master)?;
    let outbox = Rc::new(Uplink::new(identity.max_frame_bytes));

    outbox.push(&Envelope::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    })?;
    let mut reader = Reader::new(reader, FrameDecoder::new(identity.max_frame_bytes));
    let mut writer = Writer::new(writer);
    let inbox = Rc::new(Inbox::<A::Msg>::default());
    let asks = Rc::new(Asks::default());

    let (log, log_rx) = LogSender::new();
    crate::worker::log::write_directly(Rc::clone(&outbox));
    crate::worker::log::install(&log_level());
    let log_rx = RefCell::new(log_rx);
    let drain_logs = || {
        while let Ok(record) = log_rx.borrow_mut().try_recv() {
            push_log(&outbox, &record);
        }
    };
    let logs = forward_logs(&log_rx, &outbox);
    tokio::pin!(logs);
    let mut ctx = WorkerContext::<A>::new(
        Rc::clone(&outbox),
        Rc::clone(&asks),
        log,
        identity,
        listeners,
    );
    let handled = serve(&mut actor, &mut ctx, &inbox, &outbox);
    tokio::pin!(handled);
    // `Some(status)`: a graceful stop; `None`: the master is gone (or its stream broke), exit now.
    let mut reader_result = None;
    let pass = |cx: &mut Context<'_>| {
        let (moved, pushed) = (inbox.moved(), outbox.count());
        if let Poll::Ready(result) = unbudgeted(cx, |cx| reader.poll(cx, &inbox, &outbox, &asks)) {
            reader_result = Some(result);
            return Pass::Done(Ok(None));
        }
        if let Poll::Ready(result) = handled.as_mut().poll(cx) {
            return Pass::Done(result);
        }
        let wrote = unbudgeted(cx, |cx| writer.poll(&outbox, cx));
        if wrote.is_ready() || unbudgeted(cx, |cx| logs.as_mut().poll(cx)).is_ready() {
            return Pass::Done(Ok(None));
        }
        if inbox.moved() == moved && outbox.count() == pushed {
            inbox.trim();
            Pass::Wait
        } else {
            Pass::Again
        }
    };
    let graceful = in_passes(&outbox, pass).await;
    if let Some(Err(e)) = reader_result {
        return Err(e.into());
    }
    let Some(status) = graceful? else {
        return Ok(0);
    };
    // Records still queued go too; then flush everything written so far and end.
    drain_logs();
    outbox.broken.set(true);
    std::future::poll_fn(|cx| writer.poll(&outbox, cx)).await;
    Ok(status)
}

/// Runs `pass` until it is done: reader, handler loop and writer are polled in turn, in passes,
/// until nothing moves. A request read is handled and its reply written in the same pass, and
/// none of them wakes another (a wake-up of this task costs the runtime a trip to the I/O
/// driver). The handlers run within tokio's cooperative budget, as they would anywhere; the
/// reader, the writer and the log forwarder outside it (see [`unbudgeted`]). After
/// [`PASSES_PER_POLL`] the loop yields to other tasks.
async fn in_passes(
    outbox: &Uplink,
    mut pass: impl FnMut(&mut Context<'_>) -> Pass,
) -> Result<Option<i32>, Error> {
    std::future::poll_fn(|cx| {
        outbox.pass(Some(cx.waker()));
        let mut result = Poll::Pending;
        for round in 1..=PASSES_PER_POLL {
            match pass(cx) {
                Pass::Again if round == PASSES_PER_POLL => cx.waker().wake_by_ref(),
                Pass::Again => {}
                Pass::Wait => break,
                Pass::Done(done) => {
                    result = Poll::Ready(done);
                    break;
                }
            }
        }
        outbox.pass(None);
        result
    })
    .await
}

/// Polls `poll` outside tokio's cooperative budget: the pipes and the log channel would
/// otherwise spend it (a unit per read, write or record) and make the loop yield to the runtime
/// every 128 of them under load (a third of `tell_batch_per_s` when they did).
fn unbudgeted<T>(cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    let mut poll = Some(poll);
    let once = std::future::poll_fn(move |cx| (poll.take().expect("polled once"))(cx));
    std::pin::pin!(tokio::task::unconstrained(once)).poll(cx)
}

/// Passes of the run loop one poll of it makes at most before it lets other tasks run.
const PASSES_PER_POLL: usize = 64;

/// What one pass of the run loop came to.
enum Pass {
    /// Something moved: go round again.
    Again,
    /// Nothing moved: wait for a wake-up.
    Wait,
    /// The worker ends: `Some(status)` for a graceful stop, `None` to exit now.
    Done(Result<Option<i32>, Error>),
}

/// The handler loop: `started`, then every request and one-way message in order, then
/// `stopping`. `Ok(Some(status))` for a graceful stop (the status to exit with), `Ok(None)`
/// when the reader ended.
async fn serve<A: WorkerActor>(
    actor: &mut A,
    ctx: &mut WorkerContext<A>,
    inbox: &Inbox<A::Msg>,
    outbox: &Uplink,
) -> Result<Option<i32>, Error> {
    actor.started(ctx).await;
    outbox.push(&Envelope::Ready)?;
    let mut status = 0;
    while !ctx.stop_requested() {
        match inbox.take().await {
            Some(Inbound::Request { id, from, msg }) => {
                ctx.set_origin(from, Via::Direct);
                let reply = actor.handle(msg, ctx).await;
                ctx.reply(id, &reply);
            }
            Some(Inbound::Tell { from, via, msg }) => {
                ctx.set_origin(from, via);
                actor.tell(msg, ctx).await;
            }
            Some(Inbound::Undecodable { id, error }) => ctx.fail(id, &error),
            Some(Inbound::Shutdown(asked)) => {
                status = asked;
                break;
            }
            // The reader ended: the master is gone or its stream is corrupt.
            None => return Ok(None),
        }
    }
    actor.stopping(ctx).await;
    Ok(Some(status))
}

/// Records sent from other threads ([`LogSender`]), framed for the master as they come.
async fn forward_logs(log_rx: &RefCell<mpsc::Receiver<Outgoing>>, outbox: &Uplink) {
    loop {
        let record = std::future::poll_fn(|cx| log_rx.borrow_mut().poll_recv(cx)).await;
        match record {
            Some(record) => push_log(outbox, &record),
            None => std::future::pending::<()>().await,
        }
    }
}
