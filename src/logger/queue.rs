//! The bounded queue between the master's event loop and the log writer thread.
//!
//! Records enter on the arbiter (the proxies and the supervisor put them there) and leave on
//! the writer thread once every sink has taken them. The queue is an unbounded channel whose
//! *bytes* are bounded: each record is counted at its [`approx_size`](Record::approx_size)
//! when it enters and uncounted only after the writer has written it, so a slow disk or sink
//! shows up here as a full queue — backpressure — rather than as memory.
//!
//! Records workers send on purpose ([`push_fields`](LogQueue::push_fields)) are counted as they
//! enter too, but wait on the arbiter until the end of the event loop's turn (or until there
//! are [`HAND_OVER`] of them) and cross to the writer together: one send and at most one
//! wake-up of the writer thread per batch instead of per record, which at a few hundred
//! thousand records a second were a good part of their cost. Anything else queued hands them
//! over first, so the writer sees everything in the order it was queued.
//!
//! What a full queue means is the callers' policy ([`LogLink`](super::LogLink)): captured
//! output is dropped and counted; records sent on purpose are always queued, and the proxy of
//! a worker that has records in the full queue stops reading that worker
//! ([`full_for`](LogQueue::full_for), [`wait`](LogQueue::wait)) until the writer has brought
//! the queue down to half its limit. A worker with nothing in the queue is read on: a stuck
//! sink delays the workers that log, not the frames and heartbeats of the others.
//!
//! # Limits
//! - The bound is soft for records that are never dropped: a proxy checks it between reads,
//!   so the queue may overshoot by what one read brought in (a pipe-full per worker).
//! - The count uses [`Record::approx_size`] (a worker's record: its struct and its fields'
//!   text), not the allocator's figure.
//! - Workers' records are handed over by a task spawned on the arbiter, so
//!   [`push_fields`](LogQueue::push_fields) needs one (actix's) to run in.
//! - A record queued after the writer has closed is dropped (uncounted from the queue's
//!   bytes, counted in [`LogStats`](super::LogStats) as `writer_closed`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SendError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use tokio::sync::oneshot;

use super::raw::RawRecord;
use super::record::{Kind, Record, Source};
use super::stats::{DropReason, LogCounters, LogStats};
use crate::WorkerId;

/// Workers' records waiting on the arbiter that are handed to the writer at once rather than
/// at the end of the event loop's turn.
const HAND_OVER: usize = 512;

/// What the writer thread is asked to do, in queue order.
#[derive(Debug)]
pub(crate) enum Job {
    /// Write a record to every sink; its counted size goes with it.
    Record(Record, usize),
    /// Write workers' records, in order, to every sink; each counted at its
    /// [`approx_size`](RawRecord::approx_size).
    Batch(Vec<RawRecord>),
    /// Flush every sink, then answer.
    Flush(oneshot::Sender<()>),
    /// Answer the last `n` records of `kind` (of one worker, or of all) from the ring.
    Recent {
        kind: Kind,
        n: usize,
        worker: Option<WorkerId>,
        answer: oneshot::Sender<Vec<Record>>,
    },
    /// Flush every sink, drop them (closing the files) and end the thread, then answer.
    Close(oneshot::Sender<()>),
}

/// The queue's byte count and the proxies waiting for room: shared by the arbiter, which
/// counts records in, and the writer thread, which counts them out.
#[derive(Debug)]
pub(crate) struct Gauge {
    queued: AtomicUsize,
    limit: usize,
    /// Whether `waiting` may hold a waker: spares the writer the lock when no one waits.
    anyone_waiting: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
    /// Bytes of each worker's records written so far (a running total; see `LogQueue::pushed`).
    written: Mutex<HashMap<WorkerId, u64>>,
    /// The writer has ended: nothing will be counted out any more, so nothing waits for it.
    closed: AtomicBool,
    /// Records written and dropped, and the files' figures, since start.
    pub(crate) counters: LogCounters,
}

