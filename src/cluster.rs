//! The public handle of a running cluster: [`Cluster`], one group's typed view, with the
//! builders that start clusters ([`ClusterBuilder`] for one group, [`GroupsBuilder`] for
//! several) and the start-up assembly that puts the supervisor, the services and the proxies
//! together.
//!
//! A [`Cluster<A>`] is cheap to keep and holds the `Addr` of every slot of its group: the
//! addresses never change across respawns and reloads. Its operations go to the supervisor
//! (lifecycle, reload, scale), to the slots' proxies (messaging) or to the services (cache, logs).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::error::ExitReason;
use crate::error::{CallError, ConfigError, Error};
use crate::event::WorkerInfo;
use crate::listen::ListenAddr;
use crate::messaging::system::{AwaitConfirmations, GetClusterInfo, GetClusterStats};
use crate::messaging::table::{Routed, Tally};
use crate::messaging::{ClusterInfo, Peer, Via, WorkerStats};
use crate::proxy::{AwaitReady, Links, SlotSpec, Worker};
use crate::state::WorkerId;
use crate::supervisor::{ClusterSupervisor, Control, ListWorkers, Scale, StopAll};
use crate::worker::WorkerActor;

mod assembly;
mod builder;
mod control;
mod groups;
mod logs;
mod metrics;
mod nodes;
mod reload;
mod topics;

pub use builder::ClusterBuilder;
pub use groups::{GroupHandlers, GroupKey, Groups, GroupsBuilder};

/// A running cluster of `A` workers: the typed handle to its slots.
///
/// It holds every slot's proxy ([`worker`](Self::worker)), whose `Addr` stays valid across
/// respawns and reloads, and reaches the rest of the cluster: lifecycle ([`stop`](Self::stop),
/// [`wait`](Self::wait), [`reload`](Self::reload), [`scale`](Self::scale)), messaging
/// ([`broadcast`](Self::broadcast), [`publish`](Self::publish)), the [`cache`](Self::cache) and
/// the logs ([`recent_logs`](Self::recent_logs)).
///
/// ```no_run
/// use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
/// use procactor::prelude::*;
///
/// # async fn f() -> Result<(), procactor::Error> {
/// let cluster: Cluster<Echo> = ClusterSupervisor::start(ClusterConfig::new().workers(4)).await?;
/// let reply = cluster.worker(0).send(Call(EchoMsg::Ping)).await??;
/// assert_eq!(reply, EchoReply::Pong);
/// let reached = cluster.broadcast(&EchoMsg::Ping).await?; // every running worker
/// assert_eq!(reached, 4);
/// cluster.reload().await?; // every worker replaced, one at a time, no request failed
/// cluster.stop().await // graceful; returns once every worker is reaped
/// # }
/// ```
pub struct Cluster<A: WorkerActor> {
    supervisor: Addr<ClusterSupervisor>,
    workers: Rc<RefCell<Vec<Addr<Worker<A>>>>>,
    /// The cluster-wide slot id of each of this group's slots, in order.
    ids: Rc<RefCell<Vec<WorkerId>>>,
    group: usize,
    next_id: Rc<Cell<usize>>,
    spec: Rc<SlotSpec>,
    links: Links<A>,
    metrics_addr: Option<std::net::SocketAddr>,
    /// What a scrape reads of the cluster (for an [`Exporter`](crate::metrics::Exporter)).
    metrics: crate::metrics::Sources,
    node: Option<crate::backend::NodeView>,
}

impl<A: WorkerActor> Clone for Cluster<A> {
    fn clone(&self) -> Self {
        Self {
            supervisor: self.supervisor.clone(),
            workers: Rc::clone(&self.workers),
            ids: Rc::clone(&self.ids),
            group: self.group,
            next_id: Rc::clone(&self.next_id),
            spec: Rc::clone(&self.spec),
            links: self.links.clone(),
            metrics_addr: self.metrics_addr,
            metrics: self.metrics.clone(),
            node: self.node.clone(),
        }
    }
}

