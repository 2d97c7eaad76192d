//! An HTTP worker: actix-web serving the cluster's shared listening socket `"http"`, drained
//! gracefully on stop, so that a rolling restart of the cluster drops no request.
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
//! ([`serve_plain`], stopped by SIGTERM or SIGINT). Both stop the same way:
//!
//! 1. **pause**: this process stops accepting. Connections still in the kernel's backlog stay
//!    there for the other processes sharing the socket (the master keeps it open);
//! 2. wait [`PAUSE_GRACE`], so that connections the accept thread had already taken reach the
//!    HTTP worker thread and their first request starts;
//! 3. **graceful stop** (`ServerHandle::stop(true)`): see below; it returns once every
//!    connection has closed, or after the shutdown timeout ([`SHUTDOWN_SECS_ENV`], 30 s by
//!    default), when the connections left are cut.
//!
//! # What actix-web does on a graceful stop (actix-web 4.18, actix-http 3.20, actix-server 2.10)
//!
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
//!     `graceful_shutdown_does_not_start_buffered_request` in `h1/dispatcher_tests.rs`). A client
//!     whose next request crosses that FIN sees end-of-file, or a reset if its bytes arrive after
//!     the close, **before any byte of a response**: the request was not processed, and RFC 9112
//!     §9.3.1 expects a client to retry it on a new connection (for idempotent requests).
//!   - **a request in flight** runs to completion; its response goes out with
//!     `Connection: close` (`send_response`: `close_after_response` when draining), then the
//!     connection closes the same way. No response is cut off unless the shutdown timeout passes.
//! - The server worker (`actix-server/src/worker.rs`, `ServerWorker::poll`) takes its stop
//!   after the signal has woken the connections, so idle ones and quick requests have usually
//!   closed by then: with no connection left it stops at once. Otherwise it enters
//!   `WorkerState::Shutdown`, drops connections the accept thread had queued to it but it had not
//!   started (hence the pause before), and checks every `SHUTDOWN_POLL_INTERVAL` (1 s) whether
//!   its connection count is zero; at the shutdown timeout it stops and the connections left are
//!   dropped mid-request. So a stop with a slow request in flight takes a whole number of seconds
//!   after the pause (measured: a rolling reload of two workers under load took about 0.25 s
//!   with quick requests, 2.2 s with `/slow?ms=20`).
//!
//! # Caveats
//! - actix-server runs the HTTP handlers on a worker thread of its own (`workers(1)`); the
//!   procactor runtime's thread only runs the server's command loop.
//! - actix-server puts the listening socket in non-blocking mode. The flag belongs to the open
//!   socket, shared by the master and every worker, not to this process's descriptor.
//! - The master kills a worker whose `stopping` hook outlasts the cluster's shutdown timeout
//!   (5 s by default): give the cluster a longer one than the longest request, and set
//!   [`SHUTDOWN_SECS_ENV`] below it.
//! - Requests of a client that does not retry on a closed idle connection can fail on a stop:
//!   that race is inherent to HTTP/1.1 keep-alive; the server side closes only idle connections.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use crate::worker::{WorkerActor, WorkerContext};

/// The environment variable holding the graceful-stop timeout in seconds (default 30): how long
/// requests in flight get to finish once the server stops before their connections are cut.
pub const SHUTDOWN_SECS_ENV: &str = "PROCACTOR_HTTP_SHUTDOWN_SECS";

/// The graceful-stop timeout when [`SHUTDOWN_SECS_ENV`] is unset or not a number.
pub const DEFAULT_SHUTDOWN_SECS: u64 = 30;

/// How long a stopping server waits between no longer accepting and draining, so that
/// connections already accepted start their first request rather than being dropped.
pub const PAUSE_GRACE: Duration = Duration::from_millis(100);

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
    server: Option<ServerHandle>,
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
            Ok((handle, _task)) => self.server = Some(handle),
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
        if let Some(handle) = self.server.take() {
            drain(&handle).await;
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
        let (handle, mut task) = start(listener, Arc::default(), None).await?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            ended = &mut task => return ended.unwrap_or_else(|e| Err(io::Error::other(e))),
        }
        drain(&handle).await;
        task.await.unwrap_or_else(|e| Err(io::Error::other(e)))
    })
}

/// The graceful-stop timeout: [`SHUTDOWN_SECS_ENV`], else [`DEFAULT_SHUTDOWN_SECS`].
fn shutdown_secs() -> u64 {
    std::env::var(SHUTDOWN_SECS_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SHUTDOWN_SECS)
}

/// The server for both modes: one HTTP worker thread, no signal handling of its own (each mode
/// stops it with [`drain`]).
fn server(
    listener: TcpListener,
    served: Arc<AtomicU64>,
    log: Option<crate::worker::LogSender>,
) -> io::Result<Server> {
    let server = HttpServer::new(move || {
        let log = log.clone();
        App::new()
            .app_data(web::Data::from(Arc::clone(&served)))
            // An `ip` record for every request served, when there is a master to send it to.
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
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    if let Some(log) = &log {
                        let status = response.status().as_u16();
                        log.ip(&client, &method, &path, status, started.elapsed());
                    }
                    Ok(response)
                }
            })
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(shutdown_secs())
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
) -> io::Result<(ServerHandle, actix_rt::task::JoinHandle<io::Result<()>>)> {
    let mut server = server(listener, served, log)?;
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
        Ok(Ok(())) => Ok((handle, task)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other(
            "the HTTP server task ended before starting",
        )),
    }
}

/// Stops accepting, lets accepted connections start, then stops gracefully (see the module
/// docs); returns once every connection has closed or the shutdown timeout has passed.
async fn drain(handle: &ServerHandle) {
    handle.pause().await;
    actix_rt::time::sleep(PAUSE_GRACE).await;
    handle.stop(true).await;
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
