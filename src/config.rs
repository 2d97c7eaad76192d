//! Cluster configuration: a builder for code, serde for files.
//!
//! Every setting has a default chosen to work with no configuration; [`ClusterConfig::validate`]
//! runs before any process starts and names the field it rejects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{DEFAULT_MAX_FRAME_BYTES, HEADER_LEN};
use crate::error::ConfigError;
mod group;
mod program;
mod ready;
pub(crate) mod restart;

pub use group::GroupConfig;
pub(crate) use program::resolve_program;
pub use program::Program;
pub(crate) use ready::HttpTarget;
pub use ready::Readiness;

pub use restart::{Backoff, Escalation, Intensity, RestartPolicy, RestartType, Strategy};

/// The name of a cluster's only group when it was not given groups.
pub const DEFAULT_GROUP: &str = "workers";

/// The environment variable in which every process the master starts (a worker or a plain
/// program) finds the cluster's shutdown timeout, in milliseconds: how long it has, once told to
/// stop (`Shutdown`, or SIGTERM for a plain program), before the master kills it.
pub(crate) const SHUTDOWN_TIMEOUT_ENV: &str = "PROCACTOR_SHUTDOWN_TIMEOUT_MS";

/// The environment variable in which a plain program finds its slot's id (a worker's is
/// `PROCACTOR_WORKER_ID`, whose presence makes [`is_worker`](crate::is_worker) true: a
/// procactor program run as a plain one must not take itself for a worker).
pub(crate) const INSTANCE_ENV: &str = "PROCACTOR_INSTANCE";