impl Gauge {
    fn new(limit: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            limit,
            anyone_waiting: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
            written: Mutex::default(),
            closed: AtomicBool::new(false),
            counters: LogCounters::default(),
        }
    }

    /// Whether the count is over the limit while a writer still runs to bring it down.
    fn over(&self) -> bool {
        self.queued() > self.limit && !self.closed.load(Ordering::SeqCst)
    }

    /// The writer has ended (closed, or panicked mid-batch with bytes still counted): the queue
    /// is never full again, and whoever waits is woken.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    fn wake_all(&self) {
        let waiting = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            self.anyone_waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }

    /// Adds what the writer wrote of each worker's records (bytes by worker) to the totals;
    /// called before [`release`](Self::release)ing the same bytes.
    pub(crate) fn written_by(&self, tally: &mut HashMap<WorkerId, u64>) {
        if tally.is_empty() {
            return;
        }
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        for (worker, bytes) in tally.drain() {
            *written.entry(worker).or_default() += bytes;
        }
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    fn add(&self, size: usize) {
        self.queued.fetch_add(size, Ordering::SeqCst);
    }

    /// Uncounts `size` bytes written (or dropped); wakes the waiting proxies once the queue is
    /// down to half its limit. Called on the writer thread: the wakers hand the proxies back
    /// to the arbiter that runs them.
    pub(crate) fn release(&self, size: usize) {
        if size == 0 {
            return;
        }
        let left = self
            .queued
            .fetch_sub(size, Ordering::SeqCst)
            .saturating_sub(size);
        // SeqCst on both sides: either this load sees a waiter registered by `wait`, or
        // `wait`'s second look at the count sees this release.
        if left <= self.limit / 2 && self.anyone_waiting.load(Ordering::SeqCst) {
            self.wake_all();
        }
    }
}

/// The arbiter's end of the queue: counts records in and hands them to the writer thread.
#[derive(Debug)]
pub(crate) struct LogQueue {
    gauge: Arc<Gauge>,
    jobs: Sender<Job>,
    /// This cluster runs inside a worker: records also go up to the master above.
    upward: bool,
    /// Bytes of each worker's records queued so far, a running total: less the writer's
    /// total, what the worker has in the queue now. Only the arbiter adds, without a lock.
    pushed: RefCell<HashMap<WorkerId, u64>>,
    /// Workers' records queued (and counted) on the arbiter, not yet handed to the writer:
    /// they go together, one send and at most one wake-up of the writer for many records.
    pending: RefCell<Vec<RawRecord>>,
    /// A hand-over of `pending` is spawned on the arbiter (it runs after the current task).
    handing_over: Cell<bool>,
    /// The group of the last worker record, shared by the records that follow of the same.
    group: RefCell<Option<Arc<str>>>,
}

impl LogQueue {
    /// A queue of at most `limit` bytes feeding `jobs`, whose receiver counts records out
    /// through `gauge`.
    pub(crate) fn new(gauge: Arc<Gauge>, jobs: Sender<Job>, upward: bool) -> Self {
        Self {
            gauge,
            jobs,
            upward,
            pushed: RefCell::default(),
            pending: RefCell::default(),
            handing_over: Cell::new(false),
            group: RefCell::default(),
        }
    }

    /// The byte count to share with the writer thread, for a queue of `limit` bytes.
    pub(crate) fn gauge(limit: usize) -> Arc<Gauge> {
        Arc::new(Gauge::new(limit))
    }

    /// Whether the queue is over its limit. One atomic load while it has room.
    pub(crate) fn full(&self) -> bool {
        self.gauge.over()
    }

    /// Whether the queue is over its limit with records of `worker` in it: its proxy then
    /// reads no more from it until the writer has caught up (see [`wait`](Self::wait)). One
    /// atomic load while the queue has room.
    pub(crate) fn full_for(&self, worker: WorkerId) -> bool {
        if !self.full() {
            return false;
        }
        let Some(&pushed) = self.pushed.borrow().get(&worker) else {
            return false;
        };
        let written = self
            .gauge
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pushed > written.get(&worker).copied().unwrap_or(0)
    }

