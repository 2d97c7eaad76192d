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
//! A replacement that exits or is not ready within the ready timeout is killed, and the old
//! process goes on serving as if nothing happened. The [`Addr`](actix::Addr) never changes.
//!
//! # Plain programs
//! With [`ClusterConfig::plain`] the program is not a procactor worker: it gets no messages, is
//! ready once it runs, has its stdout logged like its stderr, and is stopped with SIGTERM (then
//! SIGKILL after the shutdown timeout). Shared listening sockets reach it as they reach workers.
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

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::dev::OneshotSender;
use actix::prelude::*;
use nix::sys::signal::Signal;

use crate::codec::decode_envelope;
use crate::config::ClusterConfig;
use crate::error::{CallError, ProtocolError, SpawnError};
use crate::event::{ExitReason, WorkerEvent, WorkerEventKind, WorkerId, WorkerInfo, WorkerState};
use crate::messaging::{AskError, WorkerStats, WorkerSummary};
use crate::process::{self, ChildHandle, RawExit, SpawnSpec};
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::routing::{AskDone, ReplyTo, SharedRouting, SystemCall};
use crate::worker::{env, WorkerActor};

mod io;
mod messages;
mod route;

pub(crate) use messages::Decided;
pub use messages::{
    AwaitReady, Call, CallResponse, FromWorker, GetInfo, Kill, Replace, ReplaceError, Replaced,
    Stop, Tell, TellAck, TellResponse, WorkerRequest,
};
pub(crate) use messages::{GetStats, GetSummary};

use io::{Flush, Outbox, ReadFrames};

/// How long the proxy waits, after its process was reaped, for the rest of its stdout and stderr
/// (a grandchild may hold them open).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

type Pending<R> = Rc<RefCell<HashMap<u64, Option<OneshotSender<Result<R, CallError>>>>>>;
type Held = Rc<RefCell<VecDeque<OneshotSender<Result<(), CallError>>>>>;

/// The master's proxy actor for one worker slot; `A` is the worker's [`WorkerActor`] type.
///
/// Send it [`Call`] (a request; the reply is typed `A::Reply`) or [`Tell`] (one-way). A message
/// for another worker type does not compile.
pub struct Worker<A: WorkerActor> {
    pub(crate) id: WorkerId,
    /// The last generation handed out; each process of the slot gets the next one.
    generations: u64,
    /// The process that serves the slot (or the last one, when none runs).
    proc: Proc<A::Reply>,
    /// A replacement being started by [`Replace`].
    incoming: Option<Proc<A::Reply>>,
    /// Replaced processes finishing their work.
    retiring: Vec<Proc<A::Reply>>,
    replace: Option<Replacing>,
    spawn: Rc<SlotSpec>,
    links: Links<A>,
    /// This proxy, for answers to what its worker asked of others.
    me: Option<Recipient<AskDone>>,
    counters: Counters,
    /// Processes started after the first one by the restart policy.
    respawns: u64,
    next_id: u64,
    scratch: Vec<u8>,
    ready_waiters: Vec<OneshotSender<Result<(), ExitReason>>>,
    exit_waiters: Vec<OneshotSender<ExitReason>>,
    last_exit: Option<ExitReason>,
    respawn: Option<SpawnHandle>,
    _actor: PhantomData<fn() -> A>,
}

/// What a proxy is connected to in the master.
pub(crate) struct Links<A: WorkerActor> {
    /// The supervisor, for lifecycle events.
    pub(crate) events: Recipient<WorkerEvent>,
    /// The supervisor, for system operations.
    pub(crate) system: Recipient<SystemCall>,
    /// The cluster's routing table.
    pub(crate) routing: SharedRouting,
    /// The cluster's cache, served inline.
    pub(crate) cache: crate::cache::SharedCache,
    /// The cluster's logger.
    pub(crate) log: crate::logger::LogLink,
    /// The master's handlers for what workers send it.
    pub(crate) handlers: Rc<Handlers<A>>,
}

impl<A: WorkerActor> Clone for Links<A> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
            system: self.system.clone(),
            routing: Rc::clone(&self.routing),
            cache: self.cache.clone(),
            log: self.log.clone(),
            handlers: Rc::clone(&self.handlers),
        }
    }
}

