//! The words for nodes of a cluster that spans hosts (see [`backend`](crate::backend)): a
//! node's id, what it publishes, and how a cluster's handles read the other nodes. They live
//! here, below the backend, because what the master tells its workers
//! ([`ClusterInfo::nodes`](crate::ClusterInfo::nodes)) and who sent a message
//! ([`Peer::Remote`](crate::Peer::Remote)) speak of nodes too.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::messaging::ClusterInfo;
use crate::state::WorkerId;

/// A node: one boot of a master in a cluster that spans hosts. `epoch` comes from the
/// cluster's counter in Redis at each join, so a master that joins again (after its key
/// expired) is a new node with the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's name ([`RedisBackend::node`](crate::backend::RedisBackend::node)).
    pub name: String,
    /// Which join of that name (grows with every join in the cluster).
    pub epoch: u64,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.epoch)
    }
}

/// One worker of a node, as the node last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWorker {
    /// The worker's id on its node.
    pub id: WorkerId,
    /// Which process of the worker (see [`WorkerInfo::generation`](crate::WorkerInfo)).
    pub generation: u64,
    /// Its process, while one runs (a pid only means something on the node's host).
    pub pid: Option<u32>,
}

/// What a node publishes at each beat: who it is, where it runs, and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// The host it runs on (its `gethostname`).
    pub host: String,
    /// Its master's pid (on that host).
    pub master_pid: u32,
    /// When its master started (the master's clock).
    pub started: SystemTime,
    /// Each group's members: every supervision group and every topic a worker joined, as
    /// [`ClusterInfo::groups`](crate::ClusterInfo::groups) lists them on that node.
    pub groups: BTreeMap<String, Vec<NodeWorker>>,
}

impl NodeInfo {
    /// Each group with the pids of its running members (pids of the node's host).
    pub fn pids_by_group(&self) -> BTreeMap<String, Vec<u32>> {
        self.groups
            .iter()
            .map(|(group, workers)| {
                (
                    group.clone(),
                    workers.iter().filter_map(|w| w.pid).collect(),
                )
            })
            .collect()
    }
}

impl ClusterInfo {
    /// This node's groups as a node publishes them: each group's members with their
    /// generations and pids.
    pub(crate) fn node_groups(&self) -> BTreeMap<String, Vec<NodeWorker>> {
        let by_id: BTreeMap<WorkerId, _> = self.workers.iter().map(|w| (w.id, w)).collect();
        self.groups
            .iter()
            .map(|(group, ids)| {
                let workers = ids
                    .iter()
                    .map(|id| NodeWorker {
                        id: *id,
                        generation: by_id.get(id).map_or(0, |w| w.generation),
                        pid: by_id.get(id).and_then(|w| w.pid),
                    })
                    .collect();
                (group.clone(), workers)
            })
            .collect()
    }
}

/// Where the routing learns the cluster's nodes: the backend's view (one thread, no round
/// trip; at most a heartbeat old).
pub(crate) trait Directory: fmt::Debug {
    /// Every live node as last read, this one first once it has joined.
    fn nodes(&self) -> Vec<NodeInfo>;
}
