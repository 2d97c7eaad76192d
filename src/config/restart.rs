//! The restart policy's settings; the decisions are the supervisor's (`supervisor::policy`,
//! pure and tested with a fake clock).
//!
//! # Semantics (Erlang/OTP, plus backoff)
//! - **Restart type**: `permanent` restarts after any exit, `transient` only after an abnormal
//!   one (non-zero status, a signal, a fault the master detected), `temporary` never.
//! - **Strategy**: `one_for_one` restarts the slot that died; `one_for_all` every slot;
//!   `rest_for_one` that slot and every slot after it.
//! - **Intensity**: at most `max_restarts` restarts within a sliding window of `period`; the
//!   restart that would exceed it becomes a give-up. A multi-slot restart counts once.
//! - **Only crashes count.** An exit that the operator or the program asked for is not a crash
//!   and counts neither toward the intensity nor toward the backoff: a kill
//!   ([`Cluster::kill`](crate::Cluster::kill), [`kill_all`](crate::Cluster::kill_all), a
//!   worker's [`kill_worker`](crate::WorkerHandle::kill_worker)) restarts the worker at once,
//!   as its restart type and strategy say; a graceful stop (`stop_worker`, scaling down) is
//!   final; the processes a reload or `restart_worker` replaces retire. What counts is every
//!   exit the worker did not ask for: a status, a signal the master did not send, a missed
//!   heartbeat, a ready or shutdown timeout, a failed spawn (as OTP's `terminate_child` and
//!   `restart_child` do not count, and a child's own exit does).
//! - **Backoff** per slot: the n-th consecutive restart waits `floor × multiplier^n`, capped, with
//!   jitter of ± `jitter`; a process that had run for `reset_after` resets its slot to the floor.
//! - A **permanent** fault (a protocol version mismatch) is never restarted and not counted.
//!
//! # Defaults, and why
//! 5 restarts within 30 s; backoff from 100 ms doubling to 10 s with ±20 % jitter, reset after
//! 30 s of uptime. A crash loop restarts after about 0.1, 0.2, 0.4, 0.8 and 1.6 s and gives up at
//! its sixth crash, about 3 s in, instead of burning a core; a worker that crashes once every few
//! minutes is restarted forever, each time after the floor. The 100 ms floor is systemd's
//! `RestartSec` default; 5 in 30 s sits between OTP's 1 in 5 s and PM2's 16 unstable restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a worker's process is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// After any exit.
    #[default]
    Permanent,
    /// Only after an abnormal exit (non-zero status, a signal, a fault).
    Transient,
    /// Never.
    Temporary,
}

/// Which workers are restarted when one exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the one that exited.
    #[default]
    OneForOne,
    /// All of them: the others are stopped first, then all start again in order.
    OneForAll,
    /// The one that exited and every worker started after it.
    RestForOne,
}

/// What the supervisor does when the restart intensity is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// Stop every worker; [`Cluster::wait`](crate::Cluster::wait) returns
    /// [`Error::GaveUp`](crate::Error::GaveUp) to the program.
    #[default]
    StopCluster,
    /// Stop the group's workers and mark them failed; the master goes on.
    FailGroup,
}

/// At most `max_restarts` restarts within `period` (a sliding window).
///
/// Only crashes count: the restarts that follow a kill asked for
/// ([`Cluster::kill`](crate::Cluster::kill), [`kill_all`](crate::Cluster::kill_all)) do not,
/// and neither do reloads, `restart_worker`, `stop_worker` or scaling; see
/// [`RestartPolicy`] for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intensity {
    /// Restarts allowed within the window; 0 gives up at the first exit that would restart.
    pub max_restarts: u32,
    /// The window's length.
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            period: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff between restarts of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The first delay; zero restarts at once.
    pub floor: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Growth per consecutive restart.
    pub multiplier: f64,
    /// Relative jitter: each delay is multiplied by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Uptime after which a process counts as stable and its slot's backoff starts over.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            floor: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// No delay at all (for tests and benchmarks of restart latency).
    pub fn none() -> Self {
        Self {
            floor: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// The restart policy of a worker group (Erlang/OTP's restart types, strategies and intensity,
/// plus a backoff).
///
/// # What counts against the intensity
/// Only crashes: the exits the worker did not ask for (a status, a signal the master did not
/// send, a missed heartbeat, a ready or shutdown timeout, a failed spawn). What the operator or
/// the program asked for is not a crash and counts neither toward the
/// [`intensity`](Self::intensity) nor toward the [`backoff`](Self::backoff), as OTP's
/// `terminate_child` and `restart_child` do not:
/// - a kill ([`Cluster::kill`](crate::Cluster::kill), [`kill_all`](crate::Cluster::kill_all),
///   a worker's [`kill_worker`](crate::WorkerHandle::kill_worker)) restarts the worker at once,
///   as the restart type and strategy say (a `temporary` worker stays down);
/// - a graceful stop ([`stop_worker`](crate::Cluster::stop_worker), scaling down) is final;
/// - the processes that a reload or `restart_worker` replaces retire.
///
/// So no number of `kill_all()` ends a cluster, while a crash loop still gives up.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// When a worker is restarted.
    pub restart: RestartType,
    /// Which workers are restarted with it.
    pub strategy: Strategy,
    /// How many restarts are tolerated, and how fast.
    pub intensity: Intensity,
    /// The delay before each restart.
    pub backoff: Backoff,
    /// What giving up does.
    pub escalation: Escalation,
}
