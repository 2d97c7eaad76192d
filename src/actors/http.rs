//! An HTTP worker: actix-web serving the cluster's shared listening socket `"http"`, drained on
//! stop so that a rolling restart of the cluster fails no request, even of a client that never
//! resends one.
//!
//! Needs the `http` feature (on by default): it is the only part of procactor that compiles
//! actix-web.
//!
//! | route            | answer                                                        |
//! |------------------|---------------------------------------------------------------|
//! | `GET /`          | 200, `pid <pid>\n` (`text/plain`)                             |
//! | `GET /slow?ms=N` | the same after sleeping N ms (at most [`MAX_SLOW_MS`]; N = 0 when absent) |
//! | `GET /health`    | 200, `ok`                                                     |
//!
//! Every answer of these routes counts as one request served ([`HttpReply::Stats`]).
//!
//! The same routes run in two modes: as a procactor worker ([`HttpWorker`], whose master asks it
//! for [`HttpMsg::Stats`] and stops it with `Shutdown`), and as a plain socket-activated server
//! ([`serve_plain`], stopped by SIGTERM or SIGINT). Both stop the same way.
//!
//! # The drain (as Envoy drains a listener)
//!
//! 1. **stop accepting** (`ServerHandle::pause`): connections still in the kernel's backlog
//!    stay there for the other processes sharing the socket (the master keeps it open), and
//!    from now on **every response carries `Connection: close`**;
//! 2. **grace** ([`DRAIN_GRACE_ENV`], 1 s by default): the connections already open stay open.
//!    A client's next request on a keep-alive connection is answered (with `Connection: close`),
//!    and the connection closes after that response: the client knows to reconnect, and its
//!    new connection reaches a process that still accepts. The grace ends early once no
//!    connection is open (it lasts at least [`PAUSE_GRACE`], so that connections the accept
//!    thread had already taken reach the HTTP worker thread and are counted);
//! 3. **graceful stop** (`ServerHandle::stop(true)`, see below): the connections still idle at
//!    the end of the grace are closed; requests in flight finish, and their connections close
//!    after their response. It returns once every connection has closed, or after the shutdown
//!    timeout ([`SHUTDOWN_SECS_ENV`], 30 s by default), when the connections left are cut.
//!
//! The whole drain ends within the master's shutdown timeout, which the master passes in
//! [`SHUTDOWN_TIMEOUT_ENV`]: of that time less a margin for the process to exit (a tenth, at most
//! 500 ms), the grace takes at most half and the graceful stop at most the rest. Without it
//! (a plain program started by something else), the two settings apply as they are.
//!
//! So the only request that can still fail is one sent on a connection that stayed idle for the
//! whole grace and crosses its close: the race inherent to HTTP/1.1 keep-alive (RFC 9112
//! §9.3.1), moved from "any idle connection at the instant of the stop" to "a client silent for
//! the whole grace". A client under load sends its next request well within it.
//!
//! # Mechanisms (actix-web 4.18, actix-http 3.20, actix-server 2.10)
//!
//! - `Connection: close` from the application closes the connection: the HTTP/1 codec takes the
//!   connection type of each response it encodes (`actix-http/src/h1/codec.rs`,
//!   `Codec::encode`: a type other than keep-alive replaces its own), writes
//!   `connection: close`, and once the response is written the dispatcher sees the codec is not
//!   keep-alive, does not re-arm `KEEP_ALIVE` and shuts the connection down
//!   (`h1/dispatcher.rs`, `FINISHED && !KEEP_ALIVE` → `SHUTDOWN`). A middleware of this module
//!   sets it (`ResponseHead::set_connection_type(ConnectionType::Close)`) while draining.
//! - Open connections are counted with `HttpServer::on_connect`: it runs once per connection,
//!   before its first request, and puts a guard in the connection's `Extensions`
//!   (`actix-http/src/lib.rs`, `OnConnectData::from_io`). The dispatcher owns them
//!   (`conn_data: Option<Rc<Extensions>>`; each request holds a clone of the `Rc` until it is
//!   dropped), so the guard drops, and the count goes down, when the connection has closed and
//!   its last request is gone.
//! - `ServerHandle::stop(true)` first fires the server's graceful-shutdown signal, then tells the
//!   accept thread to stop and each server worker to stop (`actix-server/src/server.rs`,
//!   `ServerInner::handle_cmd`, `ServerCommand::Stop`). actix-web hands that signal to every HTTP
//!   connection it creates (`actix-web/src/server.rs`, `HttpServer::listen`:
//!   `HttpService::build().graceful_shutdown_signal(..)`).
//! - Each HTTP/1 connection, when the signal fires, clears its keep-alive state and enters
//!   `DRAINING` (`actix-http/src/h1/dispatcher.rs`, `poll_graceful_shutdown`):
//!   - **an idle keep-alive connection** (no request in progress) closes at once: its state is
//!     `None`, so `poll_response` drops any pipelined requests not yet started (`messages.clear()`)
//!     and sets `SHUTDOWN`; the dispatcher flushes and shuts the write half (a FIN), then drops the
//!     socket. Requests whose bytes were already buffered but not started are never started
//!     (`poll_request` returns early while draining; the test
//!     `graceful_shutdown_does_not_start_buffered_request` in `h1/dispatcher_tests.rs`). This is
//!     why the grace comes first: without it, every idle connection closes at the instant of the
//!     stop, and a request already on its way on one is lost.
//!   - **a request in flight** runs to completion; its response goes out with
//!     `Connection: close` (`send_response`: `close_after_response` when draining), then the
//!     connection closes the same way. No response is cut off unless the shutdown timeout passes.
//! - The server worker (`actix-server/src/worker.rs`, `ServerWorker::poll`) takes its stop
//!   after the signal has woken the connections, so idle ones and quick requests have usually
//!   closed by then: with no connection left it stops at once. Otherwise it enters
//!   `WorkerState::Shutdown`, drops connections the accept thread had queued to it but it had not
//!   started, and checks every `SHUTDOWN_POLL_INTERVAL` (1 s) whether its connection count is
//!   zero; at its shutdown timeout (whole seconds) it stops and the connections left are dropped
//!   mid-request. The drain does not wait past its own bound: it returns, and the process exits.
//!
//! # Caveats
//! - actix-server runs the HTTP handlers on a worker thread of its own (`workers(1)`); the
//!   procactor runtime's thread only runs the server's command loop and the drain.
//! - actix-server puts the listening socket in non-blocking mode. The flag belongs to the open
//!   socket, shared by the master and every worker, not to this process's descriptor.
//! - The grace delays a stop while clients hold idle connections open (a reverse proxy's
//!   upstream keep-alive pool, for one): a cluster's `stop`, which stops workers one after
//!   another, can take up to a grace per worker. A rolling reload does not add them up: the old
//!   processes drain beside the next replacements.
//! - The master kills a worker whose drain outlasts the cluster's shutdown timeout (5 s by
//!   default): give the cluster a longer one than the longest request; the drain bounds itself
//!   under it, cutting what is left.
//! - HTTP/1 only (no `GOAWAY`: actix-web is built here without HTTP/2).

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::ContentType;
use actix_web::http::ConnectionType;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::worker::{WorkerActor, WorkerContext};

