//! Confirmations (clustr-node's `emitConfirmation` / `onConfirmation`): processes — workers and
//! the master — confirm keys, and a waiter is answered once `n` processes have confirmed one.
//!
//! # Rounds
//! Every waiter counts rounds of its own. A waiter is one process's waits (the master's, or
//! one worker slot's) or one master-side registration (`on_confirmation`), which is answered
//! every time a round completes. A waiter's round of key `k` holds the processes that confirmed
//! `k` after its previous round of `k` ended (for its first round: every confirmation on
//! record); it completes with `n` of them, and the waiter is answered with those `n`, in the
//! order of their confirmations. Its next round of `k` counts from zero: from the confirmations
//! after the last of them. One waiter completing a round consumes nothing of another's: the
//! same confirmations complete a round of every waiter that counts them.
//!
//! Two waits of one process on one key pending together get successive rounds (whichever is
//! complete first takes its round, in the order they were made).
//!
//! # One process confirming twice
//! A process counts once in a round: confirming again while a waiter's round is open does not
//! count again (its place in the order moves to its latest confirmation). Once that round has
//! ended, its next confirmation counts in the next round. So `n` is a number of processes, as
//! clustr-node's callers use it ("both cache workers have warmed up"), not of messages.
//!
//! # Who a process is
//! A worker confirms as its slot: a replacement process (a reload) continues its slot's
//! confirmations and rounds. When a slot's serving process ends, its confirmations no longer
//! count, and its waits and rounds are dropped ([`Confirmations::forget`]). The master confirms
//! as [`Peer::Master`] and is answered as such to a registration; the answers typed as
//! `Vec<WorkerId>` (the waits of `await_confirmations`) list the workers only, so a round the
//! master confirmed in lists `n - 1` ids.
//!
//! # Limits
//! A worker has confirmations on record for at most [`MAX_KEYS_PER_WORKER`] keys at once (one
//! entry per key, however often it confirms), kept until its process ends; a key is at most
//! [`MAX_KEY_BYTES`]. The master's own are not capped: it is the program's code. A
//! registration holds at most [`ROUNDS_BUFFERED`] rounds its reader has not taken; rounds past
//! that are dropped and counted ([`ConfirmationRounds::missed`]). A wait ends with [`AskError::Timeout`] when
//! its deadline passes first; the caller arms that deadline and calls
//! [`Confirmations::expire`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::messaging::{AskError, Peer};
use crate::state::WorkerId;

/// Who waits for a confirmation round: its confirmers, in order, or a timeout.
pub(crate) type Waiter = oneshot::Sender<Result<Vec<Peer>, AskError>>;

/// Keys confirmed by workers and the master, and who waits for how many.
#[derive(Debug, Default)]
pub(crate) struct Confirmations {
    keys: HashMap<String, Key>,
    /// How many keys each worker (of this node or another) has confirmations on record for.
    by_worker: HashMap<Who, usize>,
    /// Pending waits, in the order they were made.
    waiting: BTreeMap<u64, Wait>,
    registrations: Vec<Registration>,
    /// The sequence number of the latest confirmation, of any key.
    seq: u64,
    next: u64,
    /// The cluster has stopped: nothing waits any more.
    closed: bool,
}

/// Keys one worker may have confirmed at once: what it confirms costs the master memory.
pub(crate) const MAX_KEYS_PER_WORKER: usize = 4096;
/// Longest key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Rounds a registration holds for its reader.
pub(crate) const ROUNDS_BUFFERED: usize = 1024;

/// A process as a confirmer or a waiter: the master, a worker slot, or a worker slot of
/// another node (by the node's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Master,
    Worker(WorkerId),
    Remote { epoch: u64, id: Option<WorkerId> },
}

fn who(peer: Peer) -> Who {
    match peer {
        Peer::Master => Who::Master,
        Peer::Worker { id, .. } => Who::Worker(id),
        Peer::Remote { epoch, id, .. } => Who::Remote { epoch, id },
    }
}

/// One key's record.
#[derive(Debug, Default)]
struct Key {
    /// Each process's latest confirmation, by its sequence number.
    confirmed: BTreeMap<u64, Peer>,
    /// The sequence number of each process's latest confirmation.
    latest: HashMap<Who, u64>,
    /// Where each waiting process's next round starts: after this sequence number.
    rounds: HashMap<Who, u64>,
}

