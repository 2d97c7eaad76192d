//! The logger actor: one writer for every record of the cluster.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::logger::record::{Kind, Record, Source};
use crate::logger::sink::{FileConfig, FileSink, RingSink, Sink};

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
    /// Whether records also go to the master's `tracing` output (target `procactor::log`).
    pub tracing: bool,
    /// The lowest `tracing` level of worker code that becomes a record (`error`, `warn`,
    /// `info`, `debug`, `trace`).
    pub worker_level: String,
    /// Bytes of records that may wait for the writer; past it, output lines are dropped and
    /// counted, and a record says how many.
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

/// Records on their way to the logger, counted so that the queue stays bounded.
#[derive(Debug)]
pub(crate) struct LogQueue {
    queued: Cell<usize>,
    limit: usize,
    /// Proxies that stopped reading their worker's records until the queue drains.
    waiting: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl LogQueue {
    /// Whether the queue is over its limit: a proxy then reads no more from its worker until
    /// the logger has caught up (see [`wait`](Self::wait)).
    pub(crate) fn full(&self) -> bool {
        self.queued.get() > self.limit
    }

    /// Wakes `waker` once the queue is down to half its limit.
    pub(crate) fn wait(&self, waker: &std::task::Waker) {
        let mut waiting = self.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }

    /// Whether a record of `size` bytes may be queued now (and counts it if so).
    pub(crate) fn admit(&self, size: usize) -> bool {
        if self.queued.get() + size > self.limit {
            return false;
        }
        self.queued.set(self.queued.get() + size);
        true
    }

    fn written(&self, size: usize) {
        self.queued.set(self.queued.get().saturating_sub(size));
        if self.queued.get() <= self.limit / 2 && !self.waiting.borrow().is_empty() {
            for waker in self.waiting.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }
}

/// Where a proxy sends its worker's records.
#[derive(Debug, Clone)]
pub(crate) struct LogLink {
    pub(crate) logger: Addr<Logger>,
    pub(crate) queue: Rc<LogQueue>,
}

impl LogLink {
    /// Queues captured output, or counts it in `dropped` when the queue is full: output is
    /// what floods.
    pub(crate) fn send(&self, record: Record, dropped: &Cell<u64>) {
        let size = record.approx_size();
        if !self.queue.admit(size) {
            dropped.set(dropped.get() + 1);
            return;
        }
        self.logger.do_send(Log(record, size));
    }

    /// Queues a record that must not be dropped (records a worker sent on purpose; a count of
    /// dropped lines). They are bounded by backpressure instead: past the limit, the proxy
    /// reads nothing more from that worker until the logger has caught up.
    pub(crate) fn send_always(&self, record: Record) {
        let size = record.approx_size();
        self.queue.queued.set(self.queue.queued.get() + size);
        self.logger.do_send(Log(record, size));
    }

    /// Reports what `dropped` counted, once there is room again.
    pub(crate) fn report_dropped(&self, source: &Source, dropped: &Cell<u64>) {
        if dropped.get() > 0 && self.queue.queued.get() < self.queue.limit / 2 {
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

/// One record for the logger, with its queue accounting.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Log(pub(crate) Record, pub(crate) usize);

/// Writes and flushes everything queued; sent when the cluster stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct FlushLogs;

/// Writes everything queued, flushes and stops the logger; sent when the cluster has stopped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CloseLogs;

/// The last `n` records of a kind, optionally of one worker.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Record>")]
pub(crate) struct Recent {
    pub(crate) kind: Kind,
    pub(crate) n: usize,
    pub(crate) worker: Option<usize>,
}

/// The logger actor: every record of the cluster goes through it to the sinks, written by one
/// writer in arrival order.
pub struct Logger {
    files: Option<FileSink>,
    ring: RingSink,
    extra: Vec<Box<dyn Sink>>,
    tracing: bool,
    queue: Rc<LogQueue>,
    failed: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("files", &self.files.as_ref().map(|f| f.dir().to_path_buf()))
            .field("sinks", &self.extra.len())
            .finish_non_exhaustive()
    }
}

impl Logger {
    /// A logger for `config`, with `extra` sinks besides its own.
    ///
    /// # Errors
    /// When the log directory cannot be created or its files opened.
    pub(crate) fn new(config: &LogConfig, mut extra: Vec<Box<dyn Sink>>) -> std::io::Result<Self> {
        // A cluster inside a worker (a supervision tree) sends its records up to the master
        // above, which writes them with everyone else's: one writer per file.
        let nested = crate::worker::parent_log().is_some();
        if nested {
            extra.push(Box::new(Upward));
        }
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
        Ok(Self {
            files,
            ring: RingSink::new(config.ring),
            extra,
            tracing: config.tracing,
            queue: Rc::new(LogQueue {
                queued: Cell::new(0),
                limit: config.max_queue_bytes,
                waiting: std::cell::RefCell::default(),
            }),
            failed: BTreeMap::new(),
        })
    }

    pub(crate) fn queue(&self) -> Rc<LogQueue> {
        Rc::clone(&self.queue)
    }

    fn write(&mut self, record: &Record) {
        if self.tracing {
            emit(record);
        }
        if let Some(files) = self.files.as_mut() {
            if let Err(e) = files.write(record) {
                self.failure("files", &e);
            }
        }
        for sink in &mut self.extra {
            if let Err(e) = sink.write(record) {
                tracing::warn!(error = %e, "log sink failed");
            }
        }
    }

    /// A failing sink is reported once per distinct error, not once per record.
    fn failure(&mut self, sink: &'static str, e: &std::io::Error) {
        let text = e.to_string();
        if self.failed.get(sink) != Some(&text) {
            tracing::error!(sink, error = %text, "cannot write logs");
            self.failed.insert(sink, text);
        }
    }

    fn flush(&mut self) {
        if let Some(files) = self.files.as_mut() {
            if let Err(e) = files.flush() {
                self.failure("files", &e);
            }
        }
        for sink in &mut self.extra {
            let _ = sink.flush();
        }
    }
}

/// Sends records up to the master of the worker this cluster runs in, each with where it came
/// from in this cluster (`origin`), since the master above stamps it as this worker's.
struct Upward;

impl Sink for Upward {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        if let Some(parent) = crate::worker::parent_log() {
            let mut fields = record.fields.clone();
            fields.insert(
                "origin".into(),
                serde_json::json!({
                    "worker": record.worker,
                    "pid": record.pid,
                    "generation": record.generation,
                    "group": record.group,
                }),
            );
            parent.record(record.kind, fields);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A record as a `tracing` event of the master.
fn emit(record: &Record) {
    let wanted = match record.kind {
        Kind::Error => tracing::enabled!(target: "procactor::log", tracing::Level::WARN),
        _ => tracing::enabled!(target: "procactor::log", tracing::Level::INFO),
    };
    if !wanted {
        return;
    }
    let mut line = Vec::new();
    record.to_json_line(&mut line);
    let line = String::from_utf8_lossy(&line);
    let line = line.trim_end();
    match record.kind {
        Kind::Error => {
            tracing::warn!(target: "procactor::log", worker = record.worker, pid = record.pid, "{line}")
        }
        _ => {
            tracing::info!(target: "procactor::log", worker = record.worker, pid = record.pid, "{line}")
        }
    }
}

impl Actor for Logger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Buffered file writes reach the OS at least once a second.
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| act.flush());
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Log> for Logger {
    type Result = ();

    fn handle(&mut self, Log(record, size): Log, _ctx: &mut Context<Self>) {
        self.write(&record);
        self.ring.push(record);
        self.queue.written(size);
    }
}

impl Handler<FlushLogs> for Logger {
    type Result = ();

    fn handle(&mut self, _: FlushLogs, _ctx: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<CloseLogs> for Logger {
    type Result = ();

    fn handle(&mut self, _: CloseLogs, ctx: &mut Context<Self>) {
        // `stopped` flushes, and the files close when the actor is dropped.
        ctx.stop();
    }
}

impl Handler<Recent> for Logger {
    type Result = MessageResult<Recent>;

    fn handle(&mut self, q: Recent, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ring.recent(q.kind, q.n, q.worker))
    }
}
