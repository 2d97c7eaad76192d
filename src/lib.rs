//! # procactor
//!
//! Actors that are supervised OS processes. A master process runs an actix system; each worker
//! is a child process running a user type that implements [`WorkerActor`]. The master holds one
//! [`Worker`] proxy actor per worker; its `Addr` takes typed requests ([`Call`]) and one-way
//! messages ([`Tell`]), which travel over the child's stdin and stdout as length-prefixed
//! postcard frames.
//!
//! ```no_run
//! use procactor::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Calc { Add(i64, i64) }
//!
//! struct Adder;
//!
//! impl WorkerActor for Adder {
//!     type Msg = Calc;
//!     type Reply = i64;
//!     type Event = ();
//!
//!     async fn handle(&mut self, msg: Calc, _ctx: &mut WorkerContext<Self>) -> i64 {
//!         match msg { Calc::Add(a, b) => a + b }
//!     }
//! }
//!
//! fn main() -> Result<(), procactor::Error> {
//!     if procactor::is_worker() {
//!         return procactor::run_worker(Adder); // child role
//!     }
//!     actix::System::new().block_on(async {
//!         let cluster = ClusterSupervisor::start(ClusterConfig::new().workers(4)).await?;
//!         let w: Addr<Worker<Adder>> = cluster.worker(0);
//!         let sum = w.send(Call(Calc::Add(1, 2))).await??; // typed end to end
//!         assert_eq!(sum, 3);
//!         cluster.stop().await
//!     })
//! }
//! ```
//!
//! By default a worker is this same executable run again in worker role ([`is_worker`] tells
//! which role a process has, as Node's `cluster.isMaster` does); [`ClusterConfig::exec`] runs
//! another program instead.
//!
//! ## Layout: layers, bottom-up
//!
//! A file imports only from its own layer or the ones below it (checked by reading `crate::`
//! and `super::` paths; no import cycle among `src/` files). The worker runtime is the child's
//! side of the pipe; the master's side knows it only by the [`WorkerActor`] trait its proxies
//! are typed with.
//!
//! ```text
//!             master side                                   worker side (the child)
//!  7 handles  cluster: Cluster<A>, ClusterBuilder/GroupsBuilder, Groups, start-up assembly
//!  6 cluster  supervisor: slots and groups, restart policy, rolling reload, scale, signals,
//!             system operations
//!  5 proxy    proxy: one slot — its processes' state machine (generation), the hand-over,
//!             the in-flight table, the stdin queue, the pipe futures    │ worker: WorkerActor,
//!                                                                      │ runtime, uplink, inbox,
//!                                                                      │ context, peers, log
//!  4 config   config: ClusterConfig, GroupConfig, RestartPolicy, Affinity
//!  3 services messaging (routing table, routers, typed system operations, confirmations), cache (one
//!             store, locks, snapshots), logger (queue, writer thread, sinks)
//!  2 os       os: spawn, child, reap (the only `unsafe`), fds; listen: shared sockets
//!  1 wire     protocol, codec; what frames carry: messaging types, cache ops, log records
//!  0 words    state (WorkerId, WorkerState), error (every error, ExitReason), event
//! ```
//!
//! The master runs everything of layers 3–7 on one actix arbiter: a round trip costs no lock
//! and no task. Nothing slow runs there — log files and sinks are written by the logger's
//! thread, snapshots off the loop, exited children reaped by a reaper thread.
//!
//! ## What holds
//! - A stray `println!` in worker code goes to stderr, never into the channel.
//! - A frame's length is checked before anything is allocated; any malformed input from a worker
//!   ends that worker with a typed [`ExitReason`], and nothing else.
//! - A worker that dies fails every request in flight to it at once with
//!   [`CallError::WorkerExited`].
//! - Every worker runs in its own process group, dies with the master (`PR_SET_PDEATHSIG`) and
//!   is reaped; its descendants, whatever group or session they moved to, are swept after it
//!   (a marker in their environment), and by a keeper process when the master dies.
//!   [`Cluster::stop`] returns once every worker has been reaped and swept.
//! - What a worker sends costs the master memory only up to configured bounds (its outbox,
//!   `max_worker_pending` requests and handler messages, a window of one-way messages per
//!   receiver): past them the master stops reading that worker, or refuses with a typed error.
//!   A proxy yields the event loop after 1024 frames, 1 MiB or 1 ms of one worker's input.

pub mod cache;
mod cluster;
mod codec;
mod config;
mod error;
mod event;
mod listen;
pub mod logger;
mod messaging;
mod millis;
mod os;
mod protocol;
mod proxy;
mod state;
mod supervisor;
mod worker;

pub mod actors;

pub use cluster::{Cluster, ClusterBuilder, GroupHandlers, GroupKey, Groups, GroupsBuilder};
pub use config::{
    Affinity, Backoff, ClusterConfig, Escalation, GroupConfig, Intensity, RestartPolicy,
    RestartType, Strategy, DEFAULT_GROUP,
};
pub use error::{
    AskError, CallError, ConfigError, Error, ExitReason, FrameError, ProtocolError, ReloadError,
    ReplaceError, SpawnError,
};
pub use event::{WorkerEvent, WorkerEventKind, WorkerInfo};
pub use listen::{activated_sockets, ListenAddr};
pub use messaging::{ClusterInfo, Peer, Route, SystemOp, Via, WorkerStats};
pub use proxy::{
    AwaitReady, Call, CallResponse, FromWorker, GetInfo, Kill, OldExit, Replace, Replaced, Stop,
    Tell, TellAck, TellResponse, Worker, WorkerRequest, DRAIN_AFTER_EXIT,
};
pub use state::{WorkerId, WorkerState};
pub use supervisor::{ClusterSupervisor, ListWorkers, ReloadEvent, ReloadReport, StopAll};
pub use worker::{
    is_worker, run_worker, LogLayer, LogSender, WorkerActor, WorkerContext, WorkerHandle,
};

/// The wire format, for programs that speak the protocol without the worker runtime.
pub mod wire {
    pub use crate::codec::{
        decode_envelope, decode_value, encode_frame, encode_value, FrameDecoder,
        DEFAULT_MAX_FRAME_BYTES, HEADER_LEN,
    };
    pub use crate::protocol::{Envelope, PROTOCOL_VERSION};
}

/// The names most programs need: `use procactor::prelude::*;`.
pub mod prelude {
    pub use actix::{Actor, Addr, Recipient};

    pub use crate::{
        Call, CallError, Cluster, ClusterConfig, ClusterSupervisor, ExitReason, FromWorker,
        GroupConfig, Groups, Tell, Worker, WorkerActor, WorkerContext, WorkerEvent,
        WorkerEventKind, WorkerId,
    };
}

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "http"))] // the README shows the HTTP worker
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
