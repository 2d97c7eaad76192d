//! A worker's identity and where it is in its lifecycle: the words every layer uses.

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
