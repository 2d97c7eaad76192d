//! The operator's tool beside PM2 (`cli`): what an operator waits for and what the daemon costs
//! while nothing happens.
//!
//! - `cli_list_ms`: the median over 20 runs (5 with `--quick`, after one unmeasured run each) of
//!   the wall time from spawning `procactor list` to its exit, its table read from a pipe,
//!   against a daemon running 6 instances: the fixtures of `tests/cli.rs`, 3 of `server.py`
//!   (Python, `ready = "notify"`) and 3 of `server.js` (Node), or 6 of `server.py` when `node`
//!   is not on PATH (`cli_apps` in the JSON says which). Beside it `pm2_jlist_ms`, the same for
//!   `pm2 jlist` with PM2 running the same 6 programs (`cli_list_vs_pm2`, lower is better).
//! - `daemon_idle_rss_mb`, `daemon_idle_cpu_pct`: the daemon process alone (every thread of it,
//!   not its instances), its CPU time over 10 s (2 s with `--quick`) with the 6 instances idle,
//!   in % of one core, and its `VmRSS` at the end; beside them the same for PM2's God daemon.
//!
//! Without `pm2` on PATH, or when PM2 fails, PM2's figures are `NaN` (`null` in the JSON) with
//! a note on stderr and in the JSON (`pm2`): the bench never fails for PM2. `.ci/run` installs
//! it (`npm install -g pm2`) when it can, and goes on when it cannot.
//!
//! The `procactor` binary: `cargo run --example bench` builds the example, not the binary. Run
//! under cargo (`CARGO` set), the section runs `$CARGO build --bin procactor --example bench`
//! in the bench's profile every time, which rebuilds the binary when its sources changed and
//! costs about a second when it is up to date (a stale binary would measure old code). The
//! example is named too so that the build resolves the same features as the bench's (with
//! the dev-dependencies): the binary then links the library the bench was built with, where
//! a build of the binary alone would rebuild the library and its dependencies once more (and
//! without the variables `cargo run` sets for the bench, for the same reason). Run
//! directly, the section uses the binary next to the bench's directory
//! (`target/<profile>/procactor`) and fails when there is none.
//!
//! Limits: PM2 cannot hand a listening socket to a program, so each of its processes starts as
//! a small Python shim (`SHIM`, written to the temp dir) that binds a port on 127.0.0.1, puts
//! the socket on fd 3 with `LISTEN_FDS`/`LISTEN_PID`, drops Node's IPC variables (PM2's IPC
//! pipe is the fd 3 it replaces) and execs the fixture in its own pid: PM2 supervises the
//! fixture itself, in fork mode, 3 instances per app, each on a port of its own (procactor's
//! share one socket per app). Both tools run alone, one after the other, in a temp dir (PM2
//! with its own `PM2_HOME` there); every process is ended by pid (`procactor kill` or
//! `pm2 kill`, then SIGKILL of whatever is left).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error>;

/// The longest any one command of the section may run before it is killed (a hung client
/// must not hang the bench).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// How long the instances have to be up and answering, for either tool.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// PM2's processes start as this: it binds the port of its instance (`NODE_APP_INSTANCE`, set
/// by PM2) from the comma-separated list in its first argument, puts the socket on fd 3 as
/// systemd's socket activation does, and execs the rest of its arguments in the same pid.
const SHIM: &str = r#"import os, socket, sys
ports = sys.argv[1].split(",")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(ports[int(os.environ.get("NODE_APP_INSTANCE", "0"))])))
s.listen(128)
os.dup2(s.fileno(), 3)
s.close()
os.environ.pop("NODE_CHANNEL_FD", None)
os.environ.pop("NODE_CHANNEL_SERIALIZATION_MODE", None)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(sys.argv[2], sys.argv[2:])
"#;

/// The section's figures (`NaN` where not measured).
#[derive(Debug, Clone)]
pub(crate) struct CliFigures {
    pub(crate) list_ms: f64,
    pub(crate) pm2_jlist_ms: f64,
    pub(crate) idle_rss_mb: f64,
    pub(crate) idle_cpu_pct: f64,
    pub(crate) pm2_idle_rss_mb: f64,
    pub(crate) pm2_idle_cpu_pct: f64,
    /// The 6 instances, in words (empty when not measured).
    pub(crate) apps: &'static str,
    /// Why PM2's figures are missing, when they are.
    pub(crate) pm2_note: Option<String>,
}

