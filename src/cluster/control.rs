//! Ending one worker on request, as the seeds name it: clustr-node's `emitKill(pid, exitCode)`
//! and sicarii's `kill` (graceful, then restarted).
//!
//! The four ways a worker is ended from the master, side by side:
//!
//! | call | what the process gets | what follows |
//! |---|---|---|
//! | [`kill(id)`](Cluster::kill) | SIGKILL to its process group | restarted per the policy, not counted as a crash |
//! | [`terminate(id)`](Cluster::terminate) (sicarii's `kill`) | `Shutdown`: it runs `stopping`, exits 0 | as for an exit with status 0: `permanent` restarts it |
//! | [`end_worker(target, Ending::Graceful { status })`](Cluster::end_worker) | `Shutdown`, then exit with `status` | the policy decides by the status, not counted as a crash |
//! | [`stop_worker(id)`](Cluster::stop_worker) (Node's `worker.kill()` / `disconnect()`) | `Shutdown`: it runs `stopping`, exits | stays down, for good |
//!
//! And one that replaces it: [`restart_worker(id)`](Cluster::restart_worker) starts a new
//! process beside the old one, hands the slot over once it is ready and stops the old one
//! gracefully, as a rolling reload does for each worker (and as a worker's
//! [`WorkerHandle::restart_worker`](crate::WorkerHandle::restart_worker) asks). Not a crash:
//! it counts toward neither the restart intensity nor the backoff.

use super::Cluster;
use crate::error::{Error, ExitReason};
use crate::messaging::system::EndWorker;
use crate::messaging::{Ending, Peer, Target};
use crate::proxy::{GetNotifyStatus, NotifyStatus, Replace, Replaced};
use crate::state::WorkerId;
use crate::worker::WorkerActor;

impl<A: WorkerActor> Cluster<A> {
    /// Ends worker `target` of this group, by id or by the pid of its running process:
    /// gracefully with an exit status, or at once (see the table of the module docs). Resolves
    /// with how its process ended.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] for an id not of this group, [`Error::NoSuchPid`] for a pid that
    /// is not of one of its running processes, [`Error::Ask`] with
    /// [`AskError::NotRunning`](crate::AskError::NotRunning) when no process of it runs,
    /// [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn end_worker(&self, target: Target, ending: Ending) -> Result<ExitReason, Error> {
        let id = match target {
            Target::Id(id) => id,
            Target::Pid(pid) => self.worker_by_pid(pid).await?.0,
        };
        if self.position(id).is_none() {
            return Err(self.no_such_worker(id));
        }
        let end = EndWorker {
            from: Peer::Master,
            target: Target::Id(id),
            ending,
        };
        Ok(self.supervisor.send(end).await??)
    }

    /// Ends worker `id` gracefully with status 0 (sicarii's `kill`, a SIGTERM): it handles what
    /// it was sent, runs `stopping` and exits; the restart policy then restarts it (`permanent`,
    /// the default) without counting a crash.
    ///
    /// # Errors
    /// As [`end_worker`](Self::end_worker).
    pub async fn terminate(&self, id: WorkerId) -> Result<ExitReason, Error> {
        self.end_worker(Target::Id(id), Ending::Graceful { status: 0 })
            .await
    }

    /// Replaces worker `id`'s process with a new one, with no gap (see the module docs): the
    /// new process starts while the old one serves, takes the slot once it is ready (a plain
    /// program: as [`ClusterConfig::ready`](crate::ClusterConfig::ready) says), and the old one
    /// is stopped gracefully. Resolves once the old process has exited, with the
    /// hand-over's figures ([`Replaced::old_exit`] says how the old process ended). It is not a
    /// crash: it counts toward neither the restart intensity nor the backoff, and the slot's
    /// `restarts` stay as they were.
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] for an id not of this group; [`Error::Replace`] when the
    /// replacement exited or was not ready within the ready timeout
    /// ([`ReplaceError::Failed`](crate::ReplaceError::Failed): the old process still serves),
    /// when the slot has no ready process to replace (`NotServing`: stopped, or restarting
    /// after a crash) or one is being replaced already (`Busy`); [`Error::Mailbox`] when the
    /// slot's proxy has stopped.
    pub async fn restart_worker(&self, id: WorkerId) -> Result<Replaced, Error> {
        let worker = self.try_worker(id)?;
        let mut replaced = worker.send(Replace).await??;
        replaced.old_exit = replaced.old_exited().await;
        Ok(replaced)
    }

    /// What worker `id`'s serving process has sent on its notification socket: `READY=1`, its
    /// last `STATUS=…`, datagrams taken and dropped. `None` when it has none (a plain program
    /// gets one with [`Readiness::Notify`](crate::Readiness::Notify)).
    ///
    /// # Errors
    /// [`Error::NoSuchWorker`] for an id not of this group; [`Error::Mailbox`] when the slot's
    /// proxy has stopped.
    pub async fn notify_status(&self, id: WorkerId) -> Result<Option<NotifyStatus>, Error> {
        Ok(self.try_worker(id)?.send(GetNotifyStatus).await?)
    }
}
