//! HTTP workers on the shared port under steady load: rolling reloads, rollback, scaling, a
//! plain socket-activated program, and the `http_cluster` example driven by signals.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::within;
use common::http::{get, parse_pid, Load, LoadOptions};
use common::{is_alive, wait_until, KillOnDrop};
use procactor::actors::http::{HttpMsg, HttpReply, HttpWorker};
use procactor::prelude::*;
use procactor::{CallError, Error, ListenAddr, ReloadError, ReplaceError};

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

        // A deploy: the program on disk is replaced, then the cluster reloads.
        deployed.deploy_script(&format!("exec {HTTP_BIN} --deployed-v2 \"$@\""));
        let report = cluster.reload().await.unwrap();
        let mark = Instant::now();
        let new = pids(&cluster).await;
        assert_eq!(report.replaced.len(), 4);
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
        let load = steady_load(addr);

        cluster.scale(2).await.unwrap();
        let two = pids(&cluster).await;
        assert_eq!(two.len(), 2);
        assert!(two.is_subset(&four));
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
        cluster.stop().await.unwrap();
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

/// `target/<profile>/examples/http_cluster`, built by `cargo test` beside the binaries.
fn example_path() -> PathBuf {
    Path::new(HTTP_BIN)
        .parent()
        .unwrap()
        .join("examples")
        .join("http_cluster")
}

#[test]
fn the_http_cluster_example_reloads_on_sighup_and_stops_on_sigterm_with_status_0() {
    let mut child = Command::new(example_path())
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example is built by cargo test");
    let _guard = KillOnDrop(child.id());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
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
    let wait_line = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {what:?}: {e}"),
            }
        }
    };
    let serving = wait_line("serving http://");
    let addr: SocketAddr = serving
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{serving}"));
    let load = steady_load(addr);
    let before = load.stats().pids;

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_line("reload  started: 2 workers");
    wait_line("reload  1/2");
    wait_line("reload  2/2");
    wait_line("reload  done");
    let mark = Instant::now();
    assert!(wait_until(Duration::from_secs(30), || {
        let since = load.stats().pids_since(mark);
        since.len() == 2 && since.is_disjoint(&before)
    }));
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_line("stopped");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the example did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    for pid in stats.pids {
        assert!(
            wait_until(Duration::from_secs(5), || !is_alive(pid)),
            "worker {pid} outlived the master"
        );
    }
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
