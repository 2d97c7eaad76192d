//! A real `redis-server` for a test: started on a free loopback port with a temporary
//! directory and no persistence, stopped (and restarted on the same port) by its pid.
//!
//! `redis-server` comes from the Debian package `redis-server`, `openssl` (for a TLS server's
//! certificates) from `openssl`; `.ci/run` installs both. Outside CI a test without them skips,
//! saying so; with `CI` set, a missing one fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A TCP port that accepts connections and never answers (a blackholed Redis): each
/// connection is held open, unread, until the listener is dropped.
pub(crate) struct Blackhole {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    pub(crate) fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("its port").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, stopped) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        held.push(stream);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Polled: the thread must see `stop` (its own deadline, not a sync).
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// How many connections it took so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP proxy in front of a Redis server, to cut one node off: while cut, its connections
/// are shut down and new ones closed at once; restored, it forwards again.
#[allow(dead_code)] // used by some of the test files that include this module
pub(crate) struct CutProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[allow(dead_code)]
impl CutProxy {
    /// Forwards a free loopback port to `upstream` (a port on 127.0.0.1).
    pub(crate) fn start(upstream: u16) -> Self {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("its port").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (is_cut, stopped, sockets) = (cut.clone(), stop.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    // Polled: the thread must see `stop` (its own deadline, not a sync).
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if is_cut.load(Ordering::Relaxed) {
                    continue; // dropped: closed at once
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                for (from, to) in pairs {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
                let mut sockets = sockets.lock().unwrap();
                sockets.push(client);
                sockets.push(server);
            }
        });
        Self {
            port,
            cut,
            stop,
            open,
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:<port>/0`, through the proxy.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Cuts every connection through the proxy, and refuses new ones until restored.
    pub(crate) fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
        for socket in self.open.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Forwards again.
    pub(crate) fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `redis-server` process, ended (and its directory removed) on drop.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Serving TLS only, with a certificate for `127.0.0.1` signed by the CA in this file.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`; `None` (with the reason printed)
    /// only when `redis-server` is not installed and `CI` is not set.
    pub(crate) fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// A server that speaks TLS only, with a certificate for `127.0.0.1` and `localhost` signed
    /// by a CA of its own ([`tls_ca`](Self::tls_ca)), made with `openssl`.
    pub(crate) fn start_tls() -> Option<Self> {
        Self::start_with(true)
    }

    /// The CA file that signed a TLS server's certificate.
    pub(crate) fn tls_ca(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    fn start_with(tls: bool) -> Option<Self> {
        let mut needed = vec!["redis-server"];
        if tls {
            needed.push("openssl");
        }
        for program in needed {
            let found = Command::new(program)
                .arg(if program == "openssl" {
                    "version"
                } else {
                    "--version"
                })
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{program} is required in CI (Debian package {program})"
                );
                eprintln!("skipped: {program} is not installed (Debian package {program})");
                return None;
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("procactor-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let tls_ca = tls.then(|| make_certificates(&dir));
        let mut server = Self {
            port,
            dir,
            child: None,
            tls_ca,
        };
        server.launch();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` for a TLS server).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
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
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        match &self.tls_ca {
            None => command.args(["--port", &port]),
            Some(ca) => command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key")),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
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
            // A TLS server is ready once it listens (this client does not trust its CA).
            let ready = match self.tls_ca {
                None => self.command(&["PING"]).is_ok(),
                Some(_) => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ready {
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

/// A CA and a server certificate for `127.0.0.1`/`localhost` in `dir` (`ca.crt`, `server.crt`,
/// `server.key`), made with the `openssl` command; returns the CA's path.
fn make_certificates(dir: &std::path::Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (Debian package openssl)");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=procactor test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
    ]);
    openssl(&ca);
    let mut csr = vec![
        "req",
        "-new",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
    ];
    csr.extend(ec);
    csr.extend(["-out", "server.csr"]);
    openssl(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    ]);
    dir.join("ca.crt")
}
