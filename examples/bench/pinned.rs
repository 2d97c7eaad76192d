//! Round trips with both processes pinned, for procactor and the raw pipe alike: on two CPUs
//! (cross-core) and on one (same-core). Unpinned, this VM's scheduler flips between the two,
//! and the round trip with it (≈12 µs against ≈45 µs), whichever side is measured.

use std::io;
use std::time::Instant;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use procactor::actors::echo::{Echo, EchoMsg};
use procactor::prelude::*;
use procactor::Affinity;

/// Two CPUs this process may run on, if it has two.
pub(crate) fn two_cpus() -> Option<(usize, usize)> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut cpus = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    Some((cpus.next()?, cpus.next()?))
}

fn one(cpu: usize) -> io::Result<CpuSet> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::other)?;
    Ok(set)
}

/// Pins the calling thread to `cpu`; returns what to restore.
pub(crate) fn pin_this_thread(cpu: usize) -> io::Result<CpuSet> {
    let before = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::other)?;
    sched_setaffinity(Pid::from_raw(0), &one(cpu)?).map_err(io::Error::other)?;
    Ok(before)
}

/// Pins process `pid` (its main thread) to `cpu`.
pub(crate) fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    sched_setaffinity(Pid::from_raw(pid as i32), &one(cpu)?).map_err(io::Error::other)
}

pub(crate) fn restore(set: CpuSet) -> io::Result<()> {
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::other)
}

/// Median procactor round trip with the master's thread on CPU `master` and the worker on
/// CPU `worker`.
pub(crate) async fn procactor_rtt(
    config: ClusterConfig,
    master: usize,
    worker: usize,
    round_trips: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let restore_to = pin_this_thread(master)?;
    let config = config.workers(1).affinity(Affinity::Cpus(vec![worker]));
    let result = async {
        let cluster = ClusterSupervisor::start::<Echo>(config).await?;
        let w = cluster.worker(0);
        for _ in 0..1_000 {
            w.send(Call(EchoMsg::Ping)).await??;
        }
        let mut rtts = Vec::with_capacity(round_trips);
        for _ in 0..round_trips {
            let t = Instant::now();
            w.send(Call(EchoMsg::Ping)).await??;
            rtts.push(t.elapsed());
        }
        cluster.stop().await?;
        rtts.sort();
        Ok::<_, procactor::Error>(rtts[rtts.len() / 2].as_secs_f64() * 1e6)
    }
    .await;
    restore(restore_to)?;
    Ok(result?)
}
