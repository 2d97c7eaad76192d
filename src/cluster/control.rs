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

use super::Cluster;
use crate::error::{Error, ExitReason};
use crate::messaging::system::EndWorker;
use crate::messaging::{Ending, Peer, Target};
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
}
