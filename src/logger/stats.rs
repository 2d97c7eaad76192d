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
