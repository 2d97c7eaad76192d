//! Several-hosts figures, on a `redis-server` on 127.0.0.1 started by the bench (as the cache
//! section's baseline is; every figure is `NaN`, `null` in JSON, when it is not installed).
//!
//! - `node_loss_detect_ms`: a master SIGKILLed → another master's `NodeEvent::Left` for it, the
//!   median over a few trials (5; 1 with `--quick`), beside `node_timeout_ms`, the key's time
//!   to live (the default, 3 000 ms), its baseline: a killed master's key expires
//!   `node_timeout` after its last beat, so the figure is about `node_timeout` minus the time
//!   since that beat (up to one heartbeat, 1 s), plus the read just after the expiry (target:
//!   ≤ 3 500). The observer is a cluster in this process; each victim is this bench re-run as
//!   a master of the same cluster (one echo worker), killed by its pid once the observer has
//!   seen it join, after a delay that puts the kills of the trials at points spread evenly
//!   over the victim's heartbeat (the median is then that of a kill at a random moment, about
//!   `node_timeout` minus half a heartbeat).
//! - `redis_ping_rtt_us_median`: a bare `PING` round trip with redis-rs (one connection, one
//!   command at a time) on the same server, the floor of any figure across nodes to come.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use procactor::actors::echo::Echo;
use procactor::backend::{Backend, NodeEvent, RedisBackend};
use procactor::prelude::*;

/// Set in the environment of a victim master: the Redis URL and its node name, `url name`.
const CHILD_ENV: &str = "PROCACTOR_BENCH_NODE";

/// The cluster's name in Redis.
const CLUSTER: &str = "bench";

#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeFigures {
    pub(crate) loss_detect_ms: f64,
    pub(crate) node_timeout_ms: f64,
    pub(crate) ping_rtt_us_median: f64,
    /// Whether `redis-server` is installed (the figures are `NaN` when not).
    pub(crate) redis: bool,
}

impl NodeFigures {
    /// Figures of a run that did not measure this section.
    pub(crate) fn nan() -> Self {
        Self {
            loss_detect_ms: f64::NAN,
            node_timeout_ms: f64::NAN,
            ping_rtt_us_median: f64::NAN,
            redis: true,
        }
    }
}

pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A node of the bench's cluster, with the default timings.
fn backend(url: &str, name: &str) -> RedisBackend {
    Backend::redis(url).cluster(CLUSTER).node(name)
}

/// A victim: a master with one echo worker in the cluster, until it is killed.
pub(crate) fn child_main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = std::env::var(CHILD_ENV)?;
    let (url, name) = spec
        .split_once(' ')
        .ok_or("PROCACTOR_BENCH_NODE: url name")?;
    let config = ClusterConfig::new()
        .workers(1)
        .log(crate::bench_logs())
        .backend(backend(url, name));
    crate::run_in_system(async move {
        let cluster = ClusterSupervisor::start::<Echo>(config).await?;
        cluster.wait().await
    })?;
    Ok(())
}

/// Measures the section: `trials` kills, and `pings` round trips.
pub(crate) fn measure(quick: bool) -> Result<NodeFigures, Box<dyn std::error::Error>> {
    let Some(redis) = crate::cache::Redis::start()? else {
        return Ok(NodeFigures {
            redis: false,
            ..NodeFigures::nan()
        });
    };
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let (trials, pings) = if quick { (1, 1_000) } else { (5, 10_000) };
    let ping_rtt_us_median = ping_rtt(&url, pings)?;
    let observed = url.clone();
    let mut losses = crate::run_in_system(async move { observe(&observed, trials).await })?;
    losses.sort_by(f64::total_cmp);
    let node_timeout = backend(&url, "observer").node_timeout;
    drop(redis);
    Ok(NodeFigures {
        loss_detect_ms: losses[losses.len() / 2],
        node_timeout_ms: node_timeout.as_secs_f64() * 1e3,
        ping_rtt_us_median,
        redis: true,
    })
}

/// The median `PING` round trip, µs, on one connection.
pub(crate) fn ping_rtt(url: &str, count: usize) -> redis::RedisResult<f64> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count + count / 10 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut conn)?;
        rtts.push(t.elapsed());
    }
    // The first tenth warms up.
    let mut rtts = rtts.split_off(count / 10);
    rtts.sort();
    Ok(crate::micros(rtts[rtts.len() / 2]))
}

/// Forwards the observer's node events, timed on arrival.
struct Watch(tokio::sync::mpsc::UnboundedSender<(Instant, NodeEvent)>);

impl Actor for Watch {
    type Context = Context<Self>;
}

impl Handler<NodeEvent> for Watch {
    type Result = ();

    fn handle(&mut self, event: NodeEvent, _: &mut Context<Self>) {
        let _ = self.0.send((Instant::now(), event));
    }
}

/// The observer: `trials` times, a victim started, seen joining, SIGKILLed, seen gone; the
/// kill → `Left` times in ms.
async fn observe(url: &str, trials: usize) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let config = ClusterConfig::new()
        .workers(1)
        .log(crate::bench_logs())
        .backend(backend(url, "observer"));
    let cluster = ClusterSupervisor::builder::<Echo>(config)
        .on_node(Watch(tx).start().recipient())
        .start()
        .await?;
    let heartbeat = backend(url, "observer").heartbeat;
    let mut losses = Vec::new();
    for trial in 0..trials {
        let name = format!("victim-{trial}");
        let mut victim = Victim::start(url, &name)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        next(
            &mut events,
            deadline,
            |e| matches!(e, NodeEvent::Joined(node) if node.id.name == name),
        )
        .await
        .map_err(|e| format!("{name} did not join: {e}"))?;
        // Killed at a point of its beat that differs from trial to trial, spread evenly over
        // one heartbeat: what is detected is the key's expiry, timed from the last beat.
        let phase = heartbeat.mul_f64((trial as f64 + 0.5) / trials as f64);
        tokio::time::sleep(phase).await;
        let killed = victim.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        let left = next(
            &mut events,
            deadline,
            |e| matches!(e, NodeEvent::Left { node, .. } if node.id.name == name),
        )
        .await
        .map_err(|e| format!("{name} was not seen gone: {e}"))?;
        losses.push(left.duration_since(killed).as_secs_f64() * 1e3);
    }
    cluster.stop().await?;
    Ok(losses)
}

/// When the first event `pred` accepts arrived, waiting until `deadline`.
async fn next(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, NodeEvent)>,
    deadline: Instant,
    pred: impl Fn(&NodeEvent) -> bool,
) -> Result<Instant, String> {
    loop {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some((at, event))) if pred(&event) => return Ok(at),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the observer stopped".into()),
            Err(_) => return Err("timed out".into()),
        }
    }
}

/// A victim master, killed (by its pid) and reaped when dropped if not before.
struct Victim(std::process::Child);

impl Victim {
    fn start(url: &str, name: &str) -> std::io::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, format!("{url} {name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self(child))
    }

    /// SIGKILL; returns when it was sent. Its worker exits on its own once the master is gone.
    fn kill(&mut self) -> Instant {
        let _ = self.0.kill();
        let at = Instant::now();
        let _ = self.0.wait();
        at
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
