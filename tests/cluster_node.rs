//! The `cluster_node` example as issue 18 and the README run it: three nodes (three masters as
//! separate processes, standing for three hosts) on one `redis-server` the test starts, driven
//! over HTTP and by signals. Every process is ended by its pid.
//!
//! The example binary is built by this test (`cargo build --example cluster_node`, once, into
//! this test's own target directory): `cargo test --test cluster_node` builds no example.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use common::http::{get, Load, LoadOptions};
use common::redis::RedisServer;
use common::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Workers per node.
const WORKERS: usize = 2;

/// The example's binary, built once per test process with this test's profile and target
/// directory.
fn example() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // <target>/<profile>/deps/cluster_node-<hash>
        let exe = std::env::current_exe().expect("this test's path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("its profile dir");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .args([
                "build",
                "--quiet",
                "--example",
                "cluster_node",
                "--target-dir",
            ])
            .arg(profile.parent().expect("the target dir"))
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo sets for a test process (this package's name, version, paths): build
        // scripts that watch these (ring's) would otherwise run again, and the next
        // `cargo test` would rebuild after them.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_for_tests = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || [
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name.as_ref());
            if set_for_tests {
                cargo.env_remove(name.as_ref());
            }
        }
        if profile.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo");
        assert!(
            status.success(),
            "cargo build --example cluster_node: {status}"
        );
        profile.join("examples").join("cluster_node")
    })
}

/// A loopback port free now (bound, then released for the example to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One node: the example's master, its stdout read line by line, its stderr in a file (shown
/// when a check fails, removed otherwise).
struct Node {
    name: String,
    addr: SocketAddr,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Node {
    /// Starts `cluster_node` exactly as the command line does.
    fn start(redis: &str, cluster: &str, name: &str) -> Node {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let stderr = std::env::temp_dir().join(format!(
            "procactor-cluster-node-{}-{cluster}-{name}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&stderr).expect("a log file");
        let mut child = Command::new(example())
            .args(["--redis", redis, "--cluster", cluster, "--node", name])
            .args(["--workers", &WORKERS.to_string()])
            .args(["--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn the cluster_node example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Node {
            name: name.to_owned(),
            addr,
            child,
            lines,
            stderr,
        }
    }

    /// Its stderr so far, for a failure's message.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "node {} stderr (last lines):\n{}",
            self.name,
            tail.join("\n")
        )
    }

    /// Waits for `joined <cluster> as <name>` on stdout; every line before it is the
    /// `listening on` one.
    fn joined(&self, cluster: &str) {
        let expected = format!("joined {cluster} as {}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == expected => return,
                Ok(line) => assert!(
                    line == format!("listening on http://{}/", self.addr),
                    "unexpected stdout line {line:?}"
                ),
                Err(e) => panic!("no {expected:?} ({e}); {}", self.log()),
            }
        }
    }

    /// `GET path` on a new connection: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}; {}", self.log()))
    }

    /// `PUT path` with `body` on a new connection: the status.
    fn put(&self, path: &str, body: &str) -> u16 {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("a response");
        response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{response:?}"))
    }

    /// `GET /cluster`: each node's pids (all its groups').
    fn cluster(&self) -> BTreeMap<String, BTreeSet<u32>> {
        let (status, body) = self.get("/cluster");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let nodes = json["nodes"]
            .as_object()
            .unwrap_or_else(|| panic!("{body}"));
        nodes
            .iter()
            .map(|(node, groups)| {
                let groups = groups.as_object().unwrap_or_else(|| panic!("{body}"));
                let pids = groups
                    .values()
                    .flat_map(|pids| pids.as_array().unwrap_or_else(|| panic!("{body}")))
                    .map(|pid| pid.as_u64().unwrap_or_else(|| panic!("{body}")) as u32)
                    .collect();
                (node.clone(), pids)
            })
            .collect()
    }

