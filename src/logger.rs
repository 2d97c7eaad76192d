//! The cluster's log pipeline: records of every process and the sinks they go to.
//!
//! A [`Record`](record::Record) is one log entry: an `ip` request line, a `history` event, an
//! `error`, or a line of a worker's captured `output`, each tagged with the time, worker, pid,
//! generation and group it came from. [`Sink`](sink::Sink)s take records: JSON-lines files per
//! kind with size-based rotation ([`FileSink`](sink::FileSink)), an in-memory ring for queries
//! ([`RingSink`](sink::RingSink)), or one of your own.

mod actor;
pub mod record;
pub mod sink;

pub(crate) use actor::{CloseLogs, FlushLogs, LogLink, Recent};
pub use actor::{LogConfig, Logger};
pub use record::{Kind, Record, Source, Stream};
pub use sink::{FileConfig, FileSink, RingSink, Sink};
