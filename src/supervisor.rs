//! The cluster: [`ClusterSupervisor`], the actor that owns the worker slots and applies the
//! restart policy, and [`Cluster`], the typed handle that [`ClusterSupervisor::start`] returns.
//!
//! Starting a cluster validates its configuration (nothing starts if it is bad), starts one
//! [`Worker`] proxy per slot, each of which spawns its process, and returns once every worker is
//! ready. If one fails to start, the others are stopped and the error names the slot and why.
//!
//! # Supervision
//! When a worker's process exits on its own (not because it was asked to stop), the supervisor
//! asks the [`RestartPolicy`]: restart it (after a backoff), leave it down, or give up. Under
//! `one_for_all` and `rest_for_one` the other affected workers are stopped first, and only when
//! every old process is gone are the new ones started, in slot order, each awaited until ready.
//! Giving up escalates as configured: stop the cluster, so that [`Cluster::wait`] returns
//! [`Error::GaveUp`] to the program's `main`, or mark the group failed and go on.
//!
//! Every lifecycle event passes through the supervisor, which logs it and hands it to the
//! recipients registered with [`ClusterBuilder::subscribe`].
//!
//! # Stopping
//! [`Cluster::stop`], SIGTERM and SIGINT (unless `handle_signals` is off) stop the workers one
//! by one in reverse slot order, each gracefully (`Shutdown`, its `stopping` hook, SIGKILL after
//! the shutdown timeout), then resolve [`Cluster::wait`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::ClusterConfig;
use crate::error::Error;
use crate::event::{ExitReason, WorkerEvent, WorkerEventKind, WorkerId, WorkerInfo, WorkerState};
use crate::listen::ListenAddr;
use crate::messaging::{AskError, ClusterInfo, Peer, Via, WorkerStats};
use crate::proxy::{
    AwaitReady, Decided, FromWorker, GetInfo, GetStats, GetSummary, Handlers, Kill, Links, Replace,
    RequestHandler, SlotSpec, Stop, Worker, WorkerRequest,
};
use crate::routing::{OwnedOp, ReplyTo, Routed, SharedRouting, SystemCall};
use crate::worker::WorkerActor;

mod groups;
mod policy;
mod rolling;

pub use groups::{GroupHandlers, GroupKey, Groups, GroupsBuilder};
pub use policy::{Backoff, Escalation, Intensity, RestartPolicy, RestartType, Strategy};
use policy::{Decision, ExitKind, PolicyState};
pub use rolling::{ReloadError, ReloadEvent, ReloadReport};

/// The supervisor actor of a cluster: it owns the worker slots, applies the restart policy and
/// passes on their events.
pub struct ClusterSupervisor {
    subscribers: Vec<Recipient<WorkerEvent>>,
    slots: Vec<Slot>,
    groups: Vec<GroupState>,
    respawn: bool,
    handle_signals: bool,
    stopping: bool,
    finished: bool,
    outcome: Option<Result<(), (WorkerId, ExitReason)>>,
    waiters: Vec<oneshot::Sender<Result<(), (WorkerId, ExitReason)>>>,
    reload: ReloadState,
    routing: SharedRouting,
    confirmations: Confirmations,
    /// Whether workers may kill and restart other workers.
    worker_control: bool,
    cache: crate::cache::SharedCache,
    logger: Addr<crate::logger::Logger>,
}

/// One group of slots: its restart policy and which slots are its, in order.
struct GroupState {
    name: String,
    policy: PolicyState,
    members: Vec<WorkerId>,
}

/// Keys confirmed by workers, and who waits for how many.
#[derive(Default)]
struct Confirmations {
    confirmed: std::collections::HashMap<String, Vec<WorkerId>>,
    waiting: std::collections::HashMap<u64, (String, usize, ReplyTo)>,
    next: u64,
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, AskError> {
    let mut buf = Vec::new();
    crate::codec::encode_value(&mut buf, value).map_err(|e| AskError::Failed(e.to_string()))?;
    Ok(buf.into())
}

type ReloadWaiter = oneshot::Sender<Result<ReloadReport, ReloadError>>;

/// Rolling reloads: the one running, the one queued behind it, and who hears of their progress.
#[derive(Default)]
struct ReloadState {
    subscribers: Vec<Recipient<ReloadEvent>>,
    running: bool,
    /// A reload asked for during the running one, with everyone waiting for it.
    queued: Option<Vec<ReloadWaiter>>,
    /// Set when the cluster stops; a running reload ends at its next step.
    cancelled: Rc<Cell<bool>>,
    delay: std::time::Duration,
    /// Whether workers may ask for one.
    from_workers: bool,
}

/// How a slot is to be treated when its process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Supervised: an exit goes to the restart policy.
    Active,
    /// Being stopped on purpose: its exit is final.
    Stopping,
    /// Stopped for good, or left down by the policy.
    Down,
    /// Being stopped by a one_for_all / rest_for_one restart: it comes back with the group.
    GroupStop,
    /// Gave up on.
    Failed,
}

/// The typed proxy's controls, without its type.
struct Slot {
    mode: Mode,
    group: usize,
    stop: Recipient<Stop>,
    kill: Recipient<Kill>,
    info: Recipient<GetInfo>,
    ready: Recipient<AwaitReady>,
    decided: Recipient<Decided>,
    replace: Recipient<Replace>,
    summary: Recipient<GetSummary>,
    stats: Recipient<GetStats>,
}

impl Slot {
    fn of<A: WorkerActor>(addr: &Addr<Worker<A>>, group: usize) -> Self {
        Self {
            mode: Mode::Active,
            group,
            stop: addr.clone().recipient(),
            kill: addr.clone().recipient(),
            info: addr.clone().recipient(),
            ready: addr.clone().recipient(),
            decided: addr.clone().recipient(),
            replace: addr.clone().recipient(),
            summary: addr.clone().recipient(),
            stats: addr.clone().recipient(),
        }
    }
}

