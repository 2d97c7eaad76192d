//! The start-up assembly: the supervisor, the routing table, the cache and the logger that every
//! group of a cluster shares, then each group's slots and proxies.

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;

use super::Cluster;
use crate::config::ClusterConfig;
use crate::error::ExitReason;
use crate::error::{ConfigError, Error};
use crate::event::WorkerEvent;
use crate::messaging::system::SystemLink;
use crate::messaging::table::SharedRouting;
use crate::proxy::{AwaitReady, Handlers, Links, SlotSpec};
use crate::state::WorkerId;
use crate::supervisor::{ClusterSupervisor, Control, ReloadEvent, StopAll};
use crate::worker::WorkerActor;

/// What every group of a cluster shares: its supervisor, routing, cache and logger.
#[derive(Clone)]
pub(crate) struct Core {
    pub(super) supervisor: Addr<ClusterSupervisor>,
    routing: SharedRouting,
    cache: crate::cache::SharedCache,
    log: crate::logger::LogLink,
    /// The next slot id, across groups.
    next_id: Rc<Cell<usize>>,
    groups: Rc<Cell<usize>>,
    /// Where the metrics endpoint listens, when the cluster serves one.
    pub(super) metrics_addr: Option<std::net::SocketAddr>,
    /// What a scrape reads of the cluster.
    metrics: crate::metrics::Sources,
    /// The node's view, when the cluster spans hosts.
    pub(super) node: Option<crate::backend::NodeView>,
}

/// A node's name taken at start, and who hears of its membership events.
pub(super) type NodeStart = (
    crate::backend::Claim,
    Vec<Recipient<crate::backend::NodeEvent>>,
);

/// The cache is the cluster's, in Redis, when a backend is set (unless it keeps its cache on
/// this node).
fn cache_link(
    config: &ClusterConfig,
    node: Option<&NodeStart>,
) -> Option<crate::backend::StoreLink> {
    let (claim, _) = node?;
    crate::backend::StoreLink::new(claim, config.backend.as_ref()?)
}

impl Core {
    /// Starts the supervisor, the cache, the logger and the node's heartbeat; no worker yet.
    pub(super) fn start(
        config: &ClusterConfig,
        subscribers: Vec<Recipient<WorkerEvent>>,
        reload_subscribers: Vec<Recipient<ReloadEvent>>,
        log_sinks: Vec<Box<dyn crate::logger::Sink>>,
        node: Option<NodeStart>,
    ) -> Result<Self, Error> {
        let routing: SharedRouting = Rc::default();
        // First what another cluster may hold (the snapshot's lock): a refusal starts nothing.
        let link = cache_link(config, node.as_ref());
        let cache = crate::cache::SharedCache::start(&config.cache, Rc::clone(&routing), link)
            .map_err(|reason| ConfigError {
                field: "cache",
                reason,
            })?;
        let logger =
            crate::logger::Logger::new(&config.log, log_sinks).map_err(|e| ConfigError {
                field: "log",
                reason: format!("cannot open the log files: {e}"),
            })?;
        let log_queue = logger.queue();
        let logger = logger.start();
        let log = crate::logger::LogLink {
            logger: logger.clone(),
            queue: log_queue,
        };
        // The supervisor's address comes first: the heartbeat (for the local groups) and the
        // metrics endpoint (at each scrape) ask it before the actor runs.
        let context = Context::new();
        let supervisor = context.address();
        let mut actor = ClusterSupervisor::new(
            config,
            subscribers,
            reload_subscribers,
            Rc::clone(&routing),
            cache.clone(),
            logger,
        );
        let mut view = None;
        if let Some((claim, subscribers)) = node {
            let name = claim.settings.name.clone();
            let asks = crate::messaging::system::SupervisorAsks::of(&supervisor);
            let (node, node_view) = claim.run(asks, subscribers, Rc::clone(&routing));
            actor = actor.with_node(node);
            view = Some((name, node_view));
        }
        let sources = crate::metrics::Sources {
            supervisor: supervisor.downgrade(),
            cache: cache.clone(),
            log: log.clone(),
            node: view,
        };
        let serve = |addr: &String| {
            crate::metrics::serve(addr, sources.clone()).map_err(|e| ConfigError {
                field: "metrics",
                reason: format!("cannot serve metrics at {addr}: {e}"),
            })
        };
        let metrics = config.metrics.as_ref().map(serve).transpose()?;
        let metrics_addr = metrics.as_ref().map(crate::metrics::Endpoint::local_addr);
        if let Some(endpoint) = metrics {
            actor = actor.with_companion(Box::new(endpoint));
        }
        context.run(actor);
        Ok(Self {
            supervisor,
            routing,
            cache,
            log,
            next_id: Rc::default(),
            groups: Rc::default(),
            metrics_addr,
            node: sources.node.as_ref().map(|(_, view)| view.clone()),
            metrics: sources,
        })
    }

    /// Starts a group of `A` workers run as `config` says (its processes start now).
    pub(super) fn start_group<A: WorkerActor>(
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
            listening: spec.listeners.clone(),
        });
        let links = Links {
            events: self.supervisor.clone().recipient(),
            system: SystemLink::of(&self.supervisor),
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
            metrics_addr: self.metrics_addr,
            metrics: self.metrics.clone(),
            node: self.node.clone(),
        };
        for _ in 0..config.worker_count() {
            cluster.add_slot(Vec::new());
        }
        Ok(cluster)
    }

    /// Waits until every one of `slots` is ready, then turns restarts on; stops the cluster and
    /// reports the first failure otherwise.
    pub(super) async fn finish_start(
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
