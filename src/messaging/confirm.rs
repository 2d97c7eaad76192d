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
    waiting: HashMap<u64, Wait>,
    next: u64,
}

/// One wait for `n` confirmations of `key`.
#[derive(Debug)]
struct Wait {
    key: String,
    n: usize,
    reply: Waiter,
}

impl Confirmations {
    /// Worker `id` confirms `key` (again: counted once); answers the waits it completes.
    pub(crate) fn confirm(&mut self, key: &str, id: WorkerId) {
        let confirmed = self.confirmed.entry(key.to_owned()).or_default();
        if !confirmed.contains(&id) {
            confirmed.push(id);
        }
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
    }

    /// Waits for `n` confirmations of `key`: answered now if they are in, otherwise held, and
    /// the returned token is for [`expire`](Self::expire) at the deadline.
    pub(crate) fn wait(&mut self, key: String, n: usize, reply: Waiter) -> Option<u64> {
        if let Some(confirmed) = self.confirmed.get(&key).filter(|c| c.len() >= n) {
            let _ = reply.send(Ok(confirmed.clone()));
            return None;
        }
        let token = self.next;
        self.next += 1;
        self.waiting.insert(token, Wait { key, n, reply });
        Some(token)
    }

    /// The deadline of wait `token` passed: it fails with a timeout, unless already answered.
    pub(crate) fn expire(&mut self, token: u64, timeout: std::time::Duration) {
        if let Some(wait) = self.waiting.remove(&token) {
            let _ = wait.reply.send(Err(AskError::Timeout(timeout)));
        }
    }
}
