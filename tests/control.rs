//! Ending one worker on request, as the seeds have it (clustr-node's `emitKill(pid, exitCode)`,
//! sicarii's `kill`), Node's `disconnect` event, `cluster.fork(env)`, and stopping the cluster
//! from a worker.

mod common;

use std::time::Duration;

use common::cluster::{collector, echo_config, next_matching, relay, relay_config, within};
use common::relay::{self, RelayMsg, RelayReply};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{AskError, Ending, Target};

#[actix::test]
async fn a_graceful_end_with_status_7_runs_stopping_and_the_policy_restarts_it() {
    within(60, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let before = cluster.workers().await.unwrap();
        let reason = cluster
            .end_worker(Target::Id(1), Ending::Graceful { status: 7 })
            .await
            .unwrap();
        assert_eq!(reason, ExitReason::Exited(7));
        let exited = next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 1 && matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("its exit");
        let WorkerEventKind::Exited { last_stderr, .. } = &exited.kind else {
            unreachable!()
        };
        assert!(
            last_stderr.iter().any(|l| l.contains("echo: stopping")),
            "it ran its stopping hook: {last_stderr:?}"
        );
        // Permanent (the default): restarted at once, as a requested ending, not a crash.
        let restarted = next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 1 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("restarted");
        assert_eq!(restarted.generation, 2);
        assert_ne!(restarted.pid, before[1].pid);
        let reply = cluster.worker(1).send(Call(EchoMsg::Pid)).await.unwrap();
        assert_eq!(reply, Ok(EchoReply::Pid(restarted.pid.unwrap())));

        // By pid, at once.
        let pid = before[0].pid.unwrap();
        let reason = cluster
            .end_worker(Target::Pid(pid), Ending::Now)
            .await
            .unwrap();
        assert_eq!(reason, ExitReason::Killed);
        let err = cluster
            .end_worker(Target::Pid(pid), Ending::Now)
            .await
            .unwrap_err();
        assert!(matches!(err, procactor::Error::NoSuchPid { .. }), "{err:?}");
        let err = cluster
            .end_worker(Target::Id(1), Ending::Graceful { status: 256 })
            .await
            .unwrap_err();
        assert!(
            matches!(err, procactor::Error::Ask(AskError::Invalid(_))),
            "an exit status is 0..=255: {err:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn disconnect_comes_before_exit_and_a_forked_worker_gets_its_own_env() {
    within(60, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<relay::Relay>(relay_config(1))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let added = cluster
            .add_worker_with_env([("PROCACTOR_TEST_FORK", "forked")])
            .await
            .unwrap();
        let reply = added
            .send(Call(RelayMsg::Env("PROCACTOR_TEST_FORK".into())))
            .await
            .unwrap()
            .unwrap();
        assert!(format!("{reply:?}").contains("forked"), "{reply:?}");
        let reply = relay(&cluster, 0, RelayMsg::Env("PROCACTOR_TEST_FORK".into())).await;
        assert!(!format!("{reply:?}").contains("forked"), "{reply:?}");
        cluster.terminate(1).await.unwrap();
        let mut kinds = Vec::new();
        while !matches!(kinds.last(), Some(WorkerEventKind::Exited { .. })) {
            let event = next_matching(&mut rx, Duration::from_secs(10), |e| {
                e.worker == 1 && e.generation == 1
            })
            .await
            .expect("events of worker 1");
            kinds.push(event.kind);
        }
        let disconnected = kinds
            .iter()
            .position(|k| *k == WorkerEventKind::Disconnected)
            .expect("Disconnected");
        assert_eq!(
            disconnected,
            kinds.len() - 2,
            "just before Exited: {kinds:?}"
        );
        // Its restart keeps the environment it was forked with.
        let ready = next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 1 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("restarted");
        assert_eq!(ready.generation, 2);
        let reply = relay(&cluster, 1, RelayMsg::Env("PROCACTOR_TEST_FORK".into())).await;
        assert!(format!("{reply:?}").contains("forked"), "{reply:?}");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn stop_cluster_from_a_worker_is_refused_by_default_and_stops_it_where_permitted() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<relay::Relay>(relay_config(2))
            .await
            .unwrap();
        let reply = relay(&cluster, 0, RelayMsg::StopCluster).await;
        assert!(
            matches!(reply, RelayReply::Failed(AskError::NotPermitted(_))),
            "{reply:?}"
        );
        let target = Target::Pid(std::process::id());
        let reply = relay(
            &cluster,
            0,
            RelayMsg::End {
                target,
                ending: Ending::Now,
            },
        )
        .await;
        assert!(
            matches!(reply, RelayReply::Failed(AskError::NotPermitted(_))),
            "{reply:?}"
        );
        assert_eq!(cluster.workers().await.unwrap().len(), 2);
        cluster.stop().await.unwrap();

        let permitted = relay_config(2).worker_control(true);
        let cluster = ClusterSupervisor::start::<relay::Relay>(permitted)
            .await
            .unwrap();
        // A worker ends another gracefully with a status.
        let pid = cluster.workers().await.unwrap()[1].pid.unwrap();
        let reply = relay(
            &cluster,
            0,
            RelayMsg::End {
                target: Target::Pid(pid),
                ending: Ending::Graceful { status: 3 },
            },
        )
        .await;
        assert_eq!(reply, RelayReply::Done);
        // Then stops the cluster: `wait` returns, every process is gone.
        let pids: Vec<u32> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .filter_map(|w| w.pid)
            .collect();
        // A worker ends itself from its handler: it hears at once, then ends with that status.
        let me = cluster.workers().await.unwrap()[1].pid.unwrap();
        let reply = relay(
            &cluster,
            1,
            RelayMsg::End {
                target: Target::Pid(me),
                ending: Ending::Graceful { status: 4 },
            },
        )
        .await;
        assert_eq!(reply, RelayReply::Done);
        let reply = relay(&cluster, 0, RelayMsg::StopCluster).await;
        assert_eq!(reply, RelayReply::Done);
        cluster.wait().await.unwrap();
        for pid in pids {
            assert_eq!(common::proc_state(pid), None, "{pid} is gone");
        }
    })
    .await;
}

#[actix::test]
async fn a_kill_or_an_end_of_a_worker_waiting_out_its_backoff_answers_at_once() {
    within(60, async {
        let slow = procactor::RestartPolicy {
            backoff: procactor::Backoff {
                floor: Duration::from_secs(30),
                jitter: 0.0,
                ..procactor::Backoff::default()
            },
            ..procactor::RestartPolicy::default()
        };
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(1).restart(slow))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        // A crash (not asked for): the slot waits 30 s before its restart.
        cluster.worker(0).do_send(Call(EchoMsg::Exit(3)));
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::Restarting { .. })
        })
        .await
        .expect("a backoff");
        let killed = tokio::time::timeout(Duration::from_secs(5), cluster.kill(0))
            .await
            .expect("the kill answers at once")
            .unwrap();
        assert_eq!(killed, ExitReason::Exited(3), "the last process's exit");
        let ended = cluster
            .end_worker(Target::Id(0), Ending::Graceful { status: 1 })
            .await
            .unwrap_err();
        assert!(
            matches!(ended, procactor::Error::Ask(AskError::NotRunning(0))),
            "{ended:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn one_way_messages_to_a_worker_that_does_not_exist_give_their_window_back() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<relay::Relay>(relay_config(1))
            .await
            .unwrap();
        // 3 × 1000 to no one: a window of 1024 would close after the first 1024 for good.
        for round in 0..3 {
            let reply = relay(
                &cluster,
                0,
                RelayMsg::TellMany {
                    to: 99,
                    prefix: "n".into(),
                    count: 1000,
                },
            )
            .await;
            assert_eq!(reply, RelayReply::Done, "round {round}");
        }
        cluster.stop().await.unwrap();
    })
    .await;
}
