//! `procactor-node`: a test fixture standing for one host of a cluster joined through Redis.
//!
//! ```text
//! procactor-node --redis URL --cluster NAME [--node NAME] [--workers N]
//!                [--heartbeat-ms MS] [--node-timeout-ms MS]
//! ```
//!
//! A master with N echo workers (this program re-run) and the Redis backend. On stdout, one
//! line each: `{"start_ms":…}` (how long the cluster's start took, whether it failed or not),
//! `joined <cluster> as <node>` once joined (`started <cluster> unjoined` when Redis
//! could not be reached), a JSON object per [`NodeEvent`] (`{"event":"left","node":…}`), and
//! the answers to the commands read from stdin, one per line:
//! - `call`: a local `Call(EchoMsg::Pid)` to worker 0 → `{"call":"ok","pid":…}` or
//!   `{"call":"error","error":…}`;
//! - `nodes`: `{"nodes":[{"node":…,"epoch":…,"host":…,"pid":…,"groups":{group:[pids]}}]}`;
//! - `ask <node> <worker> [timeout_ms]`: worker 0 asks that worker of that node its pid
//!   (`ask_worker_on`) → `{"ask":"ok","pid":…,"ms":…}` or `{"ask":"error","error":…,"ms":…}`;
//!   `tell <node> <worker>`: worker 0 sends it a one-way `Ping` → `{"tell":"ok",…}`;
//! - `mask <node> <worker>`: the master asks that worker its pid → `{"mask":"ok","pid":…}`;
//! - `broadcast` / `publish <group>`: the master sends `Ping` one-way to every worker / every
//!   member of the group → `{"broadcast":<this node's count>}`; `wbroadcast` /
//!   `wpublish <group>`: worker 0 does → `{"wbroadcast":"ok"}`;
//! - `tells`: each local worker's one-way messages received so far → `{"tells":[…]}`;
//! - `confirm <worker> <key>`: that worker confirms the key → `{"confirm":"ok"}`;
//!   `rounds <key> <n>`: registers for rounds of `n` confirmations of the key; each round is
//!   printed when complete as `{"round":<key>,"peers":[…]}` (a peer as `"m"`, `"w<id>"`, or
//!   `"<epoch>/w<id>"` / `"<epoch>/m"` for another node's);
//! - `cache-…`: the cluster-wide cache (`node_cache.rs`);
//! - `stats`: `{"stats":{"beats":…,"beat_failures":…,"bad_entries":…,"rejoins":…,"connected":…,
//!   "frames_sent":…,"frames_received":…,"frames_dropped":…,"requests":…,"requests_failed":…}}`;
//! - `reload`: [`Cluster::reload`] (the whole cluster) → `{"reload":"ok","replaced":…,
//!   "nodes":[[node, outcome]…]}` or `{"reload":"error","kind":"unavailable"|"rollout"|"other",
//!   "error":…}`; `reload_local`: this node only → `{"reload_local":"ok","replaced":…}`;
//! - `pids`: this node's worker pids, read now (not as last published) → `{"pids":[…]}`.
//!
//! Every [`ReloadEvent`] is printed too: `{"event":"reload","local":"started"|"replaced"|"done"|
//! "failed"}` for this node's own reload, `{"event":"rollout","rollout":{…}}` (a
//! [`RolloutEvent`](procactor::backend::RolloutEvent) as JSON) for a cluster-wide one. A worker started while the file named by
//! `PROCACTOR_NODE_FAIL_IF` exists exits at once with status 3: how a test makes this node's
//! next reload fail.
//!
//! A failed start prints `error <message>` and exits 2. SIGTERM stops the cluster cleanly
//! (the node leaves) and exits 0.

use std::io::BufRead;
use std::time::Duration;

use actix::prelude::*;
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::backend::{Backend, NodeEvent, NodeInfo, NodeStats};
use procactor::logger::LogConfig;
use procactor::{Call, Cluster, ClusterConfig, ClusterSupervisor, Error, ReloadError, ReloadEvent};
use serde_json::json;

mod node_cache;

