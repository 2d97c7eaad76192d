//! System operations that workers (and the master's own [`Cluster`](crate::Cluster) handle) ask
//! of the supervisor, one typed message each (see `messaging::system`): confirmations (and the
//! master's registrations for their rounds), cluster info and stats, and the controls a
//! cluster's config may allow workers (kill, restart, reload).

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{answered, ClusterSupervisor};
use crate::error::AskError;
use crate::messaging::confirm::ConfirmationRounds;
use crate::messaging::system::{
    Action, AwaitConfirmations, Confirm, ControlWorker, ForgetNode, GetClusterInfo,
    GetClusterStats, OnConfirmation, ReloadCluster,
};
use crate::messaging::table::Outbound;
use crate::messaging::{ClusterInfo, Peer, WorkerStats};
use crate::proxy::{GetInfo, GetStats, Kill, Replace};
use crate::state::WorkerId;

impl Handler<Confirm> for ClusterSupervisor {
    type Result = Result<(), AskError>;

    fn handle(&mut self, Confirm { from, key }: Confirm, _ctx: &mut Context<Self>) -> Self::Result {
        self.confirmations.confirm(&key, from)?;
        // Counted on the other nodes too; one from another node is not sent on again.
        let from = match from {
            Peer::Master => None,
            Peer::Worker { id, pid } => Some((id, pid)),
            _ => return Ok(()),
        };
        if let Some(link) = &self.routing.borrow().remote {
            link.send(Outbound::Confirm { key, from });
        }
        Ok(())
    }
}

impl Handler<ForgetNode> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, ForgetNode { epoch }: ForgetNode, _ctx: &mut Context<Self>) {
        self.confirmations.forget_node(epoch);
    }
}

impl Handler<OnConfirmation> for ClusterSupervisor {
    type Result = Result<ConfirmationRounds, AskError>;

    fn handle(&mut self, on: OnConfirmation, _ctx: &mut Context<Self>) -> Self::Result {
        self.confirmations.register(on.key, on.n)
    }
}

impl Handler<AwaitConfirmations> for ClusterSupervisor {
    type Result = ResponseFuture<Result<Vec<WorkerId>, AskError>>;

    fn handle(&mut self, wait: AwaitConfirmations, ctx: &mut Context<Self>) -> Self::Result {
        let AwaitConfirmations {
            from,
            key,
            n,
            timeout,
        } = wait;
        let (tx, rx) = oneshot::channel();
        if let Some(token) = self.confirmations.wait(key, n, tx, from) {
            ctx.run_later(timeout, move |act, _| {
                act.confirmations.expire(token, timeout)
            });
        }
        Box::pin(async move {
            let round = rx
                .await
                .unwrap_or_else(|_| Err(AskError::Failed("the cluster stopped".into())))?;
            // Typed as worker ids: the master, when it confirmed in the round, is not listed.
            Ok(round
                .into_iter()
                .filter_map(|peer| match peer {
                    Peer::Worker { id, .. } => Some(id),
                    Peer::Master | Peer::Remote { .. } => None,
                })
                .collect())
        })
    }
}

impl Handler<GetClusterInfo> for ClusterSupervisor {
    type Result = ResponseFuture<ClusterInfo>;

    fn handle(&mut self, _: GetClusterInfo, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self.slots.iter().map(|s| s.info.send(GetInfo)).collect();
        let routing = self.routing.borrow();
        let groups = routing.groups();
        let nodes = routing
            .remote
            .as_ref()
            .map(|link| (link.node.clone(), link.directory.nodes()));
        drop(routing);
        Box::pin(async move {
            let mut info = ClusterInfo {
                master_pid: std::process::id(),
                workers: answered(asks).await,
                groups,
                nodes: Vec::new(),
            };
            if let Some((me, mut nodes)) = nodes {
                // This node's groups as of now, not as of its last beat.
                if let Some(own) = nodes.first_mut().filter(|n| n.id.name == me) {
                    own.groups = info.node_groups();
                }
                info.nodes = nodes;
            }
            info
        })
    }
}

impl Handler<GetClusterStats> for ClusterSupervisor {
    type Result = ResponseFuture<Vec<WorkerStats>>;

    fn handle(&mut self, _: GetClusterStats, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self.slots.iter().map(|s| s.stats.send(GetStats)).collect();
        Box::pin(answered(asks))
    }
}

impl Handler<ControlWorker> for ClusterSupervisor {
    type Result = ResponseFuture<Result<(), AskError>>;

    fn handle(&mut self, control: ControlWorker, _ctx: &mut Context<Self>) -> Self::Result {
        let ControlWorker {
            from,
            worker,
            action,
        } = control;
        let what = match action {
            Action::Kill => "killing a worker",
            Action::Restart => "restarting a worker",
        };
        if let Err(e) = permitted(from, self.worker_control, what) {
            return Box::pin(async move { Err(e) });
        }
        let Some(slot) = self.slots.get(worker) else {
            return Box::pin(async move { Err(AskError::NoSuchWorker(worker)) });
        };
        tracing::info!(worker, ?from, "{what} on request");
        match action {
            Action::Kill => {
                let done = slot.kill.send(Kill);
                Box::pin(async move {
                    let _ = done.await;
                    Ok(())
                })
            }
            Action::Restart => {
                let done = slot.replace.send(Replace);
                Box::pin(async move {
                    match done.await {
                        // Answered once the old process is gone, not at the hand-over.
                        Ok(Ok(replaced)) => {
                            replaced.old_exited().await;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
                        Err(e) => Err(AskError::Failed(e.to_string())),
                    }
                })
            }
        }
    }
}

impl Handler<ReloadCluster> for ClusterSupervisor {
    type Result = ResponseFuture<Result<(), AskError>>;

    fn handle(
        &mut self,
        ReloadCluster { from }: ReloadCluster,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if let Err(e) = permitted(from, self.reload.from_workers, "a reload") {
            return Box::pin(async move { Err(e) });
        }
        let (tx, rx) = oneshot::channel();
        self.request_reload(Some(tx), ctx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
                Err(_) => Err(AskError::Failed("the cluster stopped".into())),
            }
        })
    }
}

/// Whether `from` may do `what`: the master always, workers when the config allows.
fn permitted(from: Peer, allowed: bool, what: &str) -> Result<(), AskError> {
    match (from, allowed) {
        (Peer::Master, _) | (Peer::Worker { .. }, true) => Ok(()),
        (Peer::Worker { .. }, false) => Err(AskError::NotPermitted(format!(
            "{what} from a worker is off in this cluster's config"
        ))),
        (Peer::Remote { .. }, _) => Err(AskError::NotPermitted(format!(
            "{what} from a worker of another node"
        ))),
    }
}
