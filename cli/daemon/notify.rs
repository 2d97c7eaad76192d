//! The daemon as a systemd service (`Type=notify`): it says `READY=1` once its apps are
//! started, `WATCHDOG=1` at half the interval systemd asks for, and `STOPPING=1` when it
//! begins to stop. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! Written here rather than with a crate: the protocol is one datagram of `KEY=VALUE` lines to
//! the socket named in `NOTIFY_SOCKET` (a path, or an abstract name written with `@`), and the
//! standard library's `UnixDatagram` sends it; the abstract name needs Linux's `SocketAddrExt`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to systemd's notify socket, if there is one. Errors are reported, not fatal:
/// a service manager that went away must not stop the daemon.
fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("procactor daemon: cannot notify the service manager ({state}): {e}");
    }
}

/// The apps are up.
pub(super) fn ready() {
    send("READY=1");
}

/// The daemon begins to stop.
pub(super) fn stopping() {
    send("STOPPING=1");
}

/// Pings systemd's watchdog at half its interval while the returned guard lives; nothing when
/// systemd asked for no watchdog (or for another process's: `WATCHDOG_PID`).
pub(super) fn watchdog() -> Option<Watchdog> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    let task = actix::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    });
    Some(Watchdog(task))
}

/// The watchdog's pings; they end when this is dropped.
pub(super) struct Watchdog(tokio::task::JoinHandle<()>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}
