//! How the master routes messages between processes: the table of slots and groups that every
//! proxy shares, and the messages proxies and the supervisor exchange to route them.
//!
//! A message from worker A to worker B goes A's pipe → A's proxy → B's proxy (an actor message,
//! no supervisor in between) → B's pipe. B's answer retraces it: B's proxy holds the request
//! under a correlation id of its own, with where to send the answer ([`ReplyTo`]). The sender
//! is stamped by A's proxy from the pipe the frame came on.
//!
//! A message for a worker on another node (a cluster that spans hosts) leaves the routing as an
//! [`Outbound`] through the table's [`RemoteLink`], for the backend's task to send (see
//! `backend/remote.rs`). Without a backend there is no link, and such a message fails at once
//! with [`AskError::NoSuchNode`]. A target on this node never goes there: the router keeps it
//! on the local path (no Redis hop).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::messaging::nodes::Directory;
use crate::messaging::{AskError, Peer, Via};
use crate::state::WorkerId;

/// The routing table, shared by the proxies and the supervisor of one cluster (one thread).
///
/// # Groups are topics
/// A topic's members are the live workers of the supervision group of that name (a worker is a
/// member while a process of its slot runs — not while it is down, restarting or stopped),
/// and the workers that [`join`](Self::join)ed it. The supervision membership is set once per
/// slot ([`add_slot`](Self::add_slot)) and follows the slot's process
/// ([`process_started`](Self::process_started), [`process_ended`](Self::process_ended)); it
/// does not count toward [`MAX_GROUPS_PER_WORKER`], and `join` / `leave` of a worker's own
/// supervision group do nothing.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    pub(crate) slots: Vec<Recipient<Routed>>,
    /// Each slot's supervision group and whether a process of it runs, by slot id.
    supervised: Vec<Supervised>,
    /// The slots of each supervision group, in id order.
    supervision: BTreeMap<String, Vec<WorkerId>>,
    /// The topics joined with `join`, and their members.
    topics: BTreeMap<String, BTreeSet<WorkerId>>,
    /// How many topics each worker has joined.
    joined: HashMap<WorkerId, usize>,
    /// Where messages for workers on other nodes go, when the cluster spans hosts.
    pub(crate) remote: Option<RemoteLink>,
}

/// One slot's supervision group.
#[derive(Debug)]
struct Supervised {
    group: String,
    /// A process of the slot runs.
    live: bool,
}

pub(crate) type SharedRouting = Rc<RefCell<Routing>>;

/// Topics one worker may have joined at once (its supervision group not counted): what a
/// worker joins costs the master memory.
pub(crate) const MAX_GROUPS_PER_WORKER: usize = 1024;
/// Longest group name, in bytes.
pub(crate) const MAX_GROUP_NAME_BYTES: usize = 1024;

impl Routing {
    /// Adds the next slot (its id is its index), a worker of supervision group `group`; it is a
    /// member of that topic once its process starts.
    pub(crate) fn add_slot(&mut self, slot: Recipient<Routed>, group: &str) {
        self.slots.push(slot);
        self.supervise(group);
    }

    /// The next slot's supervision group (slots and their groups are added together).
    fn supervise(&mut self, group: &str) {
        let id = self.supervised.len();
        self.supervised.push(Supervised {
            group: group.to_owned(),
            live: false,
        });
        self.supervision
            .entry(group.to_owned())
            .or_default()
            .push(id);
    }

    /// A process of slot `worker` runs: it is a member of its supervision group's topic.
    pub(crate) fn process_started(&mut self, worker: WorkerId) {
        if let Some(s) = self.supervised.get_mut(worker) {
            s.live = true;
        }
    }

    /// Slot `worker`'s serving process ended: the topics it joined are left, and it stays a
    /// member of its supervision group only if `successor` (a replacement) runs in its place.
    pub(crate) fn process_ended(&mut self, worker: WorkerId, successor: bool) {
        self.leave_all(worker);
        if let Some(s) = self.supervised.get_mut(worker) {
            s.live = successor;
        }
    }

    /// Whether `group` is worker `worker`'s supervision group.
    fn supervises(&self, group: &str, worker: WorkerId) -> bool {
        self.supervised
            .get(worker)
            .is_some_and(|s| s.group == group)
    }

