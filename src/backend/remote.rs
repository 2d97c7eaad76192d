//! Messages between workers on different nodes: the task on the master's loop that sends what
//! the routing hands over ([`Outbound`]) to other nodes' inboxes, and hands what arrives in
//! this node's inbox to the local proxies.
//!
//! Transport: Redis pub/sub, one channel per node (`procactor:{<cluster>}:in:<name>`) for
//! requests, their answers and one-way messages to one worker, and one for the whole cluster
//! (`procactor:{<cluster>}:all`) for broadcasts, group publishes and confirmations (one
//! `PUBLISH` whatever the number of nodes; each node delivers to its own workers and skips its
//! own frames); both on one subscription, frames as in `wire.rs`. Delivery is **at most
//! once**, for requests and one-way messages alike: a node that is not subscribed when a
//! frame is published (down, cut off from Redis, resubscribing) never sees it, and Redis
//! keeps nothing. A request always ends for its asker: with its answer, or a typed error as
//! soon as it is known — `NoSuchNode` (no live node of that name in the view),
//! `BackendUnavailable` (Redis unreachable, this node not joined, or the publish failed),
//! `NodeGone` (`PUBLISH` reached no subscriber, the node left while it was pending, or the
//! frame named an old epoch) —, else `Timeout` at its deadline. A frame for an older epoch of
//! this node is refused (`NodeGone`); one for a newer epoch of its name — this boot lost its
//! name while cut off — is dropped, for the name's current holder to answer.
//!
//! Nothing here waits on Redis on the master's loop: each publish is a task of its own that
//! reports back over a channel (`publisher.rs`: on the loop's own connection, frames that
//! wait for a channel's outstanding publish go as one batch); at most [`MAX_PUBLISHING`]
//! bytes are under way at once. While this node's subscription or its publishing connection
//! is lost, requests fail at once (`BackendUnavailable`: their answers could not arrive, or
//! they could not leave). When the subscription is lost or a beat fails, the requests
//! pending end, and the publishing connection counts as lost too (Redis was); an answer waits
//! for a lost one to be made again, up to its asker's deadline.
//!
//! Hops of a request without TLS, each a process woken: the asker's loop writes `PUBLISH`;
//! redis-server; the target's loop reads it (redis-rs's driver task, the subscription's task,
//! this task: one loop) and writes it to the worker's pipe; the worker; and the same back —
//! plus the publisher, woken by its `PUBLISH`'s count. With `rediss://` each publish and each
//! frame read also cross to the node's Redis thread and back (`conn.rs`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::conn::{Inbound, Redis, Subscription};
use super::node::NodeEvent;
use super::pending::Pending;
use super::publisher::Publisher;
use super::script::Keys;
use super::wire::{self, addressed, Addressed, Frame, Kind};
use super::Shared;
use crate::error::AskError;
use crate::messaging::system::{Confirm, ForgetNode, SupervisorAsks};
use crate::messaging::table::Outbound;
use crate::messaging::table::{ReplyTo, Routed, SharedRouting};
use crate::messaging::{Peer, Via};
use crate::state::WorkerId;

/// The longest a request from the master (no timeout of its own) waits for another node.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of frames under way to Redis at once (each is held until Redis answers its
/// publish): past that, a request is refused (`BackendUnavailable`) and a one-way message
/// dropped, so a slow Redis cannot grow the master without bound. A burst of small messages
/// fits (64 MiB is some 100 000 broadcasts of a few hundred bytes).
const MAX_PUBLISHING: usize = 64 << 20;

/// What a publish reports back.
#[derive(Debug)]
struct Published {
    /// The pending request it carried, if any.
    ask: Option<u64>,
    node: String,
    /// The frame's bytes, no longer held.
    size: usize,
    result: redis::RedisResult<i64>,
}

/// The task's state; see the module docs.
pub(crate) struct Remote {
    publisher: Publisher,
    keys: Keys,
    shared: Rc<RefCell<Shared>>,
    routing: SharedRouting,
    asks: SupervisorAsks,
    pending: Pending<ReplyTo>,
    published: (
        mpsc::UnboundedSender<Published>,
        mpsc::UnboundedReceiver<Published>,
    ),
    /// Whether this node's inbox is subscribed now.
    subscribed: bool,
    /// Bytes of the publishes under way (see [`MAX_PUBLISHING`]).
    publishing: usize,
    _subscription: Subscription,
    inbound: mpsc::UnboundedReceiver<Inbound>,
}

