//! Error types, one per failure domain.
//!
//! [`Error`] is what the public entry points return; the others say precisely what went wrong in
//! one domain and convert into it. No OS or serialisation library error type appears in them:
//! causes are carried as text or as [`std::io::ErrorKind`].

use std::path::PathBuf;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{WorkerId, WorkerState};

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
    Reload(#[from] ReloadError),
    /// A replacement of one worker's process
    /// ([`Cluster::restart_worker`](crate::Cluster::restart_worker)) did not happen; the old
    /// process, if one ran, still serves.
    #[error(transparent)]
    Replace(#[from] ReplaceError),
    /// A request or message to a worker failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A cluster operation between processes failed (e.g. a confirmation wait timed out).
    #[error(transparent)]
    Ask(#[from] AskError),
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
    /// No worker of the group has this id: it belongs to another group, or to no worker.
    /// Ids are cluster-wide; a group's are those its [`Cluster::ids`](crate::Cluster::ids)
    /// and [`Cluster::workers`](crate::Cluster::workers) list.
    #[error("group {group:?} has no worker {worker}")]
    NoSuchWorker {
        /// The id asked for.
        worker: WorkerId,
        /// The group asked.
        group: String,
    },
    /// No worker process of the group (or of the cluster, when asked of
    /// [`Groups`](crate::Groups)) has this pid now.
    #[error("no worker process has pid {pid}")]
    NoSuchPid {
        /// The pid asked for.
        pid: u32,
    },
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
        got: Cow<'static, str>,
        /// The state of the conversation.
        state: Cow<'static, str>,
    },
    /// A reply named a request that is not in flight.
    #[error("reply to unknown request id {id}")]
    UnknownReply {
        /// The id the worker sent.
        id: u64,
    },
}

/// A worker process could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("cannot start {program:?}: {message}")]
pub struct SpawnError {
    /// The program that was to run.
    pub program: PathBuf,
    /// The kind of OS error.
    #[serde(with = "error_kind")]
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

impl ProtocolError {
    /// `got` arrived while the conversation was in `state`.
    pub(crate) fn unexpected(got: &'static str, state: &'static str) -> Self {
        ProtocolError::Unexpected {
            got: Cow::Borrowed(got),
            state: Cow::Borrowed(state),
        }
    }
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

/// How a worker's process ended. It travels with the failures it causes, to the master's
/// callers ([`CallError::WorkerExited`]) and to other workers ([`AskError::WorkerDied`]) alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// It exited on its own with this status code.
    Exited(i32),
    /// It was ended by this signal, which the master did not send.
    Signaled(i32),
    /// The master ended it because it broke the protocol.
    Protocol(ProtocolError),
    /// It did not exit within the shutdown timeout, and the master killed it.
    ShutdownTimeout,
    /// It did not become ready within the ready timeout, and the master killed it.
    ReadyTimeout,
    /// It stopped answering heartbeats (hung or stopped), and the master killed it.
    HeartbeatTimeout,
    /// A plain program with a [watchdog](crate::ClusterConfig::watchdog) sent no `WATCHDOG=1`
    /// within its period, and the master killed it.
    WatchdogTimeout,
    /// The master killed it on request.
    Killed,
    /// Its process could not be started.
    SpawnFailed(SpawnError),
}

impl ExitReason {
    /// True for a clean exit: status 0, on its own or after `Shutdown`.
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Exited(0))
    }
}

impl From<ProtocolError> for ExitReason {
    fn from(e: ProtocolError) -> Self {
        ExitReason::Protocol(e)
    }
}

impl From<FrameError> for ExitReason {
    fn from(e: FrameError) -> Self {
        ExitReason::Protocol(ProtocolError::Frame(e))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with status {code}"),
            ExitReason::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitReason::Protocol(e) => write!(f, "ended for a protocol violation: {e}"),
            ExitReason::ShutdownTimeout => f.write_str("killed after the shutdown timeout"),
            ExitReason::ReadyTimeout => f.write_str("killed: not ready within the ready timeout"),
            ExitReason::HeartbeatTimeout => f.write_str("killed: stopped answering heartbeats"),
            ExitReason::WatchdogTimeout => {
                f.write_str("killed: no WATCHDOG=1 within the watchdog period")
            }
            ExitReason::Killed => f.write_str("killed by the master"),
            ExitReason::SpawnFailed(e) => write!(f, "{e}"),
        }
    }
}

impl ExitReason {
    /// True for a fault that a restart cannot mend (a protocol version mismatch).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ExitReason::Protocol(ProtocolError::VersionMismatch { .. })
        )
    }
}

/// Why a message or request between processes failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// There is no worker with this id.
    #[error("no worker {0}")]
    NoSuchWorker(WorkerId),
    /// The worker is not running (stopped, restarting, failed).
    #[error("worker {0} is not running")]
    NotRunning(WorkerId),
    /// The worker's process ended before it answered.
    #[error("worker {worker} died: {reason}")]
    WorkerDied {
        /// The worker.
        worker: WorkerId,
        /// How its process ended.
        reason: ExitReason,
    },
    /// The handler failed; for example, the payload did not decode as the receiver's type.
    #[error("handler failed: {0}")]
    Failed(String),
    /// The answer did not decode as the type the asker expected.
    #[error("the answer did not decode: {0}")]
    BadReply(String),
    /// The receiver's outbox is full: it is not reading fast enough.
    #[error("worker {0} is not keeping up (its outbox is full)")]
    Backpressure(WorkerId),
    /// The master has no handler for this request.
    #[error("the master has no handler for requests from workers")]
    NoHandler,
    /// The cluster's configuration does not allow this operation from a worker.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The message cannot be sent that way.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The channel to the master is closed.
    #[error("the channel to the master is closed")]
    Closed,
    /// No live node of the cluster has this name (or the cluster spans no hosts: no
    /// [`backend`](crate::ClusterConfig::backend)).
    #[error("no node {0:?} in the cluster")]
    NoSuchNode(String),
    /// The node left (or restarted with a new epoch) before it answered, or nothing listens
    /// on its inbox any more.
    #[error("node {0} is gone")]
    NodeGone(String),
    /// The cluster's backend (Redis) cannot be reached now, or this node has not joined: a
    /// message to another node cannot be sent. Local messaging goes on.
    #[error("the cluster's backend is unavailable: {0}")]
    BackendUnavailable(String),
}