    /// Worker `worker` joins `group`; refused past [`MAX_GROUPS_PER_WORKER`] topics or for a
    /// name longer than [`MAX_GROUP_NAME_BYTES`]. Its own supervision group: nothing to do.
    pub(crate) fn join(&mut self, group: &str, worker: WorkerId) -> Result<(), AskError> {
        if group.len() > MAX_GROUP_NAME_BYTES {
            return Err(AskError::Invalid(format!(
                "a group name is at most {MAX_GROUP_NAME_BYTES} bytes"
            )));
        }
        let already = self.topics.get(group).is_some_and(|m| m.contains(&worker));
        if already || self.supervises(group, worker) {
            return Ok(());
        }
        let joined = self.joined.entry(worker).or_default();
        if *joined >= MAX_GROUPS_PER_WORKER {
            return Err(AskError::Invalid(format!(
                "a worker is in at most {MAX_GROUPS_PER_WORKER} groups at once"
            )));
        }
        *joined += 1;
        self.topics
            .entry(group.to_owned())
            .or_default()
            .insert(worker);
        Ok(())
    }

    /// Worker `worker` leaves topic `group` (a group it is not in, or its own supervision
    /// group: nothing to do).
    pub(crate) fn leave(&mut self, group: &str, worker: WorkerId) {
        let Some(members) = self.topics.get_mut(group) else {
            return;
        };
        let was_in = members.remove(&worker);
        if members.is_empty() {
            self.topics.remove(group);
        }
        if let Some(joined) = self.joined.get_mut(&worker).filter(|_| was_in) {
            *joined -= 1;
            if *joined == 0 {
                self.joined.remove(&worker);
            }
        }
    }

    /// Every topic worker `worker` joined is left.
    fn leave_all(&mut self, worker: WorkerId) {
        self.topics.retain(|_, members| {
            members.remove(&worker);
            !members.is_empty()
        });
        self.joined.remove(&worker);
    }

    /// The live workers of supervision group `group`.
    fn live(&self, group: &str) -> impl Iterator<Item = WorkerId> + '_ {
        self.supervision
            .get(group)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&w| self.supervised.get(w).is_some_and(|s| s.live))
    }

    /// The members of topic `group`, in id order: its supervision group's live workers and
    /// those that joined it.
    pub(crate) fn members(&self, group: &str) -> Vec<WorkerId> {
        let mut members: BTreeSet<WorkerId> = self.live(group).collect();
        members.extend(self.topics.get(group).into_iter().flatten());
        members.into_iter().collect()
    }

    /// Every topic and its members: each supervision group (also when none of its workers
    /// runs) and each joined topic.
    pub(crate) fn groups(&self) -> BTreeMap<String, Vec<WorkerId>> {
        self.supervision
            .keys()
            .chain(self.topics.keys())
            .map(|g| (g.clone(), self.members(g)))
            .collect()
    }

    /// The topics worker `worker` joined (its supervision group is not one of them).
    pub(crate) fn groups_of(&self, worker: WorkerId) -> Vec<String> {
        self.topics
            .iter()
            .filter(|(_, m)| m.contains(&worker))
            .map(|(g, _)| g.clone())
            .collect()
    }
}

/// Where the answer to a routed request (or a delivery acknowledgement) goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// To a worker, through its proxy: `AskReply` / `AskFailed` with the worker's id.
    Proxy(ProxyReply),
    /// To a caller in the master.
    Local(oneshot::Sender<Result<Bytes, AskError>>),
    /// One of the acknowledgements a delivery to many waits for, counted.
    Tally(Ticket),
}

impl ReplyTo {
    /// Where the answer to request `id` of process `generation` goes: its proxy, `proxy`.
    pub(crate) fn proxy(proxy: Recipient<AskDone>, generation: u64, id: u64) -> Self {
        ReplyTo::Proxy(ProxyReply {
            proxy: Some(proxy),
            generation,
            id,
        })
    }

    pub(crate) fn answer(self, result: Result<Bytes, AskError>) {
        match self {
            ReplyTo::Proxy(mut reply) => reply.send(result),
            ReplyTo::Local(tx) => {
                let _ = tx.send(result);
            }
            ReplyTo::Tally(mut ticket) => ticket.count(result.is_ok()),
        }
    }
}

/// The acknowledgements of one delivery to many (a broadcast, a publish), counted in one place:
/// the last to come in (or to be dropped unanswered) tells the caller how many workers received
/// it. One allocation for the whole delivery, instead of a channel per receiver.
#[derive(Debug)]
pub(crate) struct Tally {
    left: AtomicUsize,
    received: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<usize>>>,
}

