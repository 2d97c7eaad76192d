//! A log record: what the logger carries from every process of the cluster to its sinks.
//!
//! Every record says when it happened, which process it came from ([`Source`]: worker id, pid,
//! generation, group) and what [`Kind`] it is; the rest is the kind's own fields, kept as a JSON
//! object so sinks and tools (`jq`, log shippers) see the same names:
//!
//! | kind      | fields                                                         | constructor          |
//! |-----------|----------------------------------------------------------------|----------------------|
//! | `ip`      | `client`, `method`, `path`, `status`, `duration_ms`            | [`Record::ip`]       |
//! | `history` | `event` and the caller's fields                                | [`Record::history`]  |
//! | `error`   | `message`, `causes` (outermost first), `location`              | [`Record::error`]    |
//! | `output`  | `stream`, `line`, `truncated`; or `line`, `dropped`            | [`Record::output`], [`Record::dropped`] |
//!
//! On disk a record is one line of JSON ([`Record::to_json_line`]).
//!
//! # Limits
//! A record holds whatever it is given: capping line length and decoding non-UTF-8 output
//! (lossily) is the caller's job, before the record is built. Time is wall-clock
//! [`SystemTime`], so records from different processes order only as well as their clocks agree.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a record is about; each kind has its own file and its own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A request served: client address, method and path (or a label), status, duration.
    Ip,
    /// A lifecycle or application event with structured fields.
    History,
    /// An error: message, chain of causes, where it happened.
    Error,
    /// A line a process wrote to its stdout or stderr.
    Output,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 4] = [Kind::Ip, Kind::History, Kind::Error, Kind::Output];

    /// The kind's name as written in records: `ip`, `history`, `error` or `output`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "ip",
            Kind::History => "history",
            Kind::Error => "error",
            Kind::Output => "output",
        }
    }

    /// The name of the kind's log file: `ip.log`, `history.log`, `error.log` or `output.log`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Ip => "ip.log",
            Kind::History => "history.log",
            Kind::Error => "error.log",
            Kind::Output => "output.log",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ParseKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ParseKindError(s.to_owned()))
    }
}

/// A string that names no [`Kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log kind `{0}` (expected ip, history, error or output)")]
pub struct ParseKindError(String);

/// Which of a process's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process a record comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// The worker slot; `None` for the master.
    pub worker: Option<usize>,
    /// The process id.
    pub pid: u32,
    /// How many times the worker slot has been (re)started; 0 for the master.
    pub generation: u64,
    /// The group (cluster or service) the process belongs to.
    pub group: String,
}

impl Source {
    /// This process, as the master of `group`.
    pub fn master(group: impl Into<String>) -> Self {
        Source {
            worker: None,
            pid: std::process::id(),
            generation: 0,
            group: group.into(),
        }
    }
}

/// The fields of a log record: a JSON object, by name.
///
/// Build them with [`with`](Self::with) (any `Serialize` value), read them typed with
/// [`get`](Self::get) or [`get_str`](Self::get_str). On disk they are the top-level keys of the
/// record's JSON line, after the keys every record has.
///
/// ```
/// use procactor::logger::Fields;
///
/// let fields = Fields::new().with("user", "ada").with("attempt", 3);
/// assert_eq!(fields.get_str("user"), Some("ada"));
/// assert_eq!(fields.get::<u32>("attempt"), Some(3));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fields(pub(crate) Map<String, Value>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same fields and `key`, set to `value` (replacing a field of that name).
    pub fn with(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`; a value that does not serialize is recorded as its error text.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| Value::String(e.to_string()));
        self.0.insert(key.into(), value);
    }

    /// Field `key` as a `T`, when it is there and is one.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        T::deserialize(self.0.get(key)?).ok()
    }

    /// Field `key` when it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    /// Whether there is a field `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The fields' names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One log record: when, from which process, what kind, and the kind's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it happened (wall clock).
    pub time: SystemTime,
    /// What it is about.
    pub kind: Kind,
    /// The worker slot it comes from; `None` for the master.
    pub worker: Option<usize>,
    /// The process id it comes from.
    pub pid: u32,
    /// The worker slot's generation (0 for the master).
    pub generation: u64,
    /// The group the process belongs to.
    pub group: String,
    /// The kind's fields, written at the top level of the JSON line (see [`Record::to_json_line`]).
    pub fields: Fields,
}

