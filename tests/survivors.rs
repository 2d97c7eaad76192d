//! No process survives: whatever a worker's descendants do — stay in its process group, take a
//! group or a session of their own, double-fork to init — none is left 2 s after the worker is
//! stopped, after it crashes, or after its master is killed with SIGKILL. Each case runs for the
//! worker runtime (`procactor-chaos` in mode `escape`) and for a plain program (a shell script
//! that does the same).
//!
//! Each test puts a marker of its own in the cluster's environment and scans `/proc` for the
//! processes that carry it; a guard kills (by pid) whatever still carries it when the test ends.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::carriers::{carriers, carries, env_var, KillCarriers};
use common::cluster::{chaos_config, collector, next_matching, within};
use common::is_alive;
use procactor::actors::echo::Echo;
use procactor::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// The variable that carries a test's marker.
const MARK: &str = "PROCACTOR_SURVIVORS_RUN";

/// The plain program: descendants that sleep in its group, in a session of their own, double-
/// forked, and both; it writes their pids to `$PROCACTOR_SURVIVORS_DIR/<its pid>`, then sleeps.
const SCRIPT: &str = r#"
sleep 1000 </dev/null >/dev/null 2>&1 & a=$!
setsid sleep 1000 </dev/null >/dev/null 2>&1 & b=$!
c=$( (sleep 1000 </dev/null >/dev/null 2>&1 & echo $!) )
d=$(setsid sh -c '(sleep 1000 </dev/null >/dev/null 2>&1 & echo $!)')
echo "$a $b $c $d" > "$PROCACTOR_SURVIVORS_DIR/$$.tmp"
mv "$PROCACTOR_SURVIVORS_DIR/$$.tmp" "$PROCACTOR_SURVIVORS_DIR/$$"
exec sleep 1000
"#;

/// What the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A procactor worker (`procactor-chaos`, mode `escape`).
    Runtime,
    /// A plain program (`/bin/sh` running [`SCRIPT`]).
    Plain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Runtime => "runtime",
            Kind::Plain => "plain",
        }
    }
}

/// One test's run: its marker and the directory the plain program writes to.
struct Run {
    marker: String,
    dir: PathBuf,
}

impl Run {
    fn new(test: &str) -> Self {
        let marker = format!("{test}-{}", std::process::id());
        Self::with_marker(marker)
    }

