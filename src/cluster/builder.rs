//! [`ClusterBuilder`]: a cluster of one group of `A` workers, configured before it starts.
//!
//! It is a [`GroupsBuilder`] with one group, named [`DEFAULT_GROUP`], that has the cluster's
//! own settings; both builders take `&mut self` and start with `start()`.

use std::fmt;

use actix::prelude::*;

use super::groups::{request_handler, GroupHandlers, GroupsBuilder};
use super::Cluster;
use crate::config::{ClusterConfig, GroupConfig, DEFAULT_GROUP};
use crate::error::Error;
use crate::event::WorkerEvent;
use crate::proxy::{FromWorker, WorkerRequest};
use crate::supervisor::{ClusterSupervisor, ReloadEvent};
use crate::worker::WorkerActor;

impl ClusterSupervisor {
    /// Starts a cluster of `A` workers with no event subscribers; see [`ClusterBuilder`].
    ///
    /// ```no_run
    /// # use procactor::prelude::*;
    /// # use procactor::actors::echo::{Echo, EchoMsg};
    /// # async fn f() -> Result<(), procactor::Error> {
    /// let cluster = ClusterSupervisor::start::<Echo>(ClusterConfig::new().workers(2)).await?;
    /// let reply = cluster.worker(0).send(Call(EchoMsg::Ping)).await??;
    /// # let _ = reply;
    /// cluster.stop().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`ClusterBuilder::start`].
    pub async fn start<A: WorkerActor>(config: ClusterConfig) -> Result<Cluster<A>, Error> {
        Self::builder(config).start().await
    }

    /// A builder for a cluster of `A` workers, to register event handlers before anything starts.
    pub fn builder<A: WorkerActor>(config: ClusterConfig) -> ClusterBuilder<A> {
        ClusterBuilder {
            groups: Self::with_groups(config),
            handlers: Some(GroupHandlers::new()),
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
    groups: GroupsBuilder,
    /// Taken by [`start`](Self::start).
    handlers: Option<GroupHandlers<A>>,
}

impl<A: WorkerActor> fmt::Debug for ClusterBuilder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> ClusterBuilder<A> {
    fn handlers(&mut self) -> &mut GroupHandlers<A> {
        self.handlers.get_or_insert_with(GroupHandlers::new)
    }

    /// Receives every worker's lifecycle events: spawned, online, ready, exited, restarting,
    /// gave up.
    pub fn subscribe(&mut self, recipient: Recipient<WorkerEvent>) -> &mut Self {
        self.groups.subscribe(recipient);
        self
    }

    /// Receives the one-way messages that workers send with
    /// [`WorkerContext::send_master`](crate::WorkerContext::send_master).
    pub fn on_message(&mut self, recipient: Recipient<FromWorker<A::Event>>) -> &mut Self {
        self.handlers().add_listener(recipient);
        self
    }

    /// Answers the requests that workers send with
    /// [`WorkerHandle::ask_master`](crate::WorkerHandle::ask_master): each arrives as a
    /// [`WorkerRequest`] carrying the worker's `Event`, and the recipient's answer, of the
    /// worker's [`MasterReply`](WorkerActor::MasterReply) type, goes back to the worker. A
    /// request that does not decode as `A::Event` fails with
    /// [`AskError::Failed`](crate::AskError::Failed) on the worker's side.
    pub fn on_request(
        &mut self,
        recipient: Recipient<WorkerRequest<A::Event, A::MasterReply>>,
    ) -> &mut Self {
        self.handlers()
            .set_requests(request_handler::<A, A::MasterReply>(recipient));
        self
    }

    /// Adds a sink for the cluster's log records, besides the files, the in-memory ring and
    /// `tracing` that [`LogConfig`](crate::logger::LogConfig) sets up.
    pub fn log_sink(&mut self, sink: Box<dyn crate::logger::Sink>) -> &mut Self {
        self.groups.log_sink(sink);
        self
    }

    /// Receives the progress of rolling reloads: started, each worker replaced, done or failed.
    pub fn on_reload(&mut self, recipient: Recipient<ReloadEvent>) -> &mut Self {
        self.groups.on_reload(recipient);
        self
    }

    /// Receives the cluster's membership events when it spans hosts (see
    /// [`ClusterConfig::backend`](crate::ClusterConfig::backend)): other nodes joined and left,
    /// this node's link to Redis lost and back.
    pub fn on_node(&mut self, recipient: Recipient<crate::backend::NodeEvent>) -> &mut Self {
        self.groups.on_node(recipient);
        self
    }

    /// Validates the configuration, starts every worker and waits until all are ready.
    ///
    /// Must be called from within an actix system; the actors run on the current arbiter.
    /// The builder is spent: a second call starts a cluster with no handlers.
    ///
    /// With a [`backend`](crate::ClusterConfig::backend), this node's name is taken in Redis
    /// before any worker starts, and the other nodes see it once every worker is ready.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, a Redis that refuses this node, or a node
    /// name a live master holds (nothing was started); [`Error::StartFailed`]
    /// when a worker could not be spawned or did not become ready (the others are stopped first).
    pub async fn start(&mut self) -> Result<Cluster<A>, Error> {
        let handlers = self.handlers.take().unwrap_or_default();
        let mut groups = std::mem::replace(&mut self.groups, GroupsBuilder::empty());
        let key = groups.group_with(GroupConfig::new(DEFAULT_GROUP), handlers);
        let started = groups.launch().await?;
        Ok(started.get(key)?.clone())
    }
}
