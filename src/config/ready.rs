//! When a plain program counts as ready, and its watchdog.
//!
//! A procactor worker says `Ready` itself and answers heartbeats; a plain program (any program,
//! [`ClusterConfig::plain`]) says nothing on its pipes, so the master needs another sign. The
//! choice matters most in a rolling reload: the old process is stopped once its replacement is
//! ready, so a sign that comes too early lets a broken version replace a working one.
//!
//! Limit: a probe proves little (see [`Readiness`]); `Notify` proves each process.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ClusterConfig;
use crate::error::ConfigError;
use crate::listen::ListenAddr;

/// When a plain program ([`ClusterConfig::plain`]) counts as ready: it then serves its slot,
/// the cluster's start returns, and in a rolling reload its predecessor is stopped. A process
/// that exits before it is ready is a failed start (a failed replacement in a reload: the old
/// process goes on serving), and so is one not ready within
/// [`ClusterConfig::ready_timeout`], which the master kills
/// ([`ExitReason::ReadyTimeout`](crate::ExitReason::ReadyTimeout)).
///
/// What a probe ([`Tcp`](Self::Tcp), [`Http`](Self::Http)) proves: every process of the
/// cluster is probed at the same address, and an answer shows only that *something* answers
/// there. That proves a process ready when nothing else can answer: a cluster of one process,
/// started or restarted after an exit. It proves nothing for a replacement in a rolling reload
/// (the old process still runs), nor for an address the cluster listens on (the master's
/// socket accepts connections into its backlog before any process does), which
/// [`validate`](ClusterConfig::validate) refuses. [`Notify`](Self::Notify) proves each process.
///
/// ```
/// use std::time::Duration;
/// use procactor::{ClusterConfig, Readiness};
///
/// let config = ClusterConfig::new()
///     .exec("sh")
///     .args(["server.sh"])
///     .plain(true)
///     .listen("http", "127.0.0.1:8080")
///     .ready(Readiness::Notify);
/// config.validate().unwrap();
///
/// // Probing the shared port proves nothing: refused.
/// let probe = config.clone().ready(Readiness::Tcp("127.0.0.1:8080".parse().unwrap()));
/// assert_eq!(probe.validate().unwrap_err().field, "ready");
///
/// let spawn = Readiness::Spawn { min_uptime: Duration::from_secs(1) };
/// config.ready(spawn).validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Readiness {
    /// Ready once it has run for `min_uptime`; one that exits sooner failed to start. The
    /// default, with a `min_uptime` of zero: ready as soon as it runs.
    Spawn {
        /// How long it must have run (zero: ready at once). Must be shorter than the ready
        /// timeout.
        #[serde(rename = "min_uptime_ms", with = "crate::millis::duration", default)]
        min_uptime: Duration,
    },
    /// systemd's notification protocol (`sd_notify(3)`): each process gets a datagram socket
    /// of its own, in a directory only the master's user may enter, named in its
    /// `NOTIFY_SOCKET`; it is ready once it sends `READY=1` there. `STATUS=…` is kept (see
    /// [`Cluster::notify_status`](crate::Cluster::notify_status)), `WATCHDOG=1` feeds the
    /// [watchdog](ClusterConfig::watchdog); other assignments are ignored. A datagram is at
    /// most 4096 bytes, of `KEY=VALUE` lines in UTF-8: anything else is counted and dropped.
    Notify,
    /// Ready once a TCP connection to this address succeeds (probed every 100 ms).
    Tcp(SocketAddr),
    /// Ready once `GET` of this `http://host[:port]/path` URL answers with a status from 200
    /// to 399 (probed every 100 ms; plain HTTP/1.1, no TLS).
    Http(String),
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::Spawn {
            min_uptime: Duration::ZERO,
        }
    }
}

impl Readiness {
    /// Whether a process is ready as soon as it runs (the default).
    pub(crate) fn at_spawn(&self) -> bool {
        matches!(self, Readiness::Spawn { min_uptime } if min_uptime.is_zero())
    }
}

