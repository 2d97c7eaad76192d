//! Rolling restarts: every worker replaced in turn, with no gap in service.
//!
//! With a backend (several hosts) a reload request reloads the whole cluster, one node at a
//! time (`backend/rollout.rs` coordinates, `supervisor/rollout.rs` routes); each node's step
//! is the local reload below.
//!
//! For each serving slot in order, the slot's proxy starts a replacement beside the old process,
//! waits until it is ready, hands the slot over to it and tells the old one to stop gracefully
//! ([`Replace`]). The next slot begins then, after `reload_delay`, while the old process drains
//! (an HTTP worker keeps its idle connections open for a grace period): the drains overlap, so
//! a reload of N workers takes N start-ups and about one drain, not N drains. At every moment
//! each slot has a ready process, so a reload of N workers never has fewer than N serving. The
//! reload ends (its report, [`ReloadEvent::Done`]) once every old process has exited.
//!
//! The first replacement that fails (it crashes, or is not ready within the ready timeout) ends
//! the reload: it is killed, its slot keeps its old process, the slots after it are not touched,
//! and the error is reported once the old processes of the slots replaced before it have exited.
//! Those slots keep their new, ready process: every slot is served by exactly one whole process,
//! old or new, never by none.
//!
//! Reloads are coalesced: a reload asked for while one runs is queued, and every request made
//! meanwhile shares that one queued reload. It starts when the running one ends, so any number
//! of requests during a reload (a burst of SIGHUPs) give at most one more reload, and it
//! replaces the processes the running reload started, with the program as it is on disk then.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::Instrument;

use super::{ClusterSupervisor, Mode, ReloadWaiter};
use crate::backend::{RolloutEvent, RolloutReport};
use crate::error::{ReloadError, ReplaceError};
use crate::proxy::{Replace, Replaced};
use crate::state::WorkerId;

/// Progress of a rolling reload, delivered to the recipients registered with
/// [`ClusterBuilder::on_reload`](crate::ClusterBuilder::on_reload).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum ReloadEvent {
    /// A reload began; it will replace `workers` workers.
    Started {
        /// The slots it will replace.
        workers: usize,
    },
    /// One worker was replaced: `done` of `of`. Its new process serves, and its old one
    /// drains ([`OldExit::Draining`](crate::OldExit::Draining)); the reload's report says how
    /// each old process ended.
    Replaced {
        /// The replacement; [`Replaced::ready_in`] is how long this step took.
        replaced: Replaced,
        /// Workers replaced so far.
        done: usize,
        /// Workers this reload replaces.
        of: usize,
    },
    /// Every worker was replaced and every old process has exited.
    Done {
        /// How many.
        replaced: usize,
        /// How long the reload took.
        elapsed: Duration,
    },
    /// The reload stopped at a replacement that failed; the rest keep their old processes.
    Failed {
        /// Why.
        error: ReloadError,
    },
    /// Progress of a cluster-wide reload (a cluster with a backend), as its coordinator
    /// reports it: seen on every node. This node's own step also emits the local events above.
    Cluster(RolloutEvent),
}

/// What a finished reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Every replacement, in slot order, with how long each took ([`Replaced::ready_in`]) and
    /// how its old process ended ([`Replaced::old_exit`], with its drain time).
    pub replaced: Vec<Replaced>,
    /// Slots that had no serving process to replace (stopped, failed or restarting); those
    /// start the program as it is now when they start again.
    pub skipped: Vec<WorkerId>,
    /// How long the reload took, until the last old process exited (for a cluster-wide
    /// reload: the whole rollout).
    pub elapsed: Duration,
    /// For a cluster-wide reload (a cluster with a backend): what happened on each node. The
    /// fields above are then this node's own step (empty when it was not reloaded).
    pub cluster: Option<RolloutReport>,
}

