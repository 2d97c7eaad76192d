//! What the notification sockets of a slot's plain program said, process by process: the
//! state `readiness` keeps for [`Cluster::notify_status`](crate::Cluster::notify_status). Its
//! size is fixed per process (the last `STATUS=` is at most one datagram, 4096 bytes).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::os::notify::Notice;

/// What a plain program's notification socket received (see
/// [`Cluster::notify_status`](crate::Cluster::notify_status)): the serving process's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyStatus {
    /// The process's pid.
    pub pid: Option<u32>,
    /// Whether it sent `READY=1`.
    pub ready: bool,
    /// The last `STATUS=…` it sent.
    pub status: Option<String>,
    /// Datagrams taken.
    pub datagrams: u64,
    /// Datagrams dropped: longer than 4096 bytes, not UTF-8, or with a line that is not
    /// `KEY=VALUE`.
    pub bad_datagrams: u64,
    /// How long ago its last `WATCHDOG=1` arrived.
    pub since_watchdog: Option<Duration>,
}

/// What one process's socket received so far.
#[derive(Debug, Default)]
pub(super) struct Notes {
    status: NotifyStatus,
    last_watchdog: Option<Instant>,
}

impl Notes {
    /// Takes in a datagram that was read.
    pub(super) fn take(&mut self, notice: Notice) {
        self.status.datagrams += 1;
        self.status.ready |= notice.ready;
        if notice.watchdog {
            self.last_watchdog = Some(Instant::now());
        }
        if notice.status.is_some() {
            self.status.status = notice.status;
        }
    }

    /// Counts a datagram dropped; the count so far.
    pub(super) fn dropped(&mut self) -> u64 {
        self.status.bad_datagrams += 1;
        self.status.bad_datagrams
    }
}

/// The notification sockets of a slot's processes being read, by generation.
#[derive(Debug, Default)]
pub(super) struct Notified(BTreeMap<u64, Listening>);

#[derive(Debug)]
struct Listening {
    notes: Rc<RefCell<Notes>>,
    /// Dropped when the process is reaped: the reading task ends and the socket is removed.
    _stop: oneshot::Sender<()>,
}

impl Notified {
    /// Process `generation`'s socket is being read until `stop` is dropped; where the reader
    /// keeps what it reads.
    pub(super) fn start(
        &mut self,
        generation: u64,
        stop: oneshot::Sender<()>,
    ) -> Rc<RefCell<Notes>> {
        let notes = Rc::default();
        let listening = Listening {
            notes: Rc::clone(&notes),
            _stop: stop,
        };
        self.0.insert(generation, listening);
        notes
    }

    /// Process `generation` is reaped: its socket is read no more.
    pub(super) fn end(&mut self, generation: u64) {
        self.0.remove(&generation);
    }

    /// When process `generation` last sent `WATCHDOG=1`.
    pub(super) fn last_watchdog(&self, generation: u64) -> Option<Instant> {
        let listening = self.0.get(&generation)?;
        let last = listening.notes.borrow().last_watchdog;
        last
    }

    /// What process `generation` (of pid `pid`) sent, if it has a socket.
    pub(super) fn status(&self, generation: u64, pid: Option<u32>) -> Option<NotifyStatus> {
        let notes = self.0.get(&generation)?.notes.borrow();
        Some(NotifyStatus {
            pid,
            since_watchdog: notes.last_watchdog.map(|t| t.elapsed()),
            ..notes.status.clone()
        })
    }
}
