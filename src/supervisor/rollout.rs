//! Where a reload request goes: with a backend, to the cluster-wide rollout
//! (`backend/rollout.rs`), whose steps come back here as local reloads ([`ReloadNode`]) and
//! whose progress comes back as events to re-emit; without one, to the local reload.
//!
//! A request with a waiter ([`Cluster::reload`](crate::Cluster::reload), a worker's
//! `reload_cluster`) gets the rollout's outcome, or
//! [`ReloadError::ClusterUnavailable`] at once when Redis cannot be reached. A request without
//! one (SIGHUP, a worker's `request_reload`) reloads this node only in that case, with a
//! warning: the operator's signal is not lost because Redis is.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{ClusterSupervisor, ReloadEvent, ReloadReport, ReloadWaiter};
use crate::backend::{NodeReloaded, ReloadNode, RolloutError, RolloutEvent, RolloutLinks};
use crate::error::ReloadError;

impl ClusterSupervisor {
    /// A reload: of the whole cluster with a backend, of this node without one.
    pub(super) fn request_reload(&mut self, waiter: Option<ReloadWaiter>, ctx: &mut Context<Self>) {
        let Some(node) = &self.node else {
            return self.request_local_reload(waiter, ctx);
        };
        if self.stopping {
            if let Some(tx) = waiter {
                let _ = tx.send(Err(ReloadError::Stopping { replaced: 0 }));
            }
            return;
        }
        tracing::info!("cluster-wide reload requested");
        let rollout = node.rollouts().reload();
        ctx.spawn(rollout.into_actor(self).map(move |result, act, ctx| {
            let answer = match result {
                Ok(report) => {
                    let mut local = match act.reload.last_step.take() {
                        Some((rollout, local)) if rollout == report.rollout => local,
                        other => {
                            act.reload.last_step = other;
                            ReloadReport {
                                replaced: Vec::new(),
                                skipped: Vec::new(),
                                elapsed: report.elapsed,
                                cluster: None,
                            }
                        }
                    };
                    local.elapsed = report.elapsed;
                    local.cluster = Some(report);
                    Ok(local)
                }
                Err(RolloutError::Unavailable(reason)) if waiter.is_none() => {
                    tracing::warn!(
                        reason,
                        "cannot reload the whole cluster; reloading this node only"
                    );
                    return act.request_local_reload(None, ctx);
                }
                Err(RolloutError::Unavailable(reason)) => {
                    tracing::warn!(reason, "cannot reload the whole cluster");
                    Err(ReloadError::ClusterUnavailable { reason })
                }
                Err(RolloutError::Stopped(report)) => Err(ReloadError::Rollout {
                    rollout: report.rollout,
                    reason: report.stopped.clone().unwrap_or_default(),
                    reloaded: report.reloaded().into_iter().map(str::to_owned).collect(),
                }),
            };
            if let Some(tx) = waiter {
                let _ = tx.send(answer);
            }
        }));
    }

    /// Gives the cluster-wide rollout this supervisor's addresses.
    pub(super) fn attach_rollouts(&self, ctx: &Context<Self>) {
        if let Some(node) = &self.node {
            let me = ctx.address().downgrade();
            node.rollouts().attach(RolloutLinks {
                reload: me.clone().recipient(),
                events: me.recipient(),
            });
        }
    }
}

/// A step of a cluster-wide reload: this node's local reload.
impl Handler<ReloadNode> for ClusterSupervisor {
    type Result = ResponseActFuture<Self, Result<NodeReloaded, String>>;

    fn handle(
        &mut self,
        ReloadNode { rollout }: ReloadNode,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.request_local_reload(Some(tx), ctx);
        Box::pin(
            rx.into_actor(self)
                .map(move |answer, act, _ctx| match answer {
                    Ok(Ok(report)) => {
                        let done = NodeReloaded {
                            replaced: report.replaced.len(),
                            skipped: report.skipped.len(),
                            elapsed: report.elapsed,
                        };
                        act.reload.last_step = Some((rollout, report));
                        Ok(done)
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the cluster stopped".into()),
                }),
        )
    }
}

/// A cluster-wide reload's progress: re-emitted to the `on_reload` subscribers.
impl Handler<RolloutEvent> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, event: RolloutEvent, _ctx: &mut Context<Self>) {
        tracing::info!(?event, "cluster-wide reload");
        for subscriber in &self.reload.subscribers {
            subscriber.do_send(ReloadEvent::Cluster(event.clone()));
        }
    }
}
