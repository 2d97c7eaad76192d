//! Supervision with real processes: restart types and strategies, intensity and backoff,
//! heartbeats, operator controls.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{chaos_config, collector, echo_config, next_matching, within};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{
    Backoff, Error, Escalation, Intensity, RestartPolicy, RestartType, Strategy, WorkerState,
};
use tokio::sync::mpsc::UnboundedReceiver;

fn policy(restart: RestartType, strategy: Strategy) -> RestartPolicy {
    RestartPolicy {
        restart,
        strategy,
        backoff: Backoff::none(),
        ..RestartPolicy::default()
    }
}

async fn pids(cluster: &Cluster<Echo>) -> Vec<Option<u32>> {
    cluster
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|i| i.pid)
        .collect()
}

async fn pid_of(w: &Addr<Worker<Echo>>) -> u32 {
    match w.send(Call(EchoMsg::Pid)).await.unwrap().unwrap() {
        EchoReply::Pid(pid) => pid,
        other => panic!("{other:?}"),
    }
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
}

/// Waits for `worker`'s exit event, then reports whether the supervisor restarts the slot.
async fn exits_then_restarts(
    cluster: &Cluster<Echo>,
    events: &mut UnboundedReceiver<WorkerEvent>,
    worker: usize,
) -> (ExitReason, bool) {
    let exited = next_matching(events, Duration::from_secs(10), |e| {
        e.worker == worker && matches!(e.kind, WorkerEventKind::Exited { .. })
    })
    .await
    .expect("exit event");
    let WorkerEventKind::Exited { reason, .. } = exited.kind else {
        unreachable!()
    };
    // The supervisor decides while handling the exit event, before it answers this query.
    let state = cluster.workers().await.unwrap()[worker].state;
    (reason, state != WorkerState::Exited)
}

#[actix::test]
async fn restart_type_by_exit_kind() {
    within(120, async {
        for restart in [
            RestartType::Permanent,
            RestartType::Transient,
            RestartType::Temporary,
        ] {
            for exit in ["status 0", "status 3", "SIGKILL"] {
                let (events, mut rx) = collector::<WorkerEvent>();
                let cluster = ClusterSupervisor::builder::<Echo>(
                    echo_config(1).restart(policy(restart, Strategy::OneForOne)),
                )
                .subscribe(events)
                .start()
                .await
                .unwrap();
                let w = cluster.worker(0);
                let pid = pid_of(&w).await;
                match exit {
                    "status 0" => w.do_send(Call(EchoMsg::Exit(0))),
                    "status 3" => w.do_send(Call(EchoMsg::Exit(3))),
                    _ => sigkill(pid),
                }
                let (reason, restarted) = exits_then_restarts(&cluster, &mut rx, 0).await;
                let expected = match exit {
                    "status 0" => ExitReason::Exited(0),
                    "status 3" => ExitReason::Exited(3),
                    _ => ExitReason::Signaled(9),
                };
                assert_eq!(reason, expected);
                let should = match restart {
                    RestartType::Permanent => true,
                    RestartType::Transient => exit != "status 0",
                    RestartType::Temporary => false,
                };
                assert_eq!(restarted, should, "{restart:?} after {exit}");
                if should {
                    let ready = next_matching(&mut rx, Duration::from_secs(10), |e| {
                        e.kind == WorkerEventKind::Ready && e.generation == 2
                    })
                    .await;
                    assert!(
                        ready.is_some(),
                        "{restart:?} after {exit}: generation 2 ready"
                    );
                    assert_ne!(
                        pid_of(&w).await,
                        pid,
                        "a new process answers on the same address"
                    );
                } else {
                    let err = w.send(Call(EchoMsg::Ping)).await.unwrap().unwrap_err();
                    assert!(matches!(err, CallError::WorkerExited { .. }), "{err:?}");
                }
                cluster.stop().await.unwrap();
            }
        }
    })
    .await;
}