    /// Whether the queue is below half its limit (room to report dropped lines).
    pub(crate) fn roomy(&self) -> bool {
        self.gauge.queued() < self.gauge.limit / 2
    }

    /// Wakes `waker` once the queue is down to half its limit (at once if it already has
    /// room again).
    pub(crate) fn wait(&self, waker: &Waker) {
        {
            let mut waiting = self
                .gauge
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            self.gauge.anyone_waiting.store(true, Ordering::SeqCst);
        }
        // The writer may have made room between the caller's `full` and the registration.
        if !self.full() {
            waker.wake_by_ref();
        }
    }

    /// Queues a record of `size` bytes if it fits under the limit; `false` (nothing queued,
    /// the record counted as dropped) if it does not.
    pub(crate) fn admit(&self, record: Record, size: usize) -> bool {
        // Only the arbiter adds, so the count cannot grow between the look and the add.
        if self.gauge.queued().saturating_add(size) > self.gauge.limit {
            self.gauge
                .counters
                .dropped(DropReason::QueueFull, record.kind, 1);
            return false;
        }
        self.push(record, size);
        true
    }

    /// Queues a record of `size` bytes whatever the count.
    pub(crate) fn push(&self, record: Record, size: usize) {
        self.hand_over();
        if self.upward {
            super::upward::forward(&record);
        }
        let (worker, kind) = (record.worker, record.kind);
        self.gauge.add(size);
        if self.jobs.send(Job::Record(record, size)).is_err() {
            // The writer has closed: nothing will count it out.
            self.gauge.release(size);
            self.gauge
                .counters
                .dropped(DropReason::WriterClosed, kind, 1);
        } else if let Some(worker) = worker {
            *self.pushed.borrow_mut().entry(worker).or_default() += size as u64;
        }
    }

    /// Queues a worker's record whatever the count, its `fields` the JSON text it sent: copied
    /// as it is, parsed only if need be on the writer thread (see `logger/raw.rs`). It waits
    /// on the arbiter with the records that follow it until the end of the event loop's
    /// turn, then goes to the writer with them.
    ///
    /// # Panics
    /// Outside an actix (tokio `LocalSet`) context, where the hand-over cannot be spawned.
    pub(crate) fn push_fields(
        self: &Rc<Self>,
        source: Source,
        kind: Kind,
        time_ns: u64,
        fields: &str,
    ) {
        let raw = RawRecord {
            kind,
            time_ns,
            worker: source.worker,
            pid: source.pid,
            generation: source.generation,
            group: self.shared_group(source.group),
            fields: fields.into(),
        };
        if self.upward {
            super::upward::forward(&raw.to_record());
        }
        let size = raw.approx_size();
        self.gauge.add(size);
        if let Some(worker) = raw.worker {
            *self.pushed.borrow_mut().entry(worker).or_default() += size as u64;
        }
        let waiting = {
            let mut pending = self.pending.borrow_mut();
            pending.push(raw);
            pending.len()
        };
        if waiting >= HAND_OVER {
            self.hand_over();
        } else if !self.handing_over.replace(true) {
            let queue = Rc::clone(self);
            actix::spawn(async move {
                queue.handing_over.set(false);
                queue.hand_over();
            });
        }
    }

    /// `group` as an `Arc` shared with the previous record's when it is the same.
    fn shared_group(&self, group: String) -> Arc<str> {
        let mut last = self.group.borrow_mut();
        match &*last {
            Some(shared) if **shared == *group => Arc::clone(shared),
            _ => Arc::clone(last.insert(group.into())),
        }
    }

