//! A started child, watched through its pidfd (`pidfd_open(2)`).
//!
//! A pidfd turns readable once its process has exited, so the wait is an ordinary readiness
//! wait on the master's event loop, and `waitid(2)` on it (`P_PIDFD`) reaps exactly that process:
//! never a stranger that recycled the pid.
//!
//! Its exit is reported once what the kill of its process group missed has been swept too:
//! every process that carries its tree token (see `sweep`). The sweep runs on the sweeper thread;
//! the wait for it is an ordinary wait on a channel.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

use super::reap::{pid, Unreaped};
use super::tree::Token;
use super::{reap, sweep, Child, ChildPipes, RawExit, Signal};

/// A child just started on the spawner thread, not yet registered with a runtime. Dropping it
/// kills and reaps the child (through its [`Unreaped`] guard).
#[derive(Debug)]
pub(super) struct Spawned {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    child: Unreaped,
}

impl Spawned {
    /// Takes over a child that `Command::spawn` started with three pipes and `token` in its
    /// environment, and opens its pidfd.
    pub(super) fn adopt(mut child: std::process::Child, token: Token) -> io::Result<Self> {
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three pipes were requested");
        };
        match pidfd_open(child.id()) {
            Ok(pidfd) => Ok(Self {
                stdin: stdin.into(),
                stdout: stdout.into(),
                stderr: stderr.into(),
                child: Unreaped::new(child.id(), pidfd, token),
            }),
            Err(e) => {
                // Without a pidfd there is nothing to watch it by: end it here, on the spawner
                // thread, where a wait for a killed child blocks nobody.
                let _ = child.kill();
                let _ = child.wait();
                sweep::after_exit_unwatched(token);
                Err(e)
            }
        }
    }

    /// The master's ends of the channel: the child's stdin and stdout.
    pub(super) fn channel(&self) -> (&OwnedFd, &OwnedFd) {
        (&self.stdin, &self.stdout)
    }

    /// Registers the pipes and the pidfd with the current tokio runtime.
    pub(super) fn into_async(self) -> io::Result<(ChildPipes, OsChild)> {
        let pipes = ChildPipes {
            stdin: pipe::Sender::from_owned_fd(self.stdin)?,
            stdout: pipe::Receiver::from_owned_fd(self.stdout)?,
            stderr: pipe::Receiver::from_owned_fd(self.stderr)?,
        };
        let pid = self.child.pid();
        let (pidfd, token) = self.child.into_parts();
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped, which
        // only happens when the AsyncFd is, or after `into_inner` has deregistered it.
        let watch = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
        let watch = match watch {
            Ok(watch) => watch,
            Err(e) => {
                let (pidfd, error) = e.into_parts();
                reap::orphan(pid, pidfd, token);
                return Err(error);
            }
        };
        let child = OsChild {
            pid,
            watch: Some(watch),
            reaped: Cell::new(false),
            exit: Cell::new(None),
            token,
            sweep: RefCell::new(Sweep::NotYet),
        };
        Ok((pipes, child))
    }
}

/// The real [`Child`]: a process started by [`OsSpawner`](super::OsSpawner).
///
/// Dropping it before it is reaped kills its process group and hands it to the reaper; the drop
/// never waits.
#[derive(Debug)]
pub(crate) struct OsChild {
    pid: u32,
    /// The pidfd, registered with the runtime; `None` only once dropped.
    watch: Option<AsyncFd<OwnedFd>>,
    /// Reaped (or reaped by someone else): its pid may belong to another process now.
    reaped: Cell<bool>,
    exit: Cell<Option<RawExit>>,
    /// The token in its environment, which its descendants carry.
    token: Token,
    sweep: RefCell<Sweep>,
}

/// The sweep of a reaped child's token.
#[derive(Debug)]
enum Sweep {
    NotYet,
    /// Queued; the sweeper says when it has run.
    Running(tokio::sync::oneshot::Receiver<()>),
    Done,
}

impl OsChild {
    fn pidfd(&self) -> &AsyncFd<OwnedFd> {
        self.watch.as_ref().expect("the pidfd is held until drop")
    }

    /// Reaps the child, which has exited: `waitid` returns at once.
    fn reap(&self, pidfd: BorrowedFd<'_>) -> io::Result<RawExit> {
        let status = waitid(Id::PIDFd(pidfd), WaitPidFlag::WEXITED);
        self.reaped.set(true);
        let exit = match status.map_err(io::Error::from)? {
            WaitStatus::Exited(_, code) => RawExit::Code(code),
            WaitStatus::Signaled(_, signal, _) => RawExit::Signal(signal as i32),
            _ => RawExit::Signal(0),
        };
        self.exit.set(Some(exit));
        Ok(exit)
    }

    /// Ready once the child is reaped (or lost): its exit, as [`Child::poll_exit`] reports it.
    fn poll_reaped(&self, cx: &mut Context<'_>) -> Poll<io::Result<RawExit>> {
        if let Some(exit) = self.exit.get() {
            return Poll::Ready(Ok(exit));
        }
        let watch = self.pidfd();
        loop {
            let mut guard = ready!(watch.poll_read_ready(cx))?;
            // Peek first (WNOWAIT): while the leader is unreaped, its group id is still ours.
            let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::PIDFd(watch.get_ref().as_fd()), peek) {
                Ok(WaitStatus::StillAlive) => guard.clear_ready(),
                Ok(_) => {
                    // Grandchildren die with it, while the group id cannot be anyone else's.
                    let _ = self.signal_group(Signal::Kill);
                    return Poll::Ready(self.reap(watch.get_ref().as_fd()));
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    if e == Errno::ECHILD {
                        // Reaped by someone else: the pid is no longer ours to signal.
                        self.reaped.set(true);
                    }
                    return Poll::Ready(Err(e.into()));
                }
            }
        }
    }

    /// Ready once the sweep of the reaped child's token has run; starts it on first call.
    fn poll_swept(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sweep = self.sweep.borrow_mut();
        if let Sweep::NotYet = *sweep {
            *sweep = Sweep::Running(sweep::after_exit(self.token.clone()));
        }
        if let Sweep::Running(done) = &mut *sweep {
            // Told, or the sweeper is gone: either way there is nothing more to wait for.
            let _ = ready!(Pin::new(done).poll(cx));
            *sweep = Sweep::Done;
        }
        Poll::Ready(())
    }
}

