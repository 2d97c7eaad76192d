//! Several hosts, one cluster, joined through a real `redis-server`: three masters as separate
//! processes (`procactor-node`) stand for three hosts. Membership, detection of a SIGKILLed
//! master, a clean stop, Redis stopped, hung and restarted, a duplicate node name, garbage under
//! the cluster's keys, an ACL user limited to the cluster's keys, TLS (`rediss://`), a
//! Redis unreachable at start, and one that accepts connections and never answers. Every process is ended by its pid.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::node::Node;
use common::redis::{Blackhole, CutProxy, RedisServer};
use nix::sys::signal::Signal;
use serde_json::Value;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn epoch(entry: &Value) -> u64 {
    entry["epoch"].as_u64().unwrap()
}

/// `names` joined, each with `workers` echo workers, and each listing all of them.
fn cluster_of(redis: &RedisServer, cluster: &str, names: &[&str], extra: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|name| Node::joined(&redis.url(), cluster, name, extra))
        .collect();
    for node in &mut nodes {
        node.nodes_until(secs(10), "every node listed", |listed| {
            names.iter().all(|n| listed.contains_key(*n)) && listed.len() == names.len()
        });
    }
    nodes
}

#[test]
fn three_nodes_see_each_other_with_their_groups_and_pids() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let names = ["a", "b", "c"];
    let mut nodes = cluster_of(&redis, "three", &names, &["--workers", "2"]);
    // What each node says of itself.
    let own: BTreeMap<String, Value> = nodes
        .iter_mut()
        .map(|node| {
            let name = node.name.clone();
            let me = node.nodes()[&name].clone();
            (name, me)
        })
        .collect();
    for node in &mut nodes {
        assert_eq!(
            node.nodes(),
            own,
            "node {} lists the others as they are",
            node.name
        );
        // Each printed the other two as joined, once each, with their workers.
        let events = node.events(0, "joined");
        let joined: BTreeMap<String, Value> = events
            .iter()
            .map(|e| {
                (
                    e["info"]["node"].as_str().unwrap().to_owned(),
                    e["info"].clone(),
                )
            })
            .collect();
        assert_eq!(
            events.len(),
            joined.len(),
            "one Joined per node: {events:?}"
        );
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != node.name).collect();
        assert_eq!(
            joined.keys().map(String::as_str).collect::<Vec<_>>(),
            others
        );
        for (name, info) in &joined {
            assert_eq!(info, &own[name], "joined carries the node's workers");
        }
    }
    for (name, me) in &own {
        let pids = me["groups"]["workers"].as_array().unwrap();
        assert_eq!(pids.len(), 2, "node {name}: {me}");
        for pid in pids {
            assert!(
                common::is_alive(pid.as_u64().unwrap() as u32),
                "{name}: {pid}"
            );
        }
        assert_eq!(me["host"], own["a"]["host"]);
    }
    let master_pids: Vec<u64> = own.values().map(|me| me["pid"].as_u64().unwrap()).collect();
    assert_eq!(
        master_pids,
        nodes.iter().map(|n| u64::from(n.pid())).collect::<Vec<_>>()
    );
    let epochs: Vec<u64> = own.values().map(epoch).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs grow by join: {epochs:?}"
    );
}

#[test]
fn a_sigkilled_master_is_left_within_3_5_s() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = cluster_of(&redis, "kill", &["a", "b", "c"], &["--workers", "1"]);
    let marks: Vec<usize> = nodes.iter_mut().map(Node::mark).collect();
    let mut c = nodes.pop().unwrap();
    let c_epoch = epoch(&c.nodes()["c"]);
    // How long c's key has left when it dies: the others must see it gone about then.
    let pttl = match redis.run(&["PTTL", "procactor:{kill}:node:c"]) {
        redis::Value::Int(ms) => Duration::from_millis(ms.max(0) as u64),
        other => panic!("c's key: {other:?}"),
    };
    let killed = Instant::now();
    c.signal(Signal::SIGKILL);
    c.wait_exit(secs(5));
    for (node, mark) in nodes.iter_mut().zip(marks) {
        let (at, left) = node.event(mark, secs(10), "left", |e| e["node"] == "c");
        let took = at - killed;
        eprintln!("node {} saw c gone {took:?} after its SIGKILL", node.name);
        assert_eq!(left["reason"], "Expired", "{left}");
        assert_eq!(left["epoch"], c_epoch);
        // Its key lives node_timeout (3 s) after its last beat, at most a heartbeat (1 s) before
        // the kill; a reader looks just after it expires (a round trip, and the scheduling of a
        // loaded machine: 1 s of slack).
        assert!(
            took + Duration::from_millis(100) >= pttl && took <= pttl + Duration::from_millis(1000),
            "node {} saw c gone {took:?} after the SIGKILL, its key had {pttl:?} left",
            node.name
        );
        assert!(pttl <= Duration::from_millis(3000), "{pttl:?}");
        let listed = node.nodes();
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}

