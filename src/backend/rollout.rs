//! A rolling reload across hosts: one node coordinates, every node reloads its own workers with
//! the local rolling reload, one node at a time.
//!
//! # Who coordinates
//! The node asked to reload (SIGHUP, [`Cluster::reload`](crate::Cluster::reload), a worker's
//! `reload_cluster`) tries to take the cluster's reload lock in one Lua step: `INCR` the
//! fence counter (`procactor:{<c>}:reload:fence`, seeded from the server's clock like the
//! epoch counter) and `SET procactor:{<c>}:reload:lock "<token>:<node>" PX lease NX`. The
//! token is the rollout's id. The lock is renewed every third of its lease (compare, then
//! `PEXPIRE`) while the rollout runs and deleted (compare, then `DEL`) when it ends.
//!
//! A request that finds the lock held **waits**: for the running rollout to end, then tries
//! the lock once more; if another node took it first (a rollout that began after this
//! request), it waits for that one and answers with its outcome. So a burst of requests on
//! any number of nodes gives the running rollout and at most one more, like the local
//! coalescing — and the one more reloads with the program as it is on disk then.
//!
//! # The rollout
//! The nodes of the view at its start: the coordinator's own node **first** (the node the
//! operator acted on is the canary: a bad release fails there, before any other host is
//! touched, with the failure in the logs of the host the operator is on), then the others by
//! name. For each node: the coordinator publishes `Reload{rollout, node, epoch}` on the
//! cluster's reload channel (`procactor:{<c>}:reload`); the node checks the command (below),
//! answers `Accepted`, runs its local rolling reload and answers `Done` or `Failed` with its
//! summary. The coordinator waits for `Accepted` within `node_timeout` plus a heartbeat and
//! for the answer within `reload_step_timeout`; a node that leaves the view meanwhile is
//! skipped (reported). **The first node that fails stops the rollout**: the nodes after it are
//! not touched and keep serving the old version (the failing node's local reload already
//! rolled itself back). The coordinator's own step goes to its supervisor directly.
//!
//! Pub/sub, not a stream: every step is driven by a live coordinator that waits for each
//! answer with a deadline, so a message lost (a node resubscribing) is a failed step,
//! reported, never a silent one; a stream would only pay off for a coordinator that resumes
//! another's rollout, which this design does not do — a new request starts a new rollout
//! from the first node (reloading a node twice is safe: it is what a reload is).
//!
//! # Fencing
//! Every command carries its token. A node refuses a command whose token is below the highest
//! it has seen (from commands and from rollouts' `Started` events), and one whose token is not
//! the lock's current holder (one `GET`): a coordinator that was paused past its lease cannot
//! start a reload behind a newer one. The coordinator's progress record
//! (`procactor:{<c>}:reload:state`, a hash: `token`, `coordinator`, `status`, `node`) and
//! the final report (`procactor:{<c>}:reload:report:<token>`, JSON, kept 10 min, read by the
//! requests that joined the rollout) are written only by a script that checks the token is
//! the current fence; a coordinator that finds it is not stops (`superseded`).
//!
//! # Events
//! The coordinator publishes its progress ([`RolloutEvent`]) on the same channel; every node
//! hands what it receives to its supervisor, which re-emits it to its `on_reload` subscribers
//! as [`ReloadEvent::Cluster`](crate::ReloadEvent::Cluster). A node's own local reload emits
//! its local events as before.
//!
//! # Failure semantics
//! - Redis unreachable (or this node not joined): the request fails at once (bounded by a
//!   heartbeat) with [`ReloadError::ClusterUnavailable`](crate::ReloadError). SIGHUP then
//!   reloads this node only, with a warning in the log.
//! - The coordinator killed mid-rollout: its lease expires; the nodes it reloaded keep the new
//!   version; each node that saw the rollout start reports it failed (`abandoned`) once it
//!   sees the lock gone twice in a row (checked every heartbeat); requests that joined it fail
//!   with [`ReloadError::Rollout`](crate::ReloadError). The next request starts a new rollout
//!   with a higher token.
//! - A coordinator that cannot renew its lock (Redis lost for a lease) stops the rollout.
//! - Bad input on the channel (not JSON of ours, over 64 KiB): dropped with a warning,
//!   counted in [`NodeStats::bad_entries`](super::NodeStats::bad_entries); nothing panics.
//!
//! # Limits
//! Nodes that join during a rollout are not in it (they started with the program on disk
//! anyway). Commands are at most once: a lost one fails its step. All nodes should run the
//! same version of this protocol (a node that cannot decode a command fails that step).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::{Message, WeakRecipient};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

mod agent;
mod coordinator;
mod script;
mod wire;

pub(crate) use agent::Agent;

/// Progress of a cluster-wide reload, as every node sees it: re-emitted by each node to its
/// `on_reload` subscribers as [`ReloadEvent::Cluster`](crate::ReloadEvent::Cluster).
/// `rollout` is the rollout's fencing token, which grows with every rollout of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RolloutEvent {
    /// A rollout began: it will reload `nodes`, in this order.
    Started {
        /// The rollout's token.
        rollout: u64,
        /// The node that coordinates it.
        coordinator: String,
        /// The nodes it reloads, in order.
        nodes: Vec<String>,
    },
    /// A node's local reload began.
    NodeStarted {
        /// The rollout's token.
        rollout: u64,
        /// The node.
        node: String,
    },
    /// A node's local reload ended well.
    NodeDone {
        /// The rollout's token.
        rollout: u64,
        /// The node.
        node: String,
        /// Workers it replaced.
        replaced: usize,
    },
    /// A node's local reload failed (it rolled back); the rollout stops here.
    NodeFailed {
        /// The rollout's token.
        rollout: u64,
        /// The node.
        node: String,
        /// Why.
        error: String,
    },
    /// A node was skipped: it left the cluster before or during its step.
    NodeSkipped {
        /// The rollout's token.
        rollout: u64,
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Every node was reloaded (or skipped).
    Done {
        /// The rollout's token.
        rollout: u64,
        /// Nodes reloaded.
        reloaded: usize,
    },
    /// The rollout stopped: a node failed, the coordinator lost its lock, or (as seen by the
    /// other nodes) the coordinator vanished: `abandoned`.
    Failed {
        /// The rollout's token.
        rollout: u64,
        /// Why.
        error: String,
    },
}

