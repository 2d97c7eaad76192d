//! One `procactor-node` master (the fixture `actors/node.rs`) for the cluster tests: started
//! with arguments, its stdout read line by line on a thread (each line timed on arrival), lines
//! looked for from a mark, commands sent on its stdin and their JSON answers read back.
//!
//! Ended by its pid on drop: SIGKILL, or first SIGTERM with up to 15 s to stop when
//! [`Node::term_on_drop`] asked for it. Never by name.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// One `procactor-node` master, its stdout read line by line (each line timed on arrival).
pub(crate) struct Node {
    pub(crate) name: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
    /// On drop, SIGTERM first and wait up to 15 s before SIGKILL.
    term_on_drop: bool,
}

impl Node {
    /// Started (not waited for) with `extra` arguments.
    pub(crate) fn start(redis: &str, cluster: &str, name: &str, extra: &[&str]) -> Self {
        Self::start_env::<&str>(redis, cluster, name, extra, &[])
    }

    /// As [`start`](Self::start), with variables added to its environment.
    pub(crate) fn start_env<V: AsRef<OsStr>>(
        redis: &str,
        cluster: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, V)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_procactor-node"))
            .args(["--redis", redis, "--cluster", cluster, "--node", name])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
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
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            term_on_drop: false,
        }
    }

    /// Started and joined: its `joined <cluster> as <name>` line, within 30 s.
    pub(crate) fn joined(redis: &str, cluster: &str, name: &str, extra: &[&str]) -> Self {
        Self::start(redis, cluster, name, extra).until_joined(cluster)
    }

    /// Waits up to 30 s for its `joined <cluster> as <name>` line.
    pub(crate) fn until_joined(mut self, cluster: &str) -> Self {
        let expected = format!("joined {cluster} as {}", self.name);
        self.find(0, Duration::from_secs(30), &expected, |l| l == expected);
        self
    }

    /// On drop, SIGTERM first and up to 15 s to stop before SIGKILL (the default is SIGKILL).
    pub(crate) fn term_on_drop(mut self) -> Self {
        self.term_on_drop = true;
        self
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many lines have arrived so far: a mark to look for later lines from.
    pub(crate) fn mark(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    /// The first line from `from` on that `pred` accepts, waiting up to `timeout`; panics,
    /// naming `what` and showing the node's output, if none comes.
    pub(crate) fn find(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        let mut checked = from;
        loop {
            self.mark();
            if let Some(hit) = self.seen[checked.min(self.seen.len())..]
                .iter()
                .find(|(_, l)| pred(l))
            {
                return hit.clone();
            }
            checked = self.seen.len().max(from);
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "node {}: no {what} within {timeout:?}; its output:\n{}",
                self.name,
                self.output()
            );
            if let Ok(line) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.seen.push(line);
            }
        }
    }

    /// Every line read so far, one a line.
    pub(crate) fn output(&self) -> String {
        let lines: Vec<&str> = self.seen.iter().map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }

    /// Sends `command`; the mark to find its answer from.
    pub(crate) fn send(&mut self, command: &str) -> usize {
        let from = self.mark();
        writeln!(self.stdin, "{command}").expect("write a command");
        from
    }

    /// The first JSON line from `from` on with a field `key` (a command's answer), waiting up to
    /// `timeout`.
    pub(crate) fn answer(&mut self, from: usize, key: &str, timeout: Duration) -> Value {
        let (_, line) = self.find(from, timeout, key, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.get(key).is_some())
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Sends a command and returns its JSON answer (keyed by the command's first word), waiting
    /// up to 20 s.
    pub(crate) fn ask(&mut self, command: &str) -> Value {
        self.ask_within(command, Duration::from_secs(20))
    }

    /// As [`ask`](Self::ask), waiting up to `timeout`.
    pub(crate) fn ask_within(&mut self, command: &str, timeout: Duration) -> Value {
        let verb = command.split_whitespace().next().unwrap_or_default();
        let from = self.send(command);
        self.answer(from, verb, timeout)
    }

    /// Sends a command whose answer is keyed `key` and returns that answer, waiting up to 30 s.
    pub(crate) fn reply(&mut self, command: &str, key: &str) -> Value {
        let from = self.send(command);
        self.answer(from, key, Duration::from_secs(30))
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the master");
    }

    /// Waits up to `timeout` for the master to exit; panics if it does not.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node {} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

/// Readings and waits only some of the test files use.
#[allow(dead_code)] // used by some of the test files that include this module
impl Node {
    /// The JSON event lines from `from` on with `"event": kind`.
    pub(crate) fn events(&mut self, from: usize, kind: &str) -> Vec<Value> {
        self.timed_events(from, kind)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// As [`events`](Self::events), each with when it arrived.
    pub(crate) fn timed_events(&mut self, from: usize, kind: &str) -> Vec<(Instant, Value)> {
        self.mark();
        self.seen[from..]
            .iter()
            .filter_map(|(at, l)| Some((*at, serde_json::from_str::<Value>(l).ok()?)))
            .filter(|(_, v)| v["event"] == kind)
            .collect()
    }

    /// Waits for an event of `kind` from `from` on that `pred` accepts.
    pub(crate) fn event(
        &mut self,
        from: usize,
        timeout: Duration,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (Instant, Value) {
        let (at, line) = self.find(from, timeout, kind, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == kind && pred(&v))
        });
        (at, serde_json::from_str(&line).unwrap())
    }

    /// Waits for a rollout event of `kind` from `from` on.
    pub(crate) fn rollout_event(&mut self, from: usize, timeout: Duration, kind: &str) -> Value {
        let (_, line) = self.find(from, timeout, kind, |l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["event"] == "rollout" && v["rollout"]["kind"] == kind)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// A command that must not answer `"error"` (a cache command): its answer's value.
    pub(crate) fn ok(&mut self, command: &str) -> Value {
        let verb = command.split_whitespace().next().unwrap().to_owned();
        let answer = self.ask(command);
        assert_ne!(
            answer[&verb], "error",
            "node {} `{command}`: {answer}",
            self.name
        );
        answer[&verb].clone()
    }

    /// A local `Call` to worker 0 answered: its pid.
    pub(crate) fn call(&mut self) -> u64 {
        let answer = self.ask("call");
        assert_eq!(answer["call"], "ok", "node {}: {answer}", self.name);
        answer["pid"].as_u64().unwrap()
    }

    /// The live nodes this node lists: name → (epoch, host, master pid, groups).
    pub(crate) fn nodes(&mut self) -> BTreeMap<String, Value> {
        let answer = self.ask("nodes");
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_owned(), n.clone()))
            .collect()
    }

    pub(crate) fn stats(&mut self) -> Value {
        self.ask("stats")["stats"].clone()
    }

    /// This node's worker pids, read now.
    pub(crate) fn pids(&mut self) -> BTreeSet<u64> {
        let answer = self.ask("pids");
        answer["pids"]
            .as_array()
            .unwrap_or_else(|| panic!("node {}: {answer}", self.name))
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect()
    }

    /// Polls `stats` (each read waiting up to 10 s) every 100 ms until Redis is seen
    /// unreachable; panics after `timeout`.
    pub(crate) fn disconnected(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.ask_within("stats", Duration::from_secs(10))["stats"]["connected"] != false {
            assert!(
                Instant::now() < deadline,
                "node {} still connected",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls [`nodes`](Self::nodes) until `cond` holds; panics after `timeout`.
    pub(crate) fn nodes_until(
        &mut self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&BTreeMap<String, Value>) -> bool,
    ) -> BTreeMap<String, Value> {
        self.poll(timeout, what, Self::nodes, cond)
    }

    /// Polls [`stats`](Self::stats) until `cond` holds; panics after `timeout`.
    pub(crate) fn stats_until(
        &mut self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        self.poll(timeout, what, Self::stats, cond)
    }

    /// Reads with `read` every 50 ms until `cond` holds of what it read; panics, naming `what`
    /// and the last reading, after `timeout`.
    pub(crate) fn poll<T: std::fmt::Debug>(
        &mut self,
        timeout: Duration,
        what: &str,
        read: impl Fn(&mut Self) -> T,
        cond: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let reading = read(self);
            if cond(&reading) {
                return reading;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {what} not reached within {timeout:?}; last read {reading:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.term_on_drop && self.running() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.running() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