impl CliFigures {
    /// Figures of a run that did not measure this section.
    pub(crate) fn nan() -> Self {
        Self {
            list_ms: f64::NAN,
            pm2_jlist_ms: f64::NAN,
            idle_rss_mb: f64::NAN,
            idle_cpu_pct: f64::NAN,
            pm2_idle_rss_mb: f64::NAN,
            pm2_idle_cpu_pct: f64::NAN,
            apps: "",
            pm2_note: None,
        }
    }

    /// The JSON fields that say what was measured: `"cli_apps"`, and `"pm2"` when PM2's
    /// figures are missing.
    pub(crate) fn json_notes(&self) -> Vec<String> {
        let mut fields = Vec::new();
        if !self.apps.is_empty() {
            fields.push(format!("\"cli_apps\":{}", Value::from(self.apps)));
        }
        if let Some(note) = &self.pm2_note {
            fields.push(format!("\"pm2\":{}", Value::from(note.as_str())));
        }
        fields
    }

    /// The same, as lines of the table.
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.apps.is_empty() {
            lines.push(format!("cli: 6 instances: {}", self.apps));
        }
        if let Some(note) = &self.pm2_note {
            lines.push(format!("cli: {note}: no PM2 figures"));
        }
        lines
    }
}

/// One tool's figures.
struct Side {
    list_ms: f64,
    idle: Idle,
}

/// Measures the section: procactor's side (its failure fails the bench), then PM2's.
pub(crate) fn measure(quick: bool) -> Result<CliFigures, BoxError> {
    let runs = if quick { 5 } else { 20 };
    let idle_for = Duration::from_secs(if quick { 2 } else { 10 });
    let node = on_path("node");
    let apps = if node {
        "3 python3 server.py + 3 node server.js"
    } else {
        eprintln!("bench cli: node is not on PATH: 6 Python instances (tests/cli/server.py)");
        "6 python3 server.py (node is not on PATH)"
    };
    let bin = procactor_bin()?;
    // Short: the daemon's socket path is in it.
    let dir = tempfile::Builder::new().prefix("pab").tempdir_in("/tmp")?;
    for fixture in ["server.py", "server.js"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/cli")
                .join(fixture),
            dir.path().join(fixture),
        )?;
    }
    let ours = {
        let daemon = Daemon::start(&bin, dir.path(), node)?;
        let list_ms = median_ms(runs, || daemon.list())?;
        Side {
            list_ms,
            idle: idle(daemon.pid, idle_for)?,
        }
    };
    let pm2 = if on_path("pm2") {
        pm2_side(dir.path(), node, runs, idle_for).map_err(|e| format!("pm2 failed: {e}"))
    } else {
        Err("pm2 is not on PATH (npm install -g pm2)".to_owned())
    };
    let (pm2, pm2_note) = match pm2 {
        Ok(side) => (Some(side), None),
        Err(note) => {
            eprintln!("bench cli: {note}: no PM2 figures");
            (None, Some(note))
        }
    };
    let pick = |f: fn(&Side) -> f64| pm2.as_ref().map_or(f64::NAN, f);
    Ok(CliFigures {
        list_ms: ours.list_ms,
        idle_rss_mb: ours.idle.rss_mb,
        idle_cpu_pct: ours.idle.cpu_pct,
        pm2_jlist_ms: pick(|s| s.list_ms),
        pm2_idle_rss_mb: pick(|s| s.idle.rss_mb),
        pm2_idle_cpu_pct: pick(|s| s.idle.cpu_pct),
        apps,
        pm2_note,
    })
}

