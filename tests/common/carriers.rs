//! Processes found by an entry of their environment, as `/proc/<pid>/environ` shows it: how a
//! test sees what is left of a run wherever it went (another process group or session,
//! reparented to init), and a guard that kills it when the test ends, passed or failed.

/// Live processes (neither zombies nor gone) whose environment holds `entry` (`NAME=value`).
pub(crate) fn carriers(entry: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| carries(pid, entry) && super::is_alive(pid))
        .collect()
}

/// Whether `pid`'s environment holds `entry`.
pub(crate) fn carries(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
}

/// The value of `name` in `pid`'s environment.
pub(crate) fn env_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|&b| b == 0).find_map(|e| {
        let value = e.strip_prefix(prefix.as_bytes())?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// On drop, kills (`SIGKILL`, by pid) every live process that carries `entry`, round after round
/// until none is left (at most a few seconds).
pub(crate) struct KillCarriers(pub(crate) String);

impl Drop for KillCarriers {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = carriers(&self.0);
            if left.is_empty() || std::time::Instant::now() > deadline {
                return;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
