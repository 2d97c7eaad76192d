//! One identity per worker: the cluster-wide id that listings, events and messages report
//! addresses that worker in every call that takes an id, in a cluster of several groups too;
//! an id of another group is an error, never another worker; a pid names a worker as well.

mod common;

use std::time::Duration;

use common::cluster::{echo_config, within};
use common::is_alive;
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{Error, GroupKey, Groups, WorkerState};

const ECHO: &str = env!("CARGO_BIN_EXE_procactor-echo");

/// Group `a` of 2 echo workers (ids 0 and 1), then group `b` of 3 (ids 2, 3 and 4).
async fn two_groups() -> (Groups, GroupKey<Echo>, GroupKey<Echo>) {
    let mut builder = ClusterSupervisor::with_groups(echo_config(1));
    let a = builder.group::<Echo>(GroupConfig::new("a").workers(2).exec(ECHO));
    let b = builder.group::<Echo>(GroupConfig::new("b").workers(3).exec(ECHO));
    (builder.start().await.unwrap(), a, b)
}

async fn pid_of(w: &Addr<Worker<Echo>>) -> u32 {
    match w.send(Call(EchoMsg::Pid)).await.unwrap().unwrap() {
        EchoReply::Pid(pid) => pid,
        other => panic!("{other:?}"),
    }
}

/// Each listed worker's id and pid.
async fn listed(group: &Cluster<Echo>) -> Vec<(WorkerId, u32)> {
    let workers = group.workers().await.unwrap();
    workers.iter().map(|i| (i.id, i.pid.unwrap())).collect()
}