/// The environment variable holding the graceful-stop timeout in seconds (default 30): how long
/// requests in flight get to finish, after the grace, before their connections are cut.
pub const SHUTDOWN_SECS_ENV: &str = "PROCACTOR_HTTP_SHUTDOWN_SECS";

/// The graceful-stop timeout when [`SHUTDOWN_SECS_ENV`] is unset or not a number.
pub const DEFAULT_SHUTDOWN_SECS: u64 = 30;

/// The environment variable holding the drain's grace in milliseconds (default 1000): how long
/// a stopping server keeps idle connections open so that a client's next request is answered
/// (with `Connection: close`). See the module docs.
pub const DRAIN_GRACE_ENV: &str = "PROCACTOR_HTTP_DRAIN_GRACE_MS";

/// The grace when [`DRAIN_GRACE_ENV`] is unset or not a number.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Where the master puts its shutdown timeout (milliseconds) for every process it starts; the
/// drain ends within it.
pub const SHUTDOWN_TIMEOUT_ENV: &str = crate::config::SHUTDOWN_TIMEOUT_ENV;

/// The shortest grace of a drain (unless the grace is set shorter): connections the accept
/// thread took just before the pause reach the HTTP worker thread and are counted as open.
pub const PAUSE_GRACE: Duration = Duration::from_millis(100);

/// What a drain leaves of the master's shutdown timeout for the process to exit: a tenth of it,
/// at most this.
const EXIT_MARGIN: Duration = Duration::from_millis(500);

