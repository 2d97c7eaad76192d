//! The supervisor's messages: lifecycle events from the proxies, operator controls from
//! [`Cluster`](crate::Cluster), listing, scaling and the cluster stop.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::RestartPolicy;
use super::{answered, ClusterSupervisor, Exit, GroupState, Mode, PolicyState, ReloadWaiter, Slot};
use crate::error::Error;
use crate::error::ExitReason;
use crate::error::ReloadError;
use crate::event::{WorkerEvent, WorkerEventKind, WorkerInfo};
use crate::proxy::{AwaitReady, Decided, GetInfo, Kill, Stop};
use crate::state::WorkerId;

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
        match (&event.kind, pid) {
            // Only serving processes are found by pid: a replacement that is starting, or an
            // old one draining, is not the slot's (ending it would end the serving one).
            (WorkerEventKind::Ready, Some(pid)) => {
                self.pids.retain(|_, w| *w != worker);
                self.pids.insert(pid, worker);
            }
            (WorkerEventKind::Exited { .. } | WorkerEventKind::Retired { .. }, Some(pid)) => {
                self.pids.remove(&pid);
            }
            _ => {}
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
            // Nothing of the dead process stays behind: its confirmations and waits go.
            self.confirmations.forget(worker);
            let exit = Exit {
                reason,
                uptime: *uptime,
                last_stderr,
            };
            self.on_exit(worker, generation, exit, ctx);
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
        // The node leaves the cluster first (asked now, done while the workers drain): the
        // others stop counting on it.
        let leave = self.node.as_ref().map(crate::backend::Node::leave);
        Box::pin(
            async move {
                let mut reasons = Vec::with_capacity(stops.len());
                for stop in stops.iter().rev() {
                    reasons.push(stop.send(Stop).await.unwrap_or(ExitReason::Killed));
                }
                reasons.reverse();
                if let Some(leave) = leave {
                    leave.await;
                }
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
        Box::pin(answered(asks))
    }
}

/// Scales to `n` running workers; resolves with the number of slots still to add.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) group: usize,
    pub(crate) n: usize,
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
                slot.decided.do_send(Decided::Start);
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
pub(crate) enum Control {
    /// SIGKILL a slot's process group; the policy decides what follows, as for an exit asked
    /// for (the proxy ends the process with [`ExitReason::Killed`], which is how its exit is
    /// told from a crash).
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
    AddGroup {
        name: String,
        policy: RestartPolicy,
        /// Its listening sockets, closed once the cluster has stopped.
        listening: crate::listen::Listening,
    },
    /// A rolling reload (of the whole cluster, with a backend), reported to the sender if
    /// there is one.
    Reload(Option<ReloadWaiter>),
    /// A rolling reload of this node only.
    ReloadLocal(ReloadWaiter),
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
            Control::AddGroup {
                name,
                policy,
                listening,
            } => {
                let seed = u64::from(std::process::id()) ^ self.groups.len() as u64;
                self.groups.push(GroupState {
                    name,
                    policy: PolicyState::new(policy, 0, seed),
                    members: Vec::new(),
                    listening,
                });
                Box::pin(async { None })
            }
            Control::Reload(waiter) => {
                self.request_reload(waiter, ctx);
                Box::pin(async { None })
            }
            Control::ReloadLocal(waiter) => {
                self.request_local_reload(Some(waiter), ctx);
                Box::pin(async { None })
            }
        }
    }
}
