//! `procactor-http`: the HTTP worker ([`procactor::actors::http::HttpWorker`]) as a program.
//!
//! Started by a procactor master, it runs as a worker on the cluster's listener `"http"`.
//! Started any other way with sockets handed over by socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`, as systemd or a cluster in plain mode does), it serves the
//! socket named `http`, else the first one, until SIGTERM or SIGINT, drains and exits 0.

use std::process::ExitCode;

use procactor::actors::http::{serve_plain, HttpWorker};

const USAGE: &str = "usage: procactor-http runs as a procactor worker, or with a listening \
                     socket handed over by socket activation (LISTEN_FDS, LISTEN_PID, \
                     LISTEN_FDNAMES; the one named \"http\", else the first)";

fn main() -> ExitCode {
    if procactor::is_worker() {
        return match procactor::run_worker(HttpWorker::default()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("procactor-http: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut sockets = procactor::activated_sockets();
    if sockets.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let index = sockets
        .iter()
        .position(|(name, _)| name == "http")
        .unwrap_or(0);
    let (_, fd) = sockets.swap_remove(index);
    match serve_plain(std::net::TcpListener::from(fd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procactor-http: {e}");
            ExitCode::FAILURE
        }
    }
}