    /// Polls `/cluster` until `cond` holds (`secs` at most); returns the last answer.
    fn cluster_until(
        &self,
        secs: u64,
        what: &str,
        cond: impl Fn(&BTreeMap<String, BTreeSet<u32>>) -> bool,
    ) -> BTreeMap<String, BTreeSet<u32>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let nodes = self.cluster();
            if cond(&nodes) {
                return nodes;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {what} within {secs} s; /cluster: {nodes:?}; {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the node");
    }

    /// SIGTERM: it exits (with its status) within 30 s.
    fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit after SIGTERM; {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // A failed test: SIGKILL (its workers die with it) and reap.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// `pid <pid> node <node>` → both.
fn who(body: &str) -> Option<(u32, String)> {
    let words: Vec<&str> = body.split_whitespace().collect();
    match words.as_slice() {
        ["pid", pid, "node", node] => Some((pid.parse().ok()?, (*node).to_owned())),
        _ => None,
    }
}

/// A cluster name of this test process's own.
fn cluster_name(test: &str) -> String {
    format!("cn-{test}-{}", std::process::id())
}

/// Starts nodes `names` at once and waits until each has joined and lists them all with their
/// workers; returns them and the pids of each.
fn cluster_of(
    redis: &RedisServer,
    cluster: &str,
    names: &[&str],
) -> (Vec<Node>, BTreeMap<String, BTreeSet<u32>>) {
    let nodes: Vec<Node> = names
        .iter()
        .map(|name| Node::start(&redis.url(), cluster, name))
        .collect();
    for node in &nodes {
        node.joined(cluster);
    }
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut pids = BTreeMap::new();
    for node in &nodes {
        pids = node.cluster_until(20, "all nodes with all their workers", |seen| {
            seen.keys().cloned().collect::<BTreeSet<_>>() == want
                && seen.values().all(|pids| pids.len() == WORKERS)
        });
    }
    (nodes, pids)
}

#[test]
fn three_nodes_answer_for_each_other_and_a_stopped_one_leaves() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = cluster_name("three");
    let (mut nodes, pids) = cluster_of(&redis, &cluster, &["n1", "n2", "n3"]);

    for node in &nodes {
        // Each names itself, with a pid of its own workers.
        let (status, body) = node.get("/");
        assert_eq!(status, 200, "{body}");
        let (pid, name) = who(&body).unwrap_or_else(|| panic!("{body:?}"));
        assert_eq!(name, node.name);
        assert!(pids[&node.name].contains(&pid), "{pid} not in {pids:?}");
        // Every node lists the same pids.
        assert_eq!(node.cluster(), pids);
        // From each to each (itself too, on the local path): the other's worker answers.
        for to in ["n1", "n2", "n3"] {
            let (status, body) = node.get(&format!("/ask/{to}"));
            assert_eq!(status, 200, "{} asking {to}: {body}", node.name);
            let (pid, name) = who(&body).unwrap_or_else(|| panic!("{body:?}"));
            assert_eq!(name, to, "{body}");
            assert!(pids[to].contains(&pid), "{body}: not in {pids:?}");
        }
        let (status, body) = node.get("/ask/nosuch");
        assert_eq!(status, 503, "{body}");
        assert!(!body.trim().is_empty(), "503 without the error's text");
    }

    // The cache, through the workers' cache client.
    assert_eq!(nodes[0].put("/cache/color", "blue"), 204);
    assert_eq!(nodes[0].get("/cache/color"), (200, "blue".to_owned()));
    assert_eq!(nodes[0].get("/cache/nothing-here").0, 404);

    // SIGTERM: n3 exits 0, and the others drop it within about 5 s.
    let mut n3 = nodes.pop().expect("n3");
    let status = n3.stop();
    assert_eq!(status.code(), Some(0), "{status}; {}", n3.log());
    let gone = Instant::now();
    for node in &nodes {
        node.cluster_until(5, "n3 dropped", |seen| !seen.contains_key("n3"));
    }
    println!("n3 dropped by both within {:?}", gone.elapsed());
    for node in &mut nodes {
        let status = node.stop();
        assert_eq!(status.code(), Some(0), "{status}; {}", node.log());
    }
    for pid in pids.values().flatten() {
        assert!(
            wait_until(Duration::from_secs(10), || !common::is_alive(*pid)),
            "worker {pid} outlived its node"
        );
    }
}

#[test]
fn a_value_put_on_one_node_is_read_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = cluster_name("cache");
    let (mut nodes, _) = cluster_of(&redis, &cluster, &["c1", "c2"]);
    assert_eq!(nodes[0].put("/cache/shared", "from c1"), 204);
    assert_eq!(nodes[1].get("/cache/shared"), (200, "from c1".to_owned()));
    assert_eq!(nodes[1].put("/cache/shared", "from c2"), 204);
    assert_eq!(nodes[0].get("/cache/shared"), (200, "from c2".to_owned()));
    for node in &mut nodes {
        assert_eq!(node.stop().code(), Some(0), "{}", node.log());
    }
}

/// The example's own drain, today: a node's rolling reload (SIGHUP) under keep-alive and
/// new-connection load fails no request and replaces every worker.
#[test]
fn sighup_reloads_a_node_under_load_with_no_failed_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = cluster_name("one");
    let (mut nodes, before) = cluster_of(&redis, &cluster, &["solo"]);
    let node = &mut nodes[0];
    let options = LoadOptions {
        threads_keepalive: 2,
        threads_new_conn: 1,
        path: "/".into(),
    };
    let load = Load::start(node.addr, options);
    assert!(
        wait_until(Duration::from_secs(20), || load.stats().ok >= 100),
        "the load never got going: {}",
        load.stats().summary()
    );
    node.signal(Signal::SIGHUP);
    node.cluster_until(60, "every worker replaced", |seen| {
        seen.get("solo")
            .is_some_and(|pids| pids.len() == WORKERS && pids.is_disjoint(&before["solo"]))
    });
    // Requests go on to the new workers.
    let served = load.stats().ok;
    assert!(
        wait_until(Duration::from_secs(20), || load.stats().ok >= served + 100),
        "{}",
        load.stats().summary()
    );
    let stats = load.stop();
    assert_eq!(stats.failures, 0, "{}", stats.summary());
    assert!(
        stats.told_to_close > 0,
        "no drain seen: {}",
        stats.summary()
    );
    assert_eq!(node.stop().code(), Some(0), "{}", node.log());
}

