//! When a plain program's process is ready: the master's side of
//! [`Readiness`](crate::Readiness).
//!
//! A worker says `Ready` on its channel; a plain program has no channel, so its process stays
//! `Starting` until the sign the config names: at once, after `min_uptime`, on `READY=1`, or
//! when a probe answers. Until then it serves nothing; in a rolling reload its predecessor
//! keeps serving. The ready timeout runs meanwhile (the master kills a process not ready in
//! time), and a process that exits first is a failed start — a failed replacement in a reload.
//!
//! The notification socket (`os::notify`) is bound before the process is spawned, since its
//! path is in the process's environment, and read by a task of the proxy until the process is
//! reaped: `READY=1` makes it ready (with `Readiness::Notify`), `WATCHDOG=1` feeds the
//! watchdog, `STATUS=…` is kept, and bad datagrams are counted (`notified`).
//!
//! The watchdog ([`ClusterConfig::watchdog`](crate::ClusterConfig::watchdog), systemd's
//! `WatchdogSec=`) runs from the moment the process is ready, whatever made it so, until it is
//! told to stop: a period without `WATCHDOG=1` and the master kills it with
//! [`ExitReason::WatchdogTimeout`]. Before it is ready, the ready timeout rules; once it is
//! stopping, the shutdown timeout.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::actor::Worker;
use super::notified::NotifyStatus;
use crate::config::{HttpTarget, Readiness};
use crate::error::ExitReason;
use crate::os::notify::{self, NotifySocket};
use crate::state::WorkerState;
use crate::worker::WorkerActor;

/// How often a probe is tried while the process is not ready.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an HTTP probe's answer read for its status line.
const PROBE_HEAD_BYTES: usize = 8192;

/// The serving process's [`NotifyStatus`]; `None` when it has no notification socket.
#[derive(Debug, Message)]
#[rtype(result = "Option<NotifyStatus>")]
pub(crate) struct GetNotifyStatus;

impl<A: WorkerActor> Handler<GetNotifyStatus> for Worker<A> {
    type Result = Option<NotifyStatus>;

    fn handle(&mut self, _: GetNotifyStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.notify.status(self.proc.generation, self.proc.pid())
    }
}

/// A probe of [`Readiness::Tcp`] or [`Readiness::Http`].
#[derive(Debug)]
enum Probe {
    Tcp(SocketAddr),
    Http(HttpTarget),
}

impl Probe {
    /// Whether it answers now.
    async fn answers(&self) -> bool {
        let attempt = async {
            match self {
                Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.map(|_| true),
                Probe::Http(target) => http_ok(target).await,
            }
        };
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
            Ok(Ok(true))
        )
    }
}

/// `GET` of `target`: whether the status is from 200 to 399.
async fn http_ok(target: &HttpTarget) -> std::io::Result<bool> {
    let mut stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: procactor\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while head.len() < PROBE_HEAD_BYTES {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        // The status is known once its line is, whatever follows.
        let parsed = response.parse(&head);
        if let Some(code) = response.code {
            return Ok((200..400).contains(&code));
        }
        if parsed.is_err() {
            break;
        }
    }
    Ok(false)
}

impl<A: WorkerActor> Worker<A> {
    /// Before a process of a plain program is spawned: binds its notification socket if the
    /// config asks for one (readiness or watchdog), and names it and the watchdog's period in
    /// `env`; `pid_vars` gets `WATCHDOG_PID`.
    pub(super) fn prepare_plain(
        &self,
        env: &mut Vec<(OsString, OsString)>,
        pid_vars: &mut Vec<&'static str>,
    ) -> std::io::Result<Option<NotifySocket>> {
        let config = &self.spawn.config;
        if config.ready != Readiness::Notify && config.watchdog.is_none() {
            return Ok(None);
        }
        let socket = NotifySocket::bind()?;
        env.push((notify::NOTIFY_SOCKET.into(), socket.path().into()));
        if let Some(period) = config.watchdog {
            env.push((
                notify::WATCHDOG_USEC.into(),
                period.as_micros().to_string().into(),
            ));
            pid_vars.push(notify::WATCHDOG_PID);
        }
        Ok(Some(socket))
    }