/// The command line.
struct Args {
    redis: String,
    cluster: String,
    node: Option<String>,
    workers: usize,
    heartbeat: Option<Duration>,
    node_timeout: Option<Duration>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        redis: String::new(),
        cluster: String::new(),
        node: None,
        workers: 2,
        heartbeat: None,
        node_timeout: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let ms = || {
            value
                .parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--redis" => args.redis = value.clone(),
            "--cluster" => args.cluster = value.clone(),
            "--node" => args.node = Some(value.clone()),
            "--workers" => args.workers = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--heartbeat-ms" => args.heartbeat = Some(ms()?),
            "--node-timeout-ms" => args.node_timeout = Some(ms()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Prints each membership event as one JSON line.
struct Printer;

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<NodeEvent> for Printer {
    type Result = ();

    fn handle(&mut self, event: NodeEvent, _: &mut Context<Self>) {
        let line = match event {
            NodeEvent::Joined(node) => json!({"event": "joined", "info": info(&node)}),
            NodeEvent::Left { node, reason } => json!({
                "event": "left",
                "node": node.id.name,
                "epoch": node.id.epoch,
                "reason": format!("{reason:?}"),
            }),
            NodeEvent::Disconnected { error } => json!({"event": "disconnected", "error": error}),
            NodeEvent::Reconnected { node } => {
                json!({"event": "reconnected", "node": node.name, "epoch": node.epoch})
            }
            NodeEvent::Rejoined { node } => {
                json!({"event": "rejoined", "node": node.name, "epoch": node.epoch})
            }
            other => json!({"event": format!("{other:?}")}),
        };
        println!("{line}");
    }
}

impl Handler<ReloadEvent> for Printer {
    type Result = ();

    fn handle(&mut self, event: ReloadEvent, _: &mut Context<Self>) {
        let line = match event {
            ReloadEvent::Cluster(rollout) => json!({"event": "rollout", "rollout": rollout}),
            ReloadEvent::Started { .. } => json!({"event": "reload", "local": "started"}),
            ReloadEvent::Replaced { .. } => json!({"event": "reload", "local": "replaced"}),
            ReloadEvent::Done { .. } => json!({"event": "reload", "local": "done"}),
            ReloadEvent::Failed { error } => {
                json!({"event": "reload", "local": "failed", "error": error.to_string()})
            }
            other => json!({"event": "reload", "local": format!("{other:?}")}),
        };
        println!("{line}");
    }
}

/// `reload`: the whole cluster, as [`Cluster::reload`] answers.
async fn reload(cluster: &Cluster<Echo>) -> serde_json::Value {
    match cluster.reload().await {
        Ok(report) => {
            let nodes = report.cluster.as_ref().map(|c| {
                c.nodes
                    .iter()
                    .map(|(node, outcome)| json!([node, outcome]))
                    .collect::<Vec<_>>()
            });
            json!({"reload": "ok", "replaced": report.replaced.len(), "nodes": nodes})
        }
        Err(e) => {
            let kind = match &e {
                Error::Reload(ReloadError::ClusterUnavailable { .. }) => "unavailable",
                Error::Reload(ReloadError::Rollout { .. }) => "rollout",
                _ => "other",
            };
            json!({"reload": "error", "kind": kind, "error": e.to_string()})
        }
    }
}

fn info(node: &NodeInfo) -> serde_json::Value {
    json!({
        "node": node.id.name,
        "epoch": node.id.epoch,
        "host": node.host,
        "pid": node.master_pid,
        "groups": node.pids_by_group(),
    })
}

fn stats(stats: NodeStats) -> serde_json::Value {
    json!({"stats": {
        "beats": stats.beats,
        "beat_failures": stats.beat_failures,
        "bad_entries": stats.bad_entries,
        "rejoins": stats.rejoins,
        "connected": stats.connected,
        "frames_sent": stats.frames_sent,
        "frames_received": stats.frames_received,
        "frames_dropped": stats.frames_dropped,
        "requests": stats.requests,
        "requests_failed": stats.requests_failed,
    }})
}

/// Answers one command line.
async fn command(cluster: &Cluster<Echo>, line: &str) -> serde_json::Value {
    match line.trim() {
        "call" => match cluster.worker(0).send(Call(EchoMsg::Pid)).await {
            Ok(Ok(EchoReply::Pid(pid))) => json!({"call": "ok", "pid": pid}),
            Ok(Ok(other)) => json!({"call": "error", "error": format!("{other:?}")}),
            Ok(Err(e)) => json!({"call": "error", "error": e.to_string()}),
            Err(e) => json!({"call": "error", "error": e.to_string()}),
        },
        line if line.starts_with("ask ") || line.starts_with("tell ") => {
            on_node(cluster, line).await
        }
        line if line.starts_with("mask ") => master_ask(cluster, line).await,
        "broadcast" => counted("broadcast", cluster.broadcast(&EchoMsg::Ping).await),
        line if line.starts_with("publish ") => {
            counted("publish", cluster.publish(&line[8..], &EchoMsg::Ping).await)
        }
        "wbroadcast" => fanout(cluster, None).await,
        line if line.starts_with("wpublish ") => fanout(cluster, Some(line[9..].to_owned())).await,
        "tells" => tells(cluster).await,
        line if line.starts_with("confirm ") => confirm(cluster, line).await,
        line if line.starts_with("rounds ") => rounds(cluster, line).await,
        "nodes" => json!({"nodes": cluster.nodes().iter().map(info).collect::<Vec<_>>()}),
        "stats" => stats(cluster.node_stats().unwrap_or_default()),
        line if line.starts_with("cache-") => node_cache::command(cluster, line).await,
        "reload" => reload(cluster).await,
        "pids" => match cluster.info().await {
            Ok(info) => {
                let pids: Vec<u32> = info.workers.iter().filter_map(|w| w.pid).collect();
                json!({"pids": pids})
            }
            Err(e) => json!({"pids": null, "error": e.to_string()}),
        },
        "reload_local" => match cluster.reload_local().await {
            Ok(report) => json!({"reload_local": "ok", "replaced": report.replaced.len()}),
            Err(e) => json!({"reload_local": "error", "error": e.to_string()}),
        },
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// `ask <node> <worker> [timeout_ms]`: this node's worker 0 asks worker `<worker>` of node
/// `<node>` for its pid → `{"ask":"ok","pid":…,"ms":…}` or `{"ask":"error","error":…,"ms":…}`;
/// `tell <node> <worker>`: worker 0 sends it a one-way `Ping` → `{"tell":"ok"}` or the error.
async fn on_node(cluster: &Cluster<Echo>, line: &str) -> serde_json::Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(&verb), Some(&node), Some(worker)) = (
        words.first(),
        words.get(1),
        words.get(2).and_then(|w| w.parse().ok()),
    ) else {
        return json!({"error": format!("bad command {line:?}")});
    };
    let timeout_ms = words.get(3).and_then(|t| t.parse().ok()).unwrap_or(5_000);
    let tell = verb == "tell";
    let msg = EchoMsg::OnNode {
        node: node.to_owned(),
        worker,
        msg: Box::new(if tell { EchoMsg::Ping } else { EchoMsg::Pid }),
        tell,
        timeout_ms,
    };
    let begun = std::time::Instant::now();
    let reply = cluster.worker(0).send(Call(msg)).await;
    let ms = begun.elapsed().as_millis();
    match reply {
        Ok(Ok(EchoReply::Pid(pid))) => json!({verb: "ok", "pid": pid, "ms": ms}),
        Ok(Ok(EchoReply::Done)) => json!({verb: "ok", "ms": ms}),
        Ok(Ok(EchoReply::Error(e))) => json!({verb: "error", "error": e, "ms": ms}),
        Ok(Ok(other)) => json!({verb: "error", "error": format!("{other:?}"), "ms": ms}),
        Ok(Err(e)) => json!({verb: "error", "error": e.to_string(), "ms": ms}),
        Err(e) => json!({verb: "error", "error": e.to_string(), "ms": ms}),
    }
}

fn counted(verb: &str, sent: Result<usize, procactor::Error>) -> serde_json::Value {
    match sent {
        Ok(n) => json!({verb: n}),
        Err(e) => json!({verb: "error", "error": e.to_string()}),
    }
}

/// `mask <node> <worker>`: the master asks that worker of that node its pid.
async fn master_ask(cluster: &Cluster<Echo>, line: &str) -> serde_json::Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(&node), Some(worker)) = (words.get(1), words.get(2).and_then(|w| w.parse().ok()))
    else {
        return json!({"error": format!("bad command {line:?}")});
    };
    let asked = cluster
        .ask_worker_on(node, worker, &EchoMsg::Pid, Duration::from_secs(5))
        .await;
    match asked {
        Ok(EchoReply::Pid(pid)) => json!({"mask": "ok", "pid": pid}),
        Ok(other) => json!({"mask": "error", "error": format!("{other:?}")}),
        Err(e) => json!({"mask": "error", "error": e.to_string()}),
    }
}

/// Worker 0 broadcasts (`None`) or publishes to `group` a one-way `Ping`.
async fn fanout(cluster: &Cluster<Echo>, group: Option<String>) -> serde_json::Value {
    let verb = if group.is_some() {
        "wpublish"
    } else {
        "wbroadcast"
    };
    let msg = EchoMsg::Fanout {
        group,
        msg: Box::new(EchoMsg::Ping),
    };
    match cluster.worker(0).send(Call(msg)).await {
        Ok(Ok(EchoReply::Done)) => json!({verb: "ok"}),
        other => json!({verb: "error", "error": format!("{other:?}")}),
    }
}

/// Each local worker's count of one-way messages received.
async fn tells(cluster: &Cluster<Echo>) -> serde_json::Value {
    let mut counts = Vec::new();
    for id in 0..cluster.len() {
        match cluster.worker(id).send(Call(EchoMsg::Stats)).await {
            Ok(Ok(EchoReply::Stats { tells, .. })) => counts.push(tells),
            other => return json!({"tells": "error", "error": format!("{other:?}")}),
        }
    }
    json!({"tells": counts})
}

/// `confirm <worker> <key>`: that worker confirms the key.
async fn confirm(cluster: &Cluster<Echo>, line: &str) -> serde_json::Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(worker), Some(&key)) = (words.get(1).and_then(|w| w.parse().ok()), words.get(2))
    else {
        return json!({"error": format!("bad command {line:?}")});
    };
    match cluster
        .worker(worker)
        .send(Call(EchoMsg::Confirm(key.to_owned())))
        .await
    {
        Ok(Ok(EchoReply::Done)) => json!({"confirm": "ok"}),
        other => json!({"confirm": "error", "error": format!("{other:?}")}),
    }
}

