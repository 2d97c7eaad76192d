//! `liveness = { http = "http://127.0.0.1:900{instance}/health", every = "5s", failures = 3 }`:
//! the daemon asks each ready instance, at its own URL (`{instance}` is replaced by the
//! instance's number), every `every`; an instance that fails `failures` times in a row — no
//! connection, no answer within the period (2 s at most), or a status outside 200–399 — is
//! killed and restarted by its restart policy.
//!
//! Why the URL is per instance: the app's shared `listen` socket reaches whichever instance
//! accepts first, so probing it says nothing about one instance; an instance serves its health
//! on an address of its own (its number is in `PROCACTOR_INSTANCE`).
//!
//! Limits: plain HTTP/1.1 (no TLS), `GET` only; the first probe comes one period after an
//! instance is ready; a kill's restart follows the app's `restart` policy.

use std::collections::HashMap;
use std::rc::Weak;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use super::app::App;
use crate::proto::Event;

/// What an app's probe does.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// The URL, with `{instance}`.
    pub(crate) url: String,
    /// How often each instance is asked.
    pub(crate) every: Duration,
    /// Failures in a row that end an instance.
    pub(crate) failures: u32,
}

/// The longest a probe waits for its answer.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// Probes `app`'s instances until it is gone; returns the task, aborted when dropped by the app.
pub(crate) fn watch(
    app: Weak<App>,
    probe: Probe,
    events: broadcast::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    actix::spawn(async move {
        // (instance, pid) → failures in a row.
        let mut failing: HashMap<(usize, u32), u32> = HashMap::new();
        let mut tick = tokio::time::interval(probe.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { return };
            let Ok(workers) = app.cluster().workers().await else {
                return; // the cluster has stopped
            };
            let mut seen = Vec::new();
            for w in workers {
                let (Some(pid), procactor::WorkerState::Ready) = (w.pid, w.state) else {
                    continue;
                };
                seen.push((w.id, pid));
                let url = probe.url.replace("{instance}", &w.id.to_string());
                let wait = probe.every.min(MAX_WAIT);
                match get(&url, wait).await {
                    Ok(status) if (200..400).contains(&status) => {
                        failing.remove(&(w.id, pid));
                    }
                    outcome => {
                        let n = failing.entry((w.id, pid)).or_default();
                        *n += 1;
                        if *n >= probe.failures {
                            let why = match outcome {
                                Ok(status) => format!("answered {status}"),
                                Err(e) => e,
                            };
                            let _ = events.send(Event::Note {
                                message: format!(
                                    "{}[{}] failed its liveness probe {n} times ({why}): killed",
                                    app.name, w.id
                                ),
                            });
                            failing.remove(&(w.id, pid));
                            let _ = app.cluster().kill(w.id).await;
                        }
                    }
                }
            }
            failing.retain(|key, _| seen.contains(key));
        }
    })
}

/// `GET url` within `wait`: the status of the answer.
async fn get(url: &str, wait: Duration) -> Result<u16, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = parsed.host_str().ok_or("no host")?.to_owned();
    let port = parsed.port_or_known_default().ok_or("no port")?;
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // The status line is all it needs.
        let mut head = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = stream
                .read(&mut head[got..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the status".to_owned());
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&head[..got]);
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| format!("no answer within {wait:?}"))?
}
