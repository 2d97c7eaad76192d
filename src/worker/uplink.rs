//! The worker's channel up to the master: frames are appended to one [`Uplink`] by everything
//! in the worker that writes (replies, events, requests, log records, pongs), and one writer
//! loop sends them, many per `write(2)`.
//!
//! # Caveats
//! The uplink is not bounded in bytes: a worker that writes faster than the master reads grows
//! its own memory, not the master's (the master pauses reading from it instead).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use crate::codec::{encode_frame, encode_value};
use crate::error::FrameError;
use crate::protocol::Envelope;

/// Frames waiting to be written to the master, shared by everything in the worker that writes.
///
/// Frames are appended here and written by one writer task, many per `write(2)`.
#[derive(Debug)]
pub(crate) struct Uplink {
    pub(crate) buf: RefCell<Vec<u8>>,
    pub(crate) wake_writer: Notify,
    pub(crate) broken: Cell<bool>,
    max_frame_bytes: usize,
}

impl Uplink {
    pub(crate) fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            wake_writer: Notify::new(),
            broken: Cell::new(false),
            max_frame_bytes,
        }
    }

    pub(crate) fn push(&self, envelope: &Envelope<'_>) -> Result<(), FrameError> {
        if self.broken.get() {
            return Err(FrameError::Io("the channel to the master is closed".into()));
        }
        encode_frame(&mut self.buf.borrow_mut(), envelope, self.max_frame_bytes)?;
        self.wake_writer.notify_one();
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
}

pub(crate) async fn write_loop(outbox: Rc<Uplink>, mut pipe: pipe::Sender) {
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
