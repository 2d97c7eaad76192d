//! The backend's settings: which Redis, which cluster, this node's name and its timings; a
//! builder for code and serde for files, like the rest of [`ClusterConfig`](crate::ClusterConfig).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Where a cluster that spans hosts keeps its shared state: set with
/// [`ClusterConfig::backend`](crate::ClusterConfig::backend). Without one (the default) a
/// cluster is one master on one host and nothing of this module runs.
///
/// ```
/// use std::time::Duration;
/// use procactor::{Backend, ClusterConfig};
///
/// let config = ClusterConfig::new().backend(
///     Backend::redis("redis://127.0.0.1:6379/0")
///         .cluster("shop")
///         .node("web-1")
///         .heartbeat(Duration::from_secs(1))
///         .node_timeout(Duration::from_secs(3)),
/// );
/// config.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backend {
    /// One Redis server, or a primary behind a stable address (Redis Cluster is not supported:
    /// the connection does not follow `MOVED`).
    Redis(RedisBackend),
}

impl Backend {
    /// A Redis backend at `url`: `redis://[user:password@]host:port/db`, or `rediss://…` for
    /// TLS. [`cluster`](RedisBackend::cluster) must be set before the cluster starts.
    pub fn redis(url: impl Into<String>) -> RedisBackend {
        RedisBackend {
            url: url.into(),
            cluster: String::new(),
            node: None,
            heartbeat: RedisBackend::DEFAULT_HEARTBEAT,
            node_timeout: RedisBackend::DEFAULT_NODE_TIMEOUT,
            local_cache: false,
            reload_lease: RedisBackend::DEFAULT_RELOAD_LEASE,
            reload_step_timeout: RedisBackend::DEFAULT_RELOAD_STEP_TIMEOUT,
        }
    }

    /// Checks the settings (nothing is connected to).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting: `backend.url` that does not parse (or `rediss://`
    /// in a build without TLS), `backend.cluster` missing or with characters other than
    /// letters, digits, `.`, `_` and `-`, `backend.node` likewise, `backend.heartbeat` of zero,
    /// `backend.node_timeout` not above twice the heartbeat, `backend.reload_step_timeout` of
    /// zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Backend::Redis(redis) => redis.validate(),
        }
    }

    pub(crate) fn redis_config(&self) -> &RedisBackend {
        match self {
            Backend::Redis(redis) => redis,
        }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Redis(redis) => f.debug_tuple("Redis").field(redis).finish(),
        }
    }
}

impl From<RedisBackend> for Backend {
    fn from(redis: RedisBackend) -> Self {
        Backend::Redis(redis)
    }
}

/// A cluster joined through Redis: built by [`Backend::redis`].
///
/// Its `Debug` form hides the URL's password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisBackend {
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS).
    pub url: String,
    /// The cluster's name: every master started with it joins the same cluster. Its keys are
    /// `procactor:{<cluster>}:*`.
    pub cluster: String,
    /// This node's name; `None` is `<hostname>-<master pid>`. Two live masters may not share
    /// one.
    #[serde(default)]
    pub node: Option<String>,
    /// How often this node writes its heartbeat and reads the others' (default 1 s).
    #[serde(
        rename = "heartbeat_ms",
        with = "crate::millis::duration",
        default = "RedisBackend::default_heartbeat"
    )]
    pub heartbeat: Duration,
    /// How long this node's heartbeat key lives without a new beat: the others drop it that
    /// long after its last beat (default 3 s; more than twice the heartbeat).
    #[serde(
        rename = "node_timeout_ms",
        with = "crate::millis::duration",
        default = "RedisBackend::default_node_timeout"
    )]
    pub node_timeout: Duration,
    /// Keep this node's cache in its master (the embedded store), as without a backend,
    /// instead of the cluster-wide cache in Redis (default `false`: cluster-wide). See
    /// [the cache's docs](crate::cache#on-several-hosts).
    #[serde(default)]
    pub local_cache: bool,
    /// How long the lock of a cluster-wide reload's coordinator lives without renewal (it is
    /// renewed every third of it while the rollout runs): a coordinator killed mid-rollout
    /// holds the next reload back at most this long (default 5 s; at least three heartbeats:
    /// a shorter one is raised to that).
    #[serde(
        rename = "reload_lease_ms",
        with = "crate::millis::duration",
        default = "RedisBackend::default_reload_lease"
    )]
    pub reload_lease: Duration,
    /// The longest a cluster-wide reload waits for one node's local reload to end (default
    /// 10 min). A node's local reload is bounded by its own ready and shutdown timeouts; this
    /// is the coordinator's backstop. A node that does not even acknowledge the command within
    /// `node_timeout` plus a heartbeat fails its step sooner.
    #[serde(
        rename = "reload_step_timeout_ms",
        with = "crate::millis::duration",
        default = "RedisBackend::default_reload_step_timeout"
    )]
    pub reload_step_timeout: Duration,
}

