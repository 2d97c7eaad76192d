//! Locks across processes: exclusive, first come first served, with a lease and a bounded wait.
//!
//! A plain table with no clock and no timers of its own: every method takes `now`, and the
//! table names its next deadline ([`LockTable::next_deadline`], a lease running out or a wait
//! giving up) for the cache's actor to call [`LockTable::expire`] then. A caller that has to
//! wait leaves a [`Reply`], answered when the lock is granted or the wait runs out.
//!
//! A holder keeps its lock until it unlocks it, its lease runs out, or its process ends
//! ([`LockTable::process_gone`]); the next in line gets it at once. A grant whose caller has
//! gone meanwhile (a master caller that stopped waiting) still holds the lock until its lease
//! runs out: the table cannot tell.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use bytes::Bytes;

use crate::cache::counters::LockCounters;
use crate::cache::ops::{CacheAnswer, CacheError, LockStats};
use crate::error::AskError;
use crate::messaging::table::ReplyTo;
use crate::messaging::Peer;

/// Where the answer to an operation goes when it cannot be given at once.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A worker, through its proxy: the answer is encoded for the pipe.
    Worker(ReplyTo),
    /// A caller in the master: the answer as it is.
    Master(oneshot::Sender<Result<CacheAnswer, CacheError>>),
}

impl Reply {
    pub(crate) fn answer(self, answer: Result<CacheAnswer, CacheError>) {
        match self {
            Reply::Worker(reply) => reply.answer(encode_answer(&answer)),
            Reply::Master(tx) => {
                let _ = tx.send(answer);
            }
        }
    }
}

/// A `Lock` operation, which may have to wait in line; see
/// [`Served::NeedsReply`](crate::cache::core::Served::NeedsReply).
#[derive(Debug)]
pub(crate) struct LockRequest {
    pub(crate) who: Peer,
    pub(crate) name: String,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
}

#[derive(Debug)]
struct Waiter {
    who: Peer,
    ticket: u64,
    lease: Duration,
    reply: Reply,
    /// Its slot in [`LockTable::deadlines`]; `None`: waits for good.
    gives_up: Option<Instant>,
    /// When it asked.
    asked: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    who: Peer,
    token: u64,
    /// Its slot in [`LockTable::deadlines`]; `None`: a lease too long to run out.
    lease_ends: Option<Instant>,
}

#[derive(Debug, Default)]
struct Lock {
    holder: Option<Holder>,
    queue: VecDeque<Waiter>,
}

/// Every lock that is held or waited for; a lock nobody holds or waits for has no entry.
#[derive(Debug)]
pub(crate) struct LockTable {
    locks: HashMap<String, Lock>,
    /// `(deadline, ticket)` → lock name: a holder's lease or a waiter's wait. A ticket is first
    /// a waiter's, then (as the token) its holder's, so it has one deadline at a time.
    deadlines: BTreeMap<(Instant, u64), String>,
    next_ticket: u64,
    counters: LockCounters,
}

impl Default for LockTable {
    /// Tickets (and so tokens) start at the microseconds since the Unix epoch: a master that
    /// restarts hands out tokens above every token of its previous run, so they serve as
    /// fencing tokens (as long as the clock does not go back).
    fn default() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            locks: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_ticket: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2),
            counters: LockCounters::default(),
        }
    }
}

impl LockTable {
    /// Takes the lock for `request.who` now if it is free, else puts the caller in line; the
    /// answer goes to `reply` either way.
    pub(crate) fn lock(&mut self, request: LockRequest, reply: Reply, now: Instant) {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let LockRequest {
            who,
            name,
            lease,
            wait,
        } = request;
        let gives_up = now.checked_add(wait);
        if let Some(at) = gives_up {
            self.deadlines.insert((at, ticket), name.clone());
        }
        let lock = self.locks.entry(name.clone()).or_default();
        lock.queue.push_back(Waiter {
            who,
            ticket,
            lease,
            reply,
            gives_up,
            asked: now,
        });
        if lock.holder.is_none() {
            // Free, so nobody else is in line: granted at once.
            self.grant(&name, now, false);
        }
    }

    /// Releases the lock held with `token` by `who`: only its holder's process may, whatever
    /// token another one sends.
    pub(crate) fn unlock(
        &mut self,
        name: &str,
        token: u64,
        who: Peer,
        now: Instant,
    ) -> Result<CacheAnswer, CacheError> {
        if self
            .holder(name)
            .is_some_and(|h| h.token == token && h.who == who)
        {
            self.release(name, now);
            Ok(CacheAnswer::Done)
        } else {
            Err(CacheError::NotHeld(name.to_owned()))
        }
    }

