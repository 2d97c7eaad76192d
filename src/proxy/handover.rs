//! The rolling hand-over of one slot, as a type: the slot is served by one process, or a
//! replacement starts beside it, or the replacement serves while the old process drains.
//!
//! ```text
//!              Replace                 new is Ready                 old has exited
//!   Serving ────────────► Replacing ─────────────────► Draining ─────────────────► Serving
//!      ▲                   │     │     (Replace: Ok,              (Replaced::old_exited
//!      │  new failed       │     │      old still draining)        resolves)
//!      └───────────────────┘     │ old died first
//!    (Replace: Err;              ▼
//!     old still serves)      Promoted ── new Ready: Replace Ok ── new exits: Replace Err ──► Serving
//! ```
//!
//! At every moment the slot has exactly one serving process (the proxy's `proc`); this type holds
//! the other one, if any, and who waits for the [`Replace`](crate::Replace) to resolve.
//!
//! The `Replace` answers at the hand-over, not when the old process has exited: a rolling reload
//! goes on to the next slot while this one's old process drains (an HTTP worker keeps its idle
//! connections open for a grace period), so the drains of a reload overlap instead of adding up.
//! Who needs the old process gone awaits [`Replaced::old_exited`]. A `Replace` that arrives while
//! the previous old process still drains waits for its exit, then begins.

use std::fmt;
use std::time::{Duration, Instant};

use actix::dev::OneshotSender;
use tokio::sync::watch;

use super::generation::Proc;
use crate::error::{ExitReason, ReplaceError};
use crate::state::WorkerId;

/// A slot's process replaced by [`Replace`](crate::Replace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The slot.
    pub worker: WorkerId,
    /// The process that was replaced.
    pub old_pid: Option<u32>,
    /// The process that serves the slot now.
    pub new_pid: Option<u32>,
    /// The new process's generation.
    pub generation: u64,
    /// How long the replacement took: from the `Replace` until the new process served the slot
    /// (its start-up and `started` hook).
    pub ready_in: Duration,
    /// How the old process ended: [`OldExit::Draining`] in the answer to `Replace` while it
    /// drains; the report of a rolling reload has it exited (normally `exited with status 0`).
    pub old_exit: OldExit,
    retirement: Retirement,
}

impl Replaced {
    /// Waits until the old process has exited and returns how it ended (at once when it has).
    /// [`OldExit::Draining`] only when the slot's proxy stopped before the old process exited.
    pub async fn old_exited(&self) -> OldExit {
        if self.old_exit.has_exited() {
            return self.old_exit.clone();
        }
        let Some(rx) = &self.retirement.0 else {
            return self.old_exit.clone();
        };
        let mut rx = rx.clone();
        let exit = rx.wait_for(OldExit::has_exited).await.map(|e| e.clone());
        exit.unwrap_or_else(|_| rx.borrow().clone())
    }
}

/// How the old process of a [`Replaced`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldExit {
    /// It was told to stop and finishes its work beside the new process.
    Draining,
    /// It exited.
    Exited {
        /// How.
        reason: ExitReason,
        /// How long after the hand-over (zero when it had exited before).
        drained_in: Duration,
    },
}

impl OldExit {
    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        matches!(self, OldExit::Exited { .. })
    }

    /// True for a clean exit (status 0, after `Shutdown` or SIGTERM); false while it drains.
    pub fn is_normal(&self) -> bool {
        self.reason().is_some_and(ExitReason::is_normal)
    }

    /// How it ended, once it has.
    pub fn reason(&self) -> Option<&ExitReason> {
        match self {
            OldExit::Exited { reason, .. } => Some(reason),
            OldExit::Draining => None,
        }
    }
}

impl fmt::Display for OldExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OldExit::Draining => f.write_str("draining"),
            OldExit::Exited { reason, drained_in } => {
                write!(f, "{reason} after draining {} ms", drained_in.as_millis())
            }
        }
    }
}

/// Where a [`Replaced`] learns of its old process's exit. Not part of its value: two
/// replacements that say the same are equal, whichever handle they hold.
#[derive(Clone, Default)]
struct Retirement(Option<watch::Receiver<OldExit>>);

impl PartialEq for Retirement {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Retirement {}

impl fmt::Debug for Retirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Retirement")
    }
}

/// The proxy's side of a draining old process: it tells the [`Replaced`] handles its exit.
#[derive(Debug)]
pub(super) struct Retire {
    tx: watch::Sender<OldExit>,
    handed_over: Instant,
}

impl Retire {
    /// The old process has exited.
    pub(super) fn exited(self, reason: ExitReason) {
        let drained_in = self.handed_over.elapsed();
        self.tx.send_replace(OldExit::Exited { reason, drained_in });
    }

    /// Resolves once the old process has exited (or its proxy let it go).
    pub(super) fn wait(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(OldExit::has_exited).await;
        }
    }
}

