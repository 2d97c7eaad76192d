//! Messaging between processes: who sent a message, how it came, and what can go wrong.
//!
//! Every message between processes passes through the master, which stamps its sender: a worker
//! names where a message goes ([`Route`]), never who it is from. Messages between one pair of
//! processes keep their order (they travel one pipe, one proxy mailbox and the other pipe, each
//! first in, first out). Nothing queues without bound in the master: a message for a worker goes
//! into that worker's outbox, and when the outbox is full the sender gets
//! [`AskError::Backpressure`].
//!
//! From a worker ([`WorkerContext`](crate::WorkerContext)): `tell_worker`, `ask_worker`,
//! `ask_master`, `broadcast`, `publish`, `join` / `leave`, `confirm` / `await_confirmations`,
//! `cluster_info`, and, where the config permits, `kill_worker` / `restart_worker` /
//! `reload_cluster`. From the master: [`Cluster`](crate::Cluster)'s `broadcast`, `publish`,
//! `group_members`, `info`, `stats`, `confirm`, `await_confirmations` and `on_confirmation`,
//! and [`TellAck`](crate::TellAck) to one worker.
//!
//! A group is a topic: each supervision group's live workers are members of the topic of its
//! name, and workers join further topics (the one place that says it all:
//! [`ClusterInfo`'s Groups](crate::ClusterInfo#groups)). Confirmations count in rounds, each
//! waiter its own (`messaging/confirm.rs`).

//!
//! # Where it lives
//! - here: the types on the wire and in the API ([`Peer`], [`Via`], [`Route`], [`SystemOp`],
//!   [`ClusterInfo`], [`WorkerStats`]);
//! - `messaging/table.rs`: the routing table every proxy shares, and the routed messages;
//! - `messaging/system.rs`: one typed actix message per system operation, and the link the
//!   proxies use to ask the supervisor;
//! - `messaging/router.rs`: a proxy's router — where what its worker sends goes;
//! - `messaging/confirm.rs`: confirmations;
//! - at the ends of the pipes, the actors' own halves: the proxy's (`proxy/route.rs`: asks its
//!   router, writes what others send into its worker's stdin) and the worker's operations on
//!   [`WorkerHandle`](crate::WorkerHandle) (`worker/peers.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use crate::error::AskError;
use crate::event::WorkerInfo;
use crate::state::WorkerId;

pub(crate) mod confirm;
pub(crate) mod nodes;
pub(crate) mod router;
pub(crate) mod system;
pub(crate) mod table;

pub use confirm::ConfirmationRounds;
pub use nodes::{NodeId, NodeInfo, NodeWorker};

/// Who sent a message, as stamped by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Peer {
    /// The master process.
    Master,
    /// A worker process.
    Worker {
        /// Its slot.
        id: WorkerId,
        /// Its process id.
        pid: u32,
    },
    /// A worker (or the master) of another node of the cluster (one that spans hosts through
    /// a [`backend`](crate::backend)). Its `id` is a slot on *that* node: answer it with
    /// [`WorkerHandle::tell_worker_on`](crate::WorkerHandle::tell_worker_on) and the node's
    /// name ([`ClusterInfo::node_name`] of `epoch`), never with `tell_worker(id)`, which would
    /// reach a worker of this node.
    Remote {
        /// Which boot of which node: epochs are unique in a cluster.
        epoch: u64,
        /// Its slot on its node; `None` when the sender is that node's master.
        id: Option<WorkerId>,
        /// Its process id, on its node's host.
        pid: u32,
    },
}

/// How a one-way message reached this worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Via {
    /// Sent to this worker by id, or by the master to this worker.
    #[default]
    Direct,
    /// Sent to every worker.
    Broadcast,
    /// Published to a group this worker is a member of (its supervision group or a topic it
    /// joined; see [`ClusterInfo`'s Groups](ClusterInfo#groups)).
    Group(String),
}