/// The longest sleep `/slow` accepts, in milliseconds; larger values are capped to it.
pub const MAX_SLOW_MS: u64 = 60_000;

/// What [`HttpWorker`] accepts from its master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpMsg {
    /// Answers [`HttpReply::Stats`].
    Stats,
    /// Answers [`HttpReply::Pid`].
    Pid,
}

/// What [`HttpWorker`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpReply {
    /// To `Stats`.
    Stats {
        /// Requests answered by this process's routes so far.
        served: u64,
    },
    /// To `Pid`: this process's id, as its HTTP answers give it.
    Pid(u32),
}

/// The HTTP worker: serves the routes of this module on the cluster's listener `"http"` from
/// [`started`](WorkerActor::started) on, and drains on [`stopping`](WorkerActor::stopping).
///
/// ```no_run
/// use procactor::actors::http::HttpWorker;
/// use procactor::ClusterConfig;
/// use std::time::Duration;
///
/// // In the master: workers get the socket; the worker binary runs `HttpWorker`.
/// let config = ClusterConfig::new()
///     .workers(4)
///     .exec("target/debug/procactor-http")
///     .listen("http", "127.0.0.1:8080")
///     .shutdown_timeout(Duration::from_secs(40));
///
/// // In the worker binary:
/// # fn worker() -> Result<(), procactor::Error> {
/// procactor::run_worker(HttpWorker::default())
/// # }
/// ```
///
/// Without a listener named `"http"` it logs the error and serves nothing; it still becomes
/// ready and answers its master.
#[derive(Debug, Default)]
pub struct HttpWorker {
    served: Arc<AtomicU64>,
    server: Option<Running>,
}

impl WorkerActor for HttpWorker {
    type Msg = HttpMsg;
    type Reply = HttpReply;
    type Event = ();
    type MasterReply = ();

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        let listener = match ctx.listener("http") {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "no listening socket \"http\"; not serving");
                eprintln!("procactor-http: no listening socket \"http\" ({e}); not serving");
                return;
            }
        };
        let log = Some(ctx.log().clone());
        match start(listener, Arc::clone(&self.served), log).await {
            Ok(running) => self.server = Some(running),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the HTTP server; not serving");
                eprintln!("procactor-http: cannot start the HTTP server ({e}); not serving");
            }
        }
    }

    async fn handle(&mut self, msg: HttpMsg, _ctx: &mut WorkerContext<Self>) -> HttpReply {
        match msg {
            HttpMsg::Stats => HttpReply::Stats {
                served: self.served.load(Ordering::Relaxed),
            },
            HttpMsg::Pid => HttpReply::Pid(std::process::id()),
        }
    }

    async fn stopping(&mut self, _ctx: &mut WorkerContext<Self>) {
        if let Some(running) = self.server.take() {
            // Past its bound the drain returns, and what is left ends with this process.
            let _ = running.drain().await;
        }
    }
}

/// Serves the routes of this module on `listener` until SIGTERM or SIGINT, then drains as a
/// worker does and returns: the program's plain (socket-activation) mode.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] when `listener` is not a TCP socket; any error from setting
/// up the signal handlers or starting the server, or from the server while it runs.
///
/// # Panics
/// When called from inside a running tokio runtime (it builds its own actix system).
pub fn serve_plain(listener: TcpListener) -> io::Result<()> {
    if let Err(e) = listener.local_addr() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a TCP listening socket: {e}"),
        ));
    }
    actix_rt::System::new().block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before serving, so that a signal from then on drains instead of killing.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut running = start(listener, Arc::default(), None).await?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            ended = &mut running.task => return ended.unwrap_or_else(|e| Err(io::Error::other(e))),
        }
        let task = running.drain().await?;
        task.await.unwrap_or_else(|e| Err(io::Error::other(e)))
    })
}

/// How long each phase of a drain may take; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DrainPlan {
    grace: Duration,
    stop: Duration,
}

impl DrainPlan {
    /// The grace and graceful-stop timeout as set, bounded under the master's shutdown timeout
    /// (`master`) when there is one.
    fn new(grace: Duration, stop: Duration, master: Option<Duration>) -> Self {
        let Some(master) = master else {
            return Self { grace, stop };
        };
        let budget = master.saturating_sub(EXIT_MARGIN.min(master / 10));
        let grace = grace.min(budget / 2);
        let stop = stop.min(budget - grace);
        Self { grace, stop }
    }

