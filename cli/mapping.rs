//! From one app of the file to the library's settings: the one place where `procactor.toml`
//! meets [`ClusterConfig`].
//!
//! Why one cluster per app: `listen`, readiness and logs are cluster-wide in the library, and a
//! cluster's groups are fixed when it starts, so an app of its own cluster gets only its own
//! sockets at fds 3…, and `apply` can add or drop an app without touching the others. The
//! cluster's single group is named after the app, so the library's records and metrics label
//! it by the app's name.
//!
//! Every app is a plain program (`plain`: no procactor protocol, SIGTERM to stop), leaves
//! signals to the daemon, and fails alone: when its restart limit is exceeded its group is
//! marked failed (`Escalation::FailGroup`) while the daemon and the other apps go on.
//!
//! Limits: a bare command is found on the daemon's `PATH` when the cluster starts; an `http`
//! liveness probe has no library counterpart: the daemon runs it (`daemon/liveness.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use procactor::logger::LogConfig;
use std::net::ToSocketAddrs;

use procactor::{
    Backoff, ClusterConfig, Escalation, GroupConfig, Intensity, Readiness, RestartPolicy,
    RestartType,
};

use crate::file::{AppSpec, Instances, RestartOn};

/// The working directory of `app`: its `cwd` against the file's directory, or that directory.
pub(crate) fn working_dir(app: &AppSpec, file_dir: &Path) -> PathBuf {
    match &app.cwd {
        Some(cwd) => file_dir.join(cwd),
        None => file_dir.to_path_buf(),
    }
}

/// The program `app` runs: a bare name as written (found on `PATH` at start), a path with a `/`
/// taken from the app's working directory.
pub(crate) fn program(app: &AppSpec, cwd: &Path) -> PathBuf {
    let command = Path::new(app.command.get_ref());
    if command.components().count() > 1 {
        cwd.join(command)
    } else {
        command.to_path_buf()
    }
}

/// The cluster and group settings of the app `name`, whose file is in `file_dir` and whose
/// logs go to `log_dir`.
///
/// # Errors
/// A setting the library cannot take: a `tcp` readiness address that does not resolve.
pub(crate) fn cluster_config(
    name: &str,
    app: &AppSpec,
    file_dir: &Path,
    log_dir: &Path,
) -> Result<(ClusterConfig, GroupConfig), String> {
    let cwd = working_dir(app, file_dir);
    let mut config = ClusterConfig::new()
        .plain(true)
        .handle_signals(false)
        .reload_delay(Duration::ZERO)
        .exec(program(app, &cwd))
        .args(app.args.iter().cloned())
        .restart(restart_policy(app))
        .log(log_config(app, log_dir));
    if let Instances::Count(n) = app.instances {
        config = config.workers(n); // "auto": the library's default, one per CPU
    }
    for (key, value) in &app.env {
        config = config.env(key.get_ref(), value);
    }
    for (socket, addr) in &app.listen {
        config = config.listen(socket, addr.get_ref());
    }
    if let Some(timeout) = app.ready_timeout {
        config = config.ready_timeout(timeout.0);
    }
    if let Some(timeout) = app.shutdown_timeout {
        config = config.shutdown_timeout(timeout.0);
    }
    let mut config = config.cwd(&cwd).ready(readiness(app)?);
    // An `http` liveness probe is the daemon's (`daemon/liveness.rs`), not the library's.
    if let Some(watchdog) = app.liveness.as_ref().and_then(|l| l.get_ref().watchdog) {
        config = config.watchdog(watchdog.0);
    }
    Ok((config, GroupConfig::new(name)))
}

/// The library's readiness for `app`'s `ready` (and `min_uptime`).
fn readiness(app: &AppSpec) -> Result<Readiness, String> {
    Ok(match app.readiness() {
        crate::file::Readiness::Spawn => Readiness::Spawn {
            min_uptime: app
                .min_uptime
                .as_ref()
                .map(|d| d.get_ref().0)
                .unwrap_or_default(),
        },
        crate::file::Readiness::Notify => Readiness::Notify,
        crate::file::Readiness::Tcp(addr) => Readiness::Tcp(
            addr.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("ready = {{ tcp = {addr:?} }}: no such address"))?,
        ),
        crate::file::Readiness::Http(url) => Readiness::Http(url.clone()),
    })
}

fn restart_policy(app: &AppSpec) -> RestartPolicy {
    let spec = &app.restart;
    let defaults = RestartPolicy::default();
    RestartPolicy {
        restart: match spec.on {
            RestartOn::Always => RestartType::Permanent,
            RestartOn::OnFailure => RestartType::Transient,
            RestartOn::Never => RestartType::Temporary,
        },
        intensity: Intensity {
            max_restarts: spec.max.unwrap_or(defaults.intensity.max_restarts),
            period: spec.within.map_or(defaults.intensity.period, |d| d.0),
        },
        backoff: match &spec.backoff {
            Some(b) => Backoff {
                floor: b.get_ref().floor.0,
                cap: b.get_ref().cap.0,
                ..Backoff::default()
            },
            None => Backoff::default(),
        },
        escalation: Escalation::FailGroup,
        ..defaults
    }
}

