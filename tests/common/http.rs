#![allow(dead_code)]
//! A small HTTP/1.1 client and load generator for the integration tests, on std `TcpStream`s
//! and OS threads, so that the load never depends on the actix loop of the test. Hand-written
//! because the tests need to classify each failure (connect refused, an idle keep-alive
//! connection closed before the response began, a response cut off midway), which an HTTP client
//! library hides behind its own retries.
//!
//! It never resends a request, as many scripts and load balancers behave: every request that
//! got no complete response is a failure, including one sent on a reused keep-alive connection
//! that the server closed as the request crossed it. A keep-alive thread reconnects only after
//! a response that said `Connection: close`, or after a failure.
//!
//! Scope: `GET` only; `Content-Length`, chunked and read-to-close bodies; no pipelining (one
//! request in flight per connection). Every socket has 5 s read and write timeouts.
//!
//! ```ignore
//! let load = Load::start(addr, LoadOptions { threads_keepalive: 4, threads_new_conn: 2, path: "/".into() });
//! assert!(wait_until(Duration::from_secs(10), || load.stats().ok > 100));
//! // ... reload the cluster ...
//! let mark = Instant::now();
//! assert!(wait_until(Duration::from_secs(10), || !load.stats().pids_since(mark).is_empty()));
//! let stats = load.stop();
//! assert_eq!(stats.failures, 0, "{}", stats.summary());
//! assert!(stats.pids_since(mark).is_disjoint(&old_pids));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Read, write and connect timeout of every socket.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How many failure descriptions [`LoadStats::failure_samples`] keeps.
pub(crate) const MAX_FAILURE_SAMPLES: usize = 20;
/// How long a thread pauses after a failure.
pub(crate) const FAILURE_PAUSE: Duration = Duration::from_millis(5);
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One `GET path` on a new connection (`Connection: close`): the status and the body.
///
/// # Errors
/// Connect, write or read errors, timeouts, and malformed or cut-off responses
/// ([`io::ErrorKind::InvalidData`] / [`io::ErrorKind::UnexpectedEof`]).
pub(crate) fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut conn = Conn::connect(addr)?;
    conn.send(addr, path, false)?;
    match conn.read_response() {
        Ok(res) => Ok((res.status, res.body)),
        Err(Cut::BeforeAnyByte(e)) => Err(e),
        Err(Cut::Midway(why)) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
    }
}

/// A response as [`KeepAlive::get`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// The server said it closes the connection after this response.
    pub(crate) close: bool,
}

/// One keep-alive connection, driven request by request (no resending).
pub(crate) struct KeepAlive {
    addr: SocketAddr,
    conn: Conn,
}

impl KeepAlive {
    /// Connects to `addr`.
    pub(crate) fn connect(addr: SocketAddr) -> io::Result<KeepAlive> {
        Ok(KeepAlive {
            addr,
            conn: Conn::connect(addr)?,
        })
    }

    /// `GET path` on this connection (`Connection: keep-alive`).
    ///
    /// # Errors
    /// As [`get`]: no response, a cut-off or malformed one.
    pub(crate) fn get(&mut self, path: &str) -> io::Result<Reply> {
        self.conn.send(self.addr, path, true)?;
        match self.conn.read_response() {
            Ok(res) => Ok(Reply {
                status: res.status,
                body: res.body,
                close: res.close,
            }),
            Err(Cut::BeforeAnyByte(e)) => Err(e),
            Err(Cut::Midway(why)) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
        }
    }

    /// Whether the server has closed the connection: end-of-file or a reset within
    /// [`IO_TIMEOUT`], with no byte before it.
    pub(crate) fn closed_by_server(&mut self) -> bool {
        matches!(self.conn.more("next response"), Err(Cut::BeforeAnyByte(e)) if is_close(&e))
    }
}

/// The pid in a body that starts `pid <n>` (as `procactor-http` answers, and the CLI's test
/// servers, which say more after it), if it is one.
pub(crate) fn parse_pid(body: &str) -> Option<u32> {
    body.trim()
        .strip_prefix("pid ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What [`Load::start`] runs.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    /// Threads that each keep one connection open and send request after request on it.
    pub(crate) threads_keepalive: usize,
    /// Threads that open a new connection for every request (`Connection: close`).
    pub(crate) threads_new_conn: usize,
    /// The path every request asks for, e.g. `"/"` or `"/slow?ms=50"`.
    pub(crate) path: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            threads_keepalive: 2,
            threads_new_conn: 2,
            path: "/".into(),
        }
    }
}