/// How a cluster's workers are started and talked to.
///
/// ```
/// use std::time::Duration;
/// use procactor::ClusterConfig;
///
/// let config = ClusterConfig::new()
///     .workers(4)
///     .env("RUST_LOG", "info")
///     .shutdown_timeout(Duration::from_secs(2));
/// assert_eq!(config.worker_count(), 4);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Number of workers; `None` starts one per CPU.
    pub workers: Option<usize>,
    /// The program workers run; `None` re-runs this executable in worker role.
    pub exec: Option<PathBuf>,
    /// The workers' arguments; `None` passes none to `exec`, or this process's own arguments
    /// when re-running this executable.
    pub args: Option<Vec<String>>,
    /// Environment added for every worker, on top of the master's.
    pub env: Vec<(String, String)>,
    /// The directory the workers' processes run in; `None` (the default) is the master's. A
    /// relative one is taken from the master's working directory when the cluster starts, and
    /// a relative `exec` with a `/` (`./server`) is found in it.
    pub cwd: Option<PathBuf>,
    /// How long a worker has to exit after `Shutdown` before it is killed.
    #[serde(rename = "shutdown_timeout_ms", with = "crate::millis::duration")]
    pub shutdown_timeout: Duration,
    /// How long a worker has to become ready when the cluster starts.
    #[serde(rename = "ready_timeout_ms", with = "crate::millis::duration")]
    pub ready_timeout: Duration,
    /// Largest frame body accepted from or sent to a worker.
    pub max_frame_bytes: usize,
    /// Bytes that may wait to be written to one worker before senders are refused.
    pub max_outbox_bytes: usize,
    /// Requests one worker process may have waiting for answers (asks, system and cache
    /// operations, acknowledged sends), and messages it may have waiting for the master's
    /// `on_message` handlers; at this many, the master reads nothing more from that worker until
    /// some are done (nothing is dropped; only that worker waits).
    pub max_worker_pending: usize,
    /// Size the worker's pipes are raised to (best effort; 0 keeps the OS default).
    pub pipe_buffer_bytes: usize,
    /// Capacity of each worker proxy's actix mailbox.
    pub mailbox_capacity: usize,
    /// How often a ready worker is pinged; zero turns heartbeats off.
    #[serde(rename = "heartbeat_interval_ms", with = "crate::millis::duration")]
    pub heartbeat_interval: Duration,
    /// Pings in a row a worker may leave unanswered before it is killed as hung.
    pub heartbeat_misses: u32,
    /// Whether the cluster handles SIGTERM and SIGINT (graceful stop) and SIGHUP.
    pub handle_signals: bool,
    /// What happens when a worker exits: restart type, strategy, intensity, backoff, escalation.
    pub restart: RestartPolicy,
    /// Listening sockets bound by the master and handed to every worker: (name, address), where
    /// an address is `host:port` or `unix:/path`.
    pub listen: Vec<(String, String)>,
    /// The permissions of the socket files of `unix:` listeners (default `0o600`: the
    /// master's user only), set before the path appears, whatever the umask.
    pub unix_socket_mode: u32,
    /// The pause between two workers of a rolling reload.
    #[serde(rename = "reload_delay_ms", with = "crate::millis::duration")]
    pub reload_delay: Duration,
    /// Whether workers may ask for a rolling reload of the cluster (off by default).
    pub worker_reload: bool,
    /// Whether workers may kill or restart other workers (off by default).
    pub worker_control: bool,
    /// The shared cache: collection limits and snapshot.
    pub cache: crate::cache::CacheConfig,
    /// The cluster's logs: directory, rotation, kinds, levels.
    pub log: crate::logger::LogConfig,
    /// Which CPUs the workers run on (default: the master's).
    pub affinity: Affinity,
    /// The program is not a procactor worker (any program, supervised as PM2 would): it gets no
    /// messages, is ready as `ready` says, has its stdout logged like its stderr, and is
    /// stopped with SIGTERM.
    pub plain: bool,
    /// When a plain program counts as ready (default: once it runs).
    pub ready: Readiness,
    /// systemd's watchdog for a plain program: once ready, it must send `WATCHDOG=1` to its
    /// `NOTIFY_SOCKET` at least this often, or be killed; `None` (the default) is off.
    #[serde(rename = "watchdog_ms", with = "crate::millis::opt_millis")]
    pub watchdog: Option<Duration>,
    /// Where the master serves `GET /metrics` for Prometheus (`host:port`; port 0 picks a free
    /// one, see [`Cluster::metrics_addr`](crate::Cluster::metrics_addr)); `None` (the default)
    /// serves nothing and times no request.
    pub metrics: Option<String>,
    /// Where a cluster that spans hosts meets (see [`backend`](crate::backend)); `None` (the
    /// default) keeps the cluster on this host, with nothing of the backend running.
    pub backend: Option<crate::backend::Backend>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            workers: None,
            exec: None,
            args: None,
            env: Vec::new(),
            cwd: None,
            shutdown_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_outbox_bytes: 64 * 1024 * 1024,
            max_worker_pending: 1024,
            pipe_buffer_bytes: 1024 * 1024,
            mailbox_capacity: 4096,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_misses: 3,
            handle_signals: true,
            restart: RestartPolicy::default(),
            listen: Vec::new(),
            unix_socket_mode: 0o600,
            reload_delay: Duration::ZERO,
            worker_reload: false,
            worker_control: false,
            cache: crate::cache::CacheConfig::default(),
            log: crate::logger::LogConfig::default(),
            plain: false,
            ready: Readiness::default(),
            watchdog: None,
            affinity: Affinity::Inherit,
            metrics: None,
            backend: None,
        }
    }
}

impl ClusterConfig {
    /// The defaults: one worker per CPU, running this executable in worker role.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of workers (default: one per CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `program` as the worker instead of re-running the current executable (Node's
    /// `setupMaster({ exec })`). A bare name is looked up in `PATH`.
    pub fn exec(mut self, program: impl Into<PathBuf>) -> Self {
        self.exec = Some(program.into());
        self
    }

    /// The worker's arguments (default: none for [`exec`](Self::exec), otherwise this process's
    /// own arguments, as Node's cluster does).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an environment variable for every worker (on top of the master's own environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The directory the workers' processes run in (default: the master's). A relative `dir` is
    /// taken from the master's working directory when the cluster starts; a relative program
    /// with a `/` in it (`exec("./server")`) is found in `dir`, as a shell started there would
    /// find it. [`validate`](Self::validate) refuses a `dir` that is not a directory.
    ///
    /// ```
    /// use procactor::ClusterConfig;
    ///
    /// let config = ClusterConfig::new().exec("./run.sh").cwd("/srv/app").plain(true);
    /// assert_eq!(config.cwd.as_deref(), Some(std::path::Path::new("/srv/app")));
    /// ```
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// How long a worker has to exit after `Shutdown` before it is killed (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a worker has to become ready when the cluster starts (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Largest frame body accepted from or sent to a worker (default 16 MiB).
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Bytes that may wait to be written to one worker before senders get
    /// [`CallError::Backpressure`](crate::CallError::Backpressure) (default 64 MiB). Awaiting
    /// senders of one-way messages are already held back at a sixteenth of it.
    pub fn max_outbox_bytes(mut self, bytes: usize) -> Self {
        self.max_outbox_bytes = bytes;
        self
    }

