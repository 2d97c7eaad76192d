//! System operations on the cluster, one typed actix message each: what a worker asks with
//! [`SystemOp`] and what the master's own [`Cluster`](crate::Cluster) handle asks, answered by
//! the supervisor with typed values. Nothing is encoded between actors of the master: a worker's
//! answer is encoded once, at its proxy, on its way into the pipe ([`SystemLink::serve`]).

use std::time::Duration;

use actix::prelude::*;
use actix::WeakRecipient;
use bytes::Bytes;

use crate::error::AskError;
use crate::messaging::confirm::{check_key, ConfirmationRounds};
use crate::messaging::table::encoded;
use crate::messaging::{ClusterInfo, Peer, SystemOp, WorkerStats};
use crate::state::WorkerId;

/// An answer on its way to a worker, encoded.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, AskError>>>>;

/// A worker ([`WorkerHandle::confirm`](crate::WorkerHandle::confirm)) or the master
/// ([`Cluster::confirm`](crate::Cluster::confirm)) confirms `key`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AskError>")]
pub(crate) struct Confirm {
    pub(crate) from: Peer,
    pub(crate) key: String,
}

/// A node of the cluster left: its workers' confirmations no longer count (see
/// `messaging::confirm`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ForgetNode {
    pub(crate) epoch: u64,
}

/// What the backend asks of the supervisor: this node's groups (at each heartbeat), and
/// confirmations from other nodes' workers to count here, and the nodes that left.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorAsks {
    pub(crate) info: WeakRecipient<GetClusterInfo>,
    pub(crate) confirm: WeakRecipient<Confirm>,
    pub(crate) forget: WeakRecipient<ForgetNode>,
}

impl SupervisorAsks {
    /// What `supervisor` answers, held weakly (the backend does not keep it alive).
    pub(crate) fn of<S>(supervisor: &Addr<S>) -> Self
    where
        S: Actor<Context = Context<S>>
            + Handler<GetClusterInfo>
            + Handler<Confirm>
            + Handler<ForgetNode>,
    {
        let weak = supervisor.downgrade();
        Self {
            info: weak.clone().recipient(),
            confirm: weak.clone().recipient(),
            forget: weak.recipient(),
        }
    }
}

/// Waits for `from`'s next round of `n` confirmations of `key` (see `messaging::confirm`);
/// answers the workers that confirmed in it, in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<WorkerId>, AskError>")]
pub(crate) struct AwaitConfirmations {
    /// Who waits: its rounds; a worker's wait ends with its process.
    pub(crate) from: Peer,
    pub(crate) key: String,
    pub(crate) n: usize,
    pub(crate) timeout: Duration,
}

/// Registers the master for every round of `n` confirmations of `key`
/// ([`Cluster::on_confirmation`](crate::Cluster::on_confirmation)).
#[derive(Debug, Message)]
#[rtype(result = "Result<ConfirmationRounds, AskError>")]
pub(crate) struct OnConfirmation {
    pub(crate) key: String,
    pub(crate) n: usize,
}

/// The cluster's [`ClusterInfo`].
#[derive(Debug, Message)]
#[rtype(result = "ClusterInfo")]
pub(crate) struct GetClusterInfo;

/// Every worker's [`WorkerStats`].
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerStats>")]
pub(crate) struct GetClusterStats;

/// What [`ControlWorker`] does to its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// SIGKILL; the restart policy decides what follows.
    Kill,
    /// A graceful replacement with a new process.
    Restart,
}

/// Kills or restarts a worker, if `from` may.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AskError>")]
pub(crate) struct ControlWorker {
    pub(crate) from: Peer,
    pub(crate) worker: WorkerId,
    pub(crate) action: Action,
}

/// Ends a worker; answered with its exit reason once its process is reaped.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::error::ExitReason, AskError>")]
pub(crate) struct EndWorker {
    /// Who asks: a worker may only where `worker_control` permits.
    pub(crate) from: Peer,
    pub(crate) target: crate::messaging::Target,
    pub(crate) ending: crate::messaging::Ending,
}

/// Stops the cluster gracefully, if `from` may; answered once the stop began.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AskError>")]
pub(crate) struct StopCluster {
    pub(crate) from: Peer,
}

/// A rolling reload of the cluster, if `from` may; answered when it ends.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AskError>")]
pub(crate) struct ReloadCluster {
    pub(crate) from: Peer,
}

