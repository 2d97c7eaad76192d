//! The seam between the master's routing and the cluster's backend: a message for a worker on
//! another node leaves the routing here, as an [`Outbound`], for the backend's task to send
//! (see `backend/remote.rs`). Without a backend there is no link, and such a message fails at
//! once with [`AskError::NoSuchNode`]. A target on this node never comes here: the router
//! keeps it on the local path (no Redis hop).

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::AskError;
use crate::messaging::table::ReplyTo;
use crate::state::WorkerId;

/// A message for worker `worker` of node `node`, from this node's worker `from` (its id and
/// pid) or from the master (`None`).
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A request; `reply` hears the answer, or a typed error by `timeout` at the latest.
    Ask {
        node: String,
        worker: WorkerId,
        from: Option<(WorkerId, u32)>,
        payload: Bytes,
        timeout: Duration,
        reply: ReplyTo,
    },
    /// A one-way message (at most once).
    Tell {
        node: String,
        worker: WorkerId,
        from: Option<(WorkerId, u32)>,
        payload: Bytes,
    },
}

/// Where the routing hands messages for other nodes: the backend's task.
#[derive(Debug, Clone)]
pub(crate) struct RemoteLink {
    /// This node's name: a message for it stays local.
    pub(crate) node: String,
    pub(crate) tx: mpsc::UnboundedSender<Outbound>,
}

impl RemoteLink {
    /// Hands `out` to the backend; a request whose task is gone is answered here.
    pub(crate) fn send(&self, out: Outbound) {
        if let Err(mpsc::error::SendError(Outbound::Ask { reply, .. })) = self.tx.send(out) {
            reply.answer(Err(AskError::BackendUnavailable(
                "the cluster's backend has stopped".into(),
            )));
        }
    }
}
