//! The cluster-wide cache on Redis: three masters as separate processes (`procactor-node`)
//! stand for three hosts, on a real `redis-server`. A value set on one node is read and
//! notified on the others, TTLs are kept by Redis, increments from every node add up, a lock
//! contended from every node hands out increasing fencing tokens and protects a counter
//! exactly, a SIGKILLed holder's lock frees within about a lease, and with Redis stopped the
//! cache fails fast with `Unavailable` while the node keeps serving, and works again after.
//! Every process is ended by its pid.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// One `procactor-node` master; its stdout read line by line.
struct Node {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Node {
    fn joined(redis: &str, cluster: &str, name: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_procactor-node"))
            .args(["--redis", redis, "--cluster", cluster, "--node", name])
            .args(["--workers", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn procactor-node");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        let expected = format!("joined {cluster} as {name}");
        node.find(0, Duration::from_secs(30), &expected, |l| l == expected);
        node
    }

    fn mark(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    fn find(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            self.mark();
            if let Some(hit) = self.seen[from.min(self.seen.len())..]
                .iter()
                .find(|l| pred(l))
            {
                return hit.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "node {}: no {what} within {timeout:?}; its output:\n{}",
                self.name,
                self.seen.join("\n")
            );
            if let Ok(line) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen.push(line);
            }
        }
    }

    /// Sends `command`; the mark to find its answer from.
    fn send(&mut self, command: &str) -> usize {
        let from = self.mark();
        writeln!(self.stdin, "{command}").expect("write a command");
        from
    }

    /// The answer keyed by `verb` from `from` on.
    fn answer(&mut self, from: usize, verb: &str, timeout: Duration) -> Value {
        let line = self.find(from, timeout, verb, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.get(verb).is_some())
        });
        serde_json::from_str(&line).unwrap()
    }

    fn ask(&mut self, command: &str) -> Value {
        let verb = command.split_whitespace().next().unwrap().to_owned();
        let from = self.send(command);
        self.answer(from, &verb, Duration::from_secs(20))
    }

    /// A cache command that must succeed: its answer.
    fn ok(&mut self, command: &str) -> Value {
        let verb = command.split_whitespace().next().unwrap().to_owned();
        let answer = self.ask(command);
        assert_ne!(
            answer[&verb], "error",
            "node {} `{command}`: {answer}",
            self.name
        );
        answer[&verb].clone()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

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
        .map(|n| Node::joined(&url, "shop", n))
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
    let mut node = Node::joined(&url, "down", "solo");
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