/// Replaces `slots` one by one; see the module docs.
pub(super) async fn run(
    slots: Vec<(WorkerId, Recipient<Replace>)>,
    delay: Duration,
    cancelled: Rc<Cell<bool>>,
    progress: Vec<Recipient<ReloadEvent>>,
    figures: Rc<ReloadFigures>,
) -> Result<ReloadReport, ReloadError> {
    let mut reload = Progress::start(slots.len(), progress, figures);
    let outcome = reload.replace_all(slots, delay, &cancelled).await;
    if cancelled.get() {
        // The cluster stops: it waits for every process itself.
        return Err(reload.fail(None, &cancelled));
    }
    reload.retired().await;
    match outcome {
        Ok(()) => Ok(reload.done()),
        Err(source) => Err(reload.fail(Some(source), &cancelled)),
    }
}

/// Reloads since the cluster started, and the one under way: the metrics endpoint's figures.
#[derive(Debug, Default)]
pub(crate) struct ReloadFigures {
    pub(crate) started: Cell<u64>,
    pub(crate) succeeded: Cell<u64>,
    /// Stopped at a replacement that failed (the rest kept their old processes).
    pub(crate) rolled_back: Cell<u64>,
    /// Cut short because the cluster stopped.
    pub(crate) stopped: Cell<u64>,
    /// The running reload's workers replaced so far, and how many it replaces.
    pub(crate) current: Cell<Option<(usize, usize)>>,
    /// How long the last finished reload took.
    pub(crate) last_duration: Cell<Option<Duration>>,
}

/// A reload under way: its report so far, and who hears of its progress.
struct Progress {
    started: Instant,
    of: usize,
    report: ReloadReport,
    recipients: Vec<Recipient<ReloadEvent>>,
    figures: Rc<ReloadFigures>,
}

impl Progress {
    fn start(
        of: usize,
        recipients: Vec<Recipient<ReloadEvent>>,
        figures: Rc<ReloadFigures>,
    ) -> Self {
        figures.started.set(figures.started.get() + 1);
        figures.current.set(Some((0, of)));
        let progress = Self {
            started: Instant::now(),
            of,
            report: ReloadReport {
                replaced: Vec::with_capacity(of),
                skipped: Vec::new(),
                elapsed: Duration::ZERO,
                cluster: None,
            },
            recipients,
            figures,
        };
        tracing::info!(workers = of, "rolling reload started");
        progress.tell(ReloadEvent::Started { workers: of });
        progress
    }

    /// Replaces the slots in turn, each once the one before serves; stops at the first failure
    /// or when the cluster stops.
    async fn replace_all(
        &mut self,
        slots: Vec<(WorkerId, Recipient<Replace>)>,
        delay: Duration,
        cancelled: &Cell<bool>,
    ) -> Result<(), ReplaceError> {
        for (step, (worker, replace)) in slots.into_iter().enumerate() {
            if cancelled.get() {
                return Ok(());
            }
            if step > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = replace
                .send(Replace)
                .await
                .unwrap_or(Err(ReplaceError::Gone { worker }));
            match result {
                Ok(replaced) => self.replaced(replaced),
                Err(ReplaceError::NotServing { state, .. }) => {
                    tracing::info!(worker, ?state, "not serving; skipped by the reload");
                    self.report.skipped.push(worker);
                }
                Err(source) => return Err(source),
            }
        }
        Ok(())
    }

    /// Waits until the old process of every slot replaced so far has exited; the report says
    /// how each ended.
    async fn retired(&mut self) {
        for replaced in &mut self.report.replaced {
            replaced.old_exit = replaced.old_exited().await;
            tracing::info!(
                worker = replaced.worker,
                old_pid = replaced.old_pid,
                old_exit = %replaced.old_exit,
                "replaced process gone"
            );
        }
    }

    fn tell(&self, event: ReloadEvent) {
        for recipient in &self.recipients {
            recipient.do_send(event.clone());
        }
    }

