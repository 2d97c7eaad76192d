//! Figures across nodes, each beside a baseline measured in the same run, on a `redis-server`
//! on 127.0.0.1 started by the bench (every figure is `NaN`, `null` in JSON, when it is not
//! installed, as in `nodes.rs`).
//!
//! Three nodes of one cluster: `a`, a master in this process with 2 echo workers, and `b` and
//! `c`, this bench re-run as masters (child processes, 2 echo workers each; SIGTERM by pid at
//! the end, SIGKILL if they do not end within 10 s, always reaped). The section starts once `a`
//! gets an answer from every worker of `b` and `c`.
//!
//! - `cross_node_rtt_us_median`: `Cluster::ask_worker_on("b", 0, &Ping, _)` from `a`'s master,
//!   one at a time; the median of N (1 000 with `--quick`, 10 000; a first tenth more warms
//!   up). Its hops: `a`'s loop writes the `PUBLISH` → redis-server → `b`'s loop (its pub/sub
//!   connection is driven there) → `b`'s worker over its pipe, and the answer the same way
//!   back, to `a`'s inbox (redis-server also wakes each publisher with its `PUBLISH`'s answer,
//!   written before the message). Beside `redis_ping_rtt_us_median` (a bare `PING` with
//!   redis-rs, one connection, one command at a time, on the same server, the same N) and
//!   `local_node_rtt_us_median`: the same `ask_worker_on` from `a` to `a`'s own worker 0 (the
//!   local path, with the backend configured).
//! - `cross_node_worker_rtt_us_median`: `a`'s master asks its worker 0 `EchoMsg::OnNode` (an
//!   `ask_worker_on("b", 0, &Ping)` made by the worker), one at a time, the same N; timed in
//!   `a`'s master, so it is one local round trip (master ↔ worker 0) plus the worker's round
//!   trip to `b` (worker 0 → `a`'s master → Redis → `b` … and back); nothing is subtracted.
//! - `cross_node_req_per_s`: asks from `a`'s master to `b`'s 2 workers (alternately), 256 in
//!   flight, every answer awaited; beside `local_node_req_per_s`, the same to `a`'s own 2
//!   workers.
//! - `cross_node_broadcast_per_s`: `Cluster::broadcast(&Ping)` N times from `a` (256 in flight,
//!   each resolving once `a`'s own workers have it), timed until each of the 4 workers of `b`
//!   and `c` has counted all N (read with `ask_worker_on(node, id, &Stats)`, polled until a
//!   deadline). Remote delivery is at most once: a broadcast lost leaves the figure `NaN` with
//!   the reason printed. Beside `redis_publish_per_s`: as many bare `PUBLISH`es (32 bytes)
//!   with redis-rs (one multiplexed connection, 256 in flight) to a channel with 2 subscribers
//!   (redis-rs pub/sub connections in this process), timed until both have received all.
//! - `redis_cache_ops_per_s`: the cluster-wide cache on Redis through `a`'s `cluster.cache()`,
//!   3 gets to 1 set of a `u64` over 1 000 keys, 128 in flight (a set is the cache's script:
//!   a `SET` and a `PUBLISH` of its change event to the 3 nodes' subscriptions; a get a `GET`),
//!   beside `redis_direct_ops_per_s`: the same mix straight on the same server with redis-rs (a
//!   bare `SET` or `GET` each, one multiplexed connection, 128 in flight). Each side writes
//!   the 1 000 keys first.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::backend::{Backend, RedisBackend};
use procactor::prelude::*;

/// Set in the environment of a master of nodes `b` and `c`: the Redis URL and its node name.
const CHILD_ENV: &str = "PROCACTOR_BENCH_CROSS";
/// The cluster's name in Redis.
const CLUSTER: &str = "bench-cross";
/// The nodes in child processes.
const OTHERS: [&str; 2] = ["b", "c"];
/// Workers per node.
const WORKERS: usize = 2;
/// Requests (and broadcasts) in flight at once.
const WINDOW: usize = 256;
/// Cache operations in flight at once, for both sides.
const CACHE_WINDOW: usize = 128;
/// Keys of the cache workload.
const KEYS: u64 = 1_000;
/// One request's timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error>;

