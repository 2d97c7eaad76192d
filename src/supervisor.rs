//! The supervisor: [`ClusterSupervisor`], the actor that owns the worker slots of every group
//! and applies their restart policy. [`Cluster`](crate::Cluster) is its typed handle; the
//! start-up assembly is in `cluster::assembly`.
//!
//! # Supervision
//! When a worker's process exits on its own (not because it was asked to stop), the supervisor
//! asks the [`RestartPolicy`] of the worker's group: restart it (after a backoff), leave it down,
//! or give up. A kill that the operator or the program asked for
//! ([`Cluster::kill`](crate::Cluster::kill), `kill_all`, a worker's `kill_worker`) goes to the
//! policy too, but as a requested exit: restarted at once, not counted toward the intensity.
//! Graceful stops (`stop_worker`, scaling down) are final, and the processes that a reload or
//! `restart_worker` replaces retire without reaching the policy; neither counts either. Under `one_for_all` and `rest_for_one` the other affected workers are stopped
//! first, and only when every old process is gone are the new ones started, in slot order, each
//! awaited until ready. Giving up escalates as configured: stop the cluster, so that
//! [`Cluster::wait`](crate::Cluster::wait) returns [`Error::GaveUp`](crate::Error::GaveUp) to the
//! program's `main`, or mark the group failed and go on.
//!
//! Every lifecycle event passes through the supervisor, which logs it and hands it to the
//! recipients registered with [`ClusterBuilder::subscribe`](crate::ClusterBuilder::subscribe).
//!
//! # Stopping
//! [`Cluster::stop`](crate::Cluster::stop), SIGTERM and SIGINT (unless `handle_signals` is off)
//! stop the workers one by one in reverse slot order, each gracefully (`Shutdown`, its
//! `stopping` hook, SIGKILL after the shutdown timeout), then resolve
//! [`Cluster::wait`](crate::Cluster::wait).

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::ClusterConfig;
use crate::error::ExitReason;
use crate::error::ReloadError;
use crate::event::{WorkerEvent, WorkerEventKind};
use crate::messaging::confirm::Confirmations;
use crate::messaging::table::SharedRouting;
use crate::proxy::{AwaitReady, Decided, GetInfo, GetStats, Kill, Replace, Stop, Worker};
use crate::state::{WorkerId, WorkerState};
use crate::worker::WorkerActor;

mod control;
mod end;
mod figures;
mod policy;
mod rolling;
mod rollout;
mod signals;
mod system;

pub(crate) use control::{Control, Scale};
pub(crate) use figures::{ClusterFigures, GetClusterFigures};

pub(crate) use crate::config::{Escalation, RestartPolicy};
pub use control::{ListWorkers, StopAll};
use policy::{Decision, ExitKind, PolicyState};
pub use rolling::{ReloadEvent, ReloadReport};

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
    /// The slot of each running process, by pid (from the slots' `Spawned` and exit events).
    pids: std::collections::HashMap<u32, WorkerId>,
    cache: crate::cache::SharedCache,
    logger: Addr<crate::logger::Logger>,
    /// What lives while the cluster runs (the metrics endpoint): let go when it finishes.
    companions: Vec<Box<dyn std::any::Any>>,
    /// The heartbeat of a cluster that spans hosts: leaves first when the cluster stops.
    node: Option<crate::backend::Node>,
}

/// One group of slots: its restart policy and which slots are its, in order.
struct GroupState {
    name: String,
    policy: PolicyState,
    members: Vec<WorkerId>,
    /// The group's listening sockets: closed when the cluster has stopped.
    listening: crate::listen::Listening,
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
    /// Reloads started so far, to tell them apart in traces.
    count: u64,
    /// What the metrics endpoint reports of reloads.
    figures: Rc<rolling::ReloadFigures>,
    /// This node's last step of a cluster-wide reload (its token, its local report): the
    /// local part of that rollout's report.
    last_step: Option<(u64, ReloadReport)>,
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
pub(crate) struct Slot {
    mode: Mode,
    group: usize,
    stop: Recipient<Stop>,
    kill: Recipient<Kill>,
    info: Recipient<GetInfo>,
    ready: Recipient<AwaitReady>,
    decided: Recipient<Decided>,
    replace: Recipient<Replace>,
    stats: Recipient<GetStats>,
    figures: Recipient<crate::proxy::GetFigures>,
    terminate: Recipient<crate::proxy::Terminate>,
    /// A graceful end with a status was asked for: its exit is not a crash.
    terminating: bool,
}

impl Slot {
    pub(crate) fn of<A: WorkerActor>(addr: &Addr<Worker<A>>, group: usize) -> Self {
        Self {
            mode: Mode::Active,
            group,
            stop: addr.clone().recipient(),
            kill: addr.clone().recipient(),
            info: addr.clone().recipient(),
            ready: addr.clone().recipient(),
            decided: addr.clone().recipient(),
            replace: addr.clone().recipient(),
            stats: addr.clone().recipient(),
            figures: addr.clone().recipient(),
            terminate: addr.clone().recipient(),
            terminating: false,
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Every answer that came back from the slots asked, in slot order (a proxy that has stopped
/// answers nothing).
pub(crate) async fn answered<M>(asks: Vec<actix::dev::RecipientRequest<M>>) -> Vec<M::Result>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    let mut answers = Vec::with_capacity(asks.len());
    for ask in asks {
        if let Ok(answer) = ask.await {
            answers.push(answer);
        }
    }
    answers
}

/// An exit of a worker's process, as the restart policy sees it.
#[derive(Debug, Clone, Copy)]
struct Exit<'a> {
    reason: &'a ExitReason,
    uptime: Duration,
    last_stderr: &'a [String],
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
            ctx.spawn(signals::watch(ctx.address()).into_actor(self));
        }
        self.attach_rollouts(ctx);
    }
}

impl ClusterSupervisor {
    /// A supervisor with no slot yet; restarts begin once [`Control::Respawn`] turns them on.
    pub(crate) fn new(
        config: &ClusterConfig,
        subscribers: Vec<Recipient<WorkerEvent>>,
        reload_subscribers: Vec<Recipient<ReloadEvent>>,
        routing: SharedRouting,
        cache: crate::cache::SharedCache,
        logger: Addr<crate::logger::Logger>,
    ) -> Self {
        Self {
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
            reload: ReloadState {
                subscribers: reload_subscribers,
                delay: config.reload_delay,
                from_workers: config.worker_reload,
                ..ReloadState::default()
            },
            routing,
            confirmations: Confirmations::default(),
            worker_control: config.worker_control,
            pids: std::collections::HashMap::new(),
            cache,
            logger,
            companions: Vec::new(),
            node: None,
        }
    }