    /// From [`DRAIN_GRACE_ENV`], [`SHUTDOWN_SECS_ENV`] and [`SHUTDOWN_TIMEOUT_ENV`].
    fn from_env() -> Self {
        let number = |name: &str| -> Option<u64> { std::env::var(name).ok()?.trim().parse().ok() };
        let grace = number(DRAIN_GRACE_ENV).map_or(DEFAULT_DRAIN_GRACE, Duration::from_millis);
        let stop = Duration::from_secs(number(SHUTDOWN_SECS_ENV).unwrap_or(DEFAULT_SHUTDOWN_SECS));
        let master = number(SHUTDOWN_TIMEOUT_ENV).map(Duration::from_millis);
        Self::new(grace, stop, master)
    }

    /// actix-server's graceful-stop timeout, in the whole seconds it takes (rounded up: the
    /// drain bounds the stop itself).
    fn stop_secs(&self) -> u64 {
        self.stop.as_secs() + u64::from(self.stop.subsec_nanos() > 0)
    }
}

/// The server's connections, as its drain sees them: shared by the server's threads.
#[derive(Debug)]
struct Connections {
    /// Set when the drain begins: every response from then on carries `Connection: close`.
    draining: AtomicBool,
    /// Connections open now.
    open: watch::Sender<usize>,
}

impl Connections {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            open: watch::Sender::new(0),
        })
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Counts one open connection, from its `on_connect` until the connection is dropped.
struct Opened(Arc<Connections>);

impl Opened {
    fn new(connections: &Arc<Connections>) -> Self {
        connections.open.send_modify(|n| *n += 1);
        Self(Arc::clone(connections))
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A started server: its handle, its connections, its drain plan and the task that runs it
/// until it stops.
#[derive(Debug)]
struct Running {
    handle: ServerHandle,
    connections: Arc<Connections>,
    plan: DrainPlan,
    task: actix_rt::task::JoinHandle<io::Result<()>>,
}

impl Running {
    /// Drains the server (see the module docs). Returns the server's task once the server has
    /// stopped, or an error when the drain's bound passed first (the connections left are cut
    /// when the process exits).
    async fn drain(self) -> io::Result<actix_rt::task::JoinHandle<io::Result<()>>> {
        let Running {
            handle,
            connections,
            plan,
            task,
        } = self;
        connections.draining.store(true, Ordering::Relaxed);
        handle.pause().await;
        let first = PAUSE_GRACE.min(plan.grace);
        actix_rt::time::sleep(first).await;
        let mut open = connections.open.subscribe();
        let idle = open.wait_for(|n| *n == 0);
        let _ = tokio::time::timeout(plan.grace - first, idle).await;
        let open_at_stop = *connections.open.borrow();
        if open_at_stop > 0 {
            tracing::debug!(
                open = open_at_stop,
                "grace over; closing the idle connections left"
            );
        }
        match tokio::time::timeout(plan.stop, handle.stop(true)).await {
            Ok(()) => Ok(task),
            Err(_) => {
                tracing::warn!(
                    timeout_ms = plan.stop.as_millis() as u64,
                    "requests still in flight at the end of the drain; cutting them"
                );
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the HTTP server did not stop within its drain",
                ))
            }
        }
    }
}

