//! The logger's actix face on the master's arbiter: the [`Logger`] actor that answers
//! flushes, the close and queries of recent records, and the [`LogLink`] proxies queue their
//! workers' records with. Neither writes anything: that is the [writer thread](super::writer).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;

use super::queue::LogQueue;
use super::record::{Kind, Record, Source};
use super::sink::{FileConfig, FileSink, RingSink, Sink};
use super::stats::LogStats;
use super::writer::Writer;
use super::LogConfig;

/// Where a proxy sends its worker's records.
#[derive(Debug, Clone)]
pub(crate) struct LogLink {
    pub(crate) logger: Addr<Logger>,
    pub(crate) queue: Rc<LogQueue>,
}

impl LogLink {
    /// Queues captured output, or counts it in `dropped` when the queue is full (and in the
    /// figures, [`stats`](Self::stats), which keep the total): output is what floods.
    pub(crate) fn send(&self, record: Record, dropped: &Cell<u64>) {
        let size = record.approx_size();
        if !self.queue.admit(record, size) {
            dropped.set(dropped.get() + 1);
        }
    }

    /// Queues a record that must not be dropped (records a worker sent on purpose; a count of
    /// dropped lines). They are bounded by backpressure instead: past the limit, the proxy
    /// reads nothing more from that worker until the writer has caught up.
    pub(crate) fn send_always(&self, record: Record) {
        let size = record.approx_size();
        self.queue.push(record, size);
    }

    /// Queues a record a worker sent on purpose, its fields the JSON text of its frame (see
    /// `logger/raw.rs`); never dropped, as [`send_always`](Self::send_always).
    pub(crate) fn send_fields(&self, source: Source, kind: Kind, time_ns: u64, fields: &str) {
        self.queue.push_fields(source, kind, time_ns, fields);
    }

    /// The pipeline's figures now (records written and dropped since start, the files', the
    /// queue's fill): a few atomic loads, nothing waited for.
    pub(crate) fn stats(&self) -> LogStats {
        self.queue.stats()
    }

    /// Reports what `dropped` counted, once there is room again.
    pub(crate) fn report_dropped(&self, source: &Source, dropped: &Cell<u64>) {
        if dropped.get() > 0 && self.queue.roomy() {
            self.flush_dropped(source, dropped);
        }
    }

    /// Reports what `dropped` counted now.
    pub(crate) fn flush_dropped(&self, source: &Source, dropped: &Cell<u64>) {
        let n = dropped.replace(0);
        if n > 0 {
            self.send_always(Record::dropped(source.clone(), n));
        }
    }
}

/// Waits until the writer has written and flushed every record queued before it; sent by
/// [`Cluster::flush_logs`](crate::Cluster::flush_logs).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct FlushLogs;

/// Writes everything queued, flushes, closes the sinks, ends the writer thread and stops the
/// logger; sent when the cluster has stopped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CloseLogs;

/// The last `n` records of a kind, optionally of one worker, from the writer's ring: answered
/// once every record queued before the query has been written.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Record>")]
pub(crate) struct Recent {
    pub(crate) kind: Kind,
    pub(crate) n: usize,
    pub(crate) worker: Option<usize>,
}

/// The logger actor: the master's handle on the cluster's log pipeline. Records reach the
/// sinks through its queue, in arrival order, written by one thread (`procactor-log`).
pub struct Logger {
    queue: Rc<LogQueue>,
    dir: Option<PathBuf>,
    sinks: usize,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("files", &self.dir)
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl Logger {
    /// A logger for `config`, with `extra` sinks besides its own; its writer thread starts now.
    ///
    /// # Errors
    /// When the log directory cannot be created or its files opened, or no thread can be
    /// started.
    pub(crate) fn new(config: &LogConfig, extra: Vec<Box<dyn Sink>>) -> std::io::Result<Self> {
        // A cluster inside a worker writes no files: its records go up (see `upward`).
        let nested = super::upward::nested();
        let dir = if nested { None } else { config.dir.as_ref() };
        let files = match dir {
            Some(dir) => Some(FileSink::open(
                FileConfig::new(dir)
                    .max_bytes(config.max_bytes)
                    .keep(config.keep)
                    .kinds(config.file_kinds.iter().copied()),
            )?),
            None => None,
        };
        let dir = files.as_ref().map(|files| files.dir().to_path_buf());
        let sinks = extra.len();
        let gauge = LogQueue::gauge(config.max_queue_bytes);
        let (jobs, queued) = std::sync::mpsc::channel();
        let writer = Writer::new(
            files,
            extra,
            RingSink::new(config.ring),
            config.tracing,
            Arc::clone(&gauge),
        );
        writer.spawn(queued)?;
        Ok(Self {
            queue: Rc::new(LogQueue::new(gauge, jobs, nested)),
            dir,
            sinks,
        })
    }

    pub(crate) fn queue(&self) -> Rc<LogQueue> {
        Rc::clone(&self.queue)
    }
}

impl Actor for Logger {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Not waited for: the writer flushes in its own time.
        drop(self.queue.flush());
    }
}

impl Handler<FlushLogs> for Logger {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushLogs, _ctx: &mut Context<Self>) -> Self::Result {
        let flushed = self.queue.flush();
        Box::pin(async move {
            // An error means the writer is gone: there is nothing left to wait for.
            let _ = flushed.await;
        })
    }
}

impl Handler<CloseLogs> for Logger {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: CloseLogs, _ctx: &mut Context<Self>) -> Self::Result {
        // The thread answers after dropping its sinks: awaiting the answer is the join, and
        // the arbiter goes on meanwhile.
        let closed = self.queue.close();
        Box::pin(
            async move {
                let _ = closed.await;
            }
            .into_actor(self)
            .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

impl Handler<Recent> for Logger {
    type Result = ResponseFuture<Vec<Record>>;

    fn handle(&mut self, q: Recent, _ctx: &mut Context<Self>) -> Self::Result {
        let recent = self.queue.recent(q.kind, q.n, q.worker);
        // No answer means the writer is gone, and its ring with it.
        Box::pin(async move { recent.await.unwrap_or_default() })
    }
}
