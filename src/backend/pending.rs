//! Requests this node sent to workers on other nodes and awaits answers to: each under a
//! correlation id of this node, with its deadline and the node it went to, so that it ends
//! with its answer, at its deadline ([`AskError::Timeout`]), when its node leaves
//! ([`AskError::NodeGone`]) or when Redis is lost ([`AskError::BackendUnavailable`]) — never
//! in silence. Pure: the time is the caller's.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::error::AskError;

/// The largest number of requests in flight to other nodes: past it a request is refused at
/// once (the others are not answering fast enough; memory is bounded).
pub(crate) const MAX_PENDING: usize = 65_536;

/// One request in flight.
#[derive(Debug)]
struct Entry<T> {
    waiter: T,
    node: String,
    deadline: Instant,
    timeout: Duration,
}

/// The requests in flight, by id and by deadline.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    next: u64,
    by_id: HashMap<u64, Entry<T>>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            next: 0,
            by_id: HashMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<T> Pending<T> {
    /// Registers a request to `node` that ends at `now + timeout`: its id, or the waiter
    /// back with why not.
    pub(crate) fn open(
        &mut self,
        waiter: T,
        node: &str,
        now: Instant,
        timeout: Duration,
    ) -> Result<u64, (T, AskError)> {
        if self.by_id.len() >= MAX_PENDING {
            let why = format!("{MAX_PENDING} requests to other nodes are in flight already");
            return Err((waiter, AskError::BackendUnavailable(why)));
        }
        let id = self.next;
        self.next += 1;
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        self.by_deadline.insert((deadline, id));
        let node = node.to_owned();
        self.by_id.insert(
            id,
            Entry {
                waiter,
                node,
                deadline,
                timeout,
            },
        );
        Ok(id)
    }

    /// Request `id`'s waiter, if it is pending and went to `node`.
    pub(crate) fn take_from(&mut self, id: u64, node: &str) -> Option<T> {
        if self.by_id.get(&id)?.node != node {
            return None;
        }
        self.take(id)
    }

    /// The waiter of request `id`, which is over (answered, or not sent after all); `None`
    /// when it already ended (timed out).
    pub(crate) fn take(&mut self, id: u64) -> Option<T> {
        let entry = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(entry.deadline, id));
        Some(entry.waiter)
    }

    /// The requests whose deadline has passed, each with its [`AskError::Timeout`].
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(T, AskError)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(entry) = self.by_id.remove(&id) {
                out.push((entry.waiter, AskError::Timeout(entry.timeout)));
            }
        }
        out
    }

    /// When the next request times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Every request to `node` (which left), each with `error`.
    pub(crate) fn end_node(&mut self, node: &str, error: &AskError) -> Vec<(T, AskError)> {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.node == node)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.take(id).map(|w| (w, error.clone())))
            .collect()
    }

    /// Every request, each with `error` (Redis was lost: their answers may be too).
    pub(crate) fn all(&mut self, error: &AskError) -> Vec<(T, AskError)> {
        self.by_deadline.clear();
        self.by_id
            .drain()
            .map(|(_, e)| (e.waiter, error.clone()))
            .collect()
    }

    /// Requests in flight.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_with_its_answer_or_at_its_deadline() {
        let mut p = Pending::default();
        let t0 = Instant::now();
        let a = p.open("a", "n1", t0, Duration::from_millis(100)).unwrap();
        let b = p.open("b", "n1", t0, Duration::from_millis(50)).unwrap();
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(p.take(a), Some("a"));
        assert_eq!(p.take(a), None, "once");
        assert!(p.expired(t0 + Duration::from_millis(49)).is_empty());
        let expired = p.expired(t0 + Duration::from_millis(50));
        assert_eq!(
            expired,
            vec![("b", AskError::Timeout(Duration::from_millis(50)))]
        );
        assert_eq!(p.take(b), None, "timed out already");
        assert_eq!((p.len(), p.next_deadline()), (0, None));
    }

    #[test]
    fn a_node_that_leaves_or_a_lost_redis_ends_its_requests_at_once() {
        let mut p = Pending::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        p.open(1, "n1", t0, s).unwrap();
        p.open(2, "n2", t0, s).unwrap();
        p.open(3, "n1", t0, s).unwrap();
        let gone = AskError::NodeGone("n1".into());
        let mut ended: Vec<_> = p
            .end_node("n1", &gone)
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        ended.sort();
        assert_eq!(ended, [1, 3]);
        let lost = AskError::BackendUnavailable("down".into());
        assert_eq!(p.all(&lost), vec![(2, lost.clone())]);
        assert!(p.expired(t0 + s * 2).is_empty());
    }

    #[test]
    fn past_the_limit_a_request_is_refused() {
        let mut p = Pending::default();
        let t0 = Instant::now();
        for i in 0..MAX_PENDING {
            p.open(i, "n", t0, Duration::from_secs(1)).unwrap();
        }
        let (back, e) = p.open(7, "n", t0, Duration::from_secs(1)).unwrap_err();
        assert_eq!(back, 7);
        assert!(matches!(e, AskError::BackendUnavailable(_)));
    }
}
