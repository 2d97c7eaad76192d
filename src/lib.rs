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
//!     type MasterReply = ();
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
//! which role a process has, as Node's `cluster.isMaster` does; [`role`] also tells a worker that
//! runs a cluster of its own from that cluster's workers); [`ClusterConfig::exec`] runs another
//! program instead.
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
//!             system operations; metrics: the /metrics endpoint (one cluster's, or an Exporter's
//!             of several), which reads the supervisor, the proxies, the cache and the logger at
//!             each scrape
//!  5 proxy    proxy: one slot — its processes' state machine (generation), the hand-over,
//!             the in-flight table, the stdin queue, the pipe futures    │ worker: WorkerActor,
//!                                                                      │ runtime, uplink, inbox,
//!                                                                      │ context, peers, log
//!  4 config   config: ClusterConfig, GroupConfig, RestartPolicy, Affinity
//!  3 services messaging (routing table, routers, typed system operations, confirmations), cache (one
//!             store, locks, snapshots), logger (queue, writer thread, sinks), backend (several
//!             hosts on Redis: this node's heartbeat and the membership, a task on the loop)
//!  2 os       os: spawn, child, reap (the only `unsafe`), fds; listen: shared sockets
//!  1 wire     protocol, codec; what frames carry: messaging types, cache ops, log records
//!  0 words    state (WorkerId, WorkerState), error (every error, ExitReason), event
//! ```
//!
//! The master runs everything of layers 3–7 on one actix arbiter: a round trip costs no lock
//! and no task. Nothing slow runs there — log files and sinks are written by the logger's
//! thread, snapshots off the loop, exited children reaped by a reaper thread, and the backend
//! (only when one is configured) talks to Redis with async calls only.
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

pub mod backend;
pub mod cache;
mod cluster;
mod codec;
mod config;
mod error;
mod event;
mod listen;
pub mod logger;
mod messaging;
pub mod metrics;
mod millis;
mod os;
mod protocol;
mod proxy;
mod state;
mod supervisor;
mod worker;

pub mod actors;

