//! Where records go: the [`Sink`] seam, JSON-lines files per kind with size-based rotation
//! ([`FileSink`]), and an in-memory ring of recent records per kind ([`RingSink`]).
//!
//! # Why a single writer
//! Log loss in other process managers comes from several writers sharing a file: lines written
//! at the rotation instant vanish (pm2-logrotate #200), rotated files get overwritten (#135),
//! cluster workers race to rotate (log4js-node #408). Here one [`FileSink`], owned by the
//! logger, is the only writer of its files: a line is written whole, rotation happens between
//! two lines, and rotated files are shifted up (`ip.log.1` → `ip.log.2`), never overwritten.
//!
//! # Caveats
//! - Writes are buffered. A line reaches the OS when the buffer fills, at rotation, on
//!   [`Sink::flush`] or when the sink is dropped; what is buffered when the master itself dies
//!   is lost, so the logger flushes at least once a second while records arrive. Flushing
//!   does not `fsync`.
//! - Rotation renames files in place: a tool following `ip.log` must follow the name
//!   (`tail -F`), not the open file.
//! - Nothing else may write to or rotate the files while the sink is open.
//! - After a write error (a full disk) the line may be partly written.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::raw::{Clock, RawRecord};
use super::record::{Kind, Record};

/// A destination for log records; the logger's writer thread writes every record to each of
/// its sinks.
///
/// A sink is driven by one owner, so it needs no locking; it may buffer until
/// [`flush`](Sink::flush). It must be [`Send`]: it is moved to the writer thread
/// (`procactor-log`) and called there, never on the master's event loop, so a slow sink
/// delays the logs (and, once the queue is full, the workers that log), not the cluster. A
/// sink that panics is reported and gets no more records.
pub trait Sink: Send {
    /// Takes one record.
    ///
    /// # Errors
    /// An I/O error writing the record, which may then be lost; the sink stays usable.
    fn write(&mut self, record: &Record) -> io::Result<()>;

    /// Hands whatever is buffered to the OS.
    ///
    /// # Errors
    /// The first I/O error met; the sink still tries everything it buffers.
    fn flush(&mut self) -> io::Result<()>;
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        (**self).write(record)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// Where a [`FileSink`] writes and when it rotates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// The directory holding one `<kind>.log` per kind; created if missing.
    pub dir: PathBuf,
    /// A file is rotated before a line would take it past this many bytes. A longer line
    /// still goes in, alone in a fresh file.
    pub max_bytes: u64,
    /// Rotated files kept per kind (`ip.log.1` the newest … `ip.log.<keep>`); 0 keeps none.
    pub keep: usize,
    /// The kinds written to files; records of other kinds are skipped.
    pub kinds: Vec<Kind>,
}

impl FileConfig {
    /// The default directory: `logs`, relative to the working directory.
    pub const DEFAULT_DIR: &'static str = "logs";
    /// The default rotation size: 10 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
    /// The default number of rotated files kept per kind.
    pub const DEFAULT_KEEP: usize = 5;

    /// The defaults, writing to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileConfig {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
            kinds: Kind::ALL.to_vec(),
        }
    }

    /// Sets [`max_bytes`](FileConfig::max_bytes).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`keep`](FileConfig::keep).
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// Sets [`kinds`](FileConfig::kinds).
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = Kind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig::new(Self::DEFAULT_DIR)
    }
}

/// Writes records as JSON lines (see [`Record::to_json_line`]), one file per kind
/// (`ip.log`, `history.log`, `error.log`, `output.log`), rotated by size.
///
/// Rotation, when the next line would take `ip.log` past `max_bytes`: flush it, delete
/// `ip.log.<keep>`, rename `ip.log.<n>` to `ip.log.<n+1>` from the oldest down, rename
/// `ip.log` to `ip.log.1`, and start a new `ip.log`. Opening a directory that already holds
/// logs appends to them, counting the bytes already there. Dropping the sink flushes it,
/// ignoring errors; call [`Sink::flush`] to see them.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// The open file of each kind written, indexed by `Kind as usize`.
    files: [Option<LogFile>; Kind::ALL.len()],
    /// The line being written, kept to reuse its allocation.
    line: Vec<u8>,
    /// The time of worker records' lines, formatted once a second.
    clock: Clock,
    /// What the files have taken since the sink was opened.
    tally: FileTally,
}

