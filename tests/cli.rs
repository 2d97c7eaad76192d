//! The `procactor` CLI driven as an operator drives it: the built binary, a temporary
//! directory for its socket, state and config, and real programs that are not Rust — the
//! Python server of `tests/cli/server.py` (socket on fd 3, `READY=1` on `NOTIFY_SOCKET`) and the
//! Node server of `tests/cli/server.js` (`listen({fd: 3})`).
//!
//! Every test starts its own daemon (`procactor start`, which puts it in the background) and
//! ends it with `procactor kill`; a test that fails midway still ends it, and every process of
//! its apps, by pid (the guard's `Drop`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::http::{get, Load, LoadOptions};
use common::wait_until;
use serde_json::Value;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_procactor");

/// Whether Node is on PATH (CI installs it; elsewhere its half of a test is skipped, said so).
fn have_node() -> bool {
    let found = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "node is required in CI");
        eprintln!("skipping the Node app: `node` is not on PATH");
    }
    found
}

/// A free loopback port (bound, then released for the daemon to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One operator's setup: a directory with the config, the fixtures, the socket and the state.
struct Operator {
    dir: tempfile::TempDir,
    web: SocketAddr,
    api: Option<SocketAddr>,
}

impl Operator {
    /// Two apps of 3 instances each: `web` (Python, `ready = "notify"`) and, when Node is
    /// installed, `api` (Node, ready once it has run half a second).
    fn new() -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("pa")
            .tempdir_in("/tmp")
            .unwrap();
        for fixture in ["server.py", "server.js"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/cli")
                    .join(fixture),
                dir.path().join(fixture),
            )
            .unwrap();
        }
        let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api = have_node().then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let op = Operator { dir, web, api };
        op.write_config("hi");
        op
    }

    /// Writes `procactor.toml` with `GREETING = greeting` for both apps.
    fn write_config(&self, greeting: &str) {
        let mut text = format!(
            "[apps.web]\ncommand = \"python3\"\nargs = [\"server.py\"]\ninstances = 3\n\
             listen = {{ http = \"{}\" }}\nready = \"notify\"\nenv = {{ GREETING = \"{greeting}\", APP = \"web\" }}\n\
             shutdown_timeout = \"5s\"\n",
            self.web
        );
        if let Some(api) = self.api {
            text.push_str(&format!(
                "\n[apps.api]\ncommand = \"node\"\nargs = [\"server.js\"]\ninstances = 3\n\
                 listen = {{ http = \"{api}\" }}\nready = \"spawn\"\nmin_uptime = \"500ms\"\n\
                 env = {{ GREETING = \"{greeting}\", APP = \"api\" }}\nshutdown_timeout = \"5s\"\n"
            ));
        }
        std::fs::write(self.config(), text).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("procactor.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("d.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs `procactor ARGS` against this operator's daemon.
    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new(BIN)
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run procactor");
        eprintln!(
            "$ procactor {}\n-> {}\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs `procactor ARGS` and expects success; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "procactor {args:?} failed");
        String::from_utf8(output.stdout).unwrap()
    }

    /// `list --json`: every instance.
    fn list(&self) -> Vec<Value> {
        let out = self.ok(&["list", "--json"]);
        serde_json::from_str::<Vec<Value>>(&out).expect("list --json is an array")
    }

    /// The pids of `app`'s instances.
    fn pids(&self, app: &str) -> BTreeSet<u32> {
        self.list()
            .iter()
            .filter(|r| r["app"] == app)
            .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// Starts the daemon with the config; expects every instance ready.
    fn start(&self) -> String {
        let out = self.ok(&["start", self.config().to_str().unwrap()]);
        let rows = self.list();
        let expected = if self.api.is_some() { 6 } else { 3 };
        assert_eq!(rows.len(), expected, "{rows:?}");
        assert!(rows.iter().all(|r| r["state"] == "ready"), "{rows:?}");
        out
    }

    /// The daemon's pid, from its pid file.
    fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state().join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The answer of `addr`'s server.
    fn answer(addr: SocketAddr) -> String {
        let (status, body) = get(addr, "/").expect("an answer");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// HTTP load on every app's port, once it has reached the servers.
    fn load_all(&self) -> Vec<Load> {
        let loads: Vec<Load> = self
            .addrs()
            .into_iter()
            .map(|a| Load::start(a, LoadOptions::default()))
            .collect();
        assert!(wait_until(Duration::from_secs(10), || loads
            .iter()
            .all(|l| l.stats().ok > 20)));
        loads
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.web).chain(self.api).collect()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let Some(pid) = self.daemon_pid() else { return };
        if !alive(pid) {
            return;
        }
        let listed = self.run(&["list", "--json"]).stdout;
        let pids: Vec<u32> = serde_json::from_slice::<Vec<Value>>(&listed)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
            .collect();
        let _ = self.run(&["kill"]);
        if !wait_until(Duration::from_secs(10), || !alive(pid)) {
            kill9(pid);
        }
        for pid in pids.into_iter().filter(|&p| alive(p)) {
            kill9(pid);
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purpose: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[test]
fn two_apps_start_ready_and_answer() {
    let op = Operator::new();
    let table = op.start();
    assert!(table.contains("APP") && table.contains("web"), "{table}");
    let rows = op.list();
    let pids: BTreeSet<_> = rows.iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(pids.len(), rows.len(), "distinct pids: {rows:?}");
    for addr in op.addrs() {
        let body = Operator::answer(addr);
        assert!(body.contains("greeting hi"), "{body}");
    }
    // A second `start` of the same file changes nothing; of the file changed since, it is
    // refused and points to `apply`.
    let before = op.pids("web");
    op.ok(&["start", op.config().to_str().unwrap()]);
    assert_eq!(op.pids("web"), before);
    op.write_config("changed");
    let output = op.run(&["start", op.config().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("apply"));
    assert_eq!(op.pids("web"), before);
    // Output into a pipe nobody reads (`list --json | head -c 0`) ends quietly, with no panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let closed = Command::new(BIN)
        .arg("--socket")
        .arg(op.socket())
        .args(["list", "--json"])
        .stdout(writer)
        .output()
        .unwrap();
    assert!(closed.status.success(), "{closed:?}");
    assert!(
        closed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let daemon = op.daemon_pid().expect("a pid file");
    op.ok(&["kill"]);
    assert!(
        wait_until(Duration::from_secs(10), || !alive(daemon)),
        "the daemon exited"
    );
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(10), || !alive(pid as u32)),
            "instance {pid} ended with the daemon"
        );
    }
    assert_eq!(
        op.run(&["list"]).status.code(),
        Some(3),
        "no daemon: exit status 3"
    );
}

#[test]
fn reload_all_under_load_fails_nothing_and_replaces_every_pid() {
    let op = Operator::new();
    op.start();
    let before: BTreeSet<u32> = op.pids("web").into_iter().chain(op.pids("api")).collect();
    let loads = op.load_all();
    let out = op.ok(&["reload", "all"]);
    // Live progress, per instance, in order: the new process starts and is ready, then the old
    // one drains and is retired.
    for instance in ["web[0]", "web[1]", "web[2]"] {
        let states: Vec<&str> = out
            .lines()
            // `web[0] pid N state` lines; a note (`web[0] retired: why`) says more, not another
            // state.
            .filter(|l| l.starts_with(&format!("{instance} pid ")))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(
            states,
            ["starting", "ready", "draining", "retired"],
            "{instance}: {out}"
        );
    }
    // The load goes on until the new instances have answered it (not for a guessed while).
    let mark = Instant::now();
    for load in &loads {
        assert!(
            wait_until(Duration::from_secs(30), || {
                let seen = load.stats().pids_since(mark);
                !seen.is_empty() && seen.is_disjoint(&before)
            }),
            "{}",
            load.stats().summary()
        );
    }
    for load in loads {
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
        assert!(stats.ok > 0);
    }
    let after: BTreeSet<u32> = op.pids("web").into_iter().chain(op.pids("api")).collect();
    assert!(before.is_disjoint(&after), "{before:?} vs {after:?}");
}

#[test]
fn a_broken_version_fails_the_reload_and_the_old_instances_serve() {
    let op = Operator::new();
    op.start();
    let before = op.pids("web");
    std::fs::write(
        op.dir.path().join("server.py"),
        "import sys\nsys.exit('broken on purpose')\n",
    )
    .unwrap();
    let output = op.run(&["reload", "web"]);
    assert!(!output.status.success(), "a failed reload exits != 0");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("web"), "says why: {err}");
    assert_eq!(op.pids("web"), before, "the old instances run on");
    for _ in 0..10 {
        let body = Operator::answer(op.web);
        assert!(
            before.iter().any(|p| body.contains(&format!("pid {p} "))),
            "{body}"
        );
    }
}

#[test]
fn scale_down_and_up_under_load_fails_nothing() {
    let op = Operator::new();
    op.start();
    let load = Load::start(op.web, LoadOptions::default());
    assert!(wait_until(Duration::from_secs(10), || load.stats().ok > 20));
    op.ok(&["scale", "web", "1"]);
    assert_eq!(op.pids("web").len(), 1);
    let web = |op: &Operator| -> Vec<Value> {
        op.list()
            .into_iter()
            .filter(|r| r["app"] == "web")
            .collect()
    };
    // Instances scaled away are gone from the list, not shown as exited.
    assert_eq!(web(&op).len(), 1, "{:?}", web(&op));
    op.ok(&["scale", "web", "3"]);
    assert_eq!(op.pids("web").len(), 3);
    // Started again on the operator's word: not restarts.
    let rows = web(&op);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["restarts"] == 0), "{rows:?}");
    let described = op.ok(&["describe", "web", "--json"]);
    let described: Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["spec"]["instances"], 3);
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
}

