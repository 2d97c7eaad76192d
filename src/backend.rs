//! Several hosts, one cluster: masters on many machines joined through Redis.
//!
//! A cluster stops at its host's edge unless its config names a [`Backend`]:
//! `ClusterConfig::backend(Backend::redis("redis://host:port/db").cluster("shop"))`. Every
//! master started with the same cluster name then joins one cluster. Without a backend (the
//! default) nothing of this module runs: no connection, no task, no cost.
//!
//! Two parts so far: **membership** — who is in the cluster, with which groups and workers, and
//! events when that changes — and **requests and one-way messages between workers on
//! different nodes** ([`WorkerHandle::ask_worker_on`](crate::WorkerHandle::ask_worker_on),
//! [`tell_worker_on`](crate::WorkerHandle::tell_worker_on)) over Redis pub/sub, at most once,
//! with deadlines and typed failures (`backend/remote.rs` says which and when), broadcast,
//! group publish and confirmations across nodes, **the cluster-wide cache and its fenced
//! locks** in Redis (the [cache's docs](crate::cache#on-several-hosts) say how;
//! `backend/store.rs` holds its keys and scripts; [`RedisBackend::local_cache`] keeps an
//! embedded cache per node instead), and the **cluster-wide reload** (below).
//!
//! # Nodes
//! A *node* is one boot of a master: a name ([`RedisBackend::node`], by default
//! `<hostname>-<master pid>`) and an *epoch*, a number from the cluster's counter in Redis at
//! every join. A node that loses its place (its key expired while it could not reach Redis)
//! joins again with a new epoch, so anything addressed to its old epoch can be told apart.
//! Two live masters cannot hold one name: each boot writes a random 128-bit boot id into its
//! node's key, and a master that finds another boot's live key under its name fails to start
//! with [`Error::Config`](crate::Error::Config) (field `backend`). A key left by a master that
//! died is waited out (at most its time to live), so a master restarted at once under the
//! same name starts.
//!
//! # Keys (all under the hash tag `{<cluster>}`)
//! | key | type | what |
//! |---|---|---|
//! | `procactor:{<cluster>}:epoch` | string | the epoch counter: `INCR` at every join; starts at the server's clock in ms, so that a Redis that lost its data never hands an epoch out twice |
//! | `procactor:{<cluster>}:node:<name>` | hash, `PEXPIRE node_timeout` | `v` (layout version), `boot`, `epoch`, `beat` (server ms), `listed` (`1` once its workers are ready: a boot not listed yet — one that took a dead node's name — is read as not there), `pid`, `host`, `started` (ms since 1970), `groups` (JSON: group → `[{id, generation, pid}]`) |
//! | `procactor:{<cluster>}:nodes` | sorted set | node names, scored by their last beat (server ms) |
//! | `procactor:{<cluster>}:in:<name>` | pub/sub channel | the node's inbox: frames for its workers and answers to its requests (`backend/wire.rs`) |
//! | `procactor:{<cluster>}:reload:fence` | string | the reload's fencing counter: `INCR` at every rollout; seeded from the server's clock in ms |
//! | `procactor:{<cluster>}:reload:lock` | string, `PX reload_lease` | `<token>:<node>`: the coordinator of the running rollout |
//! | `procactor:{<cluster>}:reload:state` | hash | the running rollout's progress: `token`, `coordinator`, `status`, `node` (written only under the current fence) |
//! | `procactor:{<cluster>}:reload:report:<token>` | string, `PX` 10 min | a finished rollout's report (JSON), for the requests that joined it |
//! | `procactor:{<cluster>}:reload` | pub/sub channel | the rollouts' commands, answers and progress (JSON) |
//!
//! Every `heartbeat` (1 s), each node, in one Lua script (one atomic step, one round trip):
//! rewrites its hash and its time to live and its index entry — only while the hash still
//! holds its boot id — and reads every member's hash. A member whose key is gone is reported
//! [`Left`](NodeEvent::Left) ([`Expired`](LeaveReason::Expired)) and pruned from the index
//! once it has been gone long enough for every node to have seen it gone (4 × `node_timeout`,
//! at least 10 s). When another node's key would expire before the next beat, a read is made
//! just after that moment: a master killed with SIGKILL is seen gone about `node_timeout` after
//! its last beat (3 s, plus a round trip). A clean stop ([`Cluster::stop`](crate::Cluster::stop),
//! SIGTERM) deletes the node's key and index entry first, and the others see
//! [`Left`](NodeEvent::Left) ([`Stopped`](LeaveReason::Stopped)) at their next beat. A node is
//! listed only once its workers are ready, so its [`Joined`](NodeEvent::Joined) carries them.
//!
//! # Cluster-wide reload
//! With a backend, SIGHUP, [`Cluster::reload`](crate::Cluster::reload) and a worker's
//! `reload_cluster`/`request_reload` on any node reload the whole cluster, one node at a time,
//! each node with the local rolling reload; [`Cluster::reload_local`](crate::Cluster::reload_local)
//! reloads one node. One coordinator holds a fenced lock (a lease renewed while it runs); every
//! command carries the rollout's token and a node refuses a stale one; the first node that
//! fails stops the rollout and the nodes after it keep the old version. Progress reaches every
//! node's `on_reload` subscribers as [`ReloadEvent::Cluster`](crate::ReloadEvent::Cluster).
//! Redis unreachable: `reload` fails at once with
//! [`ReloadError::ClusterUnavailable`](crate::ReloadError::ClusterUnavailable), SIGHUP reloads
//! that node only. `backend/rollout.rs` has the protocol, its order, its fencing and its failure
//! semantics (a coordinator killed mid-rollout: its lease expires, the rollout is reported
//! abandoned, the next request starts a new one).
//!
//! # Where it runs
//! One task on the master's event loop; the connection (redis-rs's async, reconnecting one)
//! and every call on it run on a thread of their own, `procactor-redis`: connecting over TLS
//! reads the system's root certificates (files), and nothing of that blocks the loop. At each beat it asks the supervisor for the local groups (one
//! message, as [`Cluster::info`](crate::Cluster::info) does). The supervisor keeps it while the
//! cluster runs and has it leave when the cluster stops.
//!
//! # Failure semantics
//! - **Redis unreachable** (down, too slow — each answer within a heartbeat, a whole beat within
//!   two —, or busy: loading its data, a failover under way, read-only after one): the node
//!   keeps supervising and serving; nothing local waits on Redis. Subscribers get
//!   [`Disconnected`](NodeEvent::Disconnected) once; a beat is tried at every heartbeat, one at
//!   a time (failed beats are not queued). When Redis answers again: if the node's key is still
//!   there, [`Reconnected`](NodeEvent::Reconnected); if it expired meanwhile (or Redis restarted
//!   without its data), the node joins again with a new epoch:
//!   [`Rejoined`](NodeEvent::Rejoined). While Redis is unreachable [`Cluster::nodes`](crate::Cluster::nodes)
//!   is the last view read.
//! - **Unreachable at start**: the start waits for Redis one heartbeat at most (the join's
//!   wait; the first beat, which lists the node once its workers are ready, is then not waited
//!   for; a Redis that stops answering between the join and that beat holds the start at most
//!   one heartbeat more). The cluster starts locally, subscribers get `Disconnected`, and the
//!   node joins (`Rejoined`, its first epoch) when Redis answers; until then
//!   [`Cluster::node`](crate::Cluster::node) is `None`. A Redis that answers with an error
//!   (authentication, ACL, scripts refused) or whose TLS certificate is not trusted fails the
//!   start with [`Error::Config`](crate::Error::Config), as does a URL that does not parse.
//! - **Bad input**: a value of another type under a member's key, a hash that does not decode
//!   (a field missing, not a number, the groups not JSON, another layout version, over 4 MiB) is
//!   skipped with a `tracing` warning and counted in [`NodeStats::bad_entries`], once per
//!   entry until it changes; a wrong value under the cluster's own index or counter, or this
//!   node's own key, is replaced (and counted). Nothing panics.
//! - **Name taken later**: if this node's key expired and another master took its name, this node
//!   reports `Disconnected` and tries to take it back at every beat.
//!
//! # Limits
//! - Every node reads every member at every beat: meant for tens of nodes, not thousands.
//! - All nodes of a cluster should use the same timings: pruning assumes no node beats less
//!   often than every 4 × `node_timeout` (10 s at least).
//! - A node that could not read Redis for a while cannot tell how a member that vanished
//!   meanwhile went: [`LeaveReason::Unknown`].
//! - Membership is as strong as the Redis it runs on: a failover to a replica may lose the
//!   last beats (async replication); the epoch counter stays increasing only if Redis keeps its
//!   data or its clock does not go back.
//! - One Redis server (or a primary behind a stable address). The keys share one hash tag, so a
//!   Redis Cluster would hold them in one slot, but the connection does not follow `MOVED`:
//!   Redis Cluster is not supported yet.
//! - **Security**: anyone who can write the cluster's keys or publish on its channels can forge
//!   membership, send messages to its workers, change its cache and reload it. Give each
//!   cluster a Redis ACL user restricted to `procactor:{<cluster>}:*` (keys and channels) and to
//!   the commands the backend runs — Redis checks each `redis.call` of a script against the
//!   user's ACL: `ACL SETUSER <user> on ><password> resetchannels ~procactor:{<cluster>}:*
//!   &procactor:{<cluster>}:* -@all +evalsha +eval +script|load +ping +time +type +get +set
//!   +del +exists +incr +incrby +mget +persist +pexpire +pttl +scan +hget +hmget +hset +hgetall
//!   +zadd +zrange +zrem +publish +subscribe` (the list `tests/nodes.rs` checks, messages, cache
//!   and locks included)
//!   — and use `rediss://` (TLS) with a password across hosts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use actix::Recipient;
use tokio::sync::{mpsc, oneshot};

