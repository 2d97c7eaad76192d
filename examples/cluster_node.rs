//! One node of a cluster that spans hosts: HTTP workers on a shared port, and a master joined
//! to the other nodes through Redis. Run one per host (or several on one host, each with its own
//! `--node` and `--listen`):
//!
//! ```text
//! cargo run --release --example cluster_node -- --redis redis://127.0.0.1:6379 --cluster shop \
//!     --node a --workers 2 --listen 127.0.0.1:8081
//! cargo run --release --example cluster_node -- --redis redis://127.0.0.1:6379 --cluster shop \
//!     --node b --workers 2 --listen 127.0.0.1:8082
//! curl http://127.0.0.1:8081/             # pid <pid> node a: the worker that answered
//! curl http://127.0.0.1:8081/cluster      # {"nodes":{"a":{"workers":[…]},"b":{"workers":[…]}}}
//! curl http://127.0.0.1:8081/ask/b        # pid <pid> node b: a worker of b, asked from a
//! curl -X PUT -d blue http://127.0.0.1:8081/cache/color  # 204
//! curl http://127.0.0.1:8082/cache/color  # blue: the cluster's cache (404: no such key)
//! kill -HUP <master pid>                  # reload (rolling, no request fails); the pid is
//! kill -TERM <master pid>                 # on stderr; SIGTERM: this node leaves, exits 0
//! ```
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `pid <pid> node <node>` |
//! | `GET /cluster` | JSON `{"nodes": {"<node>": {"<group>": [pids]}}}`: every live node, this one included once it has joined |
//! | `GET /ask/<node>` | the answering worker asks a worker of `<node>` (`ask_worker_on`, 2 s) and answers with its `pid <pid> node <node>`; 503 with the error when it cannot (no such node, node gone, Redis down, timeout) |
//! | `GET /cache/<key>` | the value (200), 404 when there is none |
//! | `PUT /cache/<key>` | sets it to the body (UTF-8), 204 |
//!
//! stdout holds two lines, `listening on http://<addr>/` and, once this node has joined (at
//! once, or when Redis answers if it was down at the start), `joined <cluster> as <node>`; the
//! logs go to stderr (`RUST_LOG`, `info` by default).
//!
//! Why a small HTTP/1.1 server of its own (the head parsed by `httparse`, as the metrics
//! endpoint does) rather than [`HttpWorker`](procactor::actors::http::HttpWorker)'s actix-web:
//! the routes need the worker's messaging and cache ([`WorkerHandle`]), which live on the
//! worker's own single-threaded loop, while actix-web runs its handlers on a thread of its own,
//! and `HttpWorker`'s routes are fixed. It runs on the worker's loop and drains as `HttpWorker`
//! does: on stop it accepts no more (the other processes sharing the socket take the new
//! connections), answers the next request of every open connection with `Connection: close`,
//! and after a grace closes the connections still idle. Limits: requests on one connection
//! are answered one at a time; bodies by `Content-Length` only (a chunked request gets 501; no
//! `Expect: 100-continue`); keys and node names are taken from the path as they are (not
//! percent-decoded); an idle connection stays open until the client or a stop closes it.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use procactor::prelude::*;
use procactor::{Backend, ListenAddr, NodeEvent, WorkerHandle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where the master tells its workers the node's name: known before the node joins.
const NODE_ENV: &str = "CLUSTER_NODE_NAME";
/// The cache collection of `/cache/<key>`.
const COLLECTION: &str = "cluster_node";
/// How long `/ask/<node>` waits for the other node's worker.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping worker keeps its idle connections open (see the module docs).
const GRACE: Duration = Duration::from_secs(1);
/// How long a stopping worker waits for requests in flight after the grace.
const FINISH: Duration = Duration::from_secs(5);
/// The largest request head and body accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// What one worker asks another (of any node).
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// Answers [`Whoami`].
    Whoami,
}

/// A worker's process id and node.
#[derive(Debug, Serialize, Deserialize)]
struct Whoami {
    pid: u32,
    node: String,
}

/// The HTTP worker of this example.
struct Web {
    node: String,
    server: Option<Rc<Server>>,
}

impl WorkerActor for Web {
    type Msg = Msg;
    type Reply = Whoami;
    type Event = ();
    type MasterReply = ();

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        let listener = ctx.listener("http").and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        });
        let listener = match listener {
            Ok(listener) => listener,
            Err(e) => return tracing::error!(error = %e, "no listening socket; not serving"),
        };
        let server = Rc::new(Server {
            node: self.node.clone(),
            peers: ctx.peers().clone(),
            phase: watch::Sender::new(Phase::Serving),
            open: watch::Sender::new(0),
        });
        actix::spawn(accept(listener, Rc::clone(&server)));
        self.server = Some(server);
    }

    async fn handle(&mut self, msg: Msg, _: &mut WorkerContext<Self>) -> Whoami {
        match msg {
            Msg::Whoami => Whoami {
                pid: std::process::id(),
                node: self.node.clone(),
            },
        }
    }

    async fn stopping(&mut self, _: &mut WorkerContext<Self>) {
        if let Some(server) = self.server.take() {
            server.drain().await;
        }
    }
}

