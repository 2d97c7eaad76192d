//! The rollout's task on every node: it listens on the reload channel, runs this node's step
//! when a coordinator asks (after judging the command), hands the coordinators' events to the
//! supervisor, forwards answers to the rollout this node coordinates, starts the requests of
//! this node, and reports a rollout whose coordinator vanished.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::script::{holder, parse_holder, RolloutKeys, Scripts};
use super::wire::{judge, Answer, Message, Reply, Verdict};
use super::{
    coordinator, end_event, local_reload, Coordinating, Links, Request, RolloutError, RolloutEvent,
    RolloutReport, Timing,
};
use crate::backend::conn::{Inbound, Redis, Subscription};
use crate::backend::Shared;

/// A rollout of another node, seen started and not yet seen ended.
#[derive(Debug)]
struct Watch {
    rollout: u64,
    coordinator: String,
    /// Checks in a row that found its lock gone.
    missing: u32,
}

/// The task's state; see the module docs.
pub(crate) struct Agent {
    redis: Redis,
    keys: RolloutKeys,
    scripts: Rc<Scripts>,
    name: String,
    timing: Timing,
    shared: Rc<RefCell<Shared>>,
    links: Option<Links>,
    /// The highest rollout token seen: commands below it are refused (fencing).
    highest: u64,
    /// The step this node runs now.
    running: Rc<Cell<Option<u64>>>,
    coordinating: Coordinating,
    watching: Option<Watch>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    _subscription: Subscription,
}

impl Agent {
    /// Subscribes to the cluster's reload channel; ready to run.
    pub(crate) fn new(
        redis: Redis,
        cluster: &str,
        name: &str,
        timing: Timing,
        shared: Rc<RefCell<Shared>>,
    ) -> Self {
        let keys = RolloutKeys::new(cluster);
        let (tx, inbound) = mpsc::unbounded_channel();
        let subscription = redis.subscribe(keys.channel(), timing.heartbeat, tx);
        Self {
            redis,
            keys,
            scripts: Rc::new(Scripts::new()),
            name: name.to_owned(),
            timing,
            shared,
            links: None,
            highest: 0,
            running: Rc::default(),
            coordinating: Rc::default(),
            watching: None,
            inbound,
            _subscription: subscription,
        }
    }

