//! What the daemon hears from its apps: every instance's lifecycle and every reload's progress,
//! turned into [`Event`]s that clients follow live, and the last exit of each instance for
//! `describe`; plus the log records that `logs -f` follows.
//!
//! Why a broadcast channel: any number of clients may follow at once, and a slow one must never
//! hold the daemon back. The channel keeps the last [`EVENTS_KEPT`] events; a client that falls
//! further behind is told how many it missed (`Lagged`) and goes on from the oldest kept.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use actix::{Actor, Context, Handler};
use procactor::logger::{Kind, Record, Sink};
use procactor::{ReloadEvent, WorkerEvent, WorkerEventKind};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::proto::{Event, Line};

/// Events kept for clients that fall behind.
pub(crate) const EVENTS_KEPT: usize = 4096;

/// Log records kept for `logs -f` clients that fall behind.
pub(crate) const LINES_KEPT: usize = 8192;

/// How an instance's last process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastExit {
    /// Its pid.
    pub(crate) pid: Option<u32>,
    /// Why it ended.
    pub(crate) reason: String,
    /// How long it ran, in seconds.
    pub(crate) uptime_s: f64,
    /// When, in seconds since the epoch.
    pub(crate) at_s: f64,
    /// The last lines it wrote to stderr.
    pub(crate) last_stderr: Vec<String>,
}

/// The last exit of each instance of one app.
pub(crate) type Exits = Rc<RefCell<BTreeMap<usize, LastExit>>>;

/// Receives one app's worker and reload events.
pub(crate) struct Monitor {
    app: String,
    events: broadcast::Sender<Event>,
    exits: Exits,
}

impl Monitor {
    /// A monitor of `app` that publishes on `events` and records exits in `exits`.
    pub(crate) fn new(app: &str, events: broadcast::Sender<Event>, exits: Exits) -> Self {
        Self {
            app: app.to_owned(),
            events,
            exits,
        }
    }

    /// Publishes an instance's new state and, with `detail`, a line that explains it; or,
    /// without an instance, a line about the whole app.
    fn emit(&self, instance: Option<usize>, pid: Option<u32>, what: &str, detail: Option<String>) {
        // No receiver is not an error: nobody follows right now.
        if let Some(instance) = instance {
            let _ = self.events.send(Event::Instance {
                app: self.app.clone(),
                instance,
                pid,
                state: what.to_owned(),
            });
        }
        let message = match (instance, detail) {
            (Some(i), Some(detail)) => format!("{}[{i}] {what}: {detail}", self.app),
            (None, Some(detail)) => format!("{}: {what}: {detail}", self.app),
            (None, None) => format!("{}: {what}", self.app),
            (Some(_), None) => return,
        };
        let _ = self.events.send(Event::Note { message });
    }
}

impl Actor for Monitor {
    type Context = Context<Self>;
}

impl Handler<WorkerEvent> for Monitor {
    type Result = ();

    fn handle(&mut self, event: WorkerEvent, _: &mut Context<Self>) {
        let id = event.worker;
        let (what, detail) = match &event.kind {
            WorkerEventKind::Spawned => ("starting", None),
            WorkerEventKind::Ready => ("ready", None),
            WorkerEventKind::Exited {
                reason,
                last_stderr,
                uptime,
            } => {
                self.record_exit(id, event.pid, reason.to_string(), *uptime, last_stderr);
                ("exited", Some(reason.to_string()))
            }
            WorkerEventKind::Retired {
                reason,
                last_stderr,
                uptime,
            } => {
                self.record_exit(id, event.pid, reason.to_string(), *uptime, last_stderr);
                // A drained process's normal end says nothing more than "retired".
                let normal = matches!(reason, procactor::ExitReason::Exited(0));
                ("retired", (!normal).then(|| reason.to_string()))
            }
            WorkerEventKind::Restarting { delay } => (
                "restarting",
                Some(format!("in {}", humantime::format_duration(*delay))),
            ),
            WorkerEventKind::GaveUp { reason, .. } => {
                ("failed", Some(format!("gave up after {reason}")))
            }
            _ => return,
        };
        self.emit(Some(id), event.pid, what, detail);
    }
}

impl Monitor {
    fn record_exit(
        &self,
        id: usize,
        pid: Option<u32>,
        reason: String,
        uptime: Duration,
        last_stderr: &[String],
    ) {
        let at_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.exits.borrow_mut().insert(
            id,
            LastExit {
                pid,
                reason,
                uptime_s: uptime.as_secs_f64(),
                at_s,
                last_stderr: last_stderr.to_vec(),
            },
        );
    }
}

impl Handler<ReloadEvent> for Monitor {
    type Result = ();

    fn handle(&mut self, event: ReloadEvent, _: &mut Context<Self>) {
        match event {
            ReloadEvent::Started { workers } => {
                self.emit(
                    None,
                    None,
                    "reload-started",
                    Some(format!("{workers} instances")),
                );
            }
            ReloadEvent::Replaced { replaced, .. } => {
                self.emit(Some(replaced.worker), replaced.old_pid, "draining", None);
            }
            ReloadEvent::Done { replaced, elapsed } => self.emit(
                None,
                None,
                "reload-done",
                Some(format!("{replaced} replaced in {:.1?}", elapsed)),
            ),
            ReloadEvent::Failed { error } => {
                self.emit(None, None, "reload-failed", Some(error.to_string()));
            }
            _ => {}
        }
    }
}

impl Line {
    /// The line of an output record of `app`; `None` for other records.
    pub(crate) fn of(app: &str, record: &Record) -> Option<Self> {
        if record.kind != Kind::Output {
            return None;
        }
        Some(Self {
            app: app.to_owned(),
            instance: record.worker,
            pid: record.pid,
            stream: record
                .fields
                .get_str("stream")
                .unwrap_or("stdout")
                .to_owned(),
            line: record.fields.get_str("line").unwrap_or_default().to_owned(),
            time_s: record
                .time
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        })
    }
}

/// A log sink that hands every output line to `logs -f` clients. It runs on the logger's writer
/// thread and never blocks it: a broadcast send only overwrites the oldest line.
pub(crate) struct FollowSink {
    app: String,
    lines: broadcast::Sender<Line>,
}

impl FollowSink {
    /// A sink for `app`'s lines.
    pub(crate) fn new(app: &str, lines: broadcast::Sender<Line>) -> Self {
        Self {
            app: app.to_owned(),
            lines,
        }
    }
}

impl Sink for FollowSink {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        if self.lines.receiver_count() > 0 {
            if let Some(line) = Line::of(&self.app, record) {
                let _ = self.lines.send(line);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
