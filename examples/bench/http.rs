//! HTTP figures: requests per second through 4 workers against 1 worker on the shared port, and
//! a 4-worker rolling reload under load (its duration, each worker's replacement and drain, and
//! failed requests) against the naive restart (every worker killed and restarted by the
//! supervisor) under the same load.
//!
//! The load comes from OS threads in this process with the tests' hand-written HTTP/1.1 client,
//! so client and servers share the machine's cores. The client never resends a request: every
//! request that got no complete response counts as failed.

#[path = "../../tests/common/http.rs"]
mod client;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client::{Load, LoadOptions};
use procactor::actors::http::{HttpMsg, HttpReply, HttpWorker};
use procactor::prelude::*;
use procactor::{Backoff, Intensity, ListenAddr, RestartPolicy};

/// Set in the workers' environment: run the HTTP worker, not the echo worker.
pub(crate) const ROLE_ENV: &str = "PROCACTOR_BENCH_WORKER";

#[derive(Debug, Default)]
pub(crate) struct HttpFigures {
    pub(crate) req_per_s_4w: f64,
    pub(crate) req_per_s_1w: f64,
    pub(crate) reload_ms: f64,
    pub(crate) reload_failed_requests: f64,
    /// Per worker, from its `Replace` until its new process served (the mean).
    pub(crate) reload_worker_ms: f64,
    /// Per worker, from the hand-over until its old process exited (the longest).
    pub(crate) reload_drain_ms_max: f64,
    pub(crate) kill_restart_ms: f64,
    pub(crate) kill_restart_failed_requests: f64,
}

impl HttpFigures {
    /// Figures of a run that did not measure HTTP.
    pub(crate) fn nan() -> Self {
        Self {
            req_per_s_4w: f64::NAN,
            req_per_s_1w: f64::NAN,
            reload_ms: f64::NAN,
            reload_worker_ms: f64::NAN,
            reload_drain_ms_max: f64::NAN,
            kill_restart_ms: f64::NAN,
            reload_failed_requests: f64::NAN,
            kill_restart_failed_requests: f64::NAN,
        }
    }
}

pub(crate) fn is_http_worker() -> bool {
    std::env::var_os(ROLE_ENV).is_some_and(|v| v == "http")
}

pub(crate) fn run_http_worker() -> Result<(), procactor::Error> {
    procactor::run_worker(HttpWorker::default())
}

fn config(workers: usize) -> ClusterConfig {
    ClusterConfig::new()
        .log(crate::bench_logs())
        .workers(workers)
        .env(ROLE_ENV, "http")
        .env(procactor::actors::http::SHUTDOWN_SECS_ENV, "10")
        .shutdown_timeout(Duration::from_secs(15))
        .listen("http", "127.0.0.1:0")
        .restart(RestartPolicy {
            backoff: Backoff::none(),
            intensity: Intensity {
                max_restarts: 100,
                period: Duration::from_secs(1),
            },
            ..RestartPolicy::default()
        })
}

fn addr_of(cluster: &Cluster<HttpWorker>) -> SocketAddr {
    match cluster.local_addr("http") {
        Some(ListenAddr::Tcp(addr)) => addr,
        other => unreachable!("{other:?}"),
    }
}

async fn pids(cluster: &Cluster<HttpWorker>) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for w in cluster.addrs() {
        if let Ok(Ok(HttpReply::Pid(pid))) = w.send(Call(HttpMsg::Pid)).await {
            pids.insert(pid);
        }
    }
    pids
}

/// Keep-alive requests per second over `window`, after a warm-up.
async fn throughput(workers: usize, window: Duration) -> Result<f64, procactor::Error> {
    let cluster = ClusterSupervisor::start::<HttpWorker>(config(workers)).await?;
    let load = Load::start(
        addr_of(&cluster),
        LoadOptions {
            threads_keepalive: 8,
            threads_new_conn: 0,
            path: "/".into(),
        },
    );
    tokio::time::sleep(window / 4).await;
    let (before, t) = (load.stats().ok, Instant::now());
    tokio::time::sleep(window).await;
    let rate = (load.stats().ok - before) as f64 / t.elapsed().as_secs_f64();
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
    cluster.stop().await?;
    Ok(rate)
}

pub(crate) async fn measure(quick: bool) -> Result<HttpFigures, procactor::Error> {
    let window = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let mut figures = HttpFigures {
        req_per_s_4w: throughput(4, window).await?,
        req_per_s_1w: throughput(1, window).await?,
        ..HttpFigures::default()
    };

    let cluster = ClusterSupervisor::start::<HttpWorker>(config(4)).await?;
    let options = LoadOptions {
        threads_keepalive: 2,
        threads_new_conn: 2,
        path: "/".into(),
    };

    // A rolling reload under load.
    let load = Load::start(addr_of(&cluster), options.clone());
    tokio::time::sleep(window / 4).await;
    let report = cluster.reload().await?;
    figures.reload_ms = report.elapsed.as_secs_f64() * 1e3;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let workers = report.replaced.len().max(1) as f64;
    figures.reload_worker_ms =
        report.replaced.iter().map(|r| ms(r.ready_in)).sum::<f64>() / workers;
    figures.reload_drain_ms_max = report
        .replaced
        .iter()
        .filter_map(|r| match &r.old_exit {
            procactor::OldExit::Exited { drained_in, .. } => Some(ms(*drained_in)),
            _ => None,
        })
        .fold(0.0, f64::max);
    tokio::time::sleep(window / 4).await;
    let stats = load.stop();
    figures.reload_failed_requests = stats.failures as f64;

    // The naive restart under the same load: kill every worker, let the supervisor restart it.
    let load = Load::start(addr_of(&cluster), options);
    tokio::time::sleep(window / 4).await;
    let old = pids(&cluster).await;
    let t = Instant::now();
    cluster.kill_all().await?;
    loop {
        let now = pids(&cluster).await;
        if now.len() == 4 && now.is_disjoint(&old) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    figures.kill_restart_ms = t.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(window / 4).await;
    figures.kill_restart_failed_requests = load.stop().failures as f64;
    cluster.stop().await?;
    Ok(figures)
}