/// A snapshot of what a [`Load`] has seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadStats {
    /// Responses with status 200.
    pub(crate) ok: u64,
    /// Requests that got no complete 200 response: connect errors, non-200 statuses, no
    /// response at all (end-of-file or a reset, on a new or a reused connection), responses cut
    /// off midway, timeouts. None is resent.
    pub(crate) failures: u64,
    /// The first [`MAX_FAILURE_SAMPLES`] failure descriptions.
    pub(crate) failure_samples: Vec<String>,
    /// Of `failures`, the responses with a status other than 200, by status.
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Of `failures`, those on a reused keep-alive connection that met end-of-file or a reset
    /// before any byte of their response (the server closed the idle connection as the request
    /// crossed it; RFC 9112 §9.3.1). Counted apart to name the cause, not excused.
    pub(crate) idle_close: u64,
    /// Responses that carried `Connection: close` on a keep-alive connection (a draining
    /// server telling the client to reconnect).
    pub(crate) told_to_close: u64,
    /// Every pid that answered.
    pub(crate) pids: BTreeSet<u32>,
    /// Answers per pid.
    pub(crate) answers: BTreeMap<u32, u64>,
    /// Per pid, when the first request it answered was sent.
    pub(crate) first_sent: BTreeMap<u32, Instant>,
    /// Per pid, when the last request it answered was sent.
    pub(crate) last_sent: BTreeMap<u32, Instant>,
}

impl LoadStats {
    /// The pids that answered a request sent at or after `mark`: after a reload completes,
    /// exactly the new workers' pids.
    pub(crate) fn pids_since(&self, mark: Instant) -> BTreeSet<u32> {
        self.last_sent
            .iter()
            .filter(|(_, sent)| **sent >= mark)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// One line for assertion messages, with the failure samples below it.
    pub(crate) fn summary(&self) -> String {
        let mut out = format!(
            "ok {}, failures {} (statuses {:?}, on an idle connection closed {}), told to close \
             {}, answers by pid {:?}",
            self.ok,
            self.failures,
            self.statuses,
            self.idle_close,
            self.told_to_close,
            self.answers
        );
        for sample in &self.failure_samples {
            out.push_str("\n  ");
            out.push_str(sample);
        }
        out
    }
}

/// Load on an HTTP server from OS threads, until [`stop`](Load::stop) or drop.
#[derive(Debug)]
pub(crate) struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    stats: Mutex<LoadStats>,
    started: Instant,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, LoadStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ok(&self, sent: Instant, body: &str) {
        let mut stats = self.stats();
        stats.ok += 1;
        if let Some(pid) = parse_pid(body) {
            stats.pids.insert(pid);
            *stats.answers.entry(pid).or_default() += 1;
            stats.first_sent.entry(pid).or_insert(sent);
            let last = stats.last_sent.entry(pid).or_insert(sent);
            *last = (*last).max(sent);
        }
    }

    fn fail(&self, who: &str, what: String) {
        let at = self.started.elapsed().as_millis();
        {
            let mut stats = self.stats();
            stats.failures += 1;
            if stats.failure_samples.len() < MAX_FAILURE_SAMPLES {
                stats
                    .failure_samples
                    .push(format!("{at} ms, {who}: {what}"));
            }
        }
        // Against a server that is down, do not spin.
        std::thread::sleep(FAILURE_PAUSE);
    }

    fn idle_closed(&self) {
        self.stats().idle_close += 1;
    }

    fn told_to_close(&self) {
        self.stats().told_to_close += 1;
    }

    /// Records a response as ok or as a failure.
    fn response(&self, who: &str, sent: Instant, res: &Response) {
        if res.status == 200 {
            self.ok(sent, &res.body);
        } else {
            *self.stats().statuses.entry(res.status).or_default() += 1;
            self.fail(who, format!("status {}: {:?}", res.status, res.body));
        }
    }
}