impl fmt::Debug for ClusterSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSupervisor")
            .field("workers", &self.slots.len())
            .field("subscribers", &self.subscribers.len())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl Actor for ClusterSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.handle_signals {
            let me = ctx.address();
            ctx.spawn(
                async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::hangup()),
                    ) else {
                        tracing::warn!("cannot install SIGTERM/SIGINT/SIGHUP handlers");
                        return;
                    };
                    loop {
                        let name = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                            _ = hup.recv() => {
                                tracing::info!(signal = "SIGHUP", "rolling reload requested");
                                me.do_send(Control::Reload(None));
                                continue;
                            }
                        };
                        tracing::info!(signal = name, "stopping the cluster");
                        me.do_send(StopAll);
                        return;
                    }
                }
                .into_actor(self),
            );
        }
    }
}

impl ClusterSupervisor {
    /// Starts a cluster of `A` workers with no event subscribers; see [`ClusterBuilder`].
    ///
    /// # Errors
    /// As [`ClusterBuilder::start`].
    pub async fn start<A: WorkerActor>(config: ClusterConfig) -> Result<Cluster<A>, Error> {
        Self::builder(config).start().await
    }

    /// A builder for a cluster of `A` workers, to register event handlers before anything starts.
    pub fn builder<A: WorkerActor>(config: ClusterConfig) -> ClusterBuilder<A> {
        ClusterBuilder {
            config,
            subscribers: Vec::new(),
            listeners: Vec::new(),
            requests: None,
            reload_subscribers: Vec::new(),
            log_sinks: Vec::new(),
        }
    }

    fn publish(&self, worker: WorkerId, kind: WorkerEventKind, generation: u64) {
        let event = WorkerEvent {
            worker,
            generation,
            pid: None,
            kind,
        };
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
    }

    /// Applies the restart policy to an exit of slot `worker`.
    fn on_exit(
        &mut self,
        worker: WorkerId,
        generation: u64,
        reason: &ExitReason,
        uptime: std::time::Duration,
        last_stderr: &[String],
        ctx: &mut Context<Self>,
    ) {
        let Some(slot) = self.slots.get_mut(worker) else {
            return;
        };
        match slot.mode {
            Mode::Active if !self.stopping && self.respawn => {}
            Mode::Active | Mode::Stopping => {
                slot.mode = Mode::Down;
                return;
            }
            // Stopped by a fail-group escalation: down for good, marked failed.
            Mode::Failed => {
                slot.decided.do_send(Decided::Settle(WorkerState::Failed));
                return;
            }
            Mode::GroupStop | Mode::Down => return,
        }
        let kind = if reason.is_permanent() {
            ExitKind::Permanent
        } else if reason.is_normal() {
            ExitKind::Normal
        } else {
            ExitKind::Abnormal
        };
        let now = Instant::now();
        let g = self.slots[worker].group;
        let Some(local) = self.groups[g].members.iter().position(|&m| m == worker) else {
            return;
        };
        let decision = self.groups[g].policy.on_exit(local, kind, uptime, now);
        let decision = match decision {
            Decision::Restart { slots, delay } => Decision::Restart {
                slots: slots.iter().map(|&l| self.groups[g].members[l]).collect(),
                delay,
            },
            other => other,
        };
        match decision {
            Decision::Stay => self.slots[worker].mode = Mode::Down,
            Decision::Fail => {
                self.slots[worker].mode = Mode::Failed;
                self.slots[worker]
                    .decided
                    .do_send(Decided::Settle(WorkerState::Failed));
                let restarts = self.groups[g].policy.restarts_in_window(now);
                tracing::error!(worker, %reason, "permanent fault; the slot stays down");
                let reason = reason.clone();
                self.publish(
                    worker,
                    WorkerEventKind::GaveUp {
                        reason,
                        restarts,
                        last_stderr: last_stderr.to_vec(),
                    },
                    generation,
                );
            }
            Decision::Restart { slots, delay } => {
                tracing::info!(worker, ?delay, ?slots, "restarting");
                for &s in &slots {
                    self.publish(s, WorkerEventKind::Restarting { delay }, generation);
                }
                if slots.len() == 1 {
                    self.slots[worker].decided.do_send(Decided::Respawn(delay));
                } else {
                    self.begin_group_restart(slots, delay, ctx);
                }
            }
            Decision::GiveUp(escalation) => {
                let restarts = self.groups[g].policy.restarts_in_window(now);
                let group = self.groups[g].name.clone();
                tracing::error!(worker, group, %reason, restarts, ?escalation, "restart intensity exceeded; giving up");
                let event = WorkerEventKind::GaveUp {
                    reason: reason.clone(),
                    restarts,
                    last_stderr: last_stderr.to_vec(),
                };
                self.publish(worker, event, generation);
                match escalation {
                    Escalation::StopCluster => {
                        self.outcome = Some(Err((worker, reason.clone())));
                        self.slots[worker].mode = Mode::Down;
                        ctx.notify(StopAll);
                    }
                    Escalation::FailGroup => {
                        let members = self.groups[g].members.clone();
                        for id in members {
                            let slot = &mut self.slots[id];
                            if id == worker || slot.mode != Mode::Active {
                                slot.decided.do_send(Decided::Settle(WorkerState::Failed));
                            } else {
                                // Stopped now, marked failed when its exit arrives.
                                slot.stop.do_send(Stop);
                            }
                            slot.mode = Mode::Failed;
                        }
                    }
                }
            }
        }
    }

    /// one_for_all / rest_for_one: stop the others in the set (reverse order), then restart all.
    fn begin_group_restart(
        &mut self,
        slots: Vec<usize>,
        delay: std::time::Duration,
        ctx: &mut Context<Self>,
    ) {
        let members: Vec<usize> = slots
            .into_iter()
            .filter(|&s| matches!(self.slots[s].mode, Mode::Active | Mode::GroupStop))
            .collect();
        for &s in members.iter().rev() {
            self.slots[s].mode = Mode::GroupStop;
        }
        let stops: Vec<_> = members
            .iter()
            .rev()
            .map(|&s| self.slots[s].stop.send(Stop))
            .collect();
        let fut = async move {
            for stop in stops {
                let _ = stop.await;
            }
            tokio::time::sleep(delay).await;
        }
        .into_actor(self)
        // Every old process is gone; start the new ones in slot order.
        .map(move |(), act, ctx| act.respawn_in_order(members.into(), ctx));
        ctx.spawn(fut);
    }

