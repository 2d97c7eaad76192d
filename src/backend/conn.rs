//! The connection to Redis, driven on a thread of its own so that nothing slow runs on the
//! master's event loop.
//!
//! redis-rs does blocking work when it connects: with `rediss://` it reads the system's root
//! certificates (`rustls-native-certs`: files, `SSL_CERT_FILE` among them) for every new TLS
//! connection, and it cannot be handed a root store that spares it the read (it loads the
//! native roots even when given one). The backend reconnects after every beat that timed out,
//! so on the master's loop that read would repeat at every heartbeat while Redis hangs. Here
//! every connection attempt, TLS handshake and command runs on one thread, `procactor-redis`,
//! a current-thread tokio runtime; the master's loop only sends the call there and awaits its
//! answer. A call whose answer is no longer awaited (its time ran out) is cancelled on that
//! thread.
//!
//! Messages between nodes are the exception, for their latency: with a `redis://` or
//! `redis+unix://` URL (no TLS, so nothing blocks when connecting: a name is resolved off the
//! loop by tokio, the rest is non-blocking I/O), the inbox subscription
//! ([`subscribe_here`](Redis::subscribe_here)) and the publishing connection
//! ([`connect_here`](Redis::connect_here), kept by `publisher.rs`) are made and driven on the
//! master's loop itself: a hop to the thread and back is two thread wake-ups (an eventfd write
//! and a context switch each), which cost more than the publish itself. With `rediss://` they
//! stay on the thread. Every connection is made with `TCP_NODELAY` (redis-rs leaves Nagle's
//! algorithm on): a small command written while another is unanswered would otherwise wait
//! for its acknowledgement.
//!
//! Limits: one more thread per master with a backend (none without), idle between beats. It
//! ends when the last [`Redis`] handle is dropped; an answer that was under way is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisResult};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One Redis server, reached from the `procactor-redis` thread. Clones share the thread and
/// the connection.
#[derive(Clone)]
pub(crate) struct Redis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: ConnectionManager,
    thread: Handle,
    /// Dropped with the last handle: the thread then ends.
    _stop: Arc<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// Starts the thread and a connection made when first used (nothing is connected to
    /// here), with `config`'s timeouts and retries; every connection to `client`'s server is
    /// made with `TCP_NODELAY`.
    pub(crate) fn start(
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let nodelay = info.tcp_settings().clone().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(nodelay))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("procactor-redis".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let conn = Self::lazy(&thread, &client, &config)?;
        Ok(Self {
            client,
            config,
            conn,
            thread,
            _stop: Arc::new(stop),
        })
    }

    /// Drops the connection for a new one, made when next used (a connection that stopped
    /// answering is not always seen as dropped).
    pub(crate) fn reconnect(&mut self) -> RedisResult<()> {
        self.conn = Self::lazy(&self.thread, &self.client, &self.config)?;
        Ok(())
    }

    fn lazy(
        thread: &Handle,
        client: &redis::Client,
        config: &ConnectionManagerConfig,
    ) -> RedisResult<ConnectionManager> {
        // Whatever the manager spawns goes to the thread's runtime.
        let _on_thread = thread.enter();
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
    }

    /// Whether connections to this server may be made and driven on the master's loop: no TLS
    /// (see the module docs).
    pub(crate) fn on_loop(&self) -> bool {
        !matches!(
            self.client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { .. }
        )
    }

    /// A connection made and driven on the calling loop (only where [`on_loop`](Self::on_loop)
    /// allows it), with the thread's connection's timeouts and no retry of its own.
    pub(crate) async fn connect_here(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.config.connection_timeout())
            .set_response_timeout(self.config.response_timeout());
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Runs `call` on the thread with the connection and returns its answer; dropping the
    /// returned future cancels the call there.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let task = Cancel(self.thread.spawn(call(self.conn.clone())));
        match task.wait().await {
            Ok(answer) => answer,
            Err(e) => Err(std::io::Error::other(format!("the Redis thread: {e}")).into()),
        }
    }
}

/// What the subscription to a node's inbox reports to the master's loop.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// (Re)subscribed: frames published from now on arrive.
    Subscribed,
    /// The subscription is lost (frames published meanwhile are lost); retried every `retry`.
    Lost(String),
    /// A message published on the channel.
    Frame(Vec<u8>),
}

