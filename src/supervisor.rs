//! The cluster: [`ClusterSupervisor`], the actor that owns the worker slots, and [`Cluster`], the
//! typed handle that [`ClusterSupervisor::start`] returns.
//!
//! Starting a cluster validates its configuration (nothing starts if it is bad), starts one
//! [`Worker`] proxy per slot, each of which spawns its process, and returns once every worker is
//! ready. If one fails to start, the others are stopped and the error names the slot and why.
//!
//! Lifecycle events of every worker pass through the supervisor, which logs them and hands them
//! to the recipients registered with [`ClusterBuilder::subscribe`].

use std::fmt;
use std::rc::Rc;

use actix::prelude::*;

use crate::config::ClusterConfig;
use crate::error::Error;
use crate::event::{ExitReason, WorkerEvent, WorkerEventKind, WorkerId, WorkerInfo};
use crate::proxy::{AwaitReady, FromWorker, GetInfo, SlotSpec, Stop, Worker};
use crate::worker::WorkerActor;

/// The supervisor actor of a cluster: it owns the worker slots and passes on their events.
pub struct ClusterSupervisor {
    subscribers: Vec<Recipient<WorkerEvent>>,
    slots: Vec<Slot>,
}

struct Slot {
    stop: Recipient<Stop>,
    info: Recipient<GetInfo>,
}

impl fmt::Debug for ClusterSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSupervisor")
            .field("workers", &self.slots.len())
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl Actor for ClusterSupervisor {
    type Context = Context<Self>;
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
}

impl<A: WorkerActor> fmt::Debug for ClusterBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> ClusterBuilder<A> {
    /// Receives every worker's lifecycle events: spawned, online, ready, exited.
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

    /// Validates the configuration, starts every worker and waits until all are ready.
    ///
    /// Must be called from within an actix system; the actors run on the current arbiter.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration (nothing was started); [`Error::StartFailed`]
    /// when a worker could not be spawned or did not become ready (the others are stopped first).
    pub async fn start(self) -> Result<Cluster<A>, Error> {
        self.config.validate()?;
        let spec = Rc::new(SlotSpec::from_config(&self.config)?);
        let listeners = Rc::new(self.listeners);
        let subscribers = self.subscribers;
        let count = self.config.worker_count();
        let mut workers = Vec::with_capacity(count);
        let supervisor = ClusterSupervisor::create(|ctx| {
            let me = ctx.address().recipient();
            for id in 0..count {
                let proxy =
                    Worker::<A>::new(id, Rc::clone(&spec), me.clone(), Rc::clone(&listeners));
                workers.push(proxy.start());
            }
            ClusterSupervisor {
                subscribers,
                slots: workers
                    .iter()
                    .map(|w| Slot {
                        stop: w.clone().recipient(),
                        info: w.clone().recipient(),
                    })
                    .collect(),
            }
        });
        let cluster = Cluster {
            supervisor,
            workers,
        };
        let readiness: Vec<_> = cluster.workers.iter().map(|w| w.send(AwaitReady)).collect();
        let mut failure = None;
        for (worker, ready) in readiness.into_iter().enumerate() {
            let result = ready.await.unwrap_or(Err(ExitReason::Killed));
            if let (Err(reason), None) = (result, &failure) {
                failure = Some(Error::StartFailed { worker, reason });
            }
        }
        match failure {
            None => Ok(cluster),
            Some(error) => {
                cluster.stop().await?;
                Err(error)
            }
        }
    }
}

impl Handler<WorkerEvent> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent, _ctx: &mut Context<Self>) {
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
    }
}

/// Stops every worker gracefully (last slot first) and resolves once all are reaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopAll;

impl Message for StopAll {
    type Result = Vec<ExitReason>;
}

impl Handler<StopAll> for ClusterSupervisor {
    type Result = ResponseFuture<Vec<ExitReason>>;

    fn handle(&mut self, _: StopAll, _ctx: &mut Context<Self>) -> Self::Result {
        // Sent now, in reverse start order; the workers then stop side by side.
        let stops: Vec<_> = self.slots.iter().rev().map(|s| s.stop.send(Stop)).collect();
        Box::pin(async move {
            let mut reasons = Vec::with_capacity(stops.len());
            for stop in stops {
                reasons.push(stop.await.unwrap_or(ExitReason::Killed));
            }
            reasons.reverse();
            reasons
        })
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

/// A running cluster of `A` workers: the typed handle to its slots.
pub struct Cluster<A: WorkerActor> {
    supervisor: Addr<ClusterSupervisor>,
    workers: Vec<Addr<Worker<A>>>,
}

impl<A: WorkerActor> fmt::Debug for Cluster<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> Cluster<A> {
    /// The proxy of worker slot `id`; valid for the life of the cluster, across respawns.
    ///
    /// # Panics
    /// When `id` is not below [`len`](Self::len).
    pub fn worker(&self, id: WorkerId) -> Addr<Worker<A>> {
        self.workers[id].clone()
    }

    /// Every slot's proxy, in slot order.
    pub fn worker_addrs(&self) -> &[Addr<Worker<A>>] {
        &self.workers
    }

    /// The number of worker slots.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// True for a cluster without slots (which validation does not allow).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
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
        Ok(self.supervisor.send(ListWorkers).await?)
    }

    /// Stops every worker gracefully and returns once all have been reaped.
    ///
    /// Each worker gets `Shutdown`, finishes the messages sent before it, runs its `stopping`
    /// hook and exits; one that is still running after the shutdown timeout is killed with its
    /// process group.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has already stopped.
    pub async fn stop(&self) -> Result<(), Error> {
        self.supervisor.send(StopAll).await?;
        Ok(())
    }
}
