//! The window of one-way messages a worker may have on their way to each receiver.
//!
//! `tell_worker` cannot wait for its receiver, yet must not report a message as sent that the
//! receiver will never take in. So the master takes in every one-way message a worker sends to
//! one other worker, even past the receiver's outbox limit, and pays the sender back in credit
//! ([`Envelope::Credit`](crate::protocol::Envelope::Credit)) once the receiver's outbox is under
//! its limit again. The sender keeps, per receiver, the messages not yet paid for: while they
//! are [`MESSAGES`] or [`BYTES`], `tell_worker` fails with `AskError::Backpressure` and sends
//! nothing. A stuck receiver thus costs the master at most one window per sender, and a message
//! `tell_worker` accepted is delivered unless its receiver's process ends first.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Messages to one receiver that may wait for credit.
pub(crate) const MESSAGES: usize = 1024;
/// Bytes of messages to one receiver that may wait for credit (a larger message goes alone).
pub(crate) const BYTES: usize = 1024 * 1024;

/// The messages waiting for credit, per receiver: their sizes, oldest first, and their sum.
#[derive(Debug, Default)]
pub(crate) struct TellWindows {
    open: RefCell<HashMap<u64, (VecDeque<usize>, usize)>>,
}

impl TellWindows {
    /// Whether a message of `bytes` to `receiver` fits in its window.
    pub(crate) fn has_room(&self, receiver: u64, bytes: usize) -> bool {
        self.open
            .borrow()
            .get(&receiver)
            .is_none_or(|(sizes, sum)| {
                sizes.is_empty() || (sizes.len() < MESSAGES && sum + bytes <= BYTES)
            })
    }

    /// A message of `bytes` went to `receiver`.
    pub(crate) fn sent(&self, receiver: u64, bytes: usize) {
        let mut open = self.open.borrow_mut();
        let (sizes, sum) = open.entry(receiver).or_default();
        sizes.push_back(bytes);
        *sum += bytes;
    }

    /// `receiver` took in the `count` oldest of them.
    pub(crate) fn credit(&self, receiver: u64, count: u64) {
        let mut open = self.open.borrow_mut();
        let Some((sizes, sum)) = open.get_mut(&receiver) else {
            return;
        };
        for _ in 0..count {
            match sizes.pop_front() {
                Some(bytes) => *sum -= bytes,
                None => break,
            }
        }
        if sizes.is_empty() {
            open.remove(&receiver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_its_count_or_bytes_and_credit_opens_it() {
        let windows = TellWindows::default();
        for _ in 0..MESSAGES {
            assert!(windows.has_room(1, 10));
            windows.sent(1, 10);
        }
        assert!(!windows.has_room(1, 10), "full by count");
        assert!(windows.has_room(2, 10), "per receiver");
        windows.credit(1, 1);
        assert!(windows.has_room(1, 10));
        windows.credit(1, u64::MAX);
        assert!(windows.open.borrow().is_empty(), "forgotten when paid up");

        windows.sent(3, BYTES - 5);
        assert!(windows.has_room(3, 5));
        assert!(!windows.has_room(3, 6), "full by bytes");
        windows.credit(3, 1);
        assert!(
            windows.has_room(3, 10 * BYTES),
            "a large message goes alone"
        );
        windows.credit(4, 7);
    }
}
