//! Which role this process has in a tree of clusters, read from the environment its master gave
//! it at spawn: the one thing a program re-run as its own workers branches on at the top of
//! `main`.
//!
//! A worker that runs a cluster of its own (a supervision tree) is both a worker, of the master
//! above, and a master, of its own workers; when those run the same program, they are workers
//! too. [`is_worker`](super::is_worker) is true for both; [`role`] tells them apart by depth (and
//! by group). The depth counts the tokens of the tree marker (`PROCACTOR_TREE`, see `os/tree.rs`):
//! every master appends its child's token to the list it inherited.
//!
//! # Limits
//! The role is what the environment says. A program that a worker starts by other means (a
//! `std::process::Command`) inherits the worker's environment, and with it the worker's role,
//! unless it is started without the `PROCACTOR_*` variables.

use serde::{Deserialize, Serialize};

use crate::state::WorkerId;
use crate::worker::env;

/// Where this process stands in a tree of clusters ([`role`]).
///
/// ```no_run
/// use procactor::Role;
/// # use procactor::actors::echo::Echo as Middle;
/// # use procactor::actors::echo::Echo as Leaf;
///
/// fn main() -> Result<(), procactor::Error> {
///     match procactor::role() {
///         // The top: start the cluster, whose workers are this program again.
///         Role::Master => Ok(()),
///         // Their `started` hook starts a cluster of its own, of this program again…
///         Role::Worker { depth: 1, .. } => procactor::run_worker(Middle::default()),
///         // …whose workers are the leaves.
///         Role::Worker { .. } => procactor::run_worker(Leaf::default()),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Not started as a worker by a procactor master: the top of a tree, or a program that
    /// runs on its own.
    Master,
    /// A worker of a procactor master.
    Worker {
        /// Its id in that master's cluster ([`WorkerContext::id`](crate::WorkerContext::id)).
        id: WorkerId,
        /// Its group there ([`WorkerContext::group`](crate::WorkerContext::group)).
        group: String,
        /// How many masters are above it: 1 for a worker of the top master, 2 for a worker of a
        /// cluster that a worker of the top runs, and so on.
        depth: usize,
    },
}

impl Role {
    /// Whether this is a worker's role.
    pub fn is_worker(&self) -> bool {
        matches!(self, Role::Worker { .. })
    }

    /// How many masters are above this process: 0 for the top.
    pub fn depth(&self) -> usize {
        match self {
            Role::Master => 0,
            Role::Worker { depth, .. } => *depth,
        }
    }
}

/// This process's role: [`Role::Master`] unless a procactor master started it as a worker.
///
/// Unlike [`is_worker`](super::is_worker), it tells a worker that runs a cluster of its own
/// (`depth` 1, say) from the workers of that cluster (`depth` 2); see [`Role`].
pub fn role() -> Role {
    let var = |name| std::env::var(name).ok();
    from_vars(
        var(env::WORKER_ID).as_deref(),
        var(env::GROUP),
        var(env::TREE).as_deref(),
    )
}

/// The role for these values of the worker's variables.
fn from_vars(worker_id: Option<&str>, group: Option<String>, tree: Option<&str>) -> Role {
    let Some(id) = worker_id.and_then(|id| id.parse().ok()) else {
        return Role::Master;
    };
    let tokens = tree.map_or(0, |list| list.split(';').filter(|t| !t.is_empty()).count());
    Role::Worker {
        id,
        group: group.unwrap_or_else(|| crate::config::DEFAULT_GROUP.into()),
        // A worker started by hand, without the marker, still has a master above.
        depth: tokens.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: WorkerId, group: &str, depth: usize) -> Role {
        Role::Worker {
            id,
            group: group.into(),
            depth,
        }
    }

    #[test]
    fn no_worker_id_is_the_master() {
        assert_eq!(from_vars(None, None, None), Role::Master);
        assert_eq!(
            from_vars(None, Some("web".into()), Some("1.2/1/0/1")),
            Role::Master
        );
        assert_eq!(from_vars(Some("x"), None, None), Role::Master);
        assert_eq!(Role::Master.depth(), 0);
        assert!(!Role::Master.is_worker());
    }

    #[test]
    fn depth_counts_the_masters_above() {
        let top = "41.7/1/0/1";
        let nested = "41.7/1/0/1;52.9/3/1/2";
        assert_eq!(
            from_vars(Some("0"), Some("web".into()), Some(top)),
            worker(0, "web", 1)
        );
        assert_eq!(
            from_vars(Some("1"), Some("leaves".into()), Some(nested)),
            worker(1, "leaves", 2)
        );
        assert_eq!(worker(1, "leaves", 2).depth(), 2);
        assert!(worker(1, "leaves", 2).is_worker());
    }

    #[test]
    fn a_worker_without_marker_or_group_is_one_level_down_in_the_default_group() {
        assert_eq!(
            from_vars(Some("3"), None, None),
            worker(3, crate::config::DEFAULT_GROUP, 1)
        );
        assert_eq!(
            from_vars(Some("3"), None, Some("")),
            worker(3, crate::config::DEFAULT_GROUP, 1)
        );
    }
}