/// The keys every JSON line starts with; a field with one of these names is renamed.
pub(super) const TOP_LEVEL: [&str; 6] = ["time", "kind", "worker", "pid", "generation", "group"];

impl Record {
    /// A record of `kind` from `source` with `fields`, stamped with the current time.
    pub fn new(source: Source, kind: Kind, fields: Fields) -> Self {
        Record {
            time: SystemTime::now(),
            kind,
            worker: source.worker,
            pid: source.pid,
            generation: source.generation,
            group: source.group,
            fields,
        }
    }

    /// The same record stamped with `time` instead.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// An `ip` record: a request from `client` served with `status` in `duration`.
    ///
    /// For a request that is not HTTP, `method` names the protocol or operation (`"CALL"`) and
    /// `path` is a label. The duration is written as `duration_ms`, to the microsecond.
    pub fn ip(
        source: Source,
        client: &str,
        method: &str,
        path: &str,
        status: u16,
        duration: Duration,
    ) -> Self {
        let fields = Map::from_iter([
            ("client".to_owned(), client.into()),
            ("method".to_owned(), method.into()),
            ("path".to_owned(), path.into()),
            ("status".to_owned(), status.into()),
            ("duration_ms".to_owned(), duration_ms(duration)),
        ]);
        Record::new(source, Kind::Ip, Fields(fields))
    }

    /// A `history` record: `event` with the caller's `fields`.
    ///
    /// A caller's field named `event` is renamed `field_event` rather than replacing the event.
    pub fn history(source: Source, event: &str, fields: Fields) -> Self {
        let mut fields = fields.0;
        if let Some(theirs) = fields.remove("event") {
            let key = field_key("event", &["event"], &fields).into_owned();
            fields.insert(key, theirs);
        }
        fields.insert("event".to_owned(), event.into());
        Record::new(source, Kind::History, Fields(fields))
    }

    /// An `error` record: `message`, its `causes` (outermost first), and where it happened.
    ///
    /// `location` is written as `null` when unknown.
    pub fn error(
        source: Source,
        message: &str,
        causes: Vec<String>,
        location: Option<String>,
    ) -> Self {
        let fields = Map::from_iter([
            ("message".to_owned(), message.into()),
            ("causes".to_owned(), causes.into()),
            ("location".to_owned(), location.into()),
        ]);
        Record::new(source, Kind::Error, Fields(fields))
    }

    /// An `error` record for `error`, its causes taken from its [`source`] chain.
    ///
    /// [`source`]: std::error::Error::source
    pub fn from_error(
        source: Source,
        error: &dyn std::error::Error,
        location: Option<String>,
    ) -> Self {
        let causes = std::iter::successors(error.source(), |e| e.source())
            .map(ToString::to_string)
            .collect();
        Record::error(source, &error.to_string(), causes, location)
    }

    /// An `output` record: one `line` of a process's `stream`, without its line ending.
    ///
    /// `truncated` says the caller cut the line at its length cap.
    pub fn output(source: Source, stream: Stream, line: &str, truncated: bool) -> Self {
        let fields = Map::from_iter([
            ("stream".to_owned(), stream.as_str().into()),
            ("line".to_owned(), line.into()),
            ("truncated".to_owned(), truncated.into()),
        ]);
        Record::new(source, Kind::Output, Fields(fields))
    }

