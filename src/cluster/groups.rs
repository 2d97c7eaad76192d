//! Clusters of several groups: different programs, counts, policies and worker types in one
//! cluster, started in order and stopped in reverse.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use actix::prelude::*;

use std::sync::atomic::{AtomicU64, Ordering};

use super::assembly::Core;
use super::Cluster;
use crate::config::{ClusterConfig, GroupConfig};
use crate::error::ExitReason;
use crate::error::{ConfigError, Error};
use crate::event::{WorkerEvent, WorkerInfo};
use crate::messaging::table::encoded;
use crate::messaging::AskError;
use crate::proxy::{AwaitReady, FromWorker, Handlers, RequestHandler, WorkerRequest};
use crate::state::WorkerId;
use crate::supervisor::{ClusterSupervisor, ListWorkers, ReloadEvent, StopAll};
use crate::worker::WorkerActor;

type Starter = Box<dyn FnOnce(&Core, &ClusterConfig) -> Result<Started, Error>>;

struct Started {
    view: Box<dyn Any>,
    /// The group's ids, shared with its view (workers added later included).
    ids: Rc<RefCell<Vec<WorkerId>>>,
    readiness: Vec<(WorkerId, Recipient<AwaitReady>)>,
}

/// The typed key of a group added with [`GroupsBuilder::group`]: [`Groups::get`] gives its
/// [`Cluster<A>`] handle back, typed.
pub struct GroupKey<A> {
    /// The builder it came from: a key of another cluster is refused, not misread.
    cluster: u64,
    index: usize,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for GroupKey<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for GroupKey<A> {}

impl<A> fmt::Debug for GroupKey<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("cluster", &self.cluster)
            .field("index", &self.index)
            .finish()
    }
}

/// The master's handlers for what a group's `A` workers send it (see
/// [`GroupsBuilder::group_with`]), as [`ClusterBuilder`](crate::ClusterBuilder) has them for a
/// cluster of one group.
pub struct GroupHandlers<A: WorkerActor> {
    handlers: Handlers<A>,
}

impl<A: WorkerActor> Default for GroupHandlers<A> {
    fn default() -> Self {
        Self {
            handlers: Handlers {
                listeners: Vec::new(),
                requests: None,
            },
        }
    }
}

impl<A: WorkerActor> fmt::Debug for GroupHandlers<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHandlers").finish_non_exhaustive()
    }
}

impl<A: WorkerActor> GroupHandlers<A> {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Receives the one-way messages the group's workers send with `send_master`.
    pub fn on_message(mut self, recipient: Recipient<FromWorker<A::Event>>) -> Self {
        self.add_listener(recipient);
        self
    }

    /// Answers the requests the group's workers send with `ask_master`.
    /// Its answer is the workers' [`MasterReply`](WorkerActor::MasterReply).
    pub fn on_request(
        mut self,
        recipient: Recipient<WorkerRequest<A::Event, A::MasterReply>>,
    ) -> Self {
        self.set_requests(request_handler::<A, A::MasterReply>(recipient));
        self
    }

    pub(super) fn add_listener(&mut self, recipient: Recipient<FromWorker<A::Event>>) {
        self.handlers.listeners.push(recipient);
    }

    pub(super) fn set_requests(&mut self, handler: RequestHandler) {
        self.handlers.requests = Some(handler);
    }
}

/// Builds a cluster of several groups; see [`ClusterSupervisor::with_groups`].
pub struct GroupsBuilder {
    /// This cluster's number among the clusters of this process, for its [`GroupKey`]s.
    id: u64,
    config: ClusterConfig,
    groups: Vec<(GroupConfig, Starter)>,
    subscribers: Vec<Recipient<WorkerEvent>>,
    reload_subscribers: Vec<Recipient<ReloadEvent>>,
    node_subscribers: Vec<Recipient<crate::backend::NodeEvent>>,
    log_sinks: Vec<Box<dyn crate::logger::Sink>>,
}

