//! What the master can observe about its workers: states, lifecycle events and exit reasons.

use std::fmt;
use std::time::Duration;

use crate::error::{ProtocolError, SpawnError};

/// A worker slot's index in its cluster, from 0. A slot keeps its id across respawns.
pub type WorkerId = usize;

/// Where a worker slot is in its lifecycle.
///
/// ```text
///  Spawning ──spawned──► Starting ──Hello──► Online ──Ready──► Ready
///     ▲  │                  │                  │                 │ stop()
///     │  │ spawn failed     │ exit / fault     │                 ▼
///     │  └──────────────►  Exited  ◄───────────┴───────────── Stopping
///     │                    │    │
///     └──── Backoff ◄──────┘    └──► Failed   (the supervisor's decision)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum WorkerState {
    /// The process is being created.
    Spawning,
    /// The process runs; its `Hello` has not arrived yet.
    Starting,
    /// `Hello` arrived; the worker's `started` hook runs.
    Online,
    /// The worker takes requests.
    Ready,
    /// `Shutdown` was sent; the worker finishes its work and exits.
    Stopping,
    /// The process has ended and been reaped; the slot stays down unless restarted.
    Exited,
    /// The process ended and a restart is scheduled; messages sent now wait for it.
    Backoff,
    /// The supervisor gave up on this slot (restart intensity exceeded, or a permanent fault).
    Failed,
}

/// How a worker's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl From<crate::error::FrameError> for ExitReason {
    fn from(e: crate::error::FrameError) -> Self {
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
            ExitReason::Killed => f.write_str("killed by the master"),
            ExitReason::SpawnFailed(e) => write!(f, "{e}"),
        }
    }
}

/// A worker slot as listed by [`Cluster::workers`](crate::Cluster::workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The slot.
    pub id: WorkerId,
    /// The process behind the slot, while there is one.
    pub pid: Option<u32>,
    /// Where the slot is in its lifecycle.
    pub state: WorkerState,
    /// How many processes this slot has started, counting from 1 for the first.
    pub generation: u64,
}

/// A lifecycle event of one worker: Node cluster's `fork`, `online`, `listening` and `exit`.
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
pub struct WorkerEvent {
    /// The slot.
    pub worker: WorkerId,
    /// Which process of the slot (see [`WorkerInfo::generation`]).
    pub generation: u64,
    /// The process, when one was started.
    pub pid: Option<u32>,
    /// What happened.
    pub kind: WorkerEventKind,
}

/// What happened to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerEventKind {
    /// The process was started.
    Spawned,
    /// Its `Hello` arrived: it speaks the protocol.
    Online,
    /// Its `started` hook returned: it takes requests.
    Ready,
    /// The process ended and was reaped.
    Exited {
        /// How it ended.
        reason: ExitReason,
        /// The last lines it wrote to stderr (at most 20), for alerts and post-mortems.
        last_stderr: Vec<String>,
        /// How long the process ran.
        uptime: Duration,
    },
    /// The supervisor will start a new process in this slot after `delay`.
    Restarting {
        /// The backoff before the new process starts.
        delay: Duration,
    },
    /// A process that no longer serves its slot has exited: one replaced in a rolling restart
    /// after it finished its work, or a replacement that failed before it was ready. The slot is
    /// not affected and no restart follows.
    Retired {
        /// How it ended.
        reason: ExitReason,
        /// The last lines it wrote to stderr.
        last_stderr: Vec<String>,
        /// How long it ran.
        uptime: Duration,
    },
    /// The worker asked for a rolling reload of the cluster
    /// ([`WorkerContext::request_reload`](crate::WorkerContext::request_reload)).
    ReloadRequested,
    /// The supervisor gave up on this slot: its restart intensity was exceeded, or its fault is
    /// permanent (a protocol version mismatch). The slot stays down.
    GaveUp {
        /// The exit that made the supervisor give up.
        reason: ExitReason,
        /// Restarts of the group within the intensity period.
        restarts: usize,
        /// The last lines the worker wrote to stderr before that exit, for the alert.
        last_stderr: Vec<String>,
    },
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
