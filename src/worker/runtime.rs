//! The worker's run loop: a reader task, a writer task and the handler loop between them.

use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, Notify};

use crate::codec::{decode_envelope, decode_value, FrameDecoder, DEFAULT_MAX_FRAME_BYTES};
use crate::error::{Error, FrameError, ProtocolError};
use crate::event::WorkerId;
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::worker::context::{Outbox, WorkerContext};
use crate::worker::{env, WorkerActor};

/// Messages waiting for the handler loop. When it is full the reader stops reading, the pipe
/// fills, and the master's outbox for this worker applies backpressure.
const INBOX_CAPACITY: usize = 1024;

/// Who this worker is, from the environment the master gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) worker: WorkerId,
    pub(crate) generation: u64,
    pub(crate) master_pid: u32,
    pub(crate) max_frame_bytes: usize,
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
    Request { id: u64, payload: Bytes },
    Tell { payload: Bytes },
    Shutdown,
}

pub(crate) async fn run<A: WorkerActor>(
    mut actor: A,
    identity: Identity,
    from_master: OwnedFd,
    to_master: OwnedFd,
) -> Result<(), Error> {
    let reader = pipe::Receiver::from_owned_fd(from_master)?;
    let writer = pipe::Sender::from_owned_fd(to_master)?;
    let outbox = Rc::new(Outbox::new(identity.max_frame_bytes));
    let gone = Rc::new(Notify::new());

    outbox.push(&Envelope::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
    })?;
    let writer_task =
        tokio::task::spawn_local(write_loop(Rc::clone(&outbox), writer, Rc::clone(&gone)));
    let (tx, mut rx) = mpsc::channel(INBOX_CAPACITY);
    let reader_task = tokio::task::spawn_local(read_loop(
        reader,
        FrameDecoder::new(identity.max_frame_bytes),
        tx,
        Rc::clone(&gone),
    ));

    let mut ctx = WorkerContext::<A>::new(Rc::clone(&outbox), identity);
    let handled = async {
        actor.started(&mut ctx).await;
        outbox.push(&Envelope::Ready)?;
        while !ctx.stop_requested() {
            match rx.recv().await {
                Some(Inbound::Request { id, payload }) => match decode_value(&payload) {
                    Ok(msg) => {
                        let reply = actor.handle(msg, &mut ctx).await;
                        ctx.reply(id, &reply);
                    }
                    Err(e) => ctx.fail(id, &format!("request did not decode: {e}")),
                },
                Some(Inbound::Tell { payload }) => match decode_value(&payload) {
                    Ok(msg) => actor.tell(msg, &mut ctx).await,
                    Err(e) => tracing::warn!(error = %e, "one-way message did not decode"),
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
    let graceful = tokio::select! {
        biased;
        result = handled => result?,
        () = gone.notified() => false,
    };
    if reader_task.is_finished() {
        // The reader returns in the same turn as it signals, so its outcome is known here.
        if let Ok(Err(e)) = reader_task.await {
            return Err(e.into());
        }
    } else {
        reader_task.abort();
    }
    if graceful {
        // Flush everything written so far, then let the writer end.
        outbox.broken.set(true);
        outbox.wake_writer.notify_one();
        let _ = writer_task.await;
    }
    Ok(())
}

async fn read_loop(
    mut pipe: pipe::Receiver,
    decoder: FrameDecoder,
    tx: mpsc::Sender<Inbound>,
    gone: Rc<Notify>,
) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let result = async {
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                let frame = frame.freeze();
                let inbound = match decode_envelope(&frame)? {
                    Envelope::Request { id, payload } => Inbound::Request {
                        id,
                        payload: frame.slice_ref(payload),
                    },
                    Envelope::Tell { payload } => Inbound::Tell {
                        payload: frame.slice_ref(payload),
                    },
                    Envelope::Shutdown => Inbound::Shutdown,
                    other => {
                        return Err(ProtocolError::Unexpected {
                            got: other.kind(),
                            state: "reading from the master",
                        })
                    }
                };
                if tx.send(inbound).await.is_err() {
                    return Ok(());
                }
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
    if let Err(e) = &result {
        tracing::error!(error = %e, "the master's stream is corrupt; exiting");
        eprintln!("procactor worker: the master's stream is corrupt: {e}");
    }
    // End-of-file or a corrupt stream: either way the worker exits now.
    gone.notify_one();
    result
}

async fn write_loop(outbox: Rc<Outbox>, mut pipe: pipe::Sender, gone: Rc<Notify>) {
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
            gone.notify_one();
            return;
        }
        spare.clear();
        if spare.capacity() > 8 * 1024 * 1024 {
            spare = Vec::with_capacity(64 * 1024);
        }
    }
}
