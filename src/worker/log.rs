//! The worker's side of the cluster's logs: records sent on purpose ([`LogSender`]) and the
//! `tracing` events of worker code ([`LogLayer`]), both carried to the master's logger.
//!
//! Both may be used from any thread of the worker (an HTTP server's threads included): records
//! go through a bounded channel to the runtime's thread, which writes them to the master. When
//! the channel is full (the master is not keeping up), records are dropped and counted. On the
//! runtime's thread itself a record is framed at once, its fields serialised into a reused
//! buffer (an `ip` record's without building their map): the master copies that JSON text into
//! its files as it is (see `logger/raw.rs`), so it is what the master writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::logger::record::write_ip_fields;
use crate::logger::{Fields, Kind, Record, Source};
use crate::protocol::Envelope;
use crate::worker::uplink::Uplink;

/// The fields are built by the same [`Record`] constructors as the master's; who sent them is
/// stamped by the master, so the source here is a placeholder.
fn here() -> Source {
    Source {
        worker: None,
        pid: 0,
        generation: 0,
        group: String::new(),
    }
}

/// The most a worker keeps allocated for serialising records' fields between records.
const SCRATCH_KEPT: usize = 64 * 1024;

/// Records that may wait for the runtime's thread.
pub(crate) const QUEUE: usize = 16 * 1024;

/// One record on its way to the master.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) kind: Kind,
    pub(crate) time_ns: u64,
    pub(crate) fields: String,
}

/// Sends log records to the cluster's logger from any thread of a worker; cheap to clone.
///
/// Every record is stamped by the master with this worker's id, pid, generation and group.
#[derive(Debug, Clone)]
pub struct LogSender {
    tx: mpsc::Sender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

static GLOBAL: OnceLock<LogSender> = OnceLock::new();

thread_local! {
    /// On the runtime's thread, records go straight to the master's channel: a handler that
    /// logs in a loop never fills the cross-thread queue.
    static DIRECT: std::cell::RefCell<Option<std::rc::Rc<Uplink>>> =
        const { std::cell::RefCell::new(None) };
    /// The fields of the record being sent from the runtime's thread, kept to reuse its
    /// allocation.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes this thread (the runtime's) write records directly to `outbox`.
pub(crate) fn write_directly(outbox: std::rc::Rc<Uplink>) {
    DIRECT.with(|d| *d.borrow_mut() = Some(outbox));
}

impl LogSender {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sender = Self {
            tx,
            dropped: Arc::default(),
        };
        if GLOBAL.set(sender.clone()).is_ok() {
            // A cluster started inside this worker sends its records up through it.
            crate::logger::upward::set_parent(|kind, fields| {
                if let Some(sender) = GLOBAL.get() {
                    sender.record(kind, fields);
                }
            });
        }
        (sender, rx)
    }

    /// A record of `kind` with these fields.
    pub fn record(&self, kind: Kind, fields: Fields) {
        self.send(kind, |out| {
            serde_json::to_writer(out, &fields.0).expect("a JSON map serializes into a Vec");
        });
    }

    /// Sends a record of `kind` whose fields `write` appends as a JSON object. On the
    /// runtime's thread it is framed at once from a reused buffer; from any other thread it
    /// crosses the channel.
    fn send(&self, kind: Kind, write: impl FnOnce(&mut Vec<u8>)) {
        let time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut write = Some(write);
        DIRECT.with(|direct| {
            let direct = direct.borrow();
            let Some(outbox) = direct.as_ref() else {
                return;
            };
            // Busy only if framing a record logged another (a `tracing` event on the way).
            let _ = SCRATCH.with(|scratch| {
                let mut fields = scratch.try_borrow_mut()?;
                fields.clear();
                (write.take().expect("written once"))(&mut fields);
                push_fields(outbox, kind, time_ns, as_text(&fields));
                if fields.capacity() > SCRATCH_KEPT {
                    *fields = Vec::new();
                }
                Ok::<_, std::cell::BorrowMutError>(())
            });
        });
        let Some(write) = write else { return };
        let mut fields = Vec::new();
        write(&mut fields);
        let outgoing = Outgoing {
            kind,
            time_ns,
            fields: String::from_utf8(fields).expect("serde_json writes UTF-8"),
        };
        if self.tx.try_send(outgoing).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An `ip` record: a request served (`method` and `path`, or a label and an operation).
    pub fn ip(&self, client: &str, method: &str, path: &str, status: u16, duration: Duration) {
        // The fields `Record::ip` would hold, written without building them.
        self.send(Kind::Ip, |out| {
            write_ip_fields(out, client, method, path, status, duration);
        });
    }

    /// A `history` record: an event with structured fields.
    pub fn history(&self, event: &str, fields: Fields) {
        self.record(Kind::History, Record::history(here(), event, fields).fields);
    }

    /// An `error` record: a message, its chain of causes (outermost first) and where.
    pub fn error(&self, message: &str, causes: Vec<String>, location: Option<&str>) {
        let record = Record::error(here(), message, causes, location.map(str::to_owned));
        self.record(Kind::Error, record.fields);
    }

    /// An `error` record of `error` and its sources.
    pub fn error_chain(&self, error: &dyn std::error::Error, location: Option<&str>) {
        let record = Record::from_error(here(), error, location.map(str::to_owned));
        self.record(Kind::Error, record.fields);
    }

    /// Records dropped so far because the channel to the runtime's thread was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A `tracing` layer that turns the events of worker code into log records: `ERROR` events
/// into `error` records, the others into `history` records, fields preserved. The worker runtime
/// installs it (unless the program installed a subscriber of its own first; add this layer to
/// it then), at the level the master's `LogConfig::worker_level` names.
#[derive(Debug, Clone)]
pub struct LogLayer {
    level: Level,
}

impl LogLayer {
    /// A layer passing events at `level` and above.
    pub fn new(level: Level) -> Self {
        Self { level }
    }
}

#[derive(Default)]
struct Visited(Map<String, Value>);

impl Visit for Visited {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.level {
            return;
        }
        let Some(sender) = GLOBAL.get() else { return };
        let mut fields = Visited::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields
            .remove("message")
            .and_then(|m| m.as_str().map(str::to_owned))
            .unwrap_or_default();
        fields.insert("level".into(), meta.level().as_str().into());
        fields.insert("target".into(), meta.target().into());
        if *meta.level() == Level::ERROR {
            let location = meta
                .file()
                .map(|f| format!("{f}:{}", meta.line().unwrap_or(0)));
            fields.insert("message".into(), message.into());
            fields.insert("causes".into(), Value::Array(Vec::new()));
            fields.insert("location".into(), location.map_or(Value::Null, Into::into));
            sender.record(Kind::Error, Fields(fields));
        } else {
            sender.history(&message, Fields(fields));
        }
    }
}

/// Installs [`LogLayer`] as the process's subscriber, unless one is installed already.
pub(crate) fn install(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    let level = level.parse().unwrap_or(Level::INFO);
    let subscriber = tracing_subscriber::registry().with(LogLayer::new(level));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Frames one record for the master.
pub(crate) fn push_log(outbox: &Uplink, record: &Outgoing) {
    push_fields(outbox, record.kind, record.time_ns, &record.fields);
}

fn push_fields(outbox: &Uplink, kind: Kind, time_ns: u64, fields: &str) {
    let _ = outbox.push(&Envelope::Log {
        kind,
        time_ns,
        fields,
    });
}

/// JSON written by `serde_json`, as the text it is.
fn as_text(json: &[u8]) -> &str {
    std::str::from_utf8(json).expect("serde_json writes UTF-8")
}