/// `rounds <key> <n>`: prints each completed round of `n` confirmations of the key.
async fn rounds(cluster: &Cluster<Echo>, line: &str) -> serde_json::Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(&key), Some(n)) = (words.get(1), words.get(2).and_then(|w| w.parse().ok())) else {
        return json!({"error": format!("bad command {line:?}")});
    };
    let mut rounds = match cluster.on_confirmation(key, n).await {
        Ok(rounds) => rounds,
        Err(e) => return json!({"rounds": "error", "error": e.to_string()}),
    };
    let key = key.to_owned();
    actix::spawn(async move {
        while let Some(round) = rounds.next().await {
            let peers: Vec<String> = round.iter().map(peer).collect();
            println!("{}", json!({"round": key, "peers": peers}));
        }
    });
    json!({"rounds": "ok"})
}

fn peer(peer: &procactor::Peer) -> String {
    match peer {
        procactor::Peer::Master => "m".into(),
        procactor::Peer::Worker { id, .. } => format!("w{id}"),
        procactor::Peer::Remote { epoch, id, .. } => match id {
            Some(id) => format!("{epoch}/w{id}"),
            None => format!("{epoch}/m"),
        },
        other => format!("{other:?}"),
    }
}

async fn master(args: Args) -> i32 {
    let mut backend = Backend::redis(&args.redis).cluster(&args.cluster);
    if let Some(node) = &args.node {
        backend = backend.node(node);
    }
    if let Some(every) = args.heartbeat {
        backend = backend.heartbeat(every);
    }
    if let Some(timeout) = args.node_timeout {
        backend = backend.node_timeout(timeout);
    }
    let config = ClusterConfig::new()
        .workers(args.workers)
        .ready_timeout(Duration::from_secs(20))
        .log(LogConfig {
            dir: None,
            ..LogConfig::default()
        })
        .backend(backend);
    let begun = std::time::Instant::now();
    let printer = Printer.start();
    let started = ClusterSupervisor::builder::<Echo>(config)
        .on_node(printer.clone().recipient())
        .on_reload(printer.recipient())
        .start()
        .await;
    println!("{}", json!({"start_ms": begun.elapsed().as_millis()}));
    let cluster = match started {
        Ok(cluster) => cluster,
        Err(e) => {
            println!("error {e}");
            return 2;
        }
    };
    match cluster.node() {
        Some(node) => println!("joined {} as {}", args.cluster, node.name),
        None => println!("started {} unjoined", args.cluster),
    }
    // Commands come from a thread (stdin blocks), one line at a time.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let commands = cluster.clone();
    actix::spawn(async move {
        while let Some(line) = rx.recv().await {
            // A loop of cache operations runs beside the other commands.
            if line.starts_with("cache-lock-loop") || line.starts_with("cache-incr") {
                let cluster = commands.clone();
                actix::spawn(async move { println!("{}", command(&cluster, &line).await) });
                continue;
            }
            println!("{}", command(&commands, &line).await);
        }
    });
    match cluster.wait().await {
        Ok(()) => 0,
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}

fn main() -> Result<(), procactor::Error> {
    if procactor::is_worker() {
        let fail = std::env::var_os("PROCACTOR_NODE_FAIL_IF");
        if fail.is_some_and(|path| std::path::Path::new(&path).exists()) {
            std::process::exit(3);
        }
        return procactor::run_worker(Echo::default());
    }
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            println!("error {e}");
            std::process::exit(2);
        }
    };
    let status = actix::System::new().block_on(master(args));
    std::process::exit(status);
}