#[test]
fn an_instance_killed_with_sigkill_is_restarted_and_listed() {
    let op = Operator::new();
    op.start();
    let before = op.pids("web");
    let victim = *before.iter().next().unwrap();
    kill9(victim);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let rows = op.list();
            let web: Vec<_> = rows.iter().filter(|r| r["app"] == "web").collect();
            web.len() == 3
                && web.iter().all(|r| r["state"] == "ready")
                && !web.iter().any(|r| r["pid"] == victim)
                && web
                    .iter()
                    .map(|r| r["restarts"].as_u64().unwrap())
                    .sum::<u64>()
                    == 1
        }),
        "restarted: {:?}",
        op.list()
    );
    let table = op.ok(&["list"]);
    assert!(table.contains("RESTARTS"), "{table}");
}

#[test]
fn logs_show_the_last_lines_of_an_app() {
    let op = Operator::new();
    op.start();
    for _ in 0..10 {
        Operator::answer(op.web);
    }
    assert!(wait_until(Duration::from_secs(10), || {
        op.ok(&["logs", "web", "--lines", "5"]).lines().count() == 5
    }));
    let out = op.ok(&["logs", "web", "--lines", "5"]);
    for line in out.lines() {
        assert!(line.starts_with("web["), "prefixed app[instance]: {line}");
    }
    let json = op.ok(&["logs", "web", "--lines", "3", "--json"]);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["app"] == "web"));
}

