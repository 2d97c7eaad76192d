//! The core runtime end to end, with real worker processes over real pipes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::{collector, echo_config, next_matching, within};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{WorkerInfo, WorkerState};

#[actix::test]
async fn typed_request_reply() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(2))
            .await
            .unwrap();
        let w: Addr<Worker<Echo>> = cluster.worker(0);
        assert_eq!(
            w.send(Call(EchoMsg::Ping)).await.unwrap(),
            Ok(EchoReply::Pong)
        );
        let bytes = vec![7u8; 100_000];
        assert_eq!(
            w.send(Call(EchoMsg::Echo(bytes.clone()))).await.unwrap(),
            Ok(EchoReply::Bytes(bytes))
        );

        let infos = cluster.workers().await.unwrap();
        assert_eq!(infos.len(), 2);
        for WorkerInfo {
            id,
            pid,
            state,
            generation,
            ..
        } in infos
        {
            assert_eq!(state, WorkerState::Ready);
            assert_eq!(generation, 1);
            let reply = cluster
                .worker(id)
                .send(Call(EchoMsg::Pid))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                reply,
                EchoReply::Pid(pid.unwrap()),
                "worker {id} is the listed pid"
            );
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn ten_thousand_pipelined_requests_all_answered_in_order() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(1))
            .await
            .unwrap();
        let w = cluster.worker(0);
        let calls: Vec<_> = (0..10_000u64)
            .map(|n| w.send(Call(EchoMsg::Seq(n))))
            .collect();
        let replies = tokio::task::unconstrained(futures_util::future::join_all(calls)).await;
        for (n, reply) in replies.into_iter().enumerate() {
            let reply = reply.unwrap().unwrap();
            assert_eq!(
                reply,
                EchoReply::Seq {
                    n: n as u64,
                    in_order: true
                }
            );
        }
        let stats = w.send(Call(EchoMsg::Stats)).await.unwrap().unwrap();
        assert!(
            matches!(
                stats,
                EchoReply::Stats {
                    out_of_order: 0,
                    ..
                }
            ),
            "{stats:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn one_way_messages_in_both_directions() {
    within(60, async {
        let (inbox, mut received) = collector::<FromWorker<String>>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2))
            .on_message(inbox)
            .start()
            .await
            .unwrap();
        let w = cluster.worker(1);
        for n in 0..1000u64 {
            w.send(Tell(EchoMsg::Seq(n))).await.unwrap().unwrap();
        }
        w.do_send(Tell(EchoMsg::Echo(vec![1; 1000])));
        let stats = w.send(Call(EchoMsg::Stats)).await.unwrap().unwrap();
        assert_eq!(
            stats,
            EchoReply::Stats {
                tells: 1001,
                bytes: 1000,
                out_of_order: 0
            }
        );

        // Worker → master: an event, sent as a one-way message from a one-way message.
        w.send(Tell(EchoMsg::Emit("hello master".into())))
            .await
            .unwrap()
            .unwrap();
        let pid = match w.send(Call(EchoMsg::Pid)).await.unwrap().unwrap() {
            EchoReply::Pid(pid) => pid,
            other => panic!("{other:?}"),
        };
        let msg = next_matching(&mut received, Duration::from_secs(10), |_| true)
            .await
            .expect("the worker's event reaches the master");
        assert_eq!(
            msg,
            FromWorker {
                worker: 1,
                pid,
                generation: 1,
                msg: "hello master".to_string()
            }
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_worker_that_prints_to_stdout_keeps_working() {
    within(60, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(1))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let w = cluster.worker(0);
        // Text that would be a frame header of 1 GiB, and bytes that are no UTF-8.
        let noise = "\u{0}\u{0}\u{0}@ stray print \u{1}\u{2}".to_string();
        for _ in 0..100 {
            assert_eq!(
                w.send(Call(EchoMsg::Print(noise.clone()))).await.unwrap(),
                Ok(EchoReply::Done)
            );
            assert_eq!(
                w.send(Call(EchoMsg::Ping)).await.unwrap(),
                Ok(EchoReply::Pong)
            );
        }
        cluster.stop().await.unwrap();
        let exited = next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("exit event");
        let WorkerEventKind::Exited {
            reason,
            last_stderr,
            ..
        } = exited.kind
        else {
            unreachable!()
        };
        assert_eq!(reason, ExitReason::Exited(0));
        assert!(
            last_stderr.iter().any(|line| line.contains("stray print")),
            "the print reached the log: {last_stderr:?}"
        );
    })
    .await;
}