#[test]
fn a_clean_stop_is_left_stopped_at_the_next_beat() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = cluster_of(&redis, "stop", &["a", "b"], &["--workers", "1"]);
    let mut b = nodes.pop().unwrap();
    let a = &mut nodes[0];
    let mark = a.mark();
    let stopped = Instant::now();
    b.signal(Signal::SIGTERM);
    let (at, left) = a.event(mark, secs(10), "left", |e| e["node"] == "b");
    assert_eq!(left["reason"], "Stopped", "{left}");
    assert!(
        at - stopped < Duration::from_millis(2500),
        "seen {:?} after SIGTERM: sooner than its key could expire",
        at - stopped
    );
    assert!(b.wait_exit(secs(20)).success());
    assert_eq!(
        redis.run(&["EXISTS", "procactor:{stop}:node:b"]),
        redis::Value::Int(0)
    );
    assert_eq!(
        redis.run(&["ZSCORE", "procactor:{stop}:nodes", "b"]),
        redis::Value::Nil
    );
    assert_eq!(a.nodes().keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn redis_restarted_nodes_serve_locally_meanwhile_and_rejoin_with_new_epochs() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let names = ["a", "b", "c"];
    let mut nodes = cluster_of(&redis, "restart", &names, &["--workers", "1"]);
    let before: BTreeMap<String, u64> = nodes[0]
        .nodes()
        .iter()
        .map(|(n, e)| (n.clone(), epoch(e)))
        .collect();
    let marks: Vec<usize> = nodes.iter_mut().map(Node::mark).collect();
    redis.stop();
    for (node, &mark) in nodes.iter_mut().zip(&marks) {
        node.event(mark, secs(10), "disconnected", |_| true);
        // Local calls never fail, however long Redis is away.
        for _ in 0..3 {
            node.call();
        }
        node.stats_until(secs(10), "two failed beats", |s| {
            s["beat_failures"].as_u64().unwrap() >= 2 && s["connected"] == false
        });
        assert_eq!(
            node.events(mark, "left").len(),
            0,
            "a node does not drop others while it cannot read"
        );
    }
    redis.restart();
    // Within 5 s of Redis's return, every node lists the three again, with new epochs.
    let deadline = Instant::now() + secs(5);
    for (node, &mark) in nodes.iter_mut().zip(&marks) {
        let name = node.name.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, rejoined) = node.event(mark, left, "rejoined", |_| true);
        assert!(epoch(&rejoined) > before[&name], "{rejoined}");
        let left = deadline.saturating_duration_since(Instant::now());
        let listed = node.nodes_until(left, "the three with new epochs", |listed| {
            listed.len() == 3 && listed.iter().all(|(n, e)| epoch(e) > before[n])
        });
        assert_eq!(listed.keys().map(String::as_str).collect::<Vec<_>>(), names);
        node.call();
        let stats = node.stats();
        assert_eq!(
            (stats["rejoins"].as_u64(), &stats["connected"]),
            (Some(1), &Value::Bool(true))
        );
    }
}

#[test]
fn redis_hung_briefly_nodes_reconnect_with_the_same_epochs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let timing = [
        "--workers",
        "1",
        "--heartbeat-ms",
        "500",
        "--node-timeout-ms",
        "5000",
    ];
    let mut nodes = cluster_of(&redis, "hang", &["a", "b"], &timing);
    let before: BTreeMap<String, u64> = nodes[0]
        .nodes()
        .iter()
        .map(|(n, e)| (n.clone(), epoch(e)))
        .collect();
    let marks: Vec<usize> = nodes.iter_mut().map(Node::mark).collect();
    redis.pause(true);
    for (node, &mark) in nodes.iter_mut().zip(&marks) {
        node.event(mark, secs(5), "disconnected", |_| true);
        node.call();
    }
    redis.pause(false);
    for (node, &mark) in nodes.iter_mut().zip(&marks) {
        let name = node.name.clone();
        let (_, back) = node.event(mark, secs(5), "reconnected", |_| true);
        assert_eq!(epoch(&back), before[&name], "the same node: {back}");
        assert!(node.events(mark, "rejoined").is_empty());
        assert!(node.events(mark, "left").is_empty());
        let listed = node.nodes();
        let epochs: BTreeMap<String, u64> =
            listed.iter().map(|(n, e)| (n.clone(), epoch(e))).collect();
        assert_eq!(epochs, before);
        assert_eq!(node.stats()["rejoins"], 0);
    }
}