impl Key {
    /// The round of `n` confirmations after sequence number `after`, and where it ends.
    fn round(&self, after: u64, n: usize) -> Option<(Vec<Peer>, u64)> {
        let round: Vec<(u64, Peer)> = self
            .confirmed
            .range(after + 1..)
            .take(n)
            .map(|(seq, peer)| (*seq, *peer))
            .collect();
        let end = if n == 0 { after } else { round.last()?.0 };
        (round.len() == n).then(|| (round.into_iter().map(|(_, p)| p).collect(), end))
    }
}

/// One wait for `n` confirmations of `key`.
#[derive(Debug)]
struct Wait {
    key: String,
    n: usize,
    reply: Waiter,
    /// The process that waits: its rounds, and its wait ends with it.
    by: Who,
}

/// A registration: answered with every round of `n` confirmations of `key`.
#[derive(Debug)]
struct Registration {
    key: String,
    n: usize,
    /// Where its next round starts.
    after: u64,
    rounds: mpsc::Sender<Vec<Peer>>,
    missed: Arc<AtomicU64>,
}

/// The rounds of one [`Cluster::on_confirmation`](crate::Cluster::on_confirmation)
/// registration: each is the processes whose confirmations completed it, in order.
///
/// Dropping it ends the registration. It holds up to 1024 rounds not yet taken; rounds past
/// that are dropped and counted ([`missed`](Self::missed)).
#[derive(Debug)]
pub struct ConfirmationRounds {
    rounds: mpsc::Receiver<Vec<Peer>>,
    missed: Arc<AtomicU64>,
}

impl ConfirmationRounds {
    /// The next round: the processes that confirmed in it, in order. `None` once the cluster
    /// has stopped.
    pub async fn next(&mut self) -> Option<Vec<Peer>> {
        self.rounds.recv().await
    }

    /// The next round if one has completed, without waiting.
    pub fn try_next(&mut self) -> Option<Vec<Peer>> {
        self.rounds.try_recv().ok()
    }

