//! The worker's run loop: a reader task, a writer task and the handler loop between them.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, Notify};

use crate::codec::{decode_envelope, decode_value, FrameDecoder, DEFAULT_MAX_FRAME_BYTES};
use crate::error::{Error, FrameError, ProtocolError};
use crate::event::WorkerId;
use crate::messaging::{Peer, Via};
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::worker::context::{Outbox, WorkerContext};
use crate::worker::log::{LogSender, Outgoing};
use crate::worker::peers::Asks;
use crate::worker::{env, WorkerActor};

/// Payload bytes that may wait for the handler loop. Past it the reader stops reading, the pipe
/// fills, and the master's outbox for this worker applies backpressure. Below it the reader keeps
/// reading while a handler is busy, so heartbeats are answered.
const INBOX_BYTES: usize = 16 * 1024 * 1024;

/// Who this worker is, from the environment the master gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) worker: WorkerId,
    pub(crate) generation: u64,
    pub(crate) master_pid: u32,
    pub(crate) max_frame_bytes: usize,
}

/// The `tracing` level of worker code that becomes log records, from the master.
fn log_level() -> String {
    std::env::var(env::LOG_LEVEL).unwrap_or_else(|_| "info".into())
}

impl Identity {
    pub(crate) fn from_env() -> Result<Self, Error> {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok()?.parse().ok()
        }
        Ok(Self {
            worker: var(env::WORKER_ID).ok_or(Error::NotAWorker)?,
            generation: var(env::GENERATION).unwrap_or(1),
            master_pid: var(env::MASTER_PID).unwrap_or_else(nix_getppid),
            max_frame_bytes: var(env::MAX_FRAME_BYTES).unwrap_or(DEFAULT_MAX_FRAME_BYTES),
        })
    }
}

fn nix_getppid() -> u32 {
    nix::unistd::getppid().as_raw() as u32
}

/// What the reader hands to the handler loop.
enum Inbound {
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
    Shutdown,
}

impl Inbound {
    fn len(&self) -> usize {
        match self {
            Inbound::Request { payload, .. } | Inbound::Tell { payload, .. } => payload.len(),
            Inbound::Shutdown => 0,
        }
    }
}

/// Bytes queued between the reader and the handler loop, and a wake-up for the reader.
#[derive(Default)]
struct InboxRoom {
    queued: Cell<usize>,
    freed: Notify,
}

impl InboxRoom {
    fn taken(&self, item: &Inbound) {
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

pub(crate) async fn run<A: WorkerActor>(
    mut actor: A,
    identity: Identity,
    listeners: Vec<(String, OwnedFd)>,
    (from_master, to_master): (OwnedFd, OwnedFd),
) -> Result<(), Error> {
    let reader = pipe::Receiver::from_owned_fd(from_master)?;
    let writer = pipe::Sender::from_owned_fd(to_master)?;
    let outbox = Rc::new(Outbox::new(identity.max_frame_bytes));

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
    let log_rx = std::cell::RefCell::new(log_rx);
    let forward_logs = || {
        while let Ok(record) = log_rx.borrow_mut().try_recv() {
            push_log(&outbox, &record);
        }
    };
    let logs = async {
        loop {
            let record = std::future::poll_fn(|cx| log_rx.borrow_mut().poll_recv(cx)).await;
            match record {
                Some(record) => push_log(&outbox, &record),
                None => std::future::pending::<()>().await,
            }
        }
    };
    tokio::pin!(logs);
    let mut ctx = WorkerContext::<A>::new(Rc::clone(&outbox), asks, log, identity, listeners);
    let handled = async {
        actor.started(&mut ctx).await;
        outbox.push(&Envelope::Ready)?;
        while !ctx.stop_requested() {
            let item = rx.recv().await;
            if let Some(item) = &item {
                room.taken(item);
            }
            match item {
                Some(Inbound::Request { id, from, payload }) => match decode_value(&payload) {
                    Ok(msg) => {
                        ctx.set_origin(from, Via::Direct);
                        let reply = actor.handle(msg, &mut ctx).await;
                        ctx.reply(id, &reply);
                    }
                    Err(e) => ctx.fail(id, &format!("request did not decode: {e}")),
                },
                Some(Inbound::Tell { from, via, payload }) => match decode_value(&payload) {
                    Ok(msg) => {
                        ctx.set_origin(from, via);
                        actor.tell(msg, &mut ctx).await;
                    }
                    Err(e) => tracing::warn!(?from, error = %e, "one-way message did not decode"),
                },
                Some(Inbound::Shutdown) => break,
                // The reader ended: the master is gone or its stream is corrupt.
                None => return Ok(false),
            }
        }
        actor.stopping(&mut ctx).await;
        Ok::<bool, Error>(true)
    };
    // `true`: a graceful stop; `false`: the master is gone (or its stream broke), exit now.
    let mut reader_result = None;
    let graceful = tokio::select! {
        biased;
        result = handled => result?,
        result = &mut reader => {
            reader_result = Some(result);
            false
        }
        () = &mut writer => false,
        () = &mut logs => false,
    };
    if let Some(Err(e)) = reader_result {
        return Err(e.into());
    }
    if graceful {
        // Records still queued go too; then flush everything written so far and end.
        forward_logs();
        outbox.broken.set(true);
        outbox.wake_writer.notify_one();
        writer.await;
    }
    Ok(())
}

async fn read_loop(
    mut pipe: pipe::Receiver,
    decoder: FrameDecoder,
    (tx, room): (mpsc::UnboundedSender<Inbound>, Rc<InboxRoom>),
    outbox: Rc<Outbox>,
    asks: Rc<Asks>,
) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let result = async {
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                let frame = frame.freeze();
                let inbound = match decode_envelope(&frame)? {
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
                        continue;
                    }
                    Envelope::AskFailed { id, error } => {
                        asks.answer(id, Err(error));
                        continue;
                    }
                    Envelope::Notify { payload } => {
                        match decode_value(payload) {
                            Ok(event) => asks.notify(event),
                            Err(e) => tracing::warn!(error = %e, "cache event did not decode"),
                        }
                        continue;
                    }
                    Envelope::Shutdown => Inbound::Shutdown,
                    Envelope::Ping { seq } => {
                        // Answered here, not by the handler loop: a worker awaiting a long
                        // handler is busy, not hung.
                        let _ = outbox.push(&Envelope::Pong { seq });
                        continue;
                    }
                    other => {
                        return Err(ProtocolError::Unexpected {
                            got: other.kind(),
                            state: "reading from the master",
                        })
                    }
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

async fn write_loop(outbox: Rc<Outbox>, mut pipe: pipe::Sender) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let idle = {
            let mut buf = outbox.buf.borrow_mut();
            std::mem::swap(&mut *buf, &mut spare);
            spare.is_empty()
        };
        if idle {
            if outbox.broken.get() {
                return;
            }
            outbox.wake_writer.notified().await;
            continue;
        }
        if pipe.write_all(&spare).await.is_err() {
            // The master is gone.
            outbox.broken.set(true);
            return;
        }
        spare.clear();
        if spare.capacity() > 8 * 1024 * 1024 {
            spare = Vec::with_capacity(64 * 1024);
        }
    }
}

pub(crate) fn push_log(outbox: &Outbox, record: &Outgoing) {
    let _ = outbox.push(&Envelope::Log {
        kind: record.kind,
        time_ns: record.time_ns,
        fields: &record.fields,
    });
}
