//! Joining at start: the node's name taken in Redis before any worker starts, so that a second
//! live master with the same name is refused before it does anything.
//!
//! The join writes the node's hash (its boot id, a new epoch) without listing it in the index:
//! the others see the node only once its workers are ready (the first beat after
//! [`NodeView::announce`](super::NodeView)). A name held by another boot's hash is watched for
//! up to that key's time to live: if it expires, the name was a dead master's (one restarted
//! quickly under the same name) and is taken; if it beats meanwhile, a live master holds it
//! and the start fails. An unreachable Redis does not stop the start: the join waits for it one
//! heartbeat at most (the connection's and the answer's timeouts), then the cluster runs
//! locally and the node joins when Redis answers. A Redis that answers with an error, or whose TLS
//! certificate is not trusted, fails the start: another try would not change it.

use std::time::{Duration, Instant, SystemTime};

use redis::aio::ConnectionManagerConfig;

use super::config::{hostname, redacted, Backend};
use super::conn::Redis;
use super::node::{boot_id, fields};
use super::script::{Holder, Joined, Keys, Me, Scripts};
use crate::error::{ConfigError, Error};

/// What a node is, fixed for the master's life.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) keys: Keys,
    pub(crate) cluster: String,
    pub(crate) name: String,
    pub(crate) boot: String,
    pub(crate) host: String,
    pub(crate) started: SystemTime,
    pub(crate) heartbeat: Duration,
    pub(crate) node_timeout: Duration,
    /// The cluster-wide reload's lock lease and the longest wait for one node's step.
    pub(crate) reload_lease: Duration,
    pub(crate) reload_step_timeout: Duration,
}

impl Settings {
    /// The node as the scripts see it.
    pub(crate) fn me(&self, visible: bool) -> Me<'_> {
        Me {
            keys: &self.keys,
            name: &self.name,
            boot: &self.boot,
            ttl_ms: u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX),
            visible,
        }
    }

    /// How long a member's key stays gone before it is pruned from the index: long enough for
    /// every node (beating at most this often) to have seen it gone.
    pub(crate) fn prune_after_ms(&self) -> u64 {
        let ms = (self.node_timeout * 4)
            .max(Duration::from_secs(10))
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// A node whose name is taken (or not yet, when Redis was unreachable), not yet beating.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) settings: Settings,
    /// The connection, on its own thread.
    pub(crate) redis: Redis,
    pub(crate) scripts: Scripts,
    /// The epoch of the join; `None` when Redis could not be reached.
    pub(crate) epoch: Option<u64>,
    /// Why Redis could not be reached.
    pub(crate) unreachable: Option<String>,
    /// Values of the wrong type the join replaced.
    pub(crate) bad: u64,
    /// When the join was sent.
    pub(crate) joined_at: Instant,
}

/// Takes this node's name in `backend`'s cluster.
///
/// # Errors
/// [`Error::Config`] (`backend`) when the URL does not parse, when Redis answers with an error
/// (authentication, ACL, scripts refused), when its TLS certificate is refused, or when a live
/// master holds the node's name.
pub(crate) async fn claim(backend: &Backend) -> Result<Claim, Error> {
    let config = backend.redis_config();
    let client = redis::Client::open(config.url.as_str())
        .map_err(|e| refused(format!("{}: {e}", redacted(&config.url))))?;
    let settings = Settings {
        keys: Keys::new(&config.cluster),
        cluster: config.cluster.clone(),
        name: config.node_name(),
        boot: boot_id(),
        host: hostname(),
        started: SystemTime::now(),
        heartbeat: config.heartbeat,
        node_timeout: config.node_timeout,
        reload_lease: config.effective_reload_lease(),
        reload_step_timeout: config.reload_step_timeout,
    };
    let redis = connect(client, &settings).map_err(|e| refused(e.to_string()))?;
    let mut claim = Claim {
        settings,
        redis,
        scripts: Scripts::new(),
        epoch: None,
        unreachable: None,
        bad: 0,
        joined_at: Instant::now(),
    };
    claim.take_name().await?;
    Ok(claim)
}