/// What happened to one node in a cluster-wide reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeOutcome {
    /// Its local reload ended well.
    Reloaded {
        /// Workers replaced.
        replaced: usize,
        /// Slots that had no serving process to replace.
        skipped: usize,
        /// How long its reload took.
        elapsed: Duration,
    },
    /// Its local reload failed (and rolled back), or it refused or did not answer.
    Failed {
        /// Why.
        error: String,
    },
    /// It left the cluster before or during its step.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The rollout stopped before its turn: it still runs the old version.
    NotReached,
}

/// What a cluster-wide reload did, node by node: part of the
/// [`ReloadReport`](crate::ReloadReport) of a cluster with a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutReport {
    /// The rollout's token.
    pub rollout: u64,
    /// The node that coordinated it.
    pub coordinator: String,
    /// Each node of the rollout, in its order, with what happened to it.
    pub nodes: Vec<(String, NodeOutcome)>,
    /// How long it took.
    pub elapsed: Duration,
    /// Why it stopped before its end; `None` when every node was reloaded or skipped.
    pub stopped: Option<String>,
}

impl RolloutReport {
    /// The nodes reloaded.
    pub fn reloaded(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|(_, o)| matches!(o, NodeOutcome::Reloaded { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Why a cluster-wide reload did not finish (mapped to the crate's `ReloadError` by the
/// supervisor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RolloutError {
    /// Redis unreachable, or this node not joined: nothing was done.
    Unavailable(String),
    /// The rollout stopped (a node failed, the lock was lost, the coordinator vanished).
    Stopped(Box<RolloutReport>),
}

/// Asks this node's supervisor for a local rolling reload, as step `rollout` of a
/// cluster-wide reload; answered when it ends.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeReloaded, String>")]
pub(crate) struct ReloadNode {
    pub(crate) rollout: u64,
}

/// A local reload's summary, as a step of a cluster-wide one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeReloaded {
    pub(crate) replaced: usize,
    pub(crate) skipped: usize,
    pub(crate) elapsed: Duration,
}

/// The supervisor, as the rollout reaches it: for local reloads and to re-emit events.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    pub(crate) reload: WeakRecipient<ReloadNode>,
    pub(crate) events: WeakRecipient<RolloutEvent>,
}

impl Links {
    fn emit(&self, event: RolloutEvent) {
        if let Some(events) = self.events.upgrade() {
            events.do_send(event);
        }
    }
}

/// Asked of the rollout task.
#[derive(Debug)]
pub(crate) enum Request {
    /// The supervisor, once it runs.
    Attach(Links),
    /// A cluster-wide reload, answered when it (or the one it joined) ends.
    Reload(oneshot::Sender<Result<RolloutReport, RolloutError>>),
}

/// The handle the supervisor keeps: where its requests go.
#[derive(Debug, Clone)]
pub(crate) struct Rollouts {
    pub(crate) requests: mpsc::UnboundedSender<Request>,
}

impl Rollouts {
    /// Gives the task the supervisor's addresses.
    pub(crate) fn attach(&self, links: Links) {
        let _ = self.requests.send(Request::Attach(links));
    }

    /// A cluster-wide reload; see the module docs.
    pub(crate) fn reload(
        &self,
    ) -> impl std::future::Future<Output = Result<RolloutReport, RolloutError>> + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.requests.send(Request::Reload(tx)).is_ok();
        async move {
            if !sent {
                return Err(RolloutError::Unavailable("the node has stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(RolloutError::Unavailable("the node has stopped".into())))
        }
    }
}

/// Timings of the rollout, from the backend's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) heartbeat: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) step_timeout: Duration,
}

/// The rollout this node coordinates, and where the answers to its commands go.
pub(crate) type Coordinating = Rc<RefCell<Option<(u64, mpsc::UnboundedSender<wire::Reply>)>>>;

/// The event that ends a rollout with `report`.
fn end_event(report: &RolloutReport) -> RolloutEvent {
    match &report.stopped {
        None => RolloutEvent::Done {
            rollout: report.rollout,
            reloaded: report.reloaded().len(),
        },
        Some(error) => RolloutEvent::Failed {
            rollout: report.rollout,
            error: error.clone(),
        },
    }
}

/// This node's local rolling reload, as step `rollout`.
async fn local_reload(links: Option<&Links>, rollout: u64) -> NodeOutcome {
    let Some(reload) = links.and_then(|l| l.reload.upgrade()) else {
        return NodeOutcome::Failed {
            error: "the node's supervisor has stopped".into(),
        };
    };
    match reload.send(ReloadNode { rollout }).await {
        Ok(Ok(done)) => NodeOutcome::Reloaded {
            replaced: done.replaced,
            skipped: done.skipped,
            elapsed: done.elapsed,
        },
        Ok(Err(error)) => NodeOutcome::Failed { error },
        Err(e) => NodeOutcome::Failed {
            error: e.to_string(),
        },
    }
}
