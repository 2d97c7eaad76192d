//! Process hygiene: no orphans, no zombies, no leaked descriptors, grandchildren die with their
//! worker, a master stops cleanly on SIGTERM, and a worker that stops reading cannot grow the
//! master's memory.
//!
//! These tests read process-wide counts (descriptors, children), so they run one at a time:
//! each holds a global lock for its whole run, across its awaits (each test has a runtime and a
//! thread of its own, so nothing else awaits that lock on the same thread).
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{chaos_config, collector, echo_config, next_matching, within};
use procactor::actors::echo::{Echo, EchoMsg};
use procactor::prelude::*;
use procactor::{Backoff, Escalation, Intensity, RestartPolicy, RestartType, WorkerState};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn no_limits() -> RestartPolicy {
    RestartPolicy {
        intensity: Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_secs(60),
        },
        backoff: Backoff::none(),
        ..RestartPolicy::default()
    }
}

/// Threads of this process that procactor started (named `procactor-*`).
fn runtime_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("procactor"))
        })
        .count()
}

/// Waits until `pid` holds no more descriptors than `fds`: an exited worker's pipe readers may
/// finish just after its exit is reported, and a baseline taken just after a start may still
/// hold one of the start's.
async fn descriptors_back_to(pid: u32, fds: usize) {
    let back =
        common::wait_until_async(Duration::from_secs(10), || common::fd_count(pid) <= fds).await;
    assert!(
        back,
        "descriptors: {} now, {fds} before: {:?}",
        common::fd_count(pid),
        common::fds(pid)
    );
}

fn zombie_children() -> Vec<u32> {
    common::children(std::process::id())
        .into_iter()
        .filter(|&p| common::is_zombie(p))
        .collect()
}

/// Processes whose environment carries `marker` (the run marker of a three-role test).
fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("PROCACTOR_TEST_RUN={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// The master role of the three-role tests (test → master → workers). Ignored: those tests
/// run it (`--ignored --exact master_role`), in a process of its own.
#[test]
#[ignore = "the master role of the three-role tests, which start it in a process of its own"]
fn master_role() {
    let echo = std::env::var("PROCACTOR_TEST_MASTER")
        .expect("run by the three-role tests, which name the worker program");
    actix::System::new().block_on(async move {
        let (events, mut rx) = collector::<WorkerEvent>();
        let config = ClusterConfig::new()
            .workers(3)
            .exec(echo)
            .handle_signals(true);
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let pids: Vec<String> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.pid.unwrap().to_string())
            .collect();
        println!("READY {}", pids.join(" "));
        cluster.wait().await.unwrap();
        while let Ok(event) = rx.try_recv() {
            if let WorkerEventKind::Exited { reason, .. } = event.kind {
                println!("EXIT {} {reason:?}", event.worker);
            }
        }
        println!("STOPPED");
    });
}

/// Starts this test binary as a master of three echo workers; returns it and the worker pids.
/// The caller waits for the master.
#[allow(clippy::zombie_processes)]
fn start_master(
    marker: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    Vec<u32>,
) {
    let mut master = Command::new(std::env::current_exe().unwrap())
        .args([
            "master_role",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "PROCACTOR_TEST_MASTER",
            env!("CARGO_BIN_EXE_procactor-echo"),
        )
        .env("PROCACTOR_TEST_RUN", marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(master.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the master ended before READY"
        );
        // libtest may print "test master_role ... " on the same line first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let pids = rest
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            return (master, out, pids);
        }
    }
}

#[test]
fn sigkill_of_the_master_leaves_no_process_of_its_run() {
    let _serial = serial();
    let marker = format!("orphans-{}", std::process::id());
    let (mut master, _out, workers) = start_master(&marker);
    let _guards: Vec<_> = workers.iter().map(|&p| common::KillOnDrop(p)).collect();
    assert_eq!(workers.len(), 3);
    assert!(workers.iter().all(|&p| common::is_alive(p)));
    master.kill().unwrap();
    master.wait().unwrap();
    let gone = common::wait_until(Duration::from_secs(1), || marked(&marker).is_empty());
    assert!(gone, "left behind after 1 s: {:?}", marked(&marker));
}