#[test]
fn a_duplicate_node_name_is_refused_and_a_dead_masters_name_is_taken_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut a = Node::joined(&redis.url(), "dup", "a", &["--workers", "1"]);
    let first = epoch(&a.nodes()["a"]);
    // An observer, to see a's restart as the others do.
    let mut o = Node::joined(&redis.url(), "dup", "o", &["--workers", "1"]);
    let mark = a.mark();
    let mut twin = Node::start(&redis.url(), "dup", "a", &["--workers", "1"]);
    let (_, error) = twin.find(0, secs(20), "a refusal", |l| l.starts_with("error"));
    assert!(
        error.contains("held") && error.contains(&a.pid().to_string()),
        "{error}"
    );
    assert_eq!(twin.wait_exit(secs(20)).code(), Some(2));
    // The live one is untouched.
    assert_eq!(epoch(&a.nodes()["a"]), first);
    assert_eq!(a.stats()["rejoins"], 0);
    assert!(a.events(mark, "rejoined").is_empty());
    // Killed, and started again at once under the same name: its key is waited out.
    let seen = o.mark();
    a.signal(Signal::SIGKILL);
    a.wait_exit(secs(5));
    let restarted = Instant::now();
    let mut again = Node::joined(&redis.url(), "dup", "a", &["--workers", "1"]);
    assert!(
        restarted.elapsed() < secs(3) + secs(10),
        "{:?}",
        restarted.elapsed()
    );
    assert!(epoch(&again.nodes()["a"]) > first);
    // The observer saw the old boot leave, then the new one join once, with its workers (it
    // is not listed before they are ready).
    let (_, left) = o.event(seen, secs(15), "left", |e| e["node"] == "a");
    assert_eq!(left["epoch"], first);
    let (_, joined) = o.event(seen, secs(15), "joined", |e| e["info"]["node"] == "a");
    assert!(epoch(&joined["info"]) > first, "{joined}");
    let workers = joined["info"]["groups"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "joined with its workers: {joined}");
    let joins = o.events(seen, "joined");
    assert_eq!(joins.len(), 1, "{joins:?}");
}

