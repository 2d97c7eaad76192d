//! CPU affinity applied when each worker process starts.

mod common;

use common::cluster::{echo_config, within};
use common::status_field;
use procactor::actors::echo::Echo;
use procactor::prelude::*;
use procactor::{Affinity, Error};

/// The CPUs this test process may run on, as the kernel lists them.
fn allowed() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

async fn cpus_of(cluster: &Cluster<Echo>) -> Vec<String> {
    cluster
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| status_field(w.pid.unwrap(), "Cpus_allowed_list").unwrap())
        .collect()
}

#[actix::test]
async fn workers_run_on_the_cpus_they_were_given() {
    within(60, async {
        let cpus = allowed();
        let first = cpus[0];
        let config = echo_config(2).affinity(Affinity::Cpus(vec![first]));
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        assert_eq!(
            cpus_of(&cluster).await,
            [first.to_string(), first.to_string()]
        );
        // A restarted worker is pinned again.
        cluster.kill(1).await.unwrap();
        common::eventually(
            std::time::Duration::from_secs(20),
            "worker 1 again",
            || async { cluster.workers().await.unwrap()[1].state == procactor::WorkerState::Ready },
        )
        .await;
        assert_eq!(cpus_of(&cluster).await[1], first.to_string());
        cluster.stop().await.unwrap();

        let config = echo_config(3).affinity(Affinity::OnePerWorker);
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let expected: Vec<String> = (0..3).map(|i| cpus[i % cpus.len()].to_string()).collect();
        assert_eq!(cpus_of(&cluster).await, expected);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn an_unknown_cpu_is_refused_before_anything_starts() {
    within(30, async {
        for cpus in [vec![100_000], vec![]] {
            let config = echo_config(1).affinity(Affinity::Cpus(cpus.clone()));
            match ClusterSupervisor::start::<Echo>(config).await {
                Err(Error::Config(e)) => assert_eq!(e.field, "affinity", "{cpus:?}: {e}"),
                other => panic!("{cpus:?}: {other:?}"),
            }
        }
    })
    .await;
}