/// Where a worker sends a message; the wire form of its choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route<'a> {
    /// The master's handlers.
    Master,
    /// One worker, by slot.
    Worker(u64),
    /// Every other worker.
    All,
    /// The members of a group (the sender excluded; see [`ClusterInfo`'s
    /// Groups](ClusterInfo#groups)).
    Group(&'a str),
    /// One worker on a node of a cluster that spans hosts (see [`backend`](crate::backend)),
    /// by the node's name and the worker's id there.
    Node {
        /// The node's name.
        node: &'a str,
        /// The worker's id on that node.
        worker: u64,
        /// For a request: how long its asker waits, in ms (the receiving node drops it once
        /// that has passed); 0 for a one-way message.
        timeout_ms: u64,
    },
}

/// A system operation a worker asks of the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemOp<'a> {
    /// Join a group.
    Join(&'a str),
    /// Leave a group.
    Leave(&'a str),
    /// Confirm a key.
    Confirm(&'a str),
    /// Wait until `n` processes have confirmed `key`, at most `timeout_ms`.
    AwaitConfirmations {
        /// The key.
        key: &'a str,
        /// How many confirmations.
        n: u32,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The cluster's [`ClusterInfo`].
    Info,
    /// Every worker's [`WorkerStats`].
    Stats,
    /// Kill a worker (the restart policy decides what follows).
    Kill(u64),
    /// Replace a worker with a new process, gracefully.
    Restart(u64),
    /// A rolling reload of the cluster.
    Reload,
    /// A cache operation.
    Cache(crate::cache::ops::CacheOp),
    /// Ask for a rolling reload of the cluster; the worker's proxy answers at once: accepted
    /// (the reload starts, or queues behind the one running) or refused by the config.
    RequestReload,
    /// End a worker (clustr-node's `emitKill`), by id or pid; the master's pid stops the
    /// cluster. Answered once the process has exited.
    End {
        /// Which worker.
        target: Target,
        /// How.
        ending: Ending,
    },
    /// Stop the whole cluster gracefully; answered once the stop began.
    StopCluster,
}

/// Which worker an operation is for: its cluster-wide id, or the pid of its running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The worker with this id.
    Id(WorkerId),
    /// The worker whose running process has this pid.
    Pid(u32),
}

/// How a worker is ended ([`Cluster::end_worker`](crate::Cluster::end_worker),
/// [`WorkerHandle::end_worker`](crate::WorkerHandle::end_worker)).
///
/// Either way it was asked for: it does not count toward the restart intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// Gracefully: the worker handles what it was sent, runs its `stopping` hook and exits with
    /// `status`; the restart policy then decides by that status (`transient` restarts it only
    /// for a status other than 0). A plain program gets SIGTERM and exits with its own status.
    Graceful {
        /// The exit status.
        status: i32,
    },
    /// At once: SIGKILL to its process group; restarted per the restart policy.
    Now,
}

/// The cluster as seen from the master: groups, workers and their processes.
///
/// # Groups
/// A group is a message topic. Each supervision group — the group a worker was started in
/// (a [`GroupConfig`](crate::GroupConfig), or [`DEFAULT_GROUP`](crate::DEFAULT_GROUP) in a
/// cluster of one group) — is a topic whose members are its live workers: a worker is a member
/// from its start, without `join`, while a process of its slot runs (not while it is down,
/// restarting or stopped). Other topics are joined and left with
/// [`WorkerHandle::join`](crate::WorkerHandle::join) / [`leave`](crate::WorkerHandle::leave);
/// a worker may join another supervision group's topic too, and its joins end with its
/// process. Leaving one's own supervision group, or joining it, does nothing: a worker stays a
/// member of its group for as long as it runs.
///
/// A message published to a group (`publish(group, &msg)`, from the master's
/// [`Cluster`](crate::Cluster) or from a worker) reaches the members at that moment, the
/// publishing worker excluded; it arrives with [`Via::Group`]. `group_members(group)` lists
/// the members by id, [`groups`](Self::groups) every group's, and
/// [`pids_by_group`](Self::pids_by_group) their pids (clustr-node's `clusterInfo`).
/// [`WorkerInfo::groups`](crate::WorkerInfo::groups) lists only the topics a worker joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The master's pid.
    pub master_pid: u32,
    /// Every worker slot.
    pub workers: Vec<WorkerInfo>,
    /// Each group's members, by id: every supervision group (its live workers) and every
    /// topic a worker has joined (see [Groups](Self#groups)).
    pub groups: BTreeMap<String, Vec<WorkerId>>,
    /// The cluster's nodes, when it spans hosts (a [`backend`](crate::backend)): this node
    /// first (its groups as of this answer), then every other live node as this node's last
    /// heartbeat read it (at most a heartbeat old). Empty without a backend, and holds only
    /// the others while this node has not joined.
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
}