    /// Sends the workers' records waiting on the arbiter to the writer; whatever else is
    /// queued does this first, so the writer sees everything in the order it was queued.
    fn hand_over(&self) {
        let batch = {
            let mut pending = self.pending.borrow_mut();
            if pending.is_empty() {
                return;
            }
            let capacity = pending.len();
            std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
        };
        if let Err(SendError(Job::Batch(batch))) = self.jobs.send(Job::Batch(batch)) {
            // The writer has closed: nothing will count them out.
            let mut pushed = self.pushed.borrow_mut();
            for raw in batch {
                let size = raw.approx_size();
                self.gauge.release(size);
                self.gauge
                    .counters
                    .dropped(DropReason::WriterClosed, raw.kind, 1);
                if let Some(total) = raw.worker.and_then(|worker| pushed.get_mut(&worker)) {
                    *total -= size as u64;
                }
            }
        }
    }

    /// The pipeline's figures now: records written and dropped so far, the files', and the
    /// queue's fill. A few atomic loads; nothing is handed over or waited for.
    pub(crate) fn stats(&self) -> LogStats {
        self.gauge
            .counters
            .snapshot(self.gauge.queued(), self.gauge.limit)
    }

    /// Asks the writer to flush everything queued so far; the receiver resolves once it has
    /// (or at once, with an error, when the writer is gone).
    pub(crate) fn flush(&self) -> oneshot::Receiver<()> {
        self.hand_over();
        let (done, flushed) = oneshot::channel();
        let _ = self.jobs.send(Job::Flush(done));
        flushed
    }

    /// Asks the writer for the last `n` records of `kind` (of `worker`, or of every process),
    /// answered once everything queued before has been written; an error when the writer is
    /// gone.
    pub(crate) fn recent(
        &self,
        kind: Kind,
        n: usize,
        worker: Option<WorkerId>,
    ) -> oneshot::Receiver<Vec<Record>> {
        self.hand_over();
        let (answer, recent) = oneshot::channel();
        let _ = self.jobs.send(Job::Recent {
            kind,
            n,
            worker,
            answer,
        });
        recent
    }

    /// Asks the writer to write everything queued so far, flush, close its sinks and end; the
    /// receiver resolves once the thread has let go of every sink.
    pub(crate) fn close(&self) -> oneshot::Receiver<()> {
        self.hand_over();
        let (done, closed) = oneshot::channel();
        let _ = self.jobs.send(Job::Close(done));
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};
    use std::task::Wake;

    use super::*;
    use crate::logger::record::Source;

    fn record() -> Record {
        Record::new(
            Source::master("g"),
            Kind::History,
            crate::logger::Fields::new(),
        )
    }

    fn record_of(worker: WorkerId) -> Record {
        let source = Source {
            worker: Some(worker),
            ..Source::master("g")
        };
        Record::new(source, Kind::History, crate::logger::Fields::new())
    }

