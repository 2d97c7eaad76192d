//! A real `redis-server` for a test: started on a free loopback port with a temporary
//! directory and no persistence, stopped (and restarted on the same port) by its pid.
//!
//! `redis-server` comes from the Debian package `redis-server` (`.ci/run` installs it). Outside
//! CI a test without it skips, saying so; with `CI` set, a missing server fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One `redis-server` process, ended (and its directory removed) on drop.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`; `None` (with the reason printed)
    /// only when `redis-server` is not installed and `CI` is not set.
    pub(crate) fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is required in CI (Debian package redis-server)"
            );
            eprintln!("skipped: redis-server is not installed (Debian package redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("procactor-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.launch();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.command(&["PING"]).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after 5 s; returns once it is reaped.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port (with no data: nothing is persisted).
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Sends the server SIGSTOP (`true`) or SIGCONT: a server that hangs, then resumes.
    pub(crate) fn pause(&self, paused: bool) {
        let signal = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        let pid = self.pid().expect("running");
        kill(Pid::from_raw(pid as i32), signal).expect("signal redis-server");
    }

    /// Runs one command on a fresh connection (`AUTH` as the default user).
    pub(crate) fn command(&self, args: &[&str]) -> ::redis::RedisResult<::redis::Value> {
        let client = ::redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        ::redis::cmd(args[0]).arg(&args[1..]).query(&mut conn)
    }

    /// As [`command`](Self::command), panicking on an error.
    pub(crate) fn run(&self, args: &[&str]) -> ::redis::Value {
        self.command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server does not take SIGTERM until it runs again.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
