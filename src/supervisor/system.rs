//! System operations that workers (and the master's own [`Cluster`](crate::Cluster) handle) ask
//! of the supervisor: confirmations, cluster info and stats, and the controls a cluster's config
//! may allow workers (kill, restart, reload).

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{ClusterSupervisor, Slot};
use crate::messaging::{AskError, ClusterInfo, Peer};
use crate::proxy::{GetStats, GetSummary, Kill, Replace};
use crate::routing::{encoded, OwnedOp, ReplyTo, SystemCall};
use crate::state::WorkerId;

impl Handler<SystemCall> for ClusterSupervisor {
    type Result = ();

    fn handle(&mut self, call: SystemCall, ctx: &mut Context<Self>) {
        let SystemCall { from, op, reply } = call;
        match op {
            OwnedOp::Confirm(key) => {
                let Peer::Worker { id, .. } = from else {
                    return reply.answer(Err(AskError::Invalid("only workers confirm".into())));
                };
                reply.answer(encoded(&()));
                self.confirmations.confirm(&key, id);
            }
            OwnedOp::AwaitConfirmations { key, n, timeout } => {
                if let Some(token) = self.confirmations.wait(key, n, reply) {
                    ctx.run_later(timeout, move |act, _| {
                        act.confirmations.expire(token, timeout);
                    });
                }
            }
            OwnedOp::Info => self.info(reply),
            OwnedOp::Stats => self.stats(reply),
            OwnedOp::Kill(worker) => self.control_worker(from, worker, true, reply),
            OwnedOp::Restart(worker) => self.control_worker(from, worker, false, reply),
            OwnedOp::Reload => self.reload_for(from, reply, ctx),
        }
    }
}

impl ClusterSupervisor {
    fn permitted(&self, from: Peer, allowed: bool, what: &str) -> Result<(), AskError> {
        match (from, allowed) {
            (Peer::Master, _) | (_, true) => Ok(()),
            (Peer::Worker { .. }, false) => Err(AskError::NotPermitted(format!(
                "{what} from a worker is off in this cluster's config"
            ))),
        }
    }

    /// Every slot's summary and every group's members.
    fn info(&self, reply: ReplyTo) {
        let asks: Vec<_> = self
            .slots
            .iter()
            .map(|s| s.summary.send(GetSummary))
            .collect();
        let groups = self.routing.borrow().groups();
        actix::spawn(async move {
            let mut workers = Vec::with_capacity(asks.len());
            for ask in asks {
                if let Ok(summary) = ask.await {
                    workers.push(summary);
                }
            }
            let info = ClusterInfo {
                master_pid: std::process::id(),
                workers,
                groups,
            };
            reply.answer(encoded(&info));
        });
    }

    /// Every slot's traffic and resource figures.
    fn stats(&self, reply: ReplyTo) {
        let asks: Vec<_> = self.slots.iter().map(|s| s.stats.send(GetStats)).collect();
        actix::spawn(async move {
            let mut stats = Vec::with_capacity(asks.len());
            for ask in asks {
                if let Ok(s) = ask.await {
                    stats.push(s);
                }
            }
            reply.answer(encoded(&stats));
        });
    }

    /// Kills (`kill`) or gracefully replaces worker `worker`, if `from` may.
    fn control_worker(&self, from: Peer, worker: WorkerId, kill: bool, reply: ReplyTo) {
        let what = if kill {
            "killing a worker"
        } else {
            "restarting a worker"
        };
        if let Err(e) = self.permitted(from, self.worker_control, what) {
            return reply.answer(Err(e));
        }
        let Some(slot) = self.slots.get(worker) else {
            return reply.answer(Err(AskError::NoSuchWorker(worker)));
        };
        tracing::info!(worker, ?from, "{what} on request");
        if kill {
            kill_slot(slot, reply);
        } else {
            replace_slot(slot, reply);
        }
    }

    /// A rolling reload on `from`'s request, answered when it ends.
    fn reload_for(&mut self, from: Peer, reply: ReplyTo, ctx: &mut Context<Self>) {
        if let Err(e) = self.permitted(from, self.reload.from_workers, "a reload") {
            return reply.answer(Err(e));
        }
        let (tx, rx) = oneshot::channel();
        self.request_reload(Some(tx), ctx);
        actix::spawn(async move {
            let result = match rx.await {
                Ok(Ok(_)) => encoded(&()),
                Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
                Err(_) => Err(AskError::Failed("the cluster stopped".into())),
            };
            reply.answer(result);
        });
    }
}

fn kill_slot(slot: &Slot, reply: ReplyTo) {
    let done = slot.kill.send(Kill);
    actix::spawn(async move {
        let _ = done.await;
        reply.answer(encoded(&()));
    });
}

fn replace_slot(slot: &Slot, reply: ReplyTo) {
    let done = slot.replace.send(Replace);
    actix::spawn(async move {
        let result = match done.await {
            Ok(Ok(_)) => encoded(&()),
            Ok(Err(e)) => Err(AskError::Failed(e.to_string())),
            Err(e) => Err(AskError::Failed(e.to_string())),
        };
        reply.answer(result);
    });
}
