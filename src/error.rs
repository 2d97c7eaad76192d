//! Error types, one per failure domain.
//!
//! [`Error`] is what the public entry points return; the others say precisely what went wrong in
//! one domain and convert into it. No OS or serialisation library error type appears in them:
//! causes are carried as text or as [`std::io::ErrorKind`].

use std::path::PathBuf;

use crate::event::{ExitReason, WorkerId};

/// Anything that can go wrong in procactor's public entry points.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster configuration was rejected before any process started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A worker process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A worker did not become ready when the cluster started.
    #[error("worker {worker} failed to start: {reason}")]
    StartFailed {
        /// The slot that failed.
        worker: WorkerId,
        /// How its process ended.
        reason: ExitReason,
    },
    /// The supervisor gave up: a worker exceeded the restart intensity and the escalation is to
    /// stop the cluster.
    #[error("supervisor gave up on worker {worker}: {reason}")]
    GaveUp {
        /// The slot whose exit exceeded the intensity.
        worker: WorkerId,
        /// Its last exit.
        reason: ExitReason,
    },
    /// A rolling reload did not finish.
    #[error(transparent)]
    Reload(#[from] crate::supervisor::ReloadError),
    /// A request or message to a worker failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A cluster operation between processes failed (e.g. a confirmation wait timed out).
    #[error(transparent)]
    Ask(#[from] crate::messaging::AskError),
    /// An actor's mailbox was closed (the actor stopped) before it answered.
    #[error("actor mailbox closed: {0}")]
    Mailbox(#[from] actix::MailboxError),
    /// The worker runtime's channel to the master broke.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// `run_worker` was called in a process that the master did not start as a worker.
    #[error("not started as a procactor worker (PROCACTOR_WORKER_ID is not set)")]
    NotAWorker,
    /// A [`GroupKey`](crate::GroupKey) was used with the [`Groups`](crate::Groups) of another
    /// cluster.
    #[error("this group key belongs to another cluster")]
    ForeignGroupKey,
    /// An I/O error outside a worker's channel.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a request or one-way message to a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The worker's process ended while the request was in flight, or before it could be sent.
    #[error("worker {worker} exited: {reason}")]
    WorkerExited {
        /// The worker slot.
        worker: WorkerId,
        /// How its process ended.
        reason: ExitReason,
    },
    /// The worker has no running process (stopped, or not started yet and will not be).
    #[error("worker {worker} is not running")]
    NotRunning {
        /// The worker slot.
        worker: WorkerId,
    },
    /// The worker runs a plain program, which takes no messages.
    #[error("worker {worker} runs a plain program, which takes no messages")]
    NoChannel {
        /// The worker slot.
        worker: WorkerId,
    },
    /// The worker is not reading fast enough: its outbox is full.
    #[error("worker {worker}'s outbox is full ({queued} bytes queued, limit {limit})")]
    Backpressure {
        /// The worker slot.
        worker: WorkerId,
        /// Bytes waiting to be written to the worker.
        queued: usize,
        /// The configured `max_outbox_bytes`.
        limit: usize,
    },
    /// The message could not be encoded or framed (e.g. it is larger than `max_frame_bytes`).
    #[error("message not sent: {0}")]
    Frame(FrameError),
    /// The reply did not decode as the expected `Reply` type.
    #[error("reply did not decode: {0}")]
    BadReply(String),
    /// The worker could not handle the request (its payload did not decode as the worker's
    /// `Msg`, for instance) and said so.
    #[error("worker could not handle the request: {0}")]
    Failed(String),
}

/// A frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's length prefix exceeds the maximum; detected before its body is read.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced body length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame should have had, header included.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A frame body is not a valid postcard encoding of the expected type.
    #[error("undecodable frame body: {0}")]
    Decode(String),
    /// A frame body decoded but bytes were left after the value.
    #[error("{extra} trailing bytes after the frame body")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// A value could not be serialised.
    #[error("could not encode: {0}")]
    Encode(String),
    /// Reading or writing the pipe failed.
    #[error("pipe i/o failed: {0}")]
    Io(String),
}

/// A worker broke the protocol; the master ends such a worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The byte stream itself was bad.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The worker speaks another protocol version. This is permanent: restarting cannot help.
    #[error("protocol version mismatch: worker speaks {worker}, master speaks {master}")]
    VersionMismatch {
        /// The worker's version.
        worker: u32,
        /// [`PROTOCOL_VERSION`](crate::wire::PROTOCOL_VERSION).
        master: u32,
    },
    /// A frame arrived that is not allowed in the current state (e.g. anything before `Hello`).
    #[error("unexpected {got} while {state}")]
    Unexpected {
        /// The envelope kind that arrived.
        got: &'static str,
        /// The state of the conversation.
        state: &'static str,
    },
    /// A reply named a request that is not in flight.
    #[error("reply to unknown request id {id}")]
    UnknownReply {
        /// The id the worker sent.
        id: u64,
    },
}

/// A worker process could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot start {program:?}: {message}")]
pub struct SpawnError {
    /// The program that was to run.
    pub program: PathBuf,
    /// The kind of OS error.
    pub kind: std::io::ErrorKind,
    /// The OS error's text.
    pub message: String,
}

/// The cluster configuration is invalid; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The offending setting.
    pub field: &'static str,
    /// Why it was rejected.
    pub reason: String,
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        Error::Protocol(ProtocolError::Frame(e))
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}