/// The master's handler for requests from workers: decodes, asks the user's recipient, encodes.
pub(crate) type RequestHandler = Rc<
    dyn Fn(
        FromWorker<()>,
        &[u8],
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bytes::Bytes, AskError>>>>,
>;

/// The master's handlers for what workers of type `A` send it.
pub(crate) struct Handlers<A: WorkerActor> {
    pub(crate) listeners: Vec<Recipient<FromWorker<A::Event>>>,
    pub(crate) requests: Option<RequestHandler>,
}

/// Frames to and from a slot's processes, by kind, and failures.
#[derive(Debug, Default)]
struct Counters {
    sent: [u64; Envelope::KINDS.len()],
    received: [u64; Envelope::KINDS.len()],
    requests: u64,
    errors: u64,
}

impl Counters {
    fn sent(&mut self, kind: usize) {
        self.sent[kind] += 1;
    }
}

/// Positions in [`Envelope::KINDS`] of the frames the proxy counts as it sends them.
const REQUEST: usize = 2;
const TELL: usize = 5;
const PING: usize = 8;
const ASK_REPLY: usize = 14;
const ASK_FAILED: usize = 15;
const DELIVER: usize = 16;
const PEER_REQUEST: usize = 17;
const NOTIFY: usize = 18;

/// One process of a slot, with its pipes and what is in flight to it.
pub(crate) struct Proc<R> {
    pub(crate) generation: u64,
    pub(crate) state: WorkerState,
    child: Option<Rc<ChildHandle>>,
    pub(crate) outbox: Outbox,
    pending: Pending<R>,
    /// Requests and acknowledged messages from other processes, by correlation id.
    routed: HashMap<u64, ReplyTo>,
    held: Held,
    fault: Option<ExitReason>,
    exit: Option<RawExit>,
    stdout_open: bool,
    stderr_open: bool,
    stderr_tail: Rc<RefCell<VecDeque<String>>>,
    started_at: Option<Instant>,
    pings_sent: u64,
    pongs_seen: u64,
}

impl<R> Proc<R> {
    fn new(generation: u64, config: &ClusterConfig) -> Self {
        Self {
            generation,
            state: WorkerState::Spawning,
            child: None,
            outbox: Outbox::new(config.max_frame_bytes, config.max_outbox_bytes),
            pending: Rc::default(),
            routed: HashMap::new(),
            held: Rc::default(),
            fault: None,
            exit: None,
            stdout_open: false,
            stderr_open: false,
            stderr_tail: Rc::default(),
            started_at: None,
            pings_sent: 0,
            pongs_seen: 0,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid())
    }

    fn is_running(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Spawning
                | WorkerState::Starting
                | WorkerState::Online
                | WorkerState::Ready
                | WorkerState::Stopping
        )
    }

    /// Lets awaiting senders of one-way messages go once the outbox is below its high-water mark.
    pub(crate) fn release_held_tells(&mut self) {
        if self.outbox.len() <= self.outbox.limit() / 16 {
            for tx in self.held.borrow_mut().drain(..) {
                let _ = tx.send(Ok(()));
            }
        }
    }

    /// Fails every request and held message in flight to this process.
    fn fail_in_flight(&mut self, error: &CallError) {
        if !self.routed.is_empty() {
            let failure = match error {
                CallError::WorkerExited { worker, reason } => AskError::WorkerDied {
                    worker: *worker,
                    reason: reason.to_string(),
                },
                other => AskError::Failed(other.to_string()),
            };
            for (_, reply) in self.routed.drain() {
                reply.answer(Err(failure.clone()));
            }
        }
        for (_, tx) in self.pending.borrow_mut().drain() {
            if let Some(tx) = tx {
                let _ = tx.send(Err(error.clone()));
            }
        }
        for tx in self.held.borrow_mut().drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

/// A [`Replace`] under way.
struct Replacing {
    tx: Option<OneshotSender<Result<Replaced, ReplaceError>>>,
    old_pid: Option<u32>,
    new_pid: Option<u32>,
    /// The generation of the replaced process, once handed over; `Replace` resolves at its exit.
    retiring: Option<u64>,
}

impl<A: WorkerActor> fmt::Debug for Worker<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("generation", &self.proc.generation)
            .field("state", &self.proc.state)
            .field("pid", &self.proc.pid())
            .field("incoming", &self.incoming.as_ref().map(|p| p.generation))
            .field("retiring", &self.retiring.len())
            .finish_non_exhaustive()
    }
}

/// What a slot needs to start its process, shared by the slots of a cluster.
#[derive(Debug)]
pub(crate) struct SlotSpec {
    pub(crate) program: std::path::PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) config: ClusterConfig,
    /// The cluster's listening sockets, held for its whole life.
    pub(crate) listeners: Vec<crate::listen::Bound>,
    /// The group the slots belong to.
    pub(crate) group: String,
}

impl SlotSpec {
    pub(crate) fn from_config(config: &ClusterConfig) -> Result<Self, crate::Error> {
        let (program, args) = match &config.exec {
            Some(program) => (
                crate::config::resolve_program(program).unwrap_or_else(|| program.clone()),
                config.args.iter().flatten().map(OsString::from).collect(),
            ),
            None => (
                std::env::current_exe()?,
                match &config.args {
                    Some(args) => args.iter().map(OsString::from).collect(),
                    None => std::env::args_os().skip(1).collect(),
                },
            ),
        };
        let env = config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        Ok(Self {
            program,
            args,
            env,
            config: config.clone(),
            listeners: crate::listen::bind_all(&config.listen)?,
            group: crate::supervisor::DEFAULT_GROUP.to_owned(),
        })
    }
}

