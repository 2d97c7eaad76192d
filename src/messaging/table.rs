//! How the master routes messages between processes: the table of slots and groups that every
//! proxy shares, and the messages proxies and the supervisor exchange to route them.
//!
//! A message from worker A to worker B goes A's pipe → A's proxy → B's proxy (an actor message,
//! no supervisor in between) → B's pipe. B's answer retraces it: B's proxy holds the request
//! under a correlation id of its own, with where to send the answer ([`ReplyTo`]). The sender
//! is stamped by A's proxy from the pipe the frame came on.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::messaging::{AskError, Peer, Via};
use crate::state::WorkerId;

/// The routing table, shared by the proxies and the supervisor of one cluster (one thread).
#[derive(Debug, Default)]
pub(crate) struct Routing {
    pub(crate) slots: Vec<Recipient<Routed>>,
    groups: BTreeMap<String, BTreeSet<WorkerId>>,
    /// How many groups each worker is in.
    joined: HashMap<WorkerId, usize>,
}

pub(crate) type SharedRouting = Rc<RefCell<Routing>>;

/// Groups one worker may be in at once: what a worker joins costs the master memory.
pub(crate) const MAX_GROUPS_PER_WORKER: usize = 1024;
/// Longest group name, in bytes.
pub(crate) const MAX_GROUP_NAME_BYTES: usize = 1024;

impl Routing {
    /// Worker `worker` joins `group`; refused past [`MAX_GROUPS_PER_WORKER`] groups or for a
    /// name longer than [`MAX_GROUP_NAME_BYTES`].
    pub(crate) fn join(&mut self, group: &str, worker: WorkerId) -> Result<(), AskError> {
        if group.len() > MAX_GROUP_NAME_BYTES {
            return Err(AskError::Invalid(format!(
                "a group name is at most {MAX_GROUP_NAME_BYTES} bytes"
            )));
        }
        if self.groups.get(group).is_some_and(|m| m.contains(&worker)) {
            return Ok(());
        }
        let joined = self.joined.entry(worker).or_default();
        if *joined >= MAX_GROUPS_PER_WORKER {
            return Err(AskError::Invalid(format!(
                "a worker is in at most {MAX_GROUPS_PER_WORKER} groups at once"
            )));
        }
        *joined += 1;
        self.groups
            .entry(group.to_owned())
            .or_default()
            .insert(worker);
        Ok(())
    }

    pub(crate) fn leave(&mut self, group: &str, worker: WorkerId) {
        let Some(members) = self.groups.get_mut(group) else {
            return;
        };
        let was_in = members.remove(&worker);
        if members.is_empty() {
            self.groups.remove(group);
        }
        if let Some(joined) = self.joined.get_mut(&worker).filter(|_| was_in) {
            *joined -= 1;
            if *joined == 0 {
                self.joined.remove(&worker);
            }
        }
    }

    /// A worker's process ended: its memberships end with it.
    pub(crate) fn leave_all(&mut self, worker: WorkerId) {
        self.groups.retain(|_, members| {
            members.remove(&worker);
            !members.is_empty()
        });
        self.joined.remove(&worker);
    }

    pub(crate) fn members(&self, group: &str) -> Vec<WorkerId> {
        self.groups
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn groups(&self) -> BTreeMap<String, Vec<WorkerId>> {
        self.groups
            .iter()
            .map(|(g, m)| (g.clone(), m.iter().copied().collect()))
            .collect()
    }

    pub(crate) fn groups_of(&self, worker: WorkerId) -> Vec<String> {
        self.groups
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
        }
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
    /// One-way; `ack` hears when the worker has it.
    Tell {
        from: Peer,
        via: Via,
        payload: Bytes,
        ack: Option<ReplyTo>,
    },
    /// A request; `reply` hears the answer.
    Ask {
        from: Peer,
        payload: Bytes,
        reply: ReplyTo,
    },
    /// A change to cache keys the worker's process `pid` subscribed to.
    Notify { pid: u32, payload: Bytes },
    /// Worker `worker` took in `count` more one-way messages from the worker's process `pid`
    /// (see [`Envelope::Credit`](crate::protocol::Envelope::Credit)).
    Credit {
        pid: u32,
        worker: WorkerId,
        count: u64,
    },
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
        routing.leave_all(1);
        routing.join("again", 1).unwrap();
        let long = "x".repeat(MAX_GROUP_NAME_BYTES + 1);
        assert!(matches!(routing.join(&long, 3), Err(AskError::Invalid(_))));
        assert_eq!(routing.members("one more"), [2]);
    }
}
