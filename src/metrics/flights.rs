//! Scrapes coalesced per format: while one runs, requests for the same format wait for its
//! answer, so any number of scrapers costs the master one scrape at a time.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::oneshot;

use super::http::Format;

/// A scrape's body, or why there is none (answered 503).
pub(super) type Answer = Result<String, String>;

/// Scrapes coalesced per format: while one runs, requests for the same format wait for its
/// answer instead of starting another, so any number of scrapers costs the master one scrape
/// at a time.
#[derive(Default)]
pub(super) struct Flights {
    /// Per format: `Some` while a scrape runs, with who waits for it.
    waiting: RefCell<[Option<Vec<oneshot::Sender<Answer>>>; 2]>,
}

pub(super) enum Joined {
    Leader(Leader),
    Follower(oneshot::Receiver<Answer>),
}

impl Flights {
    pub(super) fn join(flights: &Rc<Flights>, format: Format) -> Joined {
        let slot = format as usize;
        let mut waiting = flights.waiting.borrow_mut();
        match &mut waiting[slot] {
            Some(followers) => {
                let (tx, rx) = oneshot::channel();
                followers.push(tx);
                Joined::Follower(rx)
            }
            none => {
                *none = Some(Vec::new());
                Joined::Leader(Leader {
                    flights: Rc::clone(flights),
                    slot,
                })
            }
        }
    }
}

/// The scrape that runs for its format; its answer goes to every request that joined it. If it
/// is dropped unfinished (its connection ended), the next request starts a new one.
pub(super) struct Leader {
    flights: Rc<Flights>,
    slot: usize,
}

impl Leader {
    pub(super) fn done(self, answer: Answer) -> Answer {
        let followers = self.flights.waiting.borrow_mut()[self.slot].take();
        for follower in followers.into_iter().flatten() {
            let _ = follower.send(answer.clone());
        }
        answer
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // After `done` the slot is empty already; otherwise the followers' senders drop and
        // they answer 503.
        self.flights.waiting.borrow_mut()[self.slot].take();
    }
}