impl<A: WorkerActor> fmt::Debug for Cluster<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.len())
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> Cluster<A> {
    /// Starts one more slot of this group (its process starts now), its processes started with
    /// `env` on top of the group's environment.
    fn add_slot(&self, env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Addr<Worker<A>> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let addr = Worker::<A>::new(id, Rc::clone(&self.spec), self.links.clone())
            .with_env(env)
            .start();
        self.links
            .routing
            .borrow_mut()
            .add_slot(addr.clone().recipient(), &self.spec.group);
        // Slots are added in id order: the supervisor's mailbox keeps it.
        self.supervisor
            .do_send(Control::Add(crate::supervisor::Slot::of(&addr, self.group)));
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

    /// Where worker `id` is among this group's slots, if it is one of them.
    fn position(&self, id: WorkerId) -> Option<usize> {
        // Ids are given out in increasing order, so a group's are sorted.
        self.ids.borrow().binary_search(&id).ok()
    }

    fn no_such_worker(&self, id: WorkerId) -> Error {
        Error::NoSuchWorker {
            worker: id,
            group: self.spec.group.clone(),
        }
    }

    /// This group's name.
    pub fn group_name(&self) -> &str {
        &self.spec.group
    }

    /// The proxy of worker `id`; valid for the life of the cluster, across respawns.
    ///
    /// `id` is the worker's cluster-wide id, as [`ids`](Self::ids), [`workers`](Self::workers),
    /// events, [`FromWorker`](crate::FromWorker), [`info`](Self::info) and the worker's own
    /// `ctx.id()` report it. In a cluster of one group the ids are `0..len()`; in a cluster of
    /// several, each group has its own share of them.
    ///
    /// # Panics
    /// When `id` is not a worker of this group (see [`try_worker`](Self::try_worker)).
    pub fn worker(&self, id: WorkerId) -> Addr<Worker<A>> {
        match self.try_worker(id) {
            Ok(addr) => addr,
            Err(e) => panic!("{e}; its workers are {:?}", self.ids()),
        }
    }

    /// The proxy of worker `id`, as [`worker`](Self::worker) gives it.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] when `id` is not a worker of this group.
    pub fn try_worker(&self, id: WorkerId) -> Result<Addr<Worker<A>>, Error> {
        let index = self.position(id).ok_or_else(|| self.no_such_worker(id))?;
        Ok(self.workers.borrow()[index].clone())
    }

    /// The proxy of this group's `index`-th worker (counting from 0, in the order of
    /// [`ids`](Self::ids)), or `None` past the last. A position, not an id: in a cluster of
    /// several groups the two differ.
    pub fn worker_at(&self, index: usize) -> Option<Addr<Worker<A>>> {
        self.workers.borrow().get(index).cloned()
    }

    /// The ids of this group's workers, in the order they were added (ascending).
    pub fn ids(&self) -> Vec<WorkerId> {
        self.ids.borrow().clone()
    }

    /// The worker of this group whose process has pid `pid` now: its id and its proxy
    /// (clustr-node's and sicarii's way of naming a worker).
    ///
    /// # Errors
    /// [`Error::NoSuchPid`] when no process of this group has that pid (one of another group,
    /// one that has exited); [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn worker_by_pid(&self, pid: u32) -> Result<(WorkerId, Addr<Worker<A>>), Error> {
        let workers = self.workers().await?;
        let info = workers.iter().find(|info| info.pid == Some(pid));
        let id = info.ok_or(Error::NoSuchPid { pid })?.id;
        Ok((id, self.try_worker(id)?))
    }

    /// Every worker's proxy, in the order of [`ids`](Self::ids).
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

    /// Kills worker `id`'s process group with SIGKILL, and restarts it. Resolves with the exit
    /// reason ([`ExitReason::Killed`]) once the process is reaped.
    ///
    /// The restart type and strategy of the [`RestartPolicy`](crate::RestartPolicy) apply as
    /// to any exit (a `temporary` worker stays down), but a kill asked for is not a crash: it
    /// does not count toward the restart intensity or grow the backoff, and the restart follows
    /// at once.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] when `id` is not a worker of this group; [`Error::Mailbox`] when
    /// the supervisor or the worker's proxy has stopped.
    pub async fn kill(&self, id: WorkerId) -> Result<ExitReason, Error> {
        self.position(id).ok_or_else(|| self.no_such_worker(id))?;
        let reason = self.supervisor.send(Control::Kill(id)).await?;
        reason.ok_or(Error::Mailbox(MailboxError::Closed))
    }

    /// Kills every worker, as [`kill`](Self::kill) does one; none of these exits counts
    /// toward the restart intensity.
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
    /// Resolves with its exit reason once reaped. [`scale`](Self::scale) up starts it again.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] when `id` is not a worker of this group; [`Error::Mailbox`] when
    /// the supervisor or the worker's proxy has stopped.
    pub async fn stop_worker(&self, id: WorkerId) -> Result<ExitReason, Error> {
        self.position(id).ok_or_else(|| self.no_such_worker(id))?;
        let reason = self.supervisor.send(Control::StopWorker(id)).await?;
        reason.ok_or(Error::Mailbox(MailboxError::Closed))
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
        self.add_worker_with_env(Vec::<(String, String)>::new())
            .await
    }

    /// As [`add_worker`](Self::add_worker), the new worker's processes started with `env` on
    /// top of the group's environment (Node's `cluster.fork(env)`); its restarts keep it.
    ///
    /// # Errors
    /// As [`add_worker`](Self::add_worker).
    pub async fn add_worker_with_env<K, V>(
        &self,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Addr<Worker<A>>, Error>
    where
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let addr = self.add_slot(env);
        let id = self.ids.borrow().last().copied().unwrap_or_default();
        match addr.send(AwaitReady).await? {
            Ok(()) => Ok(addr),
            Err(reason) => Err(Error::StartFailed { worker: id, reason }),
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
            return Err(ConfigError {
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
    /// With a [`backend`](crate::backend), the workers of every other node get it too, at
    /// most once (one publish on the cluster's channel; their sender is [`Peer::Remote`]);
    /// the count is of this node's workers.
    ///
    /// # Errors
    /// [`Error::Call`] when the message cannot be encoded.
    pub async fn broadcast(&self, msg: &A::Msg) -> Result<usize, Error> {
        self.fan_out(None, msg).map_err(Error::Ask)?;
        let done = {
            let workers = self.workers.borrow();
            let Some(mut delivery) = Delivery::new(workers.len(), Via::Broadcast, msg)? else {
                return Ok(0);
            };
            for w in workers.iter() {
                w.do_send(delivery.next());
            }
            delivery.done
        };
        Ok(done.await.unwrap_or(0))
    }

    /// Sends `msg` to every member of `group`, as [`broadcast`](Self::broadcast) does to all
    /// (every node's members, with a backend); returns how many of this node's received it.
    ///
    /// # Errors
    /// As [`broadcast`](Self::broadcast).
    pub async fn publish(&self, group: &str, msg: &A::Msg) -> Result<usize, Error> {
        self.fan_out(Some(group), msg).map_err(Error::Ask)?;
        let targets: Vec<Recipient<Routed>> = {
            let routing = self.links.routing.borrow();
            routing
                .members(group)
                .into_iter()
                .filter_map(|w| routing.slots.get(w).cloned())
                .collect()
        };
        let Some(mut delivery) = Delivery::new(targets.len(), Via::Group(group.to_owned()), msg)?
        else {
            return Ok(0);
        };
        for target in &targets {
            target.do_send(delivery.next());
        }
        Ok(delivery.done.await.unwrap_or(0))
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

    /// The cluster: the master's pid, every worker slot (pid, state, generation, uptime,
    /// restarts, groups) and every group's members.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn info(&self) -> Result<ClusterInfo, Error> {
        Ok(self.supervisor.send(GetClusterInfo).await?)
    }

    /// Every worker's traffic counters (frames by kind, requests, errors, restarts) and its
    /// process's CPU time and resident memory.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn stats(&self) -> Result<Vec<WorkerStats>, Error> {
        Ok(self.supervisor.send(GetClusterStats).await?)
    }

    /// Waits until `n` workers have confirmed `key`
    /// ([`WorkerHandle::confirm`](crate::WorkerHandle::confirm)) and returns which, in the
    /// order they confirmed (clustr-node's `onConfirmation`).
    ///
    /// # Errors
    /// [`Error::Ask`] with [`AskError::Timeout`](crate::AskError::Timeout) when fewer have
    /// confirmed within `timeout`.
    pub async fn await_confirmations(
        &self,
        key: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<WorkerId>, Error> {
        let wait = AwaitConfirmations {
            from: Peer::Master,
            key: key.to_owned(),
            n,
            timeout,
        };
        Ok(self.supervisor.send(wait).await??)
    }

    /// Where the listening socket `name` listens (for a TCP port 0, the port it got); `None`
    /// once the cluster has stopped (its sockets are closed then).
    pub fn local_addr(&self, name: &str) -> Option<ListenAddr> {
        self.spec.listeners.local_addr(name)
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

/// One message on its way to many workers, each acknowledging it into one [`Tally`].
struct Delivery {
    payload: bytes::Bytes,
    via: Via,
    tally: std::sync::Arc<Tally>,
    /// How many received it, once all have answered.
    done: oneshot::Receiver<usize>,
}

impl Delivery {
    /// `msg` encoded once for `n` receivers; `None` when there are none.
    fn new<M: serde::Serialize>(n: usize, via: Via, msg: &M) -> Result<Option<Self>, Error> {
        if n == 0 {
            return Ok(None);
        }
        let mut payload = Vec::new();
        crate::codec::encode_value(&mut payload, msg).map_err(CallError::Frame)?;
        let (tally, done) = Tally::new(n);
        Ok(Some(Self {
            payload: payload.into(),
            via,
            tally,
            done,
        }))
    }

    /// The message for the next receiver.
    fn next(&mut self) -> Routed {
        Routed::Tell {
            from: Peer::Master,
            via: self.via.clone(),
            payload: self.payload.clone(),
            ack: Some(Tally::ticket(&self.tally)),
            windowed: false,
        }
    }
}
