//! A cluster's metrics: where its own endpoint listens, and adding it to an
//! [`Exporter`] — here, in the handles' layer, because the exporter knows no [`Cluster`].

use super::Cluster;
use crate::metrics::Exporter;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Cluster<A> {
    /// Where the metrics endpoint listens (see
    /// [`ClusterConfig::metrics`](crate::ClusterConfig::metrics); for port 0, the port it got);
    /// `None` when the cluster serves no metrics.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }
}

impl Exporter {
    /// Adds `cluster` to the scrape, under the name of its group (see [`Exporter`] for the
    /// labels): every group of its cluster, its cache, its logs, its reloads and, across
    /// hosts, its membership. A cluster added under that name before is replaced; one that has
    /// stopped is not added. The cluster leaves the scrape when it stops or is
    /// [`remove`](Self::remove)d.
    ///
    /// Works whether or not the cluster also serves its own endpoint
    /// ([`ClusterConfig::metrics`](crate::ClusterConfig::metrics)).
    ///
    /// # Panics
    /// Outside the actix system's thread (a tokio `LocalSet`), where the cluster runs.
    pub fn add<A: WorkerActor>(&self, cluster: &Cluster<A>) {
        self.add_sources(&cluster.spec.group, cluster.metrics.clone());
    }
}
