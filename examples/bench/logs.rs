//! Log figures: records per second from 4 workers into the JSON-lines files, beside the same
//! records written straight into a `FileSink` by this process alone (the floor); and the
//! master's resident memory while a worker floods 100 MB to stderr, beside it at rest.

use std::time::{Duration, Instant};

use crate::relay::{Relay, RelayMsg};
use procactor::logger::{FileConfig, FileSink, Kind, LogConfig, Record, Sink, Source};
use procactor::prelude::*;

use crate::http::ROLE_ENV;

#[derive(Debug, Default)]
pub(crate) struct LogFigures {
    pub(crate) records_per_s: f64,
    pub(crate) direct_records_per_s: f64,
    pub(crate) flood_master_rss_mb: f64,
    pub(crate) idle_master_rss_mb: f64,
}

impl LogFigures {
    /// Figures of a run that did not measure the logs.
    pub(crate) fn nan() -> Self {
        Self {
            records_per_s: f64::NAN,
            direct_records_per_s: f64::NAN,
            flood_master_rss_mb: f64::NAN,
            idle_master_rss_mb: f64::NAN,
        }
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("procactor-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// Set in the environment of the bench's own child that measures the logs, so that the
/// master's memory is that of a fresh process.
const CHILD_ENV: &str = "PROCACTOR_BENCH_LOGS";

pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child: measures and prints the four figures on one line.
pub(crate) fn child_main() -> Result<(), Box<dyn std::error::Error>> {
    let per_worker = std::env::var(CHILD_ENV)?.parse()?;
    let f = crate::run_in_system(measure(per_worker))?;
    println!(
        "{} {} {} {}",
        f.records_per_s, f.direct_records_per_s, f.flood_master_rss_mb, f.idle_master_rss_mb
    );
    Ok(())
}

/// Runs [`measure`] in a fresh process of this bench and reads its figures.
pub(crate) fn measure_in_child(quick: bool) -> Result<LogFigures, Box<dyn std::error::Error>> {
    let per_worker: u64 = if quick { 10_000 } else { 100_000 };
    let [records_per_s, direct_records_per_s, flood_master_rss_mb, idle_master_rss_mb] =
        crate::child_figures(CHILD_ENV, &per_worker.to_string())?;
    Ok(LogFigures {
        records_per_s,
        direct_records_per_s,
        flood_master_rss_mb,
        idle_master_rss_mb,
    })
}

pub(crate) async fn measure(per_worker: u64) -> Result<LogFigures, procactor::Error> {
    let mut figures = LogFigures::default();
    let dir = temp_dir("logs");
    let config = ClusterConfig::new()
        .workers(4)
        .env(ROLE_ENV, "relay")
        .log(LogConfig {
            dir: Some(dir.clone()),
            tracing: false,
            max_bytes: 1 << 30,
            ..LogConfig::default()
        });
    let cluster = ClusterSupervisor::start::<Relay>(config).await?;
    let t = Instant::now();
    let runs: Vec<_> = (0..4)
        .map(|w| cluster.worker(w).send(Call(RelayMsg::LogMany(per_worker))))
        .collect();
    for run in runs {
        run.await??;
    }
    let total = 4 * per_worker as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let elapsed = loop {
        cluster.flush_logs().await?;
        // What was queued before the flush is in the file now: the time is taken here. The
        // count that checks it reads the whole file (80 MB) and is no part of the pipeline.
        let elapsed = t.elapsed();
        if lines(&dir.join("ip.log")) >= total || Instant::now() > deadline {
            break elapsed;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    figures.records_per_s = total as f64 / elapsed.as_secs_f64();

    // The master at rest, then while worker 0 floods stderr.
    figures.idle_master_rss_mb = crate::rss_mb("VmRSS:");
    let sampling = std::rc::Rc::new(std::cell::Cell::new(true));
    let peak = std::rc::Rc::new(std::cell::Cell::new(0.0f64));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        actix::spawn(async move {
            while sampling.get() {
                peak.set(peak.get().max(crate::rss_mb("VmRSS:")));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    cluster
        .worker(0)
        .send(Call(RelayMsg::StderrFlood { mb: 100 }))
        .await??;
    cluster.flush_logs().await?;
    sampling.set(false);
    let _ = sampler.await;
    figures.flood_master_rss_mb = peak.get();
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);

    // The floor: the same records written by this process alone.
    let dir = temp_dir("direct");
    let mut sink =
        FileSink::open(FileConfig::new(&dir).max_bytes(1 << 30)).map_err(procactor::Error::Io)?;
    let source = Source {
        worker: Some(0),
        pid: std::process::id(),
        generation: 1,
        group: "workers".into(),
    };
    let t = Instant::now();
    for _ in 0..total {
        let record = Record::ip(
            source.clone(),
            "10.0.0.1",
            "GET",
            "/bench",
            200,
            Duration::from_micros(100),
        );
        sink.write(&record).map_err(procactor::Error::Io)?;
    }
    sink.flush().map_err(procactor::Error::Io)?;
    figures.direct_records_per_s = total as f64 / t.elapsed().as_secs_f64();
    drop(sink);
    let _ = (Kind::Ip, std::fs::remove_dir_all(&dir));
    Ok(figures)
}
