//! The proxy actor: one per worker slot, standing in the master for the processes behind it.

use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use actix::dev::OneshotSender;
use actix::prelude::*;

use super::generation::{Held, Proc};
use super::handover::Handover;
use super::inflight::InFlight;
use super::links::Links;
use super::spec::SlotSpec;
use crate::error::ExitReason;
use crate::event::{WorkerEvent, WorkerEventKind, WorkerInfo};
use crate::messaging::router::Router;
use crate::messaging::WorkerStats;
use crate::protocol::Envelope;
use crate::state::{WorkerId, WorkerState};
use crate::worker::WorkerActor;

/// The master's proxy actor for one worker slot; `A` is the worker's [`WorkerActor`] type.
///
/// Send it [`Call`](crate::Call) (a request; the reply is typed `A::Reply`) or [`Tell`](crate::Tell) (one-way). A message
/// for another worker type does not compile.
pub struct Worker<A: WorkerActor> {
    pub(crate) id: WorkerId,
    /// The last generation handed out; each process of the slot gets the next one.
    pub(super) generations: u64,
    /// The process that serves the slot (or the last one, when none runs).
    pub(super) proc: Proc<A::Reply>,
    /// The other process of a rolling hand-over, if one is under way.
    pub(super) handover: Handover<A::Reply>,
    pub(super) spawn: Rc<SlotSpec>,
    pub(super) links: Links<A>,
    /// Where what its worker sends goes.
    pub(super) router: Router,
    pub(super) counters: Counters,
    /// Processes started after the first one by the restart policy.
    pub(super) respawns: u64,
    /// The next process is a start on the operator's word (a scale up), not a restart.
    pub(super) uncounted: bool,
    pub(super) next_id: u64,
    pub(super) ready_waiters: Vec<OneshotSender<Result<(), ExitReason>>>,
    pub(super) exit_waiters: Vec<OneshotSender<ExitReason>>,
    pub(super) last_exit: Option<ExitReason>,
    pub(super) respawn: Option<SpawnHandle>,
    /// Environment of this slot's processes on top of its group's (`add_worker_with_env`).
    pub(super) env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// Credit owed for one-way messages taken in, by the process of this slot that took them
    /// in (its generation), the sending slot and the sending process.
    /// Requests failed because the process they were sent to ended (shared with the
    /// processes' in-flight tables).
    pub(super) abandoned: Rc<std::cell::Cell<u64>>,
    pub(super) owed: std::collections::BTreeMap<(u64, WorkerId, u32), u64>,
    /// The notification sockets of its plain program's processes (see `readiness`).
    pub(super) notify: super::notified::Notified,
    _actor: PhantomData<fn() -> A>,
}

pub(super) use super::metered::{
    Counters, SlotFigures, Tally, ASK_FAILED, ASK_REPLY, CREDIT, DELIVER, NOTIFY, PEER_REQUEST,
    PING, REQUEST, TELL,
};

impl<A: WorkerActor> fmt::Debug for Worker<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("generation", &self.proc.generation)
            .field("state", &self.proc.state)
            .field("pid", &self.proc.pid())
            .field("handover", &self.handover.phase())
            .finish_non_exhaustive()
    }
}

impl<A: WorkerActor> Worker<A> {
    pub(crate) fn new(id: WorkerId, spawn: Rc<SlotSpec>, links: Links<A>) -> Self {
        let router = Router::new(id, Rc::clone(&links.routing));
        let abandoned = Rc::default();
        Self {
            id,
            generations: 0,
            proc: Proc::new(0, &spawn.config).counting(Rc::clone(&abandoned)),
            handover: Handover::Serving,
            spawn,
            links,
            router,
            counters: Counters::default(),
            respawns: 0,
            uncounted: false,
            next_id: 0,
            ready_waiters: Vec::new(),
            exit_waiters: Vec::new(),
            last_exit: None,
            respawn: None,
            env: Vec::new(),
            owed: std::collections::BTreeMap::new(),
            abandoned,
            notify: Default::default(),
            _actor: PhantomData,
        }
    }