    /// How many rounds were dropped because 1024 were waiting to be taken.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Refuses a key longer than [`MAX_KEY_BYTES`].
pub(crate) fn check_key(key: &str) -> Result<(), AskError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(AskError::Invalid(format!(
            "a key is at most {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Confirmations {
    /// `from` confirms `key`; answers the waits and registrations whose rounds it completes.
    /// Refused past [`MAX_KEYS_PER_WORKER`] keys of one worker.
    pub(crate) fn confirm(&mut self, key: &str, from: Peer) -> Result<(), AskError> {
        check_key(key)?;
        let confirmer = who(from);
        let record = self.keys.get(key);
        let known = record.is_some_and(|k| k.latest.contains_key(&confirmer));
        if confirmer != Who::Master && !known {
            let keys = self.by_worker.entry(confirmer).or_default();
            if *keys >= MAX_KEYS_PER_WORKER {
                return Err(AskError::Invalid(format!(
                    "a worker confirms at most {MAX_KEYS_PER_WORKER} keys"
                )));
            }
            *keys += 1;
        }
        self.seq += 1;
        let record = self.keys.entry(key.to_owned()).or_default();
        if let Some(old) = record.latest.insert(confirmer, self.seq) {
            record.confirmed.remove(&old);
        }
        record.confirmed.insert(self.seq, from);
        self.serve(key);
        Ok(())
    }

    /// Answers the waits and registrations of `key` whose rounds are complete.
    fn serve(&mut self, key: &str) {
        let Some(record) = self.keys.get_mut(key) else {
            return;
        };
        let pending: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.key == key)
            .map(|(token, _)| *token)
            .collect();
        for token in pending {
            let wait = &self.waiting[&token];
            let after = record.rounds.get(&wait.by).copied().unwrap_or(0);
            if let Some((round, end)) = record.round(after, wait.n) {
                let wait = self.waiting.remove(&token).expect("pending");
                record.rounds.insert(wait.by, end);
                let _ = wait.reply.send(Ok(round));
            }
        }
        self.registrations.retain_mut(|reg| {
            while reg.key == key {
                let Some((round, end)) = record.round(reg.after, reg.n) else {
                    break;
                };
                reg.after = end;
                match reg.rounds.try_send(round) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        reg.missed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !reg.rounds.is_closed()
        });
    }

    /// `by` waits for a round of `n` confirmations of `key`: answered now if one is complete,
    /// otherwise held, and the returned token is for [`expire`](Self::expire) at the deadline.
    pub(crate) fn wait(&mut self, key: String, n: usize, reply: Waiter, by: Peer) -> Option<u64> {
        if let Err(e) = check_key(&key) {
            let _ = reply.send(Err(e));
            return None;
        }
        if self.closed {
            return None; // dropped: the waiter hears that the cluster stopped
        }
        let token = self.next;
        self.next += 1;
        let by = who(by);
        self.waiting.insert(
            token,
            Wait {
                key: key.clone(),
                n,
                reply,
                by,
            },
        );
        self.serve(&key);
        self.waiting.contains_key(&token).then_some(token)
    }

    /// Registers for every round of `n` confirmations of `key` (`n` at least 1), counted from
    /// the confirmations on record.
    pub(crate) fn register(
        &mut self,
        key: String,
        n: usize,
    ) -> Result<ConfirmationRounds, AskError> {
        check_key(&key)?;
        if n == 0 {
            return Err(AskError::Invalid(
                "a round is at least 1 confirmation".into(),
            ));
        }
        self.registrations.retain(|reg| !reg.rounds.is_closed());
        let (tx, rx) = mpsc::channel(ROUNDS_BUFFERED);
        let missed = Arc::default();
        if self.closed {
            // Its reader hears at once that no round will come.
            return Ok(ConfirmationRounds { rounds: rx, missed });
        }
        self.registrations.push(Registration {
            key: key.clone(),
            n,
            after: 0,
            rounds: tx,
            missed: Arc::clone(&missed),
        });
        self.serve(&key);
        Ok(ConfirmationRounds { rounds: rx, missed })
    }

    /// Worker `id`'s process ended: its confirmations no longer count, and its waits and
    /// rounds are dropped (nothing of a dead worker stays behind).
    pub(crate) fn forget(&mut self, id: WorkerId) {
        self.forget_where(|who| who == Who::Worker(id));
    }

    /// The node of `epoch` left the cluster: its workers' confirmations no longer count.
    pub(crate) fn forget_node(&mut self, epoch: u64) {
        self.forget_where(|who| matches!(who, Who::Remote { epoch: e, .. } if e == epoch));
    }

    fn forget_where(&mut self, gone: impl Fn(Who) -> bool) {
        self.by_worker.retain(|who, _| !gone(*who));
        self.keys.retain(|_, record| {
            let seqs: Vec<u64> = record
                .latest
                .iter()
                .filter(|(who, _)| gone(**who))
                .map(|(_, seq)| *seq)
                .collect();
            for seq in seqs {
                record.confirmed.remove(&seq);
            }
            record.latest.retain(|who, _| !gone(*who));
            record.rounds.retain(|who, _| !gone(*who));
            // With nothing on record, every round starts after what comes next anyway.
            !record.confirmed.is_empty()
        });
        self.waiting.retain(|_, wait| !gone(wait.by));
    }

    /// The cluster has stopped: every wait and registration ends (a registration's reader
    /// gets `None`), and so do those made after.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.waiting.clear();
        self.registrations.clear();
    }

    /// The deadline of wait `token` passed: it fails with a timeout, unless already answered.
    pub(crate) fn expire(&mut self, token: u64, timeout: std::time::Duration) {
        if let Some(wait) = self.waiting.remove(&token) {
            let _ = wait.reply.send(Err(AskError::Timeout(timeout)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: WorkerId) -> Peer {
        Peer::Worker {
            id,
            pid: 1000 + id as u32,
        }
    }

    fn ids(round: &[Peer]) -> Vec<Option<WorkerId>> {
        round
            .iter()
            .map(|p| match who(*p) {
                Who::Worker(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dead_worker_s_confirmations_and_waits_are_forgotten() {
        let mut c = Confirmations::default();
        c.confirm("k", worker(1)).unwrap();
        c.confirm("k", worker(2)).unwrap();
        let (tx, mut rx) = oneshot::channel();
        let token = c.wait("other".into(), 1, tx, worker(2));
        assert!(token.is_some());
        c.forget(2);
        assert_eq!(
            ids(&c.keys["k"].confirmed.values().copied().collect::<Vec<_>>()),
            [Some(1)]
        );
        assert!(c.waiting.is_empty(), "its wait is gone");
        assert!(rx.try_recv().is_err(), "dropped, not answered");
        // A wait for 2 confirmations now needs another worker.
        let (tx, mut rx) = oneshot::channel();
        assert!(c.wait("k".into(), 2, tx, Peer::Master).is_some());
        c.confirm("k", worker(3)).unwrap();
        assert_eq!(ids(&rx.try_recv().unwrap().unwrap()), [Some(1), Some(3)]);
        c.forget(1);
        c.forget(3);
        assert!(c.keys.is_empty(), "no key left behind");
    }

    #[test]
    fn a_worker_confirms_at_most_its_share_of_keys_and_gets_it_back_when_it_ends() {
        let mut c = Confirmations::default();
        for n in 0..MAX_KEYS_PER_WORKER {
            c.confirm(&format!("k{n}"), worker(1)).unwrap();
        }
        c.confirm("k0", worker(1)).unwrap();
        assert!(matches!(
            c.confirm("one more", worker(1)),
            Err(AskError::Invalid(_))
        ));
        c.confirm("one more", worker(2)).unwrap();
        c.confirm("one more", Peer::Master).unwrap();
        c.forget(1);
        c.confirm("one more", worker(1)).unwrap();
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            c.confirm(&long, worker(3)),
            Err(AskError::Invalid(_))
        ));
    }

    fn wait(
        c: &mut Confirmations,
        n: usize,
        by: Peer,
    ) -> oneshot::Receiver<Result<Vec<Peer>, AskError>> {
        let (tx, rx) = oneshot::channel();
        c.wait("k".into(), n, tx, by);
        rx
    }

    #[test]
    fn each_waiter_counts_rounds_of_its_own_and_a_later_round_starts_from_zero() {
        let mut c = Confirmations::default();
        c.confirm("k", worker(1)).unwrap();
        c.confirm("k", worker(2)).unwrap();
        let mut first = wait(&mut c, 2, Peer::Master);
        assert_eq!(ids(&first.try_recv().unwrap().unwrap()), [Some(1), Some(2)]);
        // The master's next round counts from zero; a worker's first round sees the record.
        let mut second = wait(&mut c, 2, Peer::Master);
        let mut other = wait(&mut c, 2, worker(3));
        assert!(second.try_recv().is_err());
        assert_eq!(ids(&other.try_recv().unwrap().unwrap()), [Some(1), Some(2)]);
        c.confirm("k", worker(2)).unwrap();
        c.confirm("k", Peer::Master).unwrap();
        assert_eq!(ids(&second.try_recv().unwrap().unwrap()), [Some(2), None]);
    }

    #[test]
    fn one_process_counts_once_in_a_round_and_again_in_the_next() {
        let mut c = Confirmations::default();
        let mut round = wait(&mut c, 2, Peer::Master);
        c.confirm("k", worker(1)).unwrap();
        c.confirm("k", worker(1)).unwrap();
        assert!(round.try_recv().is_err(), "one process, one count");
        c.confirm("k", worker(2)).unwrap();
        assert_eq!(ids(&round.try_recv().unwrap().unwrap()), [Some(1), Some(2)]);
        let mut next = wait(&mut c, 1, Peer::Master);
        assert!(next.try_recv().is_err());
        c.confirm("k", worker(1)).unwrap();
        assert_eq!(ids(&next.try_recv().unwrap().unwrap()), [Some(1)]);
    }

    #[test]
    fn a_registration_gets_every_round_until_its_reader_goes() {
        let mut c = Confirmations::default();
        c.confirm("k", worker(1)).unwrap();
        let mut rounds = c.register("k".into(), 2).unwrap();
        assert!(c.register("k".into(), 0).is_err());
        c.confirm("k", Peer::Master).unwrap();
        assert_eq!(ids(&rounds.try_next().unwrap()), [Some(1), None]);
        c.confirm("k", worker(1)).unwrap();
        assert!(rounds.try_next().is_none());
        c.confirm("k", worker(2)).unwrap();
        assert_eq!(ids(&rounds.try_next().unwrap()), [Some(1), Some(2)]);
        // A full buffer drops rounds and counts them.
        for n in 0..2 * (ROUNDS_BUFFERED + 1) {
            c.confirm("k", worker(10 + n % 2)).unwrap();
        }
        assert_eq!(rounds.missed(), 1);
        drop(rounds);
        c.confirm("k", worker(1)).unwrap();
        c.confirm("k", worker(2)).unwrap();
        assert!(c.registrations.is_empty(), "gone with its reader");
    }

    #[test]
    fn a_stopped_cluster_ends_every_wait_and_registration() {
        let mut c = Confirmations::default();
        let mut rounds = c.register("k".into(), 1).unwrap();
        let mut pending = wait(&mut c, 1, worker(1));
        c.close();
        assert!(rounds
            .rounds
            .try_recv()
            .is_err_and(|e| e == mpsc::error::TryRecvError::Disconnected));
        assert!(pending
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        let mut late = c.register("k".into(), 1).unwrap();
        assert!(late
            .rounds
            .try_recv()
            .is_err_and(|e| e == mpsc::error::TryRecvError::Disconnected));
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(c.wait("k".into(), 0, tx, Peer::Master), None);
        assert!(rx
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
    }
}