    /// Starts the next slot of a group restart, and the rest once it is ready; a cluster stop
    /// in the meantime ends the sequence.
    fn respawn_in_order(&mut self, mut slots: VecDeque<usize>, ctx: &mut Context<Self>) {
        let Some(s) = slots.pop_front() else { return };
        if self.stopping {
            return;
        }
        let slot = &mut self.slots[s];
        if slot.mode != Mode::GroupStop {
            return self.respawn_in_order(slots, ctx);
        }
        slot.mode = Mode::Active;
        slot.decided
            .do_send(Decided::Respawn(std::time::Duration::ZERO));
        let ready = slot.ready.send(AwaitReady);
        ctx.spawn(
            async move {
                let _ = ready.await;
            }
            .into_actor(self)
            .map(move |(), act, ctx| act.respawn_in_order(slots, ctx)),
        );
    }

    /// Starts a rolling reload, or queues one behind the reload that is running.
    fn request_reload(&mut self, waiter: Option<ReloadWaiter>, ctx: &mut Context<Self>) {
        if self.stopping {
            if let Some(tx) = waiter {
                let _ = tx.send(Err(ReloadError::Stopping { replaced: 0 }));
            }
            return;
        }
        if self.reload.running {
            tracing::info!("a reload is running; the new request is queued behind it");
            self.reload
                .queued
                .get_or_insert_with(Vec::new)
                .extend(waiter);
            return;
        }
        self.start_reload(waiter.into_iter().collect(), ctx);
    }

    fn start_reload(&mut self, waiters: Vec<ReloadWaiter>, ctx: &mut Context<Self>) {
        self.reload.running = true;
        let slots = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.mode == Mode::Active)
            .map(|(id, slot)| (id, slot.replace.clone()))
            .collect();
        let run = rolling::run(
            slots,
            self.reload.delay,
            Rc::clone(&self.reload.cancelled),
            self.reload.subscribers.clone(),
        );
        ctx.spawn(run.into_actor(self).map(move |result, act, ctx| {
            for tx in waiters {
                let _ = tx.send(result.clone());
            }
            act.reload.running = false;
            // A stop takes the queued reload's waiters (and answers them) before this runs.
            if let Some(next) = act.reload.queued.take() {
                act.start_reload(next, ctx);
            }
        }));
    }

    fn finish(&mut self) {
        self.finished = true;
        let outcome = self.outcome.clone().unwrap_or(Ok(()));
        self.outcome = Some(outcome.clone());
        for tx in self.waiters.drain(..) {
            let _ = tx.send(outcome.clone());
        }
    }
}

/// Configures a cluster's handlers, then starts it.
///
/// ```no_run
/// # use procactor::prelude::*;
/// # use procactor::actors::echo::Echo;
/// # async fn f(events: Recipient<WorkerEvent>) -> Result<(), procactor::Error> {
/// let cluster = ClusterSupervisor::builder::<Echo>(ClusterConfig::new().workers(2))
///     .subscribe(events)
///     .start()
///     .await?;
/// cluster.stop().await
/// # }
/// ```
pub struct ClusterBuilder<A: WorkerActor> {
    config: ClusterConfig,
    subscribers: Vec<Recipient<WorkerEvent>>,
    listeners: Vec<Recipient<FromWorker<A::Event>>>,
    requests: Option<RequestHandler>,
    reload_subscribers: Vec<Recipient<ReloadEvent>>,
    log_sinks: Vec<Box<dyn crate::logger::Sink>>,
}

impl<A: WorkerActor> fmt::Debug for ClusterBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> ClusterBuilder<A> {
    /// Receives every worker's lifecycle events: spawned, online, ready, exited, restarting,
    /// gave up.
    pub fn subscribe(mut self, recipient: Recipient<WorkerEvent>) -> Self {
        self.subscribers.push(recipient);
        self
    }

    /// Receives the one-way messages that workers send with
    /// [`WorkerContext::send_master`](crate::WorkerContext::send_master).
    pub fn on_message(mut self, recipient: Recipient<FromWorker<A::Event>>) -> Self {
        self.listeners.push(recipient);
        self
    }

    /// Answers the requests that workers send with
    /// [`WorkerHandle::ask_master`](crate::WorkerHandle::ask_master): each arrives as a
    /// [`WorkerRequest`] carrying the worker's `Event` type, and the recipient's `R` goes back to
    /// the worker. A request that does not decode as `A::Event` fails with
    /// [`AskError::Failed`] on the worker's side.
    pub fn on_request<R>(mut self, recipient: Recipient<WorkerRequest<A::Event, R>>) -> Self
    where
        R: serde::Serialize + Send + 'static,
    {
        let handler = request_handler::<A, R>(recipient);
        self.requests = Some(handler);
        self
    }

    /// Adds a sink for the cluster's log records, besides the files, the in-memory ring and
    /// `tracing` that [`LogConfig`](crate::logger::LogConfig) sets up.
    pub fn log_sink(mut self, sink: Box<dyn crate::logger::Sink>) -> Self {
        self.log_sinks.push(sink);
        self
    }

    /// Receives the progress of rolling reloads: started, each worker replaced, done or failed.
    pub fn on_reload(mut self, recipient: Recipient<ReloadEvent>) -> Self {
        self.reload_subscribers.push(recipient);
        self
    }

    /// Validates the configuration, starts every worker and waits until all are ready.
    ///
    /// Must be called from within an actix system; the actors run on the current arbiter.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration (nothing was started); [`Error::StartFailed`]
    /// when a worker could not be spawned or did not become ready (the others are stopped first).
    pub async fn start(self) -> Result<Cluster<A>, Error> {
        self.config.validate()?;
        let core = Core::start(
            &self.config,
            self.subscribers,
            self.reload_subscribers,
            self.log_sinks,
        )?;
        let handlers = Rc::new(Handlers {
            listeners: self.listeners,
            requests: self.requests,
        });
        let cluster = core.start_group::<A>(DEFAULT_GROUP, &self.config, handlers)?;
        core.finish_start(cluster.readiness()).await?;
        Ok(cluster)
    }
}