impl Tally {
    /// A tally of `n` acknowledgements, and where their count arrives (`n` must be above 0).
    pub(crate) fn new(n: usize) -> (Arc<Self>, oneshot::Receiver<usize>) {
        let (tx, rx) = oneshot::channel();
        let tally = Tally {
            left: AtomicUsize::new(n),
            received: AtomicUsize::new(0),
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(tally), rx)
    }

    /// One acknowledgement's place in `tally`.
    pub(crate) fn ticket(tally: &Arc<Self>) -> ReplyTo {
        ReplyTo::Tally(Ticket(Some(Arc::clone(tally))))
    }
}

/// One acknowledgement of a [`Tally`]; dropped unanswered, it counts as not received.
#[derive(Debug)]
pub(crate) struct Ticket(Option<Arc<Tally>>);

impl Ticket {
    fn count(&mut self, received: bool) {
        let Some(tally) = self.0.take() else { return };
        if received {
            tally.received.fetch_add(1, Ordering::Relaxed);
        }
        if tally.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = tally.done.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(done) = done {
                let _ = done.send(tally.received.load(Ordering::Acquire));
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.count(false);
    }
}

/// The way back to a worker that asked. Dropped unanswered (its receiver went away with it in
/// a mailbox or a table), it answers with an error itself: a worker's request always gets an
/// answer, and its proxy's count of requests in flight stays true.
#[derive(Debug)]
pub(crate) struct ProxyReply {
    proxy: Option<Recipient<AskDone>>,
    generation: u64,
    id: u64,
}

impl ProxyReply {
    fn send(&mut self, result: Result<Bytes, AskError>) {
        if let Some(proxy) = self.proxy.take() {
            proxy.do_send(AskDone {
                generation: self.generation,
                id: self.id,
                result,
            });
        }
    }
}

impl Drop for ProxyReply {
    fn drop(&mut self) {
        self.send(Err(AskError::Failed(
            "the receiver went away without answering".into(),
        )));
    }
}

/// A message for a worker from another process, handed to the worker's proxy.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum Routed {
    /// One-way; `ack` hears when the worker has it. `windowed`: a worker's unacknowledged
    /// message to one worker by id, counted in the sender's window (`worker/window.rs`): the
    /// receiver pays it back in credit.
    Tell {
        from: Peer,
        via: Via,
        payload: Bytes,
        ack: Option<ReplyTo>,
        windowed: bool,
    },
    /// A request; `reply` hears the answer.
    Ask {
        from: Peer,
        payload: Bytes,
        reply: ReplyTo,
    },
    /// A change to cache keys the worker's process `pid` subscribed to; `must_arrive` for a
    /// near-cache's, queued even past the outbox's limit (their number is bounded by the keys
    /// it tracks).
    Notify {
        pid: u32,
        payload: Bytes,
        must_arrive: bool,
    },
    /// Worker `worker` took in `count` more one-way messages from the worker's process `pid`
    /// (see [`Envelope::Credit`](crate::protocol::Envelope::Credit)).
    Credit {
        pid: u32,
        worker: WorkerId,
        count: u64,
    },
}

/// A message for worker `worker` of node `node`, from this node's worker `from` (its id and
/// pid) or from the master (`None`).
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A request; `reply` hears the answer, or a typed error by `timeout` at the latest.
    Ask {
        node: String,
        worker: WorkerId,
        from: Option<(WorkerId, u32)>,
        payload: Bytes,
        timeout: Duration,
        reply: ReplyTo,
    },
    /// A one-way message (at most once).
    Tell {
        node: String,
        worker: WorkerId,
        from: Option<(WorkerId, u32)>,
        payload: Bytes,
    },
    /// A one-way message to every worker (`group: None`) or every member of `group` on every
    /// other node (at most once each).
    Fanout {
        group: Option<String>,
        from: Option<(WorkerId, u32)>,
        payload: Bytes,
    },
    /// A confirmation of `key` made on this node, for every other node to count.
    Confirm {
        key: String,
        from: Option<(WorkerId, u32)>,
    },
}

/// Where the routing hands messages for other nodes: the backend's task.
#[derive(Debug, Clone)]
pub(crate) struct RemoteLink {
    /// This node's name: a message for it stays local.
    pub(crate) node: String,
    pub(crate) tx: mpsc::UnboundedSender<Outbound>,
    /// The cluster's nodes, as the heartbeat last read them.
    pub(crate) directory: Rc<dyn Directory>,
}

