//! The master's HTTP endpoint for Prometheus scrapes: `GET /metrics`.
//!
//! It runs on the master's actix thread (a tokio current-thread runtime with a `LocalSet`): the
//! accept loop and every connection are local tasks, and the body is encoded at scrape time by a
//! [`Scrape`] closure that reads the master's state where it lives, with no lock and no copy
//! kept between scrapes. So nothing here may block or spin, and no client may hold the thread:
//! every read and write is asynchronous and bounded by a deadline.
//!
//! Why served by hand: the endpoint has one route, answers one method, and needs a few limits a
//! general server sets differently (or not at all): a whole request head within a deadline, no
//! request bodies, a hard connection cap answered with 503 instead of a queue. hyper or axum
//! would bring a second HTTP stack into the master for that. The one part worth not writing by
//! hand, parsing a request head, is done by `httparse`, the parser hyper uses.
//!
//! What a client gets:
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` (query ignored) | 200, the scrape in the format `Accept` asks for ([`Format`]) |
//! | `GET /` | 200, a line naming `/metrics` |
//! | `GET` of another path | 404 |
//! | another method (`HEAD`, `POST`, …) | 405 with `Allow: GET` |
//! | a malformed head, or one with a body | 400, then close |
//! | a head over [`Limits::head_bytes`] (or over 64 header lines) | 431, then close |
//! | a head not complete within [`Limits::head_timeout`] | 408, then close |
//! | a connection over [`Limits::connections`] | 503 and close at once, never queued |
//! | `GET /metrics` while there is nothing to scrape ([`Scrape`] says why) | 503 with the reason |
//!
//! Limits (the defaults are in [`Limits`]): a request head must arrive whole within
//! `head_timeout` of the connection's accept or, on a kept-alive connection, of its first byte;
//! a kept-alive connection may sit idle between requests for `idle_timeout`, then it is closed
//! (without a 408: a client racing the close sends its request on a new connection); a response
//! not written within `write_timeout` (a client that does not read) drops the connection. HTTP/1.1
//! connections are kept alive until `Connection: close`, a timeout or an error; HTTP/1.0 ones are
//! closed after the response. Pipelined requests are answered in order. Before a connection is
//! closed after a response, its write side is shut and up to 64 KiB of what the client still
//! sends is read and thrown away for at most 2 s, so the client reads the answer rather than a
//! reset. The 503 is written once without waiting (a client that already sent its request may see
//! a reset instead). A failed accept (`EMFILE`, …) is logged and retried after a pause; it never
//! ends the endpoint. Not supported: TLS, authentication, compression, HTTP/2.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, timeout_at, Instant};

/// Which exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The Prometheus text format 0.0.4, the default.
    Prometheus,
    /// OpenMetrics text 1.0.0, when `Accept` prefers it to `text/plain`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header value asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a q-value above 0 and at least that of every
    /// `text/plain` entry (Prometheus 2.x sends both, OpenMetrics first); otherwise, as for
    /// `*/*` or no header at all, the Prometheus text format. An entry whose q-value does not
    /// parse counts as not acceptable (q = 0).
    fn from_accept(accept: &str) -> Format {
        let (mut openmetrics, mut text) = (0.0_f32, None::<f32>);
        for entry in accept.split(',') {
            let mut parts = entry.split(';');
            let media = parts.next().unwrap_or("").trim();
            let q = quality(parts);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = Some(text.map_or(q, |t| t.max(q)));
            }
        }
        if openmetrics > 0.0 && text.is_none_or(|t| openmetrics >= t) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The q-value among an `Accept` entry's parameters: 1 when absent, 0 when it is not a number
/// from 0 to 1.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> f32 {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return match value.trim().parse::<f32>() {
                Ok(q) if (0.0..=1.0).contains(&q) => q,
                _ => 0.0,
            };
        }
    }
    1.0
}

/// Produces one scrape's body, encoded at scrape time (runs on the master's thread).
/// `Err` is why there is no scrape now (the cluster stopped, or did not answer in time),
/// answered 503 with that line.
pub(crate) type Scrape =
    Rc<dyn Fn(Format) -> Pin<Box<dyn Future<Output = Result<String, String>>>>>;

/// The endpoint's limits (defaults as documented on each field; tests shorten the times).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The largest request head, request line and headers (8 KiB); a larger one gets 431.
    pub(crate) head_bytes: usize,
    /// Within this the whole request head must arrive (10 s), from the accept or, on a kept-alive
    /// connection, from the request's first byte; then 408.
    pub(crate) head_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (30 s); then it is closed.
    pub(crate) idle_timeout: Duration,
    /// Within this each response must be written (10 s); then the connection is dropped.
    pub(crate) write_timeout: Duration,
    /// How many connections may be open at once (64); one more gets 503 and is closed.
    pub(crate) connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes: 8 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            connections: 64,
        }
    }
}

/// How many header lines a head may have (more gets 431).
const MAX_HEADERS: usize = 64;
/// How much is read from a socket at a time.
const READ_CHUNK: usize = 4096;
/// How long, and how many bytes, a closing connection reads and discards after its answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// How long the accept loop pauses after an accept error (too many open files, …).
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// The content type of the landing page and of every error.
const TEXT: &str = "text/plain; charset=utf-8";

/// A running endpoint; dropping it (or [`stop`](Endpoint::stop)) stops accepting and ends its
/// connections.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    shared: Rc<RefCell<Shared>>,
    accept: JoinHandle<()>,
}

/// What the endpoint and its accept loop share: the listener (gone once stopped) and the
/// connections' tasks, which also count the open connections.
#[derive(Debug)]
struct Shared {
    listener: Option<TcpListener>,
    connections: JoinSet<()>,
}

impl Endpoint {
    /// Binds `addr` (`host:port`) now (errors are the caller's config errors; port 0 picks a
    /// free one).
    pub(crate) fn bind(addr: &str) -> io::Result<std::net::TcpListener> {
        std::net::TcpListener::bind(addr)
    }

    /// Serves on the current thread's `LocalSet` (`tokio::task::spawn_local`); must be called
    /// inside one.
    ///
    /// # Errors
    /// When the listener cannot be made non-blocking or registered with the runtime.
    ///
    /// # Panics
    /// Outside a tokio `LocalSet` (as `spawn_local` does).
    pub(crate) fn serve(
        listener: std::net::TcpListener,
        scrape: Scrape,
        limits: Limits,
    ) -> io::Result<Endpoint> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shared = Rc::new(RefCell::new(Shared {
            listener: Some(listener),
            connections: JoinSet::new(),
        }));
        let accept = tokio::task::spawn_local(accept_loop(shared.clone(), scrape, limits));
        Ok(Endpoint {
            addr,
            shared,
            accept,
        })
    }

    /// The address it listens on (the actual port when bound to port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener now (a new connect is refused) and ends every open connection (their
    /// tasks are aborted; the sockets close when the `LocalSet` next runs them).
    pub(crate) fn stop(&self) {
        let mut shared = self.shared.borrow_mut();
        shared.listener = None;
        shared.connections.abort_all();
        self.accept.abort();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until the listener is taken away; a failed accept is logged and retried.
async fn accept_loop(shared: Rc<RefCell<Shared>>, scrape: Scrape, limits: Limits) {
    loop {
        // The borrow lasts one poll, never across an await, so `stop` can always take it.
        let accepted = poll_fn(|cx| match &shared.borrow().listener {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _peer))) => admit(&shared, stream, &scrape, &limits),
            // The peer gave up before its connection was accepted; nothing to wait out.
            Some(Err(e)) if is_per_connection(&e) => {}
            Some(Err(error)) => {
                tracing::warn!(%error, "metrics endpoint: accept failed; retrying");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// Whether an accept error concerns only the connection it was accepting.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Starts a connection's task, or answers 503 and closes it when all places are taken.
fn admit(shared: &RefCell<Shared>, stream: TcpStream, scrape: &Scrape, limits: &Limits) {
    let mut shared = shared.borrow_mut();
    while let Some(ended) = shared.connections.try_join_next() {
        if let Err(e) = ended {
            if e.is_panic() {
                tracing::error!("metrics endpoint: a connection's task panicked");
            }
        }
    }
    if shared.connections.len() >= limits.connections {
        drop(shared);
        refuse(stream);
        return;
    }
    let connection = Connection {
        stream,
        buf: Vec::new(),
        limits: limits.clone(),
    };
    shared
        .connections
        .spawn_local(connection.run(scrape.clone()));
}

/// Writes a 503 once, without waiting for the socket, and closes the connection.
fn refuse(stream: TcpStream) {
    let reply = Reply::text(
        503,
        "too many connections to the metrics endpoint; try again",
    );
    if let Ok(stream) = stream.into_std() {
        // A fresh socket's send buffer has room for these few bytes; if not, the close says it.
        let _ = (&stream).write(&reply.frame(true, false));
    }
}

/// One client's connection: its socket, the bytes read but not yet parsed, and the limits.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    limits: Limits,
}

/// What reading a request head gave.
enum Read {
    /// A whole head; its bytes are consumed.
    Request(Request),
    /// Bad input: answer this and close.
    Bad(Reply),
    /// The client closed or went away (or a kept-alive connection sat idle): nothing to answer.
    Closed,
}

impl Connection {
    /// Answers requests in order until one closes the connection, a limit ends it, or the
    /// client goes away.
    async fn run(mut self, scrape: Scrape) {
        let mut first = true;
        loop {
            let request = match self.read_request(first).await {
                Read::Request(request) => request,
                Read::Bad(reply) => {
                    if self.send(&reply.frame(true, false)).await {
                        self.linger().await;
                    }
                    return;
                }
                Read::Closed => return,
            };
            first = false;
            let close = !request.keep_alive;
            let (reply, omit_body) = answer(request.route, &scrape).await;
            if !self.send(&reply.frame(close, omit_body)).await {
                return;
            }
            if close {
                return self.linger().await;
            }
        }
    }

    /// Reads until the buffer holds a whole head (pipelined bytes stay for the next request).
    /// The first request's head must arrive within `head_timeout` of the accept; a later one
    /// may wait `idle_timeout` for its first byte, then has `head_timeout` for the rest.
    async fn read_request(&mut self, first: bool) -> Read {
        let idle = Instant::now() + self.limits.idle_timeout;
        let head_timeout = self.limits.head_timeout;
        let mut deadline = (first || !self.buf.is_empty()).then(|| Instant::now() + head_timeout);
        loop {
            match parse_head(&self.buf, self.limits.head_bytes) {
                Parsed::Request(request, len) => {
                    self.buf.drain(..len);
                    return Read::Request(request);
                }
                Parsed::Bad(reply) => return Read::Bad(reply),
                Parsed::Partial => {}
            }
            self.buf.reserve(READ_CHUNK);
            let read = self.stream.read_buf(&mut self.buf);
            match timeout_at(deadline.unwrap_or(idle), read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Closed,
                Ok(Ok(_)) => {
                    deadline.get_or_insert_with(|| Instant::now() + head_timeout);
                }
                Err(_elapsed) if deadline.is_none() => return Read::Closed,
                Err(_elapsed) => {
                    let line = format!("the request head did not arrive within {head_timeout:?}");
                    return Read::Bad(Reply::text(408, line));
                }
            }
        }
    }

    /// Writes a response within `write_timeout`; false when it could not (drop the connection).
    async fn send(&mut self, bytes: &[u8]) -> bool {
        let write = self.stream.write_all(bytes);
        matches!(timeout(self.limits.write_timeout, write).await, Ok(Ok(())))
    }

    /// Closes gracefully: shuts the write side, then reads and drops what the client still
    /// sends (at most `LINGER_BYTES`, for at most `LINGER`) so it sees the answer, not a reset.
    async fn linger(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut sink = [0; READ_CHUNK];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = timeout(LINGER, drain).await;
    }
}

/// A parsed request: where it goes, and whether the connection stays open after its answer.
#[derive(Debug, PartialEq)]
struct Request {
    route: Route,
    keep_alive: bool,
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
enum Route {
    /// `GET /metrics`, in this format.
    Metrics(Format),
    /// `GET /`.
    Landing,
    /// `GET` of an unknown path (the path, shortened).
    NotFound(String),
    /// Another method than GET; `head` when it was HEAD (whose answer has no body).
    Method { head: bool },
    /// A GET with a body.
    Body,
}

/// The answer to a request, and whether its body is left out (for HEAD).
async fn answer(route: Route, scrape: &Scrape) -> (Reply, bool) {
    let reply = match route {
        Route::Metrics(format) => match scrape(format).await {
            Ok(body) => Reply::scrape(format, body),
            Err(why) => Reply::text(503, why),
        },
        Route::Landing => Reply::text(
            200,
            "procactor metrics endpoint: the metrics are at /metrics",
        ),
        Route::NotFound(path) => Reply::text(
            404,
            format!("unknown path {path:?}; the metrics are at /metrics"),
        ),
        Route::Method { head } => {
            let line = "method not allowed: the metrics endpoint answers GET only";
            return (Reply::text(405, line), head);
        }
        Route::Body => Reply::text(400, "bad request: a scrape has no body"),
    };
    (reply, false)
}

/// What parsing the buffered bytes gave.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A whole head, of this many bytes.
    Request(Request, usize),
    /// Not yet a whole head, and within the size limit.
    Partial,
    /// A malformed or too large head: answer this and close.
    Bad(Reply),
}

/// Parses the request head at the start of `buf`, if it is whole.
fn parse_head(buf: &[u8], head_bytes: usize) -> Parsed {
    let too_large = || {
        let line = format!(
            "request head too large: at most {head_bytes} bytes and {MAX_HEADERS} header lines"
        );
        Parsed::Bad(Reply::text(431, line))
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > head_bytes => too_large(),
        Ok(httparse::Status::Complete(len)) => match request(&head) {
            Ok(request) => Parsed::Request(request, len),
            Err(reply) => Parsed::Bad(reply),
        },
        Ok(httparse::Status::Partial) if buf.len() >= head_bytes => too_large(),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => too_large(),
        Err(e) => Parsed::Bad(Reply::text(400, format!("bad request: {e}"))),
    }
}

/// Routes a whole head; a malformed `Content-Length` is a 400.
fn request(head: &httparse::Request<'_, '_>) -> Result<Request, Reply> {
    let (mut accept, mut close, mut body) = (String::new(), false, false);
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("");
        let name = header.name;
        if name.eq_ignore_ascii_case("accept") {
            accept.push_str(value);
            accept.push(',');
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u64>() {
                Ok(len) => body |= len > 0,
                Err(_) => return Err(Reply::text(400, "bad request: invalid Content-Length")),
            }
        }
    }
    // HTTP/1.0 closes after the answer; so does a request whose body is not read.
    let keep_alive = head.version == Some(1) && !close && !body;
    let path = head.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    let route = match head.method.unwrap_or("") {
        "GET" if body => Route::Body,
        "GET" if path == "/metrics" => Route::Metrics(Format::from_accept(&accept)),
        "GET" if path == "/" => Route::Landing,
        "GET" => Route::NotFound(path.chars().take(128).collect()),
        method => Route::Method {
            head: method == "HEAD",
        },
    };
    Ok(Request { route, keep_alive })
}

/// A response before it is framed.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    /// A one-line text answer.
    fn text(status: u16, line: impl Into<String>) -> Reply {
        let mut body = line.into();
        body.push('\n');
        Reply {
            status,
            content_type: TEXT,
            body,
        }
    }

    /// A scrape's answer.
    fn scrape(format: Format, body: String) -> Reply {
        Reply {
            status: 200,
            content_type: format.content_type(),
            body,
        }
    }

    /// The bytes on the wire: status line, headers (`Allow: GET` on a 405, `Connection: close`
    /// when closing) and the body, left out for a HEAD (its length still given).
    fn frame(&self, close: bool, omit_body: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let (status, reason) = (self.status, reason(self.status));
        let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
        let _ = write!(out, "Content-Type: {}\r\n", self.content_type);
        let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        if status == 405 {
            out.extend_from_slice(b"Allow: GET\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !omit_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The reason phrase of each status this endpoint sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::{BufRead as _, Read as _};
    use std::sync::mpsc;
    use std::time::Instant as StdInstant;

    use super::*;

    /// A generous upper bound for anything a test waits on (2 shared cores).
    const DEADLINE: Duration = Duration::from_secs(30);
    /// Set in the environment of `failed_accepts_are_retried`'s child.
    const CHILD_ENV: &str = "PROCACTOR_TEST_METRICS_EMFILE_CHILD";
    /// What Prometheus 2.x sends.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
        application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `test` on a current-thread runtime's `LocalSet`, as the master does.
    fn run(test: impl Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, test);
    }

    /// Serves on 127.0.0.1:0 a scrape that counts its calls and names the format it was asked
    /// for, followed by `padding` bytes.
    fn start(limits: Limits, padding: usize) -> (Endpoint, Rc<Cell<u32>>) {
        let calls = Rc::new(Cell::new(0));
        let counter = calls.clone();
        let scrape: Scrape = Rc::new(move |format| {
            counter.set(counter.get() + 1);
            let n = counter.get();
            Box::pin(async move { Ok(format!("scrape {n} {format:?}\n{}", "x".repeat(padding))) })
        });
        let listener = Endpoint::bind("127.0.0.1:0").unwrap();
        (Endpoint::serve(listener, scrape, limits).unwrap(), calls)
    }

    #[derive(Debug)]
    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            let found = self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            found.map(|(_, value)| value.as_str())
        }
    }

    /// A whole response at the start of `buf` (no body after a HEAD), and its length.
    fn parse_response(buf: &[u8], head: bool) -> Option<(Response, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(buf).expect("a valid answer")
        else {
            return None;
        };
        let headers: Vec<(String, String)> = (response.headers.iter())
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let length = headers.iter().find(|(n, _)| n == "Content-Length");
        let length: usize = length.expect("a Content-Length").1.parse().unwrap();
        let end = head_len + if head { 0 } else { length };
        let body = String::from_utf8(buf.get(head_len..end)?.to_vec()).unwrap();
        let status = response.code.unwrap();
        Some((
            Response {
                status,
                headers,
                body,
            },
            end,
        ))
    }

    /// Reads the next response (None when the stream ends first), within the deadline.
    async fn read_response(
        stream: &mut TcpStream,
        buf: &mut Vec<u8>,
        head: bool,
    ) -> Option<Response> {
        let read = async {
            loop {
                if let Some((response, len)) = parse_response(buf, head) {
                    buf.drain(..len);
                    return Some(response);
                }
                match stream.read_buf(buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        timeout(DEADLINE, read)
            .await
            .expect("an answer or the end in time")
    }

    /// Sends `raw` on a new connection and reads one response.
    async fn ask(endpoint: &Endpoint, raw: &[u8]) -> (TcpStream, Response) {
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let response = read_response(&mut stream, &mut Vec::new(), false).await;
        (stream, response.expect("an answer"))
    }

    /// Asserts the server ends the connection, sending nothing more, within the deadline.
    async fn assert_ends(stream: &mut TcpStream) {
        let mut rest = Vec::new();
        let end = timeout(DEADLINE, async {
            while let Ok(1..) = stream.read_buf(&mut rest).await {}
        });
        assert!(end.await.is_ok(), "the connection ends in time");
        assert!(rest.is_empty(), "nothing after the answer: {rest:?}");
    }

    /// Asks `GET /` on new connections until one is served rather than refused with 503 (or
    /// reset: a refusal closes with the request unread), within the deadline.
    async fn ask_until_served(endpoint: &Endpoint) {
        let deadline = StdInstant::now() + DEADLINE;
        loop {
            let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            let answer = match stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await {
                Ok(()) => read_response(&mut stream, &mut Vec::new(), false).await,
                Err(_) => None,
            };
            match answer {
                Some(response) if response.status == 200 => return,
                Some(response) => assert_eq!(response.status, 503, "{response:?}"),
                None => {}
            }
            assert!(StdInstant::now() < deadline, "a place frees in time");
        }
    }

    #[test]
    fn accept_asks_for_openmetrics_by_q_value() {
        use Format::{OpenMetrics, Prometheus};
        let cases = [
            ("", Prometheus),
            ("*/*", Prometheus),
            ("text/plain", Prometheus),
            (PROMETHEUS_ACCEPT, OpenMetrics),
            ("application/openmetrics-text; version=1.0.0", OpenMetrics),
            (
                "application/openmetrics-text;q=0.5,text/plain;q=0.5",
                OpenMetrics,
            ),
            (
                "text/plain;q=0.9, application/openmetrics-text;q=0.5",
                Prometheus,
            ),
            (
                "text/plain;q=0.2,text/plain;q=0.8,application/openmetrics-text;q=0.6",
                Prometheus,
            ),
            (
                "Application/OpenMetrics-Text ; Q=0.8 , text/plain;q=0.3",
                OpenMetrics,
            ),
            ("application/openmetrics-text;q=0", Prometheus),
            ("application/openmetrics-text;q=abc,text/plain", Prometheus),
            ("application/openmetrics-text;q=2,*/*", Prometheus),
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
              text/plain;version=1.0.0;q=0.4,*/*;q=0.2",
                OpenMetrics,
            ),
            (",;=,;;q,", Prometheus),
        ];
        for (accept, format) in cases {
            assert_eq!(Format::from_accept(accept), format, "Accept: {accept}");
        }
        assert_eq!(quality("".split(';')), 1.0);
        assert_eq!(quality("version=1.0.0; q=0.25 ".split(';')), 0.25);
        assert_eq!(quality(["q=1.5"].into_iter()), 0.0);
        assert_eq!(quality(["q=-0.1"].into_iter()), 0.0);
        assert_eq!(quality(["q=NaN"].into_iter()), 0.0);
        assert_eq!(quality(["q"].into_iter()), 1.0);
    }

    #[test]
    fn heads_parse_into_routes() {
        let parse = |raw: &[u8]| parse_head(raw, 8192);
        let route = |raw: &[u8]| match parse(raw) {
            Parsed::Request(request, len) => {
                assert_eq!(len, raw.len());
                (request.route, request.keep_alive)
            }
            other => panic!("{other:?} for {raw:?}"),
        };
        let status = |raw: &[u8]| match parse(raw) {
            Parsed::Bad(reply) => reply.status,
            other => panic!("{other:?} for {raw:?}"),
        };
        let metrics = Route::Metrics(Format::Prometheus);
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), (metrics, true));
        let openmetrics =
            format!("GET /metrics?a=b HTTP/1.1\r\nAccept: {PROMETHEUS_ACCEPT}\r\n\r\n");
        let expected = Route::Metrics(Format::OpenMetrics);
        assert_eq!(route(openmetrics.as_bytes()), (expected, true));
        let two = b"GET / HTTP/1.1\r\nAccept: text/plain;q=0.1\r\naccept: application/openmetrics-text\r\n\r\n";
        assert_eq!(route(two).0, Route::Landing);
        let split = b"GET /metrics HTTP/1.1\r\nAccept: text/plain;q=0.1\r\naccept: application/openmetrics-text\r\n\r\n";
        assert_eq!(route(split).0, Route::Metrics(Format::OpenMetrics));
        let odd = b"GET /metrics HTTP/1.1\r\nAccept: \xff\xfe\r\n\r\n";
        assert_eq!(route(odd).0, Route::Metrics(Format::Prometheus));
        let old = route(b"GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(old, (Route::Metrics(Format::Prometheus), false));
        let close = route(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert_eq!(close, (Route::Landing, false));
        assert_eq!(
            route(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            (Route::Landing, true)
        );
        let unknown = Route::NotFound("/nope".into());
        assert_eq!(route(b"GET /nope?x HTTP/1.1\r\n\r\n"), (unknown, true));
        assert_eq!(
            route(b"HEAD / HTTP/1.1\r\n\r\n"),
            (Route::Method { head: true }, true)
        );
        let post = b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(route(post), (Route::Method { head: false }, false));
        let chunked = b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(route(chunked), (Route::Body, false));
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        );
        assert_eq!(parse(b""), Parsed::Partial);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/9.9\r\n\r\n"), 400);
        assert_eq!(status(b"\x00\x01 junk\r\n\r\n"), 400);
        assert_eq!(status(&[b'a'; 8192]), 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(many.as_bytes()), 431);
        let whole_but_large = format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "b".repeat(8192));
        assert_eq!(status(whole_but_large.as_bytes()), 431);
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // Every prefix of odd heads, and pseudo-random bytes (a fixed linear congruential
        // sequence), parse to something without panicking.
        let mut seed = 0x2545_f491_u32;
        let mut random = Vec::new();
        for _ in 0..4096 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            random.push((seed >> 16) as u8);
        }
        let inputs: [&[u8]; 5] = [
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;q=\xff;;=\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET \xc3\x28 HTTP/1.1\r\nConnection: \r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &random,
        ];
        for input in inputs {
            for end in 0..=input.len() {
                let _ = parse_head(&input[..end], 64);
                let _ = parse_head(&input[..end], 8192);
            }
        }
    }

    #[test]
    fn metrics_answers_in_the_format_asked() {
        run(async {
            let (endpoint, calls) = start(Limits::default(), 0);
            let (_, plain) = ask(&endpoint, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
            assert_eq!(plain.status, 200);
            assert_eq!(
                plain.header("Content-Type"),
                Some(Format::Prometheus.content_type())
            );
            assert_eq!(
                plain.header("Content-Type"),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );
            assert_eq!(plain.body, "scrape 1 Prometheus\n");
            let prometheus =
                format!("GET /metrics HTTP/1.1\r\nAccept: {PROMETHEUS_ACCEPT}\r\n\r\n");
            let (_, open) = ask(&endpoint, prometheus.as_bytes()).await;
            assert_eq!(open.status, 200);
            let expected = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            assert_eq!(open.header("Content-Type"), Some(expected));
            assert_eq!(open.body, "scrape 2 OpenMetrics\n");
            assert_eq!(open.header("Content-Length"), Some("21"));
            let curl = b"GET /metrics?x=1&y HTTP/1.1\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
            let (_, curl) = ask(&endpoint, curl).await;
            assert_eq!(
                (curl.status, curl.body.as_str()),
                (200, "scrape 3 Prometheus\n")
            );
            assert_eq!(calls.get(), 3);
        });
    }

    #[test]
    fn landing_page_and_unknown_paths() {
        run(async {
            let (endpoint, calls) = start(Limits::default(), 0);
            let (_, landing) = ask(&endpoint, b"GET / HTTP/1.1\r\n\r\n").await;
            assert_eq!(landing.status, 200);
            assert_eq!(landing.header("Content-Type"), Some(TEXT));
            assert!(landing.body.contains("/metrics"), "{landing:?}");
            let (_, unknown) = ask(&endpoint, b"GET /metricz?a HTTP/1.1\r\n\r\n").await;
            assert_eq!(unknown.status, 404);
            assert_eq!(unknown.header("Content-Type"), Some(TEXT));
            assert!(
                unknown.body.contains("unknown path \"/metricz\""),
                "{unknown:?}"
            );
            assert!(unknown.body.contains("/metrics\n"), "{unknown:?}");
            assert_eq!(unknown.body.lines().count(), 1);
            assert_eq!(calls.get(), 0);
        });
    }

    #[test]
    fn other_methods_get_405_with_allow_get() {
        run(async {
            let (endpoint, calls) = start(Limits::default(), 0);
            let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            let mut buf = Vec::new();
            for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
                let raw = format!("{method} /metrics HTTP/1.1\r\n\r\n");
                stream.write_all(raw.as_bytes()).await.unwrap();
                let head = method == "HEAD";
                let response = read_response(&mut stream, &mut buf, head).await.unwrap();
                assert_eq!(response.status, 405, "{method}");
                assert_eq!(response.header("Allow"), Some("GET"), "{method}");
                assert_eq!(response.header("Connection"), None, "{method}");
                assert!(head || response.body.contains("GET only"), "{response:?}");
            }
            // The HEAD answer had no body: the connection is still in step.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let scrape = read_response(&mut stream, &mut buf, false).await.unwrap();
            assert_eq!((scrape.status, calls.get()), (200, 1));
            // A body is not read, so its request closes the connection.
            let (mut stream, post) = ask(
                &endpoint,
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            )
            .await;
            assert_eq!(
                (post.status, post.header("Connection")),
                (405, Some("close"))
            );
            assert_ends(&mut stream).await;
        });
    }

    #[test]
    fn bad_heads_get_400_or_431_then_close() {
        run(async {
            let (endpoint, calls) = start(Limits::default(), 0);
            let oversized = format!("GET /metrics HTTP/1.1\r\nX-Big: {}", "a".repeat(16 * 1024));
            let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100));
            let cases: [(&[u8], u16, &str); 7] = [
                (
                    b"GET /metrics HTTP/9.9\r\n\r\n",
                    400,
                    "bad request: invalid HTTP version",
                ),
                (
                    b"\x00\x01\x02 junk\r\n\r\n",
                    400,
                    "bad request: invalid token",
                ),
                (
                    b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                    400,
                    "invalid Content-Length",
                ),
                (
                    b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                    400,
                    "a scrape has no body",
                ),
                (
                    b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    400,
                    "a scrape has no body",
                ),
                (
                    oversized.as_bytes(),
                    431,
                    "request head too large: at most 8192 bytes",
                ),
                (many.as_bytes(), 431, "64 header lines"),
            ];
            for (raw, status, says) in cases {
                let (mut stream, response) = ask(&endpoint, raw).await;
                assert_eq!(response.status, status, "{response:?}");
                assert_eq!(response.header("Connection"), Some("close"));
                assert_eq!(response.header("Content-Type"), Some(TEXT));
                assert!(response.body.contains(says), "{response:?}");
                assert_eq!(response.body.lines().count(), 1, "{response:?}");
                assert_ends(&mut stream).await;
            }
            assert_eq!(calls.get(), 0);
            let (_, after) = ask(&endpoint, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert_eq!(after.status, 200, "the endpoint still serves");
        });
    }

    #[test]
    fn silent_client_gets_408_after_head_timeout() {
        run(async {
            let limits = Limits {
                head_timeout: ms(500),
                ..Limits::default()
            };
            let (endpoint, _) = start(limits, 0);
            let started = StdInstant::now();
            let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            let response = read_response(&mut stream, &mut Vec::new(), false)
                .await
                .unwrap();
            assert!(started.elapsed() >= ms(500), "{:?}", started.elapsed());
            assert_eq!(response.status, 408);
            assert!(
                response.body.contains("did not arrive within 500ms"),
                "{response:?}"
            );
            assert_eq!(response.header("Connection"), Some("close"));
            assert_ends(&mut stream).await;
        });
    }

    #[test]
    fn a_stalled_client_does_not_delay_another_scrape() {
        run(async {
            let limits = Limits {
                head_timeout: ms(3000),
                ..Limits::default()
            };
            let (endpoint, calls) = start(limits, 0);
            let started = StdInstant::now();
            let mut stalled = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            stalled
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
                .await
                .unwrap();
            let (_, scrape) = ask(&endpoint, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert_eq!((scrape.status, calls.get()), (200, 1));
            assert!(
                started.elapsed() < ms(3000),
                "answered before the stalled head's deadline"
            );
            let late = read_response(&mut stalled, &mut Vec::new(), false)
                .await
                .unwrap();
            assert!(started.elapsed() >= ms(3000), "{:?}", started.elapsed());
            assert_eq!(late.status, 408);
            assert_ends(&mut stalled).await;
        });
    }

    #[test]
    fn keep_alive_pipelining_and_close() {
        run(async {
            let (endpoint, calls) = start(Limits::default(), 0);
            let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            let mut buf = Vec::new();
            let three =
                b"GET /metrics HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
            stream.write_all(three).await.unwrap();
            let mut statuses = Vec::new();
            for _ in 0..3 {
                let response = read_response(&mut stream, &mut buf, false).await.unwrap();
                assert_eq!(response.header("Connection"), None, "kept alive");
                statuses.push((
                    response.status,
                    response.body.lines().next().unwrap().to_owned(),
                ));
            }
            assert_eq!(statuses[0], (200, "scrape 1 Prometheus".to_owned()));
            assert!(
                statuses[1].0 == 200 && statuses[1].1.contains("endpoint"),
                "{statuses:?}"
            );
            assert!(
                statuses[2].0 == 404 && statuses[2].1.contains("\"/x\""),
                "{statuses:?}"
            );
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let last = read_response(&mut stream, &mut buf, false).await.unwrap();
            assert_eq!(
                (last.status, last.body.as_str()),
                (200, "scrape 2 Prometheus\n")
            );
            assert_eq!(last.header("Connection"), Some("close"));
            assert_ends(&mut stream).await;
            let (mut old, response) = ask(&endpoint, b"GET /metrics HTTP/1.0\r\n\r\n").await;
            assert_eq!(
                (response.status, response.header("Connection")),
                (200, Some("close"))
            );
            assert_ends(&mut old).await;
            assert_eq!(calls.get(), 3);
        });
    }

    #[test]
    fn idle_connections_close_and_a_started_head_must_finish() {
        run(async {
            let limits = Limits {
                head_timeout: ms(500),
                idle_timeout: ms(1500),
                ..Limits::default()
            };
            let (endpoint, _) = start(limits, 0);
            let (mut idle, first) = ask(&endpoint, b"GET / HTTP/1.1\r\n\r\n").await;
            let answered = StdInstant::now();
            assert_eq!(first.status, 200);
            let (mut started, first) = ask(&endpoint, b"GET / HTTP/1.1\r\n\r\n").await;
            assert_eq!(first.status, 200);
            // Once a kept-alive connection's next head has begun, head_timeout applies.
            started.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            let late = read_response(&mut started, &mut Vec::new(), false)
                .await
                .unwrap();
            assert_eq!(late.status, 408);
            assert_ends(&mut started).await;
            // An idle one is closed after idle_timeout, without an answer.
            assert_ends(&mut idle).await;
            // The server's idle timer started as it wrote the answer, a little before
            // `answered`: closed after idle_timeout (less that gap), well past head_timeout.
            assert!(answered.elapsed() >= ms(1400), "{:?}", answered.elapsed());
        });
    }

    #[test]
    fn connections_over_the_limit_get_503_at_once() {
        run(async {
            let (endpoint, _) = start(
                Limits {
                    connections: 2,
                    ..Limits::default()
                },
                0,
            );
            let (first, _) = ask(&endpoint, b"GET / HTTP/1.1\r\n\r\n").await;
            let (_second, _) = ask(&endpoint, b"GET / HTTP/1.1\r\n\r\n").await;
            let mut third = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            let busy = read_response(&mut third, &mut Vec::new(), false)
                .await
                .unwrap();
            assert_eq!(busy.status, 503);
            assert_eq!(busy.header("Connection"), Some("close"));
            assert!(busy.body.contains("too many connections"), "{busy:?}");
            assert_ends(&mut third).await;
            // A place frees when a connection ends.
            drop(first);
            ask_until_served(&endpoint).await;
        });
    }

    #[test]
    fn an_unread_response_drops_the_connection_after_write_timeout() {
        run(async {
            let body = 16 << 20; // more than the sockets' buffers hold
            let limits = Limits {
                connections: 1,
                write_timeout: ms(500),
                ..Limits::default()
            };
            let (endpoint, calls) = start(limits, body);
            let started = StdInstant::now();
            let mut reader = TcpStream::connect(endpoint.local_addr()).await.unwrap();
            reader
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            // While the response is stuck, the only place is taken; then it frees.
            ask_until_served(&endpoint).await;
            assert!(started.elapsed() >= ms(500), "{:?}", started.elapsed());
            assert_eq!(calls.get(), 1);
            let mut received = Vec::new();
            let end = timeout(DEADLINE, async {
                while let Ok(1..) = reader.read_buf(&mut received).await {}
            });
            assert!(end.await.is_ok(), "the dropped connection ends");
            assert!(
                received.len() < body,
                "{} bytes of a {body}-byte body",
                received.len()
            );
        });
    }

    #[test]
    fn stop_and_drop_close_the_listener_and_the_connections() {
        run(async {
            let (stopped, _) = start(Limits::default(), 0);
            let (dropped, _) = start(Limits::default(), 0);
            let addrs = [stopped.local_addr(), dropped.local_addr()];
            let (mut open_a, _) = ask(&stopped, b"GET / HTTP/1.1\r\n\r\n").await;
            let (mut open_b, _) = ask(&dropped, b"GET / HTTP/1.1\r\n\r\n").await;
            stopped.stop();
            drop(dropped);
            for addr in addrs {
                let refused = TcpStream::connect(addr).await;
                let refused = refused.map(|_| ()).map_err(|e| e.kind());
                assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused), "{addr}");
            }
            assert_ends(&mut open_a).await;
            assert_ends(&mut open_b).await;
        });
    }

    /// Kills and reaps a child process (by its pid) if the test did not end it.
    struct Reap(std::process::Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    /// The next line from `lines` that contains `text`, within the deadline.
    fn wait_line(lines: &mpsc::Receiver<String>, text: &str) -> String {
        let deadline = StdInstant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(StdInstant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {text:?} from the child: {e}"),
            }
        }
    }

    #[test]
    fn failed_accepts_are_retried() {
        // The child (this test binary, with its descriptors capped and then all taken) serves
        // a connection only after its accepts failed with EMFILE and it was let free some.
        let exe = std::env::current_exe().unwrap();
        let name = "metrics::http::tests::emfile_child";
        let mut child = Reap(
            std::process::Command::new("sh")
                .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
                .arg(exe)
                .args([
                    name,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = child.0.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let port = wait_line(&lines, "port=");
        let port: u16 = port.rsplit('=').next().unwrap().trim().parse().unwrap();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        (&stream)
            .write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        wait_line(&lines, "accept failed; retrying");
        let mut stdin = child.0.stdin.take().unwrap();
        stdin.write_all(b"release\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("scrape 1 Prometheus\n"), "{answer}");
        drop(stdin);
        let deadline = StdInstant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(StdInstant::now() < deadline, "the child ends in time");
            std::thread::sleep(ms(20)); // polling the child's exit, not synchronising
        };
        assert!(status.success(), "{status}");
    }

    #[test]
    #[ignore = "the child of failed_accepts_are_retried, which runs it"]
    fn emfile_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
        let (tx, mut stdin) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        run(async move {
            let (endpoint, calls) = start(Limits::default(), 0);
            let mut taken = Vec::new();
            while let Ok(file) = std::fs::File::open("/dev/null") {
                taken.push(file);
            }
            eprintln!("port={}", endpoint.local_addr().port());
            assert_eq!(stdin.recv().await.as_deref(), Some("release"));
            drop(taken);
            while stdin.recv().await.is_some() {}
            assert_eq!(calls.get(), 1);
        });
    }
}