impl RedisBackend {
    const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
    const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3);
    const DEFAULT_RELOAD_LEASE: Duration = Duration::from_secs(5);
    const DEFAULT_RELOAD_STEP_TIMEOUT: Duration = Duration::from_secs(600);
    /// The longest cluster name: it is in every key.
    const MAX_CLUSTER: usize = 64;
    /// The longest node name.
    const MAX_NODE: usize = 128;

    fn default_heartbeat() -> Duration {
        Self::DEFAULT_HEARTBEAT
    }

    fn default_node_timeout() -> Duration {
        Self::DEFAULT_NODE_TIMEOUT
    }

    fn default_reload_lease() -> Duration {
        Self::DEFAULT_RELOAD_LEASE
    }

    fn default_reload_step_timeout() -> Duration {
        Self::DEFAULT_RELOAD_STEP_TIMEOUT
    }

    /// The cluster to join (required): letters, digits, `.`, `_` and `-`, at most 64.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// This node's name (default `<hostname>-<master pid>`): letters, digits, `.`, `_` and
    /// `-`, at most 128.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// How often this node beats (default 1 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long after its last beat a node is dropped (default 3 s; must exceed twice the
    /// heartbeat, so that one late beat does not drop a node).
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// `true`: this node keeps a cache of its own in its master (the embedded store, as
    /// without a backend), seen by its own workers only. `false` (the default): the cache is
    /// the cluster's, in Redis, the same for every node's workers and master.
    pub fn local_cache(mut self, local: bool) -> Self {
        self.local_cache = local;
        self
    }

    /// How long a cluster-wide reload's lock lives without renewal (default 5 s; at least
    /// three heartbeats: a shorter one is raised to that).
    pub fn reload_lease(mut self, lease: Duration) -> Self {
        self.reload_lease = lease;
        self
    }

    /// The longest a cluster-wide reload waits for one node's local reload (default 10 min).
    pub fn reload_step_timeout(mut self, timeout: Duration) -> Self {
        self.reload_step_timeout = timeout;
        self
    }

    /// The reload lock's lease as used: at least three heartbeats.
    pub(crate) fn effective_reload_lease(&self) -> Duration {
        self.reload_lease.max(self.heartbeat * 3)
    }

    /// This node's name: the one set, or `<hostname>-<pid>`.
    pub(crate) fn node_name(&self) -> String {
        match &self.node {
            Some(name) => name.clone(),
            None => format!("{}-{}", hostname(), std::process::id()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return bad("backend.url", format!("{}: {e}", redacted(&self.url)));
        }
        if self.cluster.is_empty() {
            return bad(
                "backend.cluster",
                "required: the name of the cluster to join".into(),
            );
        }
        if let Err(reason) = check_name(&self.cluster, Self::MAX_CLUSTER) {
            return bad("backend.cluster", reason);
        }
        if let Err(reason) = check_name(&self.node_name(), Self::MAX_NODE) {
            return bad("backend.node", reason);
        }
        if self.heartbeat.is_zero() {
            return bad("backend.heartbeat", "must be above zero".into());
        }
        if self.node_timeout <= self.heartbeat * 2 {
            return bad(
                "backend.node_timeout",
                format!(
                    "{:?} must exceed twice the heartbeat ({:?})",
                    self.node_timeout, self.heartbeat
                ),
            );
        }
        if self.reload_step_timeout.is_zero() {
            return bad("backend.reload_step_timeout", "must be above zero".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &redacted(&self.url))
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("heartbeat", &self.heartbeat)
            .field("node_timeout", &self.node_timeout)
            .field("local_cache", &self.local_cache)
            .field("reload_lease", &self.reload_lease)
            .field("reload_step_timeout", &self.reload_step_timeout)
            .finish()
    }
}

/// `name` is 1..=`max` letters, digits, `.`, `_` or `-` (no `{`, `}` or `:`, which would
/// change what the keys mean).
fn check_name(name: &str, max: usize) -> Result<(), String> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > max || !name.chars().all(fits) {
        return Err(format!(
            "{name:?}: 1 to {max} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// The URL with its password, if any, replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    // A password may also come as a query parameter (`redis+unix:///s?user=u&pass=p`).
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let query = query.map_or(String::new(), |query| {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        format!("?{}", params.join("&"))
    });
    redacted_authority(url) + &query
}

/// `url` (without its query) with the password of its user info hidden.
fn redacted_authority(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// This host's name (`gethostname`), or `localhost` when it cannot be read.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(backend: RedisBackend) -> &'static str {
        Backend::from(backend).validate().unwrap_err().field
    }

    #[test]
    fn defaults_are_one_second_beats_and_three_seconds_to_drop() {
        let b = Backend::redis("redis://127.0.0.1:6379/0").cluster("c");
        assert_eq!(b.heartbeat, Duration::from_secs(1));
        assert_eq!(b.node_timeout, Duration::from_secs(3));
        assert_eq!(
            b.node_name(),
            format!("{}-{}", hostname(), std::process::id())
        );
        Backend::from(b).validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_named() {
        let ok = || Backend::redis("redis://127.0.0.1:6379").cluster("c");
        assert_eq!(
            field(Backend::redis("redis://127.0.0.1:6379")),
            "backend.cluster"
        );
        assert_eq!(field(ok().cluster("a{b}")), "backend.cluster");
        assert_eq!(field(ok().cluster("x".repeat(65))), "backend.cluster");
        assert_eq!(field(ok().node("a:b")), "backend.node");
        assert_eq!(field(ok().node("")), "backend.node");
        assert_eq!(field(ok().heartbeat(Duration::ZERO)), "backend.heartbeat");
        let timing = ok().heartbeat(Duration::from_secs(1));
        assert_eq!(
            field(timing.clone().node_timeout(Duration::from_secs(2))),
            "backend.node_timeout"
        );
        assert_eq!(
            field(timing.reload_step_timeout(Duration::ZERO)),
            "backend.reload_step_timeout"
        );
        assert_eq!(
            field(Backend::redis("nonsense").cluster("c")),
            "backend.url"
        );
        assert_eq!(
            field(Backend::redis("http://x:1").cluster("c")),
            "backend.url"
        );
    }

    #[test]
    fn tls_and_passwords_are_accepted() {
        for url in [
            "rediss://127.0.0.1:6380/0",
            "redis://user:secret@127.0.0.1:6379/2",
            "redis://:secret@127.0.0.1",
        ] {
            Backend::from(Backend::redis(url).cluster("c"))
                .validate()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let b = Backend::redis("redis://app:s3cret@10.1.2.3:6379/0").cluster("c");
        let shown = format!("{:?}", Backend::from(b));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://app:***@10.1.2.3:6379/0"), "{shown}");
        assert_eq!(redacted("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redacted("redis://user@h"), "redis://user@h");
        assert_eq!(
            redacted("redis+unix:///run/r.sock?db=1&user=u&pass=secret"),
            "redis+unix:///run/r.sock?db=1&user=u&pass=***"
        );
        assert_eq!(
            redacted("redis://h/0?password=s"),
            "redis://h/0?password=***"
        );
    }

    #[test]
    fn serde_round_trip_with_millis() {
        let b = Backend::from(
            Backend::redis("redis://h:1")
                .cluster("c")
                .heartbeat(Duration::from_millis(250)),
        );
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains("\"heartbeat_ms\":250"), "{json}");
        assert_eq!(serde_json::from_str::<Backend>(&json).unwrap(), b);
        let short: Backend =
            serde_json::from_str(r#"{"redis":{"url":"redis://h:1","cluster":"c"}}"#).unwrap();
        assert_eq!(short.redis_config().node_timeout, Duration::from_secs(3));
        assert_eq!(short.redis_config().reload_lease, Duration::from_secs(5));
    }
}
