//! Helpers for integration tests: deadlines and procfs readings (std only).
#![allow(dead_code)]

pub(crate) mod carriers;
pub(crate) mod cluster;
pub(crate) mod http;
pub(crate) mod node;
pub(crate) mod prometheus;
pub(crate) mod redis;
/// The relay worker of `procactor-relay`, for its message types (a fixture, not library API).
#[path = "../../actors/relay/relay.rs"]
pub(crate) mod relay;

use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// As [`wait_until`], sleeping on the async runtime between polls.
pub(crate) async fn wait_until_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `check` until it holds; panics, naming `what`, after `timeout`.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces and parens):
/// index 0 is the state (field 3 of proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process state letter (`R`, `S`, `Z`, …); `None` when there is no such process.
pub(crate) fn proc_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The process exists and is neither a zombie nor dead.
pub(crate) fn is_alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The process is a zombie (exited, not reaped).
pub(crate) fn is_zombie(pid: u32) -> bool {
    proc_state(pid) == Some('Z')
}

/// The parent pid (field 4).
pub(crate) fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The start time in clock ticks since boot (field 22), to tell a recycled pid apart.
pub(crate) fn starttime(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The children of `pid`, from /proc/<pid>/task/*/children, else by scanning every ppid.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            if let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                if ppid(child) == Some(pid) {
                    out.push(child);
                }
            }
        }
    }
    out
}

/// Open descriptors of `pid`.
pub(crate) fn fd_count(pid: u32) -> usize {
    fds(pid).len()
}

/// Open descriptors of `pid` with what each points at (`pipe:[123]`, a path, …).
pub(crate) fn fds(pid: u32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    out.sort();
    out
}

/// A field of /proc/<pid>/status without its name (e.g. `"VmRSS"` → `"1234 kB"`).
pub(crate) fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_owned())
    })
}

/// Peak resident memory, KiB.
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends SIGKILL to the pid on drop if it is still alive: cleanup for a process a test started.
pub(crate) struct KillOnDrop(pub(crate) u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if is_alive(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