/// Kills the middle of three workers; returns which slots got new processes, and the events.
async fn kill_middle(strategy: Strategy) -> (Vec<bool>, Vec<WorkerEvent>) {
    let (events, mut rx) = collector::<WorkerEvent>();
    let cluster = ClusterSupervisor::builder::<Echo>(
        echo_config(3).restart(policy(RestartType::Permanent, strategy)),
    )
    .subscribe(events)
    .start()
    .await
    .unwrap();
    let before = pids(&cluster).await;
    while rx.try_recv().is_ok() {}
    sigkill(before[1].unwrap());
    let expected: &[usize] = match strategy {
        Strategy::OneForOne => &[1],
        Strategy::OneForAll => &[0, 1, 2],
        Strategy::RestForOne => &[1, 2],
    };
    let mut seen = Vec::new();
    let mut ready = std::collections::HashSet::new();
    while ready.len() < expected.len() {
        let event = next_matching(&mut rx, Duration::from_secs(20), |_| true)
            .await
            .unwrap_or_else(|| panic!("{strategy:?}: events so far {seen:?}"));
        if event.kind == WorkerEventKind::Ready && event.generation == 2 {
            ready.insert(event.worker);
        }
        seen.push(event);
    }
    let after = pids(&cluster).await;
    let changed = before.iter().zip(&after).map(|(b, a)| b != a).collect();
    for (id, addr) in cluster.addrs().iter().enumerate() {
        assert_eq!(Some(pid_of(addr).await), after[id], "slot {id} answers");
    }
    cluster.stop().await.unwrap();
    (changed, seen)
}

#[actix::test]
async fn one_for_one_restarts_only_the_dead_worker() {
    within(60, async {
        let (changed, _) = kill_middle(Strategy::OneForOne).await;
        assert_eq!(changed, [false, true, false]);
    })
    .await;
}

#[actix::test]
async fn one_for_all_stops_every_old_process_before_any_new_one_starts() {
    within(60, async {
        let (changed, events) = kill_middle(Strategy::OneForAll).await;
        assert_eq!(changed, [true, true, true]);
        let last_exit = events
            .iter()
            .rposition(|e| matches!(e.kind, WorkerEventKind::Exited { .. }))
            .unwrap();
        let first_spawn = events
            .iter()
            .position(|e| e.kind == WorkerEventKind::Spawned)
            .unwrap();
        assert!(last_exit < first_spawn, "{events:#?}");
        // New processes start in slot order.
        let spawned: Vec<_> = events
            .iter()
            .filter(|e| e.kind == WorkerEventKind::Spawned)
            .map(|e| e.worker)
            .collect();
        assert_eq!(spawned, [0, 1, 2]);
    })
    .await;
}

#[actix::test]
async fn rest_for_one_restarts_the_dead_worker_and_those_after_it() {
    within(60, async {
        let (changed, _) = kill_middle(Strategy::RestForOne).await;
        assert_eq!(changed, [false, true, true]);
    })
    .await;
}