impl Child for OsChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn signal_group(&self, signal: Signal) -> io::Result<()> {
        if self.reaped.get() {
            return Ok(());
        }
        // The group id is the child's pid (setsid). The leader is not reaped yet, so the pid is
        // still ours even if it has exited.
        killpg(pid(self.pid), signal.to_nix()).map_err(io::Error::from)
    }

    fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<io::Result<RawExit>> {
        let exit = ready!(self.poll_reaped(cx));
        if self.reaped.get() {
            ready!(self.poll_swept(cx));
        }
        Poll::Ready(exit)
    }
}

impl Drop for OsChild {
    /// Kill on drop: a child whose owner goes away is killed with its group and reaped in the
    /// background, so it can neither outlive its owner nor linger as a zombie.
    fn drop(&mut self) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        // Deregistered from the runtime before the descriptor changes hands.
        let pidfd = watch.into_inner();
        if !self.reaped.get() {
            reap::orphan(self.pid, pidfd, self.token.clone());
        } else if let Sweep::NotYet = *self.sweep.borrow() {
            sweep::after_exit_unwatched(self.token.clone());
        }
    }
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, open and owned by nobody else; pidfds
    // are close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Signal {
    fn to_nix(self) -> nix::sys::signal::Signal {
        match self {
            Signal::Term => nix::sys::signal::Signal::SIGTERM,
            Signal::Kill => nix::sys::signal::Signal::SIGKILL,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::{eventually, OsSpawner, SpawnSpec, Spawner};
    use super::*;

    async fn start(program: &str, args: &[&str]) -> (ChildPipes, OsChild) {
        OsSpawner
            .spawn(SpawnSpec::command(program, args))
            .await
            .unwrap()
    }

    /// Whether `pid` runs (neither gone nor a zombie).
    fn runs(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[tokio::test]
    async fn true_exits_with_status_0() {
        let (_pipes, child) = start("/bin/true", &[]).await;
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(0));
    }

    #[tokio::test]
    async fn an_exit_status_is_reported_and_stays() {
        let (_pipes, child) = start("/bin/sh", &["-c", "exit 3"]).await;
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(3));
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(3), "asked again");
        assert!(
            child.signal_group(Signal::Kill).is_ok(),
            "a reaped child is not signalled: its pid may be someone else's"
        );
    }

    #[tokio::test]
    async fn a_signal_to_the_group_ends_the_child() {
        for (signal, number) in [(Signal::Kill, libc::SIGKILL), (Signal::Term, libc::SIGTERM)] {
            let (_pipes, child) = start("/bin/sleep", &["1000"]).await;
            assert!(runs(child.pid()));
            child.signal_group(signal).unwrap();
            assert_eq!(child.wait().await.unwrap(), RawExit::Signal(number));
            assert!(!runs(child.pid()));
        }
    }

    #[tokio::test]
    async fn grandchildren_are_killed_once_the_child_has_exited() {
        let (mut pipes, child) = start(
            "/bin/sh",
            &["-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"],
        )
        .await;
        let mut out = String::new();
        pipes.stdout.read_to_string(&mut out).await.ok();
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(0));
        let grandchild: u32 = out.trim().parse().unwrap();
        eventually(10, "the grandchild is killed", || !runs(grandchild)).await;
    }

    #[tokio::test]
    async fn descendants_that_left_the_group_are_gone_when_the_exit_is_reported() {
        // A new session, and a double fork: neither is in the child's process group.
        let script = "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; \
                      (sleep 1000 </dev/null >/dev/null 2>&1 & echo $!)";
        let (mut pipes, child) = start("/bin/sh", &["-c", script]).await;
        let mut out = String::new();
        pipes.stdout.read_to_string(&mut out).await.ok();
        let pids: Vec<u32> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(pids.len(), 2, "{out:?}");
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(0));
        for pid in &pids {
            // Swept before the exit was reported: at most an exiting shell of a process is left.
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            assert!(environ.is_empty(), "{pid} still runs");
        }
        eventually(10, "the descendants are gone", || {
            pids.iter().all(|&pid| !runs(pid))
        })
        .await;
    }

    #[tokio::test]
    async fn the_pipes_reach_the_child() {
        let (mut pipes, child) = start("/bin/cat", &[]).await;
        pipes.stdin.write_all(b"ping").await.unwrap();
        drop(pipes.stdin);
        let mut out = Vec::new();
        pipes.stdout.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"ping");
        assert_eq!(child.wait().await.unwrap(), RawExit::Code(0));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let spec = SpawnSpec::command("/nonexistent/procactor-test", &[]);
        let error = OsSpawner.spawn(spec).await.unwrap_err();
        assert_eq!(error.kind, io::ErrorKind::NotFound);
        assert_eq!(
            error.program,
            std::path::Path::new("/nonexistent/procactor-test")
        );
    }
}