/// What a [`FileSink`] has done since it was opened: running totals, for the logger's
/// [`LogStats`](super::LogStats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FileTally {
    /// Bytes of lines written (to the buffer, then the file).
    pub(crate) bytes: u64,
    /// Files rotated.
    pub(crate) rotations: u64,
}

impl FileSink {
    /// Creates `config.dir` if needed and opens (for appending) the file of each kind in
    /// `config.kinds`.
    ///
    /// # Errors
    /// The directory cannot be created, or a file cannot be opened or read.
    pub fn open(config: FileConfig) -> io::Result<Self> {
        fs::create_dir_all(&config.dir)?;
        let mut files: [Option<LogFile>; Kind::ALL.len()] = Default::default();
        for kind in Kind::ALL {
            if config.kinds.contains(&kind) {
                files[kind as usize] = Some(LogFile::open(config.dir.join(kind.file_name()))?);
            }
        }
        Ok(FileSink {
            dir: config.dir,
            max_bytes: config.max_bytes,
            keep: config.keep,
            files,
            line: Vec::new(),
            clock: Clock::default(),
            tally: FileTally::default(),
        })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes written and files rotated since the sink was opened.
    pub(crate) fn tally(&self) -> FileTally {
        self.tally
    }

    /// As [`Sink::write`] for a worker's record as it arrived: the same line, written around
    /// the fields' text when it can be (see `logger/raw.rs`).
    pub(crate) fn write_raw(&mut self, record: &RawRecord) -> io::Result<()> {
        let Some(file) = &mut self.files[record.kind as usize] else {
            return Ok(());
        };
        self.line.clear();
        record.write_json_line(&mut self.line, &mut self.clock);
        file.write_line(&self.line, self.max_bytes, self.keep, &mut self.tally)
    }
}

impl Sink for FileSink {
    /// Appends the record's JSON line to its kind's file, rotating first if the line would
    /// take the file past `max_bytes`; a record of a kind not configured is skipped.
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let Some(file) = &mut self.files[record.kind as usize] else {
            return Ok(());
        };
        self.line.clear();
        record.to_json_line(&mut self.line);
        file.write_line(&self.line, self.max_bytes, self.keep, &mut self.tally)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for file in self.files.iter_mut().flatten() {
            result = result.and(file.writer.flush());
        }
        result
    }
}

/// One kind's current log file.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Bytes in the file, buffered ones included.
    size: u64,
}

impl LogFile {
    /// Opens `path` for appending, creating it if missing. A file whose last line was torn
    /// (a crash mid-write) gets a line ending first, so the next line starts on its own.
    fn open(path: PathBuf) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut size = file.metadata()?.len();
        let torn = size > 0 && {
            let mut last = [0];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            last != *b"\n"
        };
        if torn {
            file.write_all(b"\n")?;
            size += 1;
        }
        Ok(LogFile {
            path,
            writer: BufWriter::new(file),
            size,
        })
    }

    /// Appends `line`, rotating first if it would take the file past `max_bytes`; what was
    /// done is added to `tally`.
    fn write_line(
        &mut self,
        line: &[u8],
        max_bytes: u64,
        keep: usize,
        tally: &mut FileTally,
    ) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > max_bytes {
            self.rotate(keep)?;
            tally.rotations += 1;
        }
        self.writer.write_all(line)?;
        self.size += len;
        tally.bytes += len;
        Ok(())
    }

    fn rotate(&mut self, keep: usize) -> io::Result<()> {
        self.writer.flush()?;
        if keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            // The oldest goes, and so does any file left beyond `keep` by a larger earlier one.
            let mut stale = keep;
            while remove_if_exists(&numbered(&self.path, stale))? {
                stale += 1;
            }
            for n in (1..keep).rev() {
                rename_if_exists(&numbered(&self.path, n), &numbered(&self.path, n + 1))?;
            }
            rename_if_exists(&self.path, &numbered(&self.path, 1))?;
        }
        *self = LogFile::open(std::mem::take(&mut self.path))?;
        Ok(())
    }
}

/// `path` with `.<n>` appended: `ip.log.3`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = OsString::from(path);
    name.push(format!(".{n}"));
    name.into()
}