impl<A: WorkerActor> Worker<A> {
    pub(crate) fn new(id: WorkerId, spawn: Rc<SlotSpec>, links: Links<A>) -> Self {
        Self {
            id,
            generations: 0,
            proc: Proc::new(0, &spawn.config),
            incoming: None,
            retiring: Vec::new(),
            replace: None,
            spawn,
            links,
            me: None,
            counters: Counters::default(),
            respawns: 0,
            next_id: 0,
            scratch: Vec::new(),
            ready_waiters: Vec::new(),
            exit_waiters: Vec::new(),
            last_exit: None,
            respawn: None,
            _actor: PhantomData,
        }
    }

    /// The process of generation `generation`, if the slot still holds it.
    pub(crate) fn proc_mut(&mut self, generation: u64) -> Option<&mut Proc<A::Reply>> {
        if self.proc.generation == generation {
            return Some(&mut self.proc);
        }
        if let Some(p) = self
            .incoming
            .as_mut()
            .filter(|p| p.generation == generation)
        {
            return Some(p);
        }
        self.retiring
            .iter_mut()
            .find(|p| p.generation == generation)
    }

    fn plain(&self) -> bool {
        self.spawn.config.plain
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.id,
            pid: self.proc.pid(),
            state: self.proc.state,
            generation: self.proc.generation,
        }
    }

    pub(crate) fn summary(&self) -> WorkerSummary {
        WorkerSummary {
            id: self.id,
            pid: self.proc.pid(),
            state: self.proc.state,
            generation: self.proc.generation,
            uptime: self
                .proc
                .started_at
                .filter(|_| self.proc.is_running())
                .map(|t| t.elapsed())
                .unwrap_or_default(),
            restarts: self.respawns,
            groups: self.links.routing.borrow().groups_of(self.id),
        }
    }

    pub(crate) fn stats(&self) -> WorkerStats {
        let by_kind = |counts: &[u64]| {
            counts
                .iter()
                .zip(Envelope::KINDS)
                .filter(|(n, _)| **n > 0)
                .map(|(n, k)| (k.to_owned(), *n))
                .collect()
        };
        let pid = self.proc.pid().filter(|_| self.proc.is_running());
        let (cpu, rss_bytes) = pid.map(crate::messaging::proc_usage).unwrap_or_default();
        WorkerStats {
            id: self.id,
            pid,
            sent: by_kind(&self.counters.sent),
            received: by_kind(&self.counters.received),
            requests: self.counters.requests,
            errors: self.counters.errors,
            restarts: self.respawns,
            cpu,
            rss_bytes,
        }
    }

    /// Who a process of this slot is, in its log records.
    pub(crate) fn source(&self, generation: u64, pid: u32) -> crate::logger::Source {
        crate::logger::Source {
            worker: Some(self.id),
            pid,
            generation,
            group: self.spawn.group.clone(),
        }
    }

    fn emit(&self, generation: u64, pid: Option<u32>, kind: WorkerEventKind) {
        self.links.events.do_send(WorkerEvent {
            worker: self.id,
            generation,
            pid,
            kind,
        });
    }

    /// Starts a new process as the slot's serving process.
    fn spawn_process(&mut self, ctx: &mut Context<Self>) {
        if self.generations > 0 {
            self.respawns += 1;
        }
        self.generations += 1;
        let old = std::mem::replace(
            &mut self.proc,
            Proc::new(self.generations, &self.spawn.config),
        );
        // What was sent while the slot was down waits for the new process.
        self.proc.outbox = old.outbox;
        self.proc.outbox.flushing = false;
        self.proc.pending = old.pending;
        self.proc.held = old.held;
        self.proc.routed = old.routed;
        self.start_process(self.generations, ctx);
    }

    /// Spawns the process for the (already placed) `Proc` of `generation`.
    fn start_process(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let config = &self.spawn.config;
        let mut env = self.spawn.env.clone();
        if !config.plain {
            for (key, value) in [
                (env::WORKER_ID, self.id.to_string()),
                (env::GENERATION, generation.to_string()),
                (env::MASTER_PID, std::process::id().to_string()),
                (env::MAX_FRAME_BYTES, config.max_frame_bytes.to_string()),
                (env::LOG_LEVEL, config.log.worker_level.clone()),
                (env::GROUP, self.spawn.group.clone()),
            ] {
                env.push((key.into(), value.into()));
            }
        }
        let listeners = self
            .spawn
            .listeners
            .iter()
            .filter_map(|b| Some((b.name.clone(), b.fd.try_clone().ok()?)))
            .collect();
        let spec = SpawnSpec {
            program: self.spawn.program.clone(),
            args: self.spawn.args.clone(),
            env,
            pipe_bytes: config.pipe_buffer_bytes,
            listeners,
            cpus: config.affinity.cpus_for(self.id),
        };
        ctx.wait(
            process::spawn(spec)
                .into_actor(self)
                .map(move |result, act, ctx| act.spawned(generation, result, ctx)),
        );
    }

    fn spawned(
        &mut self,
        generation: u64,
        result: Result<process::Spawned, SpawnError>,
        ctx: &mut Context<Self>,
    ) {
        let program = self.spawn.program.clone();
        let id = self.id;
        let plain = self.plain();
        let parts = result.and_then(|spawned| {
            spawned.into_async().map_err(|e| SpawnError {
                program,
                kind: e.kind(),
                message: e.to_string(),
            })
        });
        let Some(p) = self.proc_mut(generation) else {
            // Abandoned while spawning (a replacement given up on): dropping the handle kills it.
            return;
        };
        let (pipes, child) = match parts {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(worker = id, generation, error = %e, "worker failed to spawn");
                p.exit = Some(RawExit::Code(-1));
                p.fault = Some(ExitReason::SpawnFailed(e));
                self.finalize(generation);
                return;
            }
        };
        let child = Rc::new(child);
        let pid = child.pid();
        p.child = Some(Rc::clone(&child));
        p.started_at = Some(Instant::now());
        p.state = WorkerState::Starting;
        p.stdout_open = true;
        p.stderr_open = true;
        p.outbox.attach(pipes.stdin);
        let tail = Rc::clone(&p.stderr_tail);
        tracing::debug!(worker = id, pid, generation, "worker spawned");
        self.emit(generation, Some(pid), WorkerEventKind::Spawned);

        if plain {
            ctx.spawn(
                io::read_lines(
                    pipes.stdout,
                    self.source(generation, pid),
                    crate::logger::Stream::Stdout,
                    self.links.log.clone(),
                    Rc::clone(&tail),
                )
                .into_actor(self)
                .map(move |(), act, _| act.stdout_closed(generation)),
            );
        } else {
            let max_frame = self.spawn.config.max_frame_bytes;
            ctx.spawn(ReadFrames::new(generation, pipes.stdout, max_frame));
        }
        ctx.spawn(
            io::read_lines(
                pipes.stderr,
                self.source(generation, pid),
                crate::logger::Stream::Stderr,
                self.links.log.clone(),
                tail,
            )
            .into_actor(self)
            .map(move |(), act, _| {
                if let Some(p) = act.proc_mut(generation) {
                    p.stderr_open = false;
                    act.try_finalize(generation);
                }
            }),
        );
        ctx.spawn(
            async move { child.wait().await }
                .into_actor(self)
                .map(move |raw, act, ctx| act.exited(generation, raw, ctx)),
        );
        if plain {
            // Nothing to wait for: a plain program serves once it runs.
            self.on_ready(generation, ctx);
            return;
        }
        ctx.run_later(self.spawn.config.ready_timeout, move |act, ctx| {
            let starting = act
                .proc_mut(generation)
                .is_some_and(|p| matches!(p.state, WorkerState::Starting | WorkerState::Online));
            if starting {
                act.fault(generation, ExitReason::ReadyTimeout, ctx);
            }
        });
        self.kick_writer(generation, ctx);
    }

    /// Makes sure a [`Flush`] runs while the outbox of process `generation` holds frames.
    pub(crate) fn kick_writer(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !p.outbox.flushing && p.outbox.is_attached() && p.outbox.len() > 0 {
            p.outbox.flushing = true;
            ctx.spawn(Flush::new(generation));
        }
    }

    /// Whether new messages are taken now; the error to give if not.
    pub(crate) fn accepting(&self) -> Result<(), CallError> {
        if self.plain() {
            return Err(CallError::NoChannel { worker: self.id });
        }
        match self.proc.state {
            WorkerState::Spawning
            | WorkerState::Starting
            | WorkerState::Online
            | WorkerState::Ready
            | WorkerState::Backoff => Ok(()),
            WorkerState::Exited | WorkerState::Failed => Err(match &self.last_exit {
                Some(reason) => CallError::WorkerExited {
                    worker: self.id,
                    reason: reason.clone(),
                },
                None => CallError::NotRunning { worker: self.id },
            }),
            _ => Err(CallError::NotRunning { worker: self.id }),
        }
    }

    /// Queues a request to the serving process and returns its correlation id.
    pub(crate) fn send_request(
        &mut self,
        msg: &A::Msg,
        ctx: &mut Context<Self>,
    ) -> Result<u64, CallError> {
        self.accepting()?;
        crate::codec::encode_value(&mut self.scratch, msg).map_err(CallError::Frame)?;
        let id = self.next_id;
        let env = Envelope::Request {
            id,
            payload: &self.scratch,
        };
        self.proc.outbox.push(self.id, &env)?;
        self.next_id += 1;
        self.counters.sent(REQUEST);
        self.counters.requests += 1;
        self.kick_writer(self.proc.generation, ctx);
        Ok(id)
    }

    /// Queues a one-way message; `Ok(true)` when the sender should wait for the outbox to drain.
    pub(crate) fn send_tell(
        &mut self,
        msg: &A::Msg,
        ctx: &mut Context<Self>,
    ) -> Result<bool, CallError> {
        self.accepting()?;
        crate::codec::encode_value(&mut self.scratch, msg).map_err(CallError::Frame)?;
        let env = Envelope::Tell {
            payload: &self.scratch,
        };
        self.proc.outbox.push(self.id, &env)?;
        self.counters.sent(TELL);
        self.kick_writer(self.proc.generation, ctx);
        Ok(self.proc.outbox.len() > self.proc.outbox.limit() / 16)
    }

    /// Where the serving process's pending requests are parked.
    pub(crate) fn pending(&self) -> &Pending<A::Reply> {
        &self.proc.pending
    }

    /// Where one-way senders wait for the serving process's outbox to drain.
    pub(crate) fn held(&self) -> &Held {
        &self.proc.held
    }

    /// Handles one frame from process `generation`.
    fn on_frame(
        &mut self,
        generation: u64,
        frame: &[u8],
        ctx: &mut Context<Self>,
    ) -> Result<(), ProtocolError> {
        let envelope = decode_envelope(frame)?;
        self.counters.received[envelope.index()] += 1;
        let id = self.id;
        let Some(p) = self.proc_mut(generation) else {
            return Ok(());
        };
        match (p.state, envelope) {
            (
                WorkerState::Starting,
                Envelope::Hello {
                    protocol_version,
                    pid,
                },
            ) => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::VersionMismatch {
                        worker: protocol_version,
                        master: PROTOCOL_VERSION,
                    });
                }
                if Some(pid) != p.pid() {
                    tracing::debug!(worker = id, hello_pid = pid, "Hello from another pid");
                }
                p.state = WorkerState::Online;
                let pid = p.pid();
                self.emit(generation, pid, WorkerEventKind::Online);
            }
            (WorkerState::Starting, other) => {
                return Err(ProtocolError::Unexpected {
                    got: other.kind(),
                    state: "waiting for Hello",
                })
            }
            (WorkerState::Online, Envelope::Ready) => self.on_ready(generation, ctx),
            (WorkerState::Ready | WorkerState::Stopping, Envelope::Pong { seq }) => {
                p.pongs_seen = p.pongs_seen.max(seq);
            }
            (_, Envelope::Reply { id, payload }) => {
                if let Some(reply) = p.routed.remove(&id) {
                    reply.answer(Ok(bytes::Bytes::copy_from_slice(payload)));
                    return Ok(());
                }
                let tx = take_pending(&p.pending, id)?;
                let reply = crate::codec::decode_value(payload)
                    .map_err(|e| CallError::BadReply(e.to_string()));
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
            (_, Envelope::Failed { id, error }) => {
                let routed = p.routed.remove(&id);
                let pending = match routed {
                    Some(_) => None,
                    None => take_pending(&p.pending, id)?,
                };
                self.counters.errors += 1;
                if let Some(reply) = routed {
                    reply.answer(Err(AskError::Failed(error.to_owned())));
                } else if let Some(tx) = pending {
                    let _ = tx.send(Err(CallError::Failed(error.to_owned())));
                }
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::Send { to, ack, payload },
            ) => {
                let pid = p.pid().unwrap_or_default();
                self.route_send(generation, pid, to, ack, payload, ctx);
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::Ask { id, to, payload },
            ) => {
                let pid = p.pid().unwrap_or_default();
                self.route_ask(generation, pid, id, to, payload, ctx);
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::System { id, op },
            ) => {
                let pid = p.pid().unwrap_or_default();
                self.system_op(generation, pid, id, op, ctx);
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::Event { payload },
            ) => {
                let pid = p.pid().unwrap_or_default();
                self.deliver_event(generation, pid, payload);
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::Log {
                    kind,
                    time_ns,
                    fields,
                },
            ) => {
                let pid = p.pid().unwrap_or_default();
                let fields = match serde_json::from_str(fields) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => {
                        let mut map = serde_json::Map::new();
                        map.insert("raw".into(), fields.into());
                        map
                    }
                };
                let time = std::time::UNIX_EPOCH + Duration::from_nanos(time_ns);
                let record =
                    crate::logger::Record::new(self.source(generation, pid), kind, fields).at(time);
                self.links.log.send_always(record);
            }
            (WorkerState::Online | WorkerState::Ready, Envelope::ReloadRequest) => {
                let pid = p.pid();
                self.emit(generation, pid, WorkerEventKind::ReloadRequested);
            }
            (state, other) => {
                return Err(ProtocolError::Unexpected {
                    got: other.kind(),
                    state: match state {
                        WorkerState::Online => "waiting for Ready",
                        _ => "running",
                    },
                })
            }
        }
        Ok(())
    }

    /// Process `generation` is ready: it serves the slot, or takes over from the serving one.
    fn on_ready(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.state = WorkerState::Ready;
        let pid = p.pid();
        self.emit(generation, pid, WorkerEventKind::Ready);
        self.start_heartbeat(generation, ctx);
        if self.incoming.as_ref().map(|p| p.generation) == Some(generation) {
            self.hand_over(ctx);
        } else if self.proc.generation == generation {
            for tx in self.ready_waiters.drain(..) {
                let _ = tx.send(Ok(()));
            }
            if self.replacing_promoted() {
                if let Some(replacing) = self.replace.as_mut() {
                    replacing.new_pid = pid;
                }
                self.finish_replace(Ok(self.last_exit.clone().unwrap_or(ExitReason::Killed)));
            }
        }
    }

    /// Whether the [`Replace`] under way has lost the process it was replacing (it died while
    /// the replacement started), so that the replacement serves the slot already and the
    /// `Replace` resolves with it: ready, or exited.
    fn replacing_promoted(&self) -> bool {
        self.incoming.is_none() && self.replace.as_ref().is_some_and(|r| r.retiring.is_none())
    }

    /// The replacement is ready: it becomes the serving process; the old one is stopped
    /// gracefully and finishes what it was sent.
    fn hand_over(&mut self, ctx: &mut Context<Self>) {
        let Some(new) = self.incoming.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.proc, new);
        let (old_generation, old_pid) = (old.generation, old.pid());
        let new_pid = self.proc.pid();
        tracing::info!(
            worker = self.id,
            old_pid,
            new_pid,
            generation = self.proc.generation,
            "replacement ready; retiring the old process"
        );
        if let Some(replacing) = self.replace.as_mut() {
            replacing.retiring = Some(old_generation);
            replacing.new_pid = new_pid;
        }
        let old_running = old.is_running();
        self.retiring.push(old);
        for tx in self.ready_waiters.drain(..) {
            let _ = tx.send(Ok(()));
        }
        if old_running {
            self.begin_stop(old_generation, ctx);
        } else {
            // It exited while the replacement was starting (and was reported then).
            self.retiring.retain(|p| p.generation != old_generation);
            self.finish_replace(Ok(ExitReason::Exited(0)));
        }
    }

    /// Resolves the [`Replace`] under way.
    fn finish_replace(&mut self, result: Result<ExitReason, ReplaceError>) {
        let Some(mut replacing) = self.replace.take() else {
            return;
        };
        let result = result.map(|old_exit| Replaced {
            worker: self.id,
            old_pid: replacing.old_pid,
            new_pid: replacing.new_pid,
            generation: self.proc.generation,
            old_exit,
        });
        if let Some(tx) = replacing.tx.take() {
            let _ = tx.send(result);
        }
    }

    /// Starts a replacement process for the slot; see [`Replace`].
    pub(crate) fn begin_replace(
        &mut self,
        tx: OneshotSender<Result<Replaced, ReplaceError>>,
        ctx: &mut Context<Self>,
    ) {
        if self.replace.is_some() {
            let _ = tx.send(Err(ReplaceError::Busy { worker: self.id }));
            return;
        }
        if self.proc.state != WorkerState::Ready {
            let _ = tx.send(Err(ReplaceError::NotServing {
                worker: self.id,
                state: self.proc.state,
            }));
            return;
        }
        self.generations += 1;
        let generation = self.generations;
        self.incoming = Some(Proc::new(generation, &self.spawn.config));
        self.replace = Some(Replacing {
            tx: Some(tx),
            old_pid: self.proc.pid(),
            new_pid: None,
            retiring: None,
        });
        tracing::info!(
            worker = self.id,
            pid = self.proc.pid(),
            generation,
            "starting a replacement"
        );
        self.start_process(generation, ctx);
    }

    /// Pings process `generation` every heartbeat interval while it lives; kills it after
    /// `heartbeat_misses` pings in a row go unanswered.
    fn start_heartbeat(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let interval = self.spawn.config.heartbeat_interval;
        if interval.is_zero() || self.plain() {
            return;
        }
        let misses = u64::from(self.spawn.config.heartbeat_misses.max(1));
        ctx.run_interval(interval, move |act, ctx| {
            let id = act.id;
            let alive = act
                .proc_mut(generation)
                .is_some_and(|p| matches!(p.state, WorkerState::Ready | WorkerState::Stopping));
            if !alive {
                // This process is gone; a new one runs its own heartbeat.
                ctx.cancel_future(ctx.handle());
                return;
            }
            if act.links.log.queue.full() {
                // Its stdout is not being read while the logger catches up: no verdict now.
                return;
            }
            let Some(p) = act.proc_mut(generation) else {
                return;
            };
            if p.pings_sent - p.pongs_seen >= misses {
                act.fault(generation, ExitReason::HeartbeatTimeout, ctx);
                return;
            }
            p.pings_sent += 1;
            let ping = Envelope::Ping { seq: p.pings_sent };
            // A full outbox is a missed heartbeat too; the worker is not reading.
            if p.outbox.push(id, &ping).is_ok() {
                act.counters.sent(PING);
                act.kick_writer(generation, ctx);
            }
        });
    }

    fn deliver_event(&self, generation: u64, pid: u32, payload: &[u8]) {
        for listener in self.links.handlers.listeners.iter() {
            match crate::codec::decode_value::<A::Event>(payload) {
                Ok(msg) => listener.do_send(FromWorker {
                    worker: self.id,
                    pid,
                    generation,
                    msg,
                }),
                Err(e) => {
                    tracing::warn!(worker = self.id, pid, error = %e, "event from worker did not decode; dropped");
                    return;
                }
            }
        }
    }

    /// Ends process `generation` for `reason`: kills its process group and fails what is in
    /// flight to it.
    pub(crate) fn fault(&mut self, generation: u64, reason: ExitReason, _ctx: &mut Context<Self>) {
        let id = self.id;
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if p.fault.is_some() || !p.is_running() {
            return;
        }
        let pid = p.pid();
        match &reason {
            ExitReason::Protocol(e) => {
                tracing::error!(worker = id, pid, generation, error = %e, "protocol violation; killing worker");
            }
            other => {
                tracing::warn!(worker = id, pid, generation, reason = %other, "killing worker")
            }
        }
        if let Some(child) = &p.child {
            child.signal_group(Signal::SIGKILL);
        }
        p.fail_in_flight(&CallError::WorkerExited {
            worker: id,
            reason: reason.clone(),
        });
        p.fault = Some(reason);
    }

    pub(crate) fn stdout_closed(&mut self, generation: u64) {
        if let Some(p) = self.proc_mut(generation) {
            p.stdout_open = false;
            self.try_finalize(generation);
        }
    }

    fn exited(&mut self, generation: u64, raw: RawExit, ctx: &mut Context<Self>) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        p.exit = Some(raw);
        if p.stdout_open || p.stderr_open {
            ctx.run_later(DRAIN_AFTER_EXIT, move |act, _| act.finalize(generation));
        }
        self.try_finalize(generation);
    }

    fn try_finalize(&mut self, generation: u64) {
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !p.stdout_open && !p.stderr_open && p.exit.is_some() {
            self.finalize(generation);
        }
    }

    /// Process `generation` is reaped and its output read (or the wait for it is over): report
    /// its exit, and settle what depended on it.
    fn finalize(&mut self, generation: u64) {
        let id = self.id;
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if p.state == WorkerState::Exited {
            return;
        }
        let Some(raw) = p.exit else { return };
        let reason = p.fault.take().unwrap_or(match raw {
            RawExit::Code(code) => ExitReason::Exited(code),
            RawExit::Signal(signal) => ExitReason::Signaled(signal),
        });
        let pid = p.pid();
        p.state = WorkerState::Exited;
        p.outbox.detach();
        p.outbox.flushing = false;
        p.fail_in_flight(&CallError::WorkerExited {
            worker: id,
            reason: reason.clone(),
        });
        p.child = None;
        let last_stderr: Vec<String> = p.stderr_tail.borrow().iter().cloned().collect();
        let uptime = p.started_at.map(|t| t.elapsed()).unwrap_or_default();
        if let Some(pid) = pid {
            // Its locks are released and its subscriptions end, however it ended.
            self.links
                .cache
                .process_gone(crate::Peer::Worker { id, pid });
        }

        if self.proc.generation != generation {
            // A replacement that never became ready, or a replaced process done retiring.
            let failed_replacement =
                self.incoming.as_ref().map(|p| p.generation) == Some(generation);
            if failed_replacement {
                self.incoming = None;
                tracing::warn!(worker = id, pid, generation, %reason, "replacement failed; the old process keeps serving");
                self.finish_replace(Err(ReplaceError::Failed {
                    worker: id,
                    reason: reason.clone(),
                    last_stderr: last_stderr.clone(),
                }));
            } else {
                self.retiring.retain(|p| p.generation != generation);
                tracing::info!(worker = id, pid, generation, %reason, "replaced process exited");
                if self.replace.as_ref().and_then(|r| r.retiring) == Some(generation) {
                    self.finish_replace(Ok(reason.clone()));
                }
            }
            self.emit(
                generation,
                pid,
                WorkerEventKind::Retired {
                    reason,
                    last_stderr,
                    uptime,
                },
            );
            return;
        }

        if reason.is_normal() {
            tracing::info!(worker = id, pid, generation, "worker exited");
        } else {
            tracing::warn!(worker = id, pid, generation, %reason, "worker exited");
        }
        for tx in self.exit_waiters.drain(..) {
            let _ = tx.send(reason.clone());
        }
        // Group memberships end with the process; its successor joins again.
        self.links.routing.borrow_mut().leave_all(id);
        self.last_exit = Some(reason.clone());
        self.emit(
            generation,
            pid,
            WorkerEventKind::Exited {
                reason: reason.clone(),
                last_stderr: last_stderr.clone(),
                uptime,
            },
        );
        if let Some(new) = self.incoming.take() {
            // The replacement under way (not ready yet, or it would have taken over) takes the
            // slot now; the `Replace` resolves when it is ready or exits.
            self.proc = new;
            return;
        }
        for tx in self.ready_waiters.drain(..) {
            let _ = tx.send(Err(reason.clone()));
        }
        if self.replacing_promoted() {
            self.finish_replace(Err(ReplaceError::Failed {
                worker: id,
                reason,
                last_stderr,
            }));
        }
    }

    /// Starts a graceful stop of process `generation`: `Shutdown` (SIGTERM for a plain
    /// program), then SIGKILL after the shutdown timeout.
    pub(crate) fn begin_stop(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let id = self.id;
        let plain = self.plain();
        let Some(p) = self.proc_mut(generation) else {
            return;
        };
        if !matches!(
            p.state,
            WorkerState::Starting | WorkerState::Online | WorkerState::Ready
        ) {
            return;
        }
        p.state = WorkerState::Stopping;
        if plain {
            if let Some(child) = &p.child {
                child.signal_group(Signal::SIGTERM);
            }
        } else {
            // Past the limit or not, Shutdown must go out: bypass the backpressure check.
            if let Err(e) = p.outbox.push_control(&Envelope::Shutdown) {
                tracing::warn!(worker = id, error = %e, "cannot queue Shutdown; killing");
                self.fault(generation, ExitReason::ShutdownTimeout, ctx);
                return;
            }
            self.kick_writer(generation, ctx);
        }
        ctx.run_later(self.spawn.config.shutdown_timeout, move |act, ctx| {
            let stopping = act
                .proc_mut(generation)
                .is_some_and(|p| p.state == WorkerState::Stopping);
            if stopping {
                act.fault(generation, ExitReason::ShutdownTimeout, ctx);
            }
        });
    }

    /// Stops the slot gracefully: its serving process, and a replacement under way is killed.
    pub(crate) fn stop_slot(&mut self, ctx: &mut Context<Self>) {
        if let Some(generation) = self.incoming.as_ref().map(|p| p.generation) {
            self.fault(generation, ExitReason::Killed, ctx);
        }
        if self.proc.state == WorkerState::Backoff {
            self.settle(WorkerState::Exited, ctx);
        } else {
            self.begin_stop(self.proc.generation, ctx);
        }
    }

    /// Kills the slot's serving process (and a replacement under way).
    pub(crate) fn kill_slot(&mut self, ctx: &mut Context<Self>) {
        if let Some(generation) = self.incoming.as_ref().map(|p| p.generation) {
            self.fault(generation, ExitReason::Killed, ctx);
        }
        self.fault(self.proc.generation, ExitReason::Killed, ctx);
    }

    /// Starts a new process in this slot after `delay` (the supervisor's restart decision).
    pub(crate) fn schedule_respawn(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if !matches!(self.proc.state, WorkerState::Exited | WorkerState::Failed) {
            return;
        }
        if let Some(handle) = self.respawn.take() {
            ctx.cancel_future(handle);
        }
        if delay.is_zero() {
            self.spawn_process(ctx);
            return;
        }
        self.proc.state = WorkerState::Backoff;
        self.respawn = Some(ctx.run_later(delay, |act, ctx| {
            act.respawn = None;
            if act.proc.state == WorkerState::Backoff {
                act.spawn_process(ctx);
            }
        }));
    }

    /// Leaves the slot down for good: cancels a scheduled restart and fails what waits for it.
    pub(crate) fn settle(&mut self, state: WorkerState, ctx: &mut Context<Self>) {
        if let Some(handle) = self.respawn.take() {
            ctx.cancel_future(handle);
        }
        if matches!(
            self.proc.state,
            WorkerState::Exited | WorkerState::Backoff | WorkerState::Failed
        ) {
            self.proc.state = state;
            let reason = self.last_exit.clone().unwrap_or(ExitReason::Killed);
            self.proc.outbox.detach();
            self.proc.fail_in_flight(&CallError::WorkerExited {
                worker: self.id,
                reason: reason.clone(),
            });
            for tx in self.ready_waiters.drain(..) {
                let _ = tx.send(Err(reason.clone()));
            }
            for tx in self.exit_waiters.drain(..) {
                let _ = tx.send(reason.clone());
            }
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        self.proc.state
    }

    pub(crate) fn last_exit(&self) -> Option<&ExitReason> {
        self.last_exit.as_ref()
    }

    pub(crate) fn add_exit_waiter(&mut self, tx: OneshotSender<ExitReason>) {
        self.exit_waiters.push(tx);
    }

    pub(crate) fn add_ready_waiter(&mut self, tx: OneshotSender<Result<(), ExitReason>>) {
        self.ready_waiters.push(tx);
    }
}

#[allow(clippy::type_complexity)]
fn take_pending<R>(
    pending: &Pending<R>,
    id: u64,
) -> Result<Option<OneshotSender<Result<R, CallError>>>, ProtocolError> {
    pending
        .borrow_mut()
        .remove(&id)
        .ok_or(ProtocolError::UnknownReply { id })
}

impl<A: WorkerActor> Actor for Worker<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.spawn.config.mailbox_capacity);
        self.me = Some(ctx.address().recipient());
        self.spawn_process(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_kinds_point_at_their_names() {
        for (index, name) in [
            (REQUEST, "Request"),
            (TELL, "Tell"),
            (PING, "Ping"),
            (ASK_REPLY, "AskReply"),
            (ASK_FAILED, "AskFailed"),
            (DELIVER, "Deliver"),
            (PEER_REQUEST, "PeerRequest"),
            (NOTIFY, "Notify"),
        ] {
            assert_eq!(Envelope::KINDS[index], name);
        }
        let env = Envelope::Deliver {
            from: crate::Peer::Master,
            via: crate::Via::Direct,
            ack: None,
            payload: &[],
        };
        assert_eq!(Envelope::KINDS[env.index()], env.kind());
    }
}