    fn replaced(&mut self, replaced: Replaced) {
        tracing::info!(
            worker = replaced.worker,
            old_pid = replaced.old_pid,
            new_pid = replaced.new_pid,
            ready_ms = replaced.ready_in.as_millis() as u64,
            done = self.report.replaced.len() + 1,
            of = self.of,
            "worker replaced"
        );
        self.report.replaced.push(replaced.clone());
        self.figures
            .current
            .set(Some((self.report.replaced.len(), self.of)));
        self.tell(ReloadEvent::Replaced {
            replaced,
            done: self.report.replaced.len(),
            of: self.of,
        });
    }

    /// The reload ends here: the cluster is stopping, or a replacement failed (`source`).
    fn fail(&self, source: Option<ReplaceError>, cancelled: &Cell<bool>) -> ReloadError {
        let replaced = self.report.replaced.len();
        let error = match source {
            Some(source) if !cancelled.get() => ReloadError::Replace {
                replaced,
                of: self.of,
                source,
            },
            _ => ReloadError::Stopping { replaced },
        };
        let ended = match error {
            ReloadError::Stopping { .. } => &self.figures.stopped,
            _ => {
                tracing::error!(%error, "rolling reload failed");
                &self.figures.rolled_back
            }
        };
        ended.set(ended.get() + 1);
        self.figures.current.set(None);
        self.figures.last_duration.set(Some(self.started.elapsed()));
        self.tell(ReloadEvent::Failed {
            error: error.clone(),
        });
        error
    }

    fn done(mut self) -> ReloadReport {
        self.report.elapsed = self.started.elapsed();
        let figures = &self.figures;
        figures.succeeded.set(figures.succeeded.get() + 1);
        figures.current.set(None);
        figures.last_duration.set(Some(self.report.elapsed));
        tracing::info!(
            replaced = self.report.replaced.len(),
            elapsed_ms = self.report.elapsed.as_millis() as u64,
            "rolling reload done"
        );
        self.tell(ReloadEvent::Done {
            replaced: self.report.replaced.len(),
            elapsed: self.report.elapsed,
        });
        self.report
    }
}

impl ClusterSupervisor {
    /// Starts a rolling reload of this node, or queues one behind the reload that is running.
    pub(super) fn request_local_reload(
        &mut self,
        waiter: Option<ReloadWaiter>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping {
            if let Some(tx) = waiter {
                let _ = tx.send(Err(ReloadError::Stopping { replaced: 0 }));
            }
            return;
        }
        if self.reload.running {
            if self.reload.queued.is_some() {
                tracing::info!("a reload is running and one is queued; the request joins it");
            } else {
                tracing::info!("a reload is running; a reload is queued behind it");
            }
            self.reload
                .queued
                .get_or_insert_with(Vec::new)
                .extend(waiter);
            return;
        }
        self.start_reload(waiter.into_iter().collect(), ctx);
    }

    fn start_reload(&mut self, waiters: Vec<ReloadWaiter>, ctx: &mut Context<Self>) {
        self.reload.running = true;
        let slots = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.mode == Mode::Active)
            .map(|(id, slot)| (id, slot.replace.clone()))
            .collect();
        self.reload.count += 1;
        // Every step of this reload is inside its span (each worker's own events are in the span
        // of its process).
        let span = tracing::info_span!("reload", reload = self.reload.count);
        let run = run(
            slots,
            self.reload.delay,
            Rc::clone(&self.reload.cancelled),
            self.reload.subscribers.clone(),
            Rc::clone(&self.reload.figures),
        )
        .instrument(span);
        ctx.spawn(run.into_actor(self).map(move |result, act, ctx| {
            for tx in waiters {
                let _ = tx.send(result.clone());
            }
            act.reload.running = false;
            // A stop takes the queued reload's waiters (and answers them) before this runs.
            if let Some(next) = act.reload.queued.take() {
                act.start_reload(next, ctx);
            }
        }));
    }
}
