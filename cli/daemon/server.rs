//! The daemon's side of the control socket: each connection is checked (the peer's uid, the
//! protocol's version), then carries one request, its events and its outcome.
//!
//! A client that reads too slowly never holds the daemon back: events reach it through a
//! bounded broadcast channel (it is told how many it missed), and a send that does not complete
//! within [`SEND_TIMEOUT`] ends the connection; the request itself goes on.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::broadcast::error::RecvError;

use super::{commands, Daemon};
use crate::conn::Conn;
use crate::proto::{ClientLine, DaemonLine, Event, Outcome, Request};

/// How long one line to a client may take before the daemon gives up on that client.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the daemon waits after a failed `accept` before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// How long a client has to say hello and make its request.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);

/// How often `watch` sends a snapshot of every instance.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Accepts connections until the daemon is told to exit (`kill`, SIGTERM, SIGINT); SIGHUP
/// reloads every app.
pub(crate) async fn serve(daemon: Rc<Daemon>, listener: UnixListener) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let signal_err = |e: std::io::Error| format!("cannot handle signals: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let daemon = Rc::clone(&daemon);
                    actix::spawn(async move { connection(daemon, Conn::new(stream)).await });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: give the connections that hold
                    // them time to end rather than spin on the error.
                    eprintln!("procactor daemon: accept: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            () = daemon.exiting() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                let daemon = Rc::clone(&daemon);
                actix::spawn(async move {
                    let outcome = commands::reload(&daemon, &crate::proto::Target::All).await;
                    if let Some(e) = outcome.error {
                        eprintln!("procactor daemon: reload on SIGHUP: {}", e.message);
                    }
                });
            }
        }
    }
}

/// One connection: handshake, one request, its events, its outcome.
async fn connection(daemon: Rc<Daemon>, mut conn: Conn) {
    let me = crate::socket::my_uid();
    let handshake = crate::handshake::server(&mut conn, me, std::process::id());
    let Ok(handshake) = tokio::time::timeout(REQUEST_WITHIN, handshake).await else {
        return; // a client that connects and says nothing holds a descriptor no longer
    };
    match handshake {
        Ok(_) => {}
        // `start` looks whether a daemon answers by connecting and closing at once.
        Err(crate::handshake::HandshakeError::Closed) => return,
        Err(e) => {
            eprintln!("procactor daemon: a client was not served: {e}");
            return;
        }
    }
    let Ok(line) = tokio::time::timeout(REQUEST_WITHIN, conn.recv::<ClientLine>()).await else {
        return;
    };
    let request = match line {
        Ok(Some(ClientLine::Request(request))) => request,
        Ok(Some(ClientLine::Hello(_))) => {
            let _ = send(
                &mut conn,
                &outcome_line(commands::failed("protocol", "a second hello")),
            )
            .await;
            return;
        }
        Ok(None) => return,
        Err(e) => {
            let _ = send(
                &mut conn,
                &outcome_line(commands::failed("protocol", e.to_string())),
            )
            .await;
            return;
        }
    };
    let command = command_name(&request);
    let outcome = match request {
        Request::Start { path, text } => {
            progress(&daemon, &mut conn, commands::start(&daemon, &path, &text)).await
        }
        Request::List => commands::list(&daemon).await,
        Request::Describe { app, show_env } => commands::describe(&daemon, &app, show_env).await,
        Request::Reload { target } => {
            progress(&daemon, &mut conn, commands::reload(&daemon, &target)).await
        }
        Request::Restart { target } => {
            progress(&daemon, &mut conn, commands::restart(&daemon, &target)).await
        }
        Request::Stop { target } => {
            progress(&daemon, &mut conn, commands::stop(&daemon, &target)).await
        }
        Request::Scale { app, n } => {
            progress(&daemon, &mut conn, commands::scale(&daemon, &app, n)).await
        }
        Request::Logs { app, lines, follow } => {
            // Subscribed before the ring is read: no line falls between the two.
            let new_lines = daemon.lines.subscribe();
            match super::logs::recent(&daemon, app.as_deref(), lines).await {
                Ok(recent) => {
                    // As events, one a line: an answer of many long lines fits no one line.
                    for line in recent {
                        if !send(&mut conn, &DaemonLine::Event(Event::Line(line))).await {
                            return;
                        }
                    }
                    if follow {
                        super::logs::follow(&daemon, app.as_deref(), new_lines, &mut conn).await;
                        return;
                    }
                    commands::ok(serde_json::Value::Null)
                }
                Err(outcome) => outcome,
            }
        }
        Request::Apply {
            path,
            text,
            dry_run,
        } => {
            progress(
                &daemon,
                &mut conn,
                commands::apply(&daemon, &path, &text, dry_run),
            )
            .await
        }
        Request::Watch => {
            watch(&daemon, &mut conn).await;
            return;
        }
        Request::Resurrect => {
            progress(&daemon, &mut conn, commands::resurrect_request(&daemon)).await
        }
        Request::Kill => {
            let _changing = daemon.changing.lock().await;
            commands::stop_all(&daemon).await;
            let _ = send(
                &mut conn,
                &outcome_line(commands::ok(serde_json::Value::Null)),
            )
            .await;
            daemon.exit.send_replace(true);
            return;
        }
    };
    daemon.count_request(command, outcome.ok);
    let _ = send(&mut conn, &outcome_line(outcome)).await;
}

