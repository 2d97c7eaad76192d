//! A fake OS seam for unit tests: children that are no processes, exit when the test says so, and
//! record the signals they get.
//!
//! A [`FakeSpawner`] hands the code under test ordinary [`ChildPipes`] (real anonymous pipes,
//! so end-of-file and broken pipes behave as with a process) and a [`FakeChild`]; the test takes
//! the other side of each start as a [`FakeProcess`]: the spec it was started with, the worker's
//! ends of its pipes, and a [`FakeControl`] to end it and to read what it was sent.
//!
//! The fake child follows the real one where the proxy can tell: signals reach it until it has
//! been reaped (by `poll_exit` seeing its exit), `SIGKILL` ends it with signal 9 (unless the
//! test turns that off to model a process slow to die), and dropping it unreaped kills it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::net::unix::pipe;
use tokio::sync::Notify;

use super::{Child, ChildPipes, RawExit, Signal, SpawnSpec, Spawner};
use crate::error::SpawnError;

/// A [`Spawner`] whose children are [`FakeChild`]ren. Clones share their state.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeSpawner {
    state: Rc<SpawnerState>,
}

#[derive(Debug, Default)]
struct SpawnerState {
    started: RefCell<VecDeque<FakeProcess>>,
    failures: RefCell<VecDeque<io::ErrorKind>>,
    count: Cell<u32>,
    held: Cell<bool>,
    released: Notify,
    arrived: Notify,
}

/// The test's side of one start.
#[derive(Debug)]
pub(crate) struct FakeProcess {
    /// What it was started with.
    pub(crate) spec: SpawnSpec,
    /// Ends it and tells what it was sent.
    pub(crate) control: FakeControl,
    /// What the master wrote to its stdin.
    pub(crate) stdin: pipe::Receiver,
    /// Its stdout, for the test to write.
    pub(crate) stdout: pipe::Sender,
    /// Its stderr, for the test to write.
    pub(crate) stderr: pipe::Sender,
}

impl FakeSpawner {
    /// Fails the next start with an error of `kind` (queued: one per call).
    pub(crate) fn fail_next(&self, kind: io::ErrorKind) {
        self.state.failures.borrow_mut().push_back(kind);
    }

    /// While held, starts wait (the spawn futures stay pending) until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.state.held.set(true);
    }

    /// Lets held starts go on.
    pub(crate) fn release(&self) {
        self.state.held.set(false);
        self.state.released.notify_waiters();
    }

    /// How many starts were asked for, failed ones included.
    pub(crate) fn count(&self) -> u32 {
        self.state.count.get()
    }

    /// The oldest start the test has not taken yet.
    pub(crate) fn take(&self) -> Option<FakeProcess> {
        self.state.started.borrow_mut().pop_front()
    }

    /// Waits for the next start the test has not taken yet.
    pub(crate) async fn next(&self) -> FakeProcess {
        loop {
            if let Some(process) = self.take() {
                return process;
            }
            self.state.arrived.notified().await;
        }
    }
}

impl Spawner for FakeSpawner {
    type Child = FakeChild;

    fn spawn(
        &self,
        spec: SpawnSpec,
    ) -> impl Future<Output = Result<(ChildPipes, FakeChild), SpawnError>> + 'static {
        let state = Rc::clone(&self.state);
        async move {
            let count = state.count.get() + 1;
            state.count.set(count);
            while state.held.get() {
                state.released.notified().await;
            }
            if let Some(kind) = state.failures.borrow_mut().pop_front() {
                return Err(SpawnError {
                    program: spec.program.clone(),
                    kind,
                    message: "a fake failure".into(),
                });
            }
            let (pipes, process_pipes) = pipes().expect("pipes for a fake child");
            let shared = Rc::new(Shared::new(10_000 + count));
            let (stdin, stdout, stderr) = process_pipes;
            state.started.borrow_mut().push_back(FakeProcess {
                spec,
                control: FakeControl(Rc::clone(&shared)),
                stdin,
                stdout,
                stderr,
            });
            state.arrived.notify_one();
            Ok((pipes, FakeChild(shared)))
        }
    }
}

type ProcessPipes = (pipe::Receiver, pipe::Sender, pipe::Sender);