#[test]
fn garbage_under_the_clusters_keys_is_skipped_and_counted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = cluster_of(&redis, "junk", &["a", "b"], &["--workers", "1"]);
    let now = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    redis.run(&["SET", "procactor:{junk}:node:x", "1"]);
    redis.run(&["ZADD", "procactor:{junk}:nodes", &now, "x"]);
    redis.run(&[
        "HSET",
        "procactor:{junk}:node:y",
        "v",
        "1",
        "epoch",
        "nope",
        "groups",
        "{",
    ]);
    redis.run(&["ZADD", "procactor:{junk}:nodes", &now, "y"]);
    redis.run(&["ZADD", "procactor:{junk}:nodes", "0", "z"]);
    // Scored far in the future, with no key: pruned too (no beat of ours writes that).
    redis.run(&["ZADD", "procactor:{junk}:nodes", "99999999999999", "w"]);
    for node in &mut nodes {
        node.stats_until(secs(10), "x and y counted", |s| {
            s["bad_entries"].as_u64() >= Some(2)
        });
        assert_eq!(node.nodes().keys().collect::<Vec<_>>(), ["a", "b"]);
        node.call();
    }
    // A member long gone with no key is pruned; the bad ones are left as they are.
    assert!(
        common::wait_until(secs(30), || {
            redis.run(&["ZSCORE", "procactor:{junk}:nodes", "z"]) == redis::Value::Nil
                && redis.run(&["ZSCORE", "procactor:{junk}:nodes", "w"]) == redis::Value::Nil
        }),
        "the member long gone was pruned"
    );
    let counted = |nodes: &mut Vec<Node>| -> u64 {
        nodes
            .iter_mut()
            .map(|n| n.stats()["bad_entries"].as_u64().unwrap())
            .sum()
    };
    // Counted once each, not at every beat.
    let before = counted(&mut nodes);
    for node in &mut nodes {
        let beats = node.stats()["beats"].as_u64().unwrap();
        node.stats_until(secs(10), "two more beats", |s| {
            s["beats"].as_u64() >= Some(beats + 2)
        });
    }
    assert_eq!(counted(&mut nodes), before);
    // The index itself replaced by a string: made anew, and the nodes list each other again.
    redis.run(&["DEL", "procactor:{junk}:nodes"]);
    redis.run(&["SET", "procactor:{junk}:nodes", "garbage"]);
    assert!(common::wait_until(secs(10), || counted(&mut nodes) > before));
    for node in &mut nodes {
        node.nodes_until(secs(10), "both listed again", |l| l.len() == 2);
    }
    assert_eq!(
        redis.run(&["TYPE", "procactor:{junk}:nodes"]),
        redis::Value::SimpleString("zset".into())
    );
    // This node's own key overwritten: it joins again with a new epoch.
    let a = &mut nodes[0];
    let old = epoch(&a.nodes()["a"]);
    let mark = a.mark();
    redis.run(&["SET", "procactor:{junk}:node:a", "junk"]);
    let (_, rejoined) = a.event(mark, secs(10), "rejoined", |_| true);
    assert!(epoch(&rejoined) > old);
    assert_eq!(a.stats()["rejoins"], 1);
    let new = epoch(&rejoined);
    nodes[1].nodes_until(secs(10), "a with its new epoch", |l| {
        l.get("a").is_some_and(|e| epoch(e) == new)
    });
    for node in &mut nodes {
        node.call();
    }
}

#[test]
fn an_acl_user_limited_to_the_clusters_keys_is_enough() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The list the README and the backend's docs give.
    let commands = "+evalsha +eval +script|load +ping +time +type +get +set +del +exists +incr \
                    +incrby +mget +persist +pexpire +pttl +scan +hget +hmget +hset +hgetall \
                    +zadd +zrange +zrem +publish +subscribe";
    let mut acl = vec![
        "ACL",
        "SETUSER",
        "shop",
        "on",
        ">s3cret",
        "resetchannels",
        "~procactor:{shop}:*",
        "&procactor:{shop}:*",
        "-@all",
    ];
    acl.extend(commands.split_whitespace());
    redis.run(&acl);
    let mut other = vec![
        "ACL",
        "SETUSER",
        "other",
        "on",
        ">pw",
        "resetchannels",
        "~procactor:{other}:*",
        "&procactor:{other}:*",
        "-@all",
    ];
    other.extend(commands.split_whitespace());
    redis.run(&other);
    let port = redis.port();
    let shop = format!("redis://shop:s3cret@127.0.0.1:{port}/0");
    let mut a = Node::joined(&shop, "shop", "a", &["--workers", "1"]);
    let mut b = Node::joined(&redis.url(), "shop", "b", &["--workers", "1"]);
    a.nodes_until(secs(10), "both", |l| l.len() == 2);
    b.nodes_until(secs(10), "both", |l| l.len() == 2);
    // Under that user: messages both ways, the cluster-wide cache, its events and locks.
    let mut pair = [a, b];
    all_subscribed(&mut pair, &["a", "b"]);
    let [mut a, mut b] = pair;
    assert_eq!(b.reply("cache-sub acl", "cache-sub")["cache-sub"], "ok");
    assert_eq!(a.reply("cache-set acl k 7", "cache-set")["cache-set"], "ok");
    assert_eq!(b.reply("cache-get acl k", "cache-get")["cache-get"], 7);
    b.find(0, secs(10), "the change's event", |l| {
        l.contains("\"event\":\"cache\"")
    });
    let answer = a.reply("cache-lock-loop l 3 2000", "cache-lock-loop");
    assert_eq!(answer["cache-lock-loop"], "ok", "{answer}");
    // A user of another cluster is refused by Redis: the start fails, saying why.
    let wrong = format!("redis://other:pw@127.0.0.1:{port}/0");
    let mut c = Node::start(&wrong, "shop", "c", &["--workers", "1"]);
    let (_, error) = c.find(0, secs(20), "a refusal", |l| l.starts_with("error"));
    assert!(error.to_lowercase().contains("perm"), "{error}");
    assert_eq!(c.wait_exit(secs(20)).code(), Some(2));
    let wrong_password = format!("redis://shop:nope@127.0.0.1:{port}/0");
    let mut d = Node::start(&wrong_password, "shop", "d", &["--workers", "1"]);
    d.find(0, secs(20), "a refusal", |l| l.starts_with("error"));
    assert_eq!(d.wait_exit(secs(20)).code(), Some(2));
}