    /// An `output` record saying that `count` lines from `source` were dropped, because a
    /// bounded queue was full: `line` reads "dropped N lines from worker W" and `dropped` is N.
    pub fn dropped(source: Source, count: u64) -> Self {
        let lines = if count == 1 { "line" } else { "lines" };
        let line = match source.worker {
            Some(id) => format!("dropped {count} {lines} from worker {id}"),
            None => format!("dropped {count} {lines} from the master"),
        };
        let fields = Map::from_iter([
            ("line".to_owned(), line.into()),
            ("dropped".to_owned(), count.into()),
        ]);
        Record::new(source, Kind::Output, Fields(fields))
    }

    /// Appends the record to `out` as one line of JSON, ending in `\n`.
    ///
    /// The object's keys are, in order: `time` (RFC 3339, UTC, milliseconds:
    /// `2026-11-24T19:02:03.123Z`), `kind`, `worker` (a number, or `null` for the master),
    /// `pid`, `generation`, `group`, then the fields. A field named like one of those keys is
    /// written as `field_<name>` (with more `field_` prefixes if that name is taken too), so it
    /// never overwrites or duplicates a key. Strings are escaped by `serde_json`: the line holds
    /// no raw newline or control character.
    pub fn to_json_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, &JsonLine(self))
            .expect("a record always serializes: string keys, JSON values, written to a Vec");
        out.push(b'\n');
    }

    /// An estimate of the memory the record holds, in bytes, for bounding queues.
    ///
    /// It counts the struct, the text and the JSON values, but not allocator slack, so it is
    /// a lower bound within a small factor; it is not the length of the JSON line.
    pub fn approx_size(&self) -> usize {
        std::mem::size_of::<Self>() + self.group.len() + map_size(&self.fields.0)
    }
}

/// The fields of [`Record::ip`] as JSON, written straight into `out`: the object the record's
/// map serialises to, keys in the same order, without building the map (how a worker sends
/// its `ip` records).
pub(crate) fn write_ip_fields(
    out: &mut Vec<u8>,
    client: &str,
    method: &str,
    path: &str,
    status: u16,
    duration: Duration,
) {
    let mut serializer = serde_json::Serializer::new(out);
    let written = (|| {
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("client", client)?;
        map.serialize_entry("duration_ms", &duration_ms(duration))?;
        map.serialize_entry("method", method)?;
        map.serialize_entry("path", path)?;
        map.serialize_entry("status", &status)?;
        map.end()
    })();
    written.expect("strings and numbers serialize into a Vec");
}

/// A duration in milliseconds, to the microsecond (`1.5` for 1500 µs).
fn duration_ms(duration: Duration) -> Value {
    (duration.as_micros() as f64 / 1000.0).into()
}

/// `key`, or `key` with as many `field_` prefixes as it takes to be neither `reserved` nor
/// another key of `fields`. No reserved key starts with `field_`, so renamed keys are unique.
fn field_key<'a>(key: &'a str, reserved: &[&str], fields: &Map<String, Value>) -> Cow<'a, str> {
    if !reserved.contains(&key) {
        return Cow::Borrowed(key);
    }
    let mut renamed = format!("field_{key}");
    while fields.contains_key(&renamed) {
        renamed.insert_str(0, "field_");
    }
    Cow::Owned(renamed)
}

fn map_size(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, value)| key.len() + value_size(value))
        .sum()
}

fn value_size(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::String(s) => s.len(),
            Value::Array(values) => values.iter().map(value_size).sum(),
            Value::Object(map) => map_size(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

/// A record serialized as its JSON line's object.
struct JsonLine<'a>(&'a Record);

impl Serialize for JsonLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(TOP_LEVEL.len() + record.fields.0.len()))?;
        map.serialize_entry("time", &Rfc3339(record.time))?;
        map.serialize_entry("kind", &record.kind)?;
        map.serialize_entry("worker", &record.worker)?;
        map.serialize_entry("pid", &record.pid)?;
        map.serialize_entry("generation", &record.generation)?;
        map.serialize_entry("group", &record.group)?;
        for (key, value) in &record.fields.0 {
            map.serialize_entry(&field_key(key, &TOP_LEVEL, &record.fields.0), value)?;
        }
        map.end()
    }
}