mod beat;
mod claim;
mod config;
mod conn;
mod node;
mod pending;
mod publisher;
mod remote;
mod rollout;
mod script;
mod store;
mod view;
mod wire;

pub use crate::messaging::{NodeId, NodeInfo, NodeWorker};
pub use config::{Backend, RedisBackend};
pub use node::{LeaveReason, NodeEvent, NodeStats};
pub use rollout::{NodeOutcome, RolloutEvent, RolloutReport};

pub(crate) use rollout::{Links as RolloutLinks, NodeReloaded, ReloadNode, RolloutError, Rollouts};

pub(crate) use claim::{claim, Claim};
pub(crate) use conn::{Inbound, Subscription};
pub(crate) use store::{
    counter_text, event_header, from_stored, parse_event, px, to_stored, Job, Lua, StoreEvent,
    StoreLink, StoreQueue, MAX_IN_FLIGHT,
};

// Seams for the steps to come (messaging, cache and locks, the cluster-wide reload): the
// `Claim` carries the cluster's `redis::Client` and connection and its `Keys` (one prefix, one
// hash tag), the heartbeat task is where a node would subscribe to its inbox and resubscribe
// after a rejoin, and `NodeView` is where a handle learns the live nodes and their epochs to
// address a worker as (node, worker id, generation) and to refuse an old epoch.

