//! The checks serde cannot make: values that are well-typed but unusable, and relations between
//! keys. Each problem carries the span of the key or value it is about, for its line.
//!
//! Why refused rather than warned: each of these would otherwise show up later as a daemon that
//! starts nothing, a reload that cannot fail (a `tcp`/`http` readiness probe on an address the
//! daemon itself listens on is answered by the daemon's backlog, whichever instance is up), or
//! apps that wait for each other forever.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use procactor::ListenAddr;
use toml::Spanned;

use super::{AppSpec, ConfigFile, Readiness};

#[cfg(test)]
mod tests;

/// One problem: where, and what.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

fn problem<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Problem> {
    Err(Problem {
        span,
        message: message.into(),
    })
}

/// The first problem of the file, apps in the order written.
pub(super) fn check(file: &ConfigFile) -> Result<(), Problem> {
    if let Some(metrics) = &file.daemon.metrics {
        if parse_host_port(metrics.get_ref()).is_none() {
            return problem(
                metrics.span(),
                format!("daemon.metrics = {:?} is not host:port", metrics.get_ref()),
            );
        }
    }
    let mut listened: Vec<(&str, SocketAddr)> = Vec::new();
    for (name, app) in &file.apps {
        check_name(name)?;
        check_app(name.get_ref(), app)?;
        for addr in app.listen.values() {
            if let Ok(ListenAddr::Tcp(sock)) = addr.get_ref().parse() {
                if let Some((other, _)) = listened.iter().find(|(_, a)| *a == sock && a.port() != 0)
                {
                    return problem(
                        addr.span(),
                        format!(
                            "{sock} is also in the listen of app {other}: only one can bind it"
                        ),
                    );
                }
                listened.push((name.get_ref(), sock));
            }
        }
    }
    check_dependencies(file)
}

fn check_name(name: &Spanned<String>) -> Result<(), Problem> {
    let n = name.get_ref();
    let valid = n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return problem(
            name.span(),
            format!(
                "app name {n:?}: use up to 64 letters, digits, '_', '-', '.', starting with a \
                 letter or digit"
            ),
        );
    }
    if n == "all" {
        return problem(
            name.span(),
            "app name \"all\" is reserved: `reload all` means every app",
        );
    }
    Ok(())
}

fn check_app(name: &str, app: &AppSpec) -> Result<(), Problem> {
    if app.command.get_ref().trim().is_empty() {
        return problem(app.command.span(), format!("apps.{name}.command is empty"));
    }
    for key in app.env.keys() {
        let k = key.get_ref();
        if k.is_empty() || k.contains(['=', '\0']) {
            return problem(
                key.span(),
                format!("apps.{name}.env: {k:?} is not a valid variable name"),
            );
        }
    }
    for (socket, addr) in &app.listen {
        if socket.is_empty() || socket.contains(':') {
            return problem(
                addr.span(),
                format!("apps.{name}.listen: {socket:?}: a name must be non-empty, without ':'"),
            );
        }
        if let Err(e) = addr.get_ref().parse::<ListenAddr>() {
            return problem(addr.span(), format!("apps.{name}.listen.{socket}: {e}"));
        }
    }
    check_readiness(name, app)?;
    check_liveness(name, app)?;
    if let Some(backoff) = &app.restart.backoff {
        let b = backoff.get_ref();
        if b.floor.0 > b.cap.0 {
            return problem(
                backoff.span(),
                format!("apps.{name}.restart.backoff: floor is above cap"),
            );
        }
    }
    Ok(())
}

