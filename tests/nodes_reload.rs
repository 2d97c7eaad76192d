//! A rolling reload across hosts, through a real `redis-server`: three masters as separate
//! processes (`procactor-node`) stand for three hosts. SIGHUP to one reloads every node, one
//! at a time, with the progress seen on every node; a node whose reload fails stops the
//! rollout and the nodes after it keep their processes; with Redis down a cluster-wide
//! reload fails at once with a typed error, and SIGHUP reloads that node only. (A stale
//! coordinator's command is refused: `backend/rollout/wire.rs`'s unit tests.) Every process is
//! ended by its pid.

mod common;

use std::time::{Duration, Instant};

use common::node::Node;
use common::redis::RedisServer;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Started with `env` added, and joined; on drop, SIGTERM first and up to 15 s to stop.
fn joined(redis: &str, cluster: &str, name: &str, env: &[(&str, &str)]) -> Node {
    Node::start_env(redis, cluster, name, &[], env)
        .term_on_drop()
        .until_joined(cluster)
}

/// Three joined nodes `a`, `b`, `c`, each seeing the two others; `env` for `b`.
fn three(redis: &RedisServer, cluster: &str, env_b: &[(&str, &str)]) -> Vec<Node> {
    let url = redis.url();
    let mut nodes = vec![
        joined(&url, cluster, "a", &[]),
        joined(&url, cluster, "b", env_b),
        joined(&url, cluster, "c", &[]),
    ];
    for node in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = node.ask_within("nodes", Duration::from_secs(10))["nodes"]
                .as_array()
                .map_or(0, Vec::len);
            if listed == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} sees {listed} nodes",
                node.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nodes
}

/// The rollout events (kind, node) from `from` on, in the order this node saw them.
fn steps(node: &mut Node, from: usize) -> Vec<(String, String)> {
    node.timed_events(from, "rollout")
        .into_iter()
        .map(|(_, v)| {
            let r = &v["rollout"];
            let name = r["node"].as_str().unwrap_or_default().to_owned();
            (r["kind"].as_str().unwrap().to_owned(), name)
        })
        .collect()
}

#[test]
fn sighup_on_one_node_reloads_every_node_one_at_a_time() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = three(&redis, "roll", &[]);
    let before: Vec<_> = nodes.iter_mut().map(Node::pids).collect();
    let marks: Vec<_> = nodes.iter_mut().map(Node::mark).collect();

    nodes[1].signal(Signal::SIGHUP);
    for (node, &from) in nodes.iter_mut().zip(&marks) {
        let done = node.rollout_event(from, Duration::from_secs(60), "done");
        assert_eq!(done["rollout"]["reloaded"], 3, "node {}", node.name);
    }

    // The coordinator (b, the node signalled) first, then the others by name; each node's
    // step begins only once the one before is done — as every node saw it.
    let expected: Vec<(String, String)> = [
        ("started", ""),
        ("node_started", "b"),
        ("node_done", "b"),
        ("node_started", "a"),
        ("node_done", "a"),
        ("node_started", "c"),
        ("node_done", "c"),
        ("done", ""),
    ]
    .iter()
    .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
    .collect();
    for (node, &from) in nodes.iter_mut().zip(&marks) {
        assert_eq!(steps(node, from), expected, "node {}", node.name);
    }
    // No two nodes reloaded at the same time: each node's local reload (its own started and
    // done lines, timed on arrival here) ends before the next one's begins.
    let mut spans = Vec::new();
    for (node, &from) in nodes.iter_mut().zip(&marks) {
        let local = node.timed_events(from, "reload");
        let at = |what: &str| {
            local
                .iter()
                .find(|(_, v)| v["local"] == what)
                .map(|(at, _)| *at)
                .unwrap_or_else(|| panic!("node {}: no local {what}", node.name))
        };
        spans.push((at("started"), at("done"), node.name.clone()));
    }
    spans.sort();
    let order: Vec<_> = spans.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(order, ["b", "a", "c"]);
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping reloads: {spans:?}");
    }
    // Every worker of every node is a new process.
    for (node, old) in nodes.iter_mut().zip(&before) {
        let now = node.pids();
        assert_eq!(now.len(), old.len(), "node {}", node.name);
        assert!(
            now.is_disjoint(old),
            "node {}: {old:?} → {now:?}",
            node.name
        );
    }
}

#[test]
fn a_node_whose_reload_fails_stops_the_rollout() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let flag = std::env::temp_dir().join(format!("procactor-fail-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let env = [("PROCACTOR_NODE_FAIL_IF", flag.to_str().unwrap())];
    let mut nodes = three(&redis, "fail", &env);
    let before: Vec<_> = nodes.iter_mut().map(Node::pids).collect();
    let marks: Vec<_> = nodes.iter_mut().map(Node::mark).collect();
    // From now on b's new workers exit at once.
    std::fs::write(&flag, b"").unwrap();

    let answer = nodes[0].ask_within("reload", Duration::from_secs(90));
    let _ = std::fs::remove_file(&flag);
    assert_eq!(answer["reload"], "error", "{answer}");
    assert_eq!(answer["kind"], "rollout", "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("node b failed"), "{error}");

    // a (the coordinator) reloaded; b failed and rolled back; c was not touched.
    let after: Vec<_> = nodes.iter_mut().map(Node::pids).collect();
    assert!(
        after[0].is_disjoint(&before[0]),
        "a: {:?} → {:?}",
        before[0],
        after[0]
    );
    assert_eq!(after[1], before[1], "b keeps its old processes");
    assert_eq!(after[2], before[2], "c keeps its old processes");
    // Every node saw b fail and the rollout stop; c never began.
    for (node, &from) in nodes.iter_mut().zip(&marks) {
        let failed = node.rollout_event(from, Duration::from_secs(20), "failed");
        assert!(
            failed["rollout"]["error"]
                .as_str()
                .unwrap()
                .contains("node b"),
            "node {}: {failed}",
            node.name
        );
        let seen = steps(node, from);
        assert!(
            seen.contains(&("node_failed".into(), "b".into())),
            "node {}: {seen:?}",
            node.name
        );
        assert!(
            !seen.contains(&("node_started".into(), "c".into())),
            "node {}: {seen:?}",
            node.name
        );
    }
    assert!(
        nodes[2].timed_events(marks[2], "reload").is_empty(),
        "c did not reload"
    );
}

#[test]
fn with_redis_down_a_cluster_reload_fails_fast_and_sighup_reloads_this_node() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut node = joined(&redis.url(), "down", "a", &[]);
    let before = node.pids();
    redis.stop();
    node.disconnected(Duration::from_secs(10));

    let begun = Instant::now();
    let answer = node.ask_within("reload", Duration::from_secs(20));
    let took = begun.elapsed();
    assert_eq!(answer["reload"], "error", "{answer}");
    assert_eq!(answer["kind"], "unavailable", "{answer}");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // SIGHUP: this node only, locally.
    let from = node.mark();
    node.signal(Signal::SIGHUP);
    node.find(from, Duration::from_secs(60), "a local reload", |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["event"] == "reload" && v["local"] == "done")
    });
    let answer = node.ask_within("call", Duration::from_secs(10));
    assert_eq!(answer["call"], "ok");
    assert!(!before.contains(&answer["pid"].as_u64().unwrap()));
}
