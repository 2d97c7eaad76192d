//! Ending one worker on request (clustr-node's `emitKill`, sicarii's `kill`), by id or pid,
//! gracefully with an exit status or at once, and stopping the cluster from a worker.
//!
//! An ending asked for is not a crash: a kill ends its process with `Killed`, and a graceful
//! end marks its slot until the exit comes, so that the restart policy restarts it (or not, by
//! its status and restart type) without counting it toward the intensity.

use actix::prelude::*;

use super::control::StopAll;
use super::ClusterSupervisor;
use crate::error::{AskError, ExitReason};
use crate::messaging::system::{EndWorker, StopCluster};
use crate::messaging::{Ending, Peer, Target};
use crate::proxy::{Kill, Terminate};
use crate::state::WorkerId;

/// A graceful end found no process to end: its slot's mark goes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct NothingEnded(WorkerId);

impl ClusterSupervisor {
    /// Whether `from` may end workers or stop the cluster.
    fn may_control(&self, from: Peer, what: &str) -> Result<(), AskError> {
        match from {
            Peer::Worker { .. } if !self.worker_control => Err(AskError::NotPermitted(format!(
                "{what} from a worker is off in this cluster's config (ClusterConfig::worker_control)"
            ))),
            Peer::Remote { .. } => Err(AskError::NotPermitted(format!(
                "{what} from a worker of another node"
            ))),
            _ => Ok(()),
        }
    }

    /// The slot `target` names, if it names one of a running process (by pid) or any slot (by id).
    fn slot_of(&self, target: Target) -> Result<WorkerId, AskError> {
        match target {
            Target::Id(id) if id < self.slots.len() => Ok(id),
            Target::Id(id) => Err(AskError::NoSuchWorker(id)),
            Target::Pid(pid) => self
                .pids
                .get(&pid)
                .copied()
                .ok_or_else(|| AskError::Invalid(format!("no worker process has pid {pid}"))),
        }
    }
}

impl Handler<EndWorker> for ClusterSupervisor {
    type Result = ResponseFuture<Result<ExitReason, AskError>>;

    fn handle(&mut self, end: EndWorker, ctx: &mut Context<Self>) -> Self::Result {
        let EndWorker {
            from,
            target,
            ending,
        } = end;
        if let Err(e) = self.may_control(from, "ending a worker") {
            return Box::pin(async move { Err(e) });
        }
        if matches!(from, Peer::Worker { .. }) && target == Target::Pid(std::process::id()) {
            // A worker ending the master's pid stops the cluster, gracefully.
            ctx.notify(StopAll);
            return Box::pin(async { Ok(ExitReason::Exited(0)) });
        }
        if let Ending::Graceful { status } = ending {
            if !(0..=255).contains(&status) {
                let e = AskError::Invalid(format!("an exit status is 0 to 255, not {status}"));
                return Box::pin(async move { Err(e) });
            }
        }
        let id = match self.slot_of(target) {
            Ok(id) => id,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        // A worker ending itself from its handler would wait for its own exit, which waits
        // behind that handler: it hears at once, and the ending follows.
        let itself = matches!(from, Peer::Worker { id: asker, .. } if asker == id);
        tracing::info!(worker = id, ?from, ?ending, "ending a worker on request");
        let gone = |e: MailboxError| AskError::Failed(format!("the worker's proxy is gone: {e}"));
        let slot = &mut self.slots[id];
        match ending {
            Ending::Now if itself => {
                slot.kill.do_send(Kill);
                Box::pin(async { Ok(ExitReason::Killed) })
            }
            Ending::Now => {
                let kill = slot.kill.send(Kill);
                Box::pin(async move { kill.await.map_err(gone) })
            }
            Ending::Graceful { status } if itself => {
                slot.terminating = true;
                slot.terminate.do_send(Terminate(status));
                Box::pin(async move { Ok(ExitReason::Exited(status)) })
            }
            Ending::Graceful { status } => {
                slot.terminating = true;
                let ended = slot.terminate.send(Terminate(status));
                let me = ctx.address();
                Box::pin(async move {
                    match ended.await.map_err(gone)? {
                        Some(reason) => Ok(reason),
                        None => {
                            me.do_send(NothingEnded(id));
                            Err(AskError::NotRunning(id))
                        }
                    }
                })
            }
        }
    }
}

impl Handler<NothingEnded> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, NothingEnded(id): NothingEnded, _: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.terminating = false;
        }
    }
}

impl Handler<StopCluster> for ClusterSupervisor {
    type Result = Result<(), AskError>;

    fn handle(
        &mut self,
        StopCluster { from }: StopCluster,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.may_control(from, "stopping the cluster")?;
        tracing::info!(?from, "stopping the cluster on request");
        ctx.notify(StopAll);
        Ok(())
    }
}