    /// `who`'s process ended: it leaves every line, and its locks go to the next in line.
    pub(crate) fn process_gone(&mut self, who: Peer, now: Instant) {
        let mut held = Vec::new();
        for (name, lock) in &mut self.locks {
            lock.queue.retain(|w| {
                if w.who != who {
                    return true;
                }
                if let Some(at) = w.gives_up {
                    self.deadlines.remove(&(at, w.ticket));
                }
                self.counters.waiter_gone();
                false
            });
            if lock.holder.is_some_and(|h| h.who == who) {
                held.push(name.clone());
            }
        }
        for name in held {
            tracing::info!(lock = %name, peer = ?who, "holder's process ended; lock released");
            self.counters.freed_by_exit();
            self.release(&name, now);
        }
        self.locks
            .retain(|_, lock| lock.holder.is_some() || !lock.queue.is_empty());
    }

    /// Ends the leases and the waits whose deadline has come.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, ticket), name) = entry.remove_entry();
            let Some(lock) = self.locks.get_mut(&name) else {
                continue;
            };
            if lock.holder.is_some_and(|h| h.token == ticket) {
                tracing::warn!(lock = %name, "lock lease ran out; released");
                lock.holder = None;
                self.counters.lease_expired();
                self.grant(&name, now, true);
            } else if let Some(pos) = lock.queue.iter().position(|w| w.ticket == ticket) {
                let waiter = lock.queue.remove(pos).expect("position is in range");
                self.counters.timed_out();
                waiter.reply.answer(Err(CacheError::LockTimeout(name)));
            }
        }
    }

    /// When [`expire`](Self::expire) has something to do next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Locks held now.
    pub(crate) fn held(&self) -> usize {
        self.locks.values().filter(|l| l.holder.is_some()).count()
    }

    /// Callers in line now.
    pub(crate) fn waiting(&self) -> usize {
        self.locks.values().map(|l| l.queue.len()).sum()
    }

    /// What the table has counted since it was made.
    pub(crate) fn counters(&self) -> &LockCounters {
        &self.counters
    }

    /// Its counters, for the locks kept in Redis (`cache/remote.rs`).
    pub(crate) fn counters_mut(&mut self) -> &mut LockCounters {
        &mut self.counters
    }

    /// Its figures since it was made.
    pub(crate) fn stats(&self) -> LockStats {
        self.counters.report()
    }

    fn holder(&self, name: &str) -> Option<Holder> {
        self.locks.get(name).and_then(|l| l.holder)
    }

    fn release(&mut self, name: &str, now: Instant) {
        if let Some(lock) = self.locks.get_mut(name) {
            if let Some(Holder {
                token,
                lease_ends: Some(at),
                ..
            }) = lock.holder.take()
            {
                self.deadlines.remove(&(at, token));
            }
        }
        self.grant(name, now, true);
    }

    /// Gives a free lock to the first in line, or forgets it when nobody waits; `queued`: the
    /// first in line asked while it was held.
    fn grant(&mut self, name: &str, now: Instant, queued: bool) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        debug_assert!(lock.holder.is_none());
        let Some(waiter) = lock.queue.pop_front() else {
            self.locks.remove(name);
            return;
        };
        if let Some(at) = waiter.gives_up {
            self.deadlines.remove(&(at, waiter.ticket));
        }
        let lease_ends = now.checked_add(waiter.lease);
        if let Some(at) = lease_ends {
            self.deadlines.insert((at, waiter.ticket), name.to_owned());
        }
        lock.holder = Some(Holder {
            who: waiter.who,
            token: waiter.ticket,
            lease_ends,
        });
        let waited = now.saturating_duration_since(waiter.asked);
        self.counters.granted(waited, queued);
        waiter.reply.answer(Ok(CacheAnswer::Locked(waiter.ticket)));
    }
}