    /// The same slot, its processes started with `env` on top of the group's environment.
    pub(crate) fn with_env(mut self, env: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Self {
        self.env = env;
        self
    }

    /// A new process of this slot, not started yet, with its span.
    pub(super) fn new_proc(&self, generation: u64) -> Proc<A::Reply> {
        let span = tracing::info_span!(
            "worker",
            worker = self.id,
            group = %self.spawn.group,
            generation,
            pid = tracing::field::Empty,
        );
        Proc::new(generation, &self.spawn.config)
            .counting(Rc::clone(&self.abandoned))
            .in_span(span)
    }

    /// The span of process `generation`, to enter; `None` once the slot let the process go,
    /// or when no subscriber wants it (then entering would cost time on every poll for nothing).
    pub(super) fn span(&self, generation: u64) -> Option<tracing::Span> {
        let held = match &self.handover {
            _ if self.proc.generation == generation => Some(&self.proc),
            handover => handover.get(generation),
        };
        held.filter(|p| !p.span.is_disabled())
            .map(|p| p.span.clone())
    }

    /// The process of generation `generation`, if the slot still holds it.
    pub(crate) fn proc_mut(&mut self, generation: u64) -> Option<&mut Proc<A::Reply>> {
        if self.proc.generation == generation {
            return Some(&mut self.proc);
        }
        self.handover.proc_mut(generation)
    }

    pub(super) fn plain(&self) -> bool {
        self.spawn.config.plain
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.id,
            pid: self.proc.pid(),
            state: self.proc.state,
            generation: self.proc.generation,
            uptime: self
                .proc
                .started_at
                .filter(|_| self.proc.is_running())
                .map(|t| t.elapsed())
                .unwrap_or_default(),
            restarts: self.respawns,
            groups: self.links.routing.borrow().groups_of(self.id),
        }
    }

    /// The slot's figures now: its counters, and its running process's CPU and memory (read
    /// from `/proc`).
    pub(crate) fn figures(&self) -> SlotFigures {
        let running = self.proc.is_running();
        let pid = self.proc.pid().filter(|_| running);
        let (cpu, rss_bytes) = pid.map(crate::messaging::proc_usage).unwrap_or_default();
        SlotFigures {
            id: self.id,
            group: self.spawn.group.clone(),
            state: self.proc.state,
            pid,
            generation: self.proc.generation,
            started: self.proc.started_wall.filter(|_| running),
            cpu,
            rss_bytes,
            outbox_bytes: self.proc.stdin.len(),
            in_flight: self.proc.in_flight.len(),
            counters: self.counters.clone(),
            abandoned: self.abandoned.get(),
        }
    }

    /// The slot's [`WorkerStats`]: its [`figures`](Self::figures) as the public type says them.
    pub(crate) fn stats(&self) -> WorkerStats {
        let figures = self.figures();
        let by_kind = |tallies: &[Tally]| {
            tallies
                .iter()
                .zip(Envelope::KINDS)
                .filter(|(t, _)| t.frames > 0)
                .map(|(t, k)| (k.to_owned(), t.frames))
                .collect()
        };
        WorkerStats {
            id: figures.id,
            pid: figures.pid,
            sent: by_kind(&figures.counters.sent),
            received: by_kind(&figures.counters.received),
            requests: figures.counters.requests,
            errors: figures.counters.errors + figures.abandoned,
            restarts: self.respawns,
            cpu: figures.cpu,
            rss_bytes: figures.rss_bytes,
        }
    }

    /// Who a process of this slot is, in its log records.
    pub(crate) fn source(&self, generation: u64, pid: u32) -> crate::logger::Source {
        crate::logger::Source {
            worker: Some(self.id),
            pid,
            generation,
            group: self.spawn.group.clone(),
        }
    }

    pub(super) fn emit(&self, generation: u64, pid: Option<u32>, kind: WorkerEventKind) {
        self.links.events.do_send(WorkerEvent {
            worker: self.id,
            generation,
            pid,
            kind,
        });
    }

    /// Where the serving process's callers wait for its replies.
    pub(crate) fn in_flight(&self) -> &InFlight<A::Reply> {
        &self.proc.in_flight
    }

    /// Where one-way senders wait for the serving process's outbox to drain.
    pub(crate) fn held(&self) -> &Held {
        &self.proc.held
    }

    pub(crate) fn state(&self) -> WorkerState {
        self.proc.state
    }

    pub(crate) fn last_exit(&self) -> Option<&ExitReason> {
        self.last_exit.as_ref()
    }

    pub(crate) fn add_exit_waiter(&mut self, tx: OneshotSender<ExitReason>) {
        self.exit_waiters.push(tx);
    }

    pub(crate) fn add_ready_waiter(&mut self, tx: OneshotSender<Result<(), ExitReason>>) {
        self.ready_waiters.push(tx);
    }
}

impl<A: WorkerActor> Actor for Worker<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.spawn.config.mailbox_capacity);
        self.router.attach(ctx.address().recipient());
        self.spawn_process(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_kinds_point_at_their_names() {
        for (index, name) in [
            (REQUEST, "Request"),
            (TELL, "Tell"),
            (PING, "Ping"),
            (ASK_REPLY, "AskReply"),
            (ASK_FAILED, "AskFailed"),
            (DELIVER, "Deliver"),
            (PEER_REQUEST, "PeerRequest"),
            (NOTIFY, "Notify"),
            (CREDIT, "Credit"),
        ] {
            assert_eq!(Envelope::KINDS[index], name);
        }
        let env = Envelope::Deliver {
            from: crate::Peer::Master,
            via: crate::Via::Direct,
            ack: None,
            payload: &[],
        };
        assert_eq!(Envelope::KINDS[env.index()], env.kind());
    }
}