    /// Process `generation` of a plain program runs: it becomes ready as the config says, and
    /// its notification socket, if it has one, is read until it is reaped.
    pub(super) fn plain_started(
        &mut self,
        generation: u64,
        socket: Option<NotifySocket>,
        ctx: &mut Context<Self>,
    ) {
        let notified = socket.map(|socket| self.listen(generation, socket, ctx));
        match self.spawn.config.ready.clone() {
            ready if ready.at_spawn() => return self.plain_ready(generation, ctx),
            Readiness::Spawn { min_uptime } => {
                ctx.run_later(min_uptime, move |act, ctx| act.plain_ready(generation, ctx));
            }
            Readiness::Notify => {
                if let Some(ready) = notified {
                    ctx.spawn(wrap_future(ready).map(move |got, act: &mut Self, ctx| {
                        if got.is_ok() {
                            act.plain_ready(generation, ctx);
                        }
                    }));
                }
            }
            Readiness::Tcp(addr) => self.probe(generation, Rc::new(Probe::Tcp(addr)), ctx),
            Readiness::Http(url) => match HttpTarget::parse(&url) {
                Ok(target) => self.probe(generation, Rc::new(Probe::Http(target)), ctx),
                // Checked by the config's validation: never here.
                Err(e) => tracing::error!(worker = self.id, error = %e, "bad probe URL"),
            },
        }
        self.arm_ready_timeout(generation, ctx);
    }

    /// Process `generation` gave its sign: ready, if it is still starting; its watchdog, if
    /// the config has one, runs from now.
    fn plain_ready(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let starting = self
            .proc_mut(generation)
            .is_some_and(|p| p.state == WorkerState::Starting);
        if !starting {
            return;
        }
        self.on_ready(generation, ctx);
        if let Some(period) = self.spawn.config.watchdog {
            self.watchdog(generation, Instant::now(), period, ctx);
        }
    }

    /// Kills process `generation`, ready since `since`, once `period` has passed without a
    /// `WATCHDOG=1` (counting from `since`); looks again at each deadline while it is ready.
    fn watchdog(
        &mut self,
        generation: u64,
        since: Instant,
        period: Duration,
        ctx: &mut Context<Self>,
    ) {
        let ready = self
            .proc_mut(generation)
            .is_some_and(|p| p.state == WorkerState::Ready);
        if !ready {
            // Stopping (the shutdown timeout rules now), or gone.
            return;
        }
        let last = self
            .notify
            .last_watchdog(generation)
            .map_or(since, |t| t.max(since));
        match (last + period).checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => {
                ctx.run_later(left, move |act, ctx| {
                    act.watchdog(generation, since, period, ctx)
                });
            }
            _ => {
                tracing::warn!(
                    worker = self.id,
                    generation,
                    ?period,
                    "no WATCHDOG=1 within the watchdog period"
                );
                self.fault(generation, ExitReason::WatchdogTimeout, ctx);
            }
        }
    }

    /// Tries `probe` for process `generation` while it is starting, every [`PROBE_EVERY`].
    fn probe(&mut self, generation: u64, probe: Rc<Probe>, ctx: &mut Context<Self>) {
        let starting = self
            .proc_mut(generation)
            .is_some_and(|p| p.state == WorkerState::Starting);
        if !starting {
            return;
        }
        let attempt = Rc::clone(&probe);
        let answered = async move { attempt.answers().await };
        ctx.spawn(wrap_future(answered).map(move |ok, act: &mut Self, ctx| {
            if ok {
                act.plain_ready(generation, ctx);
            } else {
                ctx.run_later(PROBE_EVERY, move |act, ctx| {
                    act.probe(generation, probe, ctx)
                });
            }
        }));
    }

    /// Reads process `generation`'s notification socket until it is reaped; resolves the
    /// returned receiver at its first `READY=1`.
    fn listen(
        &mut self,
        generation: u64,
        mut socket: NotifySocket,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<()> {
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        let notes = self.notify.start(generation, stop_tx);
        let (ready_tx, ready) = oneshot::channel();
        let id = self.id;
        let read = async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                let got = tokio::select! {
                    _ = &mut stop => return,
                    got = socket.next() => got,
                };
                match got {
                    Ok(Ok(notice)) => {
                        if notice.ready {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        notes.borrow_mut().take(notice);
                    }
                    Ok(Err(bad)) => {
                        if notes.borrow_mut().dropped() == 1 {
                            tracing::warn!(worker = id, generation, ?bad, "notification dropped");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = id, generation, error = %e, "cannot read the notification socket");
                        return;
                    }
                }
            }
        };
        ctx.spawn(wrap_future(read));
        ready
    }
}
