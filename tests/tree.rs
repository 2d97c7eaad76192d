//! Supervision trees: a worker that runs a cluster of its own (master → supervisor worker →
//! leaf workers). Its leaves die with it, it comes back with fresh leaves, and when its own
//! cluster gives up, it exits abnormally for its supervisor to handle.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{collector, echo_config, next_matching, relay, relay_config, within};
use common::is_alive;
use common::relay::{Relay, RelayMsg, RelayReply, CRASH_FROM_ENV, LEAVES_ENV};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{ExitReason, Role, WorkerState};

async fn leaves(cluster: &Cluster<Relay>) -> BTreeSet<u32> {
    match relay(cluster, 0, RelayMsg::LeafPids).await {
        RelayReply::Entries(pids) => pids.values().map(|&p| p as u32).collect(),
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn killing_the_middle_supervisor_leaves_no_leaf_and_it_comes_back_with_fresh_ones() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(1).env(LEAVES_ENV, "2"))
            .await
            .unwrap();
        let middle = cluster.workers().await.unwrap()[0].pid.unwrap();
        let old = leaves(&cluster).await;
        assert_eq!(old.len(), 2);
        for leaf in &old {
            assert_eq!(
                common::ppid(*leaf),
                Some(middle),
                "leaf {leaf} is the middle's child"
            );
        }

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(middle as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(
            common::wait_until_async(Duration::from_secs(10), || old
                .iter()
                .all(|&p| !is_alive(p)))
            .await,
            "a leaf outlived its supervisor: {old:?}"
        );

        common::eventually(Duration::from_secs(30), "the middle's restart", || async {
            let info = &cluster.workers().await.unwrap()[0];
            info.state == WorkerState::Ready && info.generation == 2
        })
        .await;
        let fresh = leaves(&cluster).await;
        assert_eq!(fresh.len(), 2);
        assert!(fresh.is_disjoint(&old));
        assert!(fresh.iter().all(|&p| is_alive(p)));
        cluster.stop().await.unwrap();
        assert!(
            common::wait_until_async(Duration::from_secs(10), || fresh
                .iter()
                .all(|&p| !is_alive(p)))
            .await,
            "a leaf outlived the stop: {fresh:?}"
        );
    })
    .await;
}

#[actix::test]
async fn a_middle_supervisor_that_gives_up_exits_abnormally_for_the_one_above() {
    within(120, async {
        let (events, mut seen) = collector::<WorkerEvent>();
        // Leaves of generation 2 and later crash as they start: one kill starts a crash loop.
        let config = relay_config(1)
            .env(LEAVES_ENV, "2")
            .env(CRASH_FROM_ENV, "2");
        let cluster = ClusterSupervisor::builder::<Relay>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let old = leaves(&cluster).await;
        assert_eq!(
            relay(&cluster, 0, RelayMsg::KillLeaf(0)).await,
            RelayReply::Done
        );
        let exit = next_matching(&mut seen, Duration::from_secs(30), |e| {
            e.worker == 0 && e.generation == 1 && matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("the middle supervisor exits");
        let WorkerEventKind::Exited {
            reason,
            last_stderr,
            ..
        } = exit.kind
        else {
            unreachable!()
        };
        assert_eq!(reason, ExitReason::Exited(1));
        assert!(
            last_stderr
                .iter()
                .any(|l| l.contains("its own workers failed")),
            "{last_stderr:?}"
        );
        assert!(
            common::wait_until_async(Duration::from_secs(10), || old
                .iter()
                .all(|&p| !is_alive(p)))
            .await
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

/// Asks the echo worker `id` of `cluster`.
async fn echo(cluster: &Cluster<Echo>, id: WorkerId, msg: EchoMsg) -> EchoReply {
    cluster.worker(id).send(Call(msg)).await.unwrap().unwrap()
}

#[actix::test]
async fn a_worker_that_runs_a_cluster_tells_its_own_role_from_its_workers() {
    within(120, async {
        assert_eq!(
            procactor::role(),
            Role::Master,
            "the test process is the top"
        );
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(1))
            .await
            .unwrap();
        let middle = Role::Worker {
            id: 0,
            group: procactor::DEFAULT_GROUP.into(),
            depth: 1,
        };
        assert_eq!(
            echo(&cluster, 0, EchoMsg::Role).await,
            EchoReply::Role(middle.clone())
        );

        assert_eq!(echo(&cluster, 0, EchoMsg::Nest(2)).await, EchoReply::Done);
        let mut leaves = Vec::new();
        for id in 0..2 {
            let ask = |msg| EchoMsg::ToNested {
                worker: id,
                msg: Box::new(msg),
            };
            // The same program, one level down: a worker of the middle's own cluster.
            let leaf = Role::Worker {
                id,
                group: procactor::DEFAULT_GROUP.into(),
                depth: 2,
            };
            assert_eq!(
                echo(&cluster, 0, ask(EchoMsg::Role)).await,
                EchoReply::Role(leaf)
            );
            let EchoReply::Pid(pid) = echo(&cluster, 0, ask(EchoMsg::Pid)).await else {
                panic!("no pid from leaf {id}")
            };
            leaves.push(pid);
        }
        // Running a cluster does not change the middle's own role.
        assert_eq!(
            echo(&cluster, 0, EchoMsg::Role).await,
            EchoReply::Role(middle)
        );

        cluster.stop().await.unwrap();
        assert!(
            common::wait_until_async(Duration::from_secs(10), || leaves
                .iter()
                .all(|&p| !is_alive(p)))
            .await,
            "a leaf outlived the stop: {leaves:?}"
        );
    })
    .await;
}