/// The master's handler for requests from `A` workers, answering with `recipient`'s `R`.
pub(crate) fn request_handler<A, R>(
    recipient: Recipient<WorkerRequest<A::Event, R>>,
) -> RequestHandler
where
    A: WorkerActor,
    R: serde::Serialize + Send + 'static,
{
    Rc::new(move |from, payload| {
        let msg = crate::codec::decode_value::<A::Event>(payload);
        let recipient = recipient.clone();
        Box::pin(async move {
            let msg = msg.map_err(|e| AskError::Failed(format!("request did not decode: {e}")))?;
            let answer = recipient
                .send(WorkerRequest::new(from, msg))
                .await
                .map_err(|e| AskError::Failed(format!("the master's handler is gone: {e}")))?;
            encoded(&answer)
        })
    })
}

/// The name of a cluster's only group when it was not given groups.
pub const DEFAULT_GROUP: &str = "workers";

/// What every group of a cluster shares: its supervisor, routing, cache and logger.
#[derive(Clone)]
pub(crate) struct Core {
    supervisor: Addr<ClusterSupervisor>,
    routing: SharedRouting,
    cache: crate::cache::SharedCache,
    log: crate::logger::LogLink,
    /// The next slot id, across groups.
    next_id: Rc<std::cell::Cell<usize>>,
    groups: Rc<std::cell::Cell<usize>>,
}

impl Core {
    /// Starts the supervisor, the cache and the logger; no worker yet.
    fn start(
        config: &ClusterConfig,
        subscribers: Vec<Recipient<WorkerEvent>>,
        reload_subscribers: Vec<Recipient<ReloadEvent>>,
        log_sinks: Vec<Box<dyn crate::logger::Sink>>,
    ) -> Result<Self, Error> {
        let routing: SharedRouting = Rc::default();
        let logger = crate::logger::Logger::new(&config.log, log_sinks).map_err(|e| {
            crate::error::ConfigError {
                field: "log",
                reason: format!("cannot open the log files: {e}"),
            }
        })?;
        let log_queue = logger.queue();
        let logger = logger.start();
        let log = crate::logger::LogLink {
            logger: logger.clone(),
            queue: log_queue,
        };
        let cache = crate::cache::SharedCache::start(&config.cache, Rc::clone(&routing));
        let reload = ReloadState {
            subscribers: reload_subscribers,
            delay: config.reload_delay,
            from_workers: config.worker_reload,
            ..ReloadState::default()
        };
        let supervisor = ClusterSupervisor {
            subscribers,
            slots: Vec::new(),
            groups: Vec::new(),
            // Restarts begin once every worker has been ready: a failed start is reported,
            // not retried.
            respawn: false,
            handle_signals: config.handle_signals,
            stopping: false,
            finished: false,
            outcome: None,
            waiters: Vec::new(),
            reload,
            routing: Rc::clone(&routing),
            confirmations: Confirmations::default(),
            worker_control: config.worker_control,
            cache: cache.clone(),
            logger,
        }
        .start();
        Ok(Self {
            supervisor,
            routing,
            cache,
            log,
            next_id: Rc::default(),
            groups: Rc::default(),
        })
    }

    /// Starts a group of `A` workers run as `config` says (its processes start now).
    fn start_group<A: WorkerActor>(
        &self,
        name: &str,
        config: &ClusterConfig,
        handlers: Rc<Handlers<A>>,
    ) -> Result<Cluster<A>, Error> {
        let group = self.groups.get();
        self.groups.set(group + 1);
        let mut spec = SlotSpec::from_config(config)?;
        spec.group = name.to_owned();
        let spec = Rc::new(spec);
        self.supervisor.do_send(Control::AddGroup {
            name: name.to_owned(),
            policy: config.restart,
        });
        let links = Links {
            events: self.supervisor.clone().recipient(),
            system: self.supervisor.clone().recipient(),
            routing: Rc::clone(&self.routing),
            cache: self.cache.clone(),
            log: self.log.clone(),
            handlers,
        };
        let cluster = Cluster {
            supervisor: self.supervisor.clone(),
            workers: Rc::default(),
            ids: Rc::default(),
            group,
            next_id: Rc::clone(&self.next_id),
            spec,
            links,
        };
        for _ in 0..config.worker_count() {
            cluster.add_slot();
        }
        Ok(cluster)
    }

    /// Waits until every one of `slots` is ready, then turns restarts on; stops the cluster and
    /// reports the first failure otherwise.
    async fn finish_start(
        &self,
        slots: Vec<(WorkerId, Recipient<AwaitReady>)>,
    ) -> Result<(), Error> {
        let readiness: Vec<_> = slots
            .into_iter()
            .map(|(id, ready)| (id, ready.send(AwaitReady)))
            .collect();
        let mut failure = None;
        for (worker, ready) in readiness {
            let result = ready.await.unwrap_or(Err(ExitReason::Killed));
            if let (Err(reason), None) = (result, &failure) {
                failure = Some(Error::StartFailed { worker, reason });
            }
        }
        match failure {
            None => {
                self.supervisor.send(Control::Respawn(true)).await?;
                Ok(())
            }
            Some(error) => {
                self.supervisor.send(StopAll).await?;
                Err(error)
            }
        }
    }
}

impl Handler<WorkerEvent> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent, ctx: &mut Context<Self>) {
        let WorkerEvent {
            worker,
            generation,
            pid,
            ..
        } = event;
        match &event.kind {
            WorkerEventKind::Ready => tracing::info!(worker, pid, generation, "worker ready"),
            kind => tracing::debug!(worker, pid, generation, ?kind, "worker event"),
        }
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
        if event.kind == WorkerEventKind::ReloadRequested {
            if self.reload.from_workers {
                tracing::info!(worker, pid, "rolling reload requested by a worker");
                self.request_reload(None, ctx);
            } else {
                tracing::warn!(
                    worker,
                    pid,
                    "a worker asked for a reload, but worker_reload is off; ignored"
                );
            }
        }
        if let WorkerEventKind::Exited {
            reason,
            uptime,
            last_stderr,
        } = &event.kind
        {
            self.on_exit(worker, generation, reason, *uptime, last_stderr, ctx);
        }
    }
}

