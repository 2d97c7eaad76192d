//! The worker side: the [`WorkerActor`] trait and the runtime that runs it in a child process.
//!
//! A worker process calls [`run_worker`] with its actor. The runtime:
//! 1. moves the channel to the master off fd 0 and fd 1 (fd 1 then writes to stderr, so a stray
//!    `println!` ends up in the master's log and never in the channel);
//! 2. says `Hello`, runs [`WorkerActor::started`], says `Ready`;
//! 3. handles requests and one-way messages **one at a time, in arrival order**, awaiting each
//!    handler; other tasks (an HTTP server spawned from `started`, say) run while a handler awaits;
//! 4. on `Shutdown`, runs [`WorkerActor::stopping`], flushes what it has written and returns `Ok`;
//! 5. when stdin reaches end-of-file (the master is gone), returns at once, without `stopping`.
//!
//! The runtime is an actix system (a single-threaded tokio runtime with a `LocalSet`), so
//! handlers and the tasks they spawn need not be `Send`, and actix-web servers run in it.
//!
//! # Caveats
//! - A handler that blocks its thread (a CPU loop, a blocking read) blocks the whole worker. Use
//!   `tokio::task::spawn_blocking` for such work.
//! - A panic in a handler ends the process; the master fails that request and reports the exit.
//! - Replies are written in batches, once the handler loop has caught up with what has arrived.
//!   If the process dies, replies it computed but had not written yet die with it, and their
//!   callers get [`CallError::WorkerExited`](crate::CallError::WorkerExited): a request is
//!   answered at most once, never twice or to the wrong caller.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

mod asks;
mod context;
mod identity;
mod inbox;
mod log;
mod peers;
mod role;
mod runtime;
mod uplink;
mod window;

pub use context::{WorkerContext, WorkerHandle};
pub use log::{LogLayer, LogSender};
pub use role::{role, Role};

/// Environment variables that the master sets for every worker.
pub(crate) mod env {
    /// The worker's slot id; its presence is what [`is_worker`](super::is_worker) checks.
    pub(crate) const WORKER_ID: &str = "PROCACTOR_WORKER_ID";
    /// The slot's generation (1 for its first process).
    pub(crate) const GENERATION: &str = "PROCACTOR_GENERATION";
    /// The master's pid.
    pub(crate) const MASTER_PID: &str = "PROCACTOR_MASTER_PID";
    /// The largest frame body either side accepts.
    pub(crate) const MAX_FRAME_BYTES: &str = "PROCACTOR_MAX_FRAME_BYTES";
    /// The lowest `tracing` level of worker code that becomes a log record.
    pub(crate) const LOG_LEVEL: &str = "PROCACTOR_LOG_LEVEL";
    /// The name of the worker's group.
    pub(crate) const GROUP: &str = "PROCACTOR_GROUP";
    /// The tree marker (`os/tree.rs`): one token per master above, the worker's own last.
    pub(crate) const TREE: &str = "PROCACTOR_TREE";
}