use crate::messaging::system::SupervisorAsks;
use crate::messaging::table::RemoteLink;
use crate::messaging::table::SharedRouting;

/// What the heartbeat task and the cluster's handles share (one thread: the master's loop).
#[derive(Debug)]
pub(crate) struct Shared {
    /// This node, once joined.
    me: Option<NodeId>,
    host: String,
    started: SystemTime,
    /// This node's groups, as last asked of the supervisor.
    own_groups: BTreeMap<String, Vec<NodeWorker>>,
    view: view::View,
    stats: NodeStats,
    /// Joins so far (the first one included).
    joins: u64,
    /// When the last beat that Redis answered was sent (or the join), and how long a key
    /// lives: past that, the others have dropped this node, whatever it last knew.
    acked: Option<Instant>,
    node_timeout: Duration,
    heartbeat: Duration,
}

impl Shared {
    /// This node as the others know it: `None` when not joined, or when its last answered
    /// beat is older than its key's time to live (its epoch is over for the others).
    fn current(&self) -> Option<&NodeId> {
        let fresh = self
            .acked
            .is_some_and(|at| at.elapsed() < self.node_timeout);
        self.me.as_ref().filter(|_| fresh)
    }
}

/// The cluster's handles' view of the node: who it is, who else is there, the figures.
#[derive(Debug, Clone)]
pub(crate) struct NodeView {
    shared: Rc<RefCell<Shared>>,
    commands: mpsc::UnboundedSender<beat::Command>,
}

impl crate::messaging::nodes::Directory for NodeView {
    fn nodes(&self) -> Vec<NodeInfo> {
        NodeView::nodes(self)
    }
}

impl NodeView {
    /// This node, once it has joined.
    pub(crate) fn id(&self) -> Option<NodeId> {
        self.shared.borrow().current().cloned()
    }

    /// Every live node as last read, this one first (once joined).
    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        let shared = self.shared.borrow();
        let own = shared.current().cloned().map(|id| NodeInfo {
            id,
            host: shared.host.clone(),
            master_pid: std::process::id(),
            started: shared.started,
            groups: shared.own_groups.clone(),
        });
        own.into_iter()
            .chain(shared.view.others().cloned())
            .collect()
    }

    /// The heartbeat's figures.
    pub(crate) fn stats(&self) -> NodeStats {
        self.shared.borrow().stats
    }

    /// Lists this node for the others (its workers are ready) and waits for that beat: at
    /// most one heartbeat, and not at all when Redis is already unreachable (the beat goes on
    /// meanwhile, and lists the node once Redis answers).
    pub(crate) async fn announce(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(beat::Command::Announce(tx)).is_ok() {
            let heartbeat = self.shared.borrow().heartbeat;
            let _ = tokio::time::timeout(heartbeat, rx).await;
        }
    }
}

