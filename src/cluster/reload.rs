//! Rolling reloads: of the program as it is on disk ([`reload`](Cluster::reload), cluster-wide
//! with a backend; [`reload_local`](Cluster::reload_local)), and onto a new program
//! ([`reload_with`](Cluster::reload_with): the operator's `apply` of a changed command,
//! arguments, environment or working directory, with no request failed and nothing half done).
//!
//! For `reload_with`, the group's processes are started from one shared description (`proxy::spec`); this swaps
//! its program part, then runs this node's rolling reload, so each worker's replacement runs the
//! new program, as does every process started after (restarts, `scale`). When a replacement
//! fails, the old program is put back and a second rolling reload brings the workers already
//! replaced back to it (none when the first replacement failed: then nothing is touched): the
//! cluster serves the old version as before, and the error says [`ReloadError::RolledBack`]. Limit: what is restored is the program's description, not
//! files changed on disk — a reload "back" runs what is on disk now.

use tokio::sync::oneshot;

use super::Cluster;
use crate::config::Program;
use crate::error::{Error, ReloadError};
use crate::proxy::Launch;
use crate::supervisor::{Control, ReloadReport};
use crate::worker::WorkerActor;

impl<A: WorkerActor> Cluster<A> {
    /// Replaces every worker, one at a time, with a new process of the program as it is on disk
    /// now, with no gap in service (a rolling restart; see [`ReloadEvent`](crate::ReloadEvent) for its progress).
    ///
    /// Each new process is started beside the one it replaces; once it is ready it takes over,
    /// and the old one is stopped gracefully, finishing its work first. The next worker follows
    /// after `reload_delay`. A reload asked for while one runs (by this method, SIGHUP or a
    /// worker) is queued and runs after it.
    ///
    /// **With a backend** (a cluster over several hosts) this reloads the whole cluster, one
    /// node at a time, each node with the rolling reload above, and returns when the whole
    /// rollout ends: the report's [`cluster`](ReloadReport::cluster) says what happened on
    /// each node, its other fields are this node's step. A request made while a rollout runs
    /// waits for it and then for at most one more (see `backend/rollout.rs`).
    /// [`reload_local`](Self::reload_local) reloads this node only.
    ///
    /// # Errors
    /// [`Error::Reload`] when a replacement failed (it crashed, or was not ready within the
    /// ready timeout): the reload stopped there, and that worker and those after it still run
    /// their old process; or when the cluster began to stop. With a backend:
    /// [`ReloadError::ClusterUnavailable`] at once when Redis cannot be reached (nothing was
    /// reloaded), [`ReloadError::Rollout`] when the rollout stopped (a node failed: the nodes
    /// after it keep the old version). [`Error::Mailbox`] when the supervisor has stopped.
    pub async fn reload(&self) -> Result<ReloadReport, Error> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.send(Control::Reload(Some(tx))).await?;
        match rx.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Reload(ReloadError::Stopping { replaced: 0 })),
        }
    }

    /// The rolling reload of [`reload`](Self::reload), of this node's workers only, with or
    /// without a backend (the same as `reload` without one).
    ///
    /// # Errors
    /// As [`reload`](Self::reload) without a backend.
    pub async fn reload_local(&self) -> Result<ReloadReport, Error> {
        let (tx, rx) = oneshot::channel();
        self.supervisor.send(Control::ReloadLocal(tx)).await?;
        match rx.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Reload(ReloadError::Stopping { replaced: 0 })),
        }
    }

    /// Replaces every worker of this node, one at a time as [`reload_local`](Self::reload_local)
    /// does, with a process of `program`; processes started later (restarts, `scale`) run it
    /// too. On failure, rolls back (see the module docs).
    ///
    /// # Errors
    /// [`Error::Config`] when `program` cannot run (nothing was touched);
    /// [`ReloadError::RolledBack`] (in [`Error::Reload`]) when a replacement failed and every
    /// worker runs the old program again; [`ReloadError::RollbackFailed`] when the rollback
    /// failed too; [`Error::Mailbox`] when the supervisor has stopped (the old program is
    /// restored for later processes).
    pub async fn reload_with(&self, program: Program) -> Result<ReloadReport, Error> {
        let config = program.applied_to(&self.spec.config)?;
        let old = self.spec.set_launch(Launch::of(&config)?);
        let cause = match self.reload_local().await {
            Ok(report) => return Ok(report),
            Err(Error::Reload(cause)) => cause,
            Err(other) => {
                self.spec.set_launch(old);
                return Err(other);
            }
        };
        self.spec.set_launch(old);
        let cause = Box::new(cause);
        if matches!(*cause, ReloadError::Replace { replaced: 0, .. }) {
            // The first replacement failed: every worker still runs the old program, and
            // replacing them all once more would only put the service at risk again.
            return Err(Error::Reload(ReloadError::RolledBack { cause }));
        }
        match self.reload_local().await {
            Ok(_) => Err(Error::Reload(ReloadError::RolledBack { cause })),
            Err(Error::Reload(rollback)) => Err(Error::Reload(ReloadError::RollbackFailed {
                cause,
                rollback: Box::new(rollback),
            })),
            Err(other) => Err(other),
        }
    }
}