/// An answer as a worker receives it: postcard bytes.
pub(crate) fn encode_answer(answer: &Result<CacheAnswer, CacheError>) -> Result<Bytes, AskError> {
    // Room for the usual answer (a small value, a flag, a count) in one allocation.
    let mut buf = Vec::with_capacity(64);
    crate::codec::encode_value(&mut buf, answer).map_err(|e| AskError::Failed(e.to_string()))?;
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<CacheAnswer, CacheError>>;

    fn worker(id: usize) -> Peer {
        Peer::Worker {
            id,
            pid: 1000 + id as u32,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn lock(table: &mut LockTable, who: Peer, lease: u64, wait: u64, now: Instant) -> Answer {
        let (tx, rx) = oneshot::channel();
        let request = LockRequest {
            who,
            name: "L".into(),
            lease: secs(lease),
            wait: secs(wait),
        };
        table.lock(request, Reply::Master(tx), now);
        rx
    }

    fn token(rx: &mut Answer) -> u64 {
        match rx.try_recv() {
            Ok(Ok(CacheAnswer::Locked(token))) => token,
            other => panic!("expected the lock, got {other:?}"),
        }
    }

    #[test]
    fn a_free_lock_is_granted_and_the_next_waits_in_line() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let mut first = lock(&mut table, worker(0), 60, 10, t0);
        let first = token(&mut first);
        let mut second = lock(&mut table, worker(1), 60, 10, t0);
        assert!(second.try_recv().is_err(), "waits");
        assert_eq!((table.held(), table.waiting()), (1, 1));
        assert_eq!(table.next_deadline(), Some(t0 + secs(10)), "the wait");
        assert_eq!(
            table.unlock("L", first, worker(0), t0),
            Ok(CacheAnswer::Done)
        );
        let second = token(&mut second);
        assert_eq!(table.next_deadline(), Some(t0 + secs(60)), "its lease");
        assert!(
            table.unlock("L", first, worker(0), t0).is_err(),
            "not held any more"
        );
        table.unlock("L", second, worker(1), t0).unwrap();
        assert_eq!((table.held(), table.waiting()), (0, 0));
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn a_wait_that_runs_out_is_answered_with_a_timeout() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let _holder = lock(&mut table, worker(0), 60, 10, t0);
        let mut waiter = lock(&mut table, worker(1), 60, 2, t0);
        table.expire(t0 + secs(1));
        assert!(waiter.try_recv().is_err());
        table.expire(t0 + secs(2));
        assert_eq!(
            waiter.try_recv().unwrap(),
            Err(CacheError::LockTimeout("L".into()))
        );
        assert_eq!(table.waiting(), 0);
    }

    #[test]
    fn only_the_holder_s_process_releases_a_lock_whatever_token_another_sends() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let mut held = lock(&mut table, worker(0), 60, 0, t0);
        let held = token(&mut held);
        let mut waiter = lock(&mut table, worker(1), 60, 30, t0);
        // The waiter, or any other process, sends the holder's token: refused, still held.
        for who in [worker(1), worker(2), Peer::Master] {
            assert!(table.unlock("L", held, who, t0).is_err());
        }
        assert!(waiter.try_recv().is_err(), "the waiter still waits");
        assert_eq!(
            table.unlock("L", held, worker(0), t0),
            Ok(CacheAnswer::Done)
        );
        token(&mut waiter);
    }

    #[test]
    fn tokens_of_a_new_table_exceed_those_of_an_earlier_one() {
        let t0 = Instant::now();
        let mut before = LockTable::default();
        let mut rx = lock(&mut before, worker(0), 60, 0, t0);
        let old = token(&mut rx);
        // Until the wall clock has moved on (a microsecond is enough), as it has for a restart.
        let started = std::time::SystemTime::now();
        while std::time::SystemTime::now()
            .duration_since(started)
            .map_or(true, |d| d < Duration::from_micros(2))
        {
            std::hint::spin_loop();
        }
        // A master restarted later: its first token is above the last of the earlier run.
        let mut after = LockTable::default();
        let mut rx = lock(&mut after, worker(0), 60, 0, t0);
        assert!(token(&mut rx) > old);
    }

    #[test]
    fn a_lease_that_runs_out_passes_the_lock_on() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let mut holder = lock(&mut table, worker(0), 5, 0, t0);
        let holder = token(&mut holder);
        let mut next = lock(&mut table, worker(1), 5, 30, t0);
        table.expire(t0 + secs(5));
        let next = token(&mut next);
        assert!(table.unlock("L", holder, worker(0), t0 + secs(5)).is_err());
        assert_eq!(table.next_deadline(), Some(t0 + secs(10)));
        table.unlock("L", next, worker(1), t0 + secs(6)).unwrap();
    }

    #[test]
    fn a_process_that_ends_leaves_the_line_and_frees_its_locks() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let _holder = lock(&mut table, worker(0), 60, 0, t0);
        let _gone_waiter = lock(&mut table, worker(2), 60, 30, t0);
        let mut next = lock(&mut table, worker(1), 60, 30, t0);
        table.process_gone(worker(2), t0);
        assert_eq!(table.waiting(), 1);
        table.process_gone(worker(0), t0);
        token(&mut next);
        assert_eq!((table.held(), table.waiting()), (1, 0));
        assert_eq!(table.next_deadline(), Some(t0 + secs(60)), "only its lease");
    }

    #[test]
    fn a_lease_too_long_to_represent_never_runs_out() {
        let (t0, mut table) = (Instant::now(), LockTable::default());
        let (tx, mut rx) = oneshot::channel();
        let request = LockRequest {
            who: worker(0),
            name: "L".into(),
            lease: Duration::MAX,
            wait: Duration::MAX,
        };
        table.lock(request, Reply::Master(tx), t0);
        token(&mut rx);
        assert_eq!(table.next_deadline(), None);
    }
}
