//! The log writer thread (`procactor-log`): the one place where records meet the disk and
//! every other sink.
//!
//! It takes [`Job`]s from the [queue](super::queue) in order and, for each record: emits it
//! as a `tracing` event of the master (when asked), writes it to the files, hands it to each
//! extra [`Sink`], keeps it in the in-memory ring (which [`Job::Recent`] queries), and only
//! then counts it out of the queue. A worker's record comes as it arrived, its fields still
//! JSON text ([`Job::Batch`], `logger/raw.rs`): it is parsed into a [`Record`] only for the
//! sinks that take one (extra sinks, `tracing`), else its line is written around the text and
//! it is kept so in the ring. Buffered file writes reach the OS at least once a second
//! while records arrive, on [`Job::Flush`] and on [`Job::Close`], which also drops every sink
//! (closing the files) before it answers. What it writes and what is lost on the way is
//! counted in the gauge's [`LogCounters`] (`logger/stats.rs`).
//!
//! # Failures
//! - A sink's write error is reported as before: the files' once per distinct error
//!   (`tracing` error), an extra sink's for every record (`tracing` warning); the record is
//!   lost for that sink only (counted as `sink_error`; the files' errors also as
//!   `file_errors`).
//! - An extra sink that panics is reported (`tracing` error with the panic message) and gets
//!   no more records (counted as `sink_panicked`); the thread and the other sinks go on.
//! - Should the thread itself panic (a bug here, or a `tracing` subscriber that panics), that
//!   is reported too; from then on records are dropped as they are queued (counted as
//!   `writer_closed`), and flushes and the close answer at once, so the master never waits
//!   for a dead thread.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{Gauge, Job};
use super::raw::RawRecord;
use super::record::{Kind, Record};
use super::sink::{FileSink, RingSink, Sink};
use super::stats::{DropReason, LogCounters};
use crate::WorkerId;

/// The writer thread's name, as `ps -L` and panic messages show it.
pub(crate) const THREAD_NAME: &str = "procactor-log";
/// Buffered file writes reach the OS at least this often while records arrive.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Jobs taken from the queue before their bytes are counted out together.
const BATCH: usize = 256;

/// Everything the writer thread owns.
pub(crate) struct Writer {
    files: Option<FileSink>,
    extra: Vec<Extra>,
    ring: RingSink,
    tracing: bool,
    gauge: Arc<Gauge>,
    /// The last error of each of the writer's own sinks, reported once.
    failed: BTreeMap<&'static str, String>,
    /// Something was written since the last flush.
    dirty: bool,
    flushed_at: Instant,
    /// Bytes written of each worker's records in the current batch.
    tally: HashMap<WorkerId, u64>,
}

impl Writer {
    /// A writer to `files` and `extra`, keeping records in `ring` and counting them out of
    /// `gauge`; `tracing` re-emits each record as a `tracing` event.
    pub(crate) fn new(
        files: Option<FileSink>,
        extra: Vec<Box<dyn Sink>>,
        ring: RingSink,
        tracing: bool,
        gauge: Arc<Gauge>,
    ) -> Self {
        Self {
            files,
            extra: extra
                .into_iter()
                .enumerate()
                .map(|(index, sink)| Extra {
                    sink,
                    index,
                    broken: false,
                })
                .collect(),
            ring,
            tracing,
            gauge,
            failed: BTreeMap::new(),
            dirty: false,
            flushed_at: Instant::now(),
            tally: HashMap::new(),
        }
    }