/// The name of `request`'s command, for the daemon's metrics.
fn command_name(request: &Request) -> &'static str {
    match request {
        Request::Start { .. } => "start",
        Request::List => "list",
        Request::Describe { .. } => "describe",
        Request::Reload { .. } => "reload",
        Request::Restart { .. } => "restart",
        Request::Stop { .. } => "stop",
        Request::Scale { .. } => "scale",
        Request::Logs { .. } => "logs",
        Request::Apply { .. } => "apply",
        Request::Watch => "watch",
        Request::Kill => "kill",
        Request::Resurrect => "resurrect",
    }
}

fn outcome_line(outcome: Outcome) -> DaemonLine {
    DaemonLine::Outcome(outcome)
}

/// Sends one line within [`SEND_TIMEOUT`]; false when the client is gone or too slow.
pub(super) async fn send(conn: &mut Conn, line: &DaemonLine) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, conn.send(line)).await,
        Ok(Ok(()))
    )
}

/// Runs `op`, sending the client every event that happens meanwhile; once the client is gone,
/// `op` still runs to its end (an operator's Ctrl-C does not leave a reload half done).
async fn progress(daemon: &Daemon, conn: &mut Conn, op: impl Future<Output = Outcome>) -> Outcome {
    let mut events = daemon.events.subscribe();
    let mut listening = true;
    tokio::pin!(op);
    loop {
        tokio::select! {
            outcome = &mut op => {
                // What happened just before the end, in order.
                while listening {
                    match events.try_recv() {
                        Ok(event) => listening = send(conn, &DaemonLine::Event(event)).await,
                        Err(_) => break,
                    }
                }
                return outcome;
            }
            event = events.recv(), if listening => {
                let line = match event {
                    Ok(event) => DaemonLine::Event(event),
                    Err(RecvError::Lagged(n)) => DaemonLine::Event(Event::Skipped { events: n }),
                    Err(RecvError::Closed) => continue,
                };
                listening = send(conn, &line).await;
            }
        }
    }
}

/// For `top`: a snapshot of every instance each [`WATCH_EVERY`], and the events between,
/// until the client leaves.
async fn watch(daemon: &Daemon, conn: &mut Conn) {
    let mut events = daemon.events.subscribe();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        let line = tokio::select! {
            _ = tick.tick() => match daemon.instances().await {
                Ok(instances) => DaemonLine::Event(Event::Snapshot { instances }),
                Err(e) => DaemonLine::Event(Event::Note { message: e }),
            },
            event = events.recv() => match event {
                Ok(event) => DaemonLine::Event(event),
                Err(RecvError::Lagged(n)) => DaemonLine::Event(Event::Skipped { events: n }),
                Err(RecvError::Closed) => return,
            },
        };
        if !send(conn, &line).await {
            return;
        }
    }
}