/// Stops every worker gracefully, one by one from the last slot, and resolves once all are
/// reaped, with each slot's exit reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopAll;

impl Message for StopAll {
    type Result = Vec<ExitReason>;
}

impl Handler<StopAll> for ClusterSupervisor {
    type Result = ResponseActFuture<Self, Vec<ExitReason>>;

    fn handle(&mut self, _: StopAll, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.reload.cancelled.set(true);
        if let Some(waiters) = self.reload.queued.take() {
            for tx in waiters {
                let _ = tx.send(Err(ReloadError::Stopping { replaced: 0 }));
            }
        }
        let stops: Vec<_> = self
            .slots
            .iter_mut()
            .map(|slot| {
                if slot.mode == Mode::Active {
                    slot.mode = Mode::Stopping;
                }
                slot.stop.clone()
            })
            .collect();
        let close_cache = self.cache.close();
        let logger = self.logger.clone();
        Box::pin(
            async move {
                let mut reasons = Vec::with_capacity(stops.len());
                for stop in stops.iter().rev() {
                    reasons.push(stop.send(Stop).await.unwrap_or(ExitReason::Killed));
                }
                reasons.reverse();
                // Then the cache: its snapshot, if it keeps one, is written last.
                close_cache.await;
                // And the logger: every record queued so far is written and flushed.
                let _ = logger.send(crate::logger::CloseLogs).await;
                reasons
            }
            .into_actor(self)
            .map(|reasons, act, _ctx| {
                act.finish();
                reasons
            }),
        )
    }
}

/// Lists every worker slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListWorkers;

impl Message for ListWorkers {
    type Result = Vec<WorkerInfo>;
}

impl Handler<ListWorkers> for ClusterSupervisor {
    type Result = ResponseFuture<Vec<WorkerInfo>>;

    fn handle(&mut self, _: ListWorkers, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self.slots.iter().map(|s| s.info.send(GetInfo)).collect();
        Box::pin(async move {
            let mut infos = Vec::with_capacity(asks.len());
            for ask in asks {
                if let Ok(info) = ask.await {
                    infos.push(info);
                }
            }
            infos
        })
    }
}

/// Scales to `n` running workers; resolves with the number of slots still to add.
#[derive(Debug, Clone, Copy)]
struct Scale {
    group: usize,
    n: usize,
}

impl Message for Scale {
    type Result = Result<usize, Error>;
}

impl Handler<Scale> for ClusterSupervisor {
    type Result = ResponseFuture<Result<usize, Error>>;

    fn handle(&mut self, Scale { group, n }: Scale, _ctx: &mut Context<Self>) -> Self::Result {
        let members = self
            .groups
            .get(group)
            .map(|g| g.members.clone())
            .unwrap_or_default();
        let running: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&id| matches!(self.slots[id].mode, Mode::Active | Mode::GroupStop))
            .collect();
        if n < running.len() {
            let stops: Vec<_> = running[n..]
                .iter()
                .rev()
                .map(|&id| {
                    tracing::info!(worker = id, "scaling down: stopping");
                    self.slots[id].mode = Mode::Stopping;
                    self.slots[id].stop.send(Stop)
                })
                .collect();
            return Box::pin(async move {
                for stop in stops {
                    stop.await?;
                }
                Ok(0)
            });
        }
        let mut missing = n - running.len();
        let mut readiness = Vec::new();
        for id in members {
            let slot = &mut self.slots[id];
            if missing == 0 {
                break;
            }
            if slot.mode == Mode::Down {
                tracing::info!(worker = id, "scaling up: starting a stopped slot");
                slot.mode = Mode::Active;
                slot.decided
                    .do_send(Decided::Respawn(std::time::Duration::ZERO));
                readiness.push((id, slot.ready.send(AwaitReady)));
                missing -= 1;
            }
        }
        Box::pin(async move {
            for (worker, ready) in readiness {
                if let Err(reason) = ready.await? {
                    return Err(Error::StartFailed { worker, reason });
                }
            }
            Ok(missing)
        })
    }
}

/// Operator controls, sent by [`Cluster`]'s methods.
#[derive(Debug)]
enum Control {
    /// SIGKILL a slot's process group; the policy decides what follows.
    Kill(WorkerId),
    /// Stop a slot gracefully, for good.
    StopWorker(WorkerId),
    /// Turn restarts on or off.
    Respawn(bool),
    /// Resolve when the cluster has stopped.
    Wait(oneshot::Sender<Result<(), (WorkerId, ExitReason)>>),
    /// A slot added to a group (its id is the next one).
    Add(Slot),
    /// A group, before its slots.
    AddGroup { name: String, policy: RestartPolicy },
    /// A rolling reload, reported to the sender if there is one.
    Reload(Option<ReloadWaiter>),
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Message for Control {
    type Result = Option<ExitReason>;
}

impl Handler<Control> for ClusterSupervisor {
    type Result = ResponseFuture<Option<ExitReason>>;

