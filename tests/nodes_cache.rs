//! The cluster-wide cache on Redis: three masters as separate processes (`procactor-node`)
//! stand for three hosts, on a real `redis-server`. A value set on one node is read and
//! notified on the others, TTLs are kept by Redis, increments from every node add up, a lock
//! contended from every node hands out increasing fencing tokens and protects a counter
//! exactly, a SIGKILLed holder's lock frees within about a lease, and with Redis stopped the
//! cache fails fast with `Unavailable` while the node keeps serving, and works again after.
//! Every process is ended by its pid.

mod common;

use std::time::{Duration, Instant};

use common::node::Node;
use common::redis::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Polls `check` until it holds or `timeout` passes.
fn until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_cache_across_three_nodes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::joined(&url, "shop", n, &["--workers", "1"]))
        .collect();

    // A value set on one node: read on the others, and its subscribers there notified.
    let marks: Vec<usize> = nodes[1..]
        .iter_mut()
        .map(|n| {
            n.ok("cache-sub s");
            n.mark()
        })
        .collect();
    nodes[0].ok("cache-set s k1 42");
    for (node, from) in nodes[1..].iter_mut().zip(marks) {
        assert_eq!(node.ok("cache-get s k1"), 42);
        node.find(from, Duration::from_secs(10), "the set's event", |l| {
            l.contains(r#""event":"cache""#) && l.contains(r#""key":"k1""#) && l.contains("42")
        });
    }
    assert_eq!(
        redis.run(&["EXISTS", "procactor:{shop}:cache:s:k1"]),
        ::redis::Value::Int(1)
    );

    // A TTL kept by Redis.
    nodes[1].ok("cache-set s short 1 300");
    assert_eq!(nodes[2].ok("cache-get s short"), 1);
    until(Duration::from_secs(5), "the key's expiry", || {
        nodes[2].ok("cache-get s short").is_null()
    });

    // Increments from every node add up.
    let froms: Vec<usize> = nodes
        .iter_mut()
        .map(|n| n.send("cache-incr c hits 100"))
        .collect();
    for (node, from) in nodes.iter_mut().zip(froms) {
        let answer = node.answer(from, "cache-incr", Duration::from_secs(30));
        assert!(answer["cache-incr"].is_i64(), "{answer}");
    }
    assert_eq!(nodes[0].ok("cache-get c hits"), 300);

    // A lock contended from every node: tokens grow, the counter it protects is exact.
    let began = Instant::now();
    let froms: Vec<usize> = nodes
        .iter_mut()
        .map(|n| n.send("cache-lock-loop guard 300 5000"))
        .collect();
    let mut all = Vec::new();
    for (node, from) in nodes.iter_mut().zip(froms) {
        let answer = node.answer(from, "cache-lock-loop", Duration::from_secs(45));
        assert_eq!(answer["cache-lock-loop"], "ok", "{answer}");
        let tokens: Vec<u64> = answer["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        assert_eq!(tokens.len(), 300);
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "node {}: {tokens:?}",
            node.name
        );
        all.extend(tokens);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 900, "a fencing token was handed out twice");
    assert_eq!(nodes[1].ok("cache-get counters n"), 900);
    eprintln!("3 x 300 locked increments in {:?}", began.elapsed());

    // A node SIGKILLed holding a lock: free elsewhere within about one lease.
    let lease = Duration::from_millis(1500);
    let token = nodes[2].ok(&format!("cache-hold held {}", lease.as_millis()));
    assert!(token.as_u64().unwrap() > *all.last().unwrap());
    let victim = nodes.pop().unwrap();
    kill(Pid::from_raw(victim.pid() as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    drop(victim);
    let answer = nodes[0].ask("cache-try held 10000");
    assert!(answer["cache-try"]["ok"].is_u64(), "{answer}");
    let took = killed.elapsed();
    assert!(
        took <= lease + Duration::from_millis(1500),
        "freed after {took:?}"
    );
}

#[test]
fn redis_down_fails_fast_and_comes_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let mut node = Node::joined(&url, "down", "solo", &["--workers", "1"]);
    node.ok("cache-set s k 7");
    redis.stop();
    let began = Instant::now();
    let answer = node.ask("cache-get s k");
    assert_eq!(answer["cache-get"], "error", "{answer}");
    assert_eq!(answer["kind"], "Unavailable", "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "took {:?}",
        began.elapsed()
    );
    let answer = node.ask("cache-set s k 8");
    assert_eq!(answer["kind"], "Unavailable", "{answer}");
    // The node keeps serving locally.
    let call = node.ask("call");
    assert_eq!(call["call"], "ok", "{call}");
    redis.restart();
    until(Duration::from_secs(10), "the cache back", || {
        node.ask("cache-set s k 9")["cache-set"] == "ok"
    });
    assert_eq!(node.ok("cache-get s k"), 9);
}
