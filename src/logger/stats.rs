//! The log pipeline's figures since start: records written and dropped by kind, bytes written
//! to the files, rotations, file errors, and the queue's fill — what an operator alerts on
//! (logs silently lost, a disk that fails, a writer that cannot keep up).
//!
//! # Why atomics
//! Records are written on the writer thread (`procactor-log`) and dropped on the master's
//! arbiter (a full queue, a closed writer) or on the writer (a sink's error); the figures are
//! read on the arbiter at scrape time. Each is a relaxed [`AtomicU64`] in the queue's gauge,
//! which both threads already share: counting a record is one uncontended add, with no lock
//! and no allocation. Reading them is a handful of loads; a [`LogStats`] read while records
//! flow is a consistent total of each counter, not of the counters together.
//!
//! # Limits
//! - `written` counts records the writer handed to every sink, whatever each made of it; a
//!   sink that refused one counts it in [`DropCounts::sink_error`] too.
//! - The files buffer their lines: a line lost when a buffered write fails at the next flush
//!   is counted in [`LogStats::file_errors`] (once per failure), not as a dropped record.
//! - Records lost when the writer thread itself panics in the middle of a batch are not
//!   counted (the panic is reported); those queued behind it are, as `writer_closed`. A
//!   record queued in the very instant the writer ends may go uncounted too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use super::record::Kind;

/// A count for each kind of record, under the kinds' own names (`ip`, `history`, `error`,
/// `output`): a fixed, bounded set, as a metric's `kind` label wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindCounts {
    /// `ip` records: requests served.
    pub ip: u64,
    /// `history` records: lifecycle and application events.
    pub history: u64,
    /// `error` records.
    pub error: u64,
    /// `output` records: lines of the processes' stdout and stderr, and the records that
    /// say how many such lines were dropped ([`Record::dropped`](super::Record::dropped)).
    pub output: u64,
}

impl KindCounts {
    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Ip => self.ip,
            Kind::History => self.history,
            Kind::Error => self.error,
            Kind::Output => self.output,
        }
    }

    /// Every kind with its count, in [`Kind::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL.into_iter().map(|kind| (kind, self.get(kind)))
    }

    /// The counts of every kind added up.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }

    fn load(counters: &[AtomicU64; Kind::ALL.len()]) -> Self {
        let n = |kind: Kind| counters[kind as usize].load(Relaxed);
        Self {
            ip: n(Kind::Ip),
            history: n(Kind::History),
            error: n(Kind::Error),
            output: n(Kind::Output),
        }
    }
}

/// Records dropped, by why and by kind. Each reason is a field, named as a metric's `reason`
/// label would be ([`by_reason`](Self::by_reason) lists them with those names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropCounts {
    /// Captured output lines refused because the queue to the writer was full: every line
    /// counted, including those already reported by a dropped-lines record. Only `output`
    /// is ever dropped so; other records wait (backpressure).
    pub queue_full: KindCounts,
    /// Records queued after the writer thread had ended (closed at the cluster's stop, or
    /// after it panicked), never written.
    pub writer_closed: KindCounts,
    /// Records a sink refused with an error: the files or an extra sink (`log_sink`), one per
    /// sink that refused it. The record still went to the other sinks.
    pub sink_error: KindCounts,
    /// Records an extra sink did not get because it panicked: the one it panicked on and
    /// every one after.
    pub sink_panicked: KindCounts,
}