/// The `procactor` binary of the bench's profile: built by cargo when the bench runs under
/// cargo, else the one already there.
fn procactor_bin() -> Result<PathBuf, BoxError> {
    // target/<profile>/examples/bench → target/<profile>/procactor
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the bench is not in target/<profile>/examples")?;
    let bin = profile_dir.join("procactor");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        // Without the variables `cargo run` set for the bench: build scripts that read one
        // (ring's read CARGO_PKG_NAME) would run again, and the bench's next build after them.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(set_by_cargo_run) {
                build.env_remove(name);
            }
        }
        build
            .args([
                "build",
                "--bin",
                "procactor",
                "--example",
                "bench",
                "--features",
                "cli",
            ])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
            None => return Err("no profile directory above the bench".into()),
        }
        let args: Vec<_> = build.get_args().map(|a| a.to_string_lossy()).collect();
        eprintln!("bench cli: cargo {}", args.join(" "));
        let status = build.stdout(Stdio::null()).status()?;
        if !status.success() {
            return Err(format!("building the procactor binary failed: {status}").into());
        }
    }
    if !bin.is_file() {
        return Err(format!(
            "no procactor binary at {} (cargo build --release --bin procactor)",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// Whether `cargo run` sets the environment variable `name` for the program it runs (the
/// variables it sets for a crate's build), as opposed to one of the user's (`CARGO_HOME`,
/// `CARGO_TARGET_DIR`, `CARGO_BUILD_JOBS`…), which the build must keep.
fn set_by_cargo_run(name: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_MANIFEST_",
    ];
    const NAMES: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// A daemon of `procactor` with its 6 instances, ended (with them) when dropped.
struct Daemon {
    bin: PathBuf,
    dir: PathBuf,
    pid: u32,
    instances: Vec<u32>,
}

impl Daemon {
    /// Writes `procactor.toml` (apps `web` and `api`, 3 instances each, on free ports), runs
    /// `procactor start` and waits until every instance is ready and both ports answer.
    fn start(bin: &Path, dir: &Path, node: bool) -> Result<Daemon, BoxError> {
        let (web, api) = (free_port()?, free_port()?);
        let web_app = |name: &str, port: u16| {
            format!(
                "[apps.{name}]\ncommand = \"python3\"\nargs = [\"server.py\"]\ninstances = 3\n\
                 listen = {{ http = \"127.0.0.1:{port}\" }}\nready = \"notify\"\n\
                 env = {{ APP = \"{name}\" }}\nshutdown_timeout = \"5s\"\n"
            )
        };
        let api_app = if node {
            format!(
                "[apps.api]\ncommand = \"node\"\nargs = [\"server.js\"]\ninstances = 3\n\
                 listen = {{ http = \"127.0.0.1:{api}\" }}\nready = \"spawn\"\n\
                 min_uptime = \"500ms\"\nenv = {{ APP = \"api\" }}\nshutdown_timeout = \"5s\"\n"
            )
        } else {
            web_app("api", api)
        };
        let config = dir.join("procactor.toml");
        std::fs::write(&config, format!("{}\n{api_app}", web_app("web", web)))?;
        let mut daemon = Daemon {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            pid: 0,
            instances: Vec::new(),
        };
        let (started, _) = run(daemon.command(&[
            "start",
            config.to_str().ok_or("a temp dir that is not UTF-8")?,
        ]))?;
        // The guard knows the daemon as soon as there is one, whatever `start` said.
        daemon.pid = std::fs::read_to_string(dir.join("state/daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        check(&started, "procactor start")?;
        if daemon.pid == 0 {
            return Err("procactor start: no daemon.pid".into());
        }
        let mut rows = Vec::new();
        wait_until(READY_WITHIN, || {
            rows = daemon.rows().unwrap_or_default();
            rows.len() == 6 && rows.iter().all(|r| r["state"] == "ready")
        });
        daemon.instances = rows
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        if daemon.instances.len() != 6 {
            return Err(format!("procactor: not 6 ready instances: {rows:?}").into());
        }
        for port in [web, api] {
            let answered = wait_until(READY_WITHIN, || {
                answering_pid(port).is_some_and(|pid| daemon.instances.contains(&pid))
            });
            if !answered {
                return Err(format!("procactor: no instance answers on port {port}").into());
            }
        }
        Ok(daemon)
    }

    /// `procactor ARGS` against this daemon.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--socket")
            .arg(self.dir.join("run/d.sock"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(args)
            .current_dir(&self.dir)
            .env_remove("NOTIFY_SOCKET");
        command
    }

    /// `list --json`: every instance.
    fn rows(&self) -> Result<Vec<Value>, BoxError> {
        let (out, _) = run(self.command(&["list", "--json"]))?;
        check(&out, "procactor list --json")?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// One `procactor list`, timed from spawn to exit.
    fn list(&self) -> Result<Duration, BoxError> {
        let (out, took) = run(self.command(&["list"]))?;
        check(&out, "procactor list")?;
        let table = String::from_utf8_lossy(&out.stdout);
        if table.lines().count() != 7 || !table.contains("web") || !table.contains("api") {
            return Err(format!("procactor list printed {table:?}").into());
        }
        Ok(took)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.pid != 0 && alive(self.pid) {
            let _ = run(self.command(&["kill"]));
            if !wait_until(Duration::from_secs(10), || !alive(self.pid)) {
                kill9(self.pid);
            }
        }
        end_all(&self.instances);
    }
}

/// PM2's side: the same 6 programs under PM2, timed and measured as procactor's.
fn pm2_side(dir: &Path, node: bool, runs: usize, idle_for: Duration) -> Result<Side, BoxError> {
    let pm2 = Pm2::start(dir, node)?;
    let god = pm2.god.ok_or("no pm2.pid")?;
    let list_ms = median_ms(runs, || pm2.jlist())?;
    Ok(Side {
        list_ms,
        idle: idle(god, idle_for)?,
    })
}

/// PM2's God daemon in a `PM2_HOME` of its own, with its 6 processes, ended (with them) when
/// dropped.
struct Pm2 {
    dir: PathBuf,
    god: Option<u32>,
    pids: Vec<u32>,
}

impl Pm2 {
    /// Writes the shim and an ecosystem file (apps `web` and `api`, 3 instances each in fork
    /// mode), runs `pm2 start` and waits until every process is online and answers on its
    /// port.
    fn start(dir: &Path, node: bool) -> Result<Pm2, BoxError> {
        std::fs::write(dir.join("shim.py"), SHIM)?;
        let mut ports = Vec::new();
        let mut app = |name: &str, program: &[&str]| -> Result<Value, BoxError> {
            let mine: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
            let list = mine
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            ports.extend(mine);
            let mut args = vec![list.as_str()];
            args.extend(program);
            Ok(json!({
                "name": name, "script": "shim.py", "interpreter": "python3", "args": args,
                "instances": 3, "exec_mode": "fork", "env": { "APP": name },
            }))
        };
        let api = if node {
            app("api", &["node", "server.js"])?
        } else {
            app("api", &["python3", "server.py"])?
        };
        let apps = json!({ "apps": [app("web", &["python3", "server.py"])?, api] });
        std::fs::write(dir.join("ecosystem.json"), apps.to_string())?;
        let mut pm2 = Pm2 {
            dir: dir.to_owned(),
            god: None,
            pids: Vec::new(),
        };
        let (started, _) = run(pm2.command(&["start", "ecosystem.json"]))?;
        pm2.god = std::fs::read_to_string(dir.join("pm2/pm2.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        check(&started, "pm2 start")?;
        // Online, and the fixture itself (not the shim) answers on each port.
        let mut seen = Vec::new();
        wait_until(READY_WITHIN, || {
            pm2.pids = pm2.online().unwrap_or_default();
            seen = ports.iter().filter_map(|&p| answering_pid(p)).collect();
            seen.sort_unstable();
            pm2.pids.len() == 6 && seen == pm2.pids
        });
        if pm2.pids.len() != 6 || seen != pm2.pids {
            return Err(format!("not 6 processes online and answering: {seen:?}").into());
        }
        Ok(pm2)
    }

    /// `pm2 ARGS` with this `PM2_HOME`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("pm2");
        command
            .args(args)
            .env("PM2_HOME", self.dir.join("pm2"))
            .current_dir(&self.dir)
            .env_remove("NOTIFY_SOCKET");
        command
    }

    /// The pids of the processes PM2 has online, sorted (empty until all 6 are).
    fn online(&self) -> Result<Vec<u32>, BoxError> {
        let (out, _) = run(self.command(&["jlist"]))?;
        check(&out, "pm2 jlist")?;
        let list: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        let mut pids: Vec<u32> = list
            .iter()
            .filter(|p| p["pm2_env"]["status"] == "online")
            .filter_map(|p| p["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// One `pm2 jlist`, timed from spawn to exit.
    fn jlist(&self) -> Result<Duration, BoxError> {
        let (out, took) = run(self.command(&["jlist"]))?;
        check(&out, "pm2 jlist")?;
        let list: Vec<Value> = serde_json::from_slice(&out.stdout)?;
        if list.len() != 6 {
            return Err(format!("pm2 jlist: {} processes", list.len()).into());
        }
        Ok(took)
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = run(self.command(&["kill"]));
        if let Some(god) = self.god {
            if !wait_until(Duration::from_secs(10), || !alive(god)) {
                kill9(god);
            }
        }
        end_all(&self.pids);
    }
}

/// A daemon's cost while idle.
struct Idle {
    rss_mb: f64,
    cpu_pct: f64,
}

/// `pid`'s CPU time over `window` (every thread of it, user and system), in % of one core,
/// and its resident memory at the end.
fn idle(pid: u32, window: Duration) -> Result<Idle, BoxError> {
    let (before, t) = (cpu_ns(pid)?, Instant::now());
    std::thread::sleep(window);
    let after = cpu_ns(pid)?;
    let wall = t.elapsed();
    let spent: u64 = after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no VmRSS")?;
    Ok(Idle {
        rss_mb: rss_kib / 1024.0,
        cpu_pct: spent as f64 / 1e9 / wall.as_secs_f64() * 100.0,
    })
}

/// The time on a CPU of each thread of `pid`, in ns (`/proc/PID/task/TID/schedstat`, exact
/// where `/proc/PID/stat` counts 10 ms ticks; a thread that ends within the window is not
/// counted, which an idle daemon's threads do not do, or do idle).
fn cpu_ns(pid: u32) -> Result<HashMap<u32, u64>, BoxError> {
    let mut threads = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = stat
            .split_whitespace()
            .next()
            .ok_or("an empty schedstat")?
            .parse()?;
        threads.insert(tid, ns);
    }
    Ok(threads)
}

/// The median of `runs` timings of `once` in milliseconds, after one unmeasured run.
fn median_ms(
    runs: usize,
    mut once: impl FnMut() -> Result<Duration, BoxError>,
) -> Result<f64, BoxError> {
    once()?;
    let mut times = (0..runs).map(|_| once()).collect::<Result<Vec<_>, _>>()?;
    times.sort();
    Ok(times[times.len() / 2].as_secs_f64() * 1e3)
}

/// Runs `command` to its end, its output read from pipes, and times it from spawn to exit; a
/// command that runs past `COMMAND_LIMIT` is killed by its pid.
fn run(mut command: Command) -> Result<(Output, Duration), BoxError> {
    let t = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let pid = child.id();
    let (done, watch) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(COMMAND_LIMIT) == Err(RecvTimeoutError::Timeout) {
            kill9(pid);
        }
    });
    let output = child.wait_with_output();
    let took = t.elapsed();
    let _ = done.send(());
    let _ = watchdog.join();
    let output = output?;
    if output.status.signal() == Some(libc::SIGKILL) && took >= COMMAND_LIMIT {
        return Err(format!("{command:?} ran past {COMMAND_LIMIT:?}: killed").into());
    }
    Ok((output, took))
}

/// An error unless `out` is a success.
fn check(out: &Output, what: &str) -> Result<(), BoxError> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
    .into())
}

/// The pid in the answer of the fixture on 127.0.0.1:`port` (`pid <pid> app …`).
fn answering_pid(port: u16) -> Option<u32> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    body.strip_prefix("pid ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A free loopback port (bound, then released for the daemon to bind).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether an executable `name` is on PATH (looked up, not run: `pm2 --version` would start a
/// PM2 daemon).
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            dir.join(name)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Polls `done` until it holds or `limit` has passed; whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` runs (a zombie runs nothing).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn kill9(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Waits a little for `pids` to end after their daemon did, then SIGKILLs those left.
fn end_all(pids: &[u32]) {
    wait_until(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p)));
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        kill9(pid);
    }
}
