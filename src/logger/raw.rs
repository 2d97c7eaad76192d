//! A worker's record as it arrived: who sent it, when, what kind, and its fields still the
//! JSON text of the worker's frame.
//!
//! # Why
//! A worker serialises a record's fields with `serde_json` to send them. Parsing them into a
//! map on the master's event loop, only for the writer thread to serialise the map again into
//! the same text, was most of what a worker's record cost the master (a dozen allocations, two
//! passes over the text, on two threads). Now the event loop copies the text into a
//! [`RawRecord`] (one allocation), and the writer thread writes the line around it
//! ([`write_json_line`](RawRecord::write_json_line)) when the text is exactly what serialising
//! its map would give (see `canonical.rs`). Whatever wants a [`Record`] — an extra sink, the
//! master's `tracing`, a `recent_logs` query, a cluster nested in a worker — parses it then
//! ([`to_record`](RawRecord::to_record)), as the event loop did before.
//!
//! # Limits
//! A record that is not canonical is parsed on the writer thread instead of the event loop:
//! same line, same cost as before, paid on the other thread.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use super::canonical::is_canonical_fields;
use super::record::{Fields, Kind, Record, Rfc3339};

/// A worker's record with its fields as the JSON text it sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRecord {
    pub(crate) kind: Kind,
    /// When it happened, in nanoseconds since the Unix epoch.
    pub(crate) time_ns: u64,
    pub(crate) worker: Option<usize>,
    pub(crate) pid: u32,
    pub(crate) generation: u64,
    /// Shared by the records of a group (see `LogQueue::push_fields`).
    pub(crate) group: Arc<str>,
    /// A JSON object, if the worker sent one.
    pub(crate) fields: Box<str>,
}

impl RawRecord {
    /// The record: its fields parsed, or, when they are not a JSON object, the text as field
    /// `raw`.
    pub(crate) fn to_record(&self) -> Record {
        let fields = match serde_json::from_str(&self.fields) {
            Ok(Value::Object(map)) => map,
            _ => Map::from_iter([("raw".to_owned(), Value::from(&*self.fields))]),
        };
        Record {
            time: UNIX_EPOCH + Duration::from_nanos(self.time_ns),
            kind: self.kind,
            worker: self.worker,
            pid: self.pid,
            generation: self.generation,
            group: self.group.to_string(),
            fields: Fields(fields),
        }
    }

    /// What it holds, in bytes, for bounding queues: the struct and the text (the group is
    /// shared).
    pub(crate) fn approx_size(&self) -> usize {
        std::mem::size_of::<Self>() + self.fields.len()
    }

    /// Appends the record's JSON line to `out`: the same bytes as
    /// `self.to_record().to_json_line(out)`, written around the fields' text when it is
    /// canonical.
    pub(crate) fn write_json_line(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        if !is_canonical_fields(&self.fields) {
            self.to_record().to_json_line(out);
            return;
        }
        out.extend_from_slice(b"{\"time\":\"");
        clock.write(self.time_ns, out);
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"worker\":");
        json(out, &self.worker);
        out.extend_from_slice(b",\"pid\":");
        json(out, &self.pid);
        out.extend_from_slice(b",\"generation\":");
        json(out, &self.generation);
        out.extend_from_slice(b",\"group\":");
        json(out, &*self.group);
        // The object's members, between its braces.
        let members = &self.fields[1..self.fields.len() - 1];
        if !members.is_empty() {
            out.push(b',');
            out.extend_from_slice(members.as_bytes());
        }
        out.extend_from_slice(b"}\n");
    }
}

fn json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("numbers and strings serialize into a Vec");
}

/// The time of a line to the second, formatted once per second rather than once per line.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// The second since the epoch `text` is of.
    second: Option<u64>,
    /// `2026-11-24T19:02:03.`
    text: Vec<u8>,
}

impl Clock {
    /// Appends `time_ns` as [`Record::to_json_line`] writes a time: `2026-11-24T19:02:03.123Z`.
    fn write(&mut self, time_ns: u64, out: &mut Vec<u8>) {
        let second = time_ns / 1_000_000_000;
        if self.second != Some(second) {
            let whole = Rfc3339(UNIX_EPOCH + Duration::from_secs(second)).to_string();
            // Without `000Z`, the milliseconds of the whole second.
            self.text.clear();
            self.text
                .extend_from_slice(&whole.as_bytes()[..whole.len() - 4]);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.text);
        let millis = (time_ns / 1_000_000 % 1000) as u32;
        let digit = |n: u32| b'0' + (n % 10) as u8;
        out.extend_from_slice(&[digit(millis / 100), digit(millis / 10), digit(millis), b'Z']);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: &str, time_ns: u64) -> RawRecord {
        RawRecord {
            kind: Kind::History,
            time_ns,
            worker: Some(3),
            pid: 4242,
            generation: 7,
            group: "we\"b".into(),
            fields: fields.into(),
        }
    }

    fn slow(raw: &RawRecord) -> String {
        let mut out = Vec::new();
        raw.to_record().to_json_line(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn fast(raw: &RawRecord, clock: &mut Clock) -> String {
        let mut out = Vec::new();
        raw.write_json_line(&mut out, clock);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_written_around_the_text_is_the_line_of_the_parsed_record() {
        let mut clock = Clock::default();
        let texts = [
            "{}",
            r#"{"client":"10.0.0.1","duration_ms":0.1,"method":"GET","path":"/bench","status":200}"#,
            r#"{"a":{"time":1},"b":"x\ny\u001b"}"#,
            // Not canonical: parsed, renamed, sorted, or kept as `raw`.
            r#"{"time":1,"b":2}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a": 1}"#,
            "not json",
            "[1,2]",
        ];
        let times = [
            0,
            999_999,
            1_795_546_923_123_456_789,
            1_795_546_923_999_000_000,
        ];
        for text in texts {
            for time in times {
                let record = raw(text, time);
                assert_eq!(fast(&record, &mut clock), slow(&record), "{text} at {time}");
            }
        }
        let mut master = raw(r#"{"x":1}"#, 5);
        master.worker = None;
        assert_eq!(fast(&master, &mut clock), slow(&master));
    }

    #[test]
    fn fields_that_are_not_an_object_are_kept_as_raw() {
        let record = raw("[1,2]", 0).to_record();
        assert_eq!(record.fields.get_str("raw"), Some("[1,2]"));
        assert_eq!(record.group, "we\"b");
        assert_eq!(record.worker, Some(3));
    }
}