/// The section's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrossFigures {
    pub(crate) rtt_us_median: f64,
    pub(crate) ping_rtt_us_median: f64,
    /// A request and its answer through pub/sub with no framework (`floor.rs`).
    pub(crate) pubsub_rtt_us_median: f64,
    pub(crate) local_rtt_us_median: f64,
    pub(crate) worker_rtt_us_median: f64,
    pub(crate) req_per_s: f64,
    pub(crate) local_req_per_s: f64,
    pub(crate) broadcast_per_s: f64,
    pub(crate) publish_per_s: f64,
    pub(crate) cache_ops_per_s: f64,
    pub(crate) direct_ops_per_s: f64,
    /// Whether `redis-server` is installed (the figures are `NaN` when not).
    pub(crate) redis: bool,
}

impl CrossFigures {
    /// Figures of a run that did not measure this section.
    pub(crate) fn nan() -> Self {
        Self {
            rtt_us_median: f64::NAN,
            ping_rtt_us_median: f64::NAN,
            pubsub_rtt_us_median: f64::NAN,
            local_rtt_us_median: f64::NAN,
            worker_rtt_us_median: f64::NAN,
            req_per_s: f64::NAN,
            local_req_per_s: f64::NAN,
            broadcast_per_s: f64::NAN,
            publish_per_s: f64::NAN,
            cache_ops_per_s: f64::NAN,
            direct_ops_per_s: f64::NAN,
            redis: true,
        }
    }
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    round_trips: usize,
    asks: usize,
    broadcasts: usize,
    cache_ops: u64,
}

pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A node of the bench's cluster, with the default timings.
fn backend(url: &str, name: &str) -> RedisBackend {
    Backend::redis(url).cluster(CLUSTER).node(name)
}

/// Node `b` or `c`: a master with 2 echo workers in the cluster, until SIGTERM.
pub(crate) fn child_main() -> Result<(), BoxError> {
    let spec = std::env::var(CHILD_ENV)?;
    let (url, name) = spec
        .split_once(' ')
        .ok_or("PROCACTOR_BENCH_CROSS: url name")?;
    let config = ClusterConfig::new()
        .workers(WORKERS)
        .log(crate::bench_logs())
        .backend(backend(url, name));
    let ended = crate::run_in_system(async move {
        let cluster = ClusterSupervisor::start::<Echo>(config).await?;
        cluster.wait().await
    });
    if let Some(dir) = crate::bench_logs().dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(ended?)
}

/// Measures the section.
pub(crate) fn measure(quick: bool) -> Result<CrossFigures, BoxError> {
    let Some(redis) = crate::cache::Redis::start()? else {
        return Ok(CrossFigures {
            redis: false,
            ..CrossFigures::nan()
        });
    };
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let sizes = if quick {
        Sizes {
            round_trips: 1_000,
            asks: 20_000,
            broadcasts: 5_000,
            cache_ops: 20_000,
        }
    } else {
        Sizes {
            round_trips: 10_000,
            asks: 100_000,
            broadcasts: 50_000,
            cache_ops: 200_000,
        }
    };
    let ping_rtt_us_median = crate::nodes::ping_rtt(&url, sizes.round_trips)?;
    let pubsub_rtt_us_median = crate::floor::pubsub_rtt(&url, sizes.round_trips)?;
    let nodes = OTHERS
        .iter()
        .map(|name| Node::start(&url, name))
        .collect::<std::io::Result<Vec<_>>>()?;
    let master_url = url.clone();
    let mut figures = crate::run_in_system(async move { master(&master_url, sizes).await })?;
    let publish_url = url.clone();
    figures.publish_per_s =
        crate::run_in_system(async move { publish_rate(&publish_url, sizes.broadcasts).await })?;
    figures.direct_ops_per_s =
        crate::run_in_system(async move { direct_ops(&url, sizes.cache_ops).await })?;
    for node in nodes {
        node.stop();
    }
    drop(redis);
    figures.ping_rtt_us_median = ping_rtt_us_median;
    figures.pubsub_rtt_us_median = pubsub_rtt_us_median;
    Ok(figures)
}

/// Node `a`'s figures.
async fn master(url: &str, sizes: Sizes) -> Result<CrossFigures, BoxError> {
    let config = ClusterConfig::new()
        .workers(WORKERS)
        .log(crate::bench_logs())
        .backend(backend(url, "a"));
    let cluster = ClusterSupervisor::start::<Echo>(config).await?;
    let result = master_figures(&cluster, sizes).await;
    cluster.stop().await?;
    result
}

