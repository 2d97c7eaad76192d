//! `logs`: the last lines of the apps' output, from each cluster's in-memory ring, then (with
//! `-f`) every new line as it is written.

use super::commands::{failed, not_running};
use super::server::send;
use super::Daemon;
use crate::conn::Conn;
use crate::proto::{DaemonLine, Event, Line, Outcome};
use procactor::logger::Kind;
use tokio::sync::broadcast::error::RecvError;

/// The last `lines` lines of `app` (or of every app), oldest first.
///
/// # Errors
/// An outcome naming an app that does not run, or a logger that has stopped.
pub(super) async fn recent(
    d: &Daemon,
    app: Option<&str>,
    lines: usize,
) -> Result<Vec<Line>, Outcome> {
    let apps = match app {
        Some(name) => vec![d.app(name).ok_or_else(|| not_running(d, name))?],
        None => d.running(),
    };
    let mut all = Vec::new();
    for app in apps {
        let records = app
            .cluster()
            .recent_logs(Kind::Output, lines, None)
            .await
            .map_err(|e| failed("internal", format!("{}: {e}", app.name)))?;
        all.extend(records.iter().filter_map(|r| Line::of(&app.name, r)));
    }
    all.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
    let skip = all.len().saturating_sub(lines);
    all.drain(..skip);
    Ok(all)
}

/// Sends every new line of `app` (or of every app) from `lines` until the client leaves or the
/// daemon exits.
pub(super) async fn follow(
    d: &Daemon,
    app: Option<&str>,
    mut lines: tokio::sync::broadcast::Receiver<Line>,
    conn: &mut Conn,
) {
    loop {
        let line = tokio::select! {
            line = lines.recv() => match line {
                Ok(line) if app.is_none_or(|a| a == line.app) => DaemonLine::Event(Event::Line(line)),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => DaemonLine::Event(Event::Skipped { events: n }),
                Err(RecvError::Closed) => return,
            },
            () = d.exiting() => return,
        };
        if !send(conn, &line).await {
            return;
        }
    }
}