impl Load {
    /// Starts the threads; each sends `GET options.path` to `addr` until stopped.
    pub(crate) fn start(addr: SocketAddr, options: LoadOptions) -> Load {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stats: Mutex::new(LoadStats::default()),
            started: Instant::now(),
        });
        let path: Arc<str> = options.path.into();
        let mut threads = Vec::new();
        for i in 0..options.threads_keepalive {
            let (shared, path) = (Arc::clone(&shared), Arc::clone(&path));
            threads.push(spawn(format!("keepalive-{i}"), move |who| {
                keepalive_loop(&shared, addr, &path, who)
            }));
        }
        for i in 0..options.threads_new_conn {
            let (shared, path) = (Arc::clone(&shared), Arc::clone(&path));
            threads.push(spawn(format!("new-conn-{i}"), move |who| {
                new_conn_loop(&shared, addr, &path, who)
            }));
        }
        Load { shared, threads }
    }

    /// What the load has seen so far.
    pub(crate) fn stats(&self) -> LoadStats {
        self.shared.stats().clone()
    }

    /// As [`LoadStats::pids_since`] on a fresh snapshot.
    pub(crate) fn pids_since(&self, mark: Instant) -> BTreeSet<u32> {
        self.shared.stats().pids_since(mark)
    }

    /// Stops the threads (each finishes its request in flight, at most [`IO_TIMEOUT`] per
    /// step) and returns the final statistics.
    pub(crate) fn stop(mut self) -> LoadStats {
        self.join();
        self.stats()
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.join();
    }
}

fn spawn(name: String, body: impl FnOnce(&str) + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || body(&name))
        .expect("spawn a load thread")
}

fn new_conn_loop(shared: &Shared, addr: SocketAddr, path: &str, who: &str) {
    while !shared.stopped() {
        let sent = Instant::now();
        match exchange(addr, path, false) {
            Ok(res) => shared.response(who, sent, &res),
            Err(e) => shared.fail(who, format!("new connection: {e}")),
        }
    }
}

fn keepalive_loop(shared: &Shared, addr: SocketAddr, path: &str, who: &str) {
    let mut conn: Option<Conn> = None;
    let mut on_conn = 0u64; // requests sent on the current connection
    while !shared.stopped() {
        let reused = conn.is_some();
        let sent = Instant::now();
        let mut current = match conn.take() {
            Some(c) => c,
            None => match Conn::connect(addr) {
                Ok(c) => {
                    on_conn = 0;
                    c
                }
                Err(e) => {
                    shared.fail(who, format!("connect: {e}"));
                    continue;
                }
            },
        };
        on_conn += 1;
        let outcome = current
            .send(addr, path, true)
            .map_err(Cut::BeforeAnyByte)
            .and_then(|()| current.read_response());
        let which = if reused { "reused" } else { "new" };
        // After a failure the connection is dropped: the next request goes on a new one.
        match outcome {
            Ok(res) => {
                shared.response(who, sent, &res);
                if res.close {
                    shared.told_to_close();
                } else {
                    conn = Some(current);
                }
            }
            Err(Cut::BeforeAnyByte(e)) => {
                if reused && is_close(&e) {
                    shared.idle_closed();
                }
                shared.fail(
                    who,
                    format!("{which} connection, request {on_conn} on it: no response: {e}"),
                );
            }
            Err(Cut::Midway(why)) => shared.fail(
                who,
                format!("{which} connection, request {on_conn} on it: {why}"),
            ),
        }
    }
}

/// One request on a new connection.
fn exchange(addr: SocketAddr, path: &str, keep_alive: bool) -> Result<Response, String> {
    let mut conn = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.send(addr, path, keep_alive)
        .map_err(|e| format!("send: {e}"))?;
    let res = conn.read_response().map_err(|cut| match cut {
        Cut::BeforeAnyByte(e) => format!("no response: {e}"),
        Cut::Midway(why) => why,
    })?;
    Ok(res)
}

/// Reset, abort, broken pipe or end-of-file: the peer closed the connection.
fn is_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
    /// The server will close the connection after it (`Connection: close`, HTTP/1.0 without
    /// keep-alive, or a body delimited by the close).
    close: bool,
}

/// Why no whole response was read.
#[derive(Debug)]
enum Cut {
    /// Nothing of the response arrived (EOF is [`io::ErrorKind::UnexpectedEof`]).
    BeforeAnyByte(io::Error),
    /// Part of it arrived, or it was malformed.
    Midway(String),
}

