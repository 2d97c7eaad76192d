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
use crate::process::{self, ChildHandle, RawExit, SpawnSpec};
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::worker::{env, WorkerActor};

mod io;
mod messages;

pub(crate) use messages::Decided;
pub use messages::{
    AwaitReady, Call, CallResponse, FromWorker, GetInfo, Kill, Stop, Tell, TellResponse,
};

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
    pub(crate) generation: u64,
    state: WorkerState,
    spawn: Rc<SlotSpec>,
    supervisor: Recipient<WorkerEvent>,
    listeners: Rc<Vec<Recipient<FromWorker<A::Event>>>>,
    child: Option<Rc<ChildHandle>>,
    pub(crate) outbox: Outbox,
    pending: Pending<A::Reply>,
    held: Held,
    next_id: u64,
    scratch: Vec<u8>,
    fault: Option<ExitReason>,
    exit: Option<RawExit>,
    stdout_open: bool,
    stderr_open: bool,
    stderr_tail: Rc<RefCell<VecDeque<String>>>,
    ready_waiters: Vec<OneshotSender<Result<(), ExitReason>>>,
    exit_waiters: Vec<OneshotSender<ExitReason>>,
    last_exit: Option<ExitReason>,
    started_at: Option<Instant>,
    pings_sent: u64,
    pongs_seen: u64,
    respawn: Option<SpawnHandle>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: WorkerActor> fmt::Debug for Worker<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("state", &self.state)
            .field("pid", &self.pid())
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
        })
    }
}