fn pipes() -> io::Result<(ChildPipes, ProcessPipes)> {
    let (stdin, their_stdin) = pipe::pipe()?;
    let (their_stdout, stdout) = pipe::pipe()?;
    let (their_stderr, stderr) = pipe::pipe()?;
    let pipes = ChildPipes {
        stdin,
        stdout,
        stderr,
    };
    Ok((pipes, (their_stdin, their_stdout, their_stderr)))
}

/// A [`Child`] that is no process.
#[derive(Debug)]
pub(crate) struct FakeChild(Rc<Shared>);

/// The test's handle on a [`FakeChild`].
#[derive(Debug, Clone)]
pub(crate) struct FakeControl(Rc<Shared>);

#[derive(Debug)]
struct Shared {
    pid: u32,
    signals: RefCell<Vec<Signal>>,
    /// How it ended; an error kind: its status was lost.
    exit: Cell<Option<Result<RawExit, io::ErrorKind>>>,
    reaped: Cell<bool>,
    dropped: Cell<bool>,
    kill_ends_it: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Shared {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            signals: RefCell::default(),
            exit: Cell::new(None),
            reaped: Cell::new(false),
            dropped: Cell::new(false),
            kill_ends_it: Cell::new(true),
            waker: RefCell::default(),
        }
    }

    /// Ends it, unless it has ended already.
    fn end(&self, exit: Result<RawExit, io::ErrorKind>) {
        if self.exit.get().is_none() {
            self.exit.set(Some(exit));
            if let Some(waker) = self.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    fn receive(&self, signal: Signal) {
        self.signals.borrow_mut().push(signal);
        if signal == Signal::Kill && self.kill_ends_it.get() {
            self.end(Ok(RawExit::Signal(libc::SIGKILL)));
        }
    }
}

impl Child for FakeChild {
    fn pid(&self) -> u32 {
        self.0.pid
    }

    fn signal_group(&self, signal: Signal) -> io::Result<()> {
        if !self.0.reaped.get() {
            self.0.receive(signal);
        }
        Ok(())
    }

    fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<io::Result<RawExit>> {
        match self.0.exit.get() {
            Some(exit) => {
                self.0.reaped.set(true);
                Poll::Ready(exit.map_err(|kind| io::Error::new(kind, "a fake lost exit")))
            }
            None => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for FakeChild {
    /// As the real child: killed when dropped unreaped.
    fn drop(&mut self) {
        if !self.0.reaped.get() {
            self.0.receive(Signal::Kill);
        }
        self.0.dropped.set(true);
    }
}

impl FakeControl {
    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Ends it with `exit`; ignored once it has ended.
    pub(crate) fn exit(&self, exit: RawExit) {
        self.0.end(Ok(exit));
    }

    /// Ends it with its exit status lost: `poll_exit` fails with `kind`.
    pub(crate) fn lose(&self, kind: io::ErrorKind) {
        self.0.end(Err(kind));
    }

    /// Whether `SIGKILL` ends it at once (the default), or waits for [`exit`](Self::exit).
    pub(crate) fn kill_ends_it(&self, yes: bool) {
        self.0.kill_ends_it.set(yes);
    }

    /// The signals it was sent, in order.
    pub(crate) fn signals(&self) -> Vec<Signal> {
        self.0.signals.borrow().clone()
    }

    /// Whether its owner has seen its exit.
    pub(crate) fn is_reaped(&self) -> bool {
        self.0.reaped.get()
    }

    /// Whether its owner has dropped it.
    pub(crate) fn is_dropped(&self) -> bool {
        self.0.dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn spec() -> SpawnSpec {
        SpawnSpec::command("fake-worker", &["--role", "test"])
    }

    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_fake_child_exits_when_the_test_says_so() {
        let spawner = FakeSpawner::default();
        let (_pipes, child) = spawner.spawn(spec()).await.unwrap();
        let process = spawner.take().expect("the start is recorded");
        assert_eq!(process.spec.args, ["--role", "test"]);
        assert_eq!(process.control.pid(), child.pid());
        let mut wait = pin!(child.wait());
        assert!(poll_once(wait.as_mut()).is_pending());
        process.control.exit(RawExit::Code(7));
        assert_eq!(wait.await.unwrap(), RawExit::Code(7));
        assert!(process.control.is_reaped());
        process.control.exit(RawExit::Code(8));
        assert_eq!(
            child.wait().await.unwrap(),
            RawExit::Code(7),
            "the first end stands"
        );
    }

    #[tokio::test]
    async fn the_fake_pipes_carry_bytes_both_ways() {
        let spawner = FakeSpawner::default();
        let (mut pipes, _child) = spawner.spawn(spec()).await.unwrap();
        let mut process = spawner.next().await;
        pipes.stdin.write_all(b"to the worker").await.unwrap();
        let mut got = [0u8; 13];
        process.stdin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to the worker");
        process.stdout.write_all(b"out").await.unwrap();
        process.stderr.write_all(b"err").await.unwrap();
        drop((process.stdout, process.stderr));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        pipes.stdout.read_to_end(&mut out).await.unwrap();
        pipes.stderr.read_to_end(&mut err).await.unwrap();
        assert_eq!((&out[..], &err[..]), (&b"out"[..], &b"err"[..]));
    }

    #[tokio::test]
    async fn signals_are_recorded_and_sigkill_ends_it() {
        let spawner = FakeSpawner::default();
        let (_pipes, child) = spawner.spawn(spec()).await.unwrap();
        let control = spawner.take().unwrap().control;
        child.signal_group(Signal::Term).unwrap();
        assert!(
            poll_once(pin!(child.wait())).is_pending(),
            "SIGTERM is left to it"
        );
        child.signal_group(Signal::Kill).unwrap();
        assert_eq!(child.wait().await.unwrap(), RawExit::Signal(libc::SIGKILL));
        child.signal_group(Signal::Term).unwrap();
        assert_eq!(
            control.signals(),
            [Signal::Term, Signal::Kill],
            "none once reaped"
        );
    }

    #[tokio::test]
    async fn a_child_slow_to_die_ends_when_the_test_says_so() {
        let spawner = FakeSpawner::default();
        let (_pipes, child) = spawner.spawn(spec()).await.unwrap();
        let control = spawner.take().unwrap().control;
        control.kill_ends_it(false);
        child.signal_group(Signal::Kill).unwrap();
        assert!(poll_once(pin!(child.wait())).is_pending());
        control.exit(RawExit::Signal(libc::SIGKILL));
        assert_eq!(child.wait().await.unwrap(), RawExit::Signal(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_lost_exit_fails_the_wait() {
        let spawner = FakeSpawner::default();
        let (_pipes, child) = spawner.spawn(spec()).await.unwrap();
        spawner
            .take()
            .unwrap()
            .control
            .lose(io::ErrorKind::NotFound);
        let error = child.wait().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            child.wait().await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn dropping_an_unreaped_child_kills_it() {
        let spawner = FakeSpawner::default();
        let (_, running) = spawner.spawn(spec()).await.unwrap();
        let (_, reaped) = spawner.spawn(spec()).await.unwrap();
        let (a, b) = (spawner.take().unwrap(), spawner.take().unwrap());
        b.control.exit(RawExit::Code(0));
        assert_eq!(reaped.wait().await.unwrap(), RawExit::Code(0));
        drop((running, reaped));
        assert!(a.control.is_dropped() && b.control.is_dropped());
        assert_eq!(a.control.signals(), [Signal::Kill]);
        assert!(
            b.control.signals().is_empty(),
            "a reaped child is not signalled"
        );
    }

    #[tokio::test]
    async fn queued_failures_fail_the_next_starts() {
        let spawner = FakeSpawner::default();
        spawner.fail_next(io::ErrorKind::PermissionDenied);
        let error = spawner.spawn(spec()).await.unwrap_err();
        assert_eq!(error.kind, io::ErrorKind::PermissionDenied);
        assert_eq!(error.program, std::path::Path::new("fake-worker"));
        assert!(spawner.spawn(spec()).await.is_ok());
        assert_eq!(spawner.count(), 2);
        assert!(spawner.take().is_some() && spawner.take().is_none());
    }

    #[tokio::test]
    async fn held_starts_wait_for_release() {
        let spawner = FakeSpawner::default();
        spawner.hold();
        let mut start = pin!(spawner.spawn(spec()));
        assert!(poll_once(start.as_mut()).is_pending());
        assert!(spawner.take().is_none(), "not started while held");
        spawner.release();
        let (_pipes, child) = start.await.unwrap();
        assert_eq!(spawner.take().unwrap().control.pid(), child.pid());
    }
}