/// A connection and the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, addr: SocketAddr, path: &str, keep_alive: bool) -> io::Result<()> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\r\n");
        self.stream.write_all(request.as_bytes())
    }

    /// Reads more bytes into the buffer; `Ok(false)` at end-of-file.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Fills until the buffer holds `len` bytes.
    fn want(&mut self, len: usize, what: &str) -> Result<(), Cut> {
        while self.buf.len() < len {
            self.more(what)?;
        }
        Ok(())
    }

    /// The index just past the first `pat` at or after `from`, reading as needed.
    fn find(&mut self, from: usize, pat: &[u8], limit: usize, what: &str) -> Result<usize, Cut> {
        loop {
            if let Some(i) = self.buf[from.min(self.buf.len())..]
                .windows(pat.len())
                .position(|w| w == pat)
            {
                return Ok(from + i + pat.len());
            }
            if self.buf.len() > limit {
                return Err(Cut::Midway(format!("{what} longer than {limit} bytes")));
            }
            self.more(what)?;
        }
    }

    /// Reads at least one more byte, classifying a failure by whether any byte had arrived.
    fn more(&mut self, what: &str) -> Result<(), Cut> {
        let had = self.buf.len();
        match self.fill() {
            Ok(true) => Ok(()),
            Ok(false) if had == 0 => Err(Cut::BeforeAnyByte(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of file",
            ))),
            Ok(false) => Err(Cut::Midway(format!(
                "end of file in the {what} after {had} bytes"
            ))),
            Err(e) if had == 0 => Err(Cut::BeforeAnyByte(e)),
            Err(e) => Err(Cut::Midway(format!(
                "{e} ({:?}) in the {what} after {had} bytes",
                e.kind()
            ))),
        }
    }

    fn read_response(&mut self) -> Result<Response, Cut> {
        let head_end = self.find(0, b"\r\n\r\n", MAX_HEAD_BYTES, "head")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = match parts.next().and_then(|s| s.parse().ok()) {
            Some(s) if version.starts_with("HTTP/1.") => s,
            _ => return Err(Cut::Midway(format!("bad status line {status_line:?}"))),
        };
        let mut close = version == "HTTP/1.0";
        let (mut length, mut chunked) = (None, false);
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(Cut::Midway(format!("bad header line {line:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => match value.parse::<usize>() {
                    Ok(n) if n <= MAX_BODY_BYTES => length = Some(n),
                    _ => return Err(Cut::Midway(format!("bad Content-Length {value:?}"))),
                },
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let value = value.to_ascii_lowercase();
                    if value.contains("close") {
                        close = true;
                    } else if value.contains("keep-alive") {
                        close = false;
                    }
                }
                _ => {}
            }
        }
        let (body, end) = if chunked {
            self.chunked_body(head_end)?
        } else if let Some(n) = length {
            self.want(head_end + n, "body")?;
            (self.buf[head_end..head_end + n].to_vec(), head_end + n)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), head_end)
        } else {
            close = true;
            loop {
                if self.buf.len() - head_end > MAX_BODY_BYTES {
                    return Err(Cut::Midway("body longer than the limit".into()));
                }
                match self.fill() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Err(Cut::Midway(format!("{e} in a body read to close"))),
                }
            }
            (self.buf[head_end..].to_vec(), self.buf.len())
        };
        self.buf.drain(..end);
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close,
        })
    }

    /// Decodes a chunked body starting at `pos`; returns it and the index past its end.
    fn chunked_body(&mut self, mut pos: usize) -> Result<(Vec<u8>, usize), Cut> {
        let mut body = Vec::new();
        loop {
            let line_end = self.find(pos, b"\r\n", pos + 1024, "chunk size")?;
            let line = String::from_utf8_lossy(&self.buf[pos..line_end - 2]).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| Cut::Midway(format!("bad chunk size {line:?}")))?;
            pos = line_end;
            if size == 0 {
                // Trailer lines, then an empty line.
                loop {
                    let end = self.find(pos, b"\r\n", pos + MAX_HEAD_BYTES, "trailer")?;
                    let empty = end == pos + 2;
                    pos = end;
                    if empty {
                        return Ok((body, pos));
                    }
                }
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(Cut::Midway("chunked body longer than the limit".into()));
            }
            self.want(pos + size + 2, "chunk")?;
            body.extend_from_slice(&self.buf[pos..pos + size]);
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(Cut::Midway("chunk not followed by CRLF".into()));
            }
            pos += size + 2;
        }
    }
}