pub use backend::{Backend, NodeEvent, NodeId, NodeInfo};
pub use cluster::{Cluster, ClusterBuilder, GroupHandlers, GroupKey, Groups, GroupsBuilder};
pub use config::{
    Affinity, Backoff, ClusterConfig, Escalation, GroupConfig, Intensity, Program, Readiness,
    RestartPolicy, RestartType, Strategy, DEFAULT_GROUP,
};
pub use error::{
    AskError, CallError, ConfigError, Error, ExitReason, FrameError, ProtocolError, ReloadError,
    ReplaceError, SpawnError,
};
pub use event::{WorkerEvent, WorkerEventKind, WorkerInfo};
pub use listen::{activated_sockets, ListenAddr};
pub use messaging::{
    ClusterInfo, ConfirmationRounds, Ending, Peer, Route, SystemOp, Target, Via, WorkerStats,
};
pub use proxy::{
    AwaitReady, Call, CallResponse, FromWorker, GetInfo, Kill, NotifyStatus, OldExit, Replace,
    Replaced, Stop, Tell, TellAck, TellBatch, TellResponse, Terminate, Worker, WorkerRequest,
    DRAIN_AFTER_EXIT,
};
pub use state::{WorkerId, WorkerState};
pub use supervisor::{ClusterSupervisor, ListWorkers, ReloadEvent, ReloadReport, StopAll};
pub use worker::{
    is_worker, role, run_worker, LogLayer, LogSender, Role, WorkerActor, WorkerContext,
    WorkerHandle,
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
        GroupConfig, GroupKey, Groups, Tell, TellAck, Worker, WorkerActor, WorkerContext,
        WorkerEvent, WorkerEventKind, WorkerId,
    };
}

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "http"))] // the README shows the HTTP worker
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The README's API table, compiled: every call as a row writes it, with the types it names.
///
/// ```no_run
/// use std::time::Duration;
///
/// use procactor::actors::http::HttpWorker;
/// use procactor::cache::{CacheClient, CacheConfig, CacheError, CacheTransport};
/// use procactor::logger::{Fields, FileSink, Kind, LogConfig, Record, RingSink, Sink, Source};
/// use procactor::prelude::*;
/// use procactor::*;
///
/// struct W;
///
/// impl WorkerActor for W {
///     type Msg = String;
///     type Reply = String;
///     type Event = String;
///     type MasterReply = i64;
///
///     async fn handle(&mut self, msg: String, ctx: &mut WorkerContext<Self>) -> String {
///         let t = Duration::from_secs(1);
///         // `WorkerContext`
///         let _: (WorkerId, u64, u32, &str) = (ctx.id(), ctx.generation(), ctx.master_pid(), ctx.group());
///         let _: (Peer, &Via) = (ctx.sender(), ctx.via());
///         let _ = ctx.send_master(&msg);
///         let _: Result<(), AskError> = ctx.request_reload().await;
///         let _ = (ctx.listener("http"), ctx.unix_listener("sock"));
///         let _: WorkerHandle<W> = ctx.handle();
///         // `WorkerHandle`
///         let peers: &WorkerHandle<W> = ctx.peers();
///         let _ = peers.tell_worker(1, &msg);
///         let _ = peers.tell_worker_acked(1, &msg, t).await;
///         let _: Result<String, AskError> = peers.ask_worker(1, &msg, t).await;
///         let _: Result<i64, AskError> = peers.ask_master(&msg, t).await;
///         let _ = (peers.broadcast(&msg), peers.publish("g", &msg));
///         let _ = (peers.join("g").await, peers.leave("g").await);
///         let _ = (peers.confirm("k").await, peers.await_confirmations("k", 2, t).await);
///         let _ = (peers.cluster_info().await, peers.cluster_stats().await);
///         let _ = (peers.kill_worker(1).await, peers.restart_worker(1, t).await);
///         let _ = peers.reload_cluster(t).await;
///         let _: Result<ExitReason, AskError> =
///             peers.end_worker(Target::Pid(1), Ending::Graceful { status: 7 }, t).await;
///         let _: Result<(), AskError> = peers.stop_cluster().await;
///         // `logs`, worker side
///         ctx.log().ip("10.0.0.1:5000", "GET", "/", 200, t);
///         ctx.log().history("event", Fields::new().with("k", "v"));
///         ctx.log().error("message", vec!["cause".into()], Some("at"));
///         let _ = cache(&ctx.peers().cache()).await;
///         ctx.stop();
///         msg
///     }
/// }
///
/// // `cache`, the same client in the master and in workers.
/// async fn cache<T: CacheTransport>(cache: &CacheClient<T>) -> Result<(), CacheError> {
///     let ttl = Some(Duration::from_secs(60));
///     let _: Option<String> = cache.get::<String>("c", "k").await?;
///     cache.set("c", "k", &"v", ttl).await?;
///     let _: bool = cache.delete("c", "k").await? | cache.exists("c", "k").await?;
///     let _: bool = cache.expire("c", "k", ttl).await?;
///     let _: Option<Option<Duration>> = cache.ttl("c", "k").await?;
///     let _: i64 = cache.increment("c", "n", 1).await?;
///     let _: bool = cache.compare_and_set("c", "k", Some(&"v"), Some(&"w"), None).await?;
///     let _: Vec<String> = cache.keys("c", "prefix").await?;
///     let _ = cache.entries::<String>("c", "prefix").await?;
///     let _ = cache.stats().await?;
///     let _guard = cache.lock("name", Duration::from_secs(30), Duration::from_secs(5)).await?;
///     let _ = cache.subscribe("c", "prefix").await?;
///     let _ = cache.replica::<String>("c", "prefix").await?;
///     let mut batch = cache.batch();
///     let got = batch.get::<String>("c", "k");
///     let answers: procactor::cache::BatchAnswers = batch.run().await?;
///     let _: Option<String> = answers.take(got)?;
///     let near = cache.near_cache("c", procactor::cache::NearLimits::default()).await?;
///     let _: Option<String> = near.get::<String>("k").await?;
///     near.set("k", &"v", None).await?;
///     let _: bool = near.delete("k").await?;
///     let _ = (near.batch(), near.stats());
///     Ok(())
/// }
///
/// async fn master(
///     events: Recipient<WorkerEvent>,
///     messages: Recipient<FromWorker<String>>,
///     requests: Recipient<WorkerRequest<String, i64>>,
///     reloads: Recipient<ReloadEvent>,
/// ) -> Result<(), procactor::Error> {
///     let t = Duration::from_secs(1);
///     // `ClusterConfig`
///     let config = ClusterConfig::new()
///         .workers(2).exec("program").args(["--flag"]).env("KEY", "value").plain(false)
///         .restart(RestartPolicy::default()).worker_control(true)
///         .affinity(Affinity::Cpus(vec![0])).affinity(Affinity::OnePerWorker)
///         .listen("http", "127.0.0.1:8080").listen("sock", "unix:/tmp/s").unix_socket_mode(0o600)
///         .reload_delay(t).worker_reload(true).shutdown_timeout(t).ready_timeout(t)
///         .heartbeat_interval(t).heartbeat_misses(3).handle_signals(true)
///         .max_frame_bytes(1 << 20).max_outbox_bytes(1 << 20).max_worker_pending(64)
///         .mailbox_capacity(64).pipe_buffer_bytes(1 << 16)
///         .cache(CacheConfig { snapshot_interval: Some(t), ..CacheConfig::default() })
///         .log(LogConfig { tracing: true, ..LogConfig::default() });
///     // `ClusterSupervisor::start(config)` / `::builder(config)`
///     let _: Cluster<W> = ClusterSupervisor::start::<W>(config.clone()).await?;
///     let cluster: Cluster<W> = ClusterSupervisor::builder::<W>(config.clone())
///         .subscribe(events)
///         .on_message(messages)
///         .on_request(requests)
///         .on_reload(reloads)
///         .log_sink(Box::new(RingSink::new(100)))
///         .start()
///         .await?;
///     // `Cluster<A>`
///     let w: Addr<Worker<W>> = cluster.worker(0);
///     let _: Result<Addr<Worker<W>>, procactor::Error> = cluster.try_worker(0);
///     let _: Option<Addr<Worker<W>>> = cluster.worker_at(0);
///     let _: Vec<WorkerId> = cluster.ids();
///     let _: (WorkerId, Addr<Worker<W>>) = cluster.worker_by_pid(42).await?;
///     let _: Vec<WorkerInfo> = cluster.workers().await?;
///     let _: ReloadReport = cluster.reload().await?;
///     cluster.scale(3).await?;
///     let msg = String::from("hi");
///     let _ = (cluster.broadcast(&msg).await?, cluster.publish("g", &msg).await?);
///     let _: Vec<WorkerId> = cluster.group_members("g");
///     let _: ClusterInfo = cluster.info().await?;
///     let _: Vec<WorkerStats> = cluster.stats().await?;
///     let _ = cluster.await_confirmations("k", 2, t).await;
///     // groups and confirmations
///     let _: std::collections::BTreeMap<String, Vec<u32>> = cluster.info().await?.pids_by_group();
///     cluster.confirm("k").await?;
///     let mut rounds: ConfirmationRounds = cluster.on_confirmation("k", 2).await?;
///     let _: Option<Vec<Peer>> = rounds.next().await;
///     let _ = (cluster.kill(0).await?, cluster.stop_worker(1).await?);
///     cluster.kill_all().await?;
///     let _: Addr<Worker<W>> = cluster.add_worker().await?;
///     let _: Addr<Worker<W>> = cluster.add_worker_with_env([("K", "V")]).await?;
///     let _: ExitReason = cluster.end_worker(Target::Id(0), Ending::Now).await?;
///     let _: ExitReason = cluster.end_worker(Target::Pid(1), Ending::Graceful { status: 7 }).await?;
///     let _: ExitReason = cluster.terminate(0).await?;
///     cluster.log_ip("10.0.0.1", "GET", "/", 200, t);
///     cluster.log_history("deployed", Fields::new().with("version", 7));
///     cluster.log_error("disk full", vec![], None);
///     cluster.log(Record::history(Source::master("workers"), "event", Fields::new()));
///     cluster.set_respawn(true).await?;
///     let _: Option<ListenAddr> = cluster.local_addr("http");
///     let _ = cache(&cluster.cache()).await;
///     // `logs`, master side
///     let _: Vec<Record> = cluster.recent_logs(Kind::Ip, 10, Some(0)).await?;
///     cluster.flush_logs().await?;
///     let _: Box<dyn Sink> = Box::new(FileSink::open(procactor::logger::FileConfig::new("logs"))?);
///     // `Worker<A>` messages
///     let _: Result<String, CallError> = w.send(Call(msg.clone())).await?;
///     let _: Result<(), CallError> = w.send(Tell(msg.clone())).await?;
///     let _: Result<(), CallError> = w.send(TellBatch(vec![msg.clone()])).await?;
///     let _: Result<(), CallError> = w.send(TellAck(msg)).await?;
///     let _: Result<(), ExitReason> = w.send(AwaitReady).await?;
///     let _: WorkerInfo = w.send(GetInfo).await?;
///     let _ = w.send(Replace).await?;
///     let _: (ExitReason, ExitReason) = (w.send(Stop).await?, w.send(Kill).await?);
///     let _: Option<ExitReason> = w.send(Terminate(7)).await?;
///     // `ClusterSupervisor::with_groups(config)`
///     let mut builder = ClusterSupervisor::with_groups(config);
///     let web: GroupKey<W> = builder.group::<W>(
///         GroupConfig::new("web").workers(4).exec("program").args(["--web"]).env("K", "V")
///             .restart(RestartPolicy::default()).shutdown_timeout(t)
///             .affinity(Affinity::OnePerWorker).after("warm"),
///     );
///     let handlers = GroupHandlers::<HttpWorker>::new();
///     let _: GroupKey<HttpWorker> = builder.group_with(GroupConfig::new("warm"), handlers);
///     let groups: Groups = builder.start().await?;
///     let _: &Cluster<W> = groups.get(web)?;
///     let _: Vec<WorkerInfo> = groups.workers().await?;
///     let _: Option<&str> = groups.group_of(0);
///     let _: (&str, WorkerId) = groups.worker_by_pid(42).await?;
///     // `metrics::Exporter`
///     use procactor::metrics::prometheus_client::{collector::Collector, metrics::counter::Counter};
///     let exporter = procactor::metrics::Exporter::bind("127.0.0.1:0")?;
///     let _: std::net::SocketAddr = exporter.local_addr();
///     exporter.add(&cluster);
///     exporter.add(groups.get(web)?);
///     let _: bool = exporter.remove("web");
///     let _: Vec<String> = exporter.names();
///     exporter.register("myapp_requests", "Requests answered.", Counter::<u64>::default());
///     let collector: Option<Box<dyn Collector>> = None;
///     collector.map(|c| exporter.register_collector(c));
///     groups.stop().await?;
///     cluster.stop().await?;
///     cluster.wait().await
/// }
///
/// // `RestartPolicy`, `WorkerEvent`, `ExitReason`, `ReloadEvent`
/// fn words(event: WorkerEvent, reload: ReloadEvent) -> RestartPolicy {
///     match event.kind {
///         WorkerEventKind::Spawned | WorkerEventKind::Online | WorkerEventKind::Ready => {}
///         WorkerEventKind::Exited { reason, last_stderr, uptime } => {
///             let _: (ExitReason, Vec<String>, Duration) = (reason, last_stderr, uptime);
///         }
///         WorkerEventKind::Retired { .. } | WorkerEventKind::ReloadRequested => {}
///         WorkerEventKind::Restarting { delay } => drop(delay),
///         WorkerEventKind::GaveUp { reason, restarts, last_stderr } => {
///             let _: (ExitReason, usize, Vec<String>) = (reason, restarts, last_stderr);
///         }
///         _ => {}
///     }
///     match ExitReason::Killed {
///         ExitReason::Exited(_) | ExitReason::Signaled(_) | ExitReason::Protocol(_) => {}
///         ExitReason::ShutdownTimeout | ExitReason::ReadyTimeout | ExitReason::HeartbeatTimeout => {}
///         ExitReason::Killed | ExitReason::SpawnFailed(_) => {}
///         _ => {}
///     }
///     match reload {
///         ReloadEvent::Started { workers } => drop(workers),
///         ReloadEvent::Replaced { replaced, done, of } => drop((replaced, done, of)),
///         ReloadEvent::Done { replaced, elapsed } => drop((replaced, elapsed)),
///         ReloadEvent::Failed { error } => drop(error),
///         _ => {}
///     }
///     let _: Vec<(String, std::os::fd::OwnedFd)> = activated_sockets();
///     let _ = (procactor::wire::encode_frame, procactor::wire::FrameDecoder::new(1 << 20));
///     let _: Role = role();
///     RestartPolicy {
///         restart: RestartType::Permanent,
///         strategy: Strategy::OneForOne,
///         intensity: Intensity { max_restarts: 5, period: Duration::from_secs(30) },
///         backoff: Backoff::default(),
///         escalation: Escalation::StopCluster,
///     }
/// }
///
/// fn main() {}
/// ```
#[cfg(all(doctest, feature = "http"))]
pub struct ApiTableDoctests;