fn log_config(app: &AppSpec, log_dir: &Path) -> LogConfig {
    let defaults = LogConfig::default();
    LogConfig {
        dir: Some(log_dir.to_path_buf()),
        max_bytes: app.log.max_bytes.unwrap_or(defaults.max_bytes),
        keep: app.log.keep.unwrap_or(defaults.keep),
        // The daemon's own output is not a second copy of every app's.
        tracing: false,
        ..defaults
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;

    fn map(text: &str) -> (ClusterConfig, GroupConfig) {
        let file = parse(text, Path::new("/srv/procactor.toml")).unwrap();
        let (name, app) = file.apps.first().unwrap();
        cluster_config(
            name.get_ref(),
            app,
            Path::new("/srv"),
            Path::new("/state/logs/web"),
        )
        .unwrap()
    }

    #[test]
    fn every_mapped_key_reaches_the_cluster_config() {
        let (config, group) = map(r#"[apps.web]
command = "bin/server"
args = ["--port", "fd"]
cwd = "web"
env = { GREETING = "hi" }
instances = 3
listen = { http = "127.0.0.1:8080", admin = "unix:/tmp/a.sock" }
ready_timeout = "7s"
shutdown_timeout = "2s"
restart = { on = "on-failure", max = 9, within = "1m", backoff = { floor = "10ms", cap = "1s" } }
log = { max_bytes = 4096, keep = 3 }
"#);
        assert_eq!(group.name, "web");
        assert!(config.plain && !config.handle_signals);
        assert_eq!(
            config.exec.as_deref(),
            Some(Path::new("/srv/web/bin/server"))
        );
        assert_eq!(
            config.args.as_deref(),
            Some(&["--port".to_string(), "fd".into()][..])
        );
        assert_eq!(config.env, [("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(config.workers, Some(3));
        let listen: Vec<_> = config
            .listen
            .iter()
            .map(|(n, a)| (n.as_str(), a.as_str()))
            .collect();
        assert_eq!(
            listen,
            [("http", "127.0.0.1:8080"), ("admin", "unix:/tmp/a.sock")]
        );
        assert_eq!(config.ready_timeout, Duration::from_secs(7));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(config.reload_delay, Duration::ZERO);
        let policy = config.restart;
        assert_eq!(policy.restart, RestartType::Transient);
        assert_eq!(
            (policy.intensity.max_restarts, policy.intensity.period),
            (9, Duration::from_secs(60))
        );
        assert_eq!(
            (policy.backoff.floor, policy.backoff.cap),
            (Duration::from_millis(10), Duration::from_secs(1))
        );
        assert_eq!(policy.escalation, Escalation::FailGroup);
        assert_eq!(
            config.log.dir.as_deref(),
            Some(Path::new("/state/logs/web"))
        );
        assert_eq!(
            (config.log.max_bytes, config.log.keep, config.log.tracing),
            (4096, 3, false)
        );
    }

    #[test]
    fn defaults_are_the_librarys_except_where_an_app_differs() {
        let (config, _) = map("[apps.web]\ncommand = \"python3\"\ninstances = \"auto\"\n");
        assert_eq!(
            config.exec.as_deref(),
            Some(Path::new("python3")),
            "bare: found on PATH"
        );
        assert_eq!(config.workers, None, "auto: one per CPU");
        let library = ClusterConfig::new();
        assert_eq!(config.ready_timeout, library.ready_timeout);
        assert_eq!(config.shutdown_timeout, library.shutdown_timeout);
        let policy = config.restart;
        assert_eq!(policy.restart, RestartType::Permanent);
        assert_eq!(policy.intensity, library.restart.intensity);
        assert_eq!(policy.backoff, library.restart.backoff);
        assert_eq!(
            policy.escalation,
            Escalation::FailGroup,
            "one app's crash loop fails it alone"
        );
        let (never, _) = map("[apps.web]\ncommand = \"x\"\nrestart = { on = \"never\" }\n");
        assert_eq!(never.restart.restart, RestartType::Temporary);
    }

    #[test]
    fn the_working_directory_and_program_follow_the_file() {
        let file = parse(
            "[apps.a]\ncommand = \"./run\"\n[apps.b]\ncommand = \"/usr/bin/env\"\ncwd = \"/opt\"\n",
            Path::new("x"),
        )
        .unwrap();
        let (a, b) = (&file.apps["a"], &file.apps["b"]);
        assert_eq!(working_dir(a, Path::new("/etc/p")), Path::new("/etc/p"));
        assert_eq!(program(a, Path::new("/etc/p")), Path::new("/etc/p/./run"));
        assert_eq!(working_dir(b, Path::new("/etc/p")), Path::new("/opt"));
        assert_eq!(program(b, Path::new("/opt")), Path::new("/usr/bin/env"));
    }
}