/// The supervisor as the proxies reach it for their workers' system operations.
#[derive(Clone)]
pub(crate) struct SystemLink {
    confirm: Recipient<Confirm>,
    await_confirmations: Recipient<AwaitConfirmations>,
    info: Recipient<GetClusterInfo>,
    stats: Recipient<GetClusterStats>,
    control: Recipient<ControlWorker>,
    reload: Recipient<ReloadCluster>,
    end: Recipient<EndWorker>,
    stop: Recipient<StopCluster>,
}

impl std::fmt::Debug for SystemLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemLink").finish_non_exhaustive()
    }
}

/// The actor that answers every system operation.
pub(crate) trait SystemActor:
    Actor<Context = Context<Self>>
    + Handler<Confirm>
    + Handler<AwaitConfirmations>
    + Handler<GetClusterInfo>
    + Handler<GetClusterStats>
    + Handler<ControlWorker>
    + Handler<ReloadCluster>
    + Handler<EndWorker>
    + Handler<StopCluster>
{
}

impl<S> SystemActor for S where
    S: Actor<Context = Context<S>>
        + Handler<Confirm>
        + Handler<AwaitConfirmations>
        + Handler<GetClusterInfo>
        + Handler<GetClusterStats>
        + Handler<ControlWorker>
        + Handler<ReloadCluster>
        + Handler<EndWorker>
        + Handler<StopCluster>
{
}

impl SystemLink {
    /// The link to `actor`.
    pub(crate) fn of<S: SystemActor>(actor: &Addr<S>) -> Self {
        Self {
            confirm: actor.clone().recipient(),
            await_confirmations: actor.clone().recipient(),
            info: actor.clone().recipient(),
            stats: actor.clone().recipient(),
            control: actor.clone().recipient(),
            reload: actor.clone().recipient(),
            end: actor.clone().recipient(),
            stop: actor.clone().recipient(),
        }
    }

    /// Serves `op` from a worker: the typed answer, encoded for the worker's pipe. `Join`,
    /// `Leave` and `Cache` are the proxy's own and are not served here.
    pub(crate) fn serve(&self, from: Peer, op: SystemOp<'_>) -> Answer {
        let gone = |e: MailboxError| AskError::Failed(format!("the supervisor is gone: {e}"));
        if let SystemOp::Confirm(key) | SystemOp::AwaitConfirmations { key, .. } = &op {
            if let Err(refused) = check_key(key) {
                return Box::pin(std::future::ready(Err(refused)));
            }
        }
        match op {
            SystemOp::Confirm(key) => {
                let sent = self.confirm.send(Confirm {
                    from,
                    key: key.to_owned(),
                });
                Box::pin(async move { sent.await.map_err(gone)?.and_then(|()| encoded(&())) })
            }
            SystemOp::AwaitConfirmations { key, n, timeout_ms } => {
                let sent = self.await_confirmations.send(AwaitConfirmations {
                    from,
                    key: key.to_owned(),
                    n: n as usize,
                    timeout: Duration::from_millis(timeout_ms),
                });
                Box::pin(async move { encoded(&sent.await.map_err(gone)??) })
            }
            SystemOp::Info => {
                let sent = self.info.send(GetClusterInfo);
                Box::pin(async move { encoded(&sent.await.map_err(gone)?) })
            }
            SystemOp::Stats => {
                let sent = self.stats.send(GetClusterStats);
                Box::pin(async move { encoded(&sent.await.map_err(gone)?) })
            }
            SystemOp::Kill(worker) | SystemOp::Restart(worker) => {
                let action = match op {
                    SystemOp::Kill(_) => Action::Kill,
                    _ => Action::Restart,
                };
                let sent = self.control.send(ControlWorker {
                    from,
                    worker: worker as WorkerId,
                    action,
                });
                Box::pin(async move { sent.await.map_err(gone)?.and_then(|()| encoded(&())) })
            }
            SystemOp::End { target, ending } => {
                let sent = self.end.send(EndWorker {
                    from,
                    target,
                    ending,
                });
                Box::pin(async move { sent.await.map_err(gone)?.and_then(|r| encoded(&r)) })
            }
            SystemOp::StopCluster => {
                let sent = self.stop.send(StopCluster { from });
                Box::pin(async move { sent.await.map_err(gone)?.and_then(|()| encoded(&())) })
            }
            SystemOp::Reload => {
                let sent = self.reload.send(ReloadCluster { from });
                Box::pin(async move { sent.await.map_err(gone)?.and_then(|()| encoded(&())) })
            }
            SystemOp::Join(_)
            | SystemOp::Leave(_)
            | SystemOp::Cache(_)
            | SystemOp::RequestReload => {
                Box::pin(async { Err(AskError::Invalid("served by the worker's proxy".into())) })
            }
        }
    }
}
