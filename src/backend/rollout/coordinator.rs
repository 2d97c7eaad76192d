//! One request for a cluster-wide reload: take the lock and run the rollout node by node, or
//! wait for the rollout that holds it (and, once, try again); see the module docs above.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::script::{holder, parse_holder, Acquired, RolloutKeys, Scripts};
use super::wire::{Answer, Message, Reply};
use super::{
    end_event, local_reload, Coordinating, Links, NodeOutcome, RolloutError, RolloutEvent,
    RolloutReport, Timing,
};
use crate::backend::conn::Redis;
use crate::backend::Shared;

/// What a request needs.
pub(super) struct Ctx {
    pub(super) redis: Redis,
    pub(super) keys: RolloutKeys,
    pub(super) scripts: Rc<Scripts>,
    pub(super) name: String,
    pub(super) timing: Timing,
    pub(super) shared: Rc<RefCell<Shared>>,
    pub(super) links: Links,
    pub(super) coordinating: Coordinating,
}

/// Why the lock was lost while the rollout ran, once it was.
type Lost = Rc<RefCell<Option<String>>>;

/// Coordinates a rollout, or joins the running one (then one more); see the module docs.
pub(super) async fn request(ctx: Ctx) -> Result<RolloutReport, RolloutError> {
    let mut first_seen: Option<u64> = None;
    loop {
        ctx.check_joined()?;
        let acquire = ctx
            .scripts
            .acquire(&ctx.redis, &ctx.keys, &ctx.name, ctx.timing.lease);
        let acquired = match tokio::time::timeout(ctx.timing.heartbeat * 2, acquire).await {
            Ok(Ok(acquired)) => acquired,
            Ok(Err(e)) => return Err(RolloutError::Unavailable(e.to_string())),
            Err(_) => {
                return Err(RolloutError::Unavailable(
                    "Redis did not answer in time".into(),
                ))
            }
        };
        let value = match acquired {
            Acquired::Token(token) => return ctx.coordinate(token).await,
            Acquired::Held(value) => value,
        };
        let token = parse_holder(&value).map_or(0, |(t, _)| t);
        match first_seen {
            // A rollout that began after this request: it is this request's.
            Some(first) if token > first => {
                tracing::info!(
                    rollout = token,
                    "another node began the next rollout; waiting for it"
                );
                return ctx.wait_end(token, &value).await;
            }
            _ => {
                tracing::info!(
                    rollout = token,
                    holder = value,
                    "a rollout is running; this request waits for it, then tries once more"
                );
                first_seen.get_or_insert(token);
                // Its outcome is not this request's: the program may have changed since.
                let _ = ctx.wait_end(token, &value).await;
            }
        }
    }
}

impl Ctx {
    fn check_joined(&self) -> Result<(), RolloutError> {
        let shared = self.shared.borrow();
        if !shared.stats.connected {
            return Err(RolloutError::Unavailable("Redis cannot be reached".into()));
        }
        match shared.current() {
            Some(_) => Ok(()),
            None => Err(RolloutError::Unavailable(
                "this node has not joined the cluster".into(),
            )),
        }
    }