    fn handle(&mut self, control: Control, ctx: &mut Context<Self>) -> Self::Result {
        match control {
            Control::Kill(id) => {
                let Some(slot) = self.slots.get(id) else {
                    return Box::pin(async { None });
                };
                let kill = slot.kill.send(Kill);
                Box::pin(async move { kill.await.ok() })
            }
            Control::StopWorker(id) => {
                let Some(slot) = self.slots.get_mut(id) else {
                    return Box::pin(async { None });
                };
                if slot.mode != Mode::Failed {
                    slot.mode = Mode::Stopping;
                }
                let stop = slot.stop.send(Stop);
                Box::pin(async move { stop.await.ok() })
            }
            Control::Respawn(on) => {
                self.respawn = on;
                Box::pin(async { None })
            }
            Control::Wait(tx) => {
                match (&self.outcome, self.finished) {
                    (Some(outcome), true) => {
                        let _ = tx.send(outcome.clone());
                    }
                    _ => self.waiters.push(tx),
                }
                Box::pin(async { None })
            }
            Control::Add(slot) => {
                let group = &mut self.groups[slot.group];
                group.policy.add_slot();
                group.members.push(self.slots.len());
                self.slots.push(slot);
                Box::pin(async { None })
            }
            Control::AddGroup { name, policy } => {
                let seed = u64::from(std::process::id()) ^ self.groups.len() as u64;
                self.groups.push(GroupState {
                    name,
                    policy: PolicyState::new(policy, 0, seed),
                    members: Vec::new(),
                });
                Box::pin(async { None })
            }
            Control::Reload(waiter) => {
                self.request_reload(waiter, ctx);
                Box::pin(async { None })
            }
        }
    }
}

/// A running cluster of `A` workers: the typed handle to its slots.
pub struct Cluster<A: WorkerActor> {
    supervisor: Addr<ClusterSupervisor>,
    workers: Rc<RefCell<Vec<Addr<Worker<A>>>>>,
    /// The cluster-wide slot id of each of this group's slots, in order.
    ids: Rc<RefCell<Vec<WorkerId>>>,
    group: usize,
    next_id: Rc<std::cell::Cell<usize>>,
    spec: Rc<SlotSpec>,
    links: Links<A>,
}

impl<A: WorkerActor> fmt::Debug for Cluster<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.len())
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> Cluster<A> {
    /// Starts one more slot of this group (its process starts now).
    fn add_slot(&self) -> Addr<Worker<A>> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let addr = Worker::<A>::new(id, Rc::clone(&self.spec), self.links.clone()).start();
        self.links
            .routing
            .borrow_mut()
            .slots
            .push(addr.clone().recipient());
        // Slots are added in id order: the supervisor's mailbox keeps it.
        self.supervisor
            .do_send(Control::Add(Slot::of(&addr, self.group)));
        self.workers.borrow_mut().push(addr.clone());
        self.ids.borrow_mut().push(id);
        addr
    }

    fn readiness(&self) -> Vec<(WorkerId, Recipient<AwaitReady>)> {
        let ids = self.ids.borrow();
        self.workers
            .borrow()
            .iter()
            .zip(ids.iter())
            .map(|(w, &id)| (id, w.clone().recipient()))
            .collect()
    }

    /// The cluster-wide id of this group's slot `index`.
    fn global(&self, index: usize) -> Option<WorkerId> {
        self.ids.borrow().get(index).copied()
    }

    /// This group's name.
    pub fn group_name(&self) -> &str {
        &self.spec.group
    }

    /// The proxy of worker slot `id`; valid for the life of the cluster, across respawns.
    ///
    /// # Panics
    /// When `id` is not below [`len`](Self::len).
    pub fn worker(&self, id: WorkerId) -> Addr<Worker<A>> {
        self.workers.borrow()[id].clone()
    }

    /// Every slot's proxy, in slot order.
    pub fn addrs(&self) -> Vec<Addr<Worker<A>>> {
        self.workers.borrow().clone()
    }

    /// The number of worker slots.
    pub fn len(&self) -> usize {
        self.workers.borrow().len()
    }

    /// True for a cluster without slots (which validation does not allow).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The supervisor actor.
    pub fn supervisor(&self) -> &Addr<ClusterSupervisor> {
        &self.supervisor
    }

    /// Id, pid, state and generation of every slot.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let all = self.supervisor.send(ListWorkers).await?;
        let ids = self.ids.borrow().clone();
        Ok(ids
            .iter()
            .filter_map(|id| all.iter().find(|info| info.id == *id).cloned())
            .collect())
    }

    /// Kills worker `id`'s process group with SIGKILL; the restart policy then decides what
    /// follows, as for any crash (sicarii's `kill`). Resolves with the exit reason once reaped,
    /// or `None` for an unknown slot.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn kill(&self, id: WorkerId) -> Result<Option<ExitReason>, Error> {
        let Some(id) = self.global(id) else {
            return Ok(None);
        };
        Ok(self.supervisor.send(Control::Kill(id)).await?)
    }

    /// Kills every worker, as [`kill`](Self::kill) does one.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn kill_all(&self) -> Result<(), Error> {
        let kills: Vec<_> = self
            .ids
            .borrow()
            .iter()
            .map(|&id| self.supervisor.send(Control::Kill(id)))
            .collect();
        for kill in kills {
            kill.await?;
        }
        Ok(())
    }

    /// Stops worker `id` gracefully and for good: it is not restarted (Node's `worker.kill()`).
    /// Resolves with its exit reason once reaped, or `None` for an unknown slot.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn stop_worker(&self, id: WorkerId) -> Result<Option<ExitReason>, Error> {
        let Some(id) = self.global(id) else {
            return Ok(None);
        };
        Ok(self.supervisor.send(Control::StopWorker(id)).await?)
    }

    /// Turns restarts on or off for the whole cluster (on by default).
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn set_respawn(&self, on: bool) -> Result<(), Error> {
        self.supervisor.send(Control::Respawn(on)).await?;
        Ok(())
    }

    /// Adds a worker slot at runtime and waits until its worker is ready.
    ///
    /// # Errors
    /// [`Error::StartFailed`] when the new worker does not become ready (the slot remains,
    /// supervised like the others); [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn add_worker(&self) -> Result<Addr<Worker<A>>, Error> {
        let addr = self.add_slot();
        let id = self.global(self.len() - 1).unwrap_or_default();
        match addr.send(AwaitReady).await? {
            Ok(()) => Ok(addr),
            Err(reason) => Err(Error::StartFailed { worker: id, reason }),
        }
    }

    /// Replaces every worker, one at a time, with a new process of the program as it is on disk
    /// now, with no gap in service (a rolling restart; see [`ReloadEvent`] for its progress).
    ///
    /// Each new process is started beside the one it replaces; once it is ready it takes over,
    /// and the old one is stopped gracefully, finishing its work first. The next worker follows
    /// after `reload_delay`. A reload asked for while one runs (by this method, SIGHUP or a
    /// worker) is queued and runs after it.
    ///
    /// # Errors
    /// [`Error::Reload`] when a replacement failed (it crashed, or was not ready within the
    /// ready timeout): the reload stopped there, and that worker and those after it still run
    /// their old process; or when the cluster began to stop. [`Error::Mailbox`] when the
    /// supervisor has stopped.
    pub async fn reload(&self) -> Result<ReloadReport, Error> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.send(Control::Reload(Some(tx))).await?;
        match rx.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Reload(ReloadError::Stopping { replaced: 0 })),
        }
    }

    /// Scales the cluster to `n` running workers, with no failed request.
    ///
    /// Scaling down stops the highest-numbered running workers gracefully (each finishes its
    /// work and its `stopping` hook runs; an HTTP worker stops accepting first) and returns once
    /// they have exited; their slots stay, stopped. Scaling up starts stopped slots again, lowest
    /// first, then adds new slots, and returns once every new worker is ready.
    ///
    /// # Errors
    /// [`Error::Config`] for `n == 0`; [`Error::StartFailed`] when a new worker did not become
    /// ready; [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn scale(&self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Err(crate::error::ConfigError {
                field: "workers",
                reason: "cannot scale to 0 workers; stop the cluster instead".into(),
            }
            .into());
        }
        let to_add = self
            .supervisor
            .send(Scale {
                group: self.group,
                n,
            })
            .await??;
        for _ in 0..to_add {
            self.add_worker().await?;
        }
        Ok(())
    }

    /// Sends `msg` to every running worker as a one-way message (its sender is
    /// [`Peer::Master`], its [`Via`] `Broadcast`) and resolves once each has received it;
    /// returns how many did. Workers that are not running are skipped.
    ///
    /// # Errors
    /// [`Error::Call`] when the message cannot be encoded.
    pub async fn broadcast(&self, msg: &A::Msg) -> Result<usize, Error> {
        let targets = self.addrs().into_iter().map(|w| w.recipient()).collect();
        self.deliver_to(targets, Via::Broadcast, msg).await
    }

    /// Sends `msg` to every member of `group`, as [`broadcast`](Self::broadcast) does to all;
    /// returns how many received it.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast).
    pub async fn publish(&self, group: &str, msg: &A::Msg) -> Result<usize, Error> {
        let targets = {
            let routing = self.links.routing.borrow();
            routing
                .members(group)
                .into_iter()
                .filter_map(|w| routing.slots.get(w).cloned())
                .collect()
        };
        self.deliver_to(targets, Via::Group(group.to_owned()), msg)
            .await
    }

    async fn deliver_to(
        &self,
        targets: Vec<Recipient<Routed>>,
        via: Via,
        msg: &A::Msg,
    ) -> Result<usize, Error> {
        let mut payload = Vec::new();
        crate::codec::encode_value(&mut payload, msg).map_err(crate::CallError::Frame)?;
        let payload = bytes::Bytes::from(payload);
        let acks: Vec<_> = targets
            .into_iter()
            .map(|target| {
                let (tx, rx) = oneshot::channel();
                target.do_send(Routed::Tell {
                    from: Peer::Master,
                    via: via.clone(),
                    payload: payload.clone(),
                    ack: Some(ReplyTo::Local(tx)),
                });
                rx
            })
            .collect();
        let mut received = 0;
        for ack in acks {
            if let Ok(Ok(_)) = ack.await {
                received += 1;
            }
        }
        Ok(received)
    }

    /// The cluster's shared cache (see [`crate::cache`]), as workers see it.
    pub fn cache(&self) -> crate::cache::CacheClient<crate::cache::MasterCache> {
        self.links.cache.client()
    }

    /// The last `n` log records of `kind` (newest last), of every process or of one worker,
    /// from the logger's in-memory ring.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the logger has stopped.
    pub async fn recent_logs(
        &self,
        kind: crate::logger::Kind,
        n: usize,
        worker: Option<WorkerId>,
    ) -> Result<Vec<crate::logger::Record>, Error> {
        Ok(self
            .links
            .log
            .logger
            .send(crate::logger::Recent { kind, n, worker })
            .await?)
    }

    /// Writes and flushes every log record queued so far.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the logger has stopped.
    pub async fn flush_logs(&self) -> Result<(), Error> {
        Ok(self.links.log.logger.send(crate::logger::FlushLogs).await?)
    }

    /// The members of `group` now.
    pub fn group_members(&self, group: &str) -> Vec<WorkerId> {
        self.links.routing.borrow().members(group)
    }

    async fn system(&self, op: OwnedOp) -> Result<bytes::Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        self.supervisor
            .send(SystemCall {
                from: Peer::Master,
                op,
                reply: ReplyTo::Local(tx),
            })
            .await?;
        let answer = rx.await.map_err(|_| actix::MailboxError::Closed)?;
        answer.map_err(Error::Ask)
    }

    /// The cluster: the master's pid, every worker slot (pid, state, generation, uptime,
    /// restarts, groups) and every group's members.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn info(&self) -> Result<ClusterInfo, Error> {
        let bytes = self.system(OwnedOp::Info).await?;
        Ok(crate::codec::decode_value(&bytes).map_err(crate::CallError::Frame)?)
    }

    /// Every worker's traffic counters (frames by kind, requests, errors, restarts) and its
    /// process's CPU time and resident memory.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn stats(&self) -> Result<Vec<WorkerStats>, Error> {
        let bytes = self.system(OwnedOp::Stats).await?;
        Ok(crate::codec::decode_value(&bytes).map_err(crate::CallError::Frame)?)
    }

    /// Waits until `n` workers have confirmed `key`
    /// ([`WorkerHandle::confirm`](crate::WorkerHandle::confirm)) and returns which, in the
    /// order they confirmed (clustr-node's `onConfirmation`).
    ///
    /// # Errors
    /// [`Error::Ask`] with [`AskError::Timeout`] when fewer have confirmed within `timeout`.
    pub async fn await_confirmations(
        &self,
        key: &str,
        n: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<WorkerId>, Error> {
        let op = OwnedOp::AwaitConfirmations {
            key: key.to_owned(),
            n,
            timeout,
        };
        let bytes = self.system(op).await?;
        Ok(crate::codec::decode_value(&bytes).map_err(crate::CallError::Frame)?)
    }

    /// Where the listening socket `name` listens (for a TCP port 0, the port it got).
    pub fn local_addr(&self, name: &str) -> Option<ListenAddr> {
        let bound = self.spec.listeners.iter().find(|b| b.name == name)?;
        Some(bound.addr.clone())
    }

    /// Stops every worker gracefully and returns once all have been reaped.
    ///
    /// Workers stop one by one, last slot first. Each gets `Shutdown`, finishes the messages sent
    /// before it, runs its `stopping` hook and exits; one still running after the shutdown
    /// timeout is killed with its process group.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has already stopped.
    pub async fn stop(&self) -> Result<(), Error> {
        self.supervisor.send(StopAll).await?;
        Ok(())
    }

    /// Resolves when the cluster has stopped: after [`stop`](Self::stop), a SIGTERM or SIGINT, or
    /// the supervisor giving up. This is what a master's `main` awaits.
    ///
    /// # Errors
    /// [`Error::GaveUp`] when the supervisor stopped the cluster because a worker exceeded the
    /// restart intensity; [`Error::Mailbox`] when the supervisor is gone.
    pub async fn wait(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.send(Control::Wait(tx)).await?;
        match rx.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err((worker, reason))) => Err(Error::GaveUp { worker, reason }),
        }
    }
}

