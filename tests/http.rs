//! HTTP workers on the shared port under steady load: rolling reloads, rollback, scaling, a
//! plain socket-activated program, and the `http_cluster` example driven by signals.
//!
//! The load client never resends a request (`common::http`): every request that got no
//! complete response counts as failed, so these tests hold the drain to what a client that does
//! not retry sees.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::within;
use common::http::{get, parse_pid, KeepAlive, Load, LoadOptions};
use common::{is_alive, wait_until, KillOnDrop};
use procactor::actors::http::{HttpMsg, HttpReply, HttpWorker, DRAIN_GRACE_ENV};
use procactor::prelude::*;
use procactor::{CallError, Error, ListenAddr, OldExit, ReloadError, ReloadReport, ReplaceError};

const HTTP_BIN: &str = env!("CARGO_BIN_EXE_procactor-http");

fn http_config(n: usize, program: &Path) -> ClusterConfig {
    ClusterConfig::new()
        .workers(n)
        .exec(program)
        .listen("http", "127.0.0.1:0")
        .env(procactor::actors::http::SHUTDOWN_SECS_ENV, "10")
        .ready_timeout(Duration::from_secs(20))
        .shutdown_timeout(Duration::from_secs(15))
        .handle_signals(false)
}

fn tcp_addr(cluster: &Cluster<HttpWorker>) -> SocketAddr {
    match cluster.local_addr("http") {
        Some(ListenAddr::Tcp(addr)) => addr,
        other => panic!("{other:?}"),
    }
}

async fn pids(cluster: &Cluster<HttpWorker>) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for w in cluster.addrs() {
        if let Ok(Ok(HttpReply::Pid(pid))) = w.send(Call(HttpMsg::Pid)).await {
            pids.insert(pid);
        }
    }
    pids
}

fn steady_load(addr: SocketAddr) -> Load {
    let load = Load::start(
        addr,
        LoadOptions {
            threads_keepalive: 2,
            threads_new_conn: 2,
            path: "/".into(),
        },
    );
    assert!(
        wait_until(Duration::from_secs(20), || load.stats().ok >= 200),
        "the load never got going: {}",
        load.stats().summary()
    );
    load
}

/// Waits (without blocking the actix loop) until `cond` holds, or panics after `secs`.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every old process of `report` exited cleanly, and the drains overlapped the next slots'
/// replacements: the reload took less than its replacements and drains one after another
/// (each drain lasts at least the drain's shortest grace, 100 ms).
fn drains_overlapped(report: &ReloadReport) {
    let mut serial = Duration::ZERO;
    for r in &report.replaced {
        let OldExit::Exited { reason, drained_in } = &r.old_exit else {
            panic!("worker {} still drains: {report:?}", r.worker);
        };
        assert!(reason.is_normal(), "worker {}: {reason}", r.worker);
        println!(
            "worker {}: replaced in {} ms, old drained in {} ms",
            r.worker,
            r.ready_in.as_millis(),
            drained_in.as_millis()
        );
        serial += r.ready_in + *drained_in;
    }
    println!("reload: {} ms", report.elapsed.as_millis());
    assert!(
        report.elapsed < serial,
        "the drains did not overlap: {} ms, one after another {} ms",
        report.elapsed.as_millis(),
        serial.as_millis()
    );
}

/// A private copy of the HTTP worker binary, to be replaced as a deploy would.
struct Deployed {
    dir: PathBuf,
    program: PathBuf,
}

impl Deployed {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("procactor-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("worker");
        std::fs::copy(HTTP_BIN, &program).unwrap();
        Self { dir, program }
    }