    /// Waits until rollout `token` (the lock holding `value`) ends; its report, or why not.
    async fn wait_end(&self, token: u64, value: &str) -> Result<RolloutReport, RolloutError> {
        let poll = (self.timing.heartbeat / 4)
            .clamp(Duration::from_millis(50), Duration::from_millis(250));
        let mut gone = 0;
        let mut failing: Option<Instant> = None;
        // However long the running rollout may take: each node's step, and its lease.
        let nodes = self.shared.borrow().view.others().count() + 1;
        let longest = (self.timing.step_timeout + self.timing.heartbeat)
            .saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX))
            .saturating_add(self.timing.lease);
        let ceiling = after(longest);
        loop {
            if Instant::now() >= ceiling {
                return Err(RolloutError::Unavailable(format!(
                    "the running rollout did not end within {longest:?}"
                )));
            }
            tokio::time::sleep(poll).await;
            let read = tokio::time::timeout(
                self.timing.heartbeat,
                self.scripts.lock_value(&self.redis, &self.keys),
            );
            match read.await {
                Ok(Ok(now)) if now.as_deref() == Some(value) => failing = None,
                Ok(Ok(_)) => {
                    failing = None;
                    // The report is written before the lock is released.
                    if let Ok(Some(bytes)) =
                        self.scripts.report(&self.redis, &self.keys, token).await
                    {
                        if let Ok(report) = serde_json::from_slice::<RolloutReport>(&bytes) {
                            return match report.stopped {
                                None => Ok(report),
                                Some(_) => Err(RolloutError::Stopped(Box::new(report))),
                            };
                        }
                    }
                    gone += 1;
                    if gone >= 2 {
                        let coordinator = parse_holder(value).map_or_else(String::new, |(_, n)| n);
                        return Err(RolloutError::Stopped(Box::new(RolloutReport {
                            rollout: token,
                            stopped: Some(format!(
                                "abandoned: coordinator {coordinator}'s lock expired"
                            )),
                            coordinator,
                            nodes: Vec::new(),
                            elapsed: Duration::ZERO,
                        })));
                    }
                }
                _ => {
                    if failing.get_or_insert_with(Instant::now).elapsed() > self.timing.node_timeout
                    {
                        return Err(RolloutError::Unavailable(
                            "Redis cannot be reached while waiting for the running rollout".into(),
                        ));
                    }
                }
            }
        }
    }

    /// The nodes of the rollout: this one first, then the others by name, with their epochs.
    fn plan(&self) -> Vec<(String, u64)> {
        let shared = self.shared.borrow();
        let me = shared.current().map(|id| (id.name.clone(), id.epoch));
        me.into_iter()
            .chain(
                shared
                    .view
                    .others()
                    .map(|n| (n.id.name.clone(), n.id.epoch)),
            )
            .collect()
    }

    fn in_view(&self, node: &str, epoch: u64) -> bool {
        let shared = self.shared.borrow();
        let found = shared
            .view
            .others()
            .any(|n| n.id.name == node && n.id.epoch == epoch);
        found
    }

    /// Runs rollout `token`, holding the lock.
    async fn coordinate(&self, token: u64) -> Result<RolloutReport, RolloutError> {
        let started = Instant::now();
        let (tx, mut replies) = mpsc::unbounded_channel();
        *self.coordinating.borrow_mut() = Some((token, tx));
        let lost: Lost = Rc::default();
        // Aborted however this ends (a panic included): a lock renewed past its rollout would
        // hold every later reload back.
        let renewer = AbortOnDrop(tokio::task::spawn_local(
            self.renew(token, Rc::clone(&lost)),
        ));
        let nodes = self.plan();
        let mut report = RolloutReport {
            rollout: token,
            coordinator: self.name.clone(),
            nodes: nodes
                .iter()
                .map(|(n, _)| (n.clone(), NodeOutcome::NotReached))
                .collect(),
            elapsed: Duration::ZERO,
            stopped: None,
        };
        tracing::info!(rollout = token, nodes = ?report.nodes.iter().map(|(n, _)| n).collect::<Vec<_>>(), "cluster-wide reload started");
        if !self.record(token, "running", "").await {
            report.stopped = Some("superseded by a newer rollout".into());
        } else {
            let names = nodes.iter().map(|(n, _)| n.clone()).collect();
            self.announce(RolloutEvent::Started {
                rollout: token,
                coordinator: self.name.clone(),
                nodes: names,
            })
            .await;
            self.steps(token, &nodes, &mut replies, &lost, &mut report)
                .await;
        }
        report.elapsed = started.elapsed();
        let status = if report.stopped.is_some() {
            "failed"
        } else {
            "done"
        };
        let json = serde_json::to_string(&report).expect("plain data serializes");
        let fields = [("status", status.to_owned()), ("node", String::new())];
        let _ = self
            .scripts
            .record(&self.redis, &self.keys, token, &fields, Some(json))
            .await;
        self.announce(end_event(&report)).await;
        drop(renewer);
        let _ = self
            .scripts
            .renew(&self.redis, &self.keys, &holder(token, &self.name), None)
            .await;
        self.coordinating.borrow_mut().take();
        match &report.stopped {
            None => {
                tracing::info!(rollout = token, "cluster-wide reload done");
                Ok(report)
            }
            Some(why) => {
                tracing::error!(rollout = token, why, "cluster-wide reload stopped");
                Err(RolloutError::Stopped(Box::new(report)))
            }
        }
    }

    /// Each node in turn; stops at the first failure or when the lock is lost.
    async fn steps(
        &self,
        token: u64,
        nodes: &[(String, u64)],
        replies: &mut mpsc::UnboundedReceiver<Reply>,
        lost: &Lost,
        report: &mut RolloutReport,
    ) {
        for (i, (node, epoch)) in nodes.iter().enumerate() {
            if let Some(why) = lost.borrow().clone() {
                report.stopped = Some(why);
                return;
            }
            let rollout = token;
            let node = node.clone();
            self.announce(RolloutEvent::NodeStarted {
                rollout,
                node: node.clone(),
            })
            .await;
            let outcome = if node == self.name {
                local_reload(Some(&self.links), token).await
            } else {
                self.remote(token, &node, *epoch, replies, lost).await
            };
            report.nodes[i].1 = outcome.clone();
            let event = match outcome {
                NodeOutcome::Reloaded { replaced, .. } => RolloutEvent::NodeDone {
                    rollout,
                    node,
                    replaced,
                },
                NodeOutcome::Skipped { reason } => RolloutEvent::NodeSkipped {
                    rollout,
                    node,
                    reason,
                },
                NodeOutcome::Failed { error } => {
                    report.stopped = Some(format!("node {node} failed: {error}"));
                    RolloutEvent::NodeFailed {
                        rollout,
                        node,
                        error,
                    }
                }
                NodeOutcome::NotReached => {
                    let error = String::from("the step ended without an outcome");
                    report.stopped = Some(format!("node {node} failed: {error}"));
                    RolloutEvent::NodeFailed {
                        rollout,
                        node,
                        error,
                    }
                }
            };
            let progress = match &event {
                RolloutEvent::NodeDone { node, .. } | RolloutEvent::NodeSkipped { node, .. } => {
                    node.clone()
                }
                _ => String::new(),
            };
            self.announce(event).await;
            if report.stopped.is_some() {
                return;
            }
            if !self.record(token, "running", &progress).await {
                report.stopped = Some("superseded by a newer rollout".into());
                return;
            }
        }
    }

    /// One other node's step: the command, its acknowledgement, its answer.
    async fn remote(
        &self,
        token: u64,
        node: &str,
        epoch: u64,
        replies: &mut mpsc::UnboundedReceiver<Reply>,
        lost: &Lost,
    ) -> NodeOutcome {
        if !self.in_view(node, epoch) {
            return NodeOutcome::Skipped {
                reason: "it left the cluster".into(),
            };
        }
        let command = Message::Reload {
            rollout: token,
            coordinator: self.name.clone(),
            node: node.to_owned(),
            epoch,
        };
        if let Err(e) = self
            .redis
            .publish(self.keys.channel(), command.encode())
            .await
        {
            return NodeOutcome::Failed {
                error: format!("could not send the command: {e}"),
            };
        }
        let ack = self.timing.node_timeout + self.timing.heartbeat;
        let mut deadline = after(ack);
        let mut accepted = false;
        loop {
            let wake = deadline.min(Instant::now() + self.timing.heartbeat);
            tokio::select! {
                reply = replies.recv() => match reply {
                    Some(Reply { node: from, answer, .. }) if from == node => match answer {
                        Answer::Accepted => {
                            accepted = true;
                            deadline = after(self.timing.step_timeout);
                        }
                        // A step that ended has an outcome; another node's "not reached" is
                        // a bad answer, not a pass.
                        Answer::Ended { outcome: NodeOutcome::NotReached } => {
                            return NodeOutcome::Failed { error: "it answered without an outcome".into() }
                        }
                        Answer::Ended { outcome } => return outcome,
                        Answer::Refused { reason } => {
                            return NodeOutcome::Failed { error: format!("refused: {reason}") }
                        }
                    },
                    Some(_) => {}
                    None => return NodeOutcome::Failed { error: "the coordinator stopped".into() },
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= deadline {
                        let error = if accepted {
                            format!("no answer within {:?}", self.timing.step_timeout)
                        } else {
                            format!("the command was not acknowledged within {ack:?}")
                        };
                        return NodeOutcome::Failed { error };
                    }
                    if !self.in_view(node, epoch) {
                        return NodeOutcome::Skipped { reason: "it left the cluster during its step".into() };
                    }
                    if let Some(why) = lost.borrow().clone() {
                        return NodeOutcome::Failed { error: why };
                    }
                }
            }
        }
    }

    /// Emits `event` here and publishes it for the other nodes (best effort: a node that
    /// misses an event still sees the rollout's end through its watch).
    async fn announce(&self, event: RolloutEvent) {
        self.links.emit(event.clone());
        let message = Message::Event {
            from: self.name.clone(),
            event,
        };
        if let Err(e) = self
            .redis
            .publish(self.keys.channel(), message.encode())
            .await
        {
            tracing::warn!(error = %e, "could not publish the rollout's progress");
        }
    }

    /// Writes the progress record under `token`; false when another rollout's token is the
    /// fence now. A record that cannot be written (Redis unreachable) is not a stop: the lock's
    /// renewal decides that.
    async fn record(&self, token: u64, status: &str, node: &str) -> bool {
        let fields = [
            ("coordinator", self.name.clone()),
            ("status", status.to_owned()),
            ("node", node.to_owned()),
        ];
        let write = self
            .scripts
            .record(&self.redis, &self.keys, token, &fields, None);
        !matches!(
            tokio::time::timeout(self.timing.heartbeat, write).await,
            Ok(Ok(false))
        )
    }

    /// Renews the lock every third of its lease until aborted; sets `lost` when it cannot.
    fn renew(&self, token: u64, lost: Lost) -> impl std::future::Future<Output = ()> + 'static {
        let (redis, keys, scripts) = (
            self.redis.clone(),
            self.keys.clone(),
            Rc::clone(&self.scripts),
        );
        let value = holder(token, &self.name);
        let Timing {
            lease, heartbeat, ..
        } = self.timing;
        async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                let renew = scripts.renew(&redis, &keys, &value, Some(lease));
                match tokio::time::timeout(heartbeat, renew).await {
                    Ok(Ok(true)) => renewed = Instant::now(),
                    Ok(Ok(false)) => {
                        *lost.borrow_mut() = Some("lost the reload lock (expired or taken)".into());
                        return;
                    }
                    _ if renewed.elapsed() >= lease => {
                        *lost.borrow_mut() =
                            Some("could not renew the reload lock within its lease".into());
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `now + d`, or a day from now when that does not fit in an `Instant` (a huge configured
/// timeout).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