#[actix::test]
async fn lifecycle_events_spawned_online_ready_disconnected_exited() {
    within(60, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let pids: Vec<_> = cluster.workers().await.unwrap().iter().map(|i| i.pid).collect();
        cluster.stop().await.unwrap();

        let mut seen = vec![Vec::new(); 2];
        while seen.iter().any(|kinds: &Vec<_>| kinds.len() < 5) {
            let event = next_matching(&mut rx, Duration::from_secs(10), |_| true)
                .await
                .unwrap_or_else(|| panic!("events so far: {seen:?}"));
            assert_eq!(event.generation, 1);
            assert_eq!(event.pid, pids[event.worker], "every event names the process");
            seen[event.worker].push(event.kind);
        }
        for kinds in seen {
            assert_eq!(kinds[..4], [
                WorkerEventKind::Spawned,
                WorkerEventKind::Online,
                WorkerEventKind::Ready,
                WorkerEventKind::Disconnected,
            ]);
            assert!(
                matches!(&kinds[4], WorkerEventKind::Exited { reason: ExitReason::Exited(0), last_stderr, .. }
                    if last_stderr.iter().any(|l| l.contains("echo: stopping"))),
                "graceful exit after the stopping hook: {:?}",
                kinds[4]
            );
        }
    })
    .await;
}

#[actix::test]
async fn stop_leaves_no_child_and_no_zombie() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(3))
            .await
            .unwrap();
        let pids: HashSet<u32> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.pid.unwrap())
            .collect();
        assert_eq!(pids.len(), 3);
        let me = std::process::id();
        assert!(pids.iter().all(|pid| common::children(me).contains(pid)));
        let started = Instant::now();
        cluster.stop().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a graceful stop is prompt"
        );
        for pid in &pids {
            assert_eq!(
                common::proc_state(*pid),
                None,
                "worker {pid} is gone and reaped"
            );
        }
        let left: Vec<_> = common::children(me)
            .into_iter()
            .filter(|c| pids.contains(c))
            .collect();
        assert!(left.is_empty(), "no child left: {left:?}");
        for info in cluster.workers().await.unwrap() {
            assert_eq!(info.state, WorkerState::Exited);
            assert_eq!(info.pid, None);
        }
        // A stopped worker refuses new work with a typed error instead of hanging.
        let err = cluster
            .worker(0)
            .send(Call(EchoMsg::Ping))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err,
                CallError::WorkerExited {
                    worker: 0,
                    reason: ExitReason::Exited(0)
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[actix::test]
async fn sigkill_mid_request_fails_every_in_flight_request_within_a_second() {
    within(60, async {
        let (inbox, mut received) = collector::<FromWorker<String>>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2))
            .on_message(inbox)
            .start()
            .await
            .unwrap();
        let infos = cluster.workers().await.unwrap();
        let (victim, survivor) = (infos[0].pid.unwrap(), infos[1].pid.unwrap());
        let w = cluster.worker(0);
        let in_flight: Vec<_> = (0..50)
            .map(|i| {
                let msg = if i == 0 {
                    EchoMsg::Sleep(60_000)
                } else {
                    EchoMsg::Ping
                };
                actix::spawn(w.send(Call(msg)))
            })
            .collect();
        // The worker says "sleeping" when it is inside the first request's handler.
        let sleeping = next_matching(&mut received, Duration::from_secs(10), |m| m.worker == 0)
            .await
            .expect("the worker is mid-request");
        assert_eq!(sleeping.msg, "sleeping");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        for call in in_flight {
            let err = call.await.unwrap().unwrap().unwrap_err();
            assert!(
                matches!(
                    err,
                    CallError::WorkerExited {
                        worker: 0,
                        reason: ExitReason::Signaled(9)
                    }
                ),
                "{err:?}"
            );
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "failed after {:?}",
            killed.elapsed()
        );
        // The other worker is untouched.
        let w1 = cluster.worker(1);
        assert_eq!(
            w1.send(Call(EchoMsg::Pid)).await.unwrap(),
            Ok(EchoReply::Pid(survivor))
        );
        assert_eq!(
            common::proc_state(victim),
            None,
            "the killed worker was reaped"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_worker_that_will_not_stop_is_killed_after_the_shutdown_timeout() {
    within(60, async {
        let grace = Duration::from_millis(500);
        let config =
            common::cluster::chaos_config(1, &[(0, "hang-on-stop")]).shutdown_timeout(grace);
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let pid = cluster.workers().await.unwrap()[0].pid.unwrap();
        let started = Instant::now();
        let reasons = cluster.supervisor().send(procactor::StopAll).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reasons, [ExitReason::ShutdownTimeout]);
        assert!(
            took >= grace,
            "killed only after the grace period: {took:?}"
        );
        assert!(
            took < grace + Duration::from_millis(500),
            "killed promptly after it: {took:?}"
        );
        assert_eq!(common::proc_state(pid), None, "reaped");
    })
    .await;
}

#[actix::test]
async fn bad_configuration_is_rejected_before_anything_starts() {
    let err = ClusterSupervisor::start::<Echo>(ClusterConfig::new().exec("/no/such/worker"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, procactor::Error::Config(e) if e.field == "exec"),
        "{err:?}"
    );
    let err = ClusterSupervisor::start::<Echo>(echo_config(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, procactor::Error::Config(e) if e.field == "workers"),
        "{err:?}"
    );
}