    /// Replaces the program atomically (write aside, rename over) with a shell script.
    fn deploy_script(&self, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let next = self.dir.join("worker.next");
        std::fs::write(&next, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &self.program).unwrap();
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[actix::test]
async fn a_rolling_reload_of_4_workers_under_load_answers_every_request_from_new_pids() {
    within(180, async {
        let deployed = Deployed::new("reload");
        let cluster = ClusterSupervisor::start::<HttpWorker>(http_config(4, &deployed.program))
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let old = pids(&cluster).await;
        assert_eq!(old.len(), 4);
        let load = steady_load(addr);
        // The load reaches every old worker before the reload replaces the first of them.
        until(30, "every old worker to answer", || {
            load.stats().pids.is_superset(&old)
        })
        .await;

        // A deploy: the program on disk is replaced, then the cluster reloads.
        deployed.deploy_script(&format!("exec {HTTP_BIN} --deployed-v2 \"$@\""));
        let report = cluster.reload().await.unwrap();
        let mark = Instant::now();
        let new = pids(&cluster).await;
        assert_eq!(report.replaced.len(), 4);
        drains_overlapped(&report);
        assert!(new.is_disjoint(&old), "old {old:?} new {new:?}");
        for pid in &new {
            assert!(
                cmdline(*pid).contains("--deployed-v2"),
                "{pid} runs the old program"
            );
        }
        for pid in &old {
            assert!(!is_alive(*pid), "old worker {pid} still runs");
        }
        until(30, "every new worker to answer", || {
            load.stats().pids_since(mark) == new
        })
        .await;
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        assert!(stats.pids.is_superset(&old), "{}", stats.summary());
        assert!(stats.pids.is_superset(&new), "{}", stats.summary());
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_replacement_that_never_becomes_ready_rolls_back_and_the_old_workers_keep_serving() {
    within(180, async {
        let deployed = Deployed::new("rollback");
        let config = http_config(4, &deployed.program).ready_timeout(Duration::from_secs(3));
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let old = pids(&cluster).await;
        let load = steady_load(addr);

        // A broken deploy: the new program hangs before it says anything.
        deployed.deploy_script("echo 'v3: stuck' >&2; exec sleep 600");
        let error = cluster.reload().await.unwrap_err();
        let Error::Reload(ReloadError::Replace {
            replaced: 0,
            source:
                ReplaceError::Failed {
                    worker: 0,
                    reason,
                    last_stderr,
                },
            ..
        }) = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*reason, procactor::ExitReason::ReadyTimeout);
        assert!(
            last_stderr.iter().any(|l| l.contains("v3: stuck")),
            "{last_stderr:?}"
        );

        let mark = Instant::now();
        assert_eq!(pids(&cluster).await, old, "nothing was replaced");
        until(30, "the old workers to go on answering", || {
            load.stats().pids_since(mark) == old
        })
        .await;
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        assert_eq!(stats.pids, old, "only the old workers answered");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn scaling_down_and_up_under_load_fails_no_request() {
    within(180, async {
        let cluster = ClusterSupervisor::start::<HttpWorker>(http_config(4, Path::new(HTTP_BIN)))
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let four = pids(&cluster).await;
        let start = Instant::now();
        let load = steady_load(addr);
        // The load reaches every worker before two of them go (the last assertion wants
        // answers from all four).
        until(30, "the load to reach all four workers", || {
            load.stats().pids_since(start) == four
        })
        .await;

        cluster.scale(2).await.unwrap();
        let two = pids(&cluster).await;
        assert_eq!(two.len(), 2);
        assert!(two.is_subset(&four));
        for pid in four.difference(&two) {
            assert!(!is_alive(*pid), "stopped worker {pid} still runs");
        }
        let mark = Instant::now();
        until(30, "the two remaining workers to answer", || {
            load.stats().pids_since(mark) == two
        })
        .await;

        cluster.scale(4).await.unwrap();
        let again = pids(&cluster).await;
        assert_eq!(again.len(), 4);
        let mark = Instant::now();
        until(30, "all four workers to answer", || {
            load.stats().pids_since(mark) == again
        })
        .await;
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        assert!(stats.pids.is_superset(&four), "{}", stats.summary());
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_draining_worker_answers_a_request_on_an_idle_connection_and_tells_it_to_close() {
    within(120, async {
        let grace = Duration::from_secs(5);
        let config =
            http_config(1, Path::new(HTTP_BIN)).env(DRAIN_GRACE_ENV, grace.as_millis().to_string());
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let mut idle = KeepAlive::connect(addr).unwrap();
        let first = idle.get("/").unwrap();
        assert!(!first.close, "{first:?}");
        let old = parse_pid(&first.body).unwrap();

        let client = async {
            // Once a new connection reaches another process, the old one has handed over.
            loop {
                let answer = tokio::task::spawn_blocking(move || get(addr, "/"))
                    .await
                    .unwrap();
                if let Ok((200, body)) = answer {
                    if parse_pid(&body) != Some(old) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The connection idles, then asks again: answered by the old process until its
            // drain began, then once more, with `Connection: close`, and closed after that.
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + grace;
                let mut replies = Vec::new();
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let reply = idle.get("/").expect("a request on the idle connection");
                    let close = reply.close;
                    replies.push(reply);
                    if close || Instant::now() > deadline {
                        break;
                    }
                }
                (replies, idle.closed_by_server())
            })
            .await
            .unwrap()
        };
        let (report, (replies, closed)) = tokio::join!(cluster.reload(), client);
        let report = report.unwrap();
        for reply in &replies {
            assert_eq!(reply.status, 200, "{replies:?}");
            assert_eq!(parse_pid(&reply.body), Some(old), "{replies:?}");
        }
        assert!(
            replies.last().unwrap().close,
            "never told to close: {replies:?}"
        );
        assert!(closed, "the connection stayed open after Connection: close");
        // The grace ended once no connection was open, long before its 5 s.
        let OldExit::Exited { reason, drained_in } = &report.replaced[0].old_exit else {
            panic!("{report:?}");
        };
        assert!(reason.is_normal(), "{reason}");
        assert!(*drained_in < grace, "drained in {drained_in:?}");
        assert!(!is_alive(old));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_replace_answers_at_the_hand_over_and_the_next_one_waits_for_the_old_process() {
    within(120, async {
        // An idle connection holds the old process in its grace.
        let grace = Duration::from_secs(2);
        let config =
            http_config(1, Path::new(HTTP_BIN)).env(DRAIN_GRACE_ENV, grace.as_millis().to_string());
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let mut idle = KeepAlive::connect(tcp_addr(&cluster)).unwrap();
        let first = parse_pid(&idle.get("/").unwrap().body).unwrap();

        let worker = cluster.worker(0);
        let one = worker.send(procactor::Replace).await.unwrap().unwrap();
        assert_eq!(one.old_pid, Some(first));
        assert_eq!(one.old_exit, OldExit::Draining);
        assert!(is_alive(first), "the old process drains after the answer");
        // Another idle connection, on the new process, for what follows.
        let second = one.new_pid.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut held = loop {
            let mut conn = KeepAlive::connect(tcp_addr(&cluster)).unwrap();
            if parse_pid(&conn.get("/").unwrap().body) == Some(second) {
                break conn;
            }
            assert!(Instant::now() < deadline, "the new process never answered");
        };
        // The next Replace begins once that process has exited.
        let two = worker.send(procactor::Replace).await.unwrap().unwrap();
        assert!(!is_alive(first), "the second Replace did not wait");
        let exit = one.old_exited().await;
        assert!(exit.is_normal(), "{exit}");
        let OldExit::Exited { drained_in, .. } = exit else {
            unreachable!()
        };
        // Nobody used the idle connection: it was closed at the end of the grace.
        assert!(drained_in >= grace, "drained in {drained_in:?}");
        assert!(idle.closed_by_server());
        // A stop of the slot waits for its old process still in its grace, too.
        assert_eq!(two.old_pid, Some(second));
        assert!(is_alive(second), "the second old process drains");
        cluster.stop().await.unwrap();
        let alive = is_alive(second);
        let exit = two.old_exited().await;
        assert!(
            !alive,
            "the cluster stopped before a draining process: {exit:?}"
        );
        assert!(exit.is_normal(), "{exit:?}");
        assert!(held.closed_by_server());
    })
    .await;
}

#[actix::test]
async fn a_plain_program_serves_on_the_socket_it_is_handed() {
    within(60, async {
        let config = http_config(2, Path::new(HTTP_BIN)).plain(true);
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let workers: BTreeSet<u32> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .filter_map(|i| i.pid)
            .collect();
        assert_eq!(workers.len(), 2);

        // Not a procactor worker: it takes no messages...
        let reply = cluster.worker(0).send(Call(HttpMsg::Pid)).await.unwrap();
        assert_eq!(reply, Err(CallError::NoChannel { worker: 0 }));
        // ...but it serves on the socket the master handed it, once it has set up its server.
        let mut answered = BTreeSet::new();
        until(30, "both plain programs to answer", || {
            if let Ok((200, body)) = get(addr, "/") {
                answered.extend(parse_pid(&body));
            }
            answered == workers
        })
        .await;
        // Stopped with SIGTERM: a graceful exit.
        cluster.stop().await.unwrap();
        for pid in workers {
            assert!(!is_alive(pid));
        }
    })
    .await;
}

async fn plain_pids(cluster: &Cluster<HttpWorker>) -> BTreeSet<u32> {
    let workers = cluster.workers().await.unwrap();
    workers.iter().filter_map(|i| i.pid).collect()
}

#[actix::test]
async fn a_plain_program_reloaded_under_load_fails_no_request() {
    within(180, async {
        let config = http_config(4, Path::new(HTTP_BIN)).plain(true);
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        let old = plain_pids(&cluster).await;
        assert_eq!(old.len(), 4);
        let load = steady_load(addr);
        until(30, "every plain program to answer", || {
            load.stats().pids.is_superset(&old)
        })
        .await;

        // Each old program gets SIGTERM as soon as its replacement runs, and drains.
        let report = cluster.reload().await.unwrap();
        assert_eq!(report.replaced.len(), 4);
        drains_overlapped(&report);
        for pid in &old {
            assert!(!is_alive(*pid), "old program {pid} still runs");
        }
        let new = plain_pids(&cluster).await;
        assert!(new.is_disjoint(&old), "old {old:?} new {new:?}");
        let mark = Instant::now();
        until(30, "every new program to answer", || {
            load.stats().pids_since(mark) == new
        })
        .await;
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        cluster.stop().await.unwrap();
    })
    .await;
}

/// `target/<profile>/examples/http_cluster`, built by `cargo test` beside the binaries.
fn example_path() -> PathBuf {
    Path::new(HTTP_BIN)
        .parent()
        .unwrap()
        .join("examples")
        .join("http_cluster")
}

/// The `http_cluster` example as a master of its own, driven by signals: its output lines,
/// read by a thread.
struct ExampleMaster {
    child: std::process::Child,
    _guard: KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
    /// `(worker, pid)` of every `up` line so far, in order.
    ups: Vec<(usize, u32)>,
}

impl ExampleMaster {
    fn start(workers: usize) -> Self {
        let mut child = Command::new(example_path())
            .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example is built by cargo test");
        let guard = KillOnDrop(child.id());
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            _guard: guard,
            lines,
            ups: Vec::new(),
        }
    }

    /// The next line within `timeout`, noting the `up` lines.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        if let Some(rest) = line.strip_prefix("up      worker ") {
            // "up      worker 0 (pid 123), generation 1"
            let worker = rest.split(' ').next().and_then(|w| w.parse().ok());
            let pid = rest
                .split("(pid ")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|p| p.parse().ok());
            if let (Some(worker), Some(pid)) = (worker, pid) {
                self.ups.push((worker, pid));
            }
        }
        Some(line)
    }

    /// Reads lines until one contains `what` (60 s at most).
    fn wait_line(&mut self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if line.contains(what) => return line,
                Some(_) => {}
                None => panic!("no line with {what:?}"),
            }
        }
    }

    /// The address of the `serving http://…/` line.
    fn serving(&mut self) -> SocketAddr {
        let serving = self.wait_line("serving http://");
        serving
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{serving}"))
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// The pid each worker runs now (its last `up` line), and every pid that came up before.
    fn current_and_old(&self) -> (BTreeSet<u32>, BTreeSet<u32>) {
        let mut last = std::collections::BTreeMap::new();
        for (worker, pid) in &self.ups {
            last.insert(*worker, *pid);
        }
        let current: BTreeSet<u32> = last.values().copied().collect();
        let old = self
            .ups
            .iter()
            .map(|(_, pid)| *pid)
            .filter(|pid| !current.contains(pid))
            .collect();
        (current, old)
    }

    /// SIGTERM: it prints `stopped` and exits with status 0, and no worker outlives it.
    fn stop(mut self, workers: &BTreeSet<u32>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_line("stopped");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0));
        for pid in workers {
            assert!(
                wait_until(Duration::from_secs(5), || !is_alive(*pid)),
                "worker {pid} outlived the master"
            );
        }
    }
}

#[test]
fn the_http_cluster_example_reloads_on_sighup_and_stops_on_sigterm_with_status_0() {
    let mut master = ExampleMaster::start(2);
    let addr = master.serving();
    let load = steady_load(addr);
    let before = load.stats().pids;

    master.signal(nix::sys::signal::Signal::SIGHUP);
    master.wait_line("reload  started: 2 workers");
    master.wait_line("reload  1/2");
    master.wait_line("reload  2/2");
    master.wait_line("reload  done");
    let mark = Instant::now();
    assert!(wait_until(Duration::from_secs(30), || {
        let since = load.stats().pids_since(mark);
        since.len() == 2 && since.is_disjoint(&before)
    }));
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
    master.stop(&stats.pids);
}

#[test]
fn a_storm_of_10_sighups_in_100_ms_gives_at_most_two_reloads_and_fails_no_request() {
    let mut master = ExampleMaster::start(4);
    let addr = master.serving();
    let load = steady_load(addr);
    // The load reaches every worker before the storm; those of a reload in between may live
    // too short a time for it to reach them all.
    let (first, _) = master.current_and_old();
    assert_eq!(first.len(), 4, "{:?}", master.ups);
    assert!(wait_until(Duration::from_secs(30), || load
        .stats()
        .pids
        .is_superset(&first)));

    // Ten SIGHUPs, 5 ms apart: the first starts a reload, the others share one queued behind it.
    let storm = Instant::now();
    for _ in 0..10 {
        master.signal(nix::sys::signal::Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("10 SIGHUPs sent in {} ms", storm.elapsed().as_millis());
    // A queued reload starts in the same turn of the supervisor as the one before ends, so 3 s
    // with no start after as many `done` as `started` lines means no reload follows.
    let (mut started, mut done) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let quiet = if started > 0 && done == started {
            Duration::from_secs(3)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let Some(line) = master.next_line(quiet) else {
            assert!(started > 0 && done == started, "no reload ended in time");
            break;
        };
        assert!(!line.contains("reload  failed"), "{line}");
        if line.contains("reload  started") {
            started += 1;
        } else if line.contains("reload  done") {
            println!("{line}");
            done += 1;
        }
    }
    println!("{started} reloads for 10 SIGHUPs");
    assert!((1..=2).contains(&started), "{started} reloads");

    // Every reload waited for its old processes: none is left once the last one is done.
    let (current, old) = master.current_and_old();
    assert_eq!(current.len(), 4, "{:?}", master.ups);
    assert_eq!(old.len(), 4 * started, "{:?}", master.ups);
    for pid in &old {
        assert!(!is_alive(*pid), "old worker {pid} still runs");
    }
    let mark = Instant::now();
    assert!(wait_until(Duration::from_secs(30), || load
        .pids_since(mark)
        == current));
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
    assert!(stats.pids.is_superset(&first), "{}", stats.summary());
    master.stop(&current);
}

#[actix::test]
async fn the_http_worker_writes_an_ip_record_for_every_request() {
    within(60, async {
        let dir = std::env::temp_dir().join(format!("procactor-http-ip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = http_config(2, Path::new(HTTP_BIN)).log(procactor::logger::LogConfig {
            dir: Some(dir.clone()),
            tracing: false,
            ..procactor::logger::LogConfig::default()
        });
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let addr = tcp_addr(&cluster);
        for n in 0..10 {
            let (status, _) = get(addr, &format!("/health?n={n}")).unwrap();
            assert_eq!(status, 200);
        }
        let (status, _) = get(addr, "/missing").unwrap();
        assert_eq!(status, 404);
        cluster.stop().await.unwrap();
        let text = std::fs::read_to_string(dir.join("ip.log")).unwrap();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 11, "{text}");
        assert_eq!(
            records
                .iter()
                .filter(|r| r["path"] == "/health" && r["status"] == 200)
                .count(),
            10
        );
        assert_eq!(records.iter().filter(|r| r["status"] == 404).count(), 1);
        assert!(records
            .iter()
            .all(|r| r["client"] == "127.0.0.1" && r["method"] == "GET"));
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
