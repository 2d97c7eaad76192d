//! What serving metrics costs: a round trip with metrics off and on (each request is then timed
//! for the latency histogram), alternated in one process with the master's thread and the worker
//! pinned as in `scale`; and one scrape of a 64-worker cluster, from connect to the last byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use procactor::actors::echo::{Echo, EchoMsg};
use procactor::prelude::*;

/// Workers of the scraped cluster.
const SCRAPED_WORKERS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub(crate) struct MetricsFigures {
    pub(crate) rtt_us_median_off: f64,
    pub(crate) rtt_us_median_on: f64,
    pub(crate) scrape_ms_median: f64,
    pub(crate) scrape_kb: f64,
}

impl MetricsFigures {
    /// Figures of a run that did not measure metrics.
    pub(crate) fn nan() -> Self {
        Self {
            rtt_us_median_off: f64::NAN,
            rtt_us_median_on: f64::NAN,
            scrape_ms_median: f64::NAN,
            scrape_kb: f64::NAN,
        }
    }
}

pub(crate) async fn measure(quick: bool) -> Result<MetricsFigures, procactor::Error> {
    let round_trips = if quick { 2_000 } else { 20_000 };
    let config = ClusterConfig::new().log(crate::bench_logs()).workers(1);
    // Off and on in turn, three times each: the medians of each side's medians.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (metrics, into) in [(false, &mut off), (true, &mut on)] {
            let config = if metrics {
                config.clone().metrics("127.0.0.1:0")
            } else {
                config.clone()
            };
            let cluster = ClusterSupervisor::start::<Echo>(config).await?;
            into.push(crate::scale::median_rtt(&cluster.worker(0), round_trips).await?);
            cluster.stop().await?;
        }
    }
    let (scrape_ms_median, scrape_kb) = scrape(quick).await?;
    Ok(MetricsFigures {
        rtt_us_median_off: median(off),
        rtt_us_median_on: median(on),
        scrape_ms_median,
        scrape_kb,
    })
}

/// The median time of a scrape of a cluster of [`SCRAPED_WORKERS`] workers that each answered
/// some requests, and the size of its body.
async fn scrape(quick: bool) -> Result<(f64, f64), procactor::Error> {
    let config = ClusterConfig::new()
        .log(crate::bench_logs())
        .workers(SCRAPED_WORKERS)
        .metrics("127.0.0.1:0");
    let cluster = ClusterSupervisor::start::<Echo>(config).await?;
    for id in 0..SCRAPED_WORKERS {
        for _ in 0..10 {
            cluster.worker(id).send(Call(EchoMsg::Ping)).await??;
        }
    }
    let addr = cluster.metrics_addr().expect("metrics on");
    let scrapes = if quick { 5 } else { 30 };
    // The client blocks, so it runs off the master's thread, which serves the endpoint.
    let (times, bytes) = tokio::task::spawn_blocking(move || {
        let mut times = Vec::with_capacity(scrapes);
        let mut bytes = 0;
        for _ in 0..scrapes {
            let t = Instant::now();
            bytes = get_metrics(addr)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, std::io::Error>((times, bytes))
    })
    .await
    .expect("the scraping thread")?;
    cluster.stop().await?;
    Ok((median(times), bytes as f64 / 1024.0))
}

/// One `GET /metrics` on a fresh connection; the size of the response.
fn get_metrics(addr: SocketAddr) -> std::io::Result<usize> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("the scrape was not answered 200"));
    }
    Ok(response.len())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
