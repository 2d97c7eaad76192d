//! A worker that exercises messaging between processes: the master (or a test) drives it with
//! commands to tell, ask, broadcast, publish, join, confirm and control, and it records what
//! other processes send it, with the sender the master stamped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::WorkerId;
use crate::messaging::{AskError, ClusterInfo, Peer, Via, WorkerStats};
use crate::worker::{WorkerActor, WorkerContext};

/// What [`Relay`] accepts: commands from the master, and messages from its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayMsg {
    /// Command: tell worker `to` a [`Note`](RelayMsg::Note).
    TellPeer {
        /// The receiver.
        to: WorkerId,
        /// The note.
        text: String,
    },
    /// Command: tell `count` numbered notes `"<prefix><n>"` to worker `to`, in order.
    TellMany {
        /// The receiver.
        to: WorkerId,
        /// The text before each number.
        prefix: String,
        /// How many.
        count: u64,
    },
    /// Command: tell worker `to` a note and await its delivery acknowledgement.
    TellPeerAcked {
        /// The receiver.
        to: WorkerId,
        /// The note.
        text: String,
    },
    /// Command: ask worker `to` to [`Echo`](RelayMsg::Echo) `text`.
    AskPeer {
        /// The receiver.
        to: WorkerId,
        /// What it echoes.
        text: String,
        /// The request's timeout.
        timeout_ms: u64,
    },
    /// Command: ask worker `to` `count` requests of `bytes` bytes each, all at once; answers
    /// how many were refused with [`AskError::Backpressure`] and how many succeeded.
    Flood {
        /// The receiver.
        to: WorkerId,
        /// How many requests.
        count: usize,
        /// Payload size of each.
        bytes: usize,
    },
    /// Command: ask worker `to` a message its type does not decode (a [`RelayMsg`] it cannot
    /// read: raw bytes sent as another worker type).
    AskGarbage {
        /// The receiver.
        to: WorkerId,
    },
    /// Command: ask the master (its `on_request` handler) with this text.
    AskMaster(String),
    /// Command: send a note to every other worker.
    Broadcast(String),
    /// Command: publish a note to a group.
    Publish {
        /// The group.
        group: String,
        /// The note.
        text: String,
    },
    /// Command: join a group.
    Join(String),
    /// Command: leave a group.
    Leave(String),
    /// Command: confirm a key.
    Confirm(String),
    /// Command: wait for `n` confirmations of a key.
    AwaitConfirmations {
        /// The key.
        key: String,
        /// How many.
        n: usize,
        /// The timeout.
        timeout_ms: u64,
    },
    /// Command: the cluster's info.
    Info,
    /// Command: every worker's stats.
    Stats,
    /// Command: kill worker `id`.
    Kill(WorkerId),
    /// Command: replace worker `id`.
    Restart(WorkerId),
    /// Command: block this process's thread (no reading, no heartbeats) for this many ms.
    Block(u64),
    /// Command: exit the process at once with status 1.
    Die,
    /// From a peer: a one-way note, recorded.
    Note(String),
    /// From a peer: answer [`RelayReply::Echoed`].
    Echo(String),
    /// From a peer: exit at once while handling it.
    DieWhileHandling,
    /// What this worker has received so far.
    Log,
    /// Forget what this worker has received.
    Clear,
    /// This worker's pid.
    Pid,
    /// Cache: increments `key` `times` times, one after another.
    CacheIncrement {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// How many times.
        times: u64,
    },
    /// Cache: sets `key` to `value` (a string), for `ttl_ms` if given.
    CacheSet {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live.
        ttl_ms: Option<u64>,
    },
    /// Cache: writes `count` keys `<prefix><n>` = n, then deletes every tenth.
    CacheBurst {
        /// The collection.
        collection: String,
        /// The key prefix.
        prefix: String,
        /// How many.
        count: u64,
    },
    /// Cache: `times` times, takes lock `lock`, reads the number at `key`, writes it plus one
    /// (a read-modify-write that only the lock makes safe) and releases the lock.
    CacheLockedIncrement {
        /// The lock.
        lock: String,
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// How many times.
        times: u64,
    },
    /// Cache: takes lock `lock` (lease 60 s) and keeps it.
    CacheHoldLock(String),
    /// Cache: waits for lock `lock` at most `wait_ms`, answers how long it waited (`Int`, ms),
    /// then releases it.
    CacheLockWait {
        /// The lock.
        lock: String,
        /// The wait.
        wait_ms: u64,
    },
    /// Cache: subscribes to `collection` under `prefix`, keeping the subscription.
    CacheSubscribe {
        /// The collection.
        collection: String,
        /// The prefix.
        prefix: String,
    },
    /// Cache: the events received on the subscription so far, as (key, change) texts.
    CacheEvents,
    /// Cache: keeps a replica of `collection` (values are numbers).
    CacheReplica(String),
    /// Cache: the replica's current entries.
    CacheReplicaState,
    /// Logs: an `ip` record per text, `history` and `error` records, `tracing` events at info
    /// (with fields `user` and `n`) and at error level, each tagged with `tag`.
    LogAll {
        /// A tag in every record.
        tag: String,
        /// How many `ip` records.
        ips: u32,
    },
    /// The value of an environment variable of this process, as `Entries` of one (absent: none).
    Env(String),
    /// This worker's group and arguments, as `Events` of ("group", name) and ("arg", each).
    Identity,
    /// The pids of this worker's own workers (see [`LEAVES_ENV`]).
    LeafPids,
    /// Kills this worker's own worker `id` (its sub-cluster restarts it per policy).
    KillLeaf(WorkerId),
    /// Logs `count` `ip` records, as fast as it can.
    LogMany(u64),
    /// Writes `mb` megabytes of 100-byte lines to stderr, as fast as it can.
    StderrFlood {
        /// How many megabytes.
        mb: u64,
    },
    /// Writes these raw bytes to stderr (no newline added).
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Writes a line to stderr, then aborts the process at once.
    StderrThenAbort(String),
    /// Cache: `count` operations (3 gets to 1 set, on 1 000 keys), `window` in flight at
    /// once; answers operations per second (`Int`).
    CacheBench {
        /// The collection.
        collection: String,
        /// How many operations.
        count: u64,
        /// How many in flight.
        window: usize,
    },
}

