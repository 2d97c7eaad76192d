//! The control protocol between `procactor` commands and the daemon: JSON, one object per line,
//! one request per connection.
//!
//! ```text
//! client → daemon   {"hello":{"protocol":1,"version":"0.1.0"}}
//! daemon → client   {"hello":{"protocol":1,"version":"0.1.0","pid":4242}}
//!                   or {"error":{"kind":"protocol_mismatch","client":1,"daemon":2,…}} and close
//!                   or {"error":{"kind":"forbidden","uid":1001}} and close
//! client → daemon   {"request":{"cmd":"reload","target":"web"}}
//! daemon → client   {"event":{…}}  (zero or more, e.g. a reload's progress)
//!                   {"outcome":{"ok":true,"data":…}}  or  {"outcome":{"ok":false,"error":{…}}}
//! ```
//!
//! Why JSON lines: a person can read the traffic (`socat - UNIX:…`), any language can speak
//! it, and serde gives both ends from one set of types. Why a version number in a hello of its
//! own: two builds must tell that they cannot talk, in one clear sentence naming both versions,
//! before either misreads the other. So the **hello and error lines keep their shape in every
//! protocol version** (new fields may be added; unknown ones are ignored); everything after
//! them may change when [`PROTOCOL`] does.
//!
//! Limits: a line is at most [`MAX_LINE_BYTES`] (1 MiB), see `conn.rs`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol's version: raised whenever a line after the hello changes meaning.
pub(crate) const PROTOCOL: u32 = 1;

/// The longest line either side sends or accepts.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// This build's version, as the hello carries it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A line from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientLine {
    /// The first line.
    Hello(Hello),
    /// The second and last.
    Request(Request),
}

/// A line from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DaemonLine {
    /// The answer to the client's hello: they can talk.
    Hello(Hello),
    /// The answer to the client's hello: they cannot; the connection closes.
    Error(Refusal),
    /// Progress while the request runs.
    Event(Event),
    /// The request's result; the connection closes.
    Outcome(Outcome),
}

/// Who speaks which protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Its [`PROTOCOL`].
    pub(crate) protocol: u32,
    /// Its build's version.
    pub(crate) version: String,
    /// The daemon's pid (the daemon's hello only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
}

impl Hello {
    /// This build's hello; `pid` for the daemon's.
    pub(crate) fn ours(pid: Option<u32>) -> Self {
        Hello {
            protocol: PROTOCOL,
            version: VERSION.to_string(),
            pid,
        }
    }
}

/// Why the daemon will not talk to this client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Refusal {
    /// The client runs as another user (not root).
    Forbidden { uid: u32 },
    /// The client speaks another protocol.
    ProtocolMismatch {
        client: u32,
        daemon: u32,
        version: String,
        pid: u32,
    },
}

/// What `all` or one app a command is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub(crate) enum Target {
    /// Every app.
    All,
    /// The app of this name (`all` is a name no app may have).
    App(String),
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        if s == "all" {
            Target::All
        } else {
            Target::App(s)
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::App(name) => f.write_str(name),
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Run this file (its text, read by the client; the path for messages and `cwd`).
    Start { path: PathBuf, text: String },
    /// Every instance, with its figures.
    List,
    /// One app in detail; env values only with `show_env`.
    Describe { app: String, show_env: bool },
    /// Rolling reload.
    Reload { target: Target },
    /// Restart at once.
    Restart { target: Target },
    /// Stop (remembered in the state).
    Stop { target: Target },
    /// Run `n` instances of `app`.
    Scale { app: String, n: usize },
    /// The last `lines` lines, then more while `follow`.
    Logs {
        app: Option<String>,
        lines: usize,
        follow: bool,
    },
    /// Plan the change to this file, and make it unless `dry_run`.
    Apply {
        path: PathBuf,
        text: String,
        dry_run: bool,
    },
    /// Snapshots and events for `top`, until the client leaves.
    Watch,
    /// Stop every app and the daemon.
    Kill,
    /// Start what the state file says ran (after a reboot): its apps at their scale, except
    /// those stopped.
    Resurrect,
}

/// Something that happened while a request runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Event {
    /// An instance reached a state (`starting`, `ready`, `draining`, `retired`, `exited`, …).
    Instance {
        app: String,
        instance: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        state: String,
    },
    /// A line for the operator.
    Note { message: String },
    /// The client read too slowly and this many events were dropped for it.
    Skipped { events: u64 },
    /// A line an app wrote (`logs -f`).
    Line(Line),
    /// Every instance, now (`watch`, for `top`).
    Snapshot { instances: Vec<Instance> },
}

