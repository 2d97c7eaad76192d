//! What the master can observe about its workers: lifecycle events and slot listings.

use std::time::Duration;

pub(crate) use crate::error::ExitReason;
pub(crate) use crate::state::{WorkerId, WorkerState};

/// A worker slot as listed by [`Cluster::workers`](crate::Cluster::workers) and in
/// [`ClusterInfo`](crate::ClusterInfo): who it is and where its process is in its life. Its
/// traffic is in [`WorkerStats`](crate::WorkerStats).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The slot.
    pub id: WorkerId,
    /// The process behind the slot, while there is one.
    pub pid: Option<u32>,
    /// Where the slot is in its lifecycle.
    pub state: WorkerState,
    /// How many processes this slot has started, counting from 1 for the first.
    pub generation: u64,
    /// How long its process has run (zero when none runs).
    pub uptime: Duration,
    /// How many times the slot has started a new process after its first.
    pub restarts: u64,
    /// The groups its process has joined.
    pub groups: Vec<String>,
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
    /// The worker's channel to the master closed while its process still ran (Node's
    /// `disconnect` event): it closed its stdout or was stopped, and its exit follows. A plain
    /// program has no channel and never disconnects.
    Disconnected,
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