/// A note a [`Relay`] received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Who sent it, as stamped by the master.
    pub from: Peer,
    /// How it came.
    pub via: Via,
    /// The note.
    pub text: String,
}

/// What [`Relay`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayReply {
    /// The command succeeded.
    Done,
    /// The command failed with this error.
    Failed(AskError),
    /// To `Echo`: who echoed, who asked (as stamped by the master) and the text.
    Echoed {
        /// The echoing worker.
        by: WorkerId,
        /// The asker.
        from: Peer,
        /// The text.
        text: String,
    },
    /// To `AskMaster`: the master's answer.
    Text(String),
    /// To `Flood`.
    Flooded {
        /// Answered requests.
        ok: usize,
        /// Requests refused with backpressure.
        backpressure: usize,
        /// Other failures.
        other: Vec<String>,
    },
    /// To `AwaitConfirmations`.
    Confirmed(Vec<WorkerId>),
    /// To `Info`.
    Info(Box<ClusterInfo>),
    /// To `Stats`.
    Stats(Vec<WorkerStats>),
    /// To `Log`.
    Log(Vec<Received>),
    /// To `Pid`.
    Pid(u32),
    /// A number.
    Int(i64),
    /// (key, change) pairs, to `CacheEvents`.
    Events(Vec<(String, String)>),
    /// To `CacheReplicaState`.
    Entries(std::collections::BTreeMap<String, u64>),
}

type Handle = crate::worker::WorkerHandle<Relay>;

/// With `n` in this variable, a relay worker starts a cluster of `n` relay workers of its own
/// when it starts (a supervision tree): they die with it, and when its cluster gives up, it
/// exits with status 1, which its own supervisor sees as an abnormal exit.
pub const LEAVES_ENV: &str = "PROCACTOR_RELAY_LEAVES";