/// A time formatted as RFC 3339 in UTC with milliseconds: `2026-11-24T19:02:03.123Z`.
///
/// Hand-written (a civil-from-days conversion) so the logger needs no date crate; times
/// before 1970 work too, rounded down to the millisecond.
pub(super) struct Rfc3339(pub(super) SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = match self.0.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        let millis = nanos.div_euclid(1_000_000);
        let secs = millis.div_euclid(1000) as i64;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            millis.rem_euclid(1000),
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`: count in 400-year eras starting on March 1st, so the
/// leap day falls at the end of each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468; // from 0000-03-01
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let shifted_month = (5 * day_of_year + 2) / 153; // [0, 11], March = 0
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn worker(id: usize) -> Source {
        Source {
            worker: Some(id),
            pid: 4242,
            generation: 3,
            group: "web".to_owned(),
        }
    }

    fn at_millis(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    /// The record's JSON line, checked to be exactly one line, parsed back.
    fn line_of(record: &Record) -> (String, Map<String, Value>) {
        let mut out = Vec::new();
        record.to_json_line(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        let Value::Object(object) = serde_json::from_str(&text).unwrap() else {
            panic!("not an object: {text}");
        };
        (text, object)
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(kind.to_string().parse::<Kind>(), Ok(kind));
            assert_eq!(kind.file_name(), format!("{kind}.log"));
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(
                serde_json::from_value::<Kind>(json!(kind.as_str())).unwrap(),
                kind
            );
        }
        assert_eq!(
            Kind::ALL.map(Kind::as_str),
            ["ip", "history", "error", "output"]
        );
        let err = "IP".parse::<Kind>().unwrap_err();
        assert!(err.to_string().contains("`IP`"), "{err}");
        assert!("".parse::<Kind>().is_err());
    }

    #[test]
    fn json_line_has_every_top_level_key_in_order() {
        let record = Record::ip(worker(2), "10.0.0.7:5123", "GET", "/a", 200, Duration::ZERO)
            .at(at_millis(1_000));
        let (text, object) = line_of(&record);
        assert!(
            text.starts_with(
                r#"{"time":"1970-01-01T00:00:01.000Z","kind":"ip","worker":2,"pid":4242,"generation":3,"group":"web","#
            ),
            "{text}"
        );
        for key in ["time", "kind", "worker", "pid", "generation", "group"] {
            assert!(object.contains_key(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn master_record_has_null_worker() {
        let record = Record::history(Source::master("web"), "started", Fields::new());
        let (_, object) = line_of(&record);
        assert_eq!(object["worker"], Value::Null);
        assert_eq!(object["pid"], json!(std::process::id()));
        assert_eq!(object["generation"], json!(0));
        assert_eq!(object["event"], json!("started"));
    }

    #[test]
    fn ip_record_fields() {
        let duration = Duration::from_micros(1_234_567);
        let record = Record::ip(worker(0), "[::1]:80", "POST", "/x?y=1", 503, duration);
        let (_, object) = line_of(&record);
        assert_eq!(object["kind"], json!("ip"));
        assert_eq!(object["client"], json!("[::1]:80"));
        assert_eq!(object["method"], json!("POST"));
        assert_eq!(object["path"], json!("/x?y=1"));
        assert_eq!(object["status"], json!(503));
        assert_eq!(object["duration_ms"], json!(1234.567));
    }

    #[test]
    fn ip_fields_written_directly_are_those_of_the_record() {
        let cases = [
            ("10.0.0.1", "GET", "/bench", 200, Duration::from_micros(100)),
            (
                "[::1]:80",
                "POST",
                "/x?y=\"1\"\n",
                503,
                Duration::from_micros(1_234_567),
            ),
            ("", "", "été 🦀 \u{1b}", 0, Duration::ZERO),
            (
                "c",
                "CALL",
                "label",
                u16::MAX,
                Duration::from_secs(u64::MAX),
            ),
        ];
        for (client, method, path, status, duration) in cases {
            let record = Record::ip(worker(0), client, method, path, status, duration);
            let mut direct = Vec::new();
            write_ip_fields(&mut direct, client, method, path, status, duration);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                Value::Object(record.fields.0).to_string()
            );
        }
    }

    #[test]
    fn history_record_keeps_fields_and_event() {
        let fields = Map::from_iter([
            ("event".to_owned(), json!("theirs")),
            ("exit".to_owned(), json!({"code": 1, "signal": null})),
            ("workers".to_owned(), json!([0, 1])),
        ]);
        let record = Record::history(worker(1), "exited", Fields(fields));
        let (_, object) = line_of(&record);
        assert_eq!(object["event"], json!("exited"));
        assert_eq!(object["field_event"], json!("theirs"));
        assert_eq!(object["exit"], json!({"code": 1, "signal": null}));
        assert_eq!(object["workers"], json!([0, 1]));
    }

    #[test]
    fn error_record_fields() {
        let causes = vec!["connection reset".to_owned(), "broken pipe".to_owned()];
        let record = Record::error(worker(1), "request failed", causes, Some("a.rs:3".into()));
        let (_, object) = line_of(&record);
        assert_eq!(object["kind"], json!("error"));
        assert_eq!(object["message"], json!("request failed"));
        assert_eq!(object["causes"], json!(["connection reset", "broken pipe"]));
        assert_eq!(object["location"], json!("a.rs:3"));

        let record = Record::error(worker(1), "boom", Vec::new(), None);
        let (_, object) = line_of(&record);
        assert_eq!(object["causes"], json!([]));
        assert_eq!(object["location"], Value::Null);
    }

    #[test]
    fn error_record_from_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);

        let inner = std::io::Error::other("inner");
        let record = Record::from_error(worker(0), &Outer(inner), None);
        assert_eq!(record.fields.0["message"], json!("outer"));
        assert_eq!(record.fields.0["causes"], json!(["inner"]));
    }

    #[test]
    fn output_and_dropped_records() {
        let record = Record::output(worker(5), Stream::Stderr, "panicked at x", true);
        let (_, object) = line_of(&record);
        assert_eq!(object["kind"], json!("output"));
        assert_eq!(object["stream"], json!("stderr"));
        assert_eq!(object["line"], json!("panicked at x"));
        assert_eq!(object["truncated"], json!(true));

        let record = Record::dropped(worker(5), 42);
        let (_, object) = line_of(&record);
        assert_eq!(object["kind"], json!("output"));
        assert_eq!(object["line"], json!("dropped 42 lines from worker 5"));
        assert_eq!(object["dropped"], json!(42));
        assert_eq!(object["worker"], json!(5));

        let record = Record::dropped(Source::master("web"), 1);
        assert_eq!(
            record.fields.0["line"],
            json!("dropped 1 line from the master")
        );
    }

    #[test]
    fn fields_named_like_top_level_keys_are_renamed() {
        let fields = Map::from_iter(
            [
                "time",
                "kind",
                "worker",
                "pid",
                "generation",
                "group",
                "field_pid",
                "x",
            ]
            .map(|key| (key.to_owned(), json!(format!("user {key}")))),
        );
        let record = Record::new(worker(1), Kind::History, Fields(fields)).at(at_millis(0));
        let (text, object) = line_of(&record);
        assert_eq!(object["time"], json!("1970-01-01T00:00:00.000Z"), "{text}");
        assert_eq!(object["kind"], json!("history"));
        assert_eq!(object["worker"], json!(1));
        assert_eq!(object["pid"], json!(4242));
        assert_eq!(object["generation"], json!(3));
        assert_eq!(object["group"], json!("web"));
        for key in ["time", "kind", "worker", "generation", "group"] {
            assert_eq!(
                object[&format!("field_{key}")],
                json!(format!("user {key}"))
            );
        }
        // `field_pid` is the user's own; their `pid` moves one prefix further.
        assert_eq!(object["field_pid"], json!("user field_pid"));
        assert_eq!(object["field_field_pid"], json!("user pid"));
        assert_eq!(object["x"], json!("user x"));
        // No key was written twice (a parser keeps the last duplicate silently).
        assert_eq!(object.len(), 6 + 8, "{text}");
        assert_eq!(text.matches("\"user ").count(), 8, "{text}");
    }

    #[test]
    fn json_escapes_quotes_newlines_control_and_non_ascii() {
        let nasty = "say \"hi\"\\ \n\r\t\u{0}\u{1b}[31m\u{7f} été 日本 🦀 \u{2028}";
        let mut source = worker(0);
        source.group = "g\"\n".to_owned();
        let record = Record::output(source, Stream::Stdout, nasty, false);
        let (text, object) = line_of(&record);
        assert_eq!(object["line"], json!(nasty));
        assert_eq!(object["group"], json!("g\"\n"));
        assert!(
            !text
                .trim_end_matches('\n')
                .contains(['\n', '\r', '\0', '\u{1b}']),
            "{text}"
        );
        assert!(
            text.contains(r#"say \"hi\"\\ \n\r\t\u0000\u001b[31m"#),
            "{text}"
        );
        assert!(
            text.contains("été 日本 🦀"),
            "non-ASCII is written as UTF-8: {text}"
        );
    }

    #[test]
    fn to_json_line_appends() {
        let record = Record::dropped(worker(0), 2);
        let mut out = b"previous\n".to_vec();
        record.to_json_line(&mut out);
        record.to_json_line(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "previous");
        assert_eq!(lines[1], lines[2]);
    }

    #[test]
    fn time_formats_fixed_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"), // leap year divisible by 400
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"), // 2100 is not a leap year
            (1_704_067_199_999, "2023-12-31T23:59:59.999Z"),
            (1_795_546_923_123, "2026-11-24T19:02:03.123Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ];
        for (millis, expected) in cases {
            assert_eq!(
                Rfc3339(at_millis(millis)).to_string(),
                expected,
                "{millis} ms"
            );
        }
        // Sub-millisecond precision is cut, not rounded.
        let time = UNIX_EPOCH + Duration::from_nanos(1_999_999);
        assert_eq!(Rfc3339(time).to_string(), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn time_before_epoch_rounds_down() {
        let cases = [
            (Duration::from_nanos(1), "1969-12-31T23:59:59.999Z"),
            (Duration::from_millis(1), "1969-12-31T23:59:59.999Z"),
            (Duration::from_millis(1_001), "1969-12-31T23:59:58.999Z"),
            (
                Duration::from_secs(86_400 * 365),
                "1969-01-01T00:00:00.000Z",
            ),
        ];
        for (before, expected) in cases {
            assert_eq!(
                Rfc3339(UNIX_EPOCH - before).to_string(),
                expected,
                "{before:?}"
            );
        }
    }

    #[test]
    fn civil_from_days_matches_day_by_day_calendar() {
        fn is_leap(year: i64) -> bool {
            year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        }
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..(366 * 500) {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let month_len = match month {
                2 if is_leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                (day, month) = (1, month + 1);
            }
            if month > 12 {
                (month, year) = (1, year + 1);
            }
        }
    }

    #[test]
    fn approx_size_grows_with_content() {
        let small = Record::output(worker(0), Stream::Stdout, "x", false);
        let big = Record::output(worker(0), Stream::Stdout, &"x".repeat(10_000), false);
        assert!(small.approx_size() >= std::mem::size_of::<Record>());
        assert!(big.approx_size() >= small.approx_size() + 9_999);
        assert!(big.approx_size() < small.approx_size() + 10_000 + 64);
        let nested = Record::history(
            worker(0),
            "e",
            Fields(Map::from_iter([(
                "deep".to_owned(),
                json!({"a": ["x".repeat(500)]}),
            )])),
        );
        assert!(nested.approx_size() > 500);
    }
}