#[test]
fn sigterm_stops_the_master_gracefully_with_status_zero() {
    let _serial = serial();
    let marker = format!("sigterm-{}", std::process::id());
    let (mut master, out, workers) = start_master(&marker);
    let _guards: Vec<_> = workers.iter().map(|&p| common::KillOnDrop(p)).collect();
    let pid = nix::unistd::Pid::from_raw(master.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
    let status = master.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(lines.iter().any(|l| l.contains("STOPPED")), "{lines:?}");
    let exits: Vec<_> = lines.iter().filter(|l| l.contains("EXIT ")).collect();
    assert_eq!(exits.len(), 3, "{lines:?}");
    // Stopped by Shutdown, not by the signal: the signal reached the master only.
    assert!(exits.iter().all(|l| l.ends_with("Exited(0)")), "{exits:?}");
    assert!(
        marked(&marker).is_empty(),
        "left behind: {:?}",
        marked(&marker)
    );
}

#[actix::test]
async fn a_grandchild_dies_with_its_worker_and_frees_its_port() {
    let _serial = serial();
    within(60, async {
        let (inbox, mut received) = collector::<FromWorker<String>>();
        let (events, mut rx) = collector::<WorkerEvent>();
        let config = chaos_config(1, &[(0, "fork-grandchild")]).restart(RestartPolicy {
            restart: RestartType::Temporary,
            ..RestartPolicy::default()
        });
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .on_message(inbox)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let msg = next_matching(&mut received, Duration::from_secs(10), |_| true)
            .await
            .expect("the worker reports its grandchild");
        let words: Vec<&str> = msg.msg.split_whitespace().collect();
        let (gpid, port): (u32, u16) = (words[1].parse().unwrap(), words[2].parse().unwrap());
        let _guard = common::KillOnDrop(gpid);
        assert!(common::is_alive(gpid));
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
            "the port is held"
        );

        let worker = cluster.workers().await.unwrap()[0].pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("exit");
        assert!(
            common::wait_until_async(Duration::from_secs(2), || !common::is_alive(gpid)).await,
            "the grandchild died with its worker"
        );
        assert!(
            common::wait_until_async(Duration::from_secs(2), || {
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            })
            .await,
            "its port can be bound again"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn no_zombies_after_200_crash_cycles() {
    let _serial = serial();
    within(120, async {
        let config = chaos_config(1, &[(0, "crash-at-start")])
            .env("PROCACTOR_CHAOS_FROM_GENERATION", "2")
            .restart(no_limits());
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        cluster.kill(0).await.unwrap();
        next_matching(&mut rx, Duration::from_secs(60), |e| {
            e.generation >= 201 && matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("200 crash cycles");
        cluster.set_respawn(false).await.unwrap();
        cluster.stop().await.unwrap();
        assert_eq!(zombie_children(), Vec::<u32>::new());
        assert!(
            common::children(std::process::id()).is_empty(),
            "no child left"
        );
    })
    .await;
}

#[actix::test]
async fn descriptors_and_threads_return_to_baseline_after_500_respawns() {
    let _serial = serial();
    within(180, async {
        let me = std::process::id();
        let inherited: HashSet<String> = common::fds(me)
            .into_iter()
            .map(|(_, target)| target)
            .filter(|t| t.starts_with("pipe:") || t.starts_with("socket:"))
            .collect();
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(echo_config(2).restart(no_limits()))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let fds = common::fd_count(me);
        let threads = runtime_threads();
        for generation in 2..=501 {
            cluster.kill(0).await.unwrap();
            next_matching(&mut rx, Duration::from_secs(10), |e| {
                e.worker == 0 && e.generation == generation && e.kind == WorkerEventKind::Ready
            })
            .await
            .unwrap_or_else(|| panic!("respawn {generation}"));
        }
        descriptors_back_to(me, fds).await;
        // Threads come and go with libtest's test threads; the runtime's own must not grow.
        assert_eq!(
            runtime_threads(),
            threads,
            "one spawner thread, however many respawns"
        );
        assert_eq!(zombie_children(), Vec::<u32>::new());

        // No worker holds another worker's pipe.
        let infos = cluster.workers().await.unwrap();
        let pipes = |pid: u32| -> HashSet<String> {
            common::fds(pid)
                .into_iter()
                .map(|(_, target)| target)
                .filter(|t| t.starts_with("pipe:"))
                .collect()
        };
        let (a, b) = (pipes(infos[0].pid.unwrap()), pipes(infos[1].pid.unwrap()));
        assert!(!a.is_empty() && !b.is_empty());
        assert!(
            a.is_disjoint(&b),
            "shared pipes: {:?}",
            a.intersection(&b).collect::<Vec<_>>()
        );
        for info in &infos {
            // Its own three pipes (stderr, and the two channel ends), and nothing the master
            // holds for itself or inherited from its parent.
            let fds = common::fds(info.pid.unwrap());
            assert_eq!(
                pipes(info.pid.unwrap()).len(),
                3,
                "worker descriptors: {fds:?}"
            );
            let foreign: Vec<_> = fds
                .iter()
                .filter(|(_, target)| inherited.contains(target))
                .collect();
            assert!(foreign.is_empty(), "inherited by the worker: {foreign:?}");
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn descriptors_threads_and_zombies_return_to_baseline_after_50_reloads() {
    let _serial = serial();
    within(180, async {
        let me = std::process::id();
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(2))
            .await
            .unwrap();
        let fds = common::fd_count(me);
        let threads = runtime_threads();
        for round in 1..=50u64 {
            let report = cluster.reload().await.unwrap();
            assert_eq!(report.replaced.len(), 2);
            assert!(report.replaced.iter().all(|r| r.generation == round + 1));
        }
        // Every replaced process reaped, its pipes closed, no thread left behind.
        descriptors_back_to(me, fds).await;
        assert_eq!(runtime_threads(), threads);
        assert_eq!(zombie_children(), Vec::<u32>::new());
        let live: Vec<u32> = common::children(me)
            .into_iter()
            .filter(|&pid| common::is_alive(pid))
            .collect();
        assert_eq!(
            live.len(),
            2,
            "only the two serving processes run: {live:?}"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_worker_that_stops_reading_gets_backpressure_and_can_still_be_stopped() {
    let _serial = serial();
    within(60, async {
        let me = std::process::id();
        let limit = 1024 * 1024;
        let config = chaos_config(1, &[(0, "stop-reading")])
            .max_frame_bytes(256 * 1024)
            .max_outbox_bytes(limit)
            .heartbeat_interval(Duration::ZERO)
            .shutdown_timeout(Duration::from_millis(300));
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let w = cluster.worker(0);
        let rss_before = common::status_field(me, "VmRSS").unwrap();
        let calls: Vec<_> = (0..200)
            .map(|_| actix::spawn(w.send(Call(EchoMsg::Echo(vec![7; 64 * 1024])))))
            .collect();
        // Requests beyond the outbox limit are refused at once; the rest wait for the worker.
        let mut refused = 0;
        let mut waiting = Vec::new();
        for call in calls {
            let call = tokio::time::timeout(Duration::from_millis(50), call);
            match call.await {
                Ok(result) => {
                    let err = result.unwrap().unwrap().unwrap_err();
                    assert!(matches!(err, CallError::Backpressure { .. }), "{err:?}");
                    refused += 1;
                }
                Err(pending) => waiting.push(pending),
            }
        }
        assert!(refused >= 150, "refused {refused} of 200");
        let kib = |s: String| s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        let grown = kib(common::status_field(me, "VmRSS").unwrap()) - kib(rss_before);
        assert!(
            grown < 16 * 1024,
            "the master's memory stayed bounded: +{grown} KiB"
        );
        let started = Instant::now();
        cluster.stop().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        let info = &cluster.workers().await.unwrap()[0];
        assert_eq!(info.state, WorkerState::Exited);
        drop(waiting);
    })
    .await;
}

#[actix::test]
async fn spawn_failures_count_toward_intensity_and_leak_nothing() {
    let _serial = serial();
    within(60, async {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("procactor-spawn-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("echo-worker");
        std::fs::copy(env!("CARGO_BIN_EXE_procactor-echo"), &program).unwrap();
        let fds = common::fd_count(me);
        let (events, mut rx) = collector::<WorkerEvent>();
        let config = echo_config(1).exec(&program).restart(RestartPolicy {
            intensity: Intensity {
                max_restarts: 2,
                period: Duration::from_secs(60),
            },
            backoff: Backoff::none(),
            escalation: Escalation::FailGroup,
            ..RestartPolicy::default()
        });
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        std::fs::remove_file(&program).unwrap();
        cluster.kill(0).await.unwrap();
        let gave_up = next_matching(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.kind, WorkerEventKind::GaveUp { .. })
        })
        .await
        .expect("gave up after failed spawns");
        let WorkerEventKind::GaveUp {
            reason, restarts, ..
        } = gave_up.kind
        else {
            unreachable!()
        };
        assert_eq!(restarts, 2);
        assert!(
            matches!(&reason, ExitReason::SpawnFailed(e) if e.kind == std::io::ErrorKind::NotFound),
            "{reason:?}"
        );
        cluster.stop().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            common::fd_count(me),
            fds,
            "descriptors: {:?}",
            common::fds(me)
        );
        assert_eq!(zombie_children(), Vec::<u32>::new());
    })
    .await;
}