    /// Runs until the supervisor's handle is gone.
    pub(crate) async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Attach(links)) => self.links = Some(links),
                    Some(Request::Reload(tx)) => self.request(tx),
                    None => return,
                },
                Some(inbound) = self.inbound.recv() => self.arrived(inbound),
                _ = tick.tick() => self.watch().await,
            }
        }
    }

    /// Starts a request of this node: it coordinates, or joins the rollout that runs.
    fn request(&self, tx: oneshot::Sender<Result<RolloutReport, RolloutError>>) {
        let Some(links) = self.links.clone() else {
            let _ = tx.send(Err(RolloutError::Unavailable(
                "the cluster is still starting".into(),
            )));
            return;
        };
        let ctx = coordinator::Ctx {
            redis: self.redis.clone(),
            keys: self.keys.clone(),
            scripts: Rc::clone(&self.scripts),
            name: self.name.clone(),
            timing: self.timing,
            shared: Rc::clone(&self.shared),
            links,
            coordinating: Rc::clone(&self.coordinating),
        };
        tokio::task::spawn_local(async move {
            let _ = tx.send(coordinator::request(ctx).await);
        });
    }

    fn arrived(&mut self, inbound: Inbound) {
        let bytes = match inbound {
            Inbound::Subscribed => {
                tracing::debug!(node = self.name, "subscribed to the reload channel");
                return;
            }
            Inbound::Lost(error) => {
                tracing::warn!(node = self.name, %error, "the reload channel's subscription is lost; retrying");
                return;
            }
            Inbound::Frame(bytes) => bytes,
        };
        match Message::decode(&bytes) {
            Ok(Message::Reload {
                rollout,
                coordinator,
                node,
                epoch,
            }) => self.command(rollout, coordinator, &node, epoch),
            Ok(Message::Reply { reply }) => {
                if let Some((token, tx)) = &*self.coordinating.borrow() {
                    if *token == reply.rollout {
                        let _ = tx.send(reply);
                    }
                }
            }
            Ok(Message::Event { from, event }) => self.event(&from, event),
            Err(why) => {
                tracing::warn!(
                    node = self.name,
                    why,
                    "dropped a bad message on the reload channel"
                );
                self.shared.borrow_mut().stats.bad_entries += 1;
            }
        }
    }

    /// A command: judged, then refused or run (after checking the lock holds its token).
    fn command(&mut self, rollout: u64, coordinator: String, node: &str, epoch: u64) {
        let my_epoch = self.shared.borrow().current().map(|id| id.epoch);
        let verdict = judge(
            (rollout, node, epoch),
            (&self.name, my_epoch),
            self.highest,
            self.running.get(),
        );
        if verdict == Verdict::Take {
            // Only a command this node takes raises the bar: one addressed to another node
            // (or garbage) does not lock this node out of later rollouts.
            self.highest = self.highest.max(rollout);
        }
        let step = Step {
            redis: self.redis.clone(),
            scripts: Rc::clone(&self.scripts),
            keys: self.keys.clone(),
            node: self.name.clone(),
            rollout,
            heartbeat: self.timing.heartbeat,
        };
        match verdict {
            Verdict::NotMine | Verdict::Repeat => {}
            Verdict::Refuse(reason) => {
                tracing::warn!(rollout, coordinator, reason, "refused a reload command");
                tokio::task::spawn_local(
                    async move { step.answer(Answer::Refused { reason }).await },
                );
            }
            Verdict::Take => {
                self.running.set(Some(rollout));
                let running = Rc::clone(&self.running);
                let links = self.links.clone();
                tokio::task::spawn_local(async move {
                    step.run(&coordinator, links.as_ref()).await;
                    if running.get() == Some(rollout) {
                        running.set(None);
                    }
                });
            }
        }
    }

    /// Another node's progress: re-emitted here; a rollout seen starting is watched.
    fn event(&mut self, from: &str, event: RolloutEvent) {
        if from == self.name {
            // The coordinator emits its own events itself.
            return;
        }
        match &event {
            RolloutEvent::Started {
                rollout,
                coordinator,
                ..
            } => {
                self.watching = Some(Watch {
                    rollout: *rollout,
                    coordinator: coordinator.clone(),
                    missing: 0,
                });
            }
            RolloutEvent::Done { rollout, .. } | RolloutEvent::Failed { rollout, .. }
                if self
                    .watching
                    .as_ref()
                    .is_some_and(|w| w.rollout == *rollout) =>
            {
                self.watching = None;
            }
            _ => {}
        }
        if let Some(links) = &self.links {
            links.emit(event);
        }
    }

    /// Every heartbeat, while another node's rollout is watched: once its lock is found gone
    /// twice in a row with no end seen, its end is read from its report, or it is reported
    /// abandoned.
    async fn watch(&mut self) {
        let Some(watch) = &mut self.watching else {
            return;
        };
        let expected = holder(watch.rollout, &watch.coordinator);
        let read = tokio::time::timeout(
            self.timing.heartbeat,
            self.scripts.lock_value(&self.redis, &self.keys),
        );
        match read.await {
            Ok(Ok(value)) if value.as_deref() == Some(expected.as_str()) => watch.missing = 0,
            Ok(Ok(value)) => {
                // A newer rollout holding the lock ends this one's watch as well.
                let newer = value
                    .as_deref()
                    .and_then(parse_holder)
                    .is_some_and(|(t, _)| t > watch.rollout);
                watch.missing += 1;
                if watch.missing < 2 && !newer {
                    return;
                }
                let rollout = watch.rollout;
                let coordinator = watch.coordinator.clone();
                self.watching = None;
                let end = match self.scripts.report(&self.redis, &self.keys, rollout).await {
                    Ok(Some(bytes)) => serde_json::from_slice::<RolloutReport>(&bytes)
                        .ok()
                        .map(|r| end_event(&r)),
                    _ => None,
                };
                let event = end.unwrap_or_else(|| RolloutEvent::Failed {
                    rollout,
                    error: format!("abandoned: coordinator {coordinator}'s lock expired"),
                });
                tracing::warn!(
                    rollout,
                    coordinator,
                    ?event,
                    "a rollout's end was not seen; its lock is gone"
                );
                if let Some(links) = &self.links {
                    links.emit(event);
                }
            }
            // Redis unreachable: the watch goes on.
            _ => {}
        }
    }
}

/// This node's step of a rollout.
struct Step {
    redis: Redis,
    scripts: Rc<Scripts>,
    keys: RolloutKeys,
    node: String,
    rollout: u64,
    heartbeat: Duration,
}

impl Step {
    /// Checks the lock holds the command's token (a stale coordinator's command is refused),
    /// then reloads this node and answers.
    async fn run(&self, coordinator: &str, links: Option<&Links>) {
        let expected = holder(self.rollout, coordinator);
        let read = tokio::time::timeout(
            self.heartbeat,
            self.scripts.lock_value(&self.redis, &self.keys),
        );
        let reason = match read.await {
            Ok(Ok(Some(value))) if value == expected => None,
            Ok(Ok(value)) => Some(format!(
                "rollout {} does not hold the reload lock (held: {value:?})",
                self.rollout
            )),
            Ok(Err(e)) => Some(format!("cannot read the reload lock: {e}")),
            Err(_) => Some("Redis did not answer in time".into()),
        };
        if let Some(reason) = reason {
            tracing::warn!(
                rollout = self.rollout,
                coordinator,
                reason,
                "refused a reload command"
            );
            return self.answer(Answer::Refused { reason }).await;
        }
        tracing::info!(
            rollout = self.rollout,
            coordinator,
            "reloading this node as a step of a cluster-wide reload"
        );
        self.answer(Answer::Accepted).await;
        let outcome = local_reload(links, self.rollout).await;
        self.answer(Answer::Ended { outcome }).await;
    }

    async fn answer(&self, answer: Answer) {
        let reply = Reply {
            rollout: self.rollout,
            node: self.node.clone(),
            answer,
        };
        let bytes = Message::Reply { reply }.encode();
        if let Err(e) = self.redis.publish(self.keys.channel(), bytes).await {
            tracing::warn!(rollout = self.rollout, error = %e, "could not answer the coordinator");
        }
    }
}
