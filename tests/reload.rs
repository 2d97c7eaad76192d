//! Rolling reloads at the message level: every process replaced while requests keep flowing,
//! rollback when a replacement fails, queueing, worker-requested reloads, scaling, and plain
//! programs.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{chaos_config, collector, echo_config, next_matching, within};
use common::is_alive;
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{Error, ReloadError, ReloadEvent, ReplaceError, WorkerState};

async fn pids(cluster: &Cluster<Echo>) -> Vec<u32> {
    let mut pids = Vec::new();
    for w in cluster.addrs() {
        match w.send(Call(EchoMsg::Pid)).await.unwrap().unwrap() {
            EchoReply::Pid(pid) => pids.push(pid),
            other => panic!("{other:?}"),
        }
    }
    pids
}

#[actix::test]
async fn a_reload_replaces_every_process_while_requests_keep_being_answered() {
    within(120, async {
        let (progress, mut events) = collector::<ReloadEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(4))
            .on_reload(progress)
            .start()
            .await
            .unwrap();
        let before = pids(&cluster).await;

        // Keep every slot busy with requests for the whole reload.
        let stop = std::rc::Rc::new(std::cell::Cell::new(false));
        let mut load = Vec::new();
        for w in cluster.addrs() {
            let stop = std::rc::Rc::clone(&stop);
            load.push(actix::spawn(async move {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.get() {
                    let batch: Vec<_> = (0..32).map(|_| w.send(Call(EchoMsg::Ping))).collect();
                    for reply in batch {
                        match reply.await {
                            Ok(Ok(EchoReply::Pong)) => ok += 1,
                            other => failed.push(format!("{other:?}")),
                        }
                    }
                }
                (ok, failed)
            }));
        }
        let report = cluster.reload().await.unwrap();
        stop.set(true);
        let mut total = 0;
        for task in load {
            let (ok, failed) = task.await.unwrap();
            assert!(failed.is_empty(), "requests failed during the reload: {failed:?}");
            total += ok;
        }
        assert!(total > 0);

        let after = pids(&cluster).await;
        assert_eq!(report.replaced.len(), 4);
        assert!(report.skipped.is_empty());
        for (slot, replaced) in report.replaced.iter().enumerate() {
            assert_eq!(replaced.worker, slot);
            assert_eq!(replaced.old_pid, Some(before[slot]));
            assert_eq!(replaced.new_pid, Some(after[slot]));
            assert_eq!(replaced.generation, 2);
            assert!(replaced.old_exit.is_normal(), "{:?}", replaced.old_exit);
            assert!(!is_alive(before[slot]), "old pid {} still runs", before[slot]);
        }
        let old: HashSet<_> = before.iter().collect();
        assert!(after.iter().all(|pid| !old.contains(pid)), "{before:?} {after:?}");

        // Progress: started, 1..=4 of 4 in slot order, done.
        let mut seen = Vec::new();
        while let Some(event) = next_matching(&mut events, Duration::from_secs(5), |_| true).await
        {
            let done = matches!(event, ReloadEvent::Done { .. });
            seen.push(event);
            if done {
                break;
            }
        }
        assert!(matches!(seen[0], ReloadEvent::Started { workers: 4 }), "{seen:?}");
        for k in 1..=4 {
            assert!(
                matches!(&seen[k], ReloadEvent::Replaced { done, of: 4, replaced } if *done == k && replaced.worker == k - 1),
                "{seen:?}"
            );
        }
        assert!(matches!(seen[5], ReloadEvent::Done { replaced: 4, .. }), "{seen:?}");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_replacement_that_crashes_or_hangs_is_rolled_back_and_the_old_processes_keep_serving() {
    for (mode, timeout) in [("crash-at-start", false), ("hang-at-start", true)] {
        within(120, async {
            let (events, mut seen) = collector::<WorkerEvent>();
            let config = chaos_config(3, &[])
                .env("PROCACTOR_CHAOS_MODE", mode)
                .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
                .ready_timeout(Duration::from_secs(2));
            let cluster = ClusterSupervisor::builder::<Echo>(config)
                .subscribe(events)
                .start()
                .await
                .unwrap();
            let before = pids(&cluster).await;
            let error = cluster.reload().await.unwrap_err();
            let Error::Reload(ReloadError::Replace {
                replaced: 0,
                of: 3,
                source:
                    ReplaceError::Failed {
                        worker: 0, reason, ..
                    },
            }) = &error
            else {
                panic!("{mode}: {error:?}");
            };
            assert_eq!(
                *reason == procactor::ExitReason::ReadyTimeout,
                timeout,
                "{mode}: {reason}"
            );
            // The failed replacement is reported as retired, not as the slot's exit.
            let retired = next_matching(&mut seen, Duration::from_secs(10), |e| {
                matches!(e.kind, WorkerEventKind::Retired { .. })
            })
            .await
            .expect("a Retired event for the failed replacement");
            assert_eq!((retired.worker, retired.generation), (0, 2));

            // Nothing half-replaced: the same processes serve every slot, and nothing else runs.
            assert_eq!(pids(&cluster).await, before, "{mode}");
            for info in cluster.workers().await.unwrap() {
                assert_eq!(info.state, WorkerState::Ready);
                assert_eq!(info.generation, 1);
            }
            let replacement = retired.pid.expect("the replacement had started");
            assert!(
                !is_alive(replacement),
                "{mode}: the replacement was left running"
            );
            cluster.stop().await.unwrap();
        })
        .await;
    }
}

#[actix::test]
async fn a_reload_asked_for_during_a_reload_is_queued_and_runs_after_it() {
    within(120, async {
        let (progress, mut events) = collector::<ReloadEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2))
            .on_reload(progress)
            .start()
            .await
            .unwrap();
        let before = pids(&cluster).await;
        let (first, second) = futures_util::join!(cluster.reload(), cluster.reload());
        let (first, second) = (first.unwrap(), second.unwrap());
        let after = pids(&cluster).await;
        assert_eq!(first.replaced.len(), 2);
        assert_eq!(second.replaced.len(), 2);
        for slot in 0..2 {
            assert_eq!(first.replaced[slot].old_pid, Some(before[slot]));
            assert_eq!(first.replaced[slot].new_pid, second.replaced[slot].old_pid);
            assert_eq!(second.replaced[slot].new_pid, Some(after[slot]));
            assert_eq!(second.replaced[slot].generation, 3);
        }
        // The two never overlapped: Started, 2 × Replaced, Done, twice.
        let mut kinds = Vec::new();
        while kinds.len() < 8 {
            let event = next_matching(&mut events, Duration::from_secs(10), |_| true)
                .await
                .expect("reload progress");
            kinds.push(match event {
                ReloadEvent::Started { .. } => 'S',
                ReloadEvent::Replaced { .. } => 'R',
                ReloadEvent::Done { .. } => 'D',
                ReloadEvent::Failed { .. } => 'F',
                _ => '?',
            });
        }
        assert_eq!(kinds.into_iter().collect::<String>(), "SRRDSRRD");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_worker_may_ask_for_a_reload_only_where_the_config_allows_it() {
    for allowed in [false, true] {
        within(120, async {
            let (events, mut seen) = collector::<WorkerEvent>();
            let (progress, mut reloads) = collector::<ReloadEvent>();
            let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2).worker_reload(allowed))
                .subscribe(events)
                .on_reload(progress)
                .start()
                .await
                .unwrap();
            let before = pids(&cluster).await;
            let reply = cluster.worker(1).send(Call(EchoMsg::RequestReload)).await;
            if allowed {
                assert_eq!(reply.unwrap().unwrap(), EchoReply::Done);
            } else {
                // Refused in so many words, not `Ok` with a warning in the master's log.
                let reply = reply.unwrap().unwrap();
                let EchoReply::Error(why) = &reply else {
                    panic!("{reply:?}")
                };
                assert!(why.contains("reloads from workers are off"), "{why}");
            }
            let asked = next_matching(&mut seen, Duration::from_secs(10), |e| {
                e.kind == WorkerEventKind::ReloadRequested
            })
            .await
            .expect("the request reaches the master");
            assert_eq!(asked.worker, 1);
            if allowed {
                let done = next_matching(&mut reloads, Duration::from_secs(60), |e| {
                    matches!(e, ReloadEvent::Done { .. } | ReloadEvent::Failed { .. })
                })
                .await;
                assert!(
                    matches!(done, Some(ReloadEvent::Done { replaced: 2, .. })),
                    "{done:?}"
                );
                let after = pids(&cluster).await;
                assert!(
                    before.iter().all(|p| !after.contains(p)),
                    "{before:?} {after:?}"
                );
            } else {
                // A reload would have started at once; a round trip to every worker later,
                // none has, and the processes are the same.
                assert_eq!(pids(&cluster).await, before);
                assert!(reloads.try_recv().is_err(), "a reload started");
            }
            cluster.stop().await.unwrap();
        })
        .await;
    }
}

#[actix::test]
async fn scaling_down_drains_the_last_workers_and_scaling_up_starts_them_again() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(3))
            .await
            .unwrap();
        let before = pids(&cluster).await;

        // A request in flight to a worker being scaled away is still answered.
        let slow = cluster.worker(2).send(Call(EchoMsg::Sleep(300)));
        cluster.scale(1).await.unwrap();
        assert_eq!(slow.await.unwrap().unwrap(), EchoReply::Done);
        let states: Vec<_> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.state)
            .collect();
        assert_eq!(
            states,
            [WorkerState::Ready, WorkerState::Exited, WorkerState::Exited]
        );
        assert!(!is_alive(before[1]) && !is_alive(before[2]));

        cluster.scale(4).await.unwrap();
        assert_eq!(cluster.len(), 4);
        let after = pids(&cluster).await;
        assert_eq!(after[0], before[0], "the remaining worker is untouched");
        assert_eq!(after.iter().collect::<HashSet<_>>().len(), 4);
        // Started again on the operator's word: not restarts.
        let restarts: Vec<u64> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.restarts)
            .collect();
        assert_eq!(restarts, [0, 0, 0, 0]);
        assert!(matches!(cluster.scale(0).await, Err(Error::Config(_))));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_replacement_whose_old_process_dies_meanwhile_takes_the_slot_and_reports_its_fate() {
    within(120, async {
        // The replacement hangs before it is ready; the old process is killed meanwhile.
        let config = chaos_config(1, &[])
            .env("PROCACTOR_CHAOS_MODE", "hang-at-start")
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .ready_timeout(Duration::from_secs(2))
            .restart(procactor::RestartPolicy {
                restart: procactor::RestartType::Temporary,
                ..procactor::RestartPolicy::default()
            });
        let (events, mut seen) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let old = pids(&cluster).await[0];
        let reload = cluster.reload();
        let spawned = next_matching(&mut seen, Duration::from_secs(10), |e| {
            e.generation == 2 && e.kind == WorkerEventKind::Spawned
        });
        let kill_old = async {
            spawned.await.expect("the replacement spawns");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(old as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        };
        let ((), result) = futures_util::join!(kill_old, reload);
        let error = result.unwrap_err();
        // The replacement served the slot, then failed its ready timeout: the reload says so.
        let Error::Reload(ReloadError::Replace {
            source: ReplaceError::Failed { reason, .. },
            ..
        }) = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*reason, procactor::ExitReason::ReadyTimeout);
        assert!(!is_alive(old));
        let info = &cluster.workers().await.unwrap()[0];
        assert_eq!(
            info.generation, 2,
            "no third process: the slot is temporary"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn restart_worker_replaces_one_process_and_is_not_a_crash() {
    within(120, async {
        // The third process of a slot crashes at start: the second restart of slot 0 fails.
        let config = chaos_config(2, &[])
            .env("PROCACTOR_CHAOS_MODE", "crash-at-start")
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "3")
            .ready_timeout(Duration::from_secs(5));
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let before = pids(&cluster).await;

        let replaced = cluster.restart_worker(0).await.unwrap();
        assert_eq!(replaced.old_pid, Some(before[0]));
        assert!(replaced.old_exit.is_normal(), "{:?}", replaced.old_exit);
        assert!(!is_alive(before[0]), "the old process has exited");
        let after = pids(&cluster).await;
        assert_eq!(replaced.new_pid, Some(after[0]));
        assert_ne!(after[0], before[0]);
        assert_eq!(after[1], before[1], "the other worker is untouched");
        let info = &cluster.workers().await.unwrap()[0];
        assert_eq!((info.generation, info.restarts), (2, 0), "not a crash");

        // A replacement that fails leaves the serving process as it was.
        let error = cluster.restart_worker(0).await.unwrap_err();
        assert!(
            matches!(
                &error,
                Error::Replace(ReplaceError::Failed {
                    worker: 0,
                    reason: procactor::ExitReason::Exited(1),
                    ..
                })
            ),
            "{error:?}"
        );
        assert_eq!(pids(&cluster).await, after);

        let unknown = cluster.restart_worker(7).await.unwrap_err();
        assert!(
            matches!(unknown, Error::NoSuchWorker { worker: 7, .. }),
            "{unknown:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}