    fn with_marker(marker: String) -> Self {
        let dir = std::env::temp_dir().join(format!("procactor-{marker}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self { marker, dir }
    }

    /// The environment entry every process of the run carries.
    fn entry(&self) -> String {
        format!("{MARK}={}", self.marker)
    }

    fn config(&self, kind: Kind) -> ClusterConfig {
        let config = chaos_config(1, &[(0, "escape")])
            .env(MARK, self.marker.as_str())
            .env("PROCACTOR_SURVIVORS_DIR", self.dir.to_string_lossy());
        match kind {
            Kind::Runtime => config,
            Kind::Plain => config.exec("/bin/sh").args(["-c", SCRIPT]).plain(true),
        }
    }
}

/// Kills whatever carries the run's marker, and removes its directory, when the test ends.
struct Guard {
    _kill: KillCarriers,
    dir: PathBuf,
}

impl Guard {
    fn new(run: &Run) -> Self {
        Self {
            _kill: KillCarriers(run.entry()),
            dir: run.dir.clone(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A started cluster of one worker, with its events, the worker's pid and its descendants'.
struct Started {
    cluster: Cluster<Echo>,
    events: UnboundedReceiver<WorkerEvent>,
    worker: u32,
    escapees: Vec<u32>,
}

async fn start(kind: Kind, run: &Run) -> Started {
    let (inbox, mut received) = collector::<FromWorker<String>>();
    let (subscriber, events) = collector::<WorkerEvent>();
    let cluster = ClusterSupervisor::builder::<Echo>(run.config(kind))
        .on_message(inbox)
        .subscribe(subscriber)
        .start()
        .await
        .unwrap();
    let worker = cluster.workers().await.unwrap()[0].pid.unwrap();
    let escapees = match kind {
        Kind::Runtime => {
            let report = next_matching(&mut received, Duration::from_secs(20), |_| true)
                .await
                .expect("the worker reports its descendants");
            parse_pids(report.msg.strip_prefix("escape ").unwrap())
        }
        Kind::Plain => plain_escapees(run, worker).await,
    };
    assert_eq!(escapees.len(), if kind == Kind::Runtime { 5 } else { 4 });
    Started {
        cluster,
        events,
        worker,
        escapees,
    }
}

/// The pids the plain program `worker` wrote, once it has.
async fn plain_escapees(run: &Run, worker: u32) -> Vec<u32> {
    let file = run.dir.join(worker.to_string());
    let written = common::wait_until_async(Duration::from_secs(20), || file.exists()).await;
    assert!(written, "the plain program reports its descendants");
    parse_pids(&std::fs::read_to_string(&file).unwrap())
}

fn parse_pids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Every escapee runs and carries the run's marker; two are in the worker's process group (a
/// child, and one double-forked to init), the others left it — once their `setsid` has run: a
/// pid is reported as soon as it is forked, so the test waits (10 s at most) for it to leave.
fn assert_escaped(run: &Run, worker: u32, escapees: &[u32]) {
    for &pid in escapees {
        assert!(is_alive(pid), "descendant {pid} runs");
        assert!(
            carries(pid, &run.entry()),
            "descendant {pid} carries the marker"
        );
    }
    let group = |pid: u32| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)));
    let inside = || {
        escapees
            .iter()
            .filter(|&&p| group(p) == group(worker))
            .count()
    };
    common::wait_until(Duration::from_secs(10), || inside() == 2);
    assert_eq!(inside(), 2, "two stay in the worker's group");
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

async fn no_descendant_survives_a_stop_of(kind: Kind, test: &str) {
    let run = Run::new(test);
    let _guard = Guard::new(&run);
    within(60, async {
        let started = start(kind, &run).await;
        assert_escaped(&run, started.worker, &started.escapees);
        started.cluster.stop().await.unwrap();
        // Swept before the stop returned.
        assert_eq!(
            carriers(&run.entry()),
            Vec::<u32>::new(),
            "left after the stop"
        );
        let gone = common::wait_until_async(Duration::from_secs(2), || {
            started.escapees.iter().all(|&p| !is_alive(p))
        })
        .await;
        assert!(
            gone,
            "a descendant outlived the stop: {:?}",
            started.escapees
        );
    })
    .await;
}

async fn no_descendant_survives_a_crash_of(kind: Kind, test: &str) {
    let run = Run::new(test);
    let _guard = Guard::new(&run);
    within(60, async {
        let Started {
            cluster,
            mut events,
            worker,
            escapees,
        } = start(kind, &run).await;
        assert_escaped(&run, worker, &escapees);
        // The crashed process's own token: its restart's processes carry another one.
        let tree = format!(
            "PROCACTOR_TREE={}",
            env_var(worker, "PROCACTOR_TREE").unwrap()
        );
        assert!(escapees.iter().all(|&p| carries(p, &tree)));

        sigkill(worker);
        let gone = common::wait_until_async(Duration::from_secs(2), || {
            carriers(&tree).is_empty() && escapees.iter().all(|&p| !is_alive(p))
        })
        .await;
        assert!(gone, "left 2 s after the crash: {:?}", carriers(&tree));

        let ready = next_matching(&mut events, Duration::from_secs(30), |e| {
            e.generation == 2 && e.kind == WorkerEventKind::Ready
        })
        .await;
        assert!(ready.is_some(), "the slot restarts");
        let fresh = cluster.workers().await.unwrap()[0].pid.unwrap();
        assert!(
            is_alive(fresh),
            "the old token's sweep spared the new process"
        );
        cluster.stop().await.unwrap();
        assert_eq!(
            carriers(&run.entry()),
            Vec::<u32>::new(),
            "left after the stop"
        );
    })
    .await;
}

/// The master role of the master-kill tests (test → master → worker → descendants): a cluster
/// of one worker of the kind `PROCACTOR_SURVIVORS_MASTER` names, that prints
/// `READY <worker> <descendants>` and runs until killed. Ignored: the master-kill tests run it
/// (`--ignored --exact master_role`), in a process of its own.
#[test]
#[ignore = "the master role of the master-kill tests, which start it in a process of its own"]
fn master_role() {
    let kind = std::env::var("PROCACTOR_SURVIVORS_MASTER")
        .expect("run by the master-kill tests, which name the kind of worker");
    let kind = if kind == Kind::Plain.name() {
        Kind::Plain
    } else {
        Kind::Runtime
    };
    let run = Run::with_marker(std::env::var("PROCACTOR_SURVIVORS_MARKER").unwrap());
    actix::System::new().block_on(async move {
        let started = start(kind, &run).await;
        let pids: Vec<String> = started.escapees.iter().map(u32::to_string).collect();
        println!("READY {} {}", started.worker, pids.join(" "));
        let _ = started.cluster.wait().await;
    });
}

/// Starts this test binary as the master of one worker of `kind`; returns it, the worker's pid
/// and its descendants'. The caller kills and waits for the master.
#[allow(clippy::zombie_processes)]
fn start_master(kind: Kind, run: &Run) -> (std::process::Child, u32, Vec<u32>) {
    let mut master = Command::new(std::env::current_exe().unwrap())
        .args([
            "master_role",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("PROCACTOR_SURVIVORS_MASTER", kind.name())
        // Under another name: the master itself does not carry the marker.
        .env("PROCACTOR_SURVIVORS_MARKER", &run.marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(master.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = master.kill();
            let _ = master.wait();
            panic!("the master ended before READY");
        }
        // libtest may print "test master_role ... " on the same line first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let mut pids = parse_pids(rest);
            let worker = pids.remove(0);
            return (master, worker, pids);
        }
    }
}

fn no_descendant_survives_a_sigkill_of_the_master_of(kind: Kind, test: &str) {
    let run = Run::new(test);
    let _guard = Guard::new(&run);
    let (mut master, worker, escapees) = start_master(kind, &run);
    let _master_guard = common::KillOnDrop(master.id());
    assert_escaped(&run, worker, &escapees);
    assert!(!carries(master.id(), &run.entry()));

    master.kill().unwrap();
    master.wait().unwrap();
    let gone = common::wait_until(Duration::from_secs(2), || carriers(&run.entry()).is_empty());
    assert!(
        gone,
        "left 2 s after the master's SIGKILL: {:?}",
        carriers(&run.entry())
    );
    assert!(!is_alive(worker));
    assert!(escapees.iter().all(|&p| !is_alive(p)), "{escapees:?}");
}

#[actix::test]
async fn no_descendant_survives_a_stop() {
    no_descendant_survives_a_stop_of(Kind::Runtime, "stop").await;
}

#[actix::test]
async fn no_descendant_survives_a_crash() {
    no_descendant_survives_a_crash_of(Kind::Runtime, "crash").await;
}

#[test]
fn no_descendant_survives_a_sigkill_of_the_master() {
    no_descendant_survives_a_sigkill_of_the_master_of(Kind::Runtime, "master");
}

#[actix::test]
async fn no_descendant_of_a_plain_program_survives_a_stop() {
    no_descendant_survives_a_stop_of(Kind::Plain, "plain-stop").await;
}

#[actix::test]
async fn no_descendant_of_a_plain_program_survives_a_crash() {
    no_descendant_survives_a_crash_of(Kind::Plain, "plain-crash").await;
}

#[test]
fn no_descendant_of_a_plain_program_survives_a_sigkill_of_the_master() {
    no_descendant_survives_a_sigkill_of_the_master_of(Kind::Plain, "plain-master");
}

#[actix::test]
async fn a_worker_of_a_worker_carries_its_masters_token_then_its_own() {
    use common::cluster::{relay, relay_config};
    use common::relay::{Relay, RelayMsg, RelayReply, LEAVES_ENV};

    let run = Run::new("nested");
    let _guard = Guard::new(&run);
    within(60, async {
        let config = relay_config(1)
            .env(LEAVES_ENV, "1")
            .env(MARK, run.marker.as_str());
        let cluster = ClusterSupervisor::start::<Relay>(config).await.unwrap();
        let middle = cluster.workers().await.unwrap()[0].pid.unwrap();
        let RelayReply::Entries(leaves) = relay(&cluster, 0, RelayMsg::LeafPids).await else {
            panic!("leaf pids");
        };
        let leaf = *leaves.values().next().expect("one leaf") as u32;
        let outer = env_var(middle, "PROCACTOR_TREE").unwrap();
        let inner = env_var(leaf, "PROCACTOR_TREE").unwrap();
        let (inherited, own) = inner.rsplit_once(';').expect("two tokens");
        assert_eq!(inherited, outer, "the outer master's sweeps find the leaf");
        assert_ne!(own, outer);
        assert_eq!(
            own.split('/').count(),
            4,
            "<nonce>/<spawn>/<worker>/<generation>: {own}"
        );
        cluster.stop().await.unwrap();
        assert_eq!(
            carriers(&run.entry()),
            Vec::<u32>::new(),
            "left after the stop"
        );
    })
    .await;
}
