//! One process of a slot (a *generation*): its lifecycle state, its stdin queue and what is in
//! flight to it, as a state machine with no actix and no OS in it.
//!
//! ```text
//!  Spawning ──spawned──► Starting ──Hello──► Online ──Ready──► Ready ──stop──► Stopping
//!                           │                  │                 │               │
//!                           └──────────────────┴──── exit ───────┴───────────────┴──► Exited
//! ```
//!
//! Frames go in through [`Proc::admit`], which applies the lifecycle transitions and says what
//! the proxy must do with the frame (or that the frame breaks the protocol); heartbeats through
//! [`Proc::heartbeat`] and [`Proc::on_pong`]; the end through [`Proc::finish`], once the process
//! is reaped and its output read. The proxy (`actor`, `dispatch`, `spawn`, `lifecycle`) turns
//! those answers into effects: events, routing, signals, timers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::dev::OneshotSender;

use super::gate::Gate;
use super::inflight::InFlight;
use super::stdin::StdinQueue;
use crate::config::ClusterConfig;
use crate::error::{CallError, ExitReason, ProtocolError};
use crate::os::{Child, OsChild, RawExit, Signal};
use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::state::WorkerState;

/// One-way senders waiting for a process's stdin queue to drain.
pub(crate) type Held = Rc<RefCell<VecDeque<OneshotSender<Result<(), CallError>>>>>;

/// One process of a slot, with its pipes and what is in flight to it; `C` is the OS seam's child
/// (a fake one in unit tests).
pub(crate) struct Proc<R, C: Child = OsChild> {
    pub(crate) generation: u64,
    pub(crate) state: WorkerState,
    pub(super) child: Option<Rc<C>>,
    /// Its pid, once spawned.
    pub(super) pid: Option<u32>,
    pub(crate) stdin: StdinQueue,
    /// When the master stops reading its frames (see [`Gate`]).
    pub(crate) gate: Rc<Gate>,
    /// It asked for a reload already: once per process is enough.
    pub(super) reload_asked: bool,
    /// Its `Disconnected` event went out.
    pub(super) disconnected: bool,
    /// Callers and peers waiting for its answers.
    pub(super) in_flight: InFlight<R>,
    pub(super) held: Held,
    /// Why the master ended it, when it did.
    pub(super) fault: Option<ExitReason>,
    pub(super) exit: Option<RawExit>,
    pub(super) stdout_open: bool,
    pub(super) stderr_open: bool,
    pub(super) stderr_tail: Rc<RefCell<VecDeque<String>>>,
    pub(super) started_at: Option<Instant>,
    /// The same moment on the wall clock, read once (for the start time a scrape reports).
    pub(super) started_wall: Option<std::time::SystemTime>,
    pub(super) pings_sent: u64,
    pub(super) pongs_seen: u64,
    /// The span every event of this process is inside (worker, group, generation, pid).
    pub(super) span: tracing::Span,
}

/// What the proxy does with a frame [`Proc::admit`] accepted.
#[derive(Debug)]
pub(super) enum Admitted<'a> {
    /// Nothing more (a heartbeat answer).
    Done,
    /// `Hello`: the process speaks the protocol (now `Online`).
    Online,
    /// `Ready`: its `started` hook returned.
    Ready,
    /// An answer to a request (`Reply` or `Failed`).
    Answer(Envelope<'a>),
    /// Something the worker sends to others or to the master (`Send`, `Ask`, `System`,
    /// `Event`, `Log`, `ReloadRequest`).
    Outbound(Envelope<'a>),
}

/// What a heartbeat tick decides.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Beat {
    /// Send `Ping` with this sequence number.
    Ping(u64),
    /// Too many pings in a row went unanswered.
    Missed,
    /// Nothing this time: the master is not reading the process's frames, for reasons not of its
    /// making (see [`Gate`]).
    Paused,
}