    /// Keeps `companion` until the cluster finishes, then drops it.
    pub(crate) fn with_companion(mut self, companion: Box<dyn std::any::Any>) -> Self {
        self.companions.push(companion);
        self
    }

    /// Keeps the node's heartbeat until the cluster finishes; it leaves when the cluster stops.
    pub(crate) fn with_node(mut self, node: crate::backend::Node) -> Self {
        self.node = Some(node);
        self
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

    /// Applies the restart policy of its group to an exit of slot `worker`.
    fn on_exit(
        &mut self,
        worker: WorkerId,
        generation: u64,
        exit: Exit<'_>,
        ctx: &mut Context<Self>,
    ) {
        // A graceful end asked for is marked on its slot until the slot's next exit, whatever
        // comes of it.
        let terminating = self
            .slots
            .get_mut(worker)
            .is_some_and(|slot| std::mem::take(&mut slot.terminating));
        if !self.supervises(worker) {
            return;
        }
        let kind = if exit.reason.is_permanent() {
            ExitKind::Permanent
        } else if *exit.reason == ExitReason::Killed || terminating {
            // Only a kill on request ends a process with `Killed` (the proxy records the reason
            // per process, so a kill that found no process marks nothing); a graceful end asked
            // for is marked on its slot until its exit comes.
            ExitKind::Requested {
                normal: exit.reason.is_normal(),
            }
        } else if exit.reason.is_normal() {
            ExitKind::Normal
        } else {
            ExitKind::Abnormal
        };
        let now = Instant::now();
        let g = self.slots[worker].group;
        let Some(local) = self.groups[g].members.iter().position(|&m| m == worker) else {
            return;
        };
        match self.groups[g].policy.on_exit(local, kind, exit.uptime, now) {
            Decision::Stay => self.slots[worker].mode = Mode::Down,
            Decision::Fail => {
                self.slots[worker].mode = Mode::Failed;
                self.slots[worker]
                    .decided
                    .do_send(Decided::Settle(WorkerState::Failed));
                tracing::error!(worker, reason = %exit.reason, "permanent fault; the slot stays down");
                self.publish_gave_up(worker, generation, &exit, now);
            }
            Decision::Restart { slots, delay } => {
                let slots: Vec<WorkerId> =
                    slots.iter().map(|&l| self.groups[g].members[l]).collect();
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
                let group = &self.groups[g].name;
                tracing::error!(worker, group, reason = %exit.reason, restarts, ?escalation, "restart intensity exceeded; giving up");
                self.publish_gave_up(worker, generation, &exit, now);
                self.escalate(worker, exit.reason, escalation, ctx);
            }
        }
    }

    /// Whether an exit of `worker` goes to the restart policy; settles the slot otherwise.
    fn supervises(&mut self, worker: WorkerId) -> bool {
        let Some(slot) = self.slots.get_mut(worker) else {
            return false;
        };
        match slot.mode {
            Mode::Active if !self.stopping && self.respawn => true,
            Mode::Active | Mode::Stopping => {
                slot.mode = Mode::Down;
                false
            }
            // Stopped by a fail-group escalation: down for good, marked failed.
            Mode::Failed => {
                slot.decided.do_send(Decided::Settle(WorkerState::Failed));
                false
            }
            Mode::GroupStop | Mode::Down => false,
        }
    }

    fn publish_gave_up(
        &mut self,
        worker: WorkerId,
        generation: u64,
        exit: &Exit<'_>,
        now: Instant,
    ) {
        let g = self.slots[worker].group;
        let event = WorkerEventKind::GaveUp {
            reason: exit.reason.clone(),
            restarts: self.groups[g].policy.restarts_in_window(now),
            last_stderr: exit.last_stderr.to_vec(),
        };
        self.publish(worker, event, generation);
    }

    /// The group of `worker` exceeded its restart intensity: stop the cluster or fail the group.
    fn escalate(
        &mut self,
        worker: WorkerId,
        reason: &ExitReason,
        escalation: Escalation,
        ctx: &mut Context<Self>,
    ) {
        match escalation {
            Escalation::StopCluster => {
                self.outcome = Some(Err((worker, reason.clone())));
                self.slots[worker].mode = Mode::Down;
                ctx.notify(StopAll);
            }
            Escalation::FailGroup => {
                let g = self.slots[worker].group;
                for &id in &self.groups[g].members {
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

    fn finish(&mut self) {
        self.finished = true;
        // Every process is gone: the addresses are free for whoever binds them next.
        for group in &self.groups {
            group.listening.close();
        }
        self.companions.clear();
        self.node = None;
        self.confirmations.close();
        let outcome = self.outcome.clone().unwrap_or(Ok(()));
        self.outcome = Some(outcome.clone());
        for tx in self.waiters.drain(..) {
            let _ = tx.send(outcome.clone());
        }
    }
}