impl Remote {
    /// Subscribes to this node's inbox (`name`) and is ready to run.
    pub(crate) fn new(
        redis: Redis,
        keys: Keys,
        name: &str,
        retry: Duration,
        shared: Rc<RefCell<Shared>>,
        routing: SharedRouting,
        asks: SupervisorAsks,
    ) -> Self {
        let (tx, inbound) = mpsc::unbounded_channel();
        let channels = vec![keys.inbox(name), keys.everyone()];
        let subscription = redis.subscribe_here(channels, retry, tx);
        Self {
            publisher: Publisher::new(redis, retry),
            keys,
            shared,
            routing,
            asks,
            pending: Pending::default(),
            published: mpsc::unbounded_channel(),
            subscribed: false,
            publishing: 0,
            _subscription: subscription,
            inbound,
        }
    }

    /// Runs until the routing's link and the membership's events are gone.
    pub(crate) async fn run(
        mut self,
        mut outbound: mpsc::UnboundedReceiver<Outbound>,
        mut events: mpsc::UnboundedReceiver<NodeEvent>,
    ) {
        loop {
            let deadline = self.pending.next_deadline();
            let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                out = outbound.recv() => match out {
                    Some(out) => self.send(out),
                    None => return,
                },
                Some(inbound) = self.inbound.recv() => self.arrived(inbound),
                Some(done) = self.published.1.recv() => self.published(done),
                event = events.recv() => match event {
                    Some(event) => self.membership(&event),
                    None => return,
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    for (reply, error) in self.pending.expired(Instant::now()) {
                        self.failed(reply, error);
                    }
                }
            }
        }
    }

    /// This node, if it has joined and Redis answers: (name, epoch).
    fn me(&self) -> Result<(String, u64), AskError> {
        let shared = self.shared.borrow();
        if !shared.stats.connected {
            return Err(AskError::BackendUnavailable(
                "Redis cannot be reached".into(),
            ));
        }
        let me = shared.current().ok_or_else(|| {
            AskError::BackendUnavailable("this node has not joined the cluster".into())
        })?;
        if !self.subscribed {
            // An answer could not reach this node: fail now rather than at the deadline.
            return Err(AskError::BackendUnavailable(
                "this node's inbox is not subscribed (Redis was lost)".into(),
            ));
        }
        if let Some(why) = self.publisher.down() {
            return Err(AskError::BackendUnavailable(why));
        }
        Ok((me.name.clone(), me.epoch))
    }

    /// The epoch of live node `node`, as last read.
    fn epoch_of(&self, node: &str) -> Result<u64, AskError> {
        let shared = self.shared.borrow();
        let found = shared.view.others().find(|n| n.id.name == node);
        found
            .map(|n| n.id.epoch)
            .ok_or_else(|| AskError::NoSuchNode(node.to_owned()))
    }

    /// Sends what the routing handed over.
    fn send(&mut self, out: Outbound) {
        match out {
            Outbound::Ask {
                node,
                worker,
                from,
                payload,
                timeout,
                reply,
            } => {
                self.shared.borrow_mut().stats.requests += 1;
                let timeout = if timeout.is_zero() {
                    DEFAULT_TIMEOUT
                } else {
                    timeout
                };
                let target = self.me().and_then(|me| Ok((me, self.epoch_of(&node)?)));
                let (me, epoch) = match target {
                    Ok(target) => target,
                    Err(e) => return self.failed(reply, e),
                };
                let id = match self.pending.open(reply, &node, Instant::now(), timeout) {
                    Ok(id) => id,
                    Err((reply, e)) => return self.failed(reply, e),
                };
                let deadline_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
                let kind = Kind::Ask { id, deadline_ms };
                let frame = Frame::new(me, from, epoch, worker, kind, payload.to_vec());
                self.publish(&node, &frame, Some(id));
            }
            Outbound::Tell {
                node,
                worker,
                from,
                payload,
            } => {
                let target = self.me().and_then(|me| Ok((me, self.epoch_of(&node)?)));
                match target {
                    Ok((me, epoch)) => {
                        let frame =
                            Frame::new(me, from, epoch, worker, Kind::Tell, payload.to_vec());
                        self.publish(&node, &frame, None);
                    }
                    Err(e) => {
                        self.dropped();
                        tracing::warn!(node, worker, error = %e, "message to another node dropped")
                    }
                }
            }
            Outbound::Fanout {
                group,
                from,
                payload,
            } => self.publish_to_everyone(from, Kind::Fanout { group }, payload.to_vec()),
            Outbound::Confirm { key, from } => {
                self.publish_to_everyone(from, Kind::Confirm { key }, Vec::new());
            }
        }
    }

    /// Publishes a frame for every other node on the cluster's channel (nothing while this
    /// node has not joined or Redis is unreachable: at most once).
    fn publish_to_everyone(&mut self, from: Option<(WorkerId, u32)>, kind: Kind, payload: Vec<u8>) {
        match self.me() {
            Ok(me) => {
                let frame = Frame::new(me, from, 0, 0, kind, payload);
                self.publish_on(self.keys.everyone(), "every node", &frame, None);
            }
            Err(e) => {
                self.dropped();
                tracing::debug!(error = %e, "message for every node dropped")
            }
        }
    }

    /// Publishes `frame` on `node`'s inbox, on the Redis thread; the outcome comes back as
    /// [`Published`].
    fn publish(&mut self, node: &str, frame: &Frame, ask: Option<u64>) {
        self.publish_on(self.keys.inbox(node), node, frame, ask);
    }

    /// Publishes `frame` on `channel` (for `node`: a name in errors and logs).
    fn publish_on(&mut self, channel: String, node: &str, frame: &Frame, ask: Option<u64>) {
        let bytes = match frame.encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                if ask.is_none() {
                    self.dropped();
                    tracing::warn!(error = %e, "message to another node not sent");
                }
                return self.end(ask, Err(e));
            }
        };
        if self.publishing + bytes.len() > MAX_PUBLISHING {
            let e = AskError::BackendUnavailable(format!(
                "{} MiB of messages to other nodes are already under way",
                MAX_PUBLISHING >> 20
            ));
            if ask.is_none() {
                self.dropped();
                tracing::warn!(node, error = %e, "message to another node dropped");
            }
            return self.end(ask, Err(e));
        }
        let size = bytes.len();
        self.publishing += size;
        self.shared.borrow_mut().stats.frames_sent += 1;
        let (publisher, done) = (self.publisher.clone(), self.published.0.clone());
        let node = node.to_owned();
        tokio::task::spawn_local(async move {
            let result = publisher.publish(channel, bytes).await;
            let _ = done.send(Published {
                ask,
                node,
                size,
                result,
            });
        });
    }

    fn published(&mut self, done: Published) {
        self.publishing -= done.size;
        let error = match done.result {
            Ok(0) if done.ask.is_some() => AskError::NodeGone(done.node.clone()),
            Ok(_) => return,
            Err(e) => AskError::BackendUnavailable(e.to_string()),
        };
        match done.ask {
            Some(_) => self.end(done.ask, Err(error)),
            None => {
                self.dropped();
                tracing::warn!(node = done.node, %error, "message to another node not delivered")
            }
        }
    }

    /// Ends pending request `ask` (if still pending) with `result`.
    fn end(&mut self, ask: Option<u64>, result: Result<Bytes, AskError>) {
        if let Some(reply) = ask.and_then(|id| self.pending.take(id)) {
            match result {
                Ok(answer) => reply.answer(Ok(answer)),
                Err(e) => self.failed(reply, e),
            }
        }
    }

    /// A request to another node ends with `error`, counted.
    fn failed(&self, reply: ReplyTo, error: AskError) {
        self.shared.borrow_mut().stats.requests_failed += 1;
        reply.answer(Err(error));
    }

    /// A message for other nodes that was not delivered, counted.
    fn dropped(&self) {
        self.shared.borrow_mut().stats.frames_dropped += 1;
    }

    /// A node left, or Redis was lost: their requests end now.
    fn membership(&mut self, event: &NodeEvent) {
        let ended = match event {
            NodeEvent::Left { node, .. } => {
                if let Some(supervisor) = self.asks.forget.upgrade() {
                    supervisor.do_send(ForgetNode {
                        epoch: node.id.epoch,
                    });
                }
                let gone = AskError::NodeGone(node.id.to_string());
                self.pending.end_node(&node.id.name, &gone)
            }
            NodeEvent::Disconnected { error } => {
                self.publisher.lost(error);
                let lost = AskError::BackendUnavailable(error.clone());
                self.pending.all(&lost)
            }
            _ => Vec::new(),
        };
        for (reply, error) in ended {
            self.failed(reply, error);
        }
    }

    /// The subscription's news: it is up again, or lost (the requests pending end: their
    /// answers could not arrive).
    fn subscription(&mut self, up: Result<(), String>) {
        match up {
            Ok(()) => {
                self.subscribed = true;
                self.publisher.back();
                tracing::debug!("subscribed to this node's inbox");
            }
            Err(error) => {
                if std::mem::replace(&mut self.subscribed, false) {
                    tracing::warn!(%error, "this node's inbox subscription is lost; resubscribing");
                }
                let error = format!("this node's inbox: {error}");
                self.publisher.lost(&error);
                let lost = AskError::BackendUnavailable(error);
                for (reply, error) in self.pending.all(&lost) {
                    self.failed(reply, error);
                }
            }
        }
    }

    fn arrived(&mut self, inbound: Inbound) {
        let bytes = match inbound {
            Inbound::Subscribed => return self.subscription(Ok(())),
            Inbound::Lost(error) => return self.subscription(Err(error)),
            Inbound::Frame(bytes) => bytes,
        };
        let frame = match Frame::decode(&bytes) {
            Ok(frame) => frame,
            Err(why) => {
                tracing::warn!(%why, "dropped a bad frame from this node's inbox");
                self.shared.borrow_mut().stats.bad_entries += 1;
                return;
            }
        };
        if frame.kind.to_everyone() {
            return self.for_everyone(frame);
        }
        // This boot's epoch, and whether the others still know it (its key has not expired).
        let (mine, current) = {
            let shared = self.shared.borrow();
            (
                shared.me.as_ref().map(|me| me.epoch),
                shared.current().is_some(),
            )
        };
        match addressed(&frame, mine) {
            Addressed::Mine if current => self.shared.borrow_mut().stats.frames_received += 1,
            // For this boot while its epoch is over for the others, or for an older one.
            Addressed::Mine | Addressed::Stale => return self.stale(frame),
            Addressed::NotMine => {
                return tracing::debug!(
                    from = frame.from.node,
                    epoch = frame.to_epoch,
                    "frame for another boot of this node's name dropped"
                )
            }
        }
        let from = Peer::Remote {
            epoch: frame.from.epoch,
            id: frame.from.worker,
            pid: frame.from.pid,
        };
        match frame.kind {
            // Only from the node the request went to.
            Kind::Reply { id, result } => {
                if let Some(reply) = self.pending.take_from(id, &frame.from.node) {
                    match result {
                        Ok(answer) => reply.answer(Ok(Bytes::from(answer))),
                        Err(e) => self.failed(reply, e),
                    }
                }
            }
            Kind::Tell => match self.target(frame.to_worker) {
                Ok(target) => target.do_send(Routed::Tell {
                    from,
                    via: Via::Direct,
                    payload: frame.payload.into(),
                    ack: None,
                    windowed: false,
                }),
                Err(e) => tracing::debug!(error = %e, "message from another node dropped"),
            },
            Kind::Ask { id, deadline_ms } => {
                let to = asker(&frame, deadline_ms);
                let target = match self.target(frame.to_worker) {
                    Ok(target) => target,
                    Err(e) => return self.reply(to, id, Err(e)),
                };
                let (tx, rx) = oneshot::channel();
                target.do_send(Routed::Ask {
                    from,
                    payload: frame.payload.into(),
                    reply: ReplyTo::Local(tx),
                });
                self.reply_later(to, id, rx);
            }
            Kind::Fanout { .. } | Kind::Confirm { .. } => {}
        }
    }

    /// A frame on the cluster's channel: a broadcast or group publish for this node's
    /// workers, or a confirmation to count; this node's own are skipped.
    fn for_everyone(&mut self, frame: Frame) {
        let own = self.shared.borrow().me.as_ref().map(|me| me.epoch);
        if own == Some(frame.from.epoch) {
            return;
        }
        self.shared.borrow_mut().stats.frames_received += 1;
        let from = Peer::Remote {
            epoch: frame.from.epoch,
            id: frame.from.worker,
            pid: frame.from.pid,
        };
        match frame.kind {
            Kind::Fanout { group } => {
                let (targets, via) = {
                    let routing = self.routing.borrow();
                    match group {
                        None => (routing.slots.clone(), Via::Broadcast),
                        Some(group) => {
                            let members = routing.members(&group).into_iter();
                            let targets = members.filter_map(|w| routing.slots.get(w).cloned());
                            (targets.collect(), Via::Group(group))
                        }
                    }
                };
                let payload = Bytes::from(frame.payload);
                for target in targets {
                    target.do_send(Routed::Tell {
                        from,
                        via: via.clone(),
                        payload: payload.clone(),
                        ack: None,
                        windowed: false,
                    });
                }
            }
            Kind::Confirm { key } => {
                if let Some(supervisor) = self.asks.confirm.upgrade() {
                    supervisor.do_send(Confirm { from, key });
                }
            }
            Kind::Ask { .. } | Kind::Tell | Kind::Reply { .. } => {
                tracing::warn!("dropped a frame for one node on the cluster's channel");
                self.shared.borrow_mut().stats.bad_entries += 1;
            }
        }
    }

    /// A frame for another epoch of this node: a request is refused, the rest dropped.
    fn stale(&mut self, frame: Frame) {
        tracing::debug!(
            from = frame.from.node,
            epoch = frame.to_epoch,
            "frame for another epoch of this node refused"
        );
        if let Kind::Ask { id, deadline_ms } = frame.kind {
            let name = self.shared.borrow().me.as_ref().map(|m| m.name.clone());
            let gone = format!("{}#{}", name.unwrap_or_default(), frame.to_epoch);
            let to = asker(&frame, deadline_ms);
            self.reply(to, id, Err(AskError::NodeGone(gone)));
        }
    }

    fn target(&self, worker: WorkerId) -> Result<actix::Recipient<Routed>, AskError> {
        let routing = self.routing.borrow();
        routing
            .slots
            .get(worker)
            .cloned()
            .ok_or(AskError::NoSuchWorker(worker))
    }

    /// Publishes the answer to request `id` of `to` once the local worker gives it (dropped
    /// past the asker's deadline: it has given up).
    fn reply_later(&self, to: Asker, id: u64, rx: oneshot::Receiver<Result<Bytes, AskError>>) {
        let sender = self.sender();
        tokio::task::spawn_local(async move {
            let Ok(answer) = tokio::time::timeout_at(to.2.into(), rx).await else {
                return;
            };
            let result = answer.unwrap_or_else(|_| Err(AskError::Failed("no answer".into())));
            sender.reply(to, id, result).await;
        });
    }

    fn reply(&self, to: Asker, id: u64, result: Result<Bytes, AskError>) {
        let sender = self.sender();
        tokio::task::spawn_local(async move { sender.reply(to, id, result).await });
    }

    fn sender(&self) -> Replier {
        Replier {
            publisher: self.publisher.clone(),
            keys: self.keys.clone(),
            shared: Rc::clone(&self.shared),
        }
    }
}

/// Where an answer goes: the asking node's name and epoch, and until when it waits.
type Asker = (String, u64, Instant);

/// The asker of request `frame`, which waits `deadline_ms` from now.
fn asker(frame: &Frame, deadline_ms: u64) -> Asker {
    let now = Instant::now();
    let until = now.checked_add(Duration::from_millis(deadline_ms));
    let until = until.unwrap_or(now + Duration::from_secs(86_400));
    (frame.from.node.clone(), frame.from.epoch, until)
}

/// What answering another node needs, off the task.
struct Replier {
    publisher: Publisher,
    keys: Keys,
    shared: Rc<RefCell<Shared>>,
}

impl Replier {
    async fn reply(self, (node, epoch, until): Asker, id: u64, result: Result<Bytes, AskError>) {
        let me = self.shared.borrow().me.clone();
        let Some(me) = me else { return };
        let bytes = wire::reply((me.name, me.epoch), epoch, id, result.map(|b| b.to_vec()));
        let inbox = self.keys.inbox(&node);
        if let Err(e) = self.publisher.publish_within(inbox, bytes, until).await {
            tracing::warn!(node, error = %e, "answer to another node not sent");
        }
    }
}