async fn master_figures(cluster: &Cluster<Echo>, sizes: Sizes) -> Result<CrossFigures, BoxError> {
    wait_for_others(cluster).await?;
    let ping = EchoMsg::Ping;
    let ask = |node: &'static str, id: usize| {
        let ping = &ping;
        async move { cluster.ask_worker_on(node, id, ping, TIMEOUT).await }
    };
    let on_b = EchoMsg::OnNode {
        node: "b".into(),
        worker: 0,
        msg: Box::new(EchoMsg::Ping),
        tell: false,
        timeout_ms: TIMEOUT.as_millis() as u64,
    };
    let worker = cluster.worker(0);
    let mut figures = CrossFigures::nan();
    figures.rtt_us_median = median_us(sizes.round_trips, || ask("b", 0)).await?;
    figures.local_rtt_us_median = median_us(sizes.round_trips, || ask("a", 0)).await?;
    figures.worker_rtt_us_median = median_us(sizes.round_trips, || async {
        match worker.send(Call(on_b.clone())).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    figures.req_per_s = pipelined(sizes.asks, |i| ask("b", i % WORKERS)).await?;
    figures.local_req_per_s = pipelined(sizes.asks, |i| ask("a", i % WORKERS)).await?;
    figures.broadcast_per_s = match broadcast_rate(cluster, sizes.broadcasts).await {
        Ok(rate) => rate,
        Err(e) => {
            eprintln!("cross_node_broadcast_per_s: {e}");
            f64::NAN
        }
    };
    figures.cache_ops_per_s = cache_ops(&cluster.cache(), sizes.cache_ops).await?;
    Ok(figures)
}

/// Until every worker of `b` and `c` answers `a` (each node has joined and sees `a`).
async fn wait_for_others(cluster: &Cluster<Echo>) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in OTHERS {
        for id in 0..WORKERS {
            loop {
                let short = Duration::from_millis(500);
                match cluster.ask_worker_on(node, id, &EchoMsg::Ping, short).await {
                    Ok(EchoReply::Pong) => break,
                    Ok(other) => return Err(format!("{node}/{id} answered {other:?}").into()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("{node}/{id} did not answer within 30 s: {e}").into())
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
    Ok(())
}

/// The median of `count` round trips of `call` (each must answer `Pong`), µs, after a tenth
/// more to warm up.
async fn median_us<F, Fut, E>(count: usize, mut call: F) -> Result<f64, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<EchoReply, E>>,
    E: std::fmt::Display,
{
    let mut rtts = Vec::with_capacity(count + count / 10);
    for _ in 0..count + count / 10 {
        let t = Instant::now();
        let reply = call().await;
        let took = t.elapsed();
        match reply {
            Ok(EchoReply::Pong) => rtts.push(took),
            Ok(other) => return Err(format!("answered {other:?}").into()),
            Err(e) => return Err(e.to_string().into()),
        }
    }
    let mut rtts = rtts.split_off(count / 10);
    rtts.sort();
    Ok(crate::micros(rtts[rtts.len() / 2]))
}

/// `count` calls `call(i)` (each must answer `Pong`), `WINDOW` in flight; calls per second.
async fn pipelined<F, Fut, E>(count: usize, mut call: F) -> Result<f64, BoxError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<EchoReply, E>>,
    E: std::fmt::Display,
{
    let t = Instant::now();
    tokio::task::unconstrained(async {
        let mut window = FuturesUnordered::new();
        let (mut sent, mut answered) = (0, 0);
        while answered < count {
            while sent < count && window.len() < WINDOW {
                window.push(call(sent));
                sent += 1;
            }
            match window.next().await.expect("window is not empty") {
                Ok(EchoReply::Pong) => answered += 1,
                Ok(other) => return Err(format!("answered {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await?;
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// The one-way messages worker `id` of `node` has counted.
async fn tells(cluster: &Cluster<Echo>, node: &str, id: usize) -> Result<u64, BoxError> {
    match cluster
        .ask_worker_on(node, id, &EchoMsg::Stats, TIMEOUT)
        .await?
    {
        EchoReply::Stats { tells, .. } => Ok(tells),
        other => Err(format!("{node}/{id} answered {other:?}").into()),
    }
}

/// `count` broadcasts from `a`, `WINDOW` in flight, until every worker of `b` and `c` has
/// counted them all; broadcasts per second.
async fn broadcast_rate(cluster: &Cluster<Echo>, count: usize) -> Result<f64, BoxError> {
    let mut remote = Vec::new();
    for node in OTHERS {
        for id in 0..WORKERS {
            remote.push((node, id, tells(cluster, node, id).await?));
        }
    }
    let ping = EchoMsg::Ping;
    let t = Instant::now();
    tokio::task::unconstrained(async {
        let mut window = FuturesUnordered::new();
        let (mut sent, mut done) = (0, 0);
        while done < count {
            while sent < count && window.len() < WINDOW {
                window.push(cluster.broadcast(&ping));
                sent += 1;
            }
            window.next().await.expect("window is not empty")?;
            done += 1;
        }
        Ok::<_, procactor::Error>(())
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, id, before) in remote {
        loop {
            // A read refused while the broadcasts' publishes are still under way is retried.
            let got = match tells(cluster, node, id).await {
                Ok(now) => Some(now - before),
                Err(_) if Instant::now() < deadline => None,
                Err(e) => return Err(e),
            };
            if got.is_some_and(|got| got >= count as u64) {
                break;
            }
            if Instant::now() > deadline {
                let got = got.unwrap_or_default();
                return Err(format!("{node}/{id} received {got} of {count} within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// The key and whether operation `i` of the cache workload is a set.
fn op(i: u64) -> (String, bool) {
    (format!("k{}", i % KEYS), i % 4 == 0)
}

/// `count` operations of the workload through the cluster's cache; operations per second.
async fn cache_ops(
    cache: &procactor::cache::CacheClient<procactor::cache::MasterCache>,
    count: u64,
) -> Result<f64, BoxError> {
    let run = |i: u64, all_sets: bool| async move {
        let (key, set) = op(i);
        if set || all_sets {
            cache.set("bench", &key, &i, None).await
        } else {
            cache.get::<u64>("bench", &key).await.map(drop)
        }
    };
    windowed(KEYS, |i| run(i, true)).await?;
    let t = Instant::now();
    windowed(count, |i| run(i, false)).await?;
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// The same workload straight on redis-server; operations per second.
async fn direct_ops(url: &str, count: u64) -> Result<f64, BoxError> {
    let conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let run = |i: u64, all_sets: bool| {
        let mut conn = conn.clone();
        async move {
            let (key, set) = op(i);
            let key = format!("direct:{key}");
            if set || all_sets {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&i.to_le_bytes()[..])
                    .query_async::<()>(&mut conn)
                    .await
            } else {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .map(drop)
            }
        }
    };
    windowed(KEYS, |i| run(i, true)).await?;
    let t = Instant::now();
    windowed(count, |i| run(i, false)).await?;
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// Runs `op(0..count)`, `CACHE_WINDOW` in flight, every result awaited.
async fn windowed<F, Fut, E>(count: u64, mut op: F) -> Result<(), BoxError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    tokio::task::unconstrained(async {
        let mut window = FuturesUnordered::new();
        let (mut sent, mut done) = (0, 0);
        while done < count {
            while sent < count && window.len() < CACHE_WINDOW {
                window.push(op(sent));
                sent += 1;
            }
            window.next().await.expect("window is not empty")?;
            done += 1;
        }
        Ok::<_, E>(())
    })
    .await
    .map_err(|e| Box::new(e) as BoxError)
}

/// `count` bare `PUBLISH`es, `WINDOW` in flight, to a channel with 2 subscribers, timed until
/// both have received all; publishes per second.
async fn publish_rate(url: &str, count: usize) -> Result<f64, BoxError> {
    const CHANNEL: &str = "bench-cross-publish";
    let client = redis::Client::open(url)?;
    let mut received = Vec::new();
    for _ in 0..2 {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        let mut messages = pubsub.into_on_message();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_local(async move {
            let mut n = 0;
            while let Some(msg) = messages.next().await {
                if msg.get_payload_bytes() != b"ready" {
                    n += 1;
                    if n == count {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                }
            }
        });
        received.push(rx);
    }
    let mut conn = client.get_multiplexed_async_connection().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg("ready")
        .query_async::<i64>(&mut conn)
        .await?
        < 2
    {
        if Instant::now() > deadline {
            return Err("the 2 subscribers were not subscribed within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let payload = [0x5au8; 32];
    let t = Instant::now();
    let publish = |_| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&payload[..])
                .query_async::<i64>(&mut conn)
                .await
                .map(drop)
        }
    };
    windowed(count as u64, publish).await?;
    let mut last = t;
    for rx in received {
        let at = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| "a subscriber did not receive every publish within 30 s")?
            .map_err(|_| "a subscriber's connection ended")?;
        last = last.max(at);
    }
    Ok(count as f64 / last.duration_since(t).as_secs_f64())
}

/// The master of node `b` or `c`, a child process: SIGTERM by its pid and reaped by `stop`,
/// SIGKILL and reaped if dropped before.
struct Node(Option<Child>);

impl Node {
    fn start(url: &str, name: &str) -> std::io::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, format!("{url} {name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self(Some(child)))
    }

    /// SIGTERM (the master stops its workers and leaves), reaped; SIGKILL after 10 s.
    fn stop(mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
