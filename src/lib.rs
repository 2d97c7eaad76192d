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
//! ## What holds
//! - A stray `println!` in worker code goes to stderr, never into the channel.
//! - A frame's length is checked before anything is allocated; any malformed input from a worker
//!   ends that worker with a typed [`ExitReason`], and nothing else.
//! - A worker that dies fails every request in flight to it at once with
//!   [`CallError::WorkerExited`].
//! - Every worker runs in its own process group, dies with the master (`PR_SET_PDEATHSIG`) and
//!   is reaped; [`Cluster::stop`] returns once every worker has been reaped.

pub mod cache;
mod codec;
mod config;
mod error;
mod event;
mod listen;
pub mod logger;
mod messaging;
mod millis;
mod process;
mod protocol;
mod proxy;
mod routing;
mod supervisor;
mod worker;

pub mod actors;

pub use config::{Affinity, ClusterConfig, GroupConfig};
pub use error::{CallError, ConfigError, Error, FrameError, ProtocolError, SpawnError};
pub use event::{ExitReason, WorkerEvent, WorkerEventKind, WorkerId, WorkerInfo, WorkerState};
pub use listen::{activated_sockets, ListenAddr};
pub use messaging::{
    AskError, ClusterInfo, Peer, Route, SystemOp, Via, WorkerStats, WorkerSummary,
};
pub use proxy::{
    AwaitReady, Call, CallResponse, FromWorker, GetInfo, Kill, Replace, ReplaceError, Replaced,
    Stop, Tell, TellAck, TellResponse, Worker, WorkerRequest, DRAIN_AFTER_EXIT,
};
pub use supervisor::{
    Backoff, Cluster, ClusterBuilder, ClusterSupervisor, Escalation, GroupHandlers, GroupKey,
    Groups, GroupsBuilder, Intensity, ListWorkers, ReloadError, ReloadEvent, ReloadReport,
    RestartPolicy, RestartType, StopAll, Strategy, DEFAULT_GROUP,
};
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
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