impl ClusterInfo {
    /// The pids of a group's members (those running), in id order.
    pub fn group_pids(&self, group: &str) -> Vec<u32> {
        let Some(ids) = self.groups.get(group) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.workers.get(*id)?.pid)
            .collect()
    }

    /// Every group with the pids of its running members: clustr-node's `clusterInfo`,
    /// `{ webWorker: [pids], cacheWorker: [pids] }`. Every supervision group is listed (with no
    /// pids while none of its workers runs), and every topic a worker has joined.
    ///
    /// ```
    /// # fn f(info: procactor::ClusterInfo) {
    /// for (group, pids) in info.pids_by_group() {
    ///     println!("{group}: {pids:?}");
    /// }
    /// # }
    /// ```
    pub fn pids_by_group(&self) -> BTreeMap<String, Vec<u32>> {
        self.groups
            .keys()
            .map(|group| (group.clone(), self.group_pids(group)))
            .collect()
    }

    /// Every node's groups with their running members' pids, by node name: the whole
    /// cluster's `pids_by_group` when it spans hosts (a pid is a process of its node's host).
    /// Empty without a backend.
    ///
    /// ```
    /// # fn f(info: procactor::ClusterInfo) {
    /// for (node, groups) in info.pids_by_node() {
    ///     println!("{node}: {groups:?}");
    /// }
    /// # }
    /// ```
    pub fn pids_by_node(&self) -> BTreeMap<String, BTreeMap<String, Vec<u32>>> {
        self.nodes
            .iter()
            .map(|node| (node.id.name.clone(), node.pids_by_group()))
            .collect()
    }

    /// The name of the node of `epoch` (see [`Peer::Remote`]), if it is in
    /// [`nodes`](Self::nodes).
    pub fn node_name(&self, epoch: u64) -> Option<&str> {
        self.nodes
            .iter()
            .find(|node| node.id.epoch == epoch)
            .map(|node| node.id.name.as_str())
    }
}

/// Traffic and resource figures of one worker slot, counted by its proxy in the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkerStats {
    /// The slot.
    pub id: WorkerId,
    /// Its process, when one runs.
    pub pid: Option<u32>,
    /// Frames sent to the worker, by kind (`Request`, `Tell`, `Deliver`, `PeerRequest`, …).
    pub sent: BTreeMap<String, u64>,
    /// Frames received from the worker, by kind (`Reply`, `Event`, `Send`, `Ask`, …).
    pub received: BTreeMap<String, u64>,
    /// Requests made to the worker (by the master or by peers).
    pub requests: u64,
    /// Failures: requests answered `Failed`, messages that could not be delivered.
    pub errors: u64,
    /// New processes started after the first.
    pub restarts: u64,
    /// CPU time of the current process (user + system), from `/proc`.
    pub cpu: Duration,
    /// Resident memory of the current process in bytes, from `/proc`.
    pub rss_bytes: u64,
}

/// CPU time and resident memory of `pid`, from `/proc/<pid>/stat` and `/proc/<pid>/statm`.
pub(crate) fn proc_usage(pid: u32) -> (Duration, u64) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(Duration::from_millis((utime + stime) * 1000 / ticks.max(1)))
        })
        .unwrap_or_default();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    (cpu, rss)
}
