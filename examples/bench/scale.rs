//! How cost grows with the number of workers: 256 idle echo workers under one master, measured
//! in a fresh process of this bench (so the master's memory is its own): the master's resident
//! memory per 100 workers, the time to start them all, the master's CPU while they idle
//! (heartbeats on, at their default interval), and one worker's round trip while the 255 others
//! idle, beside the same round trip with one worker, measured in the same process. Both round
//! trips are taken with the master's thread and the worker pinned to two CPUs (see `pinned`):
//! unpinned, the scheduler's placement alone moves a round trip between ≈12 and ≈45 µs.

use std::time::{Duration, Instant};

use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;

/// Workers of the scaled cluster.
pub(crate) const WORKERS: usize = 256;

/// Set in the environment of the bench's own child that measures the scale figures.
const CHILD_ENV: &str = "PROCACTOR_BENCH_SCALE";

#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaleFigures {
    pub(crate) master_rss_mb_per_100_workers: f64,
    pub(crate) start_256_workers_ms: f64,
    pub(crate) idle_master_cpu_pct_256_workers: f64,
    pub(crate) rtt_us_median_256_workers: f64,
    /// The same round trip with a cluster of one worker, in the same process.
    pub(crate) rtt_us_median_1_worker: f64,
}

impl ScaleFigures {
    /// Figures of a run that did not measure scale.
    pub(crate) fn nan() -> Self {
        Self {
            master_rss_mb_per_100_workers: f64::NAN,
            start_256_workers_ms: f64::NAN,
            idle_master_cpu_pct_256_workers: f64::NAN,
            rtt_us_median_256_workers: f64::NAN,
            rtt_us_median_1_worker: f64::NAN,
        }
    }
}

pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child: measures and prints the figures on one line.
pub(crate) fn child_main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var(CHILD_ENV)? == "quick";
    let f = crate::run_in_system(measure(quick))?;
    println!(
        "{} {} {} {} {}",
        f.master_rss_mb_per_100_workers,
        f.start_256_workers_ms,
        f.idle_master_cpu_pct_256_workers,
        f.rtt_us_median_256_workers,
        f.rtt_us_median_1_worker
    );
    Ok(())
}

/// Runs [`measure`] in a fresh process of this bench and reads its figures.
pub(crate) fn measure_in_child(quick: bool) -> Result<ScaleFigures, Box<dyn std::error::Error>> {
    let [rss, start, cpu, rtt, rtt_1] =
        crate::child_figures(CHILD_ENV, if quick { "quick" } else { "full" })?;
    Ok(ScaleFigures {
        master_rss_mb_per_100_workers: rss,
        start_256_workers_ms: start,
        idle_master_cpu_pct_256_workers: cpu,
        rtt_us_median_256_workers: rtt,
        rtt_us_median_1_worker: rtt_1,
    })
}

async fn measure(quick: bool) -> Result<ScaleFigures, procactor::Error> {
    let round_trips = if quick { 2_000 } else { 20_000 };
    let idle_for = Duration::from_secs(if quick { 2 } else { 6 });
    let config = ClusterConfig::new().log(crate::bench_logs());

    // One worker first: the round trip to compare with.
    let cluster = ClusterSupervisor::start::<Echo>(config.clone().workers(1)).await?;
    let rtt_us_median_1_worker = median_rtt(&cluster.worker(0), round_trips).await?;
    cluster.stop().await?;

    let rss_before = crate::rss_mb("VmRSS:");
    let t = Instant::now();
    let cluster = ClusterSupervisor::start::<Echo>(config.workers(WORKERS)).await?;
    let start_256_workers_ms = t.elapsed().as_secs_f64() * 1e3;
    // Every worker answers once, so each has a process, pipes and a proxy in full use.
    for id in 0..WORKERS {
        cluster.worker(id).send(Call(EchoMsg::Ping)).await??;
    }
    let master_rss_mb_per_100_workers =
        (crate::rss_mb("VmRSS:") - rss_before) * 100.0 / WORKERS as f64;

    // The master's CPU (every thread of it) while the workers idle, heartbeats going.
    let (cpu_before, wall) = (cpu_seconds(), Instant::now());
    actix::clock::sleep(idle_for).await;
    let idle_master_cpu_pct_256_workers =
        (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64() * 100.0;

    let rtt_us_median_256_workers = median_rtt(&cluster.worker(WORKERS / 2), round_trips).await?;
    cluster.stop().await?;
    Ok(ScaleFigures {
        master_rss_mb_per_100_workers,
        start_256_workers_ms,
        idle_master_cpu_pct_256_workers,
        rtt_us_median_256_workers,
        rtt_us_median_1_worker,
    })
}

/// The median of `count` round trips to `w`, one at a time, after a warm-up; with this thread
/// and the worker pinned to two CPUs when there are two.
pub(crate) async fn median_rtt(
    w: &Addr<Worker<Echo>>,
    count: usize,
) -> Result<f64, procactor::Error> {
    let pinned = match crate::pinned::two_cpus() {
        Some((master, worker)) => {
            let EchoReply::Pid(pid) = w.send(Call(EchoMsg::Pid)).await?? else {
                unreachable!("Pid answers its pid");
            };
            crate::pinned::pin_process(pid, worker).map_err(procactor::Error::Io)?;
            Some(crate::pinned::pin_this_thread(master).map_err(procactor::Error::Io)?)
        }
        None => None,
    };
    let result = async {
        for _ in 0..1_000 {
            w.send(Call(EchoMsg::Ping)).await??;
        }
        let mut rtts = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            w.send(Call(EchoMsg::Ping)).await??;
            rtts.push(t.elapsed());
        }
        rtts.sort();
        Ok::<_, procactor::Error>(rtts[rtts.len() / 2].as_secs_f64() * 1e6)
    }
    .await;
    if let Some(before) = pinned {
        crate::pinned::restore(before).map_err(procactor::Error::Io)?;
    }
    result
}

/// CPU time (user + system) this process has used, every thread, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks / per_second
}