/// Who waits for a [`Replace`](crate::Replace), and what it will report.
#[derive(Debug)]
pub(super) struct ReplaceReply {
    tx: OneshotSender<Result<Replaced, ReplaceError>>,
    old_pid: Option<u32>,
    pub(super) new_pid: Option<u32>,
    started: Instant,
}

impl ReplaceReply {
    pub(super) fn new(
        tx: OneshotSender<Result<Replaced, ReplaceError>>,
        old_pid: Option<u32>,
    ) -> Self {
        Self {
            tx,
            old_pid,
            new_pid: None,
            started: Instant::now(),
        }
    }

    fn replaced(&self, worker: WorkerId, generation: u64, old_exit: OldExit) -> Replaced {
        Replaced {
            worker,
            old_pid: self.old_pid,
            new_pid: self.new_pid,
            generation,
            ready_in: self.started.elapsed(),
            old_exit,
            retirement: Retirement::default(),
        }
    }

    /// The new process serves and the old one is being stopped: the `Replace` resolves now,
    /// and the returned [`Retire`] tells its [`Replaced`] when the old process has exited.
    pub(super) fn hand_over(self, worker: WorkerId, generation: u64) -> Retire {
        let (tx, rx) = watch::channel(OldExit::Draining);
        let mut replaced = self.replaced(worker, generation, OldExit::Draining);
        replaced.retirement = Retirement(Some(rx));
        let _ = self.tx.send(Ok(replaced));
        Retire {
            tx,
            handed_over: Instant::now(),
        }
    }

    /// Resolves the `Replace`: the old process had exited already (how), or why the
    /// replacement failed.
    pub(super) fn resolve(
        self,
        worker: WorkerId,
        generation: u64,
        result: Result<ExitReason, ReplaceError>,
    ) {
        let result = result.map(|reason| {
            let old_exit = OldExit::Exited {
                reason,
                drained_in: Duration::ZERO,
            };
            self.replaced(worker, generation, old_exit)
        });
        let _ = self.tx.send(result);
    }
}

/// Where a slot is in a rolling hand-over; see the module docs.
#[derive(Default)]
pub(super) enum Handover<R> {
    /// One process serves; no `Replace` under way.
    #[default]
    Serving,
    /// A replacement is starting beside the serving process.
    Replacing { new: Proc<R>, reply: ReplaceReply },
    /// The replacement serves (the `Replace` has resolved); the old process finishes its work
    /// and exits, and `retire` tells the [`Replaced`] then.
    Draining { old: Proc<R>, retire: Retire },
    /// The process being replaced died while its replacement started: the replacement serves
    /// already, and the `Replace` resolves once it is ready, or exits.
    Promoted { reply: ReplaceReply },
}

impl<R> Handover<R> {
    /// Whether a `Replace` is under way (it has not resolved yet).
    pub(super) fn busy(&self) -> bool {
        matches!(self, Handover::Replacing { .. } | Handover::Promoted { .. })
    }

    /// The old process still draining after a `Replace` resolved, if there is one.
    pub(super) fn retiring(&self) -> Option<&Retire> {
        match self {
            Handover::Draining { retire, .. } => Some(retire),
            _ => None,
        }
    }

    /// The process this hand-over holds besides the serving one, if it is `generation`.
    pub(super) fn proc_mut(&mut self, generation: u64) -> Option<&mut Proc<R>> {
        match self {
            Handover::Replacing { new: p, .. } | Handover::Draining { old: p, .. } => {
                Some(p).filter(|p| p.generation == generation)
            }
            Handover::Serving | Handover::Promoted { .. } => None,
        }
    }

    /// The process this hand-over holds besides the serving one, if it is `generation`.
    pub(super) fn get(&self, generation: u64) -> Option<&Proc<R>> {
        match self {
            Handover::Replacing { new: p, .. } | Handover::Draining { old: p, .. } => {
                Some(p).filter(|p| p.generation == generation)
            }
            Handover::Serving | Handover::Promoted { .. } => None,
        }
    }

    /// The generation of the replacement being started, if one is.
    pub(super) fn incoming(&self) -> Option<u64> {
        match self {
            Handover::Replacing { new, .. } => Some(new.generation),
            _ => None,
        }
    }

    /// A short name of the phase, for `Debug`.
    pub(super) fn phase(&self) -> &'static str {
        match self {
            Handover::Serving => "serving",
            Handover::Replacing { .. } => "replacing",
            Handover::Draining { .. } => "draining",
            Handover::Promoted { .. } => "promoted",
        }
    }

    /// Takes the phase out, leaving `Serving`.
    pub(super) fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// Takes out the `Replace` of a promoted replacement, leaving `Serving`; any other phase
    /// (an old process draining, for one) stays as it is.
    pub(super) fn take_promoted(&mut self) -> Option<ReplaceReply> {
        match self.take() {
            Handover::Promoted { reply } => Some(reply),
            other => {
                *self = other;
                None
            }
        }
    }
}