impl Routing {
    /// Where a message for node `node` goes: `None` when it is this node (the local path,
    /// no Redis hop), the backend's link otherwise; [`AskError::NoSuchNode`] without a
    /// backend.
    pub(crate) fn elsewhere(&self, node: &str) -> Result<Option<RemoteLink>, AskError> {
        match &self.remote {
            Some(link) if link.node == node => Ok(None),
            Some(link) => Ok(Some(link.clone())),
            None => Err(AskError::NoSuchNode(node.to_owned())),
        }
    }
}

impl RemoteLink {
    /// Hands `out` to the backend; a request whose task is gone is answered here.
    pub(crate) fn send(&self, out: Outbound) {
        if let Err(mpsc::error::SendError(Outbound::Ask { reply, .. })) = self.tx.send(out) {
            reply.answer(Err(AskError::BackendUnavailable(
                "the cluster's backend has stopped".into(),
            )));
        }
    }
}

/// The answer to a worker's `Ask`, `System` or acknowledged `Send`, for its proxy to pass on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct AskDone {
    pub(crate) generation: u64,
    pub(crate) id: u64,
    pub(crate) result: Result<Bytes, AskError>,
}

/// `value` encoded for an answer to a worker's request.
pub(crate) fn encoded<T: serde::Serialize>(value: &T) -> Result<Bytes, AskError> {
    let mut buf = Vec::new();
    crate::codec::encode_value(&mut buf, value).map_err(|e| AskError::Failed(e.to_string()))?;
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_answers_once_the_last_ticket_is_in_or_dropped() {
        let (tally, mut done) = Tally::new(3);
        let (a, b, c) = (
            Tally::ticket(&tally),
            Tally::ticket(&tally),
            Tally::ticket(&tally),
        );
        a.answer(Ok(Bytes::new()));
        b.answer(Err(AskError::Closed));
        assert!(done.try_recv().is_err(), "one is still out");
        drop(c);
        assert_eq!(done.try_recv().unwrap(), 1, "one of three received it");
    }

    #[test]
    fn a_worker_joins_at_most_its_share_of_groups_with_names_of_bounded_length() {
        let mut routing = Routing::default();
        for n in 0..MAX_GROUPS_PER_WORKER {
            routing.join(&format!("g{n}"), 1).unwrap();
        }
        routing.join("g0", 1).unwrap();
        assert!(matches!(
            routing.join("one more", 1),
            Err(AskError::Invalid(_))
        ));
        routing.join("one more", 2).unwrap();
        routing.leave("g0", 1);
        routing.leave("g0", 1);
        routing.join("one more", 1).unwrap();
        assert!(matches!(
            routing.join("again", 1),
            Err(AskError::Invalid(_))
        ));
        routing.process_ended(1, false);
        routing.join("again", 1).unwrap();
        let long = "x".repeat(MAX_GROUP_NAME_BYTES + 1);
        assert!(matches!(routing.join(&long, 3), Err(AskError::Invalid(_))));
        assert_eq!(routing.members("one more"), [2]);
    }

    #[test]
    fn a_supervision_group_is_a_topic_of_its_live_workers_beside_joined_ones() {
        let mut routing = Routing::default();
        for group in ["web", "cache", "web"] {
            routing.supervise(group);
        }
        assert_eq!(
            routing.members("web"),
            [] as [WorkerId; 0],
            "no process runs yet"
        );
        for w in 0..3 {
            routing.process_started(w);
        }
        assert_eq!(routing.members("web"), [0, 2]);
        assert_eq!(routing.members("cache"), [1]);
        // Joining and leaving one's own supervision group do nothing, and cost nothing.
        routing.join("web", 0).unwrap();
        routing.leave("web", 0);
        assert_eq!(routing.members("web"), [0, 2]);
        assert!(routing.joined.is_empty());
        // Another supervision group's topic is joined like any other.
        routing.join("cache", 0).unwrap();
        assert_eq!(routing.members("cache"), [0, 1]);
        assert_eq!(routing.groups_of(0), ["cache"]);
        // A process ends: its joins go; it is a member again once its successor runs.
        routing.process_ended(0, false);
        assert_eq!(routing.members("web"), [2]);
        assert_eq!(routing.members("cache"), [1]);
        routing.process_started(0);
        assert_eq!(routing.members("web"), [0, 2]);
        // A replacement that takes over keeps the slot a member.
        routing.process_ended(2, true);
        assert_eq!(routing.members("web"), [0, 2]);
        routing.process_ended(1, false);
        let groups = routing.groups();
        assert_eq!(groups["web"], [0, 2]);
        assert_eq!(
            groups["cache"],
            [] as [WorkerId; 0],
            "listed while none runs"
        );
    }
}
