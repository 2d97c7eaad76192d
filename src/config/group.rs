//! One group of a cluster of several: its name, and what differs from the cluster's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::restart::RestartPolicy;
use super::{Affinity, ClusterConfig};

/// One group of a cluster started with
/// [`ClusterSupervisor::with_groups`](crate::ClusterSupervisor::with_groups): its name, and what differs from the cluster's
/// settings. Unset fields are the cluster's; the environment is the cluster's plus the group's
/// (the group's wins for a variable both set).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupConfig {
    /// The group's name, unique in its cluster; workers see it as
    /// [`WorkerContext::group`](crate::WorkerContext::group).
    pub name: String,
    /// Its number of workers.
    pub workers: Option<usize>,
    /// Its program (by default the cluster's).
    pub exec: Option<PathBuf>,
    /// Arguments for its program, after the cluster's own `args` (which every group gets).
    pub args: Option<Vec<String>>,
    /// Environment variables added to the cluster's for this group.
    pub env: Vec<(String, String)>,
    /// The directory its processes run in (by default the cluster's).
    pub cwd: Option<PathBuf>,
    /// Its restart policy.
    pub restart: Option<RestartPolicy>,
    /// Its shutdown timeout.
    #[serde(with = "crate::millis::opt_millis")]
    pub shutdown_timeout: Option<Duration>,
    /// Its CPU affinity.
    pub affinity: Option<Affinity>,
    /// A group (started before this one) that must be ready before this one starts.
    pub after: Option<String>,
}

impl GroupConfig {
    /// A group named `name` with the cluster's settings.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Its number of workers.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Its program.
    pub fn exec(mut self, program: impl Into<PathBuf>) -> Self {
        self.exec = Some(program.into());
        self
    }

    /// Its program's arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an environment variable for this group's workers.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The directory its processes run in, as
    /// [`ClusterConfig::cwd`](crate::ClusterConfig::cwd) says.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Its restart policy.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = Some(policy);
        self
    }

    /// Its shutdown timeout.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Its CPU affinity.
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = Some(affinity);
        self
    }

    /// Starts this group only once group `group` is ready.
    pub fn after(mut self, group: impl Into<String>) -> Self {
        self.after = Some(group.into());
        self
    }

    /// The cluster's settings with this group's applied.
    pub(crate) fn apply(&self, base: &ClusterConfig) -> ClusterConfig {
        let mut config = base.clone();
        if let Some(n) = self.workers {
            config.workers = Some(n);
        }
        if let Some(exec) = &self.exec {
            config.exec = Some(exec.clone());
        }
        if let Some(args) = &self.args {
            // The cluster's arguments reach every group; the group's follow them.
            let mut all = base.args.clone().unwrap_or_default();
            all.extend(args.iter().cloned());
            config.args = Some(all);
        }
        if let Some(dir) = &self.cwd {
            config.cwd = Some(dir.clone());
        }
        for (key, value) in &self.env {
            config.env.retain(|(k, _)| k != key);
            config.env.push((key.clone(), value.clone()));
        }
        if let Some(policy) = self.restart {
            config.restart = policy;
        }
        if let Some(timeout) = self.shutdown_timeout {
            config.shutdown_timeout = timeout;
        }
        if let Some(affinity) = &self.affinity {
            config.affinity = affinity.clone();
        }
        config
    }
}
