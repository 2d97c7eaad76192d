//! A cluster that spans hosts, seen from one of its masters: this node, the live nodes, the
//! heartbeat's figures (see [`backend`](crate::backend)). Read from the node's local view,
//! without a round trip: what the last beat read.

use super::Cluster;
use crate::backend::{NodeId, NodeInfo, NodeStats};
use crate::worker::WorkerActor;

impl<A: WorkerActor> Cluster<A> {
    /// This node (its name and epoch); `None` without a
    /// [`backend`](crate::ClusterConfig::backend), or while it has not joined (Redis was
    /// unreachable when the cluster started, or its key was lost and it has not joined again).
    pub fn node(&self) -> Option<NodeId> {
        self.node.as_ref()?.id()
    }

    /// Every live node of the cluster, this one first, as the last beat read them (at most a
    /// heartbeat old; while Redis is unreachable, the last view read). Empty without a backend
    /// or before this node has joined.
    ///
    /// ```no_run
    /// # fn f(cluster: procactor::Cluster<procactor::actors::echo::Echo>) {
    /// for node in cluster.nodes() {
    ///     println!("{} on {}: {:?}", node.id, node.host, node.pids_by_group());
    /// }
    /// # }
    /// ```
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.node.as_ref().map(|n| n.nodes()).unwrap_or_default()
    }

    /// The heartbeat's figures (beats, failures, bad entries skipped, rejoins); `None`
    /// without a backend.
    pub fn node_stats(&self) -> Option<NodeStats> {
        Some(self.node.as_ref()?.stats())
    }
}
