//! Prometheus and promtool for the tests that check procactor's metrics with the real tools
//! (Debian package `prometheus`; `.ci/run` installs it): whether they are here (outside CI a
//! missing one skips its test, saying so; in CI it fails it), `promtool check metrics` on a
//! scrape, and a Prometheus server scraping one target.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Whether `program` runs here; outside CI a missing one skips the test (printed), in CI it
/// fails it.
pub(crate) fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing (Debian package prometheus); CI must install it"
        );
        eprintln!("skipped: {program} is not installed (Debian package prometheus)");
    }
    found
}

/// `promtool check metrics` finds nothing to say about `body` (skipped, saying so, without
/// promtool outside CI).
pub(crate) fn promtool_accepts(body: &str) {
    if !have("promtool") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {said}");
    assert!(said.trim().is_empty(), "promtool found problems: {said}");
}

/// A child process killed and reaped through its handle when dropped.
pub(crate) struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then let go for the server to take).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `s` percent-encoded for a query string.
pub(crate) fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping `target` every second, its data and log in `dir`; the handle
/// kills and reaps it when dropped.
pub(crate) fn start_prometheus(dir: &std::path::Path, target: SocketAddr) -> (Reaped, SocketAddr) {
    let port = free_port();
    let prometheus: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: procactor\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    (Reaped(server), prometheus)
}
