//! When the master stops reading one process's frames, and why.
//!
//! What a worker sends costs the master memory until the master is done with it: the answers to
//! its requests wait in its outbox, its requests wait for answers (from peers, the master's
//! `on_request` handler, the cache's lock table), its messages wait for the master's `on_message`
//! handlers, its log records for the writer thread. Rather than hold any of these without bound,
//! the proxy stops reading the process's frames while one of them is at its limit, and reads on
//! once it is under again. The worker's writes then block in its pipe (the kernel's buffer) and
//! only that worker slows down: nothing is dropped, and every other worker goes on as before.
//!
//! | pause              | limit                                  | whose doing          |
//! |--------------------|----------------------------------------|----------------------|
//! | [`Pause::Outbox`]   | `max_outbox_bytes` waiting for its stdin | the worker's (it does not read) |
//! | [`Pause::Requests`] | `max_worker_pending` unanswered requests | the answerers'       |
//! | [`Pause::Handlers`] | `max_worker_pending` messages not handled yet | the master's handlers |
//!
//! While a pause is not the worker's doing, its heartbeats are not counted: its `Pong`s wait
//! unread in the pipe behind the frames the master is not reading yet.

use std::cell::{Cell, RefCell};
use std::task::Waker;

/// Why the master is not reading a process's frames now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Its outbox is at `max_outbox_bytes`: it is not reading what it is sent.
    Outbox,
    /// It has `max_worker_pending` requests waiting for answers.
    Requests,
    /// The master's handlers have `max_worker_pending` of its messages not handled yet.
    Handlers,
    /// The log writer is behind with its records.
    Log,
}

impl Pause {
    /// Whether the pause is the worker's own doing (then its missed heartbeats count).
    pub(crate) fn is_the_workers(self) -> bool {
        self == Pause::Outbox
    }
}

/// The counts behind the pauses of one process, and its reader while it waits. Shared (`Rc`)
/// with the tasks that wait for the master's handlers, so that each can count its message done.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Its requests not answered yet (asks, system and cache operations, acknowledged sends).
    asking: Cell<usize>,
    /// Its messages handed to the master's handlers and not handled yet.
    handling: Cell<usize>,
    limit: usize,
    /// Why the reader waits, if it does.
    paused: Cell<Option<Pause>>,
    reader: RefCell<Option<Waker>>,
}

impl Gate {
    /// A gate that pauses at `limit` requests, or `limit` messages for the handlers.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            asking: Cell::new(0),
            handling: Cell::new(0),
            limit: limit.max(1),
            paused: Cell::new(None),
            reader: RefCell::new(None),
        }
    }

    /// Why the reader must wait before the next frame, if it must; `outbox_full` is the outbox's
    /// say, `log_full` the log queue's.
    pub(crate) fn check(&self, outbox_full: bool, log_full: bool) -> Option<Pause> {
        if outbox_full {
            Some(Pause::Outbox)
        } else if self.asking.get() >= self.limit {
            Some(Pause::Requests)
        } else if self.handling.get() >= self.limit {
            Some(Pause::Handlers)
        } else if log_full {
            Some(Pause::Log)
        } else {
            None
        }
    }

    /// The reader waits for `pause` to end; `waker` wakes it.
    pub(crate) fn wait(&self, pause: Pause, waker: &Waker) {
        self.paused.set(Some(pause));
        let mut reader = self.reader.borrow_mut();
        match &*reader {
            Some(w) if w.will_wake(waker) => {}
            _ => *reader = Some(waker.clone()),
        }
    }

    /// The reader reads again.
    pub(crate) fn resumed(&self) {
        self.paused.set(None);
    }

    /// Why the reader waits now, if it does.
    pub(crate) fn paused(&self) -> Option<Pause> {
        self.paused.get()
    }

    /// Wakes the waiting reader, if any, to look again.
    pub(crate) fn wake(&self) {
        let waker = self.reader.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A request was read; its answer is due.
    pub(crate) fn asked(&self) {
        self.asking.set(self.asking.get() + 1);
    }

    /// A request was answered.
    pub(crate) fn answered(&self) {
        self.asking.set(self.asking.get().saturating_sub(1));
        if self.paused() == Some(Pause::Requests) {
            self.wake();
        }
    }

    /// A message went to the master's handlers.
    pub(crate) fn handed(&self) {
        self.handling.set(self.handling.get() + 1);
    }

    /// The handlers are done with a message.
    pub(crate) fn handled(&self) {
        self.handling.set(self.handling.get().saturating_sub(1));
        if self.paused() == Some(Pause::Handlers) {
            self.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pauses_at_the_limit_and_wakes_the_reader_once_under_it() {
        let gate = Gate::new(2);
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        gate.asked();
        assert_eq!(gate.check(false, false), None);
        gate.asked();
        assert_eq!(gate.check(false, false), Some(Pause::Requests));
        gate.wait(Pause::Requests, &waker);
        gate.handed();
        gate.handled();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "not the pause's count");
        gate.answered();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(gate.check(false, false), None);
        gate.answered();
        gate.answered();
        assert_eq!(gate.check(false, false), None, "no underflow");
    }

    #[test]
    fn the_outbox_comes_first_and_only_it_is_the_workers_doing() {
        let gate = Gate::new(1);
        gate.handed();
        assert_eq!(gate.check(true, true), Some(Pause::Outbox));
        assert_eq!(gate.check(false, true), Some(Pause::Handlers));
        gate.handled();
        assert_eq!(gate.check(false, true), Some(Pause::Log));
        assert!(Pause::Outbox.is_the_workers());
        assert!(!Pause::Handlers.is_the_workers() && !Pause::Requests.is_the_workers());
        assert!(!Pause::Log.is_the_workers());
    }
}