fn check_readiness(name: &str, app: &AppSpec) -> Result<(), Problem> {
    if let (Some(min_uptime), false) = (&app.min_uptime, app.readiness() == &Readiness::Spawn) {
        return problem(
            min_uptime.span(),
            format!("apps.{name}.min_uptime applies to ready = \"spawn\" only"),
        );
    }
    let Some(ready) = &app.ready else {
        return Ok(());
    };
    let probe = match ready.get_ref() {
        Readiness::Spawn | Readiness::Notify => return Ok(()),
        Readiness::Tcp(addr) => parse_host_port(addr).ok_or_else(|| Problem {
            span: ready.span(),
            message: format!("apps.{name}.ready.tcp = {addr:?} is not host:port"),
        })?,
        Readiness::Http(url) => http_host_port(url).map_err(|why| Problem {
            span: ready.span(),
            message: format!("apps.{name}.ready.http = {url:?}: {why}"),
        })?,
    };
    for (socket, addr) in &app.listen {
        if let Ok(ListenAddr::Tcp(listen)) = addr.get_ref().parse() {
            if same_endpoint(&probe, listen) {
                return problem(
                    ready.span(),
                    format!(
                        "apps.{name}.ready probes {}:{}, which is listen.{socket}: the daemon \
                         holds that socket, so the probe would pass before any instance is up; \
                         use ready = \"notify\" or an address each instance serves itself",
                        probe.0, probe.1
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_liveness(name: &str, app: &AppSpec) -> Result<(), Problem> {
    let Some(liveness) = &app.liveness else {
        return Ok(());
    };
    let l = liveness.get_ref();
    let bad = |why: String| problem(liveness.span(), format!("apps.{name}.liveness: {why}"));
    match (&l.watchdog, &l.http) {
        (Some(_), Some(_)) | (None, None) => bad("give one of watchdog or http".into()),
        (Some(watchdog), None) if watchdog.0.is_zero() => bad("watchdog must be above 0".into()),
        (Some(_), None) if l.every.is_some() || l.failures.is_some() => {
            bad("every and failures go with http, not watchdog".into())
        }
        // `{instance}` stands for the instance's number (checked as 0).
        (None, Some(url)) if http_host_port(&url.replace("{instance}", "0")).is_err() => {
            bad(format!(
                "http = {url:?}: {}",
                http_host_port(&url.replace("{instance}", "0")).unwrap_err()
            ))
        }
        (None, Some(_)) if l.failures == Some(0) => bad("failures must be at least 1".into()),
        (None, Some(_)) if l.every.is_some_and(|e| e.0.is_zero()) => {
            bad("every must be above 0".into())
        }
        _ => Ok(()),
    }
}

/// `depends_on`: every target exists, and no app waits for itself through others.
fn check_dependencies(file: &ConfigFile) -> Result<(), Problem> {
    let names: Vec<&str> = file.apps.keys().map(|k| k.get_ref().as_str()).collect();
    for (name, app) in &file.apps {
        for (target, _) in app.dependencies() {
            if !names.contains(&target.as_str()) {
                let span = app
                    .depends_on
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_default();
                return problem(
                    span,
                    format!(
                        "apps.{name}.depends_on: there is no app {target:?}",
                        name = name.get_ref()
                    ),
                );
            }
        }
    }
    // Depth-first search from each app in order; a path that comes back to an app on it is a
    // cycle, reported from where it was entered.
    fn visit<'a>(
        file: &'a ConfigFile,
        app: &'a str,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|p| *p == app) {
            let mut cycle = path[at..].to_vec();
            cycle.push(app);
            return Some(cycle);
        }
        path.push(app);
        let spec = file.apps.get(app)?;
        for (target, _) in spec.dependencies() {
            if let Some(cycle) = visit(file, target, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    for name in &names {
        if let Some(cycle) = visit(file, name, &mut Vec::new()) {
            let span = file.apps[cycle[0]]
                .depends_on
                .as_ref()
                .map(Spanned::span)
                .unwrap_or_default();
            return problem(
                span,
                format!("depends_on makes a cycle: {}", cycle.join(" → ")),
            );
        }
    }
    Ok(())
}

/// `host:port` (host a name, an IPv4 address or a bracketed IPv6 one) → (host, port).
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The host and port an `http://` URL reaches.
fn http_host_port(url: &str) -> Result<(String, u16), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "the probe speaks http://, not {}://",
            parsed.scheme()
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err("no host".into()),
    };
    Ok((host, parsed.port_or_known_default().unwrap_or(80)))
}

/// Whether a probe of `host:port` would reach the socket bound at `listen`.
fn same_endpoint((host, port): &(String, u16), listen: SocketAddr) -> bool {
    if *port != listen.port() {
        return false;
    }
    let probe: Option<IpAddr> = host.parse().ok();
    listen.ip().is_unspecified()
        || probe.is_some_and(|ip| ip == listen.ip() || ip.is_unspecified())
        || (host.eq_ignore_ascii_case("localhost") && listen.ip().is_loopback())
}