impl DropCounts {
    /// The reasons' names, in the order of [`by_reason`](Self::by_reason).
    pub const REASONS: [&'static str; 4] =
        ["queue_full", "writer_closed", "sink_error", "sink_panicked"];

    /// Each reason with its counts, named as in [`REASONS`](Self::REASONS).
    pub fn by_reason(&self) -> [(&'static str, &KindCounts); 4] {
        let [queue_full, writer_closed, sink_error, sink_panicked] = Self::REASONS;
        [
            (queue_full, &self.queue_full),
            (writer_closed, &self.writer_closed),
            (sink_error, &self.sink_error),
            (sink_panicked, &self.sink_panicked),
        ]
    }

    /// Every record dropped, whatever the reason or kind.
    pub fn total(&self) -> u64 {
        self.by_reason()
            .iter()
            .map(|(_, counts)| counts.total())
            .sum()
    }
}

/// The log pipeline's figures: counters since the cluster started (they only grow) and the
/// queue's fill now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogStats {
    /// Records written by the writer thread, by kind: handed to the files (if their kind is
    /// written to files), every extra sink, the in-memory ring and `tracing`.
    pub written: KindCounts,
    /// Records dropped, by reason and kind.
    pub dropped: DropCounts,
    /// Bytes of JSON lines written to the log files (the lines' length; buffered lines count
    /// once written to the buffer).
    pub file_bytes: u64,
    /// Log files rotated.
    pub file_rotations: u64,
    /// I/O errors of the log files: failed writes, flushes and rotations (each counted; the
    /// `tracing` error is logged once per distinct error).
    pub file_errors: u64,
    /// Bytes of records waiting for the writer now (a gauge; as the queue counts them, see
    /// [`LogConfig::max_queue_bytes`](super::LogConfig::max_queue_bytes)).
    pub queued_bytes: u64,
    /// The queue's limit, [`LogConfig::max_queue_bytes`](super::LogConfig::max_queue_bytes):
    /// past it, output lines are dropped and workers that log are paused.
    pub max_queue_bytes: u64,
}

/// Why a record was dropped; see [`DropCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    WriterClosed,
    SinkError,
    SinkPanicked,
}

/// The counters behind [`LogStats`], shared by the arbiter and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    written: [AtomicU64; Kind::ALL.len()],
    /// Indexed by `DropReason as usize`, then `Kind as usize`.
    dropped: [[AtomicU64; Kind::ALL.len()]; DropCounts::REASONS.len()],
    file_bytes: AtomicU64,
    file_rotations: AtomicU64,
    file_errors: AtomicU64,
}

impl LogCounters {
    /// A record of `kind` written.
    pub(crate) fn written(&self, kind: Kind) {
        self.written[kind as usize].fetch_add(1, Relaxed);
    }

