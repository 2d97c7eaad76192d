//! The worker proxy: one actor per worker slot, standing in the master for the process behind it.
//!
//! Its [`Addr`](actix::Addr) is how the rest of the program talks to the worker. The proxy turns
//! typed messages into frames on the child's stdin, and frames from its stdout back into typed
//! replies and events; it reads the child's stderr into the log, watches the child through a
//! pidfd and reaps it.
//!
//! # Lifecycle
//!
//! | state      | entered when                         | leaves when                                   |
//! |------------|--------------------------------------|-----------------------------------------------|
//! | `Spawning` | the proxy starts                     | the process runs (`Starting`) or cannot start |
//! | `Starting` | the process runs                     | `Hello` arrives with our protocol version     |
//! | `Online`   | `Hello`                              | `Ready` (the `started` hook returned)         |
//! | `Ready`    | `Ready`                              | [`Stop`] (`Stopping`) or the process ends     |
//! | `Stopping` | `Shutdown` was sent                  | the process ends (killed after the timeout)   |
//! | `Exited`   | the process was reaped               | —                                             |
//!
//! Requests may be sent from `Spawning` on: they are queued and handled once the worker is ready.
//!
//! # Handover (rolling restarts)
//! [`Replace`] starts a second process in the slot while the first one keeps serving. Once the
//! new one is ready, the slot's messages go to it and the old one is stopped gracefully: it gets
//! `Shutdown`, answers what it was sent before, runs its `stopping` hook (an HTTP worker stops
//! accepting and finishes its requests there) and exits. Its replies still reach their callers.
//! The [`Replace`] resolves at the hand-over; [`Replaced::old_exited`] once the old one is gone.
//! A replacement that exits or is not ready within the ready timeout is killed, and the old
//! process goes on serving as if nothing happened. The [`Addr`](actix::Addr) never changes.
//!
//! # Plain programs
//! With [`ClusterConfig::plain`] the program is not a procactor worker: it gets no messages, is
//! ready as [`ClusterConfig::ready`] says (at once by default; after a minimum uptime, on
//! systemd's `READY=1`, or when a probe answers: `readiness`), has its stdout logged like its
//! stderr, and is stopped with SIGTERM (then SIGKILL after the shutdown timeout). Shared
//! listening sockets reach it as they reach workers.
//!
//! # In-flight requests when a worker dies
//! Every request in flight fails at once with [`CallError::WorkerExited`] carrying the exit
//! reason, once the process is reaped and what it wrote before dying has been read (bounded by
//! [`DRAIN_AFTER_EXIT`]); replies it managed to write are delivered, not failed. When the master
//! ends a worker for a protocol violation, its requests fail immediately.
//!
//! # Bad input
//! An oversized length, an undecodable body, trailing bytes, a wrong protocol version, anything
//! before `Hello` and end-of-file inside a frame all end the worker: it is killed (its whole
//! process group), the fault is logged, and it exits with [`ExitReason::Protocol`]. Other workers
//! are untouched, and nothing in the master panics.

// Bottom-up: the pure parts first (no actix, no OS), then the actor and its behaviours.
mod actor;
mod dispatch;
mod gate;
mod generation;
mod handover;
mod inflight;
mod lifecycle;
mod links;
mod messages;
mod metered;
mod notified;
mod pipes;
mod readiness;
mod replace;
mod route;
mod send;
mod spawn;
mod spec;
mod stdin;

pub use actor::Worker;
pub use handover::{OldExit, Replaced};
pub use links::{FromWorker, WorkerRequest};
pub(crate) use links::{Handlers, Links, RequestHandler};
pub(crate) use messages::Decided;
pub use messages::{
    AwaitReady, Call, CallResponse, GetInfo, Kill, Replace, Stop, Tell, TellAck, TellBatch,
    TellResponse, Terminate,
};
pub(crate) use messages::{GetFigures, GetStats};
pub(crate) use metered::{SlotFigures, Tally, LATENCY_BOUNDS, RESTART_REASONS};
pub use notified::NotifyStatus;
pub(crate) use readiness::GetNotifyStatus;
pub(crate) use spec::{Launch, SlotSpec};

use std::time::Duration;

/// How long the proxy waits, after its process was reaped, for the rest of its stdout and stderr
/// (a grandchild may hold them open).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);