/// The heartbeat task, kept by the supervisor while the cluster runs: dropping it stops the
/// task (a clean stop calls [`leave`](Self::leave) first).
#[derive(Debug)]
pub(crate) struct Node {
    commands: mpsc::UnboundedSender<beat::Command>,
    task: tokio::task::JoinHandle<()>,
    /// The task that sends and receives messages between nodes.
    remote: tokio::task::JoinHandle<()>,
    /// The task of cluster-wide reloads, and where requests for them go.
    rollout: tokio::task::JoinHandle<()>,
    rollouts: Rollouts,
}

impl Node {
    /// Has the node delete its key and index entry, then stop beating; the returned future
    /// resolves when that is done (or could not be: bounded by the heartbeat). Asked now, not
    /// when awaited.
    pub(crate) fn leave(&self) -> impl std::future::Future<Output = ()> + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.commands.send(beat::Command::Leave(tx)).is_ok();
        async move {
            if sent {
                let _ = rx.await;
            }
        }
    }

    /// Where cluster-wide reloads are asked for (`backend/rollout.rs`).
    pub(crate) fn rollouts(&self) -> &Rollouts {
        &self.rollouts
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
        self.remote.abort();
        self.rollout.abort();
    }
}

impl Claim {
    /// Starts beating on the current thread's `LocalSet` (the master's arbiter), asking
    /// `supervisor` for the local groups; `subscribers` get the [`NodeEvent`]s. Messages for
    /// workers on other nodes leave `routing` for this node's cross-node task, which delivers
    /// what arrives for this node's workers through it.
    pub(crate) fn run(
        self,
        supervisor: SupervisorAsks,
        subscribers: Vec<Recipient<NodeEvent>>,
        routing: SharedRouting,
    ) -> (Node, NodeView) {
        let me = self.epoch.map(|epoch| NodeId {
            name: self.settings.name.clone(),
            epoch,
        });
        let shared = Rc::new(RefCell::new(Shared {
            stats: NodeStats {
                connected: me.is_some(),
                ..NodeStats::default()
            },
            joins: u64::from(me.is_some()),
            acked: me.as_ref().map(|_| self.joined_at),
            node_timeout: self.settings.node_timeout,
            heartbeat: self.settings.heartbeat,
            me,
            host: self.settings.host.clone(),
            started: self.settings.started,
            own_groups: BTreeMap::new(),
            view: view::View::new(&self.settings.name),
        }));
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let cross = remote::Remote::new(
            self.redis.clone(),
            self.settings.keys.clone(),
            &self.settings.name,
            self.settings.heartbeat,
            Rc::clone(&shared),
            Rc::clone(&routing),
            supervisor.clone(),
        );
        let (commands, rx) = mpsc::unbounded_channel();
        let view = NodeView {
            shared: Rc::clone(&shared),
            commands: commands.clone(),
        };
        routing.borrow_mut().remote = Some(RemoteLink {
            node: self.settings.name.clone(),
            tx: outbound,
            directory: Rc::new(view.clone()),
        });
        let remote = tokio::task::spawn_local(cross.run(outbound_rx, events_rx));
        let (rollout, rollouts) = self.start_rollouts(&shared);
        let beater = beat::Beater::new(
            self,
            supervisor.info,
            subscribers,
            Rc::clone(&shared),
            events,
        );
        let task = tokio::task::spawn_local(beater.run(rx));
        (
            Node {
                commands,
                task,
                remote,
                rollout,
                rollouts,
            },
            view,
        )
    }

    /// Starts the task that takes part in cluster-wide reloads (and coordinates this node's).
    fn start_rollouts(
        &self,
        shared: &Rc<RefCell<Shared>>,
    ) -> (tokio::task::JoinHandle<()>, Rollouts) {
        let timing = rollout::Timing {
            heartbeat: self.settings.heartbeat,
            node_timeout: self.settings.node_timeout,
            lease: self.settings.reload_lease,
            step_timeout: self.settings.reload_step_timeout,
        };
        let agent = rollout::Agent::new(
            self.redis.clone(),
            &self.settings.cluster,
            &self.settings.name,
            timing,
            Rc::clone(shared),
        );
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let task = tokio::task::spawn_local(agent.run(requests_rx));
        (task, Rollouts { requests })
    }
}