/// The server for both modes: one HTTP worker thread, no signal handling of its own (each mode
/// stops it with [`Running::drain`]).
fn server(
    listener: TcpListener,
    served: Arc<AtomicU64>,
    log: Option<crate::worker::LogSender>,
    connections: &Arc<Connections>,
    plan: DrainPlan,
) -> io::Result<Server> {
    let counted = Arc::clone(connections);
    let connections = Arc::clone(connections);
    let server = HttpServer::new(move || {
        let log = log.clone();
        let connections = Arc::clone(&connections);
        App::new()
            .app_data(web::Data::from(Arc::clone(&served)))
            // An `ip` record for every request served, when there is a master to send it to;
            // `Connection: close` on every response once the drain began.
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service as _;
                let started = std::time::Instant::now();
                let client = req
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let method = req.method().to_string();
                let path = req.path().to_owned();
                let log = log.clone();
                let connections = Arc::clone(&connections);
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    if connections.draining() {
                        let head = response.response_mut().head_mut();
                        head.set_connection_type(ConnectionType::Close);
                    }
                    if let Some(log) = &log {
                        let status = response.status().as_u16();
                        log.ip(&client, &method, &path, status, started.elapsed());
                    }
                    Ok(response)
                }
            })
            .configure(routes)
    })
    .on_connect(move |_, extensions| {
        extensions.insert(Opened::new(&counted));
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(plan.stop_secs())
    .listen(listener)?;
    Ok(server.run())
}

/// Starts the server on the current actix system and returns once it accepts: the server
/// future's first poll starts its worker thread and accept thread, synchronously. The task
/// ends when the server has stopped.
async fn start(
    listener: TcpListener,
    served: Arc<AtomicU64>,
    log: Option<crate::worker::LogSender>,
) -> io::Result<Running> {
    let connections = Connections::new();
    let plan = DrainPlan::from_env();
    let mut server = server(listener, served, log, &connections, plan)?;
    let handle = server.handle();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let task = actix_rt::spawn(async move {
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut server).poll(cx))).await;
        let result = match first {
            Poll::Pending => {
                let _ = started_tx.send(Ok(()));
                server.await
            }
            Poll::Ready(Err(e)) => {
                let _ = started_tx.send(Err(e));
                return Ok(());
            }
            Poll::Ready(Ok(())) => {
                let _ = started_tx.send(Ok(()));
                Ok(())
            }
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "the HTTP server failed");
        }
        result
    });
    match started_rx.await {
        Ok(Ok(())) => Ok(Running {
            handle,
            connections,
            plan,
            task,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other(
            "the HTTP server task ended before starting",
        )),
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/slow", web::get().to(slow))
        .route("/health", web::get().to(health));
}

fn pid_response(served: &AtomicU64) -> HttpResponse {
    served.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(format!("pid {}\n", std::process::id()))
}

async fn index(served: web::Data<AtomicU64>) -> HttpResponse {
    pid_response(&served)
}

/// The query of `/slow`.
#[derive(Debug, Deserialize)]
struct SlowQuery {
    #[serde(default)]
    ms: u64,
}

async fn slow(query: web::Query<SlowQuery>, served: web::Data<AtomicU64>) -> HttpResponse {
    let ms = query.ms.min(MAX_SLOW_MS);
    actix_rt::time::sleep(Duration::from_millis(ms)).await;
    pid_response(&served)
}

async fn health(served: web::Data<AtomicU64>) -> HttpResponse {
    served.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_drain_fits_the_masters_shutdown_timeout() {
        // Settings as they are without a master.
        let plan = DrainPlan::new(MS(1000), Duration::from_secs(30), None);
        assert_eq!((plan.grace, plan.stop), (MS(1000), Duration::from_secs(30)));
        // The default 5 s: 500 ms to exit, a 1 s grace, the rest to stop.
        let plan = DrainPlan::new(MS(1000), Duration::from_secs(30), Some(MS(5000)));
        assert_eq!((plan.grace, plan.stop), (MS(1000), MS(3500)));
        assert_eq!(plan.stop_secs(), 4);
        // A short timeout: a tenth to exit, at most half the rest for the grace.
        let plan = DrainPlan::new(MS(1000), Duration::from_secs(30), Some(MS(1000)));
        assert_eq!((plan.grace, plan.stop), (MS(450), MS(450)));
        // Shorter settings are kept; nothing overflows at the extremes.
        let plan = DrainPlan::new(MS(0), Duration::from_secs(2), Some(MS(15_000)));
        assert_eq!((plan.grace, plan.stop), (MS(0), Duration::from_secs(2)));
        let plan = DrainPlan::new(Duration::MAX, Duration::MAX, Some(MS(0)));
        assert_eq!((plan.grace, plan.stop), (MS(0), MS(0)));
        let plan = DrainPlan::new(Duration::MAX, Duration::MAX, Some(Duration::MAX));
        assert!(plan.grace + plan.stop <= Duration::MAX - EXIT_MARGIN);
    }

    #[test]
    fn an_open_connection_is_counted_until_it_is_dropped() {
        let connections = Connections::new();
        let a = Opened::new(&connections);
        let b = Opened::new(&connections);
        assert_eq!(*connections.open.borrow(), 2);
        drop(a);
        assert_eq!(*connections.open.borrow(), 1);
        drop(b);
        assert_eq!(*connections.open.borrow(), 0);
    }
}