impl fmt::Debug for GroupsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupsBuilder")
            .field(
                "groups",
                &self.groups.iter().map(|(g, _)| &g.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ClusterSupervisor {
    /// A cluster of several groups of workers, each with its own program, count, restart
    /// policy, shutdown timeout, CPU affinity and [`WorkerActor`] type. `config` holds what
    /// they share (environment, timeouts, listeners, cache, logs); each [`GroupConfig`] what
    /// differs. Groups start in the order they are added (a group may wait for another to be
    /// ready) and stop in reverse order.
    ///
    /// ```no_run
    /// # use procactor::prelude::*;
    /// # use procactor::actors::echo::Echo;
    /// # struct Relay;
    /// # impl WorkerActor for Relay {
    /// #     type Msg = ();
    /// #     type Reply = ();
    /// #     type Event = ();
    /// #     type MasterReply = ();
    /// #     async fn handle(&mut self, _: (), _: &mut WorkerContext<Self>) {}
    /// # }
    /// # async fn f() -> Result<(), procactor::Error> {
    /// let mut builder = ClusterSupervisor::with_groups(ClusterConfig::new().env("MODE", "prod"));
    /// let warm = builder.group::<Relay>(GroupConfig::new("warm").workers(1).exec("procactor-relay"));
    /// let web = builder.group::<Echo>(
    ///     GroupConfig::new("web").workers(4).exec("procactor-echo").after("warm"),
    /// );
    /// let groups = builder.start().await?;
    /// let web: &Cluster<Echo> = groups.get(web)?;
    /// # let _ = (warm, web);
    /// groups.stop().await
    /// # }
    /// ```
    pub fn with_groups(config: ClusterConfig) -> GroupsBuilder {
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        GroupsBuilder {
            id: CLUSTERS.fetch_add(1, Ordering::Relaxed),
            config,
            groups: Vec::new(),
            subscribers: Vec::new(),
            reload_subscribers: Vec::new(),
            node_subscribers: Vec::new(),
            log_sinks: Vec::new(),
        }
    }
}

impl GroupsBuilder {
    /// A spent builder, left behind by [`ClusterBuilder::start`](crate::ClusterBuilder::start).
    pub(super) fn empty() -> Self {
        ClusterSupervisor::with_groups(ClusterConfig::new())
    }

    /// Adds a group of `A` workers; the key gives its typed handle once started.
    pub fn group<A: WorkerActor>(&mut self, group: GroupConfig) -> GroupKey<A> {
        self.group_with(group, GroupHandlers::new())
    }

    /// Adds a group of `A` workers whose messages and requests to the master go to `handlers`.
    pub fn group_with<A: WorkerActor>(
        &mut self,
        group: GroupConfig,
        handlers: GroupHandlers<A>,
    ) -> GroupKey<A> {
        let index = self.groups.len();
        let name = group.name.clone();
        let starter: Starter = Box::new(move |core, config| {
            let handlers = Rc::new(handlers.handlers);
            let cluster = core.start_group::<A>(&name, config, handlers)?;
            Ok(Started {
                readiness: cluster.readiness(),
                ids: Rc::clone(&cluster.ids),
                view: Box::new(cluster),
            })
        });
        self.groups.push((group, starter));
        GroupKey {
            cluster: self.id,
            index,
            _actor: PhantomData,
        }
    }

    /// Receives every worker's lifecycle events, of every group.
    pub fn subscribe(&mut self, recipient: Recipient<WorkerEvent>) -> &mut Self {
        self.subscribers.push(recipient);
        self
    }

    /// Receives the progress of rolling reloads.
    pub fn on_reload(&mut self, recipient: Recipient<ReloadEvent>) -> &mut Self {
        self.reload_subscribers.push(recipient);
        self
    }

    /// Receives the cluster's membership events when it spans hosts (see
    /// [`ClusterConfig::backend`](crate::ClusterConfig::backend)): nodes joined and left, this
    /// node's link to Redis lost and back.
    pub fn on_node(&mut self, recipient: Recipient<crate::backend::NodeEvent>) -> &mut Self {
        self.node_subscribers.push(recipient);
        self
    }

    /// Adds a sink for the cluster's log records.
    pub fn log_sink(&mut self, sink: Box<dyn crate::logger::Sink>) -> &mut Self {
        self.log_sinks.push(sink);
        self
    }

    /// Every group's settings, checked before anything starts.
    fn validate(&self) -> Result<Vec<ClusterConfig>, Error> {
        let bad = |name: &str, reason: String| {
            Err(Error::Config(ConfigError {
                field: "groups",
                reason: format!("group {name:?}: {reason}"),
            }))
        };
        if self.groups.is_empty() {
            return Err(ConfigError {
                field: "groups",
                reason: "a cluster needs at least one group".into(),
            }
            .into());
        }
        self.config.validate()?;
        let mut names = HashSet::new();
        let mut configs = Vec::with_capacity(self.groups.len());
        for (group, _) in &self.groups {
            let name = group.name.as_str();
            if name.is_empty() || name.contains(['\0', '=']) {
                return bad(name, "name: must be non-empty, without '=' or NUL".into());
            }
            if let Some(after) = &group.after {
                if !names.contains(after.as_str()) {
                    return bad(
                        name,
                        format!("after: {after:?} is not a group started before it"),
                    );
                }
            }
            if !names.insert(name) {
                return bad(name, "name: another group has the same name".into());
            }
            if group.workers == Some(0) {
                return bad(name, "workers: a group needs at least one worker".into());
            }
            let config = group.apply(&self.config);
            if let Err(e) = config.validate() {
                return bad(name, format!("{}: {}", e.field, e.reason));
            }
            configs.push(config);
        }
        Ok(configs)
    }

    /// Validates every group (nothing starts if one is bad), then starts them in order, each
    /// once the group it waits for is ready, and returns once every worker is ready.
    ///
    /// # Errors
    /// [`Error::Config`] naming the group and the setting; [`Error::StartFailed`] when a
    /// worker did not become ready (every group is stopped first).
    pub async fn start(&mut self) -> Result<Groups, Error> {
        std::mem::replace(self, Self::empty()).launch().await
    }

    pub(super) async fn launch(self) -> Result<Groups, Error> {
        let configs = self.validate()?;
        // The node's name is taken before anything starts: a refusal starts nothing.
        let node = match &self.config.backend {
            Some(backend) => Some((crate::backend::claim(backend).await?, self.node_subscribers)),
            None => None,
        };
        let core = Core::start(
            &self.config,
            self.subscribers,
            self.reload_subscribers,
            self.log_sinks,
            node,
        )?;
        let mut names = Vec::new();
        let mut views = Vec::new();
        let mut ids = Vec::new();
        let mut readiness: Vec<Vec<(WorkerId, Recipient<AwaitReady>)>> = Vec::new();
        for ((group, starter), config) in self.groups.into_iter().zip(configs) {
            if let Some(after) = &group.after {
                let index = names.iter().position(|n| n == after).expect("validated");
                for (worker, ready) in &readiness[index] {
                    let result = ready
                        .send(AwaitReady)
                        .await
                        .unwrap_or(Err(ExitReason::Killed));
                    if let Err(reason) = result {
                        let _ = core.supervisor.send(StopAll).await;
                        return Err(Error::StartFailed {
                            worker: *worker,
                            reason,
                        });
                    }
                }
            }
            let started = match starter(&core, &config) {
                Ok(started) => started,
                Err(error) => {
                    // What started so far stops, and the supervisor lets go of what it keeps
                    // (the metrics endpoint's socket).
                    let _ = core.supervisor.send(StopAll).await;
                    return Err(error);
                }
            };
            names.push(group.name);
            readiness.push(started.readiness);
            views.push(started.view);
            ids.push(started.ids);
        }
        core.finish_start(readiness.into_iter().flatten().collect())
            .await?;
        if let Some(node) = &core.node {
            // Listed for the other nodes now that the workers are ready.
            node.announce().await;
        }
        Ok(Groups {
            id: self.id,
            supervisor: core.supervisor.clone(),
            metrics_addr: core.metrics_addr,
            node: core.node.clone(),
            names,
            views,
            ids,
        })
    }
}

/// A running cluster of several groups; [`get`](Self::get) gives each group's typed handle.
pub struct Groups {
    id: u64,
    supervisor: Addr<ClusterSupervisor>,
    metrics_addr: Option<std::net::SocketAddr>,
    node: Option<crate::backend::NodeView>,
    names: Vec<String>,
    views: Vec<Box<dyn Any>>,
    /// Each group's ids, in start order.
    ids: Vec<Rc<RefCell<Vec<WorkerId>>>>,
}

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Groups")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Groups {
    /// The typed handle of the group `key` was returned for.
    ///
    /// # Errors
    /// [`Error::ForeignGroupKey`] when `key` comes from another cluster's builder.
    pub fn get<A: WorkerActor>(&self, key: GroupKey<A>) -> Result<&Cluster<A>, Error> {
        let view = (key.cluster == self.id)
            .then(|| self.views.get(key.index)?.downcast_ref::<Cluster<A>>())
            .flatten();
        view.ok_or(Error::ForeignGroupKey)
    }

    /// The groups' names, in start order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every worker of every group, by id.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        Ok(self.supervisor.send(ListWorkers).await?)
    }

    /// The name of the group that worker `id` belongs to, or `None` for no worker.
    pub fn group_of(&self, id: WorkerId) -> Option<&str> {
        let index = self
            .ids
            .iter()
            .position(|ids| ids.borrow().binary_search(&id).is_ok())?;
        Some(&self.names[index])
    }

    /// The group and id of the worker whose process has pid `pid` now; the group's
    /// [`Cluster::worker`] gives its proxy.
    ///
    /// # Errors
    /// [`Error::NoSuchPid`] when no worker process has that pid; [`Error::Mailbox`] when the
    /// supervisor has stopped.
    pub async fn worker_by_pid(&self, pid: u32) -> Result<(&str, WorkerId), Error> {
        let workers = self.workers().await?;
        let info = workers.iter().find(|info| info.pid == Some(pid));
        let id = info.ok_or(Error::NoSuchPid { pid })?.id;
        let group = self.group_of(id).ok_or(Error::NoSuchPid { pid })?;
        Ok((group, id))
    }

    /// Stops every group, the last started first, and returns once every worker is reaped.
    ///
    /// # Errors
    /// [`Error::Mailbox`] when the supervisor has already stopped.
    pub async fn stop(&self) -> Result<(), Error> {
        self.supervisor.send(StopAll).await?;
        Ok(())
    }

    /// Where the metrics endpoint listens (see
    /// [`ClusterConfig::metrics`](crate::ClusterConfig::metrics)); `None` when the cluster
    /// serves no metrics.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The supervisor actor.
    pub fn supervisor(&self) -> &Addr<ClusterSupervisor> {
        &self.supervisor
    }

    /// This node; see [`Cluster::node`].
    pub fn node(&self) -> Option<crate::backend::NodeId> {
        self.node.as_ref()?.id()
    }

    /// Every live node, this one first; see [`Cluster::nodes`].
    pub fn nodes(&self) -> Vec<crate::backend::NodeInfo> {
        self.node.as_ref().map(|n| n.nodes()).unwrap_or_default()
    }

    /// The heartbeat's figures; see [`Cluster::node_stats`].
    pub fn node_stats(&self) -> Option<crate::backend::NodeStats> {
        Some(self.node.as_ref()?.stats())
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
    std::rc::Rc::new(move |from, payload| {
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