#[test]
fn apply_dry_run_changes_nothing_and_apply_changes_env_without_a_failed_request() {
    let op = Operator::new();
    op.start();
    let before = op.pids("web");
    let state = std::fs::read(op.state().join("state.json")).unwrap();
    op.write_config("hello");
    let plan = op.ok(&["apply", op.config().to_str().unwrap(), "--dry-run"]);
    assert!(
        plan.contains("reload web") && plan.contains("GREETING"),
        "{plan}"
    );
    assert!(!plan.contains("hello"), "values are not printed: {plan}");
    assert_eq!(op.pids("web"), before, "dry run: nothing restarted");
    assert_eq!(std::fs::read(op.state().join("state.json")).unwrap(), state);

    let loads = op.load_all();
    let applied = op.ok(&["apply", op.config().to_str().unwrap()]);
    // The plan first, then the instances replaced, then the word.
    let first = applied.lines().next().unwrap_or_default();
    assert!(first.starts_with("plan: "), "{applied}");
    assert!(applied.contains("plan: reload web"), "{applied}");
    assert_eq!(applied.lines().last(), Some("applied"), "{applied}");
    for load in loads {
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}", stats.summary());
    }
    assert!(op.pids("web").is_disjoint(&before));
    for addr in op.addrs() {
        let body = Operator::answer(addr);
        assert!(body.contains("greeting hello"), "{body}");
    }
    assert_ne!(
        std::fs::read(op.state().join("state.json")).unwrap(),
        state,
        "the applied file is saved"
    );
}