/// With `g` in this variable, a relay worker of generation `g` or later exits with status 2 as
/// it starts (a crash loop, for escalation tests).
pub const CRASH_FROM_ENV: &str = "PROCACTOR_RELAY_CRASH_FROM";

/// The messaging worker; see [`RelayMsg`].
#[derive(Debug, Default)]
pub struct Relay {
    received: Vec<Received>,
    locks: Vec<crate::cache::LockGuard<Handle>>,
    subscription: Option<crate::cache::Subscription<Handle>>,
    replica: Option<crate::cache::Replica<Handle, u64>>,
    leaves: Option<std::rc::Rc<crate::Cluster<Relay>>>,
}

fn cache_err(e: crate::cache::CacheError) -> RelayReply {
    RelayReply::Failed(AskError::Failed(e.to_string()))
}

fn done(result: Result<(), AskError>) -> RelayReply {
    match result {
        Ok(()) => RelayReply::Done,
        Err(e) => RelayReply::Failed(e),
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl WorkerActor for Relay {
    type Msg = RelayMsg;
    type Reply = RelayReply;
    type Event = String;

    async fn started(&mut self, ctx: &mut WorkerContext<Self>) {
        let number = |name: &str| std::env::var(name).ok()?.parse::<u64>().ok();
        if number(CRASH_FROM_ENV).is_some_and(|g| ctx.generation() >= g) {
            eprintln!("relay: generation {} crashes as asked", ctx.generation());
            std::process::exit(2);
        }
        let Some(n) = number(LEAVES_ENV).filter(|&n| n > 0) else {
            return;
        };
        let Ok(program) = std::env::current_exe() else {
            std::process::exit(1);
        };
        let config = crate::ClusterConfig::new()
            .workers(n as usize)
            .exec(program)
            .env(LEAVES_ENV, "0")
            .handle_signals(false)
            .restart(crate::RestartPolicy {
                intensity: crate::Intensity {
                    max_restarts: 2,
                    period: Duration::from_secs(60),
                },
                backoff: crate::Backoff::none(),
                ..crate::RestartPolicy::default()
            });
        let leaves = match crate::ClusterSupervisor::start::<Relay>(config).await {
            Ok(leaves) => std::rc::Rc::new(leaves),
            Err(e) => {
                eprintln!("relay: cannot start its workers: {e}");
                std::process::exit(1);
            }
        };
        let watched = std::rc::Rc::clone(&leaves);
        actix_rt::spawn(async move {
            if let Err(e) = watched.wait().await {
                // Escalate: this worker's supervisor sees an abnormal exit.
                eprintln!("relay: its own workers failed: {e}");
                std::process::exit(1);
            }
        });
        self.leaves = Some(leaves);
    }

    async fn handle(&mut self, msg: RelayMsg, ctx: &mut WorkerContext<Self>) -> RelayReply {
        let peers = ctx.peers().clone();
        match msg {
            RelayMsg::TellPeer { to, text } => done(peers.tell_worker(to, &RelayMsg::Note(text))),
            RelayMsg::TellMany { to, prefix, count } => {
                done((0..count).try_for_each(|n| {
                    peers.tell_worker(to, &RelayMsg::Note(format!("{prefix}{n}")))
                }))
            }
            RelayMsg::TellPeerAcked { to, text } => done(
                peers
                    .tell_worker_acked(to, &RelayMsg::Note(text), TIMEOUT)
                    .await,
            ),
            RelayMsg::AskPeer {
                to,
                text,
                timeout_ms,
            } => match peers
                .ask_worker(to, &RelayMsg::Echo(text), Duration::from_millis(timeout_ms))
                .await
            {
                Ok(reply) => reply,
                Err(e) => RelayReply::Failed(e),
            },
            RelayMsg::Flood { to, count, bytes } => {
                let text = "x".repeat(bytes);
                let asks = (0..count).map(|_| {
                    let peers = peers.clone();
                    let msg = RelayMsg::Echo(text.clone());
                    async move { peers.ask_worker(to, &msg, TIMEOUT).await }
                });
                let results = futures_join_all(asks).await;
                let (mut ok, mut backpressure, mut other) = (0, 0, Vec::new());
                for result in results {
                    match result {
                        Ok(_) => ok += 1,
                        Err(AskError::Backpressure(_)) => backpressure += 1,
                        Err(e) => other.push(e.to_string()),
                    }
                }
                RelayReply::Flooded {
                    ok,
                    backpressure,
                    other,
                }
            }
            RelayMsg::AskGarbage { to } => {
                // A u8 where a RelayMsg is expected: it does not decode as one.
                let garbage = peers.cast::<Garbage>();
                match garbage.ask_worker(to, &200u8, TIMEOUT).await {
                    Ok(_) => RelayReply::Done,
                    Err(e) => RelayReply::Failed(e),
                }
            }
            RelayMsg::AskMaster(text) => match peers.ask_master::<String>(&text, TIMEOUT).await {
                Ok(answer) => RelayReply::Text(answer),
                Err(e) => RelayReply::Failed(e),
            },
            RelayMsg::Broadcast(text) => done(peers.broadcast(&RelayMsg::Note(text))),
            RelayMsg::Publish { group, text } => done(peers.publish(&group, &RelayMsg::Note(text))),
            RelayMsg::Join(group) => done(peers.join(&group).await),
            RelayMsg::Leave(group) => done(peers.leave(&group).await),
            RelayMsg::Confirm(key) => done(peers.confirm(&key).await),
            RelayMsg::AwaitConfirmations { key, n, timeout_ms } => match peers
                .await_confirmations(&key, n, Duration::from_millis(timeout_ms))
                .await
            {
                Ok(ids) => RelayReply::Confirmed(ids),
                Err(e) => RelayReply::Failed(e),
            },
            RelayMsg::Info => match peers.cluster_info().await {
                Ok(info) => RelayReply::Info(Box::new(info)),
                Err(e) => RelayReply::Failed(e),
            },
            RelayMsg::Stats => match peers.cluster_stats().await {
                Ok(stats) => RelayReply::Stats(stats),
                Err(e) => RelayReply::Failed(e),
            },
            RelayMsg::Kill(id) => done(peers.kill_worker(id).await),
            RelayMsg::Restart(id) => done(peers.restart_worker(id, TIMEOUT).await),
            RelayMsg::Block(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                RelayReply::Done
            }
            RelayMsg::Die => std::process::exit(1),
            RelayMsg::Note(text) => {
                self.received.push(Received {
                    from: ctx.sender(),
                    via: ctx.via().clone(),
                    text,
                });
                RelayReply::Done
            }
            RelayMsg::Echo(text) => RelayReply::Echoed {
                by: ctx.id(),
                from: ctx.sender(),
                text,
            },
            RelayMsg::DieWhileHandling => std::process::exit(3),
            RelayMsg::Log => RelayReply::Log(self.received.clone()),
            RelayMsg::Clear => {
                self.received.clear();
                RelayReply::Done
            }
            RelayMsg::Pid => RelayReply::Pid(std::process::id()),
            RelayMsg::LogAll { tag, ips } => {
                let log = ctx.log();
                for n in 0..ips {
                    log.ip(
                        "10.0.0.1",
                        "GET",
                        &format!("/{tag}/{n}"),
                        200,
                        Duration::from_micros(1500),
                    );
                }
                let mut fields = serde_json::Map::new();
                fields.insert("tag".into(), tag.clone().into());
                log.history("logged in", fields);
                log.error(
                    &format!("{tag} failed"),
                    vec!["disk full".into()],
                    Some("relay.rs"),
                );
                tracing::info!(user = "alice", n = 3, tag = tag.as_str(), "traced");
                tracing::error!(tag = tag.as_str(), "traced failure");
                RelayReply::Done
            }
            RelayMsg::Env(name) => RelayReply::Events(
                std::env::var(&name)
                    .map(|v| vec![(name, v)])
                    .unwrap_or_default(),
            ),
            RelayMsg::Identity => RelayReply::Events(
                std::iter::once(("group".to_string(), ctx.group().to_string()))
                    .chain(std::env::args().skip(1).map(|a| ("arg".to_string(), a)))
                    .collect(),
            ),
            RelayMsg::LeafPids => match &self.leaves {
                Some(leaves) => match leaves.workers().await {
                    Ok(infos) => RelayReply::Entries(
                        infos
                            .iter()
                            .map(|i| (i.id.to_string(), u64::from(i.pid.unwrap_or(0))))
                            .collect(),
                    ),
                    Err(e) => RelayReply::Failed(AskError::Failed(e.to_string())),
                },
                None => RelayReply::Failed(AskError::Invalid("no workers of its own".into())),
            },
            RelayMsg::KillLeaf(id) => match &self.leaves {
                Some(leaves) => match leaves.kill(id).await {
                    Ok(_) => RelayReply::Done,
                    Err(e) => RelayReply::Failed(AskError::Failed(e.to_string())),
                },
                None => RelayReply::Failed(AskError::Invalid("no workers of its own".into())),
            },
            RelayMsg::LogMany(count) => {
                let log = ctx.log();
                for _ in 0..count {
                    log.ip("10.0.0.1", "GET", "/bench", 200, Duration::from_micros(100));
                }
                RelayReply::Done
            }
            RelayMsg::StderrFlood { mb } => {
                use std::io::Write;
                let line = format!("{}\n", "f".repeat(99));
                let mut stderr = std::io::stderr().lock();
                for _ in 0..mb * 10_000 {
                    if stderr.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
                RelayReply::Done
            }
            RelayMsg::Stderr(bytes) => {
                use std::io::Write;
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(&bytes);
                let _ = stderr.flush();
                RelayReply::Done
            }
            RelayMsg::StderrThenAbort(line) => {
                eprintln!("{line}");
                std::process::abort()
            }
            cache => self.cache(cache, &peers).await,
        }
    }
}

impl Relay {
    async fn cache(&mut self, msg: RelayMsg, peers: &Handle) -> RelayReply {
        let cache = peers.cache();
        let result = match msg {
            RelayMsg::CacheIncrement {
                collection,
                key,
                times,
            } => {
                for _ in 0..times {
                    if let Err(e) = cache.increment(&collection, &key, 1).await {
                        return cache_err(e);
                    }
                }
                Ok(RelayReply::Done)
            }
            RelayMsg::CacheSet {
                collection,
                key,
                value,
                ttl_ms,
            } => cache
                .set(&collection, &key, &value, ttl_ms.map(Duration::from_millis))
                .await
                .map(|()| RelayReply::Done),
            RelayMsg::CacheBurst {
                collection,
                prefix,
                count,
            } => {
                for n in 0..count {
                    if let Err(e) = cache
                        .set(&collection, &format!("{prefix}{n}"), &n, None)
                        .await
                    {
                        return cache_err(e);
                    }
                }
                for n in (0..count).step_by(10) {
                    if let Err(e) = cache.delete(&collection, &format!("{prefix}{n}")).await {
                        return cache_err(e);
                    }
                }
                Ok(RelayReply::Done)
            }
            RelayMsg::CacheLockedIncrement {
                lock,
                collection,
                key,
                times,
            } => {
                for _ in 0..times {
                    let step = async {
                        let guard = cache.lock(&lock, TIMEOUT, TIMEOUT).await?;
                        let n: u64 = cache.get(&collection, &key).await?.unwrap_or(0);
                        // Let the others try while the lock is held.
                        tokio::task::yield_now().await;
                        cache.set(&collection, &key, &(n + 1), None).await?;
                        guard.release().await
                    };
                    if let Err(e) = step.await {
                        return cache_err(e);
                    }
                }
                Ok(RelayReply::Done)
            }
            RelayMsg::CacheHoldLock(lock) => cache
                .lock(&lock, Duration::from_secs(60), TIMEOUT)
                .await
                .map(|guard| {
                    self.locks.push(guard);
                    RelayReply::Done
                }),
            RelayMsg::CacheLockWait { lock, wait_ms } => {
                let t = std::time::Instant::now();
                match cache
                    .lock(&lock, TIMEOUT, Duration::from_millis(wait_ms))
                    .await
                {
                    Ok(guard) => {
                        let waited = t.elapsed().as_millis() as i64;
                        guard.release().await.map(|()| RelayReply::Int(waited))
                    }
                    Err(e) => Err(e),
                }
            }
            RelayMsg::CacheSubscribe { collection, prefix } => {
                cache.subscribe(&collection, &prefix).await.map(|sub| {
                    self.subscription = Some(sub);
                    RelayReply::Done
                })
            }
            RelayMsg::CacheEvents => {
                let mut events = Vec::new();
                if let Some(sub) = self.subscription.as_mut() {
                    while let Some(event) = sub.try_recv() {
                        let change = match event.change {
                            crate::cache::Change::Set(v) => {
                                let value: Result<String, _> = crate::codec::decode_value(&v);
                                format!("set {}", value.unwrap_or_default())
                            }
                            other => format!("{other:?}").to_lowercase(),
                        };
                        events.push((event.key, change));
                    }
                }
                Ok(RelayReply::Events(events))
            }
            RelayMsg::CacheReplica(collection) => {
                cache.replica(&collection, "").await.map(|replica| {
                    self.replica = Some(replica);
                    RelayReply::Done
                })
            }
            RelayMsg::CacheReplicaState => Ok(RelayReply::Entries(
                self.replica
                    .as_mut()
                    .map(|r| r.current().clone())
                    .unwrap_or_default(),
            )),
            RelayMsg::CacheBench {
                collection,
                count,
                window,
            } => {
                // `window` operations in flight, polled together by this one task.
                let t = std::time::Instant::now();
                let op = |n: u64| {
                    let cache = cache.clone();
                    let collection = collection.clone();
                    Box::pin(async move {
                        let key = format!("k{}", n % 1000);
                        if n % 4 == 0 {
                            cache.set(&collection, &key, &n, None).await
                        } else {
                            cache.get::<u64>(&collection, &key).await.map(drop)
                        }
                    })
                };
                let mut next = 0u64;
                let mut in_flight: Vec<_> = Vec::with_capacity(window);
                let mut failure = None;
                std::future::poll_fn(|cx| {
                    while next < count && in_flight.len() < window {
                        in_flight.push(op(next));
                        next += 1;
                    }
                    let mut i = 0;
                    while i < in_flight.len() {
                        match std::future::Future::poll(in_flight[i].as_mut(), cx) {
                            std::task::Poll::Ready(result) => {
                                if let Err(e) = result {
                                    failure.get_or_insert(e);
                                }
                                drop(in_flight.swap_remove(i));
                                if next < count {
                                    in_flight.push(op(next));
                                    next += 1;
                                }
                            }
                            std::task::Poll::Pending => i += 1,
                        }
                    }
                    if in_flight.is_empty() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
                if let Some(e) = failure {
                    return cache_err(e);
                }
                let rate = count as f64 / t.elapsed().as_secs_f64();
                Ok(RelayReply::Int(rate as i64))
            }
            other => Ok(RelayReply::Failed(AskError::Invalid(format!("{other:?}")))),
        };
        result.unwrap_or_else(cache_err)
    }
}

/// A worker type whose messages are bytes, to send another type what it cannot decode.
#[derive(Debug)]
pub struct Garbage;

impl WorkerActor for Garbage {
    type Msg = u8;
    type Reply = u8;
    type Event = ();

    async fn handle(&mut self, msg: u8, _ctx: &mut WorkerContext<Self>) -> u8 {
        msg
    }
}

/// Runs every future as a task of its own (so that they are in flight together) and collects
/// their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let tasks: Vec<_> = futures.map(actix_rt::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(output) = task.await {
            outputs.push(output);
        }
    }
    outputs
}