/// Where an [`Readiness::Http`] probe connects, and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    /// The host to connect to (brackets of an IPv6 address removed).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header: the URL's authority as written.
    pub(crate) authority: String,
    /// The request target: the URL's path and query (`/` when it has none).
    pub(crate) path: String,
}

impl HttpTarget {
    /// Reads `http://host[:port][/path]`; a name, an IPv4 address or a bracketed IPv6 one.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let scheme = url.get(..7).filter(|s| s.eq_ignore_ascii_case("http://"));
        let rest = match scheme {
            Some(_) => &url[7..],
            None => return Err(format!("{url:?} is not an http:// URL (no TLS)")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or_default();
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        let bad = |why: &str| Err(format!("{url:?}: {why}"));
        if authority.contains('@') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return bad("no user info, spaces or control characters");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => match port.parse::<u16>() {
                Ok(port) => (host, port),
                Err(_) => return bad("the port is not a number up to 65535"),
            },
            _ => (authority, 80),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return bad("not an IPv6 address between the brackets"),
            None => host,
        };
        if host.is_empty() || port == 0 {
            return bad("no host, or port 0");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// Checks `ready` and `watchdog` against the rest of `config` (see [`ClusterConfig::validate`]).
pub(super) fn check(config: &ClusterConfig) -> Result<(), ConfigError> {
    let bad = |field, reason: String| Err(ConfigError { field, reason });
    let plain_only = "applies to plain programs only: a procactor worker says when it is ready \
                      and answers heartbeats";
    if !config.plain && config.ready != Readiness::default() {
        return bad("ready", plain_only.into());
    }
    if let Some(period) = config.watchdog {
        if !config.plain {
            return bad("watchdog", plain_only.into());
        }
        if period.is_zero() {
            return bad("watchdog", "must be longer than zero".into());
        }
    }
    let probed = match &config.ready {
        Readiness::Spawn { min_uptime } if *min_uptime >= config.ready_timeout => {
            return bad(
                "ready",
                format!(
                    "min_uptime {min_uptime:?} must be shorter than ready_timeout {:?}",
                    config.ready_timeout
                ),
            );
        }
        Readiness::Spawn { .. } | Readiness::Notify => return Ok(()),
        Readiness::Tcp(addr) if addr.port() == 0 => {
            return bad("ready", format!("cannot probe {addr}: port 0"));
        }
        Readiness::Tcp(addr) => (addr.ip().to_string(), addr.port()),
        Readiness::Http(url) => match HttpTarget::parse(url) {
            Ok(target) => (target.host, target.port),
            Err(reason) => return bad("ready", reason),
        },
    };
    if let Some(name) = listener_at(&probed.0, probed.1, &config.listen) {
        return bad(
            "ready",
            format!(
                "the probe of {}:{} reaches the cluster's listener {name:?}, which answers \
                 before any process does (its backlog): it would prove nothing; probe an \
                 address only the program serves, or use Readiness::Notify",
                probed.0, probed.1
            ),
        );
    }
    Ok(())
}

/// The name of the TCP listener of `listen` that a connection to `host:port` may reach: same
/// port, and the same address, either one unspecified (`0.0.0.0`), both loopback, or a host
/// name (which may resolve to any of them).
fn listener_at<'a>(host: &str, port: u16, listen: &'a [(String, String)]) -> Option<&'a str> {
    let ip = host.parse::<IpAddr>().ok();
    listen.iter().find_map(|(name, addr)| {
        let Ok(ListenAddr::Tcp(bound)) = addr.parse::<ListenAddr>() else {
            return None;
        };
        let same = match ip {
            _ if bound.port() != port => false,
            None => true,
            Some(ip) => {
                ip == bound.ip()
                    || ip.is_unspecified()
                    || bound.ip().is_unspecified()
                    || (ip.is_loopback() && bound.ip().is_loopback())
            }
        };
        same.then_some(name.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> ClusterConfig {
        ClusterConfig::new().exec("sh").plain(true)
    }

    #[test]
    fn http_urls_are_read_into_host_port_and_path() {
        let t = HttpTarget::parse("http://127.0.0.1:8081/health?deep=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8081));
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8081", "/health?deep=1")
        );
        let t = HttpTarget::parse("HTTP://localhost").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 80, "/")
        );
        let t = HttpTarget::parse("http://[::1]:9000?x#frag").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9000, "/?x")
        );
        assert_eq!(t.authority, "[::1]:9000");
        for bad in [
            "https://localhost/",
            "localhost:80",
            "http://:80/",
            "http://host:0/",
            "http://host:99999/",
            "http://user@host/",
            "http://[nope]:80/",
            "http://host/a b",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_probe_of_the_shared_port_is_refused() {
        let config = plain().listen("http", "0.0.0.0:8080");
        for ready in [
            Readiness::Tcp("127.0.0.1:8080".parse().unwrap()),
            Readiness::Http("http://localhost:8080/health".into()),
            Readiness::Http("http://10.1.2.3:8080/".into()),
        ] {
            let e = config.clone().ready(ready.clone()).validate().unwrap_err();
            assert_eq!(e.field, "ready", "{ready:?}");
            assert!(e.reason.contains("\"http\""), "{}", e.reason);
        }
        let loopback = plain().listen("http", "127.0.0.1:8080");
        let e = loopback
            .clone()
            .ready(Readiness::Tcp("[::1]:8080".parse().unwrap()));
        assert_eq!(e.validate().unwrap_err().field, "ready");
        // Another port, or another address of the same port, is the program's own.
        loopback
            .clone()
            .ready(Readiness::Tcp("127.0.0.1:9090".parse().unwrap()))
            .validate()
            .unwrap();
        loopback
            .ready(Readiness::Tcp("10.0.0.1:8080".parse().unwrap()))
            .validate()
            .unwrap();
    }

    #[test]
    fn readiness_and_watchdog_are_checked() {
        let cases = [
            (ClusterConfig::new().ready(Readiness::Notify), "ready"),
            (
                ClusterConfig::new().watchdog(Duration::from_secs(1)),
                "watchdog",
            ),
            (plain().watchdog(Duration::ZERO), "watchdog"),
            (
                plain()
                    .ready_timeout(Duration::from_secs(2))
                    .ready(Readiness::Spawn {
                        min_uptime: Duration::from_secs(2),
                    }),
                "ready",
            ),
            (
                plain().ready(Readiness::Tcp("127.0.0.1:0".parse().unwrap())),
                "ready",
            ),
            (plain().ready(Readiness::Http("ftp://x/".into())), "ready"),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field, field, "{config:?}");
        }
        plain()
            .ready(Readiness::Notify)
            .watchdog(Duration::from_secs(1))
            .validate()
            .unwrap();
        plain().watchdog(Duration::from_secs(1)).validate().unwrap();
        assert!(Readiness::default().at_spawn());
        assert!(!Readiness::Spawn {
            min_uptime: Duration::from_millis(1)
        }
        .at_spawn());
    }

    #[test]
    fn readiness_reads_from_serde() {
        let ready: Readiness = serde_json::from_str(r#"{"spawn":{"min_uptime_ms":1500}}"#).unwrap();
        assert_eq!(
            ready,
            Readiness::Spawn {
                min_uptime: Duration::from_millis(1500)
            }
        );
        let ready: Readiness = serde_json::from_str(r#""notify""#).unwrap();
        assert_eq!(ready, Readiness::Notify);
        let ready: Readiness = serde_json::from_str(r#"{"tcp":"127.0.0.1:9"}"#).unwrap();
        assert_eq!(ready, Readiness::Tcp("127.0.0.1:9".parse().unwrap()));
    }
}