    /// Requests one worker process may have waiting for answers, and messages it may have
    /// waiting for the master's `on_message` handlers (default 1024); at this many the master
    /// reads nothing more from that worker until some are done. Nothing is dropped, and only
    /// that worker waits.
    pub fn max_worker_pending(mut self, n: usize) -> Self {
        self.max_worker_pending = n;
        self
    }

    /// Size the worker's pipes are raised to (default 1 MiB, best effort; 0 keeps the OS default).
    pub fn pipe_buffer_bytes(mut self, bytes: usize) -> Self {
        self.pipe_buffer_bytes = bytes;
        self
    }

    /// Capacity of each worker proxy's actix mailbox (default 4096).
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = n;
        self
    }

    /// How often a ready worker is pinged (default 2 s; zero turns heartbeats off). A worker is
    /// pinged by the runtime, not by its handlers, so one awaiting a long handler still answers.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Unanswered pings in a row before a worker is killed as hung (default 3).
    pub fn heartbeat_misses(mut self, misses: u32) -> Self {
        self.heartbeat_misses = misses;
        self
    }

    /// Whether the cluster stops gracefully on SIGTERM and SIGINT (default true). Turn it off
    /// when the program handles signals itself.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// The restart policy (default: permanent, one_for_one, 5 restarts in 30 s, backoff from
    /// 100 ms doubling to 10 s, stop the cluster when the intensity is exceeded).
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// The pause between two workers of a rolling reload (default none).
    pub fn reload_delay(mut self, delay: Duration) -> Self {
        self.reload_delay = delay;
        self
    }

    /// Lets workers ask for a rolling reload of the cluster with
    /// [`WorkerContext::request_reload`](crate::WorkerContext::request_reload) (default off).
    pub fn worker_reload(mut self, on: bool) -> Self {
        self.worker_reload = on;
        self
    }

    /// Lets workers kill and restart other workers with
    /// [`WorkerHandle::kill_worker`](crate::WorkerHandle::kill_worker) and
    /// [`WorkerHandle::restart_worker`](crate::WorkerHandle::restart_worker) (default off).
    pub fn worker_control(mut self, on: bool) -> Self {
        self.worker_control = on;
        self
    }

    /// The shared cache's limits and snapshot (default: unbounded, in memory only).
    pub fn cache(mut self, cache: crate::cache::CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// Where and how the cluster's logs are kept (default: JSON lines per kind in `./logs`,
    /// 10 MiB × 5 per kind, and the master's `tracing` output).
    pub fn log(mut self, log: crate::logger::LogConfig) -> Self {
        self.log = log;
        self
    }

    /// Which CPUs the workers run on (default: those the master may run on), applied when each
    /// process starts (taskset, in clustr-node's terms).
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = affinity;
        self
    }

    /// Runs `exec` as a plain program, not a procactor worker (default off): it takes no
    /// messages, counts as ready as [`ready`](Self::ready) says (by default once it runs), has
    /// its stdout logged like its stderr, and is stopped with SIGTERM, then SIGKILL after the
    /// shutdown timeout. Listening sockets reach it by socket activation (`LISTEN_FDS`), so a
    /// program that understands it serves on them; its slot's id is in `PROCACTOR_INSTANCE`.
    pub fn plain(mut self, on: bool) -> Self {
        self.plain = on;
        self
    }

    /// When a plain program counts as ready (default [`Readiness::Spawn`] with no
    /// `min_uptime`: once it runs). A rolling reload stops an old process once its
    /// replacement is ready, so a sign that proves the new version works — systemd's
    /// `READY=1` ([`Readiness::Notify`]), a probe, or a minimum uptime — makes a broken
    /// version fail the reload while the old processes go on serving. The
    /// [`ready_timeout`](Self::ready_timeout) applies. Plain programs only.
    pub fn ready(mut self, ready: Readiness) -> Self {
        self.ready = ready;
        self
    }

    /// systemd's watchdog (`WatchdogSec=`) for a plain program (default off): it finds `period`
    /// in `WATCHDOG_USEC` (microseconds) and its own pid in `WATCHDOG_PID`, and a
    /// notification socket in `NOTIFY_SOCKET` whatever [`ready`](Self::ready) says. From the
    /// moment it is ready, each `WATCHDOG=1` it sends there starts the period again; a period
    /// without one and the master kills it
    /// ([`ExitReason::WatchdogTimeout`](crate::ExitReason::WatchdogTimeout)), and the restart
    /// policy decides what follows, as for a crash. Programs usually ping every half period
    /// (`sd_watchdog_enabled(3)`). Plain programs only; a worker has heartbeats.
    pub fn watchdog(mut self, period: Duration) -> Self {
        self.watchdog = Some(period);
        self
    }

    /// Serves the cluster's metrics at `http://ADDR/metrics` in the Prometheus text format, or
    /// OpenMetrics when the scraper asks for it (`addr` is `host:port`; port 0 picks a free
    /// one). The endpoint runs on the master and reads its state at each scrape; see
    /// [`metrics`](crate::metrics) for the names. Off by default.
    pub fn metrics(mut self, addr: impl Into<String>) -> Self {
        self.metrics = Some(addr.into());
        self
    }

    /// Joins the cluster that `backend` names, with every master configured alike, on this
    /// host or others (see [`backend`](crate::backend)). Off by default.
    pub fn backend(mut self, backend: impl Into<crate::backend::Backend>) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Adds a listening socket, bound once by the master when the cluster starts and handed to
    /// every worker, which gets it with [`WorkerContext::listener`](crate::WorkerContext::listener)
    /// (`name`). `addr` is `host:port` (port 0 picks a free one; see
    /// [`Cluster::local_addr`](crate::Cluster::local_addr)) or `unix:/path`.
    pub fn listen(mut self, name: impl Into<String>, addr: impl Into<String>) -> Self {
        self.listen.push((name.into(), addr.into()));
        self
    }

    /// The permissions of `unix:` listeners' socket files (default `0o600`).
    pub fn unix_socket_mode(mut self, mode: u32) -> Self {
        self.unix_socket_mode = mode;
        self
    }

    /// The number of workers this configuration starts.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
    }

    /// Checks every setting; [`ClusterSupervisor::start`](crate::ClusterSupervisor::start) calls
    /// it before starting anything.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field that is out of range, or an `exec` program that
    /// does not exist or is not executable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if self.workers == Some(0) {
            return bad("workers", "must be at least 1".into());
        }
        if self.max_frame_bytes < 64 || self.max_frame_bytes > u32::MAX as usize {
            return bad(
                "max_frame_bytes",
                format!("{} is outside 64 ..= {}", self.max_frame_bytes, u32::MAX),
            );
        }
        if self.max_outbox_bytes < self.max_frame_bytes + HEADER_LEN {
            return bad(
                "max_outbox_bytes",
                format!(
                    "{} cannot hold one frame of max_frame_bytes ({})",
                    self.max_outbox_bytes, self.max_frame_bytes
                ),
            );
        }
        if self.heartbeat_misses == 0 {
            return bad("heartbeat_misses", "must be at least 1".into());
        }
        if self.mailbox_capacity == 0 {
            return bad("mailbox_capacity", "must be at least 1".into());
        }
        if self.max_worker_pending == 0 {
            return bad("max_worker_pending", "must be at least 1".into());
        }
        if let Some(addr) = &self.metrics {
            let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return bad("metrics", format!("{addr:?} is not host:port"));
            }
        }
        program::check(self.exec.as_deref(), self.cwd.as_deref())?;
        if let Err(reason) = self.affinity.check() {
            return bad("affinity", reason);
        }
        if self.plain && self.exec.is_none() {
            return bad(
                "plain",
                "a plain program needs exec: this executable is a procactor worker".into(),
            );
        }
        self.validate_listen()?;
        ready::check(self)?;
        for (key, _) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return bad("env", format!("{key:?} is not a valid variable name"));
            }
        }
        self.validate_snapshot()?;
        if let Some(backend) = &self.backend {
            backend.validate()?;
        }
        Ok(())
    }

    fn validate_listen(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        let mut names = std::collections::HashSet::new();
        for (name, addr) in &self.listen {
            if name.is_empty() || name.contains(':') || !names.insert(name) {
                return bad(
                    "listen",
                    format!("{name:?}: names must be unique, non-empty and without ':'"),
                );
            }
            if let Err(e) = addr.parse::<crate::listen::ListenAddr>() {
                return bad("listen", format!("{name}: {e}"));
            }
        }
        Ok(())
    }

    fn validate_snapshot(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if let Some(path) = &self.cache.snapshot {
            // Refused now rather than the cache lost at stop, when the write fails.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return bad(
                    "cache",
                    format!(
                        "snapshot {}: the directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Which CPUs a cluster's workers run on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Affinity {
    /// The CPUs the master may run on.
    #[default]
    Inherit,
    /// Every worker on this set of CPUs.
    Cpus(Vec<usize>),
    /// Worker `i` on one CPU: the `i`-th of those the master may run on, round robin.
    OnePerWorker,
}

impl Affinity {
    /// The CPUs worker `id` is pinned to; empty: not pinned.
    pub(crate) fn cpus_for(&self, id: usize) -> Vec<usize> {
        match self {
            Affinity::Inherit => Vec::new(),
            Affinity::Cpus(cpus) => cpus.clone(),
            Affinity::OnePerWorker => {
                let allowed = allowed_cpus();
                match allowed.len() {
                    0 => Vec::new(),
                    n => vec![allowed[id % n]],
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let Affinity::Cpus(cpus) = self else {
            return Ok(());
        };
        if cpus.is_empty() {
            return Err("an empty CPU list: use Affinity::Inherit".into());
        }
        let online = online_cpus();
        match cpus.iter().find(|cpu| !online.contains(cpu)) {
            Some(cpu) => Err(format!(
                "CPU {cpu} does not exist here (online: {online:?})"
            )),
            None => Ok(()),
        }
    }
}

/// The CPUs online on this machine (`/sys/devices/system/cpu/online`, e.g. `0-3,6`), or, if
/// that cannot be read, those this thread may run on.
fn online_cpus() -> Vec<usize> {
    let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/online") else {
        return allowed_cpus();
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last);
        }
    }
    cpus
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        ClusterConfig::new().validate().unwrap();
        assert!(ClusterConfig::new().worker_count() >= 1);
    }

    #[test]
    fn each_bad_setting_names_its_field() {
        let cases = [
            (ClusterConfig::new().workers(0), "workers"),
            (ClusterConfig::new().max_frame_bytes(10), "max_frame_bytes"),
            (
                ClusterConfig::new().max_outbox_bytes(1000),
                "max_outbox_bytes",
            ),
            (ClusterConfig::new().mailbox_capacity(0), "mailbox_capacity"),
            (
                ClusterConfig::new().max_worker_pending(0),
                "max_worker_pending",
            ),
            (ClusterConfig::new().exec("/no/such/program"), "exec"),
            (ClusterConfig::new().exec("/tmp"), "exec"),
            (ClusterConfig::new().cwd("/no/such/dir"), "cwd"),
            (ClusterConfig::new().cwd("/bin/sh"), "cwd"),
            (ClusterConfig::new().env("A=B", "c"), "env"),
            (ClusterConfig::new().listen("a:b", "127.0.0.1:0"), "listen"),
            (
                ClusterConfig::new()
                    .listen("http", "127.0.0.1:0")
                    .listen("http", "127.0.0.1:0"),
                "listen",
            ),
            (ClusterConfig::new().listen("http", "nowhere"), "listen"),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn a_snapshot_in_a_missing_directory_is_refused_naming_the_path() {
        let mut config = ClusterConfig::new();
        config.cache.snapshot = Some("/no/such/dir/cache.snap".into());
        let e = config.validate().unwrap_err();
        assert_eq!(e.field, "cache");
        assert!(e.reason.contains("/no/such/dir/cache.snap"), "{}", e.reason);
        config.cache.snapshot = Some(std::env::temp_dir().join("cache.snap"));
        assert!(config.validate().is_ok());
        config.cache.snapshot = Some("cache.snap".into());
        assert!(
            config.validate().is_ok(),
            "a bare name is in the working directory"
        );
    }
}