    /// `n` records of `kind` dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason, kind: Kind, n: u64) {
        self.dropped[reason as usize][kind as usize].fetch_add(n, Relaxed);
    }

    /// An I/O error of the log files.
    pub(crate) fn file_error(&self) {
        self.file_errors.fetch_add(1, Relaxed);
    }

    /// The files' own running totals (see `FileSink::tally`), published as they are.
    pub(crate) fn files(&self, bytes: u64, rotations: u64) {
        self.file_bytes.store(bytes, Relaxed);
        self.file_rotations.store(rotations, Relaxed);
    }

    /// The figures now, with the queue's fill.
    pub(crate) fn snapshot(&self, queued_bytes: usize, max_queue_bytes: usize) -> LogStats {
        let dropped = |reason: DropReason| KindCounts::load(&self.dropped[reason as usize]);
        LogStats {
            written: KindCounts::load(&self.written),
            dropped: DropCounts {
                queue_full: dropped(DropReason::QueueFull),
                writer_closed: dropped(DropReason::WriterClosed),
                sink_error: dropped(DropReason::SinkError),
                sink_panicked: dropped(DropReason::SinkPanicked),
            },
            file_bytes: self.file_bytes.load(Relaxed),
            file_rotations: self.file_rotations.load(Relaxed),
            file_errors: self.file_errors.load(Relaxed),
            queued_bytes: queued_bytes as u64,
            max_queue_bytes: max_queue_bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    use actix::Actor;

    use super::*;
    use crate::logger::queue::LogQueue;
    use crate::logger::writer::Writer;
    use crate::logger::{
        CloseLogs, Fields, FileConfig, FileSink, LogConfig, LogLink, Logger, Record, RingSink,
        Sink, Source, Stream,
    };

    /// Generous: two shared cores.
    const DEADLINE: Duration = Duration::from_secs(30);

    /// An `ip` record's fields as a worker sends them (canonical: written around the text).
    const IP_FIELDS: &str =
        r#"{"client":"10.0.0.1","duration_ms":0.1,"method":"GET","path":"/","status":200}"#;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, Relaxed);
            let pid = std::process::id();
            let dir = std::env::temp_dir().join(format!("procactor-logstats-{pid}-{n}-{test}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// The bytes of every file in it (a symbolic link's target's).
        fn bytes(&self) -> u64 {
            std::fs::read_dir(&self.0)
                .unwrap()
                .map(|entry| std::fs::metadata(entry.unwrap().path()).unwrap().len())
                .sum()
        }

        fn files(&self) -> usize {
            std::fs::read_dir(&self.0).unwrap().count()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn worker(id: usize) -> Source {
        Source {
            worker: Some(id),
            pid: 4242,
            generation: 1,
            group: "g".to_owned(),
        }
    }

    fn history(n: usize) -> Record {
        Record::history(worker(1), "tick", Fields::new().with("n", n))
    }

    fn error(message: &str) -> Record {
        Record::error(worker(1), message, Vec::new(), None)
    }

    fn output(stream: Stream, n: usize) -> Record {
        Record::output(worker(1), stream, &format!("line {n}"), false)
    }

    /// The cluster's logger for `config` with `extra` sinks, and the link proxies use.
    fn logger(config: &LogConfig, extra: Vec<Box<dyn Sink>>) -> LogLink {
        let logger = Logger::new(config, extra).unwrap();
        let queue = logger.queue();
        LogLink {
            logger: logger.start(),
            queue,
        }
    }

    /// A writer thread over `files` and `extra` (a ring of 10), and its queue of `limit` bytes.
    fn writer(files: Option<FileSink>, extra: Vec<Box<dyn Sink>>, limit: usize) -> LogQueue {
        let gauge = LogQueue::gauge(limit);
        let (jobs, queued) = mpsc::channel();
        let writer = Writer::new(files, extra, RingSink::new(10), false, Arc::clone(&gauge));
        writer.spawn(queued).unwrap();
        LogQueue::new(gauge, jobs, false)
    }

    /// Holds the writer in its first write until released; lets every later one through.
    struct Hold {
        entered: mpsc::Sender<()>,
        release: Option<mpsc::Receiver<()>>,
    }

    impl Hold {
        /// The sink, a receiver told when the writer is held, and the sender that releases it.
        fn new() -> (Self, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (entered, held) = mpsc::channel();
            let (release, released) = mpsc::channel();
            let hold = Hold {
                entered,
                release: Some(released),
            };
            (hold, held, release)
        }
    }

    impl Sink for Hold {
        fn write(&mut self, _: &Record) -> io::Result<()> {
            if let Some(release) = self.release.take() {
                let _ = self.entered.send(());
                let _ = release.recv_timeout(DEADLINE);
            }
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Refuses `error` records; panics on record `panic_at` (0-based) if set.
    #[derive(Default)]
    struct Picky {
        seen: usize,
        panic_at: Option<usize>,
        refuse_errors: bool,
        taken: Arc<Mutex<Vec<Kind>>>,
    }

    impl Sink for Picky {
        fn write(&mut self, record: &Record) -> io::Result<()> {
            self.seen += 1;
            if self.panic_at == Some(self.seen - 1) {
                panic!("picky sink told to panic");
            }
            if self.refuse_errors && record.kind == Kind::Error {
                return Err(io::Error::other("no errors here"));
            }
            self.taken.lock().unwrap().push(record.kind);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes records of every kind the ways a cluster does — captured output, the master's
    /// records, workers' records as they sent them (canonical or not) — through the logger to
    /// `dir`, flushes, and returns the figures.
    async fn write_every_kind(dir: &TempDir, extra: Vec<Box<dyn Sink>>) -> LogStats {
        let config = LogConfig {
            dir: Some(dir.0.clone()),
            tracing: false,
            ..LogConfig::default()
        };
        let link = logger(&config, extra);
        let dropped = Cell::new(0);
        for n in 0..3 {
            link.send(output(Stream::Stdout, n), &dropped);
        }
        for n in 0..2 {
            link.send(output(Stream::Stderr, n), &dropped);
        }
        link.send_always(history(0));
        link.send_always(history(1));
        link.send_always(error("boom"));
        link.send_always(Record::ip(
            Source::master("g"),
            "c",
            "GET",
            "/",
            200,
            Duration::ZERO,
        ));
        for n in 0..4 {
            link.send_fields(worker(2), Kind::Ip, n, IP_FIELDS);
        }
        // Not canonical (keys out of order): parsed on the writer thread.
        link.send_fields(worker(2), Kind::History, 9, r#"{"b":1,"a":2}"#);
        let stats = link.stats();
        assert_eq!(stats.max_queue_bytes, config.max_queue_bytes as u64);
        link.logger.send(crate::logger::FlushLogs).await.unwrap();
        let stats = link.stats();
        assert_eq!(dropped.get(), 0);
        link.logger.send(CloseLogs).await.unwrap();
        stats
    }

    #[actix::test]
    async fn every_record_written_is_counted_by_kind_with_the_files_bytes() {
        let expected = KindCounts {
            ip: 5,
            history: 3,
            error: 1,
            output: 5,
        };
        // Without an extra sink workers' records are written around their text; with one,
        // parsed first: both are counted alike.
        let taken = Arc::new(Mutex::new(Vec::new()));
        let probe = Picky {
            taken: Arc::clone(&taken),
            ..Picky::default()
        };
        for extra in [vec![], vec![Box::new(probe) as Box<dyn Sink>]] {
            let dir = TempDir::new("every_kind");
            let stats = write_every_kind(&dir, extra).await;
            assert_eq!(stats.written, expected);
            assert_eq!(stats.written.total(), 14);
            assert_eq!(stats.dropped, DropCounts::default());
            assert_eq!(stats.file_bytes, dir.bytes(), "the lines on disk");
            assert!(stats.file_bytes > 0);
            assert_eq!((stats.file_rotations, stats.file_errors), (0, 0));
            assert_eq!(stats.queued_bytes, 0, "everything written is counted out");
        }
        assert_eq!(
            taken.lock().unwrap().len(),
            14,
            "the extra sink took them all"
        );
    }

    #[actix::test]
    async fn every_output_line_refused_by_a_full_queue_is_counted_reported_or_not() {
        let (hold, held, release) = Hold::new();
        let config = LogConfig {
            dir: None,
            tracing: false,
            max_queue_bytes: 4096,
            ..LogConfig::default()
        };
        let link = logger(&config, vec![Box::new(hold)]);
        link.send_always(history(0));
        held.recv_timeout(DEADLINE)
            .expect("the writer takes the first record");
        let dropped = Cell::new(0);
        let (mut admitted, mut refused) = (0, 0);
        for round in 0..2 {
            for n in 0..100 {
                let before = dropped.get();
                link.send(output(Stream::Stderr, n), &dropped);
                if dropped.get() > before {
                    refused += 1;
                } else {
                    admitted += 1;
                }
            }
            if round == 0 {
                // What is reported leaves the proxy's count, not the figures.
                link.flush_dropped(&worker(1), &dropped);
                assert_eq!(dropped.get(), 0);
            }
        }
        assert!(
            admitted > 0 && refused > 100,
            "{admitted} in, {refused} out"
        );
        let stats = link.stats();
        assert_eq!(stats.dropped.queue_full.output, refused);
        assert_eq!(stats.dropped.total(), refused, "nothing else dropped");
        assert!(stats.queued_bytes > 0);
        assert_eq!(stats.written, KindCounts::default(), "the writer is held");
        release.send(()).unwrap();
        link.logger.send(crate::logger::FlushLogs).await.unwrap();
        let stats = link.stats();
        assert_eq!(stats.dropped.queue_full.output, refused);
        let written = KindCounts {
            history: 1,
            output: admitted + 1, // and the record saying how many were dropped
            ..KindCounts::default()
        };
        assert_eq!(stats.written, written);
        assert_eq!(stats.queued_bytes, 0);
        link.logger.send(CloseLogs).await.unwrap();
    }

    #[test]
    fn records_a_sink_refuses_or_misses_after_panicking_are_counted() {
        let refusing = Picky {
            refuse_errors: true,
            ..Picky::default()
        };
        let panicking = Picky {
            panic_at: Some(1),
            ..Picky::default()
        };
        let queue = writer(None, vec![Box::new(refusing), Box::new(panicking)], 1 << 20);
        for record in [history(0), history(1), history(2), error("a"), error("b")] {
            let size = record.approx_size();
            queue.push(record, size);
        }
        queue.flush().blocking_recv().unwrap();
        let stats = queue.stats();
        let kinds = |history, error| KindCounts {
            history,
            error,
            ..KindCounts::default()
        };
        assert_eq!(stats.written, kinds(3, 2), "the other sinks had them all");
        assert_eq!(stats.dropped.sink_error, kinds(0, 2));
        assert_eq!(stats.dropped.sink_panicked, kinds(2, 2), "from record 1 on");
        assert_eq!(stats.dropped.total(), 6);
        assert_eq!(stats.file_errors, 0, "not the files'");
        queue.close().blocking_recv().unwrap();
    }

    #[test]
    fn the_files_count_their_bytes_rotations_and_errors() {
        let dir = TempDir::new("files");
        // `error.log` is a disk that is always full.
        std::os::unix::fs::symlink("/dev/full", dir.0.join("error.log")).unwrap();
        // Every line but a file's first rotates it.
        let files = FileSink::open(FileConfig::new(&dir.0).max_bytes(1).keep(10)).unwrap();
        let queue = writer(Some(files), vec![], 1 << 20);
        for n in 0..4 {
            let record = history(n);
            let size = record.approx_size();
            queue.push(record, size);
        }
        let ip = Record::ip(worker(1), "c", "GET", "/", 200, Duration::ZERO);
        queue.push(ip.clone(), ip.approx_size());
        queue.push(ip.clone(), ip.approx_size());
        // Longer than the file's buffer: written at once, and refused.
        let big = error(&"x".repeat(64 * 1024));
        let size = big.approx_size();
        queue.push(big, size);
        queue.flush().blocking_recv().unwrap();
        let stats = queue.stats();
        assert_eq!(stats.written.total(), 7);
        assert_eq!(stats.file_rotations, 3 + 1);
        assert_eq!(stats.file_bytes, dir.bytes(), "/dev/full is empty");
        assert_eq!(
            dir.files(),
            4 + 2 + 1 + 1,
            "history and ip, rotated; error; output"
        );
        assert_eq!(stats.file_errors, 1);
        let refused = KindCounts {
            error: 1,
            ..KindCounts::default()
        };
        assert_eq!(stats.dropped.sink_error, refused);
        assert_eq!(stats.dropped.total(), 1);
        queue.close().blocking_recv().unwrap();
    }

    #[actix::test]
    async fn records_queued_for_a_writer_that_has_ended_are_counted_as_dropped() {
        let (hold, held, release) = Hold::new();
        let queue = std::rc::Rc::new(writer(None, vec![Box::new(hold)], 1 << 20));
        queue.push(history(0), 10);
        held.recv_timeout(DEADLINE).unwrap();
        // Queued behind the close: never written.
        let closed = queue.close();
        for message in ["a", "b", "c"] {
            queue.push(error(message), 10);
        }
        release.send(()).unwrap();
        closed.await.unwrap();
        // Queued once the thread has gone, the master's and the workers'.
        queue.push(history(1), 10);
        for n in 0..2 {
            queue.push_fields(worker(3), Kind::Ip, n, IP_FIELDS);
        }
        tokio::task::yield_now().await;
        let stats = queue.stats();
        assert_eq!(
            stats.written,
            KindCounts {
                history: 1,
                ..KindCounts::default()
            }
        );
        let lost = KindCounts {
            ip: 2,
            history: 1,
            error: 3,
            output: 0,
        };
        assert_eq!(stats.dropped.writer_closed, lost);
        assert_eq!(stats.dropped.total(), 6);
        assert_eq!(stats.queued_bytes, 0);
    }

    #[test]
    fn the_figures_read_back_through_serde_and_list_every_reason_and_kind() {
        let counters = LogCounters::default();
        counters.written(Kind::Ip);
        counters.dropped(DropReason::SinkPanicked, Kind::Output, 3);
        counters.files(120, 2);
        counters.file_error();
        let stats = counters.snapshot(5, 10);
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["written"]["ip"], 1);
        assert_eq!(json["dropped"]["sink_panicked"]["output"], 3);
        assert_eq!(json["file_bytes"], 120);
        assert_eq!(serde_json::from_value::<LogStats>(json).unwrap(), stats);
        let reasons: Vec<_> = stats.dropped.by_reason().map(|(reason, _)| reason).into();
        assert_eq!(reasons, DropCounts::REASONS);
        assert_eq!(stats.dropped.by_reason()[3].1.output, 3);
        let kinds: Vec<_> = stats.written.iter().map(|(kind, _)| kind).collect();
        assert_eq!(kinds, Kind::ALL);
        assert_eq!(stats.written.get(Kind::Ip), 1);
        assert_eq!((stats.queued_bytes, stats.max_queue_bytes), (5, 10));
        assert_eq!(stats.file_rotations, 2);
        assert_eq!(stats.file_errors, 1);
    }
}
