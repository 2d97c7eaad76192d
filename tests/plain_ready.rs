//! Plain programs' readiness: a Python server that reports `READY=1` to `NOTIFY_SOCKET` is
//! reloaded under load with no failed request, and a new version that never becomes ready
//! fails the reload while the old processes go on serving; a probe makes a program ready once
//! it answers; a program that stops pinging its watchdog is killed and restarted.
//!
//! The program is `tests/fixtures/server.py` (standard library only), copied into a directory
//! of the test's own, which is the cluster's `cwd`: a test "deploys" a new version by
//! overwriting it there, as an operator would.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{collector, next_matching, within};
use common::http::{get, parse_pid, Load, LoadOptions};
use common::is_alive;
use procactor::actors::echo::Echo;
use procactor::prelude::*;
use procactor::{Error, ExitReason, ListenAddr, Readiness, ReloadError, ReplaceError, WorkerState};

const SERVER: &str = include_str!("fixtures/server.py");

/// A directory holding the server as `server.py`; removed on drop.
struct App {
    dir: PathBuf,
}

impl App {
    fn new(test: &str) -> App {
        let dir =
            std::env::temp_dir().join(format!("procactor-plain-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let app = App { dir };
        app.deploy(SERVER);
        app
    }

    /// Replaces `server.py` with `text` (the running processes keep what they read).
    fn deploy(&self, text: &str) {
        let new = self.dir.join("server.py.new");
        std::fs::write(&new, text).unwrap();
        std::fs::rename(new, self.dir.join("server.py")).unwrap();
    }

    /// `n` instances of the server, sharing one port.
    fn config(&self, n: usize, ready: Readiness) -> ClusterConfig {
        ClusterConfig::new()
            .workers(n)
            .exec("python3")
            .args(["server.py"])
            .cwd(&self.dir)
            .plain(true)
            .listen("http", "127.0.0.1:0")
            .ready(ready)
            .ready_timeout(Duration::from_secs(20))
            .shutdown_timeout(Duration::from_secs(10))
            .handle_signals(false)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tcp_addr(cluster: &Cluster<Echo>) -> SocketAddr {
    match cluster.local_addr("http") {
        Some(ListenAddr::Tcp(addr)) => addr,
        other => panic!("{other:?}"),
    }
}

async fn pids(cluster: &Cluster<Echo>) -> BTreeSet<u32> {
    let workers = cluster.workers().await.unwrap();
    workers.iter().filter_map(|i| i.pid).collect()
}

/// Load on `addr` that has been answered by every one of `pids`.
async fn load_on(addr: SocketAddr, pids: &BTreeSet<u32>) -> Load {
    let load = Load::start(addr, LoadOptions::default());
    let answered = common::wait_until_async(Duration::from_secs(30), || {
        load.stats().pids.is_superset(pids)
    });
    assert!(
        answered.await,
        "not every instance answered: {}",
        load.stats().summary()
    );
    load
}

#[actix::test]
async fn a_python_server_notifying_ready_is_reloaded_under_load_with_no_failed_request() {
    within(180, async {
        let app = App::new("reload");
        let config = app
            .config(3, Readiness::Notify)
            .env("SERVER_BAD_FIRST", "1");
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let old = pids(&cluster).await;
        assert_eq!(old.len(), 3);
        for id in cluster.ids() {
            let status = cluster.notify_status(id).await.unwrap().expect("a socket");
            assert!(status.ready, "{status:?}");
            assert_eq!(status.status.as_deref(), Some("serving"));
            assert_eq!(
                (status.datagrams, status.bad_datagrams),
                (1, 1),
                "{status:?}"
            );
            assert!(old.contains(&status.pid.unwrap()));
        }
        let load = load_on(tcp_addr(&cluster), &old).await;

        let report = cluster.reload().await.unwrap();
        assert_eq!(report.replaced.len(), 3);
        for pid in &old {
            assert!(!is_alive(*pid), "old instance {pid} still runs");
        }
        let new = pids(&cluster).await;
        assert!(new.is_disjoint(&old), "old {old:?} new {new:?}");
        let mark = Instant::now();
        let served = common::wait_until_async(Duration::from_secs(30), || {
            load.stats().pids_since(mark) == new
        });
        assert!(served.await, "{}", load.stats().summary());
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        cluster.stop().await.unwrap();
        for pid in new {
            assert!(!is_alive(pid));
        }
    })
    .await;
}

#[actix::test]
async fn a_new_version_that_is_never_ready_fails_the_reload_and_the_old_instances_serve() {
    // Exits at once; or never says READY=1 (nor takes a connection: killed at its ready
    // timeout, it must not cut any).
    let exits = "import sys\nsys.exit(1)\n";
    let silent = "import time\ntime.sleep(600)\n";
    let one_second = Readiness::Spawn {
        min_uptime: Duration::from_secs(1),
    };
    let cases = [
        (
            "notify-exits",
            Readiness::Notify,
            exits,
            ExitReason::Exited(1),
        ),
        (
            "notify-silent",
            Readiness::Notify,
            silent,
            ExitReason::ReadyTimeout,
        ),
        ("uptime-exits", one_second, exits, ExitReason::Exited(1)),
    ];
    for (test, ready, broken, reason) in cases {
        within(180, async {
            let app = App::new(test);
            let config = app.config(3, ready).ready_timeout(Duration::from_secs(5));
            let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
            let old = pids(&cluster).await;
            let addr = tcp_addr(&cluster);
            let load = load_on(addr, &old).await;

            app.deploy(broken);
            let error = cluster.reload().await.unwrap_err();
            let Error::Reload(ReloadError::Replace {
                replaced: 0,
                of: 3,
                source:
                    ReplaceError::Failed {
                        worker,
                        reason: why,
                        ..
                    },
            }) = &error
            else {
                panic!("{test}: {error:?}");
            };
            assert_eq!((*worker, why), (cluster.ids()[0], &reason), "{test}");

            // The same processes serve every slot, and answer.
            assert_eq!(pids(&cluster).await, old, "{test}");
            for info in cluster.workers().await.unwrap() {
                assert_eq!(
                    (info.state, info.generation),
                    (WorkerState::Ready, 1),
                    "{test}"
                );
            }
            let stats = load.stop();
            assert_eq!(stats.failures, 0, "{test}: {}", stats.summary());
            let answered: BTreeSet<u32> = (0..30)
                .filter_map(|_| match get(addr, "/") {
                    Ok((200, body)) => parse_pid(&body),
                    other => panic!("{test}: {other:?}"),
                })
                .collect();
            assert!(answered.is_subset(&old), "{test}: {answered:?} {old:?}");
            cluster.stop().await.unwrap();
        })
        .await;
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

#[actix::test]
async fn a_probe_makes_a_plain_program_ready_once_it_answers() {
    within(120, async {
        let app = App::new("probe");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/health");
        for ready in [
            Readiness::Http(url),
            Readiness::Tcp(([127, 0, 0, 1], port).into()),
        ] {
            let config = app
                .config(1, ready.clone())
                .env("HEALTH_PORT", port.to_string())
                .env("HEALTH_DELAY_MS", "1500");
            let started = Instant::now();
            let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
            assert!(
                started.elapsed() >= Duration::from_millis(1500),
                "{ready:?}: ready before its probe answered ({:?})",
                started.elapsed()
            );
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            assert_eq!(cluster.notify_status(cluster.ids()[0]).await.unwrap(), None);
            cluster.stop().await.unwrap();
            let closed = common::wait_until_async(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            });
            assert!(
                closed.await,
                "{ready:?}: the health port outlived the program"
            );
        }

        // Nothing ever answers: not ready within the ready timeout.
        let silent = Readiness::Tcp(([127, 0, 0, 1], free_port()).into());
        let config = app.config(1, silent).ready_timeout(Duration::from_secs(2));
        let error = ClusterSupervisor::start::<Echo>(config).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::StartFailed {
                    reason: ExitReason::ReadyTimeout,
                    ..
                }
            ),
            "{error:?}"
        );
    })
    .await;
}

#[actix::test]
async fn a_plain_program_that_stops_pinging_its_watchdog_is_killed_and_restarted() {
    within(120, async {
        let app = App::new("watchdog");
        let (events, mut seen) = collector::<WorkerEvent>();
        // Pings every 250 ms (a quarter of the period) for 2 s, then no more.
        let config = app
            .config(1, Readiness::Notify)
            .watchdog(Duration::from_secs(1))
            .env("WATCHDOG_PINGS", "8");
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let first = pids(&cluster).await;
        let exited = next_matching(&mut seen, Duration::from_secs(30), |e| {
            matches!(e.kind, WorkerEventKind::Exited { .. })
        })
        .await
        .expect("killed by its watchdog");
        let WorkerEventKind::Exited { reason, uptime, .. } = exited.kind else {
            unreachable!()
        };
        assert_eq!(reason, ExitReason::WatchdogTimeout);
        assert_eq!(exited.pid, first.first().copied());
        // Alive while it pinged (2 s, twice the period), killed a period after its last ping.
        assert!(
            uptime >= Duration::from_secs(2) && uptime < Duration::from_secs(10),
            "{uptime:?}"
        );
        assert!(!is_alive(exited.pid.unwrap()));

        // The restart policy applies, as for a crash.
        next_matching(&mut seen, Duration::from_secs(30), |e| {
            e.generation == 2 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("restarted");
        let info = &cluster.workers().await.unwrap()[0];
        assert_eq!((info.restarts, info.state), (1, WorkerState::Ready));
        let id = info.id;
        common::eventually(
            Duration::from_secs(10),
            "the new process to ping",
            || async {
                let status = cluster.notify_status(id).await.unwrap().unwrap();
                status.ready && status.since_watchdog.is_some()
            },
        )
        .await;
        cluster.stop().await.unwrap();
    })
    .await;
}

/// Every answer of `addr` over `n` requests: (pid, greeting or "").
fn answers(addr: SocketAddr, n: usize) -> Vec<(u32, String)> {
    (0..n)
        .map(|_| match get(addr, "/") {
            Ok((200, body)) => {
                let pid = parse_pid(&body).expect("a pid");
                let greeting = body
                    .split_once(" greeting ")
                    .map_or(String::new(), |(_, g)| g.trim().to_owned());
                (pid, greeting)
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[actix::test]
async fn a_reload_onto_a_new_environment_fails_no_request_and_later_processes_keep_it() {
    within(180, async {
        let app = App::new("reload-with");
        let config = app
            .config(3, Readiness::Notify)
            .env("SERVER_GREETING", "hi");
        let cluster = ClusterSupervisor::start::<Echo>(config.clone())
            .await
            .unwrap();
        let old = pids(&cluster).await;
        let addr = tcp_addr(&cluster);
        let load = load_on(addr, &old).await;

        let next = procactor::Program::of(&config).env("SERVER_GREETING", "hello");
        let report = cluster.reload_with(next).await.unwrap();
        assert_eq!(report.replaced.len(), 3);
        let new = pids(&cluster).await;
        assert!(new.is_disjoint(&old));
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        assert!(answers(addr, 20).iter().all(|(_, g)| g == "hello"));

        // A restart after the reload runs the new program too.
        let id = cluster.ids()[0];
        let victim = cluster.workers().await.unwrap()[0].pid.unwrap();
        cluster.kill(id).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = &cluster.workers().await.unwrap()[0];
            if info.state == WorkerState::Ready && info.pid.is_some_and(|p| p != victim) {
                break;
            }
            assert!(Instant::now() < deadline, "not restarted: {info:?}");
            actix::clock::sleep(Duration::from_millis(20)).await;
        }
        assert!(answers(addr, 20).iter().all(|(_, g)| g == "hello"));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_failed_reload_onto_a_new_program_rolls_every_worker_back_with_no_failed_request() {
    within(180, async {
        let app = App::new("rollback");
        let counts = app.dir.join("starts");
        std::fs::create_dir_all(&counts).unwrap();
        let config = app
            .config(3, Readiness::Notify)
            .ready_timeout(Duration::from_secs(5))
            .env("SERVER_GREETING", "old");
        let cluster = ClusterSupervisor::start::<Echo>(config.clone())
            .await
            .unwrap();
        let old = pids(&cluster).await;
        let addr = tcp_addr(&cluster);
        let load = load_on(addr, &old).await;

        // The new version starts once, then breaks: the second replacement fails.
        let next = procactor::Program::of(&config)
            .env("SERVER_GREETING", "new")
            .env("SERVER_COUNT_DIR", counts.to_string_lossy())
            .env("SERVER_FAIL_AFTER", "1");
        let error = cluster.reload_with(next).await.unwrap_err();
        let Error::Reload(ReloadError::RolledBack { cause }) = &error else {
            panic!("{error:?}");
        };
        assert!(
            matches!(
                **cause,
                ReloadError::Replace {
                    replaced: 1,
                    of: 3,
                    ..
                }
            ),
            "{cause:?}"
        );
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        // Every worker runs the old program (the one replaced by the new version was replaced
        // back), and is ready.
        for info in cluster.workers().await.unwrap() {
            assert_eq!(info.state, WorkerState::Ready, "{info:?}");
        }
        let seen = answers(addr, 30);
        assert!(seen.iter().all(|(_, g)| g == "old"), "{seen:?}");

        // A new version that fails at once: nothing was replaced, so nothing is replaced back.
        let before = pids(&cluster).await;
        let broken = procactor::Program::of(&config)
            .env("SERVER_COUNT_DIR", counts.to_string_lossy())
            .env("SERVER_FAIL_AFTER", "0");
        let error = cluster.reload_with(broken).await.unwrap_err();
        let Error::Reload(ReloadError::RolledBack { cause }) = &error else {
            panic!("{error:?}");
        };
        assert!(
            matches!(**cause, ReloadError::Replace { replaced: 0, .. }),
            "{cause:?}"
        );
        assert_eq!(
            pids(&cluster).await,
            before,
            "the serving processes were left alone"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}