/// A user type run as an OS-process actor by the worker runtime.
///
/// `Msg` is what the master (or other workers) send it; `Reply` is its answer to a request;
/// `Event` is what it may send to the master on its own, as a one-way message or as a request
/// ([`WorkerHandle::ask_master`]); `MasterReply` is the master's answer to such a request (use
/// `()` for either if it sends or asks nothing). All four are postcard-encoded on the wire, so
/// they must round-trip through serde; for byte fields, `#[serde(with = "serde_bytes")]` is
/// markedly faster.
///
/// The types fix both directions: the master's request handler
/// ([`ClusterBuilder::on_request`](crate::ClusterBuilder::on_request)) must answer with
/// `MasterReply`, and [`WorkerHandle::ask_master`] returns one, so a worker cannot ask for any
/// other type:
///
/// ```compile_fail
/// # use procactor::{WorkerActor, WorkerContext};
/// struct Asker;
///
/// impl WorkerActor for Asker {
///     type Msg = ();
///     type Reply = ();
///     type Event = String;
///     type MasterReply = i64; // the master answers with a number
///
///     async fn handle(&mut self, _: (), ctx: &mut WorkerContext<Self>) {
///         let timeout = std::time::Duration::from_secs(1);
///         // Does not compile: the answer is an `i64`, not a `String`.
///         let _: String = ctx.peers().ask_master(&"hi".to_string(), timeout).await.unwrap();
///     }
/// }
/// ```
///
/// Nor can the master register a handler that answers with another type:
///
/// ```compile_fail
/// # use procactor::prelude::*;
/// # use procactor::WorkerRequest;
/// # struct Asker;
/// # impl WorkerActor for Asker {
/// #     type Msg = ();
/// #     type Reply = ();
/// #     type Event = String;
/// #     type MasterReply = i64;
/// #     async fn handle(&mut self, _: (), _: &mut WorkerContext<Self>) {}
/// # }
/// struct Answers;
/// impl Actor for Answers { type Context = actix::Context<Self>; }
/// impl actix::Handler<WorkerRequest<String, String>> for Answers {
///     type Result = String;
///     fn handle(&mut self, r: WorkerRequest<String, String>, _: &mut Self::Context) -> String {
///         r.msg
///     }
/// }
/// # async fn f() {
/// // Does not compile: `Asker`'s master answers with an `i64`.
/// let builder = ClusterSupervisor::builder::<Asker>(ClusterConfig::new())
///     .on_request(Answers.start().recipient());
/// # }
/// ```
///
/// Every hook may be written as an `async fn`.
///
/// ```
/// use procactor::{WorkerActor, WorkerContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Calc { Add(i64, i64) }
///
/// #[derive(Default)]
/// struct Adder { calls: u64 }
///
/// impl WorkerActor for Adder {
///     type Msg = Calc;
///     type Reply = i64;
///     type Event = ();
///     type MasterReply = ();
///
///     async fn handle(&mut self, msg: Calc, _ctx: &mut WorkerContext<Self>) -> i64 {
///         self.calls += 1;
///         match msg { Calc::Add(a, b) => a + b }
///     }
/// }
/// ```
pub trait WorkerActor: Sized + 'static {
    /// Messages this worker accepts, as requests and as one-way messages.
    type Msg: Serialize + DeserializeOwned + Send + 'static;
    /// Its answer to a request.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// What it sends to the master: one-way messages, and requests.
    type Event: Serialize + DeserializeOwned + Send + 'static;
    /// The master's answer to its requests ([`WorkerHandle::ask_master`]).
    type MasterReply: Serialize + DeserializeOwned + Send + 'static;

    /// Runs once after `Hello`, before the worker says `Ready`: open resources, spawn servers.
    fn started(&mut self, ctx: &mut WorkerContext<Self>) -> impl Future<Output = ()> {
        let _ = ctx;
        async {}
    }

    /// Answers one request.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut WorkerContext<Self>,
    ) -> impl Future<Output = Self::Reply>;

    /// Takes one one-way message. By default it is handled as a request whose reply is dropped.
    fn tell(&mut self, msg: Self::Msg, ctx: &mut WorkerContext<Self>) -> impl Future<Output = ()> {
        async move {
            let _ = self.handle(msg, ctx).await;
        }
    }

    /// Runs once on a graceful stop, after every message that arrived before `Shutdown` has been
    /// handled; the master kills the process if this takes longer than its shutdown timeout.
    fn stopping(&mut self, ctx: &mut WorkerContext<Self>) -> impl Future<Output = ()> {
        let _ = ctx;
        async {}
    }
}

/// True when this process was started by a procactor master as a worker.
///
/// This is the `cluster.isMaster` test: a program that is both master and worker branches on it
/// at the top of `main`. A worker that runs a cluster of its own is a worker too, and so are
/// that cluster's workers; [`role`] tells them apart.
pub fn is_worker() -> bool {
    std::env::var_os(env::WORKER_ID).is_some()
}

/// Runs `actor` as this process's worker until the master stops it or goes away.
///
/// Call it from a plain (non-async) `main`: it builds its own single-threaded actix system.
///
/// # Errors
/// [`Error::NotAWorker`] when the process was not started by a master; [`Error::Protocol`] when
/// the master's stream is corrupt; [`Error::Io`] when the channel cannot be set up.
///
/// When the master ends the worker gracefully with an exit status other than 0
/// ([`Ending::Graceful`](crate::Ending::Graceful)), the process exits with that status once
/// `stopping` has run and everything written is flushed, without returning.
///
/// # Panics
/// When called from inside a running tokio runtime (nested runtimes are not allowed).
pub fn run_worker<A: WorkerActor>(actor: A) -> Result<(), Error> {
    let identity = identity::Identity::from_env()?;
    let listeners = crate::os::take_listen_fds();
    let (from_master, to_master) = crate::os::take_worker_channel()?;
    let status = actix_rt::System::new().block_on(runtime::run(
        actor,
        identity,
        listeners,
        (from_master, to_master),
    ))?;
    if status != 0 {
        std::process::exit(status);
    }
    Ok(())
}