impl ClusterSupervisor {
    /// Answers the waits for `key` that its confirmations now satisfy.
    fn confirmations_changed(&mut self, key: &str) {
        let confirmed = self
            .confirmations
            .confirmed
            .get(key)
            .cloned()
            .unwrap_or_default();
        let done: Vec<u64> = self
            .confirmations
            .waiting
            .iter()
            .filter(|(_, (k, n, _))| k == key && confirmed.len() >= *n)
            .map(|(token, _)| *token)
            .collect();
        for token in done {
            if let Some((_, _, reply)) = self.confirmations.waiting.remove(&token) {
                reply.answer(encoded(&confirmed));
            }
        }
    }

    fn permitted(&self, from: Peer, allowed: bool, what: &str) -> Result<(), AskError> {
        match (from, allowed) {
            (Peer::Master, _) | (_, true) => Ok(()),
            (Peer::Worker { .. }, false) => Err(AskError::NotPermitted(format!(
                "{what} from a worker is off in this cluster's config"
            ))),
        }
    }
}

impl Handler<SystemCall> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, call: SystemCall, ctx: &mut Context<Self>) {
        let SystemCall { from, op, reply } = call;
        match op {
            OwnedOp::Confirm(key) => {
                let Peer::Worker { id, .. } = from else {
                    return reply.answer(Err(AskError::Invalid("only workers confirm".into())));
                };
                let confirmed = self.confirmations.confirmed.entry(key.clone()).or_default();
                if !confirmed.contains(&id) {
                    confirmed.push(id);
                }
                reply.answer(encoded(&()));
                self.confirmations_changed(&key);
            }
            OwnedOp::AwaitConfirmations { key, n, timeout } => {
                let confirmed = self.confirmations.confirmed.get(&key);
                if let Some(confirmed) = confirmed.filter(|c| c.len() >= n) {
                    return reply.answer(encoded(confirmed));
                }
                let token = self.confirmations.next;
                self.confirmations.next += 1;
                self.confirmations.waiting.insert(token, (key, n, reply));
                ctx.run_later(timeout, move |act, _| {
                    if let Some((_, _, reply)) = act.confirmations.waiting.remove(&token) {
                        reply.answer(Err(AskError::Timeout(timeout)));
                    }
                });
            }
            OwnedOp::Info => {
                let asks: Vec<_> = self
                    .slots
                    .iter()
                    .map(|s| s.summary.send(GetSummary))
                    .collect();
                let groups = self.routing.borrow().groups();
                actix::spawn(async move {
                    let mut workers = Vec::with_capacity(asks.len());
                    for ask in asks {
                        if let Ok(summary) = ask.await {
                            workers.push(summary);
                        }
                    }
                    let info = ClusterInfo {
                        master_pid: std::process::id(),
                        workers,
                        groups,
                    };
                    reply.answer(encoded(&info));
                });
            }
            OwnedOp::Stats => {
                let asks: Vec<_> = self.slots.iter().map(|s| s.stats.send(GetStats)).collect();
                actix::spawn(async move {
                    let mut stats = Vec::with_capacity(asks.len());
                    for ask in asks {
                        if let Ok(s) = ask.await {
                            stats.push(s);
                        }
                    }
                    reply.answer(encoded(&stats));
                });
            }
            OwnedOp::Kill(worker) | OwnedOp::Restart(worker) => {
                let kill = matches!(op, OwnedOp::Kill(_));
                let what = if kill {
                    "killing a worker"
                } else {
                    "restarting a worker"
                };
                if let Err(e) = self.permitted(from, self.worker_control, what) {
                    return reply.answer(Err(e));
                }
                let Some(slot) = self.slots.get(worker) else {
                    return reply.answer(Err(AskError::NoSuchWorker(worker)));
                };
                tracing::info!(worker, ?from, "{what} on request");
                if kill {
                    let done = slot.kill.send(Kill);
                    actix::spawn(async move {
                        let _ = done.await;
                        reply.answer(encoded(&()));
                    });
                } else {
                    let done = slot.replace.send(Replace);
                    actix::spawn(async move {
                        let result = match done.await {
                            Ok(Ok(_)) => encoded(&()),
                            Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
                            Err(e) => Err(AskError::Failed(e.to_string())),
                        };
                        reply.answer(result);
                    });
                }
            }
            OwnedOp::Reload => {
                if let Err(e) = self.permitted(from, self.reload.from_workers, "a reload") {
                    return reply.answer(Err(e));
                }
                let (tx, rx) = oneshot::channel();
                self.request_reload(Some(tx), ctx);
                actix::spawn(async move {
                    let result = match rx.await {
                        Ok(Ok(_)) => encoded(&()),
                        Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
                        Err(_) => Err(AskError::Failed("the cluster stopped".into())),
                    };
                    reply.answer(result);
                });
            }
        }
    }
}