/// Where a worker's server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Accepting no more; every response says `Connection: close`.
    Draining,
    /// As `Draining`, and idle connections close.
    Closing,
}

/// A worker's HTTP server: what its routes reach, and its connections.
struct Server {
    node: String,
    peers: WorkerHandle<Web>,
    phase: watch::Sender<Phase>,
    /// Connections open now.
    open: watch::Sender<usize>,
}

impl Server {
    /// Stops accepting, lets clients send one more request for [`GRACE`] (each answered with
    /// `Connection: close`), closes the idle connections and waits for the others.
    async fn drain(&self) {
        self.phase.send_replace(Phase::Draining);
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(GRACE, open.wait_for(|n| *n == 0)).await;
        self.phase.send_replace(Phase::Closing);
        let _ = tokio::time::timeout(FINISH, open.wait_for(|n| *n == 0)).await;
    }

    fn serving(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    async fn route(&self, request: Request) -> Reply {
        let Request {
            method, path, body, ..
        } = request;
        if let Some(node) = path.strip_prefix("/ask/").filter(|n| !n.is_empty()) {
            return match method.as_str() {
                "GET" => self.ask(node).await,
                _ => Reply::text(405, "GET only\n"),
            };
        }
        if let Some(key) = path.strip_prefix("/cache/").filter(|k| !k.is_empty()) {
            return self.cache(&method, key, body).await;
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/") => {
                let pid = std::process::id();
                Reply::text(200, format!("pid {pid} node {}\n", self.node))
            }
            ("GET", "/cluster") => match self.peers.cluster_info().await {
                Ok(info) => {
                    let json = serde_json::json!({ "nodes": info.pids_by_node() });
                    Reply::json(json.to_string())
                }
                Err(e) => Reply::text(503, format!("{e}\n")),
            },
            (_, "/" | "/cluster") => Reply::text(405, "GET only\n"),
            _ => Reply::text(404, "not found\n"),
        }
    }

    /// Asks a worker of `node`: the first running one as this node last read it, else worker 0
    /// (and the library's error says why when there is no such node).
    async fn ask(&self, node: &str) -> Reply {
        let info = match self.peers.cluster_info().await {
            Ok(info) => info,
            Err(e) => return Reply::text(503, format!("{e}\n")),
        };
        let worker = info
            .nodes
            .iter()
            .find(|n| n.id.name == node)
            .and_then(|n| n.groups.values().flatten().find(|w| w.pid.is_some()))
            .map_or(0, |w| w.id);
        match self
            .peers
            .ask_worker_on(node, worker, &Msg::Whoami, ASK_TIMEOUT)
            .await
        {
            Ok(Whoami { pid, node }) => Reply::text(200, format!("pid {pid} node {node}\n")),
            Err(e) => Reply::text(503, format!("{e}\n")),
        }
    }

    async fn cache(&self, method: &str, key: &str, body: Vec<u8>) -> Reply {
        let cache = self.peers.cache();
        match method {
            "GET" => match cache.get::<String>(COLLECTION, key).await {
                Ok(Some(value)) => Reply::text(200, value),
                Ok(None) => Reply::text(404, "no such key\n"),
                Err(e) => Reply::text(503, format!("{e}\n")),
            },
            "PUT" => {
                let Ok(value) = String::from_utf8(body) else {
                    return Reply::text(400, "the value must be UTF-8\n");
                };
                match cache.set(COLLECTION, key, &value, None).await {
                    Ok(()) => Reply::text(204, ""),
                    Err(e) => Reply::text(503, format!("{e}\n")),
                }
            }
            _ => Reply::text(405, "GET or PUT only\n"),
        }
    }
}

/// Accepts connections until the drain begins.
async fn accept(listener: TcpListener, server: Rc<Server>) {
    let mut phase = server.phase.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // Counted here, so that a drain that begins now sees it.
                    server.open.send_modify(|n| *n += 1);
                    actix::spawn(connection(stream, Rc::clone(&server)));
                }
                Err(e) => {
                    // Out of descriptors, say: try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = phase.wait_for(|p| *p != Phase::Serving) => return,
        }
    }
}

/// Serves one connection, request after request, until either side closes it.
async fn connection(mut stream: TcpStream, server: Rc<Server>) {
    let _counted = Counted(Rc::clone(&server));
    let mut phase = server.phase.subscribe();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let request = loop {
            match parse(&buf) {
                Parsed::Done(request, used) => {
                    buf.drain(..used);
                    break request;
                }
                Parsed::Bad(status) => {
                    let reply = Reply::text(status, format!("{}\n", reason(status)));
                    let _ = stream.write_all(&reply.encode(true)).await;
                    return;
                }
                Parsed::Partial => {}
            }
            let idle = buf.is_empty();
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                // A stopping worker closes connections with no request begun.
                _ = phase.wait_for(|p| *p == Phase::Closing), if idle => return,
            }
        };
        let close = request.close;
        let reply = server.route(request).await;
        let close = close || !server.serving();
        if stream.write_all(&reply.encode(close)).await.is_err() || close {
            return;
        }
    }
}

