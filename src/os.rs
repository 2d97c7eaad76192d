//! The OS seam: spawning, signalling and reaping worker processes, and the worker's own
//! descriptor set-up. All of procactor's `unsafe` and Linux-specific code lives here.
//!
//! The proxy sees two small traits, [`Spawner`] and [`Child`], in the manner of tokio's
//! `process/unix` (`Wait`, `Kill`, `OrphanQueue`): [`OsSpawner`] and [`OsChild`] are the real
//! ones, and in unit tests `fake::FakeSpawner` starts children that exit when the test says so,
//! so the proxy's lifecycle can be tested without processes. The rooms:
//!
//! - `spawn`: the spawner thread and the steps a child takes between fork and exec;
//! - `activated`: the exec of a child whose environment holds its own pid (socket activation,
//!   systemd's watchdog);
//! - `child`: a started child, watched through its pidfd;
//! - `reap`: the reaper of children whose owner dropped them;
//! - `tree`: the token every child and its descendants carry in their environment;
//! - `sweep`: killing every process that carries a token, after a child's exit;
//! - `keeper`: the process that sweeps a master's tokens once the master has died;
//! - `notify`: a plain program's notification socket (systemd's `sd_notify` protocol);
//! - `fds`: the worker's side, taking its channel and its sockets.
//!
//! # Guarantees
//! - Every worker runs in its own session and process group, so signals meant for the master's
//!   terminal group do not reach it and a stop reaches its grandchildren (`killpg`).
//! - `PR_SET_PDEATHSIG(SIGKILL)`, re-checked against `getppid()`, kills a worker whose master dies.
//!   The kernel ties that signal to the *thread* that forked, so every child is forked by one
//!   long-lived spawner thread that never exits.
//! - The master's ends of every pipe are `O_CLOEXEC`, and every descriptor above 2 is closed at
//!   exec: a worker starts with stdin, stdout and stderr only, and never holds a sibling's pipe.
//! - Each child is watched through a pidfd and reaped exactly once: by its owner, or by the reaper
//!   once its owner dropped it. It is never signalled after it has been reaped, so a recycled pid
//!   cannot be hit.
//! - Once a child has exited, what is left of its process group is killed before it is reaped.
//! - Every child carries a token of its own in `PROCACTOR_TREE`, and its descendants inherit it.
//!   Once a child is reaped, every live process that carries its token is killed (`sweep`),
//!   wherever it went (a new group or session, a double fork), before its exit is reported: when
//!   a stop returns, its workers' descendants are gone.
//! - When the master dies, even by `SIGKILL`, its keeper process kills every process that carries
//!   one of the master's tokens (`keeper`).
//! - Dropping a child never blocks: an unreaped child is killed with its group and handed to the
//!   reaper thread, which reaps it as soon as it has exited. The master's event loop never waits
//!   in `waitid` for a process that has not exited.
//!
//! # Caveats
//! - A grandchild that calls `setsid()` itself leaves the worker's process group and is not
//!   reached by a group signal: only the sweep after the exit reaches it, so a `SIGTERM` of a
//!   stop reaches the group only.
//! - A descendant that executes a program without the token in its environment (an empty or
//!   rebuilt one), or that the master may not read (another user's, non-dumpable), escapes the
//!   sweeps. cgroup v2's `cgroup.kill` would not let it, and is not used: it needs a cgroup the
//!   master may write, which an unprivileged process on a cgroup v1 host does not have.
//! - A child's exit status is lost if something else in the program reaps it (a `waitpid(-1)`, or
//!   `SIGCHLD` set to `SIG_IGN`): [`Child::poll_exit`] then fails, and the proxy reports the
//!   worker as killed ([`RawExit::LOST`]).
//! - Linux 5.4 or later (pidfds and `waitid(P_PIDFD)`); before 5.11 descriptors the master
//!   inherited without close-on-exec may reach workers (no `close_range`).
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::task::{Context, Poll};

use tokio::net::unix::pipe;

use crate::error::SpawnError;