/// Removes `path`; `Ok(false)` if it did not exist.
fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to`, replacing it; nothing if `from` does not exist.
fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last `capacity` records of each kind, in memory, for showing recent logs on demand.
///
/// Memory is bounded by `capacity` records per kind, each as large as its producer allowed
/// (output lines are capped before they become records).
#[derive(Debug, Clone)]
pub struct RingSink {
    capacity: usize,
    /// One ring per kind, indexed by `Kind as usize`, oldest first.
    rings: [VecDeque<Entry>; Kind::ALL.len()],
}

/// A record in the ring: a worker's stays as it arrived until a query asks for it.
#[derive(Debug, Clone)]
enum Entry {
    Record(Record),
    Raw(RawRecord),
}

impl Entry {
    fn worker(&self) -> Option<usize> {
        match self {
            Entry::Record(record) => record.worker,
            Entry::Raw(raw) => raw.worker,
        }
    }

    fn to_record(&self) -> Record {
        match self {
            Entry::Record(record) => record.clone(),
            Entry::Raw(raw) => raw.to_record(),
        }
    }
}

impl RingSink {
    /// A ring holding up to `capacity` records of each kind; 0 holds none.
    pub fn new(capacity: usize) -> Self {
        RingSink {
            capacity,
            rings: Default::default(),
        }
    }

    /// How many records of each kind the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a record, forgetting the oldest of its kind if the ring is full.
    pub fn push(&mut self, record: Record) {
        self.add(record.kind, Entry::Record(record));
    }

    /// Adds a worker's record as it arrived; it is parsed only if a query returns it.
    pub(crate) fn push_raw(&mut self, record: RawRecord) {
        self.add(record.kind, Entry::Raw(record));
    }

    fn add(&mut self, kind: Kind, entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        let ring = &mut self.rings[kind as usize];
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Up to the last `n` records of `kind`, newest last: from worker `worker`, or from every
    /// process (the master included) when `worker` is `None`.
    ///
    /// Only the records returned are cloned.
    pub fn recent(&self, kind: Kind, n: usize, worker: Option<usize>) -> Vec<Record> {
        let mut recent: Vec<Record> = self.rings[kind as usize]
            .iter()
            .rev()
            .filter(|entry| worker.is_none_or(|id| entry.worker() == Some(id)))
            .take(n)
            .map(Entry::to_record)
            .collect();
        recent.reverse();
        recent
    }
}

impl Sink for RingSink {
    /// Keeps a copy of the record; never fails.
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.push(record.clone());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Map, Value};

    use super::super::record::{Fields, Source, Stream};
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let dir = std::env::temp_dir().join(format!("procactor-sink-{pid}-{n}-{test}"));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// The names of the files in the directory, sorted.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn source(worker: Option<usize>) -> Source {
        Source {
            worker,
            pid: 77,
            generation: 1,
            group: "g".to_owned(),
        }
    }

    /// A `history` record numbered `seq`, `pad` bytes longer than the shortest; fixed time.
    fn tick(seq: u64, pad: usize) -> Record {
        let fields = Map::from_iter([
            ("seq".to_owned(), json!(format!("{seq:06}"))),
            ("pad".to_owned(), json!("x".repeat(pad))),
        ]);
        Record::history(source(Some(0)), "tick", Fields(fields)).at(UNIX_EPOCH)
    }

    fn line_len(record: &Record) -> u64 {
        let mut line = Vec::new();
        record.to_json_line(&mut line);
        line.len() as u64
    }

    /// The lines of a file, each checked to be a whole JSON object.
    fn lines(path: &Path) -> Vec<Map<String, Value>> {
        let text = fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{path:?} ends mid-line"
        );
        text.lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(object)) => object,
                _ => panic!("{path:?}: not a JSON object line: {line:?}"),
            })
            .collect()
    }

    /// The `seq` numbers in a file of `tick` records.
    fn seqs(path: &Path) -> Vec<u64> {
        lines(path)
            .iter()
            .map(|object| object["seq"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    fn history_config(dir: &TempDir, max_bytes: u64, keep: usize) -> FileConfig {
        FileConfig::new(&dir.0)
            .max_bytes(max_bytes)
            .keep(keep)
            .kinds([Kind::History])
    }

    fn write_ticks(sink: &mut FileSink, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            sink.write(&tick(seq, 0)).unwrap();
        }
    }

    #[test]
    fn default_config() {
        let config = FileConfig::default();
        assert_eq!(config.dir, Path::new("logs"));
        assert_eq!(config.max_bytes, 10 * 1024 * 1024);
        assert_eq!(config.keep, 5);
        assert_eq!(config.kinds, Kind::ALL);
        let parsed: FileConfig =
            serde_json::from_value(json!({"dir": "/var/log/app", "kinds": ["ip", "error"]}))
                .unwrap();
        assert_eq!(
            parsed,
            FileConfig::new("/var/log/app").kinds([Kind::Ip, Kind::Error])
        );
        assert!(serde_json::from_value::<FileConfig>(json!({"max_byte": 1})).is_err());
    }

    #[test]
    fn each_kind_goes_to_its_own_file() {
        let dir = TempDir::new("each_kind");
        let mut sink = FileSink::open(FileConfig::new(&dir.0)).unwrap();
        assert_eq!(sink.dir(), dir.0);
        let records = [
            Record::ip(
                source(Some(1)),
                "1.2.3.4:5",
                "GET",
                "/",
                200,
                Duration::ZERO,
            ),
            Record::history(source(None), "started", Fields::new()),
            Record::error(source(Some(2)), "boom", Vec::new(), None),
            Record::output(source(Some(3)), Stream::Stdout, "hello", false),
            Record::dropped(source(Some(3)), 9),
        ];
        for record in &records {
            sink.write(record).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(
            dir.names(),
            ["error.log", "history.log", "ip.log", "output.log"]
        );
        for kind in Kind::ALL {
            let written = lines(&dir.path(kind.file_name()));
            let expected = records.iter().filter(|r| r.kind == kind).count();
            assert_eq!(written.len(), expected, "{kind}");
            assert!(written.iter().all(|object| object["kind"] == kind.as_str()));
        }
        let output = lines(&dir.path("output.log"));
        assert_eq!(output[0]["line"], "hello");
        assert_eq!(output[1]["dropped"], 9);
    }

    #[test]
    fn kinds_not_configured_are_skipped() {
        let dir = TempDir::new("kinds_skipped");
        let mut sink = FileSink::open(FileConfig::new(&dir.0).kinds([Kind::Error])).unwrap();
        sink.write(&Record::ip(
            source(None),
            "c",
            "GET",
            "/",
            200,
            Duration::ZERO,
        ))
        .unwrap();
        sink.write(&Record::error(source(None), "e", Vec::new(), None))
            .unwrap();
        sink.flush().unwrap();
        assert_eq!(dir.names(), ["error.log"]);
        assert_eq!(lines(&dir.path("error.log")).len(), 1);
    }

    #[test]
    fn flush_and_drop_hand_buffered_lines_to_the_os() {
        let dir = TempDir::new("flush_drop");
        let path = dir.path("history.log");
        let mut sink = FileSink::open(history_config(&dir, 1 << 20, 5)).unwrap();
        write_ticks(&mut sink, 0..3);
        assert_eq!(
            fs::read(&path).unwrap().len(),
            0,
            "small writes are buffered"
        );
        sink.flush().unwrap();
        assert_eq!(seqs(&path), [0, 1, 2]);
        write_ticks(&mut sink, 3..5);
        drop(sink);
        assert_eq!(seqs(&path), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn rotates_at_size_and_keeps_the_newest_files() {
        let dir = TempDir::new("rotate_keep");
        let len = line_len(&tick(0, 0));
        // Ten lines fit in a file; the eleventh would not.
        let mut sink = FileSink::open(history_config(&dir, 10 * len + 5, 3)).unwrap();
        write_ticks(&mut sink, 1..=95);
        sink.flush().unwrap();
        assert_eq!(
            dir.names(),
            [
                "history.log",
                "history.log.1",
                "history.log.2",
                "history.log.3"
            ]
        );
        assert_eq!(
            seqs(&dir.path("history.log.3")),
            (61..=70).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(&dir.path("history.log.2")),
            (71..=80).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(&dir.path("history.log.1")),
            (81..=90).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(&dir.path("history.log")),
            (91..=95).collect::<Vec<_>>()
        );
        for name in dir.names() {
            assert!(fs::metadata(dir.path(&name)).unwrap().len() <= 10 * len + 5);
        }
    }

    #[test]
    fn line_that_exactly_fills_the_file_does_not_rotate() {
        let dir = TempDir::new("exact_fill");
        let len = line_len(&tick(0, 0));
        let mut sink = FileSink::open(history_config(&dir, 2 * len, 2)).unwrap();
        write_ticks(&mut sink, 0..2);
        sink.flush().unwrap();
        assert_eq!(dir.names(), ["history.log"]);
        assert_eq!(
            fs::metadata(dir.path("history.log")).unwrap().len(),
            2 * len
        );
        write_ticks(&mut sink, 2..3);
        sink.flush().unwrap();
        assert_eq!(seqs(&dir.path("history.log.1")), [0, 1]);
        assert_eq!(seqs(&dir.path("history.log")), [2]);
    }

    #[test]
    fn rotation_never_splits_lines_of_varied_sizes() {
        let dir = TempDir::new("varied");
        let max_bytes = 1000;
        let mut sink = FileSink::open(history_config(&dir, max_bytes, 4)).unwrap();
        let pad = |seq: u64| (seq * 37 % 23 * 13) as usize;
        for seq in 0..500 {
            sink.write(&tick(seq, pad(seq))).unwrap();
        }
        sink.flush().unwrap();
        let names = [
            "history.log.4",
            "history.log.3",
            "history.log.2",
            "history.log.1",
        ];
        let mut expected_names = vec!["history.log"];
        expected_names.extend(names.iter().rev());
        assert_eq!(dir.names(), expected_names);

        let mut files: Vec<Vec<u64>> = names.iter().map(|name| seqs(&dir.path(name))).collect();
        files.push(seqs(&dir.path("history.log")));
        let all: Vec<u64> = files.concat();
        assert_eq!(all.last(), Some(&499));
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        for pair in files.windows(2) {
            let (full, next) = (&pair[0], &pair[1]);
            let size: u64 = full.iter().map(|&s| line_len(&tick(s, pad(s)))).sum();
            let first = line_len(&tick(next[0], pad(next[0])));
            assert!(size <= max_bytes, "{size}");
            assert!(size + first > max_bytes, "rotated early: {size} + {first}");
        }
    }

    #[test]
    fn line_longer_than_max_bytes_goes_alone_into_a_fresh_file() {
        let dir = TempDir::new("oversized");
        let mut sink = FileSink::open(history_config(&dir, 200, 5)).unwrap();
        sink.write(&tick(0, 1000)).unwrap();
        sink.flush().unwrap();
        assert_eq!(dir.names(), ["history.log"], "an empty file is not rotated");
        write_ticks(&mut sink, 1..2);
        sink.write(&tick(2, 1000)).unwrap();
        write_ticks(&mut sink, 3..4);
        sink.flush().unwrap();
        assert_eq!(seqs(&dir.path("history.log.3")), [0]);
        assert_eq!(seqs(&dir.path("history.log.2")), [1]);
        assert_eq!(seqs(&dir.path("history.log.1")), [2]);
        assert_eq!(seqs(&dir.path("history.log")), [3]);
    }

    #[test]
    fn keep_zero_discards_rotated_files() {
        let dir = TempDir::new("keep_zero");
        let len = line_len(&tick(0, 0));
        let mut sink = FileSink::open(history_config(&dir, 2 * len, 0)).unwrap();
        write_ticks(&mut sink, 0..5);
        sink.flush().unwrap();
        assert_eq!(dir.names(), ["history.log"]);
        assert_eq!(seqs(&dir.path("history.log")), [4]);
    }

    #[test]
    fn reopening_appends_and_counts_existing_bytes() {
        let dir = TempDir::new("reopen");
        let len = line_len(&tick(0, 0));
        let config = history_config(&dir, 10 * len, 5);
        write_ticks(&mut FileSink::open(config.clone()).unwrap(), 0..7);
        let mut sink = FileSink::open(config).unwrap();
        write_ticks(&mut sink, 7..12);
        sink.flush().unwrap();
        assert_eq!(dir.names(), ["history.log", "history.log.1"]);
        assert_eq!(
            seqs(&dir.path("history.log.1")),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&dir.path("history.log")), [10, 11]);
    }

    #[test]
    fn reopening_after_a_torn_line_starts_on_a_new_line() {
        let dir = TempDir::new("torn");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(
            dir.path("history.log"),
            "{\"seq\":\"000000\"}\n{\"seq\":\"0000",
        )
        .unwrap();
        let mut sink = FileSink::open(history_config(&dir, 1 << 20, 5)).unwrap();
        write_ticks(&mut sink, 1..2);
        sink.flush().unwrap();
        let text = fs::read_to_string(dir.path("history.log")).unwrap();
        let last: Vec<&str> = text.lines().collect();
        assert_eq!(last.len(), 3, "{text}");
        assert_eq!(last[1], "{\"seq\":\"0000");
        let object: Value = serde_json::from_str(last[2]).unwrap();
        assert_eq!(object["seq"], "000001");
    }

    #[test]
    fn smaller_keep_on_reopen_removes_older_files() {
        let dir = TempDir::new("shrink_keep");
        let len = line_len(&tick(0, 0));
        write_ticks(
            &mut FileSink::open(history_config(&dir, len, 4)).unwrap(),
            0..5,
        );
        assert_eq!(dir.names().len(), 5);
        let mut sink = FileSink::open(history_config(&dir, len, 2)).unwrap();
        write_ticks(&mut sink, 5..6);
        sink.flush().unwrap();
        assert_eq!(
            dir.names(),
            ["history.log", "history.log.1", "history.log.2"]
        );
        assert_eq!(seqs(&dir.path("history.log.2")), [3]);
        assert_eq!(seqs(&dir.path("history.log.1")), [4]);
        assert_eq!(seqs(&dir.path("history.log")), [5]);
    }

    #[test]
    fn ring_keeps_the_last_capacity_records_of_each_kind() {
        let mut ring = RingSink::new(3);
        assert_eq!(ring.capacity(), 3);
        for seq in 0..10 {
            ring.write(&tick(seq, 0)).unwrap();
        }
        ring.write(&Record::error(source(Some(0)), "e", Vec::new(), None))
            .unwrap();
        ring.flush().unwrap();
        let recent = ring.recent(Kind::History, 10, None);
        assert_eq!(recent, [tick(7, 0), tick(8, 0), tick(9, 0)]);
        assert_eq!(
            ring.recent(Kind::History, 2, None),
            [tick(8, 0), tick(9, 0)]
        );
        assert_eq!(ring.recent(Kind::Error, 10, None).len(), 1);
        assert!(ring.recent(Kind::Ip, 10, None).is_empty());
        assert!(ring.recent(Kind::History, 0, None).is_empty());
    }

    #[test]
    fn ring_filters_by_worker_newest_last() {
        let mut ring = RingSink::new(100);
        for n in 0..30 {
            let worker = if n % 3 == 0 { None } else { Some(n % 3) };
            ring.push(Record::output(
                source(worker),
                Stream::Stderr,
                &n.to_string(),
                false,
            ));
        }
        let lines = |records: Vec<Record>| -> Vec<String> {
            let lines = records
                .iter()
                .map(|r| r.fields.0["line"].as_str().unwrap().to_owned());
            lines.collect()
        };
        assert_eq!(
            lines(ring.recent(Kind::Output, 3, Some(1))),
            ["22", "25", "28"]
        );
        assert_eq!(lines(ring.recent(Kind::Output, 2, Some(2))), ["26", "29"]);
        assert_eq!(
            lines(ring.recent(Kind::Output, 3, None)),
            ["27", "28", "29"]
        );
        assert!(ring.recent(Kind::Output, 3, Some(7)).is_empty());
    }

    #[test]
    fn ring_with_zero_capacity_keeps_nothing() {
        let mut ring = RingSink::new(0);
        ring.push(tick(0, 0));
        assert!(ring.recent(Kind::History, 1, None).is_empty());
    }

    #[test]
    fn boxed_sinks_are_sinks() {
        let dir = TempDir::new("boxed");
        let mut sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(FileSink::open(history_config(&dir, 1 << 20, 1)).unwrap()),
            Box::new(RingSink::new(4)),
        ];
        for sink in &mut sinks {
            sink.write(&tick(1, 0)).unwrap();
            sink.flush().unwrap();
        }
        assert_eq!(seqs(&dir.path("history.log")), [1]);
    }
}
