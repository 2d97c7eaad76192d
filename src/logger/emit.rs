//! A record as a `tracing` event of the master: a line a person reads as the message, the
//! record's fields as the event's fields.
//!
//! On a terminal, a worker's line reads as PM2 and Node's cluster show it, the process first:
//! `[workers 2 pid 25300] worker 2 started` (group, worker id or `master`, pid, then the line).
//! A structured subscriber (a JSON formatter, a collector) gets the same record as fields with
//! stable names: `kind`, `worker` (absent for the master), `pid`, `generation`, `group`, and
//! `stream` for output lines or `fields` (the kind's fields as one JSON object) for the other
//! kinds. The files keep the whole record as one JSON line ([`Record::to_json_line`]).
//!
//! Records of kind `error` are `WARN` events, the others `INFO`, all of target `procactor::log`.

use std::fmt;

use serde_json::Value;

use super::record::{Kind, Record};

/// The `tracing` target of re-emitted records.
const TARGET: &str = "procactor::log";

/// Whether a subscriber wants records of `kind` (see [`emit`]).
pub(super) fn wanted(kind: Kind) -> bool {
    match kind {
        Kind::Error => tracing::enabled!(target: TARGET, tracing::Level::WARN),
        _ => tracing::enabled!(target: TARGET, tracing::Level::INFO),
    }
}

/// The record as a `tracing` event of the master, when a subscriber wants it.
pub(super) fn emit(record: &Record) {
    if !wanted(record.kind) {
        return;
    }
    // An output line's fields are in the message but for its stream; other kinds' fields are
    // the structured part, kept whole.
    let (stream, fields) = match record.kind {
        Kind::Output => (record.fields.get_str("stream"), None),
        _ => (None, Some(Value::Object(record.fields.0.clone()))),
    };
    let stream = stream.map(tracing::field::display);
    let fields = fields.as_ref().map(tracing::field::display);
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                kind = %record.kind,
                worker = record.worker,
                pid = record.pid,
                generation = record.generation,
                group = %record.group,
                stream,
                fields,
                "{record}"
            )
        };
    }
    match record.kind {
        Kind::Error => event!(tracing::Level::WARN),
        _ => event!(tracing::Level::INFO),
    }
}

/// The record as a person reads it: `[<group> <worker> pid <pid>] <what>`, where `<what>` is
/// an output line, `GET /path 200 1.5 ms from <client>`, a history event, or `error: <message>:
/// <causes> (at <location>)`, followed by any other field as `name=value`. A worker's id reads
/// `master` for the master's own records. The time is left to the reader (a `tracing`
/// subscriber prints its own).
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.worker {
            Some(id) => write!(f, "[{} {id} pid {}]", self.group, self.pid)?,
            None => write!(f, "[{} master pid {}]", self.group, self.pid)?,
        }
        let field = |name| self.fields.0.get(name).filter(|v| !v.is_null());
        let shown: &[&str] = match self.kind {
            Kind::Output => {
                if let Some(line) = field("line") {
                    write!(f, " {}", Text(line))?;
                }
                if field("truncated") == Some(&Value::Bool(true)) {
                    f.write_str(" [truncated]")?;
                }
                &["line", "stream", "truncated"]
            }
            Kind::Ip => {
                for name in ["method", "path", "status"] {
                    if let Some(value) = field(name) {
                        write!(f, " {}", Text(value))?;
                    }
                }
                if let Some(ms) = field("duration_ms") {
                    write!(f, " {ms} ms")?;
                }
                if let Some(client) = field("client") {
                    write!(f, " from {}", Text(client))?;
                }
                &["method", "path", "status", "duration_ms", "client"]
            }
            Kind::History => {
                if let Some(event) = field("event") {
                    write!(f, " {}", Text(event))?;
                }
                &["event"]
            }
            Kind::Error => {
                f.write_str(" error:")?;
                if let Some(message) = field("message") {
                    write!(f, " {}", Text(message))?;
                }
                if let Some(Value::Array(causes)) = field("causes") {
                    for cause in causes {
                        write!(f, ": {}", Text(cause))?;
                    }
                }
                if let Some(location) = field("location") {
                    write!(f, " (at {})", Text(location))?;
                }
                &["message", "causes", "location"]
            }
        };
        for (name, value) in &self.fields.0 {
            if !shown.contains(&name.as_str()) {
                write!(f, " {name}={}", Text(value))?;
            }
        }
        Ok(())
    }
}

/// A JSON value as text: a string as it is, anything else as JSON.
struct Text<'a>(&'a Value);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(text) => f.write_str(text),
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::logger::record::{Fields, Source, Stream};

    fn worker(id: usize) -> Source {
        Source {
            worker: Some(id),
            pid: 25300,
            generation: 1,
            group: "workers".to_owned(),
        }
    }

    #[test]
    fn an_output_line_reads_as_pm2_shows_it() {
        let record = Record::output(worker(2), Stream::Stderr, "worker 2 started", false);
        assert_eq!(record.to_string(), "[workers 2 pid 25300] worker 2 started");
        let record = Record::output(worker(2), Stream::Stdout, "cut", true);
        assert_eq!(record.to_string(), "[workers 2 pid 25300] cut [truncated]");
        let record = Record::dropped(worker(2), 3);
        assert_eq!(
            record.to_string(),
            "[workers 2 pid 25300] dropped 3 lines from worker 2 dropped=3"
        );
    }

    #[test]
    fn the_master_reads_as_master() {
        let mut source = Source::master("web");
        source.pid = 7;
        let record = Record::output(source, Stream::Stdout, "up", false);
        assert_eq!(record.to_string(), "[web master pid 7] up");
    }

    #[test]
    fn other_kinds_read_as_a_sentence_then_their_other_fields() {
        let ip = Record::ip(
            worker(0),
            "10.0.0.7:5123",
            "GET",
            "/a",
            200,
            Duration::from_micros(1500),
        );
        assert_eq!(
            ip.to_string(),
            "[workers 0 pid 25300] GET /a 200 1.5 ms from 10.0.0.7:5123"
        );
        let fields = Fields::new().with("user", "ada").with("attempt", 3);
        let history = Record::history(worker(1), "login", fields);
        assert_eq!(
            history.to_string(),
            "[workers 1 pid 25300] login attempt=3 user=ada"
        );
        let causes = vec!["connection reset".to_owned()];
        let error = Record::error(worker(1), "request failed", causes, Some("a.rs:3".into()));
        assert_eq!(
            error.to_string(),
            "[workers 1 pid 25300] error: request failed: connection reset (at a.rs:3)"
        );
        let error = Record::error(worker(1), "boom", Vec::new(), None);
        assert_eq!(error.to_string(), "[workers 1 pid 25300] error: boom");
    }

    #[test]
    fn a_record_without_the_usual_fields_still_reads() {
        let fields = Fields::new().with("raw", json!({"a": [1, 2]}));
        let record = Record::new(worker(0), Kind::Ip, fields);
        assert_eq!(
            record.to_string(),
            r#"[workers 0 pid 25300] raw={"a":[1,2]}"#
        );
    }
}
