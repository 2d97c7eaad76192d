//! Confirmations (clustr-node's `confirm` / `onConfirmation`): workers confirm keys, and the
//! master or a worker waits until `n` workers have confirmed one.
//!
//! A wait is answered once, with the workers that confirmed in the order they did, or with
//! [`AskError::Timeout`] when its deadline passes first; the caller arms that deadline and calls
//! [`Confirmations::expire`].

use std::collections::HashMap;

use crate::messaging::AskError;
use crate::state::WorkerId;
use tokio::sync::oneshot;

/// Who waits for a confirmation: the workers that confirmed, in order, or a timeout.
pub(crate) type Waiter = oneshot::Sender<Result<Vec<WorkerId>, AskError>>;

/// Keys confirmed by workers, and who waits for how many.
#[derive(Debug, Default)]
pub(crate) struct Confirmations {
    confirmed: HashMap<String, Vec<WorkerId>>,
    /// How many keys each worker has confirmed.
    by_worker: HashMap<WorkerId, usize>,
    waiting: HashMap<u64, Wait>,
    next: u64,
}

/// Keys one worker may have confirmed at once: what it confirms costs the master memory.
pub(crate) const MAX_KEYS_PER_WORKER: usize = 4096;
/// Longest key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// One wait for `n` confirmations of `key`.
#[derive(Debug)]
struct Wait {
    key: String,
    n: usize,
    reply: Waiter,
    /// The worker that waits, if a worker does: its wait ends with it.
    by: Option<WorkerId>,
}

impl Confirmations {
    /// Worker `id` confirms `key` (again: counted once); answers the waits it completes.
    /// Refused past [`MAX_KEYS_PER_WORKER`] keys of one worker.
    pub(crate) fn confirm(&mut self, key: &str, id: WorkerId) -> Result<(), AskError> {
        if self.confirmed.get(key).is_some_and(|c| c.contains(&id)) {
            return Ok(());
        }
        let keys = self.by_worker.entry(id).or_default();
        if *keys >= MAX_KEYS_PER_WORKER {
            return Err(AskError::Invalid(format!(
                "a worker confirms at most {MAX_KEYS_PER_WORKER} keys"
            )));
        }
        *keys += 1;
        self.confirmed.entry(key.to_owned()).or_default().push(id);
        let confirmed = &self.confirmed[key];
        let done: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.key == key && confirmed.len() >= w.n)
            .map(|(token, _)| *token)
            .collect();
        for token in done {
            if let Some(wait) = self.waiting.remove(&token) {
                let _ = wait.reply.send(Ok(confirmed.clone()));
            }
        }
        Ok(())
    }

    /// Waits for `n` confirmations of `key`: answered now if they are in, otherwise held, and
    /// the returned token is for [`expire`](Self::expire) at the deadline.
    pub(crate) fn wait(
        &mut self,
        key: String,
        n: usize,
        reply: Waiter,
        by: Option<WorkerId>,
    ) -> Option<u64> {
        if let Some(confirmed) = self.confirmed.get(&key).filter(|c| c.len() >= n) {
            let _ = reply.send(Ok(confirmed.clone()));
            return None;
        }
        let token = self.next;
        self.next += 1;
        self.waiting.insert(token, Wait { key, n, reply, by });
        Some(token)
    }

    /// Worker `id`'s process ended: its confirmations no longer count, and what it waited for
    /// is dropped (nothing of a dead worker stays behind).
    pub(crate) fn forget(&mut self, id: WorkerId) {
        self.by_worker.remove(&id);
        self.confirmed.retain(|_, confirmed| {
            confirmed.retain(|&w| w != id);
            !confirmed.is_empty()
        });
        self.waiting.retain(|_, wait| wait.by != Some(id));
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

    #[test]
    fn a_dead_worker_s_confirmations_and_waits_are_forgotten() {
        let mut c = Confirmations::default();
        c.confirm("k", 1).unwrap();
        c.confirm("k", 2).unwrap();
        let (tx, mut rx) = oneshot::channel();
        let token = c.wait("other".into(), 1, tx, Some(2));
        assert!(token.is_some());
        c.forget(2);
        assert_eq!(c.confirmed["k"], [1], "its confirmation no longer counts");
        assert!(c.waiting.is_empty(), "its wait is gone");
        assert!(rx.try_recv().is_err(), "dropped, not answered");
        // A wait for 2 confirmations now needs another worker.
        let (tx, mut rx) = oneshot::channel();
        assert!(c.wait("k".into(), 2, tx, None).is_some());
        c.confirm("k", 3).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), [1, 3]);
        c.forget(1);
        c.forget(3);
        assert!(c.confirmed.is_empty(), "no key left behind");
    }

    #[test]
    fn a_worker_confirms_at_most_its_share_of_keys_and_gets_it_back_when_it_ends() {
        let mut c = Confirmations::default();
        for n in 0..MAX_KEYS_PER_WORKER {
            c.confirm(&format!("k{n}"), 1).unwrap();
        }
        c.confirm("k0", 1).unwrap();
        assert!(matches!(
            c.confirm("one more", 1),
            Err(AskError::Invalid(_))
        ));
        c.confirm("one more", 2).unwrap();
        c.forget(1);
        c.confirm("one more", 1).unwrap();
    }
}
