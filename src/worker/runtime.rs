//! The worker's run loop: the reader ([`inbox`](super::inbox)), the writer
//! ([`uplink`](super::uplink)), the log forwarder and the handler loop, as futures of one task.
//!
//! `started` runs first, then `Ready` goes up; requests and one-way messages are handled one at
//! a time, in order, until `Shutdown` (then `stopping` runs and what was written is flushed) or
//! until the master's stream ends or breaks (then the worker exits at once).

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::codec::{decode_value, FrameDecoder};
use crate::error::Error;
use crate::messaging::Via;
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::worker::asks::Asks;
use crate::worker::context::WorkerContext;
use crate::worker::identity::{log_level, Identity};
use crate::worker::inbox::{read_loop, Inbound, InboxRoom};
use crate::worker::log::{push_log, LogSender, Outgoing};
use crate::worker::uplink::{write_loop, Uplink};
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
    // Reader, writer and handler loop are futures of this one task, not tasks of their own: a
    // frame in, a reply out, with no scheduler hop between them.
    // The pipe loops run outside tokio's cooperative budget, which would otherwise make them
    // yield to the scheduler every 128 operations under load; they share this task's polls.
    let writer = tokio::task::unconstrained(write_loop(Rc::clone(&outbox), writer));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let room = Rc::new(InboxRoom::default());
    let asks = Rc::new(Asks::default());
    let reader = tokio::task::unconstrained(read_loop(
        reader,
        FrameDecoder::new(identity.max_frame_bytes),
        (tx, Rc::clone(&room)),
        Rc::clone(&outbox),
        Rc::clone(&asks),
    ));
    tokio::pin!(writer, reader);

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
    let mut ctx = WorkerContext::<A>::new(Rc::clone(&outbox), asks, log, identity, listeners);
    let handled = serve(&mut actor, &mut ctx, &mut rx, &room, &outbox);
    // `Some(status)`: a graceful stop; `None`: the master is gone (or its stream broke), exit now.
    let mut reader_result = None;
    let graceful = tokio::select! {
        biased;
        result = handled => result?,
        result = &mut reader => {
            reader_result = Some(result);
            None
        }
        () = &mut writer => None,
        () = &mut logs => None,
    };
    if let Some(Err(e)) = reader_result {
        return Err(e.into());
    }
    let Some(status) = graceful else {
        return Ok(0);
    };
    // Records still queued go too; then flush everything written so far and end.
    drain_logs();
    outbox.broken.set(true);
    outbox.wake_writer.notify_one();
    writer.await;
    Ok(status)
}

/// The handler loop: `started`, then every request and one-way message in order, then
/// `stopping`. `Ok(Some(status))` for a graceful stop (the status to exit with), `Ok(None)`
/// when the reader ended.
async fn serve<A: WorkerActor>(
    actor: &mut A,
    ctx: &mut WorkerContext<A>,
    rx: &mut mpsc::UnboundedReceiver<Inbound>,
    room: &InboxRoom,
    outbox: &Uplink,
) -> Result<Option<i32>, Error> {
    actor.started(ctx).await;
    outbox.push(&Envelope::Ready)?;
    let mut status = 0;
    while !ctx.stop_requested() {
        let item = rx.recv().await;
        if let Some(item) = &item {
            room.taken(item);
        }
        match item {
            Some(Inbound::Request { id, from, payload }) => match decode_value(&payload) {
                Ok(msg) => {
                    ctx.set_origin(from, Via::Direct);
                    let reply = actor.handle(msg, ctx).await;
                    ctx.reply(id, &reply);
                }
                Err(e) => ctx.fail(id, &format!("request did not decode: {e}")),
            },
            Some(Inbound::Tell { from, via, payload }) => match decode_value(&payload) {
                Ok(msg) => {
                    ctx.set_origin(from, via);
                    actor.tell(msg, ctx).await;
                }
                Err(e) => tracing::warn!(?from, error = %e, "one-way message did not decode"),
            },
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