    fn queue(limit: usize) -> (LogQueue, Arc<Gauge>, Receiver<Job>) {
        let gauge = LogQueue::gauge(limit);
        let (tx, rx) = channel();
        (LogQueue::new(Arc::clone(&gauge), tx, false), gauge, rx)
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn admit_refuses_past_the_limit_and_push_does_not() {
        let (queue, gauge, rx) = queue(100);
        assert!(queue.admit(record(), 60));
        assert!(!queue.admit(record(), 60), "60 + 60 > 100");
        assert!(!queue.full());
        queue.push(record(), 60);
        assert!(queue.full());
        assert_eq!(gauge.queued(), 120);
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn waiters_wake_once_the_writer_brings_the_queue_to_half() {
        let (queue, gauge, _rx) = queue(100);
        queue.push(record(), 150);
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        queue.wait(&waker);
        queue.wait(&waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "still full");
        gauge.release(60);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "90 is above half");
        assert!(!queue.roomy());
        gauge.release(50);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake per waker");
        assert!(queue.roomy());
    }

    #[test]
    fn a_waiter_registered_after_the_room_was_made_wakes_at_once() {
        let (queue, gauge, _rx) = queue(100);
        queue.push(record(), 150);
        assert!(queue.full());
        gauge.release(150);
        let count = Arc::new(Count::default());
        queue.wait(&Waker::from(Arc::clone(&count)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_full_queue_holds_back_only_the_workers_with_records_in_it() {
        let (queue, gauge, _rx) = queue(100);
        queue.push(record_of(1), 80);
        queue.push(record_of(2), 30);
        queue.push(record(), 10);
        assert!(queue.full());
        assert!(queue.full_for(1) && queue.full_for(2));
        assert!(!queue.full_for(3), "nothing of worker 3 is queued");
        // The writer has written worker 2's record, not yet counted out.
        gauge.written_by(&mut HashMap::from([(2, 30)]));
        assert!(queue.full_for(1));
        assert!(!queue.full_for(2));
        gauge.release(30);
        assert!(!queue.full_for(1), "room again");
    }

    #[test]
    fn a_queue_whose_writer_ended_is_never_full_and_wakes_its_waiters() {
        let (queue, gauge, _rx) = queue(100);
        queue.push(record_of(1), 150);
        let count = Arc::new(Count::default());
        queue.wait(&Waker::from(Arc::clone(&count)));
        assert!(queue.full_for(1));
        gauge.close();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!queue.full() && !queue.full_for(1));
    }

    fn source(worker: WorkerId) -> Source {
        Source {
            worker: Some(worker),
            ..Source::master("g")
        }
    }

    /// What the writer would take from `rx` now: `r` for a record, `b<n>` for a batch of n.
    fn jobs(rx: &Receiver<Job>) -> Vec<String> {
        rx.try_iter()
            .map(|job| match job {
                Job::Record(..) => "r".to_owned(),
                Job::Batch(batch) => format!("b{}", batch.len()),
                _ => "other".to_owned(),
            })
            .collect()
    }

    #[actix::test]
    async fn workers_records_cross_together_at_the_end_of_the_turn_in_queue_order() {
        let (queue, gauge, rx) = queue(1 << 20);
        let queue = Rc::new(queue);
        for n in 0..3 {
            queue.push_fields(source(1), Kind::Ip, n, r#"{"n":1}"#);
        }
        assert!(jobs(&rx).is_empty(), "they wait for the end of the turn");
        assert!(gauge.queued() > 0, "but count at once");
        assert!(queue.pushed.borrow()[&1] > 0);
        // Anything else queued hands them over first.
        queue.push(record(), 10);
        queue.push_fields(source(2), Kind::Ip, 3, "{}");
        assert_eq!(jobs(&rx), ["b3", "r"]);
        tokio::task::yield_now().await;
        assert_eq!(jobs(&rx), ["b1"]);
        // A full batch goes at once.
        for n in 0..HAND_OVER as u64 + 1 {
            queue.push_fields(source(1), Kind::Ip, n, "{}");
        }
        assert_eq!(jobs(&rx), [format!("b{HAND_OVER}")]);
        drop(queue.flush());
        assert_eq!(jobs(&rx), ["b1", "other"]);
    }

    #[actix::test]
    async fn workers_records_for_a_closed_writer_are_not_counted() {
        let (queue, gauge, rx) = queue(10);
        drop(rx);
        let queue = Rc::new(queue);
        queue.push_fields(source(1), Kind::Ip, 0, r#"{"a":"b"}"#);
        assert!(queue.full_for(1), "counted until handed over");
        tokio::task::yield_now().await;
        assert_eq!(gauge.queued(), 0);
        assert!(!queue.full_for(1));
    }

    #[test]
    fn a_record_for_a_closed_writer_is_not_counted() {
        let (queue, gauge, rx) = queue(100);
        drop(rx);
        queue.push(record(), 50);
        assert_eq!(gauge.queued(), 0);
        let mut flushed = queue.flush();
        assert!(flushed.try_recv().is_err(), "answered: the writer is gone");
    }
}
