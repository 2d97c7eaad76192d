//! The cluster's log pipeline: records of every process and the sinks they go to.
//!
//! A [`Record`] is one log entry: an `ip` request line, a `history` event, an `error`, or a line
//! of a worker's captured `output`, each tagged with the time, worker, pid, generation and group
//! it came from. [`Sink`]s take records: JSON-lines files per kind with size-based rotation
//! ([`FileSink`]), an in-memory ring for queries ([`RingSink`]), or one of your own.
//!
//! # Where the work happens
//! The master's arbiter runs every worker's proxy, so nothing slow may happen there: a disk
//! that stalls, a rotation, a sink that calls out to the network must delay logs, never the
//! frames and heartbeats of other workers. Hence two sides:
//!
//! - **On the arbiter**, records are only queued: a proxy turns a worker's output line into a
//!   record, or copies the record a worker sent as it came (its fields still JSON text:
//!   `logger/raw.rs`), and hands it to the queue (`logger/queue.rs`: bounded in bytes, and
//!   what happens when it is full). The [`Logger`] actor answers `flush_logs`, the close at
//!   stop, and `recent_logs`. A cluster nested in a worker also forwards each record to the
//!   master above here (`logger/upward.rs`): an in-memory append on that thread, never
//!   dropped, as before.
//! - **On the writer thread** (`procactor-log`, `logger/writer.rs`), records are formatted
//!   and written, one at a time (a worker's record is parsed there only if a sink needs it
//!   parsed; the files get its line written around its text): the master's `tracing` re-emission, the files and their
//!   rotation, every extra sink, then the in-memory ring, which the writer also answers
//!   `recent_logs` from, in queue order. A record leaves the queue's byte
//!   count only once written, so a slow sink fills the queue, and a full queue pauses the
//!   workers whose records are in it (backpressure): it costs neither the master's memory nor
//!   the other workers' frames and heartbeats.
//!
//! `tracing` re-emission moved to the thread because it formats a line per record and its
//! subscriber may write to a pipe that blocks (a terminal, a log collector). There a record is
//! an event whose message reads as PM2 shows a worker's line (`[workers 2 pid 25300] started`:
//! see `Record`'s `Display`) and whose fields carry the record for structured subscribers
//! (`logger/emit.rs`); the files keep JSON lines. The ring moved
//! with it because it takes each record by value after the sinks, so no record is cloned and
//! the arbiter neither keeps nor frees records; and because a query that travels the queue
//! sees every record queued before it, as when the ring was the actor's.
//!
//! # Figures
//! What was written, by kind, what was dropped, by why and kind (a full queue, a closed
//! writer, a sink's error or panic), the files' bytes, rotations and errors, and the queue's
//! fill: [`LogStats`], read on the master's thread in a few atomic loads
//! (`logger/stats.rs`). They are counted where each thing happens — output dropped on the
//! arbiter, records written on the writer thread — in relaxed atomics both share.
//!
//! # Limits
//! - `recent_logs` waits for the writer to reach it: a stuck sink delays the answer too.
//! - Records reach `tracing` from the writer thread: a subscriber set for the master's thread
//!   only (`tracing::subscriber::set_default`) does not see them; set a global one.
//! - Sinks must be [`Send`]; they are called on the writer thread, one at a time.
//! - Stop the cluster ([`Cluster::stop`](crate::Cluster::stop)) before the process exits: the
//!   stop waits until the writer has written, flushed and closed everything. A cluster that is
//!   merely dropped leaves the writer to finish on its own thread, and what it has not
//!   written when the process exits is lost.

mod actor;
mod canonical;
mod emit;
mod queue;
mod raw;
pub mod record;
pub mod sink;
mod stats;
pub(crate) mod upward;
mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use actor::Logger;
pub(crate) use actor::{CloseLogs, FlushLogs, LogLink, Recent};
pub use record::{Fields, Kind, Record, Source, Stream};
pub use sink::{FileConfig, FileSink, RingSink, Sink};
pub use stats::{DropCounts, KindCounts, LogStats};

/// How the cluster's logs are kept. The defaults work with no configuration: JSON-lines files
/// per kind in `./logs`, rotated at 10 MiB with 5 kept, the last 1 000 records of each kind in
/// memory, and every record also in the master's `tracing` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Where the files go; `None` writes no files.
    pub dir: Option<PathBuf>,
    /// Size at which a file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept per kind.
    pub keep: usize,
    /// Which kinds go to files.
    pub file_kinds: Vec<Kind>,
    /// Records of each kind kept in memory for [`Cluster::recent_logs`](crate::Cluster::recent_logs).
    pub ring: usize,
    /// Whether records also go to the master's `tracing` output (target `procactor::log`), each
    /// as an event whose message is the record as a person reads it (`[workers 2 pid 25300]
    /// started`) and whose fields are the record's (`kind`, `worker`, `pid`, `generation`,
    /// `group`, then `stream` or `fields`).
    pub tracing: bool,
    /// The lowest `tracing` level of worker code that becomes a record (`error`, `warn`,
    /// `info`, `debug`, `trace`).
    pub worker_level: String,
    /// Bytes of records that may wait for the writer thread; past it, output lines are dropped
    /// and counted (a record says how many), and a worker with records in the queue is read
    /// no further until the writer has caught up.
    pub max_queue_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: Some(PathBuf::from(FileConfig::DEFAULT_DIR)),
            max_bytes: FileConfig::DEFAULT_MAX_BYTES,
            keep: FileConfig::DEFAULT_KEEP,
            file_kinds: Kind::ALL.to_vec(),
            ring: 1_000,
            tracing: true,
            worker_level: "info".into(),
            max_queue_bytes: 8 * 1024 * 1024,
        }
    }
}
