//! The rolling hand-over of one slot, as a type: the slot is served by one process, or a
//! replacement starts beside it, or the replacement serves while the old process drains.
//!
//! ```text
//!              Replace                 new is Ready                 old has exited
//!   Serving ────────────► Replacing ─────────────────► Draining ─────────────────► Serving
//!      ▲                   │     │                                     (Replace: Ok)
//!      │  new failed       │     │ old died first
//!      └───────────────────┘     ▼
//!    (Replace: Err;          Promoted ── new Ready: Replace Ok ── new exits: Replace Err ──► Serving
//!     old still serves)
//! ```
//!
//! At every moment the slot has exactly one serving process (the proxy's `proc`); this type holds
//! the other one, if any, and who waits for the [`Replace`](crate::Replace) to resolve.

use actix::dev::OneshotSender;

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
    /// How the old process ended (normally `exited with status 0`).
    pub old_exit: ExitReason,
}

/// Who waits for a [`Replace`](crate::Replace), and what it will report.
#[derive(Debug)]
pub(super) struct ReplaceReply {
    tx: OneshotSender<Result<Replaced, ReplaceError>>,
    old_pid: Option<u32>,
    pub(super) new_pid: Option<u32>,
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
        }
    }

    /// Resolves the `Replace`: the old process's exit, or why the replacement failed.
    pub(super) fn resolve(
        self,
        worker: WorkerId,
        generation: u64,
        result: Result<ExitReason, ReplaceError>,
    ) {
        let result = result.map(|old_exit| Replaced {
            worker,
            old_pid: self.old_pid,
            new_pid: self.new_pid,
            generation,
            old_exit,
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
    /// The replacement serves; the old process finishes its work and exits, and the
    /// `Replace` resolves then.
    Draining { old: Proc<R>, reply: ReplaceReply },
    /// The process being replaced died while its replacement started: the replacement serves
    /// already, and the `Replace` resolves once it is ready, or exits.
    Promoted { reply: ReplaceReply },
}

impl<R> Handover<R> {
    /// Whether a `Replace` is under way.
    pub(super) fn busy(&self) -> bool {
        !matches!(self, Handover::Serving)
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
}