#[test]
fn describe_redacts_env_unless_asked() {
    let op = Operator::new();
    op.start();
    let out = op.ok(&["describe", "web", "--json"]);
    assert!(!out.contains("\"hi\""), "{out}");
    assert!(out.contains("redacted"), "{out}");
    let shown = op.ok(&["describe", "web", "--json", "--show-env"]);
    assert!(shown.contains("\"hi\""), "{shown}");
    // For people: the app's table as TOML, its sockets, its instances.
    let text = op.ok(&["describe", "web"]);
    assert!(text.starts_with("[apps.web]\n"), "{text}");
    assert!(
        text.contains("<redacted>") && !text.contains("\"hi\""),
        "{text}"
    );
    assert!(
        text.contains("sockets:") && text.contains("127.0.0.1:"),
        "{text}"
    );
    let pids = op.pids("web");
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(text.contains(&pid.to_string()), "{pid} in {text}");
    }
}

#[test]
fn a_start_that_failed_can_be_fixed_and_started_again() {
    let op = Operator::new();
    let good = std::fs::read_to_string(op.config()).unwrap();
    std::fs::write(
        op.config(),
        good.replace(
            "command = \"python3\"",
            "command = \"no-such-program-procactor\"",
        ),
    )
    .unwrap();
    let output = op.run(&["start", op.config().to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "the file is at fault: a config error"
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("no-such-program-procactor") && err.contains("PATH"),
        "the missing program, looked for in PATH: {err}"
    );
    // The operator fixes the file and starts it again: nothing ran, so nothing is in the way.
    std::fs::write(op.config(), &good).unwrap();
    op.start();
    assert_eq!(op.pids("web").len(), 3);
}

#[test]
fn a_stopped_app_frees_its_port_and_starts_again_on_it() {
    let op = Operator::new();
    op.start();
    let before = op.pids("web");
    op.ok(&["stop", "web"]);
    // Stopped means gone from the address too: nothing of the daemon's listens there.
    let free = std::net::TcpListener::bind(op.web);
    assert!(free.is_ok(), "{} still bound after stop: {free:?}", op.web);
    drop(free);
    op.start();
    let after = op.pids("web");
    assert_eq!(after.len(), 3);
    assert!(after.is_disjoint(&before), "{before:?} then {after:?}");
    assert!(Operator::answer(op.web).contains("greeting hi"));
}

#[test]
fn a_config_error_names_the_key_and_line_and_starts_nothing() {
    let op = Operator::new();
    std::fs::write(
        op.config(),
        "[apps.web]\ncommand = \"python3\"\ninstaces = 3\n",
    )
    .unwrap();
    let output = op.run(&["start", op.config().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("instaces") && err.contains(":3:"), "{err}");
    assert!(!op.socket().exists(), "no daemon was started");
    assert!(op.daemon_pid().is_none());
}

#[test]
fn resurrect_brings_back_the_apps_at_their_scale_and_keeps_stopped_ones_stopped() {
    let op = Operator::new();
    op.start();
    op.ok(&["scale", "web", "2"]);
    if op.api.is_some() {
        let said = op.ok(&["stop", "api"]);
        assert_eq!(said.lines().last(), Some("api: stopped"), "{said}");
    }
    op.ok(&["kill"]);
    assert!(wait_until(Duration::from_secs(10), || op
        .daemon_pid()
        .is_none_or(|p| !alive(p))));
    let table = op.ok(&["resurrect"]);
    assert!(table.contains("web"), "{table}");
    let rows = op.list();
    assert_eq!(rows.len(), 2, "web at its scale, api stopped: {rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["app"] == "web" && r["state"] == "ready"));
    Operator::answer(op.web);
}

#[test]
fn a_damaged_state_file_is_set_aside_reported_and_the_previous_one_used() {
    let op = Operator::new();
    op.start();
    op.ok(&["scale", "web", "2"]);
    op.ok(&["kill"]);
    assert!(wait_until(Duration::from_secs(10), || op
        .daemon_pid()
        .is_none_or(|p| !alive(p))));
    let state = op.state().join("state.json");
    assert!(
        op.state().join("state.json.prev").exists(),
        "a previous state is kept"
    );
    std::fs::write(&state, b"{ this is not json").unwrap();
    let output = op.run(&["resurrect"]);
    assert!(output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("damaged") || err.contains("set aside"),
        "reported: {err}"
    );
    let aside: Vec<_> = std::fs::read_dir(op.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is set aside, not deleted");
    // The previous state was the one before `scale web 2`: web at the file's 3.
    assert_eq!(op.pids("web").len(), 3);
}

#[test]
fn another_user_is_refused_by_the_daemon() {
    if nix_uid() != 0 {
        eprintln!("skipping: only root can run a client as another user here (the check itself is unit-tested in cli/handshake.rs)");
        return;
    }
    let op = Operator::new();
    op.start();
    use std::os::unix::fs::PermissionsExt;
    let as_nobody = || {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "--socket",
            ])
            .arg(op.socket())
            .args(["--state-dir", "/tmp", "list"])
            .output()
            .unwrap()
    };
    // The modes are the first wall: the socket's directory lets nobody else in.
    std::fs::set_permissions(op.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = as_nobody();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "refused by the modes: {err}");
    assert!(err.contains("another user"), "{err}");
    // Open the walls the modes make, so that only the daemon's SO_PEERCRED check is left.
    for (path, mode) in [
        (op.dir.path().to_path_buf(), 0o755),
        (op.socket().parent().unwrap().to_path_buf(), 0o755),
        (op.socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let output = as_nobody();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "refused: {err}");
    assert!(err.contains("65534"), "{err}");
    // The daemon still serves its own user.
    assert_eq!(op.list().len(), op.addrs().len() * 3);
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    let op = Operator::new();
    op.start();
    let mut follow = Command::new(BIN)
        .arg("--socket")
        .arg(op.socket())
        .args(["logs", "web", "-f", "--lines", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        Operator::answer(op.web);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.starts_with("web[") && line.contains("GET / ") {
                seen = true;
                break;
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "a request's line arrived while following");
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
fn the_daemons_metrics_are_scraped_by_prometheus() {
    use common::prometheus::{encoded, have, promtool_accepts, start_prometheus};
    let op = Operator::new();
    let port = free_port();
    let text = std::fs::read_to_string(op.config()).unwrap();
    std::fs::write(
        op.config(),
        format!("[daemon]\nmetrics = \"127.0.0.1:{port}\"\n\n{text}"),
    )
    .unwrap();
    op.start();
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = get(target, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    let up = |group: &str| {
        body.lines()
            .filter(|l| {
                l.starts_with("procactor_worker_up{") && l.contains(&format!("group=\"{group}\""))
            })
            .filter(|l| l.ends_with(" 1") || l.ends_with(" 1.0"))
            .count()
    };
    assert_eq!(up("web"), 3, "{body}");
    if op.api.is_some() {
        assert_eq!(up("api"), 3, "{body}");
    }
    assert!(body.contains("procactor_daemon_apps "), "{body}");
    assert!(
        body.contains("procactor_daemon_control_requests_total{"),
        "{body}"
    );
    promtool_accepts(&body);

    if !have("prometheus") {
        return;
    }
    let (_prometheus, server) = start_prometheus(op.dir.path(), target);
    let promql = encoded("sum(procactor_worker_up{group=\"web\"})");
    let seen = wait_until(Duration::from_secs(60), || {
        let Ok((200, body)) = get(server, &format!("/api/v1/query?query={promql}")) else {
            return false;
        };
        let json: Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["result"][0]["value"][1] == "3"
    });
    assert!(
        seen,
        "Prometheus never saw 3 web instances: {}",
        std::fs::read_to_string(op.dir.path().join("prometheus.log")).unwrap_or_default()
    );
}

#[test]
fn restart_replaces_every_instance_of_an_app_without_a_failed_request() {
    let op = Operator::new();
    op.start();
    let before = op.pids("web");
    let load = Load::start(op.web, LoadOptions::default());
    assert!(wait_until(Duration::from_secs(10), || load.stats().ok > 20));
    let table = op.ok(&["restart", "web"]);
    assert!(table.contains("RESTARTS"), "{table}");
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
    let after = op.pids("web");
    assert_eq!(after.len(), 3);
    assert!(after.is_disjoint(&before), "{before:?} {after:?}");
    assert_eq!(
        op.run(&["restart", "nosuch"]).status.code(),
        Some(1),
        "an unknown app is an error"
    );
}

#[test]
fn in_the_foreground_the_daemon_tells_systemd_ready_pings_its_watchdog_and_stops_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let op = Operator::new();
    let notify_path = op.dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut daemon = Command::new(BIN)
        .arg("--socket")
        .arg(op.socket())
        .arg("--state-dir")
        .arg(op.state())
        .args(["start", "--foreground"])
        .arg(op.config())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    while !(said.iter().any(|s: &String| s.contains("READY=1"))
        && said.iter().filter(|s| s.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = systemd.recv(&mut buf).expect("the daemon notifies");
        said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // READY=1 comes once every instance is ready.
    let rows = op.list();
    assert_eq!(rows.len(), op.addrs().len() * 3);
    assert!(rows.iter().all(|r| r["state"] == "ready"));
    let pids: Vec<u32> = rows
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    assert!(said.iter().any(|s| s.contains("READY=1")), "{said:?}");
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(10), || !alive(pid)),
            "instance {pid} ended with the daemon"
        );
    }
}

#[test]
fn a_failed_apply_keeps_the_running_file_and_auto_means_one_per_cpu() {
    let op = Operator::new();
    op.start();
    let text = std::fs::read_to_string(op.config()).unwrap();
    // A new app that never becomes ready (it exits at once: well within its `min_uptime`, even
    // on a loaded machine where Python takes a second to start), and web at one instance per
    // CPU.
    let broken = format!(
        "{}\n[apps.bad]\ncommand = \"python3\"\nargs = [\"-c\", \"import sys; sys.exit(3)\"]\n\
         instances = 1\nready = \"spawn\"\nmin_uptime = \"5s\"\nready_timeout = \"10s\"\n\
         restart = {{ on = \"never\" }}\n",
        text.replacen("instances = 3", "instances = \"auto\"", 1)
    );
    std::fs::write(op.config(), &broken).unwrap();
    let output = op.run(&["apply", op.config().to_str().unwrap()]);
    assert!(
        !output.status.success(),
        "the app that fails fails the apply"
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("bad"), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("plan: start bad"),
        "the plan, before it failed: {out}"
    );
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(op.pids("web").len(), cpus, "auto: one per CPU");
    let web_rows = op.list().iter().filter(|r| r["app"] == "web").count();
    assert_eq!(web_rows, cpus, "instances scaled away are not listed");
    // The file that runs is still the old one: the plan still has the whole change.
    let plan = op.ok(&["apply", op.config().to_str().unwrap(), "--dry-run"]);
    assert!(plan.contains("start bad"), "{plan}");
}

/// A health endpoint the test controls: `GET /health/<n>` answers 500 while instance `n` is in
/// the shared set, else 200.
fn health_server() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<BTreeSet<usize>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let shared = failing.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let instance: Option<usize> = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/health/"))
                .and_then(|n| n.parse().ok());
            let bad = instance.is_some_and(|n| shared.lock().unwrap().contains(&n));
            let status = if bad { "500 Bad" } else { "200 OK" };
            let _ = (&stream).write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (addr, failing)
}

#[test]
fn an_instance_that_fails_its_http_liveness_probe_is_restarted() {
    let op = Operator::new();
    let (health, failing) = health_server();
    let text = std::fs::read_to_string(op.config()).unwrap();
    let text = text.replacen(
        "ready = \"notify\"\n",
        &format!(
            "ready = \"notify\"\nliveness = {{ http = \"http://{health}/health/{{instance}}\", every = \"200ms\", failures = 3 }}\n"
        ),
        1,
    );
    std::fs::write(op.config(), text).unwrap();
    op.start();
    let before: Vec<Value> = op
        .list()
        .into_iter()
        .filter(|r| r["app"] == "web")
        .collect();
    failing.lock().unwrap().insert(1);
    let victim = before[1]["pid"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let rows = op.list();
            rows.iter().any(|r| {
                r["app"] == "web"
                    && r["instance"] == 1
                    && r["state"] == "ready"
                    && r["pid"].as_u64().is_some_and(|p| p != victim)
            })
        }),
        "instance 1 was restarted: {:?}",
        op.list()
    );
    failing.lock().unwrap().clear();
    // The others were left alone.
    let after: Vec<Value> = op
        .list()
        .into_iter()
        .filter(|r| r["app"] == "web")
        .collect();
    for i in [0, 2] {
        assert_eq!(after[i]["pid"], before[i]["pid"], "instance {i} untouched");
    }
}

#[test]
fn top_off_a_terminal_is_a_usage_error_that_names_list() {
    let op = Operator::new();
    let output = op.run(&["top"]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("terminal") && err.contains("list"), "{err}");
}