/// How a process ended, once reaped and its output read.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) reason: ExitReason,
    pub(super) pid: Option<u32>,
    pub(super) last_stderr: Vec<String>,
    pub(super) uptime: Duration,
}

impl<R, C: Child> Proc<R, C> {
    pub(super) fn new(generation: u64, config: &ClusterConfig) -> Self {
        Self {
            generation,
            state: WorkerState::Spawning,
            child: None,
            pid: None,
            stdin: StdinQueue::new(config.max_frame_bytes, config.max_outbox_bytes),
            gate: Rc::new(Gate::new(config.max_worker_pending)),
            reload_asked: false,
            disconnected: false,
            in_flight: InFlight::new(config.metrics.is_some(), Rc::default()),
            held: Rc::default(),
            fault: None,
            exit: None,
            stdout_open: false,
            stderr_open: false,
            stderr_tail: Rc::default(),
            started_at: None,
            started_wall: None,
            pings_sent: 0,
            pongs_seen: 0,
            span: tracing::Span::none(),
        }
    }

    /// The same, its events inside `span`.
    pub(super) fn in_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }

    /// Its pid, while it has not been reaped.
    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The process was started: it runs and its pipes are open.
    pub(super) fn started(&mut self, pid: u32, now: Instant) {
        self.pid = Some(pid);
        self.span.record("pid", pid);
        self.started_at = Some(now);
        self.started_wall = Some(std::time::SystemTime::now());
        self.state = WorkerState::Starting;
        self.stdout_open = true;
        self.stderr_open = true;
    }

    pub(super) fn is_running(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Spawning
                | WorkerState::Starting
                | WorkerState::Online
                | WorkerState::Ready
                | WorkerState::Stopping
        )
    }

    /// Whether it sends messages of its own (between `Hello` and its exit).
    fn speaks(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Online | WorkerState::Ready | WorkerState::Stopping
        )
    }

    /// Takes one frame from the worker: the lifecycle transition it makes, and what the proxy
    /// does with it; a frame not allowed in the current state is a protocol error.
    pub(super) fn admit<'a>(
        &mut self,
        envelope: Envelope<'a>,
    ) -> Result<Admitted<'a>, ProtocolError> {
        let unexpected = |state: WorkerState, got: &Envelope<'_>| {
            let state = match state {
                WorkerState::Starting => "waiting for Hello",
                WorkerState::Online => "waiting for Ready",
                _ => "running",
            };
            ProtocolError::unexpected(got.kind(), state)
        };
        match (self.state, envelope) {
            (
                WorkerState::Starting,
                Envelope::Hello {
                    protocol_version, ..
                },
            ) => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::VersionMismatch {
                        worker: protocol_version,
                        master: PROTOCOL_VERSION,
                    });
                }
                self.state = WorkerState::Online;
                Ok(Admitted::Online)
            }
            (WorkerState::Online, Envelope::Ready) => Ok(Admitted::Ready),
            (WorkerState::Ready | WorkerState::Stopping, Envelope::Pong { seq }) => {
                self.on_pong(seq)?;
                Ok(Admitted::Done)
            }
            (WorkerState::Starting, other) => Err(unexpected(WorkerState::Starting, &other)),
            (_, env @ (Envelope::Reply { .. } | Envelope::Failed { .. })) => {
                Ok(Admitted::Answer(env))
            }
            (WorkerState::Online | WorkerState::Ready, env @ Envelope::ReloadRequest) => {
                Ok(Admitted::Outbound(env))
            }
            (
                _,
                env @ (Envelope::Send { .. }
                | Envelope::Ask { .. }
                | Envelope::System { .. }
                | Envelope::Event { .. }
                | Envelope::Log { .. }),
            ) if self.speaks() => Ok(Admitted::Outbound(env)),
            (state, other) => Err(unexpected(state, &other)),
        }
    }

    /// A heartbeat answer: it must answer a ping that was sent, and not go backwards.
    pub(super) fn on_pong(&mut self, seq: u64) -> Result<(), ProtocolError> {
        if seq == 0 || seq > self.pings_sent {
            return Err(ProtocolError::unexpected(
                "Pong",
                "no ping with that number was sent",
            ));
        }
        self.pongs_seen = self.pongs_seen.max(seq);
        Ok(())
    }

    /// One heartbeat interval passed: ping again, or give up after `misses` unanswered pings.
    pub(super) fn heartbeat(&mut self, misses: u64) -> Beat {
        if self
            .gate
            .paused()
            .is_some_and(|pause| !pause.is_the_workers())
        {
            // Its pongs wait unread behind frames the master is not reading yet.
            return Beat::Paused;
        }
        if self.pings_sent.saturating_sub(self.pongs_seen) >= misses {
            return Beat::Missed;
        }
        self.pings_sent += 1;
        Beat::Ping(self.pings_sent)
    }

    /// The master ends it for `reason`: its process group is killed and what is in flight
    /// fails now. `false` when it was already ended or is not running (nothing to do).
    pub(super) fn fault(&mut self, worker: usize, reason: ExitReason) -> bool {
        if self.fault.is_some() || !self.is_running() {
            return false;
        }
        self.signal(Signal::Kill);
        self.fail_in_flight(&CallError::WorkerExited {
            worker,
            reason: reason.clone(),
        });
        self.fault = Some(reason);
        true
    }

    /// Asks a plain program to stop (SIGTERM to its process group).
    pub(super) fn terminate(&self) {
        self.signal(Signal::Term);
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            if let Err(e) = child.signal_group(signal) {
                tracing::debug!(pid = child.pid(), ?signal, error = %e, "signal not delivered");
            }
        }
    }

    /// Whether it has been reaped and its stdout and stderr have closed.
    pub(super) fn drained(&self) -> bool {
        !self.stdout_open && !self.stderr_open && self.exit.is_some()
    }

    /// It was reaped (and its output read, or the wait for it is over): it is `Exited`, and
    /// what was in flight to it fails. `None` when it was finished already or not reaped yet.
    pub(super) fn finish(&mut self, worker: usize) -> Option<Finished> {
        if self.state == WorkerState::Exited {
            return None;
        }
        let raw = self.exit?;
        let reason = self.fault.take().unwrap_or(match raw {
            RawExit::Code(code) => ExitReason::Exited(code),
            RawExit::Signal(signal) => ExitReason::Signaled(signal),
        });
        self.state = WorkerState::Exited;
        self.stdin.detach();
        self.stdin.flushing = false;
        self.fail_in_flight(&CallError::WorkerExited {
            worker,
            reason: reason.clone(),
        });
        self.child = None;
        Some(Finished {
            reason,
            pid: self.pid.take(),
            last_stderr: self.stderr_tail.borrow().iter().cloned().collect(),
            uptime: self.started_at.map(|t| t.elapsed()).unwrap_or_default(),
        })
    }

    /// Lets awaiting senders of one-way messages go once the queue is below its high-water mark.
    pub(crate) fn release_held_tells(&mut self) {
        if !self.stdin.over_tell_mark() {
            for tx in self.held.borrow_mut().drain(..) {
                let _ = tx.send(Ok(()));
            }
        }
    }

    /// Fails every request and held message in flight to this process.
    pub(super) fn fail_in_flight(&mut self, error: &CallError) {
        self.in_flight.fail_all(error);
        for tx in self.held.borrow_mut().drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// The same process, the requests its table fails counted in `abandoned` (the slot's).
    pub(super) fn counting(mut self, abandoned: Rc<std::cell::Cell<u64>>) -> Self {
        self.in_flight = self.in_flight.counting(abandoned);
        self
    }

    /// Takes over what waited for `old` (its queue, its callers), as a respawn does.
    pub(super) fn inherit(&mut self, old: Proc<R, C>) {
        self.stdin = old.stdin;
        self.stdin.flushing = false;
        self.in_flight = old.in_flight;
        self.held = old.held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::table::ReplyTo;
    use crate::messaging::{AskError, Peer, Route};
    use crate::os::fake::{FakeChild, FakeControl, FakeSpawner};
    use crate::os::{SpawnSpec, Spawner};

    fn proc() -> Proc<u32, FakeChild> {
        Proc::new(1, &ClusterConfig::new())
    }

    /// A process of the fake OS seam, started, with the test's handle on it.
    async fn spawned(state: WorkerState) -> (Proc<u32, FakeChild>, FakeControl) {
        let spawner = FakeSpawner::default();
        let spec = SpawnSpec::command("worker", &[]);
        let (pipes, child) = spawner.spawn(spec).await.expect("fake spawn");
        let control = spawner.take().expect("started").control;
        let mut p = proc();
        p.started(child.pid(), Instant::now());
        p.child = Some(Rc::new(child));
        p.stdin.attach(pipes.stdin);
        p.state = state;
        (p, control)
    }

    fn running(state: WorkerState) -> Proc<u32, FakeChild> {
        let mut p = proc();
        p.started(42, Instant::now());
        p.state = state;
        p
    }

    #[test]
    fn hello_brings_a_starting_process_online_and_nothing_else_is_allowed_first() {
        let mut p = running(WorkerState::Starting);
        assert!(matches!(
            p.admit(Envelope::Ready),
            Err(ProtocolError::Unexpected { state, .. }) if state == "waiting for Hello"
        ));
        let hello = Envelope::Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: 42,
        };
        assert!(matches!(p.admit(hello), Ok(Admitted::Online)));
        assert_eq!(p.state, WorkerState::Online);
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let mut p = running(WorkerState::Starting);
        let hello = Envelope::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            pid: 42,
        };
        assert!(matches!(
            p.admit(hello),
            Err(ProtocolError::VersionMismatch { .. })
        ));
    }

    #[test]
    fn each_state_admits_its_frames_and_refuses_the_rest() {
        let send = || Envelope::Send {
            to: Route::Master,
            ack: None,
            payload: &[],
        };
        let online =
            |p: &mut Proc<u32, FakeChild>| matches!(p.admit(send()), Ok(Admitted::Outbound(_)));
        assert!(online(&mut running(WorkerState::Online)));
        assert!(online(&mut running(WorkerState::Ready)));
        assert!(online(&mut running(WorkerState::Stopping)));
        assert!(!online(&mut running(WorkerState::Starting)));
        // A second Hello, or Ready twice, breaks the protocol.
        let hello = Envelope::Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: 42,
        };
        assert!(running(WorkerState::Ready).admit(hello).is_err());
        assert!(running(WorkerState::Ready).admit(Envelope::Ready).is_err());
        // Master-only frames from a worker are refused in every state.
        let forged = Envelope::Deliver {
            from: Peer::Master,
            via: crate::messaging::Via::Direct,
            ack: None,
            payload: &[],
        };
        assert!(running(WorkerState::Ready).admit(forged).is_err());
        // A reload request is not taken from a stopping worker.
        assert!(running(WorkerState::Stopping)
            .admit(Envelope::ReloadRequest)
            .is_err());
        assert!(matches!(
            running(WorkerState::Ready).admit(Envelope::ReloadRequest),
            Ok(Admitted::Outbound(_))
        ));
    }

    #[test]
    fn a_pong_for_a_ping_never_sent_is_a_protocol_error_not_an_overflow() {
        let mut p = running(WorkerState::Ready);
        assert!(p.on_pong(u64::MAX).is_err());
        assert!(p.on_pong(0).is_err());
        assert_eq!(p.heartbeat(3), Beat::Ping(1));
        assert!(p.on_pong(1).is_ok());
        assert!(p.on_pong(2).is_err());
    }

    #[test]
    fn heartbeats_give_up_after_the_configured_misses_in_a_row() {
        let mut p = running(WorkerState::Ready);
        assert_eq!(p.heartbeat(2), Beat::Ping(1));
        assert_eq!(p.heartbeat(2), Beat::Ping(2));
        assert_eq!(p.heartbeat(2), Beat::Missed);
        p.on_pong(2).unwrap();
        assert_eq!(p.heartbeat(2), Beat::Ping(3));
    }

    #[test]
    fn a_fault_fails_callers_and_peers_at_once_and_is_the_exit_reason() {
        let mut p = running(WorkerState::Ready);
        let (tx, mut caller) = tokio::sync::oneshot::channel();
        p.in_flight.park_caller(1, Some(tx));
        let (tx, mut peer) = tokio::sync::oneshot::channel();
        p.in_flight.insert_peer(2, ReplyTo::Local(tx), true);
        assert!(p.fault(7, ExitReason::HeartbeatTimeout));
        assert!(!p.fault(7, ExitReason::Killed), "one fault per process");
        assert!(matches!(
            caller.try_recv(),
            Ok(Err(CallError::WorkerExited { worker: 7, .. }))
        ));
        assert!(matches!(
            peer.try_recv(),
            Ok(Err(AskError::WorkerDied { worker: 7, .. }))
        ));
        // Reaped later with SIGKILL: the exit reason is the fault, not the signal.
        p.exit = Some(RawExit::Signal(9));
        p.stdout_open = false;
        p.stderr_open = false;
        assert!(p.drained());
        let finished = p.finish(7).expect("finished");
        assert_eq!(finished.reason, ExitReason::HeartbeatTimeout);
        assert_eq!(finished.pid, Some(42));
        assert_eq!(p.pid(), None, "no pid once reaped");
        assert_eq!(p.state, WorkerState::Exited);
        assert!(p.finish(7).is_none(), "finished once");
    }

    #[tokio::test]
    async fn a_fault_kills_the_process_group_once_and_a_stop_of_a_plain_program_terms_it() {
        let (mut p, control) = spawned(WorkerState::Ready).await;
        p.terminate();
        assert_eq!(control.signals(), [Signal::Term]);
        assert!(p.fault(0, ExitReason::ShutdownTimeout));
        assert!(!p.fault(0, ExitReason::Killed));
        assert_eq!(control.signals(), [Signal::Term, Signal::Kill]);
        // Reaped: the exit the fake child reports, and no pid, no signal after that.
        let raw = p.child.as_ref().unwrap().wait().await.expect("exit");
        assert_eq!(raw, RawExit::Signal(9));
        p.exit = Some(raw);
        let finished = p.finish(0).expect("finished");
        assert_eq!(finished.reason, ExitReason::ShutdownTimeout);
        assert!(p.child.is_none(), "the child is let go once reaped");
        p.terminate();
        assert_eq!(control.signals(), [Signal::Term, Signal::Kill]);
    }

    #[tokio::test]
    async fn a_process_that_exits_on_its_own_is_not_signalled() {
        let (mut p, control) = spawned(WorkerState::Ready).await;
        control.exit(RawExit::Code(0));
        let raw = p.child.as_ref().unwrap().wait().await.expect("exit");
        p.exit = Some(raw);
        p.stdout_open = false;
        p.stderr_open = false;
        assert!(p.drained());
        assert_eq!(p.finish(0).unwrap().reason, ExitReason::Exited(0));
        assert!(control.signals().is_empty());
        assert!(control.is_reaped());
    }

    #[test]
    fn an_exit_of_its_own_is_reported_as_such() {
        let mut p = running(WorkerState::Ready);
        p.exit = Some(RawExit::Code(3));
        assert_eq!(p.finish(0).unwrap().reason, ExitReason::Exited(3));
        let mut p = running(WorkerState::Ready);
        p.exit = Some(RawExit::Signal(11));
        assert_eq!(p.finish(0).unwrap().reason, ExitReason::Signaled(11));
    }
}