fn cpu_ticks_of_self() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[actix::test]
async fn a_crash_loop_backs_off_then_gives_up_and_stops_the_cluster() {
    within(60, async {
        let restart = RestartPolicy {
            intensity: Intensity {
                max_restarts: 4,
                period: Duration::from_secs(30),
            },
            backoff: Backoff {
                floor: Duration::from_millis(50),
                jitter: 0.0,
                ..Backoff::default()
            },
            ..RestartPolicy::default()
        };
        let config = chaos_config(2, &[(0, "crash-at-start")])
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .restart(restart);
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let cpu_before = cpu_ticks_of_self();
        let started = Instant::now();
        // A SIGKILL the master did not send: a crash, counted like the ones that follow.
        sigkill(pids(&cluster).await[0].unwrap());
        let outcome = cluster.wait().await;
        let took = started.elapsed();
        let Err(Error::GaveUp { worker: 0, reason }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(reason, ExitReason::Exited(1));

        let mut delays = Vec::new();
        let mut spawns = 0;
        let mut gave_up = None;
        let mut alert = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event.kind {
                WorkerEventKind::Restarting { delay } if event.worker == 0 => delays.push(delay),
                WorkerEventKind::Spawned if event.worker == 0 => spawns += 1,
                WorkerEventKind::GaveUp {
                    restarts,
                    last_stderr,
                    ..
                } => {
                    gave_up = Some(restarts);
                    alert = last_stderr;
                }
                _ => {}
            }
        }
        // Generation 1, then 4 restarts that crash at once; the 5th crash gives up.
        assert_eq!(spawns, 5, "spawns of slot 0");
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400], "the backoff doubles");
        assert_eq!(gave_up, Some(4));
        assert!(
            alert.iter().any(|l| l.contains("mode crash-at-start")),
            "the alert carries the crashing process's last stderr lines: {alert:?}"
        );
        assert!(
            took >= Duration::from_millis(750),
            "restarts were spaced: {took:?}"
        );
        let cpu = cpu_ticks_of_self() - cpu_before;
        assert!(
            cpu < 50,
            "the master stayed idle while backing off: {cpu} ticks"
        );
        for info in cluster.workers().await.unwrap() {
            assert_eq!(info.state, WorkerState::Exited, "every worker was stopped");
        }
    })
    .await;
}

#[actix::test]
async fn fail_group_escalation_marks_the_workers_failed_and_the_master_goes_on() {
    within(60, async {
        let restart = RestartPolicy {
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(30),
            },
            backoff: Backoff::none(),
            escalation: Escalation::FailGroup,
            ..RestartPolicy::default()
        };
        let config = chaos_config(2, &[(0, "crash-at-start")])
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .restart(restart);
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        cluster.kill(0).await.unwrap();
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::GaveUp { .. })
        })
        .await
        .expect("gave up");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states: Vec<_> = cluster
                .workers()
                .await
                .unwrap()
                .iter()
                .map(|i| i.state)
                .collect();
            if states == [WorkerState::Failed, WorkerState::Failed] {
                break;
            }
            assert!(Instant::now() < deadline, "states {states:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = cluster
            .worker(1)
            .send(Call(EchoMsg::Ping))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, CallError::WorkerExited { .. }), "{err:?}");
        cluster.stop().await.unwrap();
        assert!(cluster.wait().await.is_ok(), "no error escalates to main");
    })
    .await;
}

#[actix::test]
async fn a_version_mismatch_is_permanent_no_restart_loop() {
    within(60, async {
        let config = chaos_config(1, &[(0, "wrong-version")])
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .restart(policy(RestartType::Permanent, Strategy::OneForOne));
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        cluster.kill(0).await.unwrap();
        let gave_up = next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::GaveUp { .. })
        })
        .await
        .expect("gave up");
        assert!(
            matches!(&gave_up.kind, WorkerEventKind::GaveUp { reason, .. } if reason.is_permanent()),
            "{gave_up:?}"
        );
        let info = &cluster.workers().await.unwrap()[0];
        assert_eq!((info.state, info.generation), (WorkerState::Failed, 2), "spawned exactly twice");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_worker_not_ready_in_time_is_killed_and_restarted() {
    within(60, async {
        let config = chaos_config(1, &[(0, "hang-at-start")])
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .ready_timeout(Duration::from_millis(300))
            .restart(RestartPolicy {
                intensity: Intensity {
                    max_restarts: 1,
                    period: Duration::from_secs(30),
                },
                backoff: Backoff::none(),
                ..RestartPolicy::default()
            });
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        // A crash (a kill asked for would not count), then a start that hangs.
        sigkill(pids(&cluster).await[0].unwrap());
        let exited = next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.generation == 2 && matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("generation 2 exits");
        assert!(
            matches!(&exited.kind, WorkerEventKind::Exited { reason: ExitReason::ReadyTimeout, uptime, .. }
                if *uptime >= Duration::from_millis(300)),
            "{exited:?}"
        );
        // It counted as a failed start: the intensity of 1 is now exceeded.
        assert!(matches!(cluster.wait().await, Err(Error::GaveUp { worker: 0, .. })));
    })
    .await;
}