impl Redis {
    /// Subscribes to `channel` on a pub/sub connection of its own, on the Redis thread, and
    /// keeps subscribed: after an error or a closed connection it tries again every `retry`
    /// (each attempt bounded by `retry`). Ends when the returned handle is dropped.
    pub(crate) fn subscribe(
        &self,
        channel: String,
        retry: Duration,
        tx: tokio::sync::mpsc::UnboundedSender<Inbound>,
    ) -> Subscription {
        let task = self.subscription(vec![channel], retry, tx, false);
        Subscription(self.thread.spawn(task))
    }

    /// [`subscribe`](Self::subscribe) to every one of `channels` on one connection, made and
    /// driven on the calling loop where [`on_loop`](Self::on_loop) allows it (else on the
    /// thread); a message that is a batch of frames (`wire.rs`) is handed over frame by frame.
    pub(crate) fn subscribe_here(
        &self,
        channels: Vec<String>,
        retry: Duration,
        tx: tokio::sync::mpsc::UnboundedSender<Inbound>,
    ) -> Subscription {
        let task = self.subscription(channels, retry, tx, true);
        Subscription(if self.on_loop() {
            tokio::spawn(task)
        } else {
            self.thread.spawn(task)
        })
    }

    /// The task that keeps `channels` subscribed, reading batches of frames if `frames`. A
    /// closed connection ends redis-rs's message stream at once (its driver task ends at the
    /// socket's end and drops the stream's sender), so a lost server is reported as soon as
    /// the kernel sees the connection close.
    fn subscription(
        &self,
        channels: Vec<String>,
        retry: Duration,
        tx: tokio::sync::mpsc::UnboundedSender<Inbound>,
        frames: bool,
    ) -> impl Future<Output = ()> + Send + 'static {
        use actix::prelude::Stream;
        let client = self.client.clone();
        async move {
            loop {
                let connect = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channels).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let lost = match tokio::time::timeout(retry, connect).await {
                    Ok(Ok(mut pubsub)) => {
                        if tx.send(Inbound::Subscribed).is_err() {
                            return;
                        }
                        let mut messages = std::pin::pin!(pubsub.on_message());
                        while let Some(msg) =
                            std::future::poll_fn(|cx| messages.as_mut().poll_next(cx)).await
                        {
                            let bytes = msg.get_payload_bytes();
                            let batch = frames.then(|| super::wire::unbatch(bytes)).flatten();
                            for frame in batch.unwrap_or_else(|| vec![bytes]) {
                                if tx.send(Inbound::Frame(frame.to_vec())).is_err() {
                                    return;
                                }
                            }
                        }
                        "the subscription's connection closed".to_owned()
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "Redis did not answer the subscription in time".to_owned(),
                };
                if tx.send(Inbound::Lost(lost)).is_err() {
                    return;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }

    /// Publishes `bytes` on `channel`, on the thread: how many subscribers received it.
    pub(crate) async fn publish(&self, channel: String, bytes: Vec<u8>) -> RedisResult<i64> {
        self.run(move |mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(bytes)
                .query_async(&mut conn)
                .await
        })
        .await
    }
}

/// A subscription kept on the Redis thread or the loop; dropped, it ends.
#[derive(Debug)]
pub(crate) struct Subscription(tokio::task::JoinHandle<()>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task on the Redis thread, cancelled when no longer awaited.
struct Cancel<T>(tokio::task::JoinHandle<T>);

impl<T> Cancel<T> {
    async fn wait(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for Cancel<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> Redis {
        let client = redis::Client::open("redis://127.0.0.1:1/0").unwrap();
        Redis::start(client, ConnectionManagerConfig::new()).unwrap()
    }

    #[tokio::test]
    async fn calls_run_on_the_redis_thread() {
        let redis = redis();
        let name = redis
            .run(|_| async { Ok(std::thread::current().name().map(str::to_owned)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("procactor-redis"));
    }

    #[tokio::test]
    async fn a_call_no_longer_awaited_is_cancelled() {
        let redis = redis();
        let (tx, rx) = oneshot::channel::<()>();
        let call = redis.run(move |_| async move {
            let _held = tx;
            std::future::pending::<RedisResult<()>>().await
        });
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), call).await;
        assert!(timed_out.is_err());
        // The task was aborted on the thread: what it held is dropped.
        assert!(rx.await.is_err());
    }
}