/// One instance, as `list` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Instance {
    /// The app.
    pub(crate) app: String,
    /// The instance (worker slot).
    pub(crate) instance: usize,
    /// Its process, while one runs.
    pub(crate) pid: Option<u32>,
    /// `ready`, `starting`, `stopping`, `backoff`, `exited`, `failed`, …
    pub(crate) state: String,
    /// New processes started after the first.
    pub(crate) restarts: u64,
    /// How long the process has run, in seconds.
    pub(crate) uptime_s: f64,
    /// CPU use since the last sample (or since the process started), in percent of one core.
    pub(crate) cpu_pct: Option<f64>,
    /// Resident memory, in bytes.
    pub(crate) memory_bytes: Option<u64>,
    /// Processes the slot has started, counting from 1.
    pub(crate) generation: u64,
}

/// One line an app wrote, as `logs` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Line {
    /// The app.
    pub(crate) app: String,
    /// The instance.
    pub(crate) instance: Option<usize>,
    /// The process.
    pub(crate) pid: u32,
    /// `stdout` or `stderr`.
    pub(crate) stream: String,
    /// The line, without its newline.
    pub(crate) line: String,
    /// When, in seconds since the epoch.
    pub(crate) time_s: f64,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Instance {
                app,
                instance,
                pid: Some(pid),
                state,
            } => write!(f, "{app}[{instance}] pid {pid} {state}"),
            Event::Instance {
                app,
                instance,
                state,
                ..
            } => write!(f, "{app}[{instance}] {state}"),
            Event::Note { message } => f.write_str(message),
            Event::Skipped { events } => write!(f, "({events} events skipped: reading too slowly)"),
            Event::Line(line) => write!(f, "{}", crate::render::log_line(line, false)),
            Event::Snapshot { instances } => write!(f, "({} instances)", instances.len()),
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Whether it did what was asked.
    pub(crate) ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<OutcomeError>,
    /// What it answers (a table's rows, a plan, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub(crate) data: serde_json::Value,
}

/// A failed request: a kind for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeError {
    /// What kind of failure (`config`, `not_found`, `reload_failed`, …).
    pub(crate) kind: String,
    /// What happened, and why.
    pub(crate) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn lines_read_as_documented() {
        let hello = ClientLine::Hello(Hello::ours(None));
        assert_eq!(
            json(&hello),
            format!(r#"{{"hello":{{"protocol":1,"version":"{VERSION}"}}}}"#)
        );
        let reload = ClientLine::Request(Request::Reload {
            target: Target::App("web".into()),
        });
        assert_eq!(
            json(&reload),
            r#"{"request":{"cmd":"reload","target":"web"}}"#
        );
        let all: ClientLine =
            serde_json::from_str(r#"{"request":{"cmd":"stop","target":"all"}}"#).unwrap();
        assert_eq!(
            all,
            ClientLine::Request(Request::Stop {
                target: Target::All
            })
        );
        let refusal = DaemonLine::Error(Refusal::Forbidden { uid: 1001 });
        assert_eq!(
            json(&refusal),
            r#"{"error":{"kind":"forbidden","uid":1001}}"#
        );
        let failed = DaemonLine::Outcome(Outcome {
            ok: false,
            error: Some(OutcomeError {
                kind: "reload_failed".into(),
                message: "web[1] exited".into(),
            }),
            data: serde_json::Value::Null,
        });
        assert_eq!(
            json(&failed),
            r#"{"outcome":{"ok":false,"error":{"kind":"reload_failed","message":"web[1] exited"}}}"#
        );
    }

    #[test]
    fn a_later_hello_with_more_fields_still_reads() {
        let line = r#"{"hello":{"protocol":2,"version":"0.3.0","pid":7,"features":["x"]}}"#;
        let hello: DaemonLine = serde_json::from_str(line).unwrap();
        assert_eq!(
            hello,
            DaemonLine::Hello(Hello {
                protocol: 2,
                version: "0.3.0".into(),
                pid: Some(7)
            })
        );
    }

    #[test]
    fn events_read_as_lines_for_people() {
        let ready = Event::Instance {
            app: "web".into(),
            instance: 2,
            pid: Some(41),
            state: "ready".into(),
        };
        assert_eq!(ready.to_string(), "web[2] pid 41 ready");
        assert_eq!(
            Event::Skipped { events: 3 }.to_string(),
            "(3 events skipped: reading too slowly)"
        );
    }
}