#[actix::test]
async fn a_stopped_worker_is_replaced_and_a_busy_one_is_kept() {
    within(60, async {
        let config = echo_config(2)
            .heartbeat_interval(Duration::from_millis(100))
            .heartbeat_misses(3)
            .restart(policy(RestartType::Permanent, Strategy::OneForOne));
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let before = pids(&cluster).await;
        // Worker 0 is busy for 2 s, far longer than three heartbeats.
        let busy = actix::spawn(cluster.worker(0).send(Call(EchoMsg::Sleep(2000))));
        // Worker 1 is stopped dead.
        let stopped = before[1].unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stopped as i32),
            nix::sys::signal::SIGSTOP,
        )
        .unwrap();
        let t = Instant::now();
        let exited = next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 1 && matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("the stopped worker is detected");
        assert!(
            matches!(
                exited.kind,
                WorkerEventKind::Exited {
                    reason: ExitReason::HeartbeatTimeout,
                    ..
                }
            ),
            "{exited:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "detected within a few intervals"
        );
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 1 && e.generation == 2 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("and replaced");
        assert_eq!(
            busy.await.unwrap().unwrap(),
            Ok(EchoReply::Done),
            "the busy one finished"
        );
        let after = pids(&cluster).await;
        assert_eq!(after[0], before[0], "the busy worker was kept");
        assert_ne!(after[1], before[1]);
        assert_eq!(
            common::proc_state(stopped),
            None,
            "the stopped process was killed and reaped"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn operator_controls_kill_stop_worker_add_worker_and_respawn_off() {
    within(60, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(
            echo_config(2).restart(policy(RestartType::Permanent, Strategy::OneForOne)),
        )
        .subscribe(events)
        .start()
        .await
        .unwrap();
        // kill: the slot restarts per policy.
        assert_eq!(cluster.kill(0).await.unwrap(), ExitReason::Killed);
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 0 && e.generation == 2 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("killed worker restarted");
        // stop_worker: stopped for good.
        assert_eq!(cluster.stop_worker(1).await.unwrap(), ExitReason::Exited(0));
        let info = &cluster.workers().await.unwrap()[1];
        assert_eq!(info.state, WorkerState::Exited);
        // add_worker: a third slot, supervised like the others.
        let w2 = cluster.add_worker().await.unwrap();
        assert_eq!(cluster.len(), 3);
        let pid2 = pid_of(&w2).await;
        assert_eq!(cluster.workers().await.unwrap()[2].pid, Some(pid2));
        // respawn off: a kill leaves the slot down.
        cluster.set_respawn(false).await.unwrap();
        cluster.kill(2).await.unwrap();
        assert_eq!(
            cluster.workers().await.unwrap()[2].state,
            WorkerState::Exited
        );
        // kill_all: everything that runs is killed.
        cluster.set_respawn(true).await.unwrap();
        cluster.kill_all().await.unwrap();
        let mut generations = HashMap::new();
        while generations.get(&0) != Some(&3) {
            let e = next_matching(&mut rx, Duration::from_secs(10), |e| {
                e.kind == WorkerEventKind::Ready
            })
            .await
            .expect("restart after kill_all");
            generations.insert(e.worker, e.generation);
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn every_in_flight_request_resolves_when_a_worker_dies_halfway() {
    within(60, async {
        let config = chaos_config(1, &[(0, "die-after-51")])
            .restart(policy(RestartType::Temporary, Strategy::OneForOne));
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let w = cluster.worker(0);
        let calls: Vec<_> = (0..100u64).map(|n| w.send(Call(EchoMsg::Seq(n)))).collect();
        let started = Instant::now();
        let results = futures_util::future::join_all(calls).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Answers come back in order, each to its own caller; from the crash on, every caller
        // gets the exit reason. (Replies the worker had computed but not yet written when it
        // died are lost with it: at most once, never a wrong or duplicate reply.)
        let mut failed = 0;
        for (n, result) in results.into_iter().enumerate() {
            match result.unwrap() {
                Ok(reply) => {
                    assert_eq!(failed, 0, "request {n} answered after a failure");
                    assert!(n < 50, "request {n} answered after the crash");
                    assert_eq!(
                        reply,
                        EchoReply::Seq {
                            n: n as u64,
                            in_order: true
                        }
                    );
                }
                Err(e) => {
                    failed += 1;
                    assert!(
                        matches!(
                            e,
                            CallError::WorkerExited {
                                reason: ExitReason::Signaled(6),
                                ..
                            }
                        ),
                        "{e:?}"
                    );
                }
            }
        }
        assert!(failed >= 50, "{failed} failed");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn twenty_kill_alls_with_the_default_policy_leave_the_cluster_up() {
    within(120, async {
        // The default policy: 5 restarts in 30 s. Kills asked for are not crashes.
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(3))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        for round in 0..20 {
            cluster
                .kill_all()
                .await
                .unwrap_or_else(|e| panic!("kill_all {round}: {e}"));
        }
        common::eventually(Duration::from_secs(60), "every worker back", || async {
            cluster.workers().await.unwrap().iter().all(|info| {
                (info.state, info.generation) == (WorkerState::Ready, 21) && info.pid.is_some()
            })
        })
        .await;
        for id in cluster.ids() {
            let reply = cluster.worker(id).send(Call(EchoMsg::Ping)).await.unwrap();
            assert_eq!(reply, Ok(EchoReply::Pong), "worker {id} answers");
        }
        let mut restarts = 0;
        while let Ok(event) = rx.try_recv() {
            match event.kind {
                WorkerEventKind::GaveUp { .. } => panic!("the supervisor gave up: {event:?}"),
                WorkerEventKind::Restarting { delay } => {
                    assert_eq!(delay, Duration::ZERO, "a kill asked for is not backed off");
                    restarts += 1;
                }
                _ => {}
            }
        }
        assert_eq!(restarts, 60, "each kill restarted its worker");
        cluster.stop().await.unwrap();
        assert!(cluster.wait().await.is_ok(), "the cluster stopped cleanly");
    })
    .await;
}

#[actix::test]
async fn a_crash_loop_started_by_a_kill_gives_up_counting_only_its_crashes() {
    within(60, async {
        // The default policy; worker 0 crashes at start from generation 2 on.
        let config =
            chaos_config(2, &[(0, "crash-at-start")]).env("PROCACTOR_CHAOS_FROM_GENERATION", "2");
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        assert_eq!(cluster.kill(0).await.unwrap(), ExitReason::Killed);
        let outcome = cluster.wait().await;
        let Err(Error::GaveUp { worker: 0, reason }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(reason, ExitReason::Exited(1));
        let mut delays = Vec::new();
        let mut spawns = 0;
        let mut gave_up = None;
        while let Ok(event) = rx.try_recv() {
            match event.kind {
                WorkerEventKind::Restarting { delay } if event.worker == 0 => delays.push(delay),
                WorkerEventKind::Spawned if event.worker == 0 => spawns += 1,
                WorkerEventKind::GaveUp { restarts, .. } => gave_up = Some(restarts),
                _ => {}
            }
        }
        // Generation 1; the kill's restart, at once and not counted; then 5 counted restarts,
        // backed off from the floor; the 6th crash exceeds 5 in 30 s.
        assert_eq!(spawns, 7, "spawns of slot 0");
        assert_eq!(delays.len(), 6, "{delays:?}");
        assert_eq!(delays[0], Duration::ZERO, "the kill's restart");
        for (n, delay) in delays[1..].iter().enumerate() {
            let floor = Duration::from_millis(100) * (1 << n);
            assert!(
                *delay >= floor.mul_f64(0.8) && *delay <= floor.mul_f64(1.2),
                "restart {n} after {delay:?}, expected {floor:?} ± 20 %"
            );
        }
        assert_eq!(gave_up, Some(5));
    })
    .await;
}
