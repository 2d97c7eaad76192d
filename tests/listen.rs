//! Shared listening sockets: bound once by the master, served by every worker, kept across
//! restarts.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use common::cluster::{chaos_config, collector, next_matching, within};
use procactor::actors::echo::Echo;
use procactor::prelude::*;
use procactor::{Backoff, ListenAddr, RestartPolicy};

fn serve_config(n: usize, unix: &std::path::Path) -> ClusterConfig {
    let mut config = chaos_config(n, &[])
        .env("PROCACTOR_CHAOS_MODE", "serve")
        .listen("tcp", "127.0.0.1:0")
        .listen("unix", format!("unix:{}", unix.display()));
    config.restart = RestartPolicy {
        backoff: Backoff::none(),
        ..RestartPolicy::default()
    };
    config
}

fn unix_path(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("procactor-{test}-{}.sock", std::process::id()))
}

/// Connects and reads the serving worker's pid.
fn ask_tcp(addr: &ListenAddr) -> std::io::Result<u32> {
    let ListenAddr::Tcp(addr) = addr else {
        panic!("{addr}")
    };
    let mut stream = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad answer {text:?}")))
}

fn ask_unix(path: &std::path::Path) -> u32 {
    let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.trim().parse().unwrap()
}

#[actix::test]
async fn every_worker_receives_the_sockets_by_socket_activation() {
    within(60, async {
        let path = unix_path("activation");
        let (inbox, mut received) = collector::<FromWorker<String>>();
        let cluster = ClusterSupervisor::builder::<Echo>(serve_config(3, &path))
            .on_message(inbox)
            .start()
            .await
            .unwrap();
        let pids: HashSet<u32> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.pid.unwrap())
            .collect();
        for _ in 0..3 {
            let msg = next_matching(&mut received, Duration::from_secs(10), |_| true)
                .await
                .expect("each worker reports");
            // systemd's convention, as sd_listen_fds(3) checks it.
            assert_eq!(msg.msg, format!("listen {} 2 tcp:unix", msg.pid));
            assert!(pids.contains(&msg.pid));
        }
        for &pid in &pids {
            let fds = common::fds(pid);
            let sockets: Vec<_> = fds.iter().filter(|(fd, _)| *fd == 3 || *fd == 4).collect();
            assert_eq!(sockets.len(), 2, "{fds:?}");
            assert!(
                sockets.iter().all(|(_, t)| t.starts_with("socket:")),
                "{fds:?}"
            );
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn workers_share_one_port_and_one_unix_socket() {
    within(60, async {
        let path = unix_path("shared");
        let cluster = ClusterSupervisor::start::<Echo>(serve_config(3, &path))
            .await
            .unwrap();
        let pids: HashSet<u32> = cluster
            .workers()
            .await
            .unwrap()
            .iter()
            .map(|i| i.pid.unwrap())
            .collect();
        let addr = cluster.local_addr("tcp").unwrap();
        assert!(matches!(addr, ListenAddr::Tcp(a) if a.port() != 0));
        assert_eq!(
            cluster.local_addr("unix"),
            Some(ListenAddr::Unix(path.clone()))
        );
        let served: Vec<u32> =
            tokio::task::spawn_blocking(move || (0..60).map(|_| ask_tcp(&addr).unwrap()).collect())
                .await
                .unwrap();
        let by: HashSet<u32> = served.iter().copied().collect();
        assert!(by.is_subset(&pids), "{by:?} not within {pids:?}");
        assert!(
            by.len() >= 2,
            "the kernel spread 60 connections over the workers: {by:?}"
        );
        let p = path.clone();
        let unix = tokio::task::spawn_blocking(move || ask_unix(&p))
            .await
            .unwrap();
        assert!(pids.contains(&unix));
        cluster.stop().await.unwrap();
        let _ = std::fs::remove_file(&path);
    })
    .await;
}

#[actix::test]
async fn the_port_keeps_answering_while_a_worker_is_killed_and_restarted() {
    within(60, async {
        let path = unix_path("restart");
        let (events, mut rx) = collector::<WorkerEvent>();
        let cluster = ClusterSupervisor::builder::<Echo>(serve_config(2, &path))
            .subscribe(events)
            .start()
            .await
            .unwrap();
        let addr = cluster.local_addr("tcp").unwrap();
        let victim = cluster.workers().await.unwrap()[0].pid.unwrap();
        let load = tokio::task::spawn_blocking(move || {
            let mut answers = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_millis(1500);
            while std::time::Instant::now() < deadline {
                answers.push(ask_tcp(&addr));
            }
            answers
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        next_matching(&mut rx, Duration::from_secs(10), |e| {
            e.worker == 0 && e.generation == 2 && e.kind == WorkerEventKind::Ready
        })
        .await
        .expect("restarted");
        let answers = load.await.unwrap();
        let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
        assert!(answers.len() > 20, "{} connections", answers.len());
        // SIGKILL may cut the one connection the victim had accepted at that instant; every
        // other one, waiting in the shared backlog or accepted by the survivor, is answered.
        assert!(
            failed.len() <= 1,
            "{} of {} failed: {failed:?}",
            failed.len(),
            answers.len()
        );
        cluster.stop().await.unwrap();
        let _ = std::fs::remove_file(&path);
    })
    .await;
}

#[actix::test]
async fn an_address_that_cannot_be_bound_is_a_config_error_before_any_worker_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = ClusterSupervisor::start::<Echo>(chaos_config(1, &[]).listen("http", addr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, procactor::Error::Config(e) if e.field == "listen" && e.reason.contains("http")),
        "{err:?}"
    );
}

/// A fresh directory holding `where.sh`, a script that writes the directory it runs in to
/// `where.txt` there, then sleeps until it is stopped.
fn directory_with_script(test: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("procactor-cwd-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("where.sh");
    let text = "#!/bin/sh\npwd -P > where.tmp && mv where.tmp where.txt\nexec sleep 600\n";
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[actix::test]
async fn a_plain_program_runs_in_its_cwd() {
    within(60, async {
        // Without sockets the child is a plain `Command`; with them it execs by itself.
        for (test, listen) in [("command", false), ("activated", true)] {
            let dir = directory_with_script(test);
            // A relative program: found in the working directory, not in the master's.
            let mut config = chaos_config(1, &[])
                .exec("./where.sh")
                .cwd(&dir)
                .plain(true);
            if listen {
                config = config.listen("tcp", "127.0.0.1:0");
            }
            let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
            let written = dir.join("where.txt");
            let wrote = common::wait_until_async(Duration::from_secs(20), || written.exists());
            assert!(wrote.await, "{test}: the program never wrote where it runs");
            let place = std::fs::read_to_string(&written).unwrap();
            assert_eq!(
                std::path::Path::new(place.trim()),
                dir.canonicalize().unwrap(),
                "{test}"
            );
            cluster.stop().await.unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    })
    .await;
}

/// A stopped cluster holds no port, whether or not its handle is still around: the same address
/// can be bound again at once (a supervisor that starts the app again, a test, an operator).
#[actix::test]
async fn a_stopped_cluster_frees_its_ports() {
    within(60, async {
        let path = unix_path("freed");
        let cluster = ClusterSupervisor::start::<Echo>(serve_config(2, &path))
            .await
            .unwrap();
        let Some(ListenAddr::Tcp(addr)) = cluster.local_addr("tcp") else {
            panic!("a TCP listener")
        };
        cluster.stop().await.unwrap();
        cluster.wait().await.unwrap();
        // The handle lives on; the port must not.
        let again = std::net::TcpListener::bind(addr);
        assert!(again.is_ok(), "{addr} is still bound after stop: {again:?}");
        assert_eq!(
            cluster.local_addr("tcp"),
            None,
            "a stopped cluster listens nowhere"
        );
        drop(again);
        drop(cluster);
    })
    .await;
}