impl<A: WorkerActor> Worker<A> {
    pub(crate) fn new(
        id: WorkerId,
        spawn: Rc<SlotSpec>,
        supervisor: Recipient<WorkerEvent>,
        listeners: Rc<Vec<Recipient<FromWorker<A::Event>>>>,
    ) -> Self {
        let outbox = Outbox::new(spawn.config.max_frame_bytes, spawn.config.max_outbox_bytes);
        Self {
            id,
            generation: 0,
            state: WorkerState::Spawning,
            spawn,
            supervisor,
            listeners,
            child: None,
            outbox,
            pending: Rc::default(),
            held: Rc::default(),
            next_id: 0,
            scratch: Vec::new(),
            fault: None,
            exit: None,
            stdout_open: false,
            stderr_open: false,
            stderr_tail: Rc::default(),
            ready_waiters: Vec::new(),
            exit_waiters: Vec::new(),
            last_exit: None,
            started_at: None,
            pings_sent: 0,
            pongs_seen: 0,
            respawn: None,
            _actor: PhantomData,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid())
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.id,
            pid: self.pid(),
            state: self.state,
            generation: self.generation,
        }
    }

    fn emit(&self, kind: WorkerEventKind) {
        self.supervisor.do_send(WorkerEvent {
            worker: self.id,
            generation: self.generation,
            pid: self.pid(),
            kind,
        });
    }

    /// Starts a new process behind this slot.
    fn spawn_process(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.state = WorkerState::Spawning;
        self.fault = None;
        self.exit = None;
        self.stderr_tail.borrow_mut().clear();
        let config = &self.spawn.config;
        let mut env = self.spawn.env.clone();
        for (key, value) in [
            (env::WORKER_ID, self.id.to_string()),
            (env::GENERATION, generation.to_string()),
            (env::MASTER_PID, std::process::id().to_string()),
            (env::MAX_FRAME_BYTES, config.max_frame_bytes.to_string()),
        ] {
            env.push((key.into(), value.into()));
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
        let parts = result.and_then(|spawned| {
            spawned.into_async().map_err(|e| SpawnError {
                program,
                kind: e.kind(),
                message: e.to_string(),
            })
        });
        let (pipes, child) = match parts {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!(worker = self.id, generation, error = %e, "worker failed to spawn");
                self.exit = Some(RawExit::Code(-1));
                self.fault = Some(ExitReason::SpawnFailed(e));
                self.finalize(generation);
                return;
            }
        };
        let child = Rc::new(child);
        let pid = child.pid();
        self.child = Some(Rc::clone(&child));
        self.started_at = Some(Instant::now());
        self.pings_sent = 0;
        self.pongs_seen = 0;
        self.state = WorkerState::Starting;
        self.stdout_open = true;
        self.stderr_open = true;
        self.outbox.attach(pipes.stdin);
        tracing::debug!(worker = self.id, pid, generation, "worker spawned");
        self.emit(WorkerEventKind::Spawned);

        let max_frame = self.spawn.config.max_frame_bytes;
        ctx.spawn(ReadFrames::new(generation, pipes.stdout, max_frame));
        ctx.spawn(
            io::read_stderr(pipes.stderr, self.id, pid, Rc::clone(&self.stderr_tail))
                .into_actor(self)
                .map(move |(), act, ctx| {
                    if act.generation == generation {
                        act.stderr_open = false;
                        act.try_finalize(generation, ctx);
                    }
                }),
        );
        ctx.spawn(
            async move { child.wait().await }
                .into_actor(self)
                .map(move |raw, act, ctx| act.exited(generation, raw, ctx)),
        );
        ctx.run_later(self.spawn.config.ready_timeout, move |act, ctx| {
            let starting = matches!(act.state, WorkerState::Starting | WorkerState::Online);
            if act.generation == generation && starting {
                act.fault(generation, ExitReason::ReadyTimeout, ctx);
            }
        });
        self.kick_writer(ctx);
    }

    /// Makes sure a [`Flush`] runs while the outbox holds frames.
    pub(crate) fn kick_writer(&mut self, ctx: &mut Context<Self>) {
        if !self.outbox.flushing && self.outbox.is_attached() && self.outbox.len() > 0 {
            self.outbox.flushing = true;
            ctx.spawn(Flush);
        }
    }

    /// Lets awaiting senders of one-way messages go once the outbox is below its high-water mark.
    pub(crate) fn release_held_tells(&mut self) {
        if self.outbox.len() <= self.high_water() {
            for tx in self.held.borrow_mut().drain(..) {
                let _ = tx.send(Ok(()));
            }
        }
    }

    pub(crate) fn high_water(&self) -> usize {
        self.outbox.limit() / 16
    }

    /// Whether new messages are taken now; the error to give if not.
    pub(crate) fn accepting(&self) -> Result<(), CallError> {
        match self.state {
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

    /// Queues a request and returns its correlation id.
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
        self.outbox.push(self.id, &env)?;
        self.next_id += 1;
        self.kick_writer(ctx);
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
        self.outbox.push(self.id, &env)?;
        self.kick_writer(ctx);
        Ok(self.outbox.len() > self.high_water())
    }

    pub(crate) fn pending(&self) -> &Pending<A::Reply> {
        &self.pending
    }

    pub(crate) fn held(&self) -> &Held {
        &self.held
    }

    /// Handles one frame from the worker.
    fn on_frame(&mut self, frame: &[u8], ctx: &mut Context<Self>) -> Result<(), ProtocolError> {
        let envelope = decode_envelope(frame)?;
        match (self.state, envelope) {
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
                if Some(pid) != self.pid() {
                    tracing::debug!(worker = self.id, hello_pid = pid, "Hello from another pid");
                }
                self.state = WorkerState::Online;
                self.emit(WorkerEventKind::Online);
            }
            (WorkerState::Starting, other) => {
                return Err(ProtocolError::Unexpected {
                    got: other.kind(),
                    state: "waiting for Hello",
                })
            }
            (WorkerState::Online, Envelope::Ready) => {
                self.state = WorkerState::Ready;
                self.emit(WorkerEventKind::Ready);
                for tx in self.ready_waiters.drain(..) {
                    let _ = tx.send(Ok(()));
                }
                self.start_heartbeat(ctx);
            }
            (WorkerState::Ready | WorkerState::Stopping, Envelope::Pong { seq }) => {
                self.pongs_seen = self.pongs_seen.max(seq);
            }
            (_, Envelope::Reply { id, payload }) => {
                let tx = self.take_pending(id)?;
                let reply = crate::codec::decode_value(payload)
                    .map_err(|e| CallError::BadReply(e.to_string()));
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
            (_, Envelope::Failed { id, error }) => {
                if let Some(tx) = self.take_pending(id)? {
                    let _ = tx.send(Err(CallError::Failed(error.to_owned())));
                }
            }
            (
                WorkerState::Online | WorkerState::Ready | WorkerState::Stopping,
                Envelope::Event { payload },
            ) => {
                self.deliver_event(payload);
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

    /// Pings the worker every heartbeat interval while this process lives; kills it after
    /// `heartbeat_misses` pings in a row go unanswered.
    fn start_heartbeat(&mut self, ctx: &mut Context<Self>) {
        let interval = self.spawn.config.heartbeat_interval;
        if interval.is_zero() {
            return;
        }
        let generation = self.generation;
        let misses = u64::from(self.spawn.config.heartbeat_misses.max(1));
        ctx.run_interval(interval, move |act, ctx| {
            let alive = matches!(act.state, WorkerState::Ready | WorkerState::Stopping);
            if act.generation != generation || !alive {
                // This process is gone; a new one starts its own heartbeat.
                ctx.cancel_future(ctx.handle());
                return;
            }
            if act.pings_sent - act.pongs_seen >= misses {
                act.fault(generation, ExitReason::HeartbeatTimeout, ctx);
                return;
            }
            act.pings_sent += 1;
            let ping = Envelope::Ping {
                seq: act.pings_sent,
            };
            // A full outbox is a missed heartbeat too; the worker is not reading.
            if act.outbox.push(act.id, &ping).is_ok() {
                act.kick_writer(ctx);
            }
        });
    }

    #[allow(clippy::type_complexity)]
    fn take_pending(
        &mut self,
        id: u64,
    ) -> Result<Option<OneshotSender<Result<A::Reply, CallError>>>, ProtocolError> {
        self.pending
            .borrow_mut()
            .remove(&id)
            .ok_or(ProtocolError::UnknownReply { id })
    }

    fn deliver_event(&self, payload: &[u8]) {
        let pid = self.pid().unwrap_or_default();
        for listener in self.listeners.iter() {
            match crate::codec::decode_value::<A::Event>(payload) {
                Ok(msg) => listener.do_send(FromWorker {
                    worker: self.id,
                    pid,
                    generation: self.generation,
                    msg,
                }),
                Err(e) => {
                    tracing::warn!(worker = self.id, pid, error = %e, "event from worker did not decode; dropped");
                    return;
                }
            }
        }
    }

    /// Ends the current process for `reason`: kills its process group and fails what is in flight.
    pub(crate) fn fault(&mut self, generation: u64, reason: ExitReason, _ctx: &mut Context<Self>) {
        if generation != self.generation
            || self.fault.is_some()
            || self.state == WorkerState::Exited
        {
            return;
        }
        let pid = self.pid();
        match &reason {
            ExitReason::Protocol(e) => {
                tracing::error!(worker = self.id, pid, generation, error = %e, "protocol violation; killing worker");
            }
            other => {
                tracing::warn!(worker = self.id, pid, generation, reason = %other, "killing worker")
            }
        }
        if let Some(child) = &self.child {
            child.signal_group(Signal::SIGKILL);
        }
        self.fail_in_flight(&reason);
        self.fault = Some(reason);
    }

    fn fail_in_flight(&mut self, reason: &ExitReason) {
        let error = CallError::WorkerExited {
            worker: self.id,
            reason: reason.clone(),
        };
        for (_, tx) in self.pending.borrow_mut().drain() {
            if let Some(tx) = tx {
                let _ = tx.send(Err(error.clone()));
            }
        }
        for tx in self.held.borrow_mut().drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
    }

    pub(crate) fn stdout_closed(&mut self, generation: u64, ctx: &mut Context<Self>) {
        if generation == self.generation {
            self.stdout_open = false;
            self.try_finalize(generation, ctx);
        }
    }

    fn exited(&mut self, generation: u64, raw: RawExit, ctx: &mut Context<Self>) {
        if generation != self.generation {
            return;
        }
        self.exit = Some(raw);
        if self.stdout_open || self.stderr_open {
            ctx.run_later(DRAIN_AFTER_EXIT, move |act, _| act.finalize(generation));
        }
        self.try_finalize(generation, ctx);
    }

    fn try_finalize(&mut self, generation: u64, _ctx: &mut Context<Self>) {
        if !self.stdout_open && !self.stderr_open && self.exit.is_some() {
            self.finalize(generation);
        }
    }

    /// The process is reaped and its output read (or the wait for it is over): report the exit.
    fn finalize(&mut self, generation: u64) {
        if generation != self.generation || self.state == WorkerState::Exited {
            return;
        }
        let Some(raw) = self.exit else { return };
        let reason = self.fault.take().unwrap_or(match raw {
            RawExit::Code(code) => ExitReason::Exited(code),
            RawExit::Signal(signal) => ExitReason::Signaled(signal),
        });
        let pid = self.pid();
        if reason.is_normal() {
            tracing::info!(worker = self.id, pid, generation, "worker exited");
        } else {
            tracing::warn!(worker = self.id, pid, generation, %reason, "worker exited");
        }
        self.state = WorkerState::Exited;
        self.outbox.detach();
        self.outbox.flushing = false;
        self.fail_in_flight(&reason);
        for tx in self.ready_waiters.drain(..) {
            let _ = tx.send(Err(reason.clone()));
        }
        for tx in self.exit_waiters.drain(..) {
            let _ = tx.send(reason.clone());
        }
        let last_stderr = self.stderr_tail.borrow().iter().cloned().collect();
        let uptime = self
            .started_at
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.emit(WorkerEventKind::Exited {
            reason: reason.clone(),
            last_stderr,
            uptime,
        });
        self.child = None;
        self.last_exit = Some(reason);
    }

    /// Starts a graceful stop: `Shutdown`, then SIGKILL after the shutdown timeout.
    pub(crate) fn begin_stop(&mut self, ctx: &mut Context<Self>) {
        if !matches!(
            self.state,
            WorkerState::Starting | WorkerState::Online | WorkerState::Ready
        ) {
            return;
        }
        self.state = WorkerState::Stopping;
        // Past the limit or not, Shutdown must go out: bypass the backpressure check.
        if let Err(e) = self.outbox.push_control(&Envelope::Shutdown) {
            tracing::warn!(worker = self.id, error = %e, "cannot queue Shutdown; killing");
            self.fault(self.generation, ExitReason::ShutdownTimeout, ctx);
            return;
        }
        self.kick_writer(ctx);
        let generation = self.generation;
        ctx.run_later(self.spawn.config.shutdown_timeout, move |act, ctx| {
            if act.generation == generation && act.state == WorkerState::Stopping {
                act.fault(generation, ExitReason::ShutdownTimeout, ctx);
            }
        });
    }

    /// Starts a new process in this slot after `delay` (the supervisor's restart decision).
    pub(crate) fn schedule_respawn(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if !matches!(self.state, WorkerState::Exited | WorkerState::Failed) {
            return;
        }
        if let Some(handle) = self.respawn.take() {
            ctx.cancel_future(handle);
        }
        if delay.is_zero() {
            self.spawn_process(ctx);
            return;
        }
        self.state = WorkerState::Backoff;
        self.respawn = Some(ctx.run_later(delay, |act, ctx| {
            act.respawn = None;
            if act.state == WorkerState::Backoff {
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
            self.state,
            WorkerState::Exited | WorkerState::Backoff | WorkerState::Failed
        ) {
            self.state = state;
            let reason = self.last_exit.clone().unwrap_or(ExitReason::Killed);
            self.outbox.detach();
            self.fail_in_flight(&reason);
            for tx in self.ready_waiters.drain(..) {
                let _ = tx.send(Err(reason.clone()));
            }
            for tx in self.exit_waiters.drain(..) {
                let _ = tx.send(reason.clone());
            }
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        self.state
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

impl<A: WorkerActor> Actor for Worker<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.spawn.config.mailbox_capacity);
        self.spawn_process(ctx);
    }
}