#[test]
fn a_node_started_while_redis_is_down_runs_locally_and_joins_when_it_is_up() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.stop();
    let mut a = Node::start(&redis.url(), "late", "a", &["--workers", "1"]);
    a.find(0, secs(30), "a local start", |l| {
        l == "started late unjoined"
    });
    a.event(0, secs(5), "disconnected", |_| true);
    a.call();
    assert!(a.nodes().is_empty());
    assert_eq!(a.stats()["connected"], false);
    redis.restart();
    let (_, joined) = a.event(0, secs(10), "rejoined", |_| true);
    assert_eq!(joined["node"], "a");
    let listed = a.nodes_until(secs(5), "itself", |l| l.len() == 1);
    assert_eq!(epoch(&listed["a"]), epoch(&joined));
    let mut b = Node::joined(&redis.url(), "late", "b", &["--workers", "1"]);
    b.nodes_until(secs(10), "both", |l| l.len() == 2);
    a.call();
}

#[test]
fn nodes_join_over_tls() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    // The node trusts the test's CA (rustls-native-certs reads SSL_CERT_FILE).
    let ca = [("SSL_CERT_FILE", redis.tls_ca().unwrap())];
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let start = |name: &str| {
        let mut node = Node::start_env(&url, "tls", name, &["--workers", "1"], &ca);
        let joined = format!("joined tls as {name}");
        node.find(0, secs(30), &joined, |l| l == joined);
        node
    };
    let mut a = start("a");
    let mut b = start("b");
    for node in [&mut a, &mut b] {
        node.nodes_until(secs(10), "both", |l| l.len() == 2);
    }
    // Without the CA, the server's certificate is refused: the start fails, saying so.
    let mut c = Node::start(&url, "tls", "c", &["--workers", "1"]);
    let (_, error) = c.find(0, secs(20), "a refusal", |l| l.starts_with("error"));
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(c.wait_exit(secs(20)).code(), Some(2));
}

/// A Redis that accepts connections and never answers (blackholed) holds the start at most
/// about one heartbeat: the join waits that long, and the announce beat is not waited for.
/// With a 3 s heartbeat the start takes under 5 s (the heartbeat, plus 2 s for one worker to
/// start on a loaded machine; it took two heartbeats and more, over 6 s, when the announce
/// beat was waited for as well), and a local call is then answered within 2 s.
#[test]
fn a_blackholed_redis_delays_the_start_by_one_heartbeat_at_most() {
    let hole = Blackhole::start();
    let timings = ["--heartbeat-ms", "3000", "--node-timeout-ms", "9000"];
    let extra = [&["--workers", "1"][..], &timings].concat();
    let mut a = Node::start(&hole.url(), "hole", "a", &extra);
    let (_, line) = a.find(0, secs(30), "the start's duration", |l| {
        l.contains("start_ms")
    });
    let start_ms = serde_json::from_str::<Value>(&line).unwrap()["start_ms"]
        .as_u64()
        .unwrap();
    a.find(0, secs(5), "a local start", |l| {
        l == "started hole unjoined"
    });
    assert!(start_ms < 5_000, "the start took {start_ms} ms");
    assert!(hole.accepted() >= 1, "the node never connected");
    a.event(0, secs(5), "disconnected", |_| true);
    let asked = Instant::now();
    a.call();
    assert!(
        asked.elapsed() < secs(2),
        "a local call took {:?}",
        asked.elapsed()
    );
    assert!(a.nodes().is_empty());
}