/// A connection that (re)connects when asked, each attempt and each answer bounded by the
/// heartbeat, with no retry of its own: the next beat is the retry. It runs on a thread of its
/// own ([`Redis`]): connecting over TLS reads files.
fn connect(client: redis::Client, settings: &Settings) -> redis::RedisResult<Redis> {
    // rustls needs one crypto provider for the process; with both of its own (ring, and
    // aws-lc-rs from another crate's defaults) and none chosen it panics on `rediss://`.
    // Installing ring when none is chosen yet is a no-op otherwise.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.heartbeat))
        .set_response_timeout(Some(settings.heartbeat))
        .set_number_of_retries(0);
    Redis::start(client, config)
}

/// Whether `error` means Redis could not serve now (not reached, or busy: loading its data,
/// a failover under way, read-only after one) rather than that it refused (a password, an ACL,
/// a TLS certificate), which another try will not change.
pub(crate) fn is_unreachable(error: &redis::RedisError) -> bool {
    let io = error.is_io_error() || error.is_timeout() || error.is_connection_dropped();
    (io || is_busy(error)) && !is_tls_refusal(error)
}

/// A server that answers but cannot serve now: loading its data, a failover under way, a
/// replica (read-only) where the primary was.
fn is_busy(error: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as Server;
    matches!(
        error.kind(),
        redis::ErrorKind::Server(
            Server::BusyLoading
                | Server::TryAgain
                | Server::ClusterDown
                | Server::MasterDown
                | Server::ReadOnly
        )
    )
}

/// Whether a connection that gave `error` should be dropped for a new one (one that stopped
/// answering, or one to a server that became a read-only replica in a failover).
pub(crate) fn wants_new_connection(error: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as Server;
    error.is_timeout()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(Server::ReadOnly | Server::MasterDown)
        )
}

/// A TLS error (an untrusted certificate, a protocol mismatch) as `error`'s cause: redis-rs
/// keeps the `io::Error` that tokio-rustls made of it behind an `Arc`.
fn is_tls_refusal(error: &redis::RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(cause) = std::error::Error::source(error) else {
        return false;
    };
    let cause: &(dyn std::error::Error + 'static) = match cause.downcast_ref::<Shared>() {
        Some(shared) => &**shared,
        None => cause,
    };
    let io = cause.downcast_ref::<std::io::Error>();
    cause.is::<rustls::Error>()
        || io
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<rustls::Error>())
}

impl Claim {
    async fn take_name(&mut self) -> Result<(), Error> {
        let (fields, _) = fields(None, &self.settings.host, self.settings.started);
        let mut first: Option<(Holder, Instant)> = None;
        loop {
            let me = self.settings.me(false);
            let join = self.scripts.join(&self.redis, me, &fields);
            // One heartbeat: the start waits no longer on a Redis that does not answer.
            let answer = match tokio::time::timeout(self.settings.heartbeat, join).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.unreachable = Some("Redis did not answer in time".into());
                    return Ok(());
                }
            };
            let holder = match answer {
                Ok(Joined::Ok { epoch, bad }) => {
                    (self.epoch, self.bad) = (Some(epoch), bad);
                    return Ok(());
                }
                Ok(Joined::Taken(holder)) => holder,
                Err(e) if is_unreachable(&e) => {
                    self.unreachable = Some(e.to_string());
                    return Ok(());
                }
                Err(e) => return Err(refused(format!("Redis refused the join: {e}"))),
            };
            let (seen, since) = first.get_or_insert_with(|| (holder.clone(), Instant::now()));
            let beating = seen.boot != holder.boot || seen.beat != holder.beat;
            // A dead holder's key is gone once its time to live has passed.
            let wait = Duration::from_millis(u64::try_from(seen.pttl).unwrap_or(0))
                .min(self.settings.node_timeout * 2 + self.settings.heartbeat)
                + Duration::from_millis(250);
            if beating || holder.pttl < 0 || since.elapsed() > wait {
                return Err(self.taken(&holder));
            }
            tokio::time::sleep(self.settings.heartbeat / 4).await;
        }
    }

    fn taken(&self, holder: &Holder) -> Error {
        let Settings { name, cluster, .. } = &self.settings;
        refused(format!(
            "node name {name:?} is held in cluster {cluster:?} by a live master (pid {} on {}); \
             give this master another name with RedisBackend::node",
            holder.pid, holder.host
        ))
    }
}

fn refused(reason: String) -> Error {
    Error::Config(ConfigError {
        field: "backend",
        reason,
    })
}