    /// Starts the thread, which runs until [`Job::Close`] or until every sender of `jobs` is
    /// gone. It is not joined: the close answer is its last act.
    ///
    /// # Errors
    /// The OS refused a thread.
    pub(crate) fn spawn(self, jobs: Receiver<Job>) -> io::Result<()> {
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || self.main(jobs))
            .map(drop)
    }

    fn main(mut self, jobs: Receiver<Job>) {
        let closed = match catch_unwind(AssertUnwindSafe(|| self.run(&jobs))) {
            Ok(closed) => closed,
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(&*panic),
                    "the log writer panicked; records are dropped from now on"
                );
                None
            }
        };
        let gauge = Arc::clone(&self.gauge);
        // Dropping the sinks closes the files; a sink's `Drop` may panic too.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(self))) {
            tracing::error!(
                panic = panic_message(&*panic),
                "a log sink panicked on close"
            );
        }
        // Whatever is still queued will not be written: count it out (and as dropped); a
        // waiting flush resolves as its answer is dropped. Proxies waiting for room are let go.
        gauge.close();
        let lost = |kind| gauge.counters.dropped(DropReason::WriterClosed, kind, 1);
        for job in jobs.try_iter() {
            match job {
                Job::Record(record, size) => {
                    lost(record.kind);
                    gauge.release(size);
                }
                Job::Batch(batch) => {
                    batch.iter().for_each(|raw| lost(raw.kind));
                    gauge.release(batch.iter().map(RawRecord::approx_size).sum());
                }
                _ => {}
            }
        }
        drop(jobs);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    /// Does jobs until [`Job::Close`] (its answer returned) or until the queue's senders are
    /// gone (`None`).
    fn run(&mut self, jobs: &Receiver<Job>) -> Option<oneshot::Sender<()>> {
        loop {
            let next = if self.dirty {
                let due = FLUSH_EVERY.saturating_sub(self.flushed_at.elapsed());
                jobs.recv_timeout(due)
            } else {
                jobs.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match next {
                Ok(job) => {
                    if let Some(done) = self.batch(job, jobs) {
                        return Some(done);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return None;
                }
            }
            if self.dirty && self.flushed_at.elapsed() >= FLUSH_EVERY {
                self.flush();
            }
        }
    }

    /// Does `first` and the jobs queued behind it (up to [`BATCH`]), then counts their records
    /// out of the queue; the answer of a [`Job::Close`] met on the way.
    fn batch(&mut self, first: Job, jobs: &Receiver<Job>) -> Option<oneshot::Sender<()>> {
        let mut written = 0;
        let mut next = Some(first);
        let mut done = 0;
        let mut closed = None;
        while let Some(job) = next.take() {
            match job {
                Job::Record(record, size) => {
                    if let Some(worker) = record.worker {
                        *self.tally.entry(worker).or_default() += size as u64;
                    }
                    self.write(record);
                    written += size;
                }
                Job::Batch(batch) => {
                    // Counted as that many jobs.
                    done += batch.len().saturating_sub(1);
                    for raw in batch {
                        let size = raw.approx_size();
                        if let Some(worker) = raw.worker {
                            *self.tally.entry(worker).or_default() += size as u64;
                        }
                        self.write_raw(raw);
                        written += size;
                    }
                }
                Job::Flush(answer) => {
                    self.flush();
                    self.count_out(std::mem::take(&mut written));
                    let _ = answer.send(());
                }
                Job::Recent {
                    kind,
                    n,
                    worker,
                    answer,
                } => {
                    let _ = answer.send(self.ring.recent(kind, n, worker));
                }
                Job::Close(answer) => {
                    self.flush();
                    closed = Some(answer);
                    break;
                }
            }
            done += 1;
            if done < BATCH {
                next = jobs.try_recv().ok();
            }
        }
        self.count_out(written);
        closed
    }

    /// Counts `written` bytes (those of the tally, and the master's own) out of the queue.
    fn count_out(&mut self, written: usize) {
        self.gauge.written_by(&mut self.tally);
        self.gauge.release(written);
    }

    fn write(&mut self, record: Record) {
        if self.tracing {
            super::emit::emit(&record);
        }
        if let Some(files) = &mut self.files {
            let result = files.write(&record);
            self.files_wrote(record.kind, result);
        }
        for extra in &mut self.extra {
            extra.write(&record, &self.gauge.counters);
        }
        self.dirty = true;
        self.gauge.counters.written(record.kind);
        self.ring.push(record);
    }

    /// A worker's record as it arrived: parsed into a [`Record`] for the sinks that take one,
    /// else written around its fields' text and kept so in the ring.
    fn write_raw(&mut self, raw: RawRecord) {
        if !self.extra.is_empty() || (self.tracing && super::emit::wanted(raw.kind)) {
            self.write(raw.to_record());
            return;
        }
        if let Some(files) = &mut self.files {
            let result = files.write_raw(&raw);
            self.files_wrote(raw.kind, result);
        }
        self.dirty = true;
        self.gauge.counters.written(raw.kind);
        self.ring.push_raw(raw);
    }

    /// Counts what the files did with a record of `kind`: its line's bytes and a rotation,
    /// or the error that lost it.
    fn files_wrote(&mut self, kind: Kind, result: io::Result<()>) {
        if let Some(tally) = self.files.as_ref().map(FileSink::tally) {
            self.gauge.counters.files(tally.bytes, tally.rotations);
        }
        if let Err(e) = result {
            self.gauge.counters.dropped(DropReason::SinkError, kind, 1);
            self.failure("files", &e);
        }
    }

    fn flush(&mut self) {
        if let Some(Err(e)) = self.files.as_mut().map(FileSink::flush) {
            self.failure("files", &e);
        }
        for extra in &mut self.extra {
            extra.flush();
        }
        self.dirty = false;
        self.flushed_at = Instant::now();
    }

    /// A failing sink is reported once per distinct error, not once per record; every failure
    /// is counted (as `file_errors`: the files are the only sink of the writer's own that fails).
    fn failure(&mut self, sink: &'static str, e: &io::Error) {
        self.gauge.counters.file_error();
        let text = e.to_string();
        if self.failed.get(sink) != Some(&text) {
            tracing::error!(sink, error = %text, "cannot write logs");
            self.failed.insert(sink, text);
        }
    }
}

/// A sink added with `log_sink`, fenced so that its panic stays its own.
struct Extra {
    sink: Box<dyn Sink>,
    /// Its place among the extra sinks, to name it in reports.
    index: usize,
    /// It panicked: it gets nothing more.
    broken: bool,
}

impl Extra {
    /// Hands `record` to the sink; one it does not take is counted in `counters`.
    fn write(&mut self, record: &Record, counters: &LogCounters) {
        match self.guarded(|sink| sink.write(record)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                counters.dropped(DropReason::SinkError, record.kind, 1);
                tracing::warn!(sink = self.index, error = %e, "log sink failed");
            }
            None => counters.dropped(DropReason::SinkPanicked, record.kind, 1),
        }
    }

    fn flush(&mut self) {
        // As before the writer thread: a sink's flush errors are its own business.
        let _ = self.guarded(|sink| sink.flush());
    }

    /// Runs `op` on the sink unless it is broken; a panic breaks it and is reported.
    fn guarded(
        &mut self,
        op: impl FnOnce(&mut dyn Sink) -> io::Result<()>,
    ) -> Option<io::Result<()>> {
        if self.broken {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| op(&mut *self.sink))) {
            Ok(result) => Some(result),
            Err(panic) => {
                self.broken = true;
                tracing::error!(
                    sink = self.index,
                    panic = panic_message(&*panic),
                    "log sink panicked; it gets no more records"
                );
                None
            }
        }
    }
}