mod activated;
mod child;
#[cfg(test)]
pub(crate) mod fake;
mod fds;
mod keeper;
pub(crate) mod notify;
mod reap;
mod spawn;
mod sweep;
mod tree;

pub(crate) use child::OsChild;
pub(crate) use fds::{take_listen_fds, take_worker_channel};
pub(crate) use spawn::OsSpawner;
pub(crate) use tree::Token;

/// What to run as a worker.
#[derive(Debug)]
pub(crate) struct SpawnSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    /// The directory the child runs in (absolute); `None`: the master's.
    pub(crate) cwd: Option<PathBuf>,
    /// Variables to set to the child's own pid, known only after the fork (`WATCHDOG_PID`;
    /// `LISTEN_PID` comes with `listeners`).
    pub(crate) pid_vars: Vec<&'static str>,
    /// Size to raise the stdin and stdout pipes to; 0 leaves them as they are.
    pub(crate) pipe_bytes: usize,
    /// Listening sockets to hand over at fds 3, 4, … (socket activation), with their names.
    pub(crate) listeners: Vec<(String, OwnedFd)>,
    /// The CPUs the child may run on; empty: those of the master.
    pub(crate) cpus: Vec<usize>,
    /// The child's tree token, added to `PROCACTOR_TREE` (see the module's guarantees).
    pub(crate) tree: Token,
}

/// The master's async ends of a child's pipes.
#[derive(Debug)]
pub(crate) struct ChildPipes {
    pub(crate) stdin: pipe::Sender,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawExit {
    /// It exited with this status.
    Code(i32),
    /// A signal of this number ended it.
    Signal(i32),
}

impl RawExit {
    /// What a child whose exit status was lost counts as: killed (see the module's caveats).
    pub(crate) const LOST: RawExit = RawExit::Signal(libc::SIGKILL);
}

/// A signal the master sends to a worker's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Signal {
    /// `SIGTERM`: stop, gracefully.
    Term,
    /// `SIGKILL`: stop now.
    Kill,
}

/// A started child that its owner signals and waits for.
///
/// The methods take `&self`: the proxy shares one child between its state and the task waiting
/// for the exit. Dropping a child that has not been reaped kills its process group; the real
/// child is then reaped in the background, and the drop itself never blocks.
pub(crate) trait Child {
    /// The child's pid; its process group id too (every child leads its own session).
    fn pid(&self) -> u32;

    /// Sends `signal` to the child's whole process group; a no-op once the child is reaped.
    fn signal_group(&self, signal: Signal) -> io::Result<()>;

    /// Ready once the child has exited: what is left of its group is killed, the child is reaped,
    /// every process that carries its tree token is killed, and this and every later call return
    /// how it ended.
    ///
    /// # Errors
    /// When the exit cannot be known, e.g. something else reaped the child.
    fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<io::Result<RawExit>>;

    /// Waits for [`poll_exit`](Self::poll_exit) to be ready.
    fn wait(&self) -> impl Future<Output = io::Result<RawExit>> + '_ {
        std::future::poll_fn(move |cx| self.poll_exit(cx))
    }
}

/// Starts children.
pub(crate) trait Spawner {
    /// The children it starts.
    type Child: Child;

    /// Starts a child as `spec` says; resolves to the master's ends of its pipes and the child.
    /// Dropping the future before it resolves kills and reaps the child if it was started.
    ///
    /// # Errors
    /// A [`SpawnError`] naming the program when it cannot be started.
    fn spawn(
        &self,
        spec: SpawnSpec,
    ) -> impl Future<Output = Result<(ChildPipes, Self::Child), SpawnError>> + 'static;
}

#[cfg(test)]
impl SpawnSpec {
    /// `program` with `args` and nothing else, for tests.
    pub(crate) fn command(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            cwd: None,
            pid_vars: Vec::new(),
            pipe_bytes: 0,
            listeners: Vec::new(),
            cpus: Vec::new(),
            tree: Token::new(0, 0),
        }
    }
}

/// Polls `cond` until it holds, for at most `secs` seconds; panics naming `what` past that.
#[cfg(test)]
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