#[actix::test]
async fn every_listed_id_addresses_the_listed_pid_in_both_groups() {
    within(120, async {
        let (groups, a, b) = two_groups().await;
        let (a, b) = (groups.get(a).unwrap(), groups.get(b).unwrap());
        assert_eq!((a.ids(), b.ids()), (vec![0, 1], vec![2, 3, 4]));
        for group in [a, b] {
            let workers = listed(group).await;
            assert_eq!(
                workers.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
                group.ids()
            );
            for (index, &(id, pid)) in workers.iter().enumerate() {
                assert_eq!(pid_of(&group.worker(id)).await, pid, "worker({id})");
                assert_eq!(pid_of(&group.try_worker(id).unwrap()).await, pid);
                let at = group.worker_at(index).unwrap();
                assert_eq!(pid_of(&at).await, pid, "worker_at({index})");
            }
            assert!(group.worker_at(workers.len()).is_none());
        }
        // The cluster-wide listing and each group's agree, and so does the cluster info.
        let all = groups.workers().await.unwrap();
        let info = b.info().await.unwrap();
        for (id, pid) in listed(a).await.into_iter().chain(listed(b).await) {
            assert!(all.iter().any(|i| (i.id, i.pid) == (id, Some(pid))));
            assert!(info
                .workers
                .iter()
                .any(|i| (i.id, i.pid) == (id, Some(pid))));
        }
        groups.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn kill_and_stop_worker_with_a_listed_id_end_that_worker_and_no_other() {
    within(120, async {
        let (groups, a, b) = two_groups().await;
        let (a, b) = (groups.get(a).unwrap(), groups.get(b).unwrap());
        let before_a = listed(a).await;
        let before_b = listed(b).await;
        let (killed, killed_pid) = before_b[0];
        assert_eq!(killed, 2, "the first of b is 2, as b.workers() lists it");

        // kill(2) kills the process listed as 2 and restarts that worker.
        assert_eq!(b.kill(killed).await.unwrap(), ExitReason::Killed);
        assert!(!is_alive(killed_pid), "the listed process was killed");
        common::eventually(Duration::from_secs(30), "worker 2 restarted", || async {
            let info = &b.workers().await.unwrap()[0];
            (info.id, info.state, info.generation) == (killed, WorkerState::Ready, 2)
        })
        .await;
        let after_b = listed(b).await;
        assert_ne!(after_b[0].1, killed_pid);
        assert_eq!(pid_of(&b.worker(killed)).await, after_b[0].1);
        assert_eq!(&after_b[1..], &before_b[1..], "the rest of b untouched");
        assert_eq!(listed(a).await, before_a, "a untouched");

        // stop_worker(4) stops the process listed as 4, for good.
        let (stopped, stopped_pid) = before_b[2];
        assert_eq!(b.stop_worker(stopped).await.unwrap(), ExitReason::Exited(0));
        assert!(!is_alive(stopped_pid));
        let info = b.workers().await.unwrap();
        assert_eq!((info[2].id, info[2].state), (stopped, WorkerState::Exited));
        assert_eq!(info[1].pid, Some(before_b[1].1), "worker 3 untouched");
        assert_eq!(listed(a).await, before_a, "a untouched");
        for &(_, pid) in before_a.iter().chain(&before_b[1..2]) {
            assert!(is_alive(pid));
        }
        groups.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn an_id_of_another_group_is_an_error_never_another_worker() {
    within(120, async {
        let (groups, a, b) = two_groups().await;
        let (a, b) = (groups.get(a).unwrap(), groups.get(b).unwrap());
        let before: Vec<_> = listed(a).await.into_iter().chain(listed(b).await).collect();
        let no_such = |e: Error, worker: WorkerId, group: &str| match e {
            Error::NoSuchWorker {
                worker: w,
                group: g,
            } => w == worker && g == group,
            _ => false,
        };
        // 0 and 1 are a's; 5 and up are no worker's.
        for id in [0, 1, 5, 99] {
            assert!(
                no_such(b.kill(id).await.unwrap_err(), id, "b"),
                "kill({id})"
            );
            assert!(no_such(b.stop_worker(id).await.unwrap_err(), id, "b"));
            assert!(no_such(b.try_worker(id).unwrap_err(), id, "b"));
        }
        for id in [2, 3, 4] {
            assert!(
                no_such(a.kill(id).await.unwrap_err(), id, "a"),
                "kill({id})"
            );
            assert!(no_such(a.stop_worker(id).await.unwrap_err(), id, "a"));
            assert!(no_such(a.try_worker(id).unwrap_err(), id, "a"));
        }
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.worker(0)))
            .expect_err("worker(0) of b panics");
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("group \"b\" has no worker 0"), "{message}");
        // Nothing was killed or stopped.
        let after: Vec<_> = listed(a).await.into_iter().chain(listed(b).await).collect();
        assert_eq!(after, before);
        for info in groups.workers().await.unwrap() {
            assert_eq!((info.state, info.generation), (WorkerState::Ready, 1));
        }
        groups.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn worker_by_pid_finds_the_worker_and_an_unknown_pid_is_an_error() {
    within(120, async {
        let (groups, a, b) = two_groups().await;
        let (a, b) = (groups.get(a).unwrap(), groups.get(b).unwrap());
        for (group, name, other) in [(a, "a", b), (b, "b", a)] {
            for (id, pid) in listed(group).await {
                let (found, addr) = group.worker_by_pid(pid).await.unwrap();
                assert_eq!(found, id, "pid {pid}");
                assert_eq!(pid_of(&addr).await, pid);
                assert_eq!(groups.worker_by_pid(pid).await.unwrap(), (name, id));
                assert_eq!(groups.group_of(id), Some(name));
                let err = other.worker_by_pid(pid).await.unwrap_err();
                assert!(
                    matches!(err, Error::NoSuchPid { pid: p } if p == pid),
                    "{err}"
                );
            }
        }
        // The master's own pid, and the pid of a process that has been replaced.
        let master = std::process::id();
        assert!(matches!(
            b.worker_by_pid(master).await,
            Err(Error::NoSuchPid { .. })
        ));
        assert!(matches!(
            groups.worker_by_pid(master).await,
            Err(Error::NoSuchPid { .. })
        ));
        let (id, old_pid) = listed(b).await[1];
        b.kill(id).await.unwrap();
        assert!(matches!(
            b.worker_by_pid(old_pid).await,
            Err(Error::NoSuchPid { .. })
        ));
        common::eventually(Duration::from_secs(30), "the new process", || async {
            let info = &b.workers().await.unwrap()[1];
            info.state == WorkerState::Ready
        })
        .await;
        let new_pid = listed(b).await[1].1;
        assert_eq!(b.worker_by_pid(new_pid).await.unwrap().0, id);
        assert_eq!(groups.group_of(99), None);
        groups.stop().await.unwrap();
    })
    .await;
}