#[test]
fn workers_ask_and_tell_workers_on_other_nodes_and_fail_fast_with_typed_errors() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut nodes = cluster_of(&redis, "cross", &["a", "b"], &["--workers", "2"]);
    let pids = |node: &mut Node, name: &str| -> Vec<u64> {
        let listed = node.nodes();
        let groups = listed[name]["groups"].as_object().unwrap().clone();
        groups
            .values()
            .flat_map(|g| g.as_array().unwrap().clone())
            .map(|p| p.as_u64().unwrap())
            .collect()
    };
    let (a_pids, b_pids) = (pids(&mut nodes[0], "a"), pids(&mut nodes[0], "b"));
    // Both ways, typed: the pid is one of the other node's workers.
    let answer = nodes[0].reply("ask b 1", "ask");
    assert_eq!(answer["ask"], "ok", "{answer}");
    assert!(
        b_pids.contains(&answer["pid"].as_u64().unwrap()),
        "{answer}"
    );
    let answer = nodes[1].reply("ask a 0", "ask");
    assert_eq!(answer["ask"], "ok", "{answer}");
    assert!(
        a_pids.contains(&answer["pid"].as_u64().unwrap()),
        "{answer}"
    );
    // This node's own worker by its node's name: the local path.
    let answer = nodes[0].reply("ask a 1", "ask");
    assert!(
        a_pids.contains(&answer["pid"].as_u64().unwrap()),
        "{answer}"
    );
    // A one-way message, and it arrives (once).
    let answer = nodes[0].reply("tell b 0", "tell");
    assert_eq!(answer["tell"], "ok", "{answer}");
    nodes[1].poll(secs(10), "the tell arrived", tells, |t| t == &[1, 0]);
    // The master asks too: another node's worker, and its own by its own name.
    let answer = nodes[0].reply("mask b 0", "mask");
    assert_eq!(answer["mask"], "ok", "{answer}");
    assert!(
        b_pids.contains(&answer["pid"].as_u64().unwrap()),
        "{answer}"
    );
    let answer = nodes[0].reply("mask a 1", "mask");
    assert!(
        a_pids.contains(&answer["pid"].as_u64().unwrap()),
        "{answer}"
    );
    let answer = nodes[0].reply("mask nowhere 0", "mask");
    assert!(
        answer["error"].as_str().unwrap().contains("no node"),
        "{answer}"
    );
    // Typed failures, at once rather than at the timeout (10 s).
    let fast = |answer: &Value, what: &str| {
        assert_eq!(answer["ask"], "error", "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(what), "{answer}");
        assert!(answer["ms"].as_u64().unwrap() < 2_000, "{answer}");
    };
    let before = nodes[0].stats();
    fast(&nodes[0].reply("ask nowhere 0 10000", "ask"), "no node");
    fast(&nodes[0].reply("ask b 9 10000", "ask"), "no worker 9");
    // Counted: two more requests, both failed; frames both ways.
    let after = nodes[0].stats();
    let grew = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    assert_eq!(
        (grew("requests"), grew("requests_failed")),
        (2, 2),
        "{after}"
    );
    assert!(after["frames_sent"].as_u64().unwrap() >= 4, "{after}");
    assert!(after["frames_received"].as_u64().unwrap() >= 3, "{after}");
    // Redis stopped: cross-node calls fail fast, local calls go on.
    let mark = nodes[0].mark();
    redis.stop();
    nodes[0].event(mark, secs(10), "disconnected", |_| true);
    fast(&nodes[0].reply("ask b 1 10000", "ask"), "unavailable");
    nodes[0].call();
    redis.restart();
    // Back within 5 s of Redis's return (both nodes rejoin, with new epochs); meanwhile each
    // ask fails fast with a typed error, never at its timeout.
    let deadline = Instant::now() + secs(5);
    loop {
        let answer = nodes[0].reply("ask b 1 3000", "ask");
        if answer["ask"] == "ok" {
            break;
        }
        assert!(answer["ms"].as_u64().unwrap() < 2_000, "{answer}");
        assert!(Instant::now() < deadline, "still failing: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A node that stopped: refused fast once it is gone.
    nodes[1].signal(Signal::SIGTERM);
    nodes[1].wait_exit(secs(20));
    let deadline = Instant::now() + secs(10);
    loop {
        let answer = nodes[0].reply("ask b 1 10000", "ask");
        assert_eq!(answer["ask"], "error", "{answer}");
        let error = answer["error"].as_str().unwrap();
        if error.contains("no node") {
            break;
        }
        assert!(error.contains("gone"), "{answer}");
        assert!(answer["ms"].as_u64().unwrap() < 2_000, "{answer}");
        assert!(Instant::now() < deadline, "{answer}");
    }
}

/// Each local worker's count of one-way messages received.
fn tells(node: &mut Node) -> Vec<u64> {
    let answer = node.ask("tells");
    let counts = answer["tells"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    counts.iter().map(|c| c.as_u64().unwrap()).collect()
}

/// Every node's inbox and the cluster's channel are subscribed: an ask from each node to the
/// next is answered (one subscription holds both channels).
fn all_subscribed(nodes: &mut [Node], names: &[&str]) {
    for i in 0..nodes.len() {
        let other = names[(i + 1) % names.len()];
        let deadline = Instant::now() + secs(10);
        loop {
            let answer = nodes[i].reply(&format!("ask {other} 0 2000"), "ask");
            if answer["ask"] == "ok" {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn broadcasts_publishes_and_confirmations_reach_every_node_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let names = ["a", "b", "c"];
    let mut nodes = cluster_of(&redis, "fan", &names, &["--workers", "2"]);
    all_subscribed(&mut nodes, &names);
    // Every worker of every node, once: the master's broadcast counts this node's.
    let answer = nodes[0].ask("broadcast");
    assert_eq!(answer["broadcast"], 2, "{answer}");
    for node in nodes.iter_mut() {
        node.poll(secs(10), "the broadcast arrived", tells, |t| t == &[1, 1]);
    }
    // A worker's broadcast: every worker but itself, on every node.
    assert_eq!(nodes[1].ask("wbroadcast")["wbroadcast"], "ok");
    let expected = [[2, 2], [1, 2], [2, 2]];
    for (node, want) in nodes.iter_mut().zip(expected) {
        node.poll(secs(10), "the worker's broadcast arrived", tells, |t| {
            t == &want
        });
    }
    // A group publish, from the master and from a worker, to the members on every node.
    let group = nodes[0].nodes()["a"]["groups"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let answer = nodes[2].reply(&format!("publish {group}"), "publish");
    assert_eq!(answer["publish"], 2, "{answer}");
    assert_eq!(
        nodes[0].reply(&format!("wpublish {group}"), "wpublish")["wpublish"],
        "ok"
    );
    let expected = [[3, 4], [3, 4], [4, 4]];
    for (node, want) in nodes.iter_mut().zip(expected) {
        node.poll(secs(10), "the publishes arrived", tells, |t| t == &want);
    }
    // Nothing arrived twice: a last round trip through every inbox, and the counts hold.
    all_subscribed(&mut nodes, &names);
    for (node, want) in nodes.iter_mut().zip(expected) {
        assert_eq!(tells(node), want, "node {}", node.name);
    }
    // Confirmations count across nodes: six workers on three nodes complete a round of 6 on
    // node a and on node c; a's round lists its own two and four of other nodes.
    assert_eq!(nodes[0].reply("rounds ready 6", "rounds")["rounds"], "ok");
    assert_eq!(nodes[2].reply("rounds ready 6", "rounds")["rounds"], "ok");
    for node in nodes.iter_mut() {
        for worker in 0..2 {
            let answer = node.reply(&format!("confirm {worker} ready"), "confirm");
            assert_eq!(answer["confirm"], "ok", "{answer}");
        }
    }
    for i in [0, 2] {
        let node = &mut nodes[i];
        let (_, round) = node.find(0, secs(10), "a round of 6", |l| l.contains("\"round\""));
        let round: Value = serde_json::from_str(&round).unwrap();
        let peers: Vec<&str> = round["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(peers.len(), 6, "node {i}: {round}");
        let local = peers.iter().filter(|p| p.starts_with('w')).count();
        assert_eq!(
            local, 2,
            "node {i}: its own two workers and four remote: {round}"
        );
    }
}

#[test]
fn a_node_cut_off_from_redis_is_dropped_and_rejoins_with_a_new_epoch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = CutProxy::start(redis.port());
    let mut a = Node::joined(&redis.url(), "cut", "a", &["--workers", "1"]);
    let b = Node::joined(&proxy.url(), "cut", "b", &["--workers", "1"]);
    let listed = a.nodes_until(secs(10), "both", |l| l.len() == 2);
    let old = epoch(&listed["b"]);
    let mut pair = [a, b];
    all_subscribed(&mut pair, &["a", "b"]);
    let [mut a, mut b] = pair;
    // Cut off for longer than its key lives: the others drop it, it keeps serving locally.
    let (mark_a, mark_b) = (a.mark(), b.mark());
    proxy.cut();
    b.event(mark_b, secs(10), "disconnected", |_| true);
    let fast = |answer: &Value| {
        assert_eq!(answer["ask"], "error", "{answer}");
        assert!(answer["ms"].as_u64().unwrap() < 2_000, "{answer}");
    };
    fast(&b.reply("ask a 0 10000", "ask"));
    b.call();
    a.event(mark_a, secs(10), "left", |e| {
        e["node"] == "b" && epoch(e) == old
    });
    fast(&a.reply("ask b 0 10000", "ask"));
    // Back: it joins again with a new epoch, and messages flow both ways again.
    let mark_b = b.mark();
    proxy.restore();
    let (_, rejoined) = b.event(mark_b, secs(15), "rejoined", |_| true);
    let new = epoch(&rejoined);
    assert!(new > old, "a new epoch: {new} after {old}");
    a.nodes_until(secs(10), "b's new epoch", |l| {
        l.get("b").is_some_and(|b| epoch(b) == new)
    });
    let mut pair = [a, b];
    all_subscribed(&mut pair, &["a", "b"]);
}

#[test]
fn connections_killed_by_redis_are_made_again_and_messages_flow() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let names = ["a", "b"];
    let mut nodes = cluster_of(&redis, "killed", &names, &["--workers", "1"]);
    all_subscribed(&mut nodes, &names);
    let epochs: Vec<u64> = {
        let listed = nodes[0].nodes();
        names.iter().map(|n| epoch(&listed[*n])).collect()
    };
    // Every client connection, the subscriptions included, killed by Redis (CLIENT KILL).
    redis.run(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    redis.run(&["CLIENT", "KILL", "TYPE", "normal"]);
    // Local calls never fail; asks both ways work again once the nodes have reconnected.
    nodes[0].call();
    nodes[1].call();
    all_subscribed(&mut nodes, &names);
    let stats = nodes[0].stats();
    assert_eq!(stats["connected"], true, "{stats}");
    // The same nodes: their keys outlived a reconnection.
    let listed = nodes[1].nodes();
    let now: Vec<u64> = names.iter().map(|n| epoch(&listed[*n])).collect();
    assert_eq!(now, epochs);
}

/// The connections that publish (and beat) killed by Redis, the subscriptions kept: each
/// node finds its publishing connection lost only when it next publishes — an ask, or an
/// answer. The ask fails fast or is answered; an answer is sent again on a new connection
/// rather than lost, so no ask waits for its timeout, both ways, and all answer within 5 s.
#[test]
fn publishing_connections_killed_alone_lose_no_answer() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let names = ["a", "b"];
    let mut nodes = cluster_of(&redis, "killed-publish", &names, &["--workers", "1"]);
    all_subscribed(&mut nodes, &names);
    for (asker, other) in [(0, "b"), (1, "a")] {
        redis.run(&["CLIENT", "KILL", "TYPE", "normal"]);
        let deadline = Instant::now() + secs(5);
        loop {
            let answer = nodes[asker].reply(&format!("ask {other} 0 3000"), "ask");
            if answer["ask"] == "ok" {
                break;
            }
            assert!(answer["ms"].as_u64().unwrap() < 2_000, "{answer}");
            assert!(Instant::now() < deadline, "still failing: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Over TLS the inbox subscription and the publishes stay on the Redis thread (its TLS
/// connections read the root certificates, which blocks): asks go both ways there too.
#[test]
fn workers_ask_workers_on_other_nodes_over_tls() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let ca = [("SSL_CERT_FILE", redis.tls_ca().unwrap())];
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let names = ["a", "b"];
    let mut nodes: Vec<Node> = names
        .iter()
        .map(|name| {
            let mut node = Node::start_env(&url, "tls-ask", name, &["--workers", "1"], &ca);
            let joined = format!("joined tls-ask as {name}");
            node.find(0, secs(30), &joined, |l| l == joined);
            node
        })
        .collect();
    for node in &mut nodes {
        node.nodes_until(secs(10), "both", |l| l.len() == 2);
    }
    all_subscribed(&mut nodes, &names);
    let answer = nodes[0].reply("tell b 0", "tell");
    assert_eq!(answer["tell"], "ok", "{answer}");
    nodes[1].poll(secs(10), "the tell arrived", tells, |t| t == &[1]);
}