#[test]
fn sighup_to_one_node_reloads_every_node_under_load_with_no_failed_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = cluster_name("reload");
    let (mut nodes, before) = cluster_of(&redis, &cluster, &["r1", "r2", "r3"]);
    let loads: Vec<Load> = nodes
        .iter()
        .map(|node| {
            let options = LoadOptions {
                threads_keepalive: 2,
                threads_new_conn: 1,
                path: "/".into(),
            };
            Load::start(node.addr, options)
        })
        .collect();
    for (node, load) in nodes.iter().zip(&loads) {
        assert!(
            wait_until(Duration::from_secs(20), || load.stats().ok >= 100),
            "the load on {} never got going: {}",
            node.name,
            load.stats().summary()
        );
    }

    nodes[0].signal(Signal::SIGHUP);
    // Every node's workers are replaced (each node's pids, as that node itself lists them).
    for node in &nodes {
        node.cluster_until(90, "every worker replaced", |seen| {
            seen.get(&node.name)
                .is_some_and(|pids| pids.len() == WORKERS && pids.is_disjoint(&before[&node.name]))
        });
    }
    for (node, load) in nodes.iter().zip(loads) {
        let stats = load.stop();
        assert_eq!(stats.failures, 0, "{}: {}", node.name, stats.summary());
    }
    for node in &mut nodes {
        assert_eq!(node.stop().code(), Some(0), "{}", node.log());
    }
}
