//! A cluster that spans hosts, seen from one of its masters: this node, the live nodes, the
//! heartbeat's figures (see [`backend`](crate::backend)). Read from the node's local view,
//! without a round trip: what the last beat read.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::Cluster;
use crate::backend::{NodeId, NodeInfo, NodeStats};
use crate::error::AskError;
use crate::messaging::table::{Outbound, ReplyTo, Routed};
use crate::messaging::Peer;
use crate::state::WorkerId;
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

    /// Asks worker `id` of node `node` (a node's name, as in [`nodes`](Self::nodes)) and
    /// awaits its typed answer, for at most `timeout`. This node's own workers are asked on
    /// the local path; another node's through Redis, at most once (see
    /// [`backend`](crate::backend)). The worker sees the master of this node as its sender
    /// ([`Peer::Remote`] with no id, from another node).
    ///
    /// # Errors
    /// [`AskError::NoSuchNode`] (no backend, or no live node of that name),
    /// [`AskError::NoSuchWorker`], [`AskError::NodeGone`] (the node left, or restarted with a
    /// new epoch), [`AskError::BackendUnavailable`] (Redis cannot be reached now),
    /// [`AskError::Timeout`], [`AskError::Invalid`] (cannot be encoded, or larger than a frame
    /// between nodes), [`AskError::BadReply`]; each as soon as it is known.
    pub async fn ask_worker_on(
        &self,
        node: &str,
        id: WorkerId,
        msg: &A::Msg,
        timeout: Duration,
    ) -> Result<A::Reply, AskError> {
        let payload = encoded(msg)?;
        let (tx, rx) = oneshot::channel();
        let reply = ReplyTo::Local(tx);
        let link = self.links.routing.borrow().elsewhere(node)?;
        match link {
            None => {
                let target = self.links.routing.borrow().slots.get(id).cloned();
                let target = target.ok_or(AskError::NoSuchWorker(id))?;
                target.do_send(Routed::Ask {
                    from: Peer::Master,
                    payload,
                    reply,
                });
            }
            Some(link) => link.send(Outbound::Ask {
                node: node.to_owned(),
                worker: id,
                from: None,
                payload,
                timeout,
                reply,
            }),
        }
        let bytes = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(_)) => return Err(AskError::Failed("the cluster stopped".into())),
            Err(_) => return Err(AskError::Timeout(timeout)),
        };
        crate::codec::decode_value(&bytes).map_err(|e| AskError::BadReply(e.to_string()))
    }

    /// Sends a one-way message to worker `id` of node `node`: on the local path to this
    /// node's own workers, through Redis to another node's, **at most once** (a node that is
    /// down or cut off from Redis when it is published never gets it; use
    /// [`ask_worker_on`](Self::ask_worker_on) when it must be known).
    ///
    /// # Errors
    /// [`AskError::NoSuchNode`] without a backend, [`AskError::NoSuchWorker`] for a slot this
    /// node does not have, [`AskError::Invalid`] when it cannot be encoded. An unknown or
    /// unreachable other node is not reported: the message is dropped (and logged).
    pub fn tell_worker_on(&self, node: &str, id: WorkerId, msg: &A::Msg) -> Result<(), AskError> {
        let payload = encoded(msg)?;
        let link = self.links.routing.borrow().elsewhere(node)?;
        match link {
            None => {
                let target = self.links.routing.borrow().slots.get(id).cloned();
                target
                    .ok_or(AskError::NoSuchWorker(id))?
                    .do_send(Routed::Tell {
                        from: Peer::Master,
                        via: crate::messaging::Via::Direct,
                        payload,
                        ack: None,
                        windowed: false,
                    });
            }
            Some(link) => link.send(Outbound::Tell {
                node: node.to_owned(),
                worker: id,
                from: None,
                payload,
            }),
        }
        Ok(())
    }

    /// A broadcast (`group: None`) or group publish of the master's, for the other nodes'
    /// workers (nothing without a backend).
    pub(super) fn fan_out(&self, group: Option<&str>, msg: &A::Msg) -> Result<(), AskError> {
        let Some(link) = self.links.routing.borrow().remote.clone() else {
            return Ok(());
        };
        link.send(Outbound::Fanout {
            group: group.map(str::to_owned),
            from: None,
            payload: encoded(msg)?,
        });
        Ok(())
    }
}

fn encoded<M: serde::Serialize>(msg: &M) -> Result<Bytes, AskError> {
    let mut payload = Vec::new();
    crate::codec::encode_value(&mut payload, msg).map_err(|e| AskError::Invalid(e.to_string()))?;
    Ok(payload.into())
}
