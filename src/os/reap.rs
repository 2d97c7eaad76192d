//! The orphan reaper: children whose owner dropped them are reaped here, off the master's event
//! loop.
//!
//! Dropping a child must not block (a proxy drops its child on the arbiter that runs every other
//! proxy), yet an exited child must be reaped or it stays a zombie. So a drop kills the child's
//! process group and queues the child's pidfd; one reaper thread, started with the spawner,
//! `poll(2)`s every queued pidfd and a wake-up pipe, and reaps each child (`waitid(2)`,
//! `P_PIDFD`, `WNOHANG`) once its pidfd turns readable. A child in uninterruptible sleep delays
//! only its own reaping. This is tokio's orphan queue (`process/unix/orphan.rs`), with pidfds in
//! place of `SIGCHLD`, which the master leaves to its user. Once reaped, the child's token is
//! handed to the sweeper (see `sweep`), which nobody waits for here.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, OnceLock};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

use super::sweep;
use super::tree::Token;

/// A child not yet reaped, by pid, pidfd and tree token. Dropping it kills its process group and
/// hands it to the reaper; [`into_parts`](Self::into_parts) hands that duty to the caller.
#[derive(Debug)]
pub(super) struct Unreaped {
    pid: u32,
    child: Option<(OwnedFd, Token)>,
}

impl Unreaped {
    pub(super) fn new(pid: u32, pidfd: OwnedFd, token: Token) -> Self {
        Self {
            pid,
            child: Some((pidfd, token)),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd and the token; the caller now reaps the child and sweeps its token, or passes
    /// them to [`orphan`].
    pub(super) fn into_parts(mut self) -> (OwnedFd, Token) {
        self.child.take().expect("taken only here")
    }
}

impl Drop for Unreaped {
    fn drop(&mut self) {
        if let Some((pidfd, token)) = self.child.take() {
            orphan(self.pid, pidfd, token);
        }
    }
}

/// Kills the process group of `pid`, an unreaped child of ours, and queues it to be reaped, then
/// its token to be swept. Never blocks.
pub(super) fn orphan(child: u32, pidfd: OwnedFd, token: Token) {
    // Unreaped, so the group id is still ours.
    let _ = killpg(pid(child), Signal::SIGKILL);
    let reaper = reaper();
    if reaper.queue.send((pidfd, token)).is_ok() {
        // Non-blocking: a full pipe means a wake-up is pending already.
        let _ = (&reaper.wake).write(&[1]);
    }
}

/// Starts the reaper thread, if it is not running yet.
pub(super) fn start() {
    reaper();
}

struct Reaper {
    queue: mpsc::Sender<(OwnedFd, Token)>,
    /// The write end of the wake-up pipe, non-blocking.
    wake: std::fs::File,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let (wakeup, wake) = nix::unistd::pipe2(flags).expect("cannot create the reaper's pipe");
        let (queue, orphans) = mpsc::channel();
        std::thread::Builder::new()
            .name("procactor-reaper".into())
            .spawn(move || run(&orphans, wakeup.into()))
            .expect("cannot start the procactor reaper thread");
        Reaper {
            queue,
            wake: wake.into(),
        }
    })
}

/// The reaper thread: waits until a queued child has exited or a new one is queued.
fn run(queue: &mpsc::Receiver<(OwnedFd, Token)>, mut wakeup: std::fs::File) {
    let mut orphans: Vec<(OwnedFd, Token)> = Vec::new();
    loop {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(wakeup.as_fd())
            .chain(orphans.iter().map(|(o, _)| o.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        // EINTR or a failure: look at every orphan anyway, then poll again.
        let _ = poll(&mut fds, PollTimeout::NONE);
        drop(fds);
        let mut drained = [0u8; 64];
        while matches!(wakeup.read(&mut drained), Ok(n) if n > 0) {}
        orphans.extend(queue.try_iter());
        #[cfg(test)]
        let _paused = tests::PAUSED.lock();
        for (pidfd, token) in std::mem::take(&mut orphans) {
            if try_reap(&pidfd) {
                sweep::after_exit_unwatched(token);
            } else {
                orphans.push((pidfd, token));
            }
        }
    }
}

/// Reaps the child if it has exited; true when it is gone (reaped here or by someone else).
fn try_reap(pidfd: &OwnedFd) -> bool {
    match waitid(
        Id::PIDFd(pidfd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
        Ok(_) | Err(_) => true,
    }
}

/// `pid` as nix names it.
pub(super) fn pid(pid: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid as libc::pid_t)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use std::sync::Mutex;

    use super::super::{eventually, Child, OsSpawner, SpawnSpec, Spawner};
    use super::*;

    /// Held by a test: the reaper reaps nothing meanwhile.
    pub(super) static PAUSED: Mutex<()> = Mutex::new(());

    /// Whether `child` is still a child of ours, unreaped (running or a zombie).
    fn unreaped(child: u32) -> bool {
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(pid(child)), peek), Err(Errno::ECHILD))
    }

    #[tokio::test]
    async fn dropping_50_live_children_does_not_wait_and_all_are_reaped() {
        let mut children = Vec::new();
        for _ in 0..50 {
            let spec = SpawnSpec::command("/bin/sleep", &["1000"]);
            children.push(OsSpawner.spawn(spec).await.unwrap());
        }
        let pids: Vec<u32> = children.iter().map(|(_, child)| child.pid()).collect();
        assert!(pids.iter().all(|&p| unreaped(p)));
        let paused = PAUSED.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        drop(children);
        let took = started.elapsed();
        // A bound, not a race: waiting for each killed child took at least one waitid apiece.
        assert!(took < Duration::from_millis(50), "50 drops took {took:?}");
        assert!(
            pids.iter().all(|&p| unreaped(p)),
            "no drop reaped its child itself: the reaper does, and it is paused"
        );
        drop(paused);
        eventually(30, "every dropped child reaped", || {
            pids.iter().all(|&p| !unreaped(p))
        })
        .await;
    }

    #[tokio::test]
    async fn a_dropped_child_that_had_exited_is_reaped() {
        let (pipes, child) = OsSpawner
            .spawn(SpawnSpec::command("/bin/true", &[]))
            .await
            .unwrap();
        let pid = child.pid();
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        eventually(10, "the child exits unwatched", zombie).await;
        drop((pipes, child));
        eventually(10, "the dropped child reaped", || !unreaped(pid)).await;
    }
}