/// The text of a panic's payload, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::logger::queue::LogQueue;
    use crate::logger::record::{Kind, Source};

    fn record(n: usize) -> Record {
        let fields = serde_json::Map::from_iter([("n".to_owned(), n.into())]);
        Record::new(
            Source::master("g"),
            Kind::History,
            crate::logger::Fields(fields),
        )
    }

    /// A writer thread over `extra` (no files, a ring of 100) and its queue of `limit` bytes.
    fn start(extra: Vec<Box<dyn Sink>>, limit: usize) -> LogQueue {
        let gauge = LogQueue::gauge(limit);
        let (jobs, queued) = mpsc::channel();
        let writer = Writer::new(None, extra, RingSink::new(100), false, Arc::clone(&gauge));
        writer.spawn(queued).unwrap();
        LogQueue::new(gauge, jobs, false)
    }

    /// How many records the ring holds once everything queued is written.
    fn ring_len(queue: &LogQueue) -> usize {
        let recent = queue.recent(Kind::History, 100, None);
        recent.blocking_recv().unwrap().len()
    }

    /// Counts what it takes, flags its drop, and panics on record `panic_at` if set.
    #[derive(Default)]
    struct Probe {
        written: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
        panic_at: Option<usize>,
    }

    impl Sink for Probe {
        fn write(&mut self, record: &Record) -> io::Result<()> {
            if self.panic_at == record.fields.get::<usize>("n") {
                panic!("probe told to panic");
            }
            self.written.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// Says when a write begins, and blocks it until the test lets it through.
    struct Gate {
        entered: mpsc::Sender<()>,
        open: mpsc::Receiver<()>,
    }

    impl Sink for Gate {
        fn write(&mut self, _: &Record) -> io::Result<()> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_record_leaves_the_count_only_once_the_sinks_have_written_it() {
        let (open, gate) = mpsc::channel();
        let (entered, writing) = mpsc::channel();
        let gate = Gate {
            entered,
            open: gate,
        };
        let queue = start(vec![Box::new(gate)], 150);
        queue.push(record(0), 100);
        queue.push(record(1), 100);
        assert!(queue.full());
        // The writer is stuck in the first write: the queue stays full.
        writing.recv().unwrap();
        assert!(queue.full());
        open.send(()).unwrap();
        open.send(()).unwrap();
        queue.flush().blocking_recv().unwrap();
        assert!(queue.roomy());
        assert_eq!(ring_len(&queue), 2);
        queue.close().blocking_recv().unwrap();
    }

    #[test]
    fn a_panicking_sink_is_skipped_from_then_on_and_the_others_go_on() {
        let mut panicky = Probe::default();
        panicky.panic_at = Some(1);
        let (panicky_wrote, panicky_dropped) = (panicky.written.clone(), panicky.dropped.clone());
        let steady = Probe::default();
        let steady_wrote = steady.written.clone();
        let queue = start(vec![Box::new(panicky), Box::new(steady)], 1 << 20);
        for n in 0..4 {
            queue.push(record(n), 10);
        }
        queue.flush().blocking_recv().unwrap();
        assert_eq!(panicky_wrote.load(Ordering::SeqCst), 1, "only record 0");
        assert_eq!(steady_wrote.load(Ordering::SeqCst), 4);
        assert_eq!(ring_len(&queue), 4);
        queue.close().blocking_recv().unwrap();
        assert!(panicky_dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn close_answers_after_every_queued_record_is_written_and_the_sinks_dropped() {
        let probe = Probe::default();
        let (written, dropped) = (probe.written.clone(), probe.dropped.clone());
        let queue = start(vec![Box::new(probe)], 1 << 20);
        for n in 0..1000 {
            queue.push(record(n), 10);
        }
        queue.close().blocking_recv().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 1000);
        assert!(dropped.load(Ordering::SeqCst));
        assert!(queue.roomy());
        // The thread is gone: a flush resolves at once, with nothing to wait for.
        assert!(queue.flush().blocking_recv().is_err());
    }

    #[test]
    fn the_thread_ends_when_the_queue_is_dropped() {
        let probe = Probe::default();
        let dropped = probe.dropped.clone();
        let queue = start(vec![Box::new(probe)], 1 << 20);
        queue.push(record(0), 10);
        drop(queue);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the writer kept its sinks");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