/// Counts one open connection until it is dropped.
struct Counted(Rc<Server>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A request: its method, its path (without the query), its body, and whether its client
/// closes the connection after the response.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

enum Parsed {
    /// A whole request, and how many bytes of the buffer it took.
    Done(Request, usize),
    /// More bytes are needed.
    Partial,
    /// Answer with this status and close.
    Bad(u16),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Bad(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad(400),
    };
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some() {
        return Parsed::Bad(501);
    }
    let len = match header("content-length").map(|v| v.trim().parse::<usize>()) {
        None => 0,
        Some(Ok(len)) if len <= MAX_BODY => len,
        Some(Ok(_)) => return Parsed::Bad(413),
        Some(Err(_)) => return Parsed::Bad(400),
    };
    if buf.len() < head_len + len {
        return Parsed::Partial;
    }
    let connection = header("connection").unwrap_or_default();
    let close = match head.version {
        Some(0) => !connection.contains("keep-alive"),
        _ => connection.contains("close"),
    };
    let path = head.path.unwrap_or("/");
    let request = Request {
        method: head.method.unwrap_or("GET").to_owned(),
        path: path.split('?').next().unwrap_or(path).to_owned(),
        body: buf[head_len..head_len + len].to_vec(),
        close,
    };
    Parsed::Done(request, head_len + len)
}

/// A response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        let body = body.into();
        let content_type = "text/plain; charset=utf-8";
        Self {
            status,
            content_type,
            body,
        }
    }

    fn json(body: String) -> Self {
        let content_type = "application/json";
        Self {
            status: 200,
            content_type,
            body,
        }
    }

    fn encode(&self, close: bool) -> Vec<u8> {
        let connection = if close { "close" } else { "keep-alive" };
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            out += &format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        out += &format!("Connection: {connection}\r\n\r\n");
        if self.status != 204 {
            out += &self.body;
        }
        out.into_bytes()
    }
}

/// The reason phrase of the statuses this server answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Prints `joined` when this node joins after its start (Redis was down then). The library
/// logs every membership change and reload itself.
struct Printer {
    cluster: String,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<NodeEvent> for Printer {
    type Result = ();

    fn handle(&mut self, event: NodeEvent, _: &mut Context<Self>) {
        if let NodeEvent::Rejoined { node } = event {
            announce(&self.cluster, &node.name);
        }
    }
}

/// Prints `joined <cluster> as <node>` the first time only.
fn announce(cluster: &str, node: &str) {
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);
    if !ANNOUNCED.swap(true, Ordering::Relaxed) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "joined {cluster} as {node}");
        let _ = out.flush();
    }
}

/// One node of a cluster that spans hosts: HTTP workers on a shared port, joined through Redis.
#[derive(clap::Parser, Debug)]
#[command(name = "cluster_node")]
struct Args {
    /// The Redis every node of the cluster uses: redis://[user:password@]host:port[/db], or
    /// rediss://… for TLS.
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The cluster to join (letters, digits, `.`, `_`, `-`).
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// This node's name, unique in the cluster [default: <hostname>-<pid>].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// How many HTTP workers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    workers: u64,
    /// The address the workers serve (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    listen: String,
}

fn main() -> Result<(), procactor::Error> {
    if procactor::is_worker() {
        let node = std::env::var(NODE_ENV).unwrap_or_default();
        return procactor::run_worker(Web { node, server: None });
    }
    let args = <Args as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let node = args.node.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname().unwrap_or_default();
        format!("{}-{}", host.to_string_lossy(), std::process::id())
    });
    let config = ClusterConfig::new()
        .workers(args.workers as usize)
        .listen("http", &args.listen)
        // Workers re-run this executable without the master's arguments.
        .args(Vec::<String>::new())
        .env(NODE_ENV, &node)
        .shutdown_timeout(Duration::from_secs(10))
        .log(procactor::logger::LogConfig {
            dir: None,
            ..Default::default()
        })
        .backend(
            Backend::redis(&args.redis)
                .cluster(&args.cluster)
                .node(&node),
        );
    actix::System::new().block_on(async move {
        let printer = Printer {
            cluster: args.cluster.clone(),
        }
        .start();
        let cluster = ClusterSupervisor::builder::<Web>(config)
            .on_node(printer.recipient())
            .start()
            .await?;
        if let Some(ListenAddr::Tcp(addr)) = cluster.local_addr("http") {
            println!("listening on http://{addr}/");
        }
        tracing::info!(pid = std::process::id(), node = %node, "master started");
        match cluster.node() {
            Some(joined) => announce(&args.cluster, &joined.name),
            None => tracing::warn!("Redis cannot be reached: serving locally, joining later"),
        }
        cluster.wait().await
    })
}