/// Why a [`Replace`](crate::Replace) did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// The replacement exited or was not ready in time; the old process still serves.
    #[error("worker {worker}'s replacement failed ({reason}); the old process still serves")]
    Failed {
        /// The slot.
        worker: WorkerId,
        /// How the replacement ended.
        reason: ExitReason,
        /// The last lines the replacement wrote to stderr.
        last_stderr: Vec<String>,
    },
    /// The slot has no ready process to replace.
    #[error("worker {worker} is not serving (state {state:?})")]
    NotServing {
        /// The slot.
        worker: WorkerId,
        /// Its state.
        state: WorkerState,
    },
    /// A replacement of this slot is already under way.
    #[error("worker {worker} is already being replaced")]
    Busy {
        /// The slot.
        worker: WorkerId,
    },
    /// The slot's proxy is gone.
    #[error("worker {worker}'s proxy is gone")]
    Gone {
        /// The slot.
        worker: WorkerId,
    },
}

/// Why a rolling reload did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// A replacement failed; the reload stopped there and the old process of that slot, and of
    /// every slot after it, still serves.
    #[error("reload stopped after {replaced} of {of} workers: {source}")]
    Replace {
        /// Workers replaced before the failure.
        replaced: usize,
        /// Workers the reload was to replace.
        of: usize,
        /// The failure.
        source: ReplaceError,
    },
    /// The cluster began to stop during the reload.
    #[error("reload abandoned after {replaced} workers: the cluster is stopping")]
    Stopping {
        /// Workers replaced before the stop.
        replaced: usize,
    },
    /// A reload onto a new program ([`Cluster::reload_with`](crate::Cluster::reload_with))
    /// failed, and every worker was brought back to the program it ran before: the cluster
    /// serves the old version, as before the reload.
    #[error("the reload onto the new program failed and was rolled back: {cause}")]
    RolledBack {
        /// Why the reload failed.
        cause: Box<ReloadError>,
    },
    /// A reload onto a new program failed, and so did bringing the workers back to the old
    /// one: some may run the new program. Processes started from now on run the old one.
    #[error(
        "the reload onto the new program failed ({cause}), and so did its rollback: {rollback}"
    )]
    RollbackFailed {
        /// Why the reload failed.
        cause: Box<ReloadError>,
        /// Why the rollback failed.
        rollback: Box<ReloadError>,
    },
    /// A cluster-wide reload (a cluster with a backend) could not begin: Redis cannot be
    /// reached, or this node has not joined its cluster. Nothing was reloaded;
    /// `Cluster::reload_local` still reloads this node.
    #[error("cluster-wide reload impossible: {reason}")]
    ClusterUnavailable {
        /// Why.
        reason: String,
    },
    /// A cluster-wide reload stopped before its end: a node's reload failed (that node rolled
    /// back; the nodes after it were not touched), the coordinator lost its lock, or it
    /// vanished. The nodes reloaded before keep the new version.
    #[error("cluster-wide reload {rollout} stopped: {reason} (nodes reloaded: {reloaded:?})")]
    Rollout {
        /// The rollout's token.
        rollout: u64,
        /// Why it stopped.
        reason: String,
        /// The nodes reloaded before it stopped.
        reloaded: Vec<String>,
    },
}

impl AskError {
    /// How a failure of the master's request to `worker` reads for a peer that asked the same.
    pub(crate) fn from_call(error: &CallError) -> Self {
        match error {
            CallError::WorkerExited { worker, reason } => AskError::WorkerDied {
                worker: *worker,
                reason: reason.clone(),
            },
            CallError::Backpressure { worker, .. } => AskError::Backpressure(*worker),
            CallError::NotRunning { worker } | CallError::NoChannel { worker } => {
                AskError::NotRunning(*worker)
            }
            other => AskError::Failed(other.to_string()),
        }
    }
}

/// `std::io::ErrorKind` by its name, for a [`SpawnError`] that travels to a worker; a kind this
/// build does not name arrives as `Other`.
mod error_kind {
    use std::io::ErrorKind;

    use serde::{Deserialize, Deserializer, Serializer};

    const KINDS: [ErrorKind; 12] = [
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists,
        ErrorKind::WouldBlock,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidData,
        ErrorKind::TimedOut,
        ErrorKind::Interrupted,
        ErrorKind::Unsupported,
        ErrorKind::OutOfMemory,
        ErrorKind::BrokenPipe,
        ErrorKind::Other,
    ];

    pub(super) fn serialize<S: Serializer>(kind: &ErrorKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{kind:?}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
        let name = String::deserialize(d)?;
        Ok(KINDS
            .into_iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or(ErrorKind::Other))
    }
}
