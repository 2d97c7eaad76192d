//! nginx in front of a cluster of HTTP workers, with upstream keep-alive on: a rolling reload
//! under load through nginx gives no 502 and no other 5xx.
//!
//! nginx is the Debian package's binary (`nginx` on `PATH`, or `/usr/sbin/nginx`), started by
//! the test on a free port with a configuration in a temporary directory, and stopped by its
//! pid. The test installs nothing: without nginx it is skipped with a printed reason, unless
//! `CI` is set (`.ci/run` installs nginx), where a missing nginx fails it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::within;
use common::http::{get, Load, LoadOptions};
use common::{is_alive, wait_until, KillOnDrop};
use procactor::actors::http::{HttpMsg, HttpReply, HttpWorker};
use procactor::prelude::*;
use procactor::ListenAddr;

const HTTP_BIN: &str = env!("CARGO_BIN_EXE_procactor-http");

/// The nginx binary: `nginx` on `PATH`, else `/usr/sbin/nginx`.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nginx"));
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
}

/// A port free now on 127.0.0.1 (bound, then let go).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An nginx of the test's own, in `dir`, proxying to `upstream` with keep-alive.
struct Nginx {
    child: Child,
    _guard: KillOnDrop,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start(binary: &Path, upstream: SocketAddr) -> Nginx {
        let dir = std::env::temp_dir().join(format!("procactor-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let d = dir.display();
        let config = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream cluster {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://cluster;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let guard = KillOnDrop(child.id());
        Nginx {
            child,
            _guard: guard,
            dir,
            addr,
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The statuses nginx logged (combined format: the field after the quoted request line).
    fn logged_statuses(&self) -> Vec<u16> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                line.split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Stops it by its pid (SIGQUIT: finish what is in flight, then exit) and waits for it.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "nginx did not exit after SIGQUIT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn pids(cluster: &Cluster<HttpWorker>) -> std::collections::BTreeSet<u32> {
    let mut pids = std::collections::BTreeSet::new();
    for w in cluster.addrs() {
        if let Ok(Ok(HttpReply::Pid(pid))) = w.send(Call(HttpMsg::Pid)).await {
            pids.insert(pid);
        }
    }
    pids
}

#[actix::test]
async fn a_reload_behind_nginx_with_upstream_keepalive_gives_no_5xx() {
    let Some(binary) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed, and CI is set: .ci/run installs it"
        );
        println!("skipped: nginx is not installed (apt-get install nginx); CI is not set");
        return;
    };
    within(180, async {
        let config = ClusterConfig::new()
            .workers(4)
            .exec(HTTP_BIN)
            .listen("http", "127.0.0.1:0")
            .ready_timeout(Duration::from_secs(20))
            .shutdown_timeout(Duration::from_secs(15))
            .handle_signals(false);
        let cluster = ClusterSupervisor::start::<HttpWorker>(config)
            .await
            .unwrap();
        let Some(ListenAddr::Tcp(upstream)) = cluster.local_addr("http") else {
            panic!("no TCP listener");
        };
        let old = pids(&cluster).await;
        let mut nginx = Nginx::start(&binary, upstream);
        let addr = nginx.addr;
        assert!(
            wait_until(Duration::from_secs(20), || matches!(
                get(addr, "/"),
                Ok((200, _))
            )),
            "nginx does not answer on {addr}: {}",
            nginx.error_log()
        );

        let load = Load::start(
            addr,
            LoadOptions {
                threads_keepalive: 3,
                threads_new_conn: 2,
                path: "/".into(),
            },
        );
        assert!(
            wait_until(Duration::from_secs(20), || load.stats().ok >= 200),
            "the load never got going: {}",
            load.stats().summary()
        );
        let report = cluster.reload().await.unwrap();
        assert_eq!(report.replaced.len(), 4);
        let new = pids(&cluster).await;
        for pid in &old {
            assert!(!is_alive(*pid), "old worker {pid} still runs");
        }
        let mark = Instant::now();
        assert!(
            wait_until(Duration::from_secs(30), || load.pids_since(mark) == new),
            "the new workers never answered through nginx: {}",
            load.stats().summary()
        );
        let stats = load.stop();
        println!("{}", stats.summary());
        let fives: u64 = stats.statuses.range(500..600).map(|(_, n)| n).sum();
        assert_eq!(fives, 0, "5xx through nginx: {}", stats.summary());
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        // (nginx reuses its upstream connections: not every old worker need have answered.)
        assert!(stats.pids.is_superset(&new), "{}", stats.summary());

        nginx.stop();
        let logged = nginx.logged_statuses();
        assert!(logged.len() as u64 >= stats.ok, "{} logged", logged.len());
        let bad: Vec<_> = logged.iter().filter(|s| **s >= 500).collect();
        assert!(
            bad.is_empty(),
            "nginx logged {bad:?}: {}",
            nginx.error_log()
        );
        drop(nginx);
        cluster.stop().await.unwrap();
        for pid in &new {
            assert!(!is_alive(*pid), "worker {pid} outlived the cluster");
        }
    })
    .await;
}
