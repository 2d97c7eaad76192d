//! The exec of a child whose environment holds its own pid: a worker that receives listening
//! sockets (socket activation, `sd_listen_fds(3)`: `LISTEN_PID`), a plain program with
//! systemd's watchdog (`WATCHDOG_PID`, `sd_watchdog_enabled(3)`).
//!
//! The pid exists only after the fork, and nothing may be allocated between fork and exec. So
//! the whole environment and argument vector are built before the fork, with room for the pid's
//! digits, and the child fills them in, moves the sockets to fds 3, 4, … changes to its working
//! directory (`chdir(2)`, the path also prepared before the fork) and calls `execve(2)` itself.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::{notify, tree, SpawnSpec};

/// The prepared exec; see the module doc.
pub(super) struct ActivatedExec {
    program: CString,
    /// The directory to change to before the exec, if any.
    cwd: Option<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Each variable that holds the child's pid: the length of its `NAME=`, and `NAME=`
    /// followed by room for 20 digits and a NUL; pointed to from `envp_ptrs`.
    pid_vars: Vec<(usize, Box<[u8; 64]>)>,
    sources: Vec<OwnedFd>,
    moved: Vec<RawFd>,
}

// SAFETY: the raw pointers point into CStrings and a box owned by the same value; they are only
// read, in the child, by execve.
unsafe impl Send for ActivatedExec {}
// SAFETY: as above; `run` takes `&mut self`.
unsafe impl Sync for ActivatedExec {}

impl ActivatedExec {
    /// Prepares the exec of `spec`, in the parent.
    pub(super) fn new(spec: &SpawnSpec) -> io::Result<Self> {
        let program = c_string(spec.program.as_os_str().as_bytes())?;
        let cwd = match &spec.cwd {
            Some(dir) => Some(c_string(dir.as_os_str().as_bytes())?),
            None => None,
        };
        let mut argv = vec![program.clone()];
        for arg in &spec.args {
            argv.push(c_string(arg.as_bytes())?);
        }
        let mut envp = Vec::new();
        for (k, v) in environment(spec) {
            envp.push(c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        let pid_vars: Vec<_> = pid_names(spec)
            .map(|name| {
                let mut var = Box::new([0u8; 64]);
                var[..name.len()].copy_from_slice(name.as_bytes());
                var[name.len()] = b'=';
                (name.len() + 1, var)
            })
            .collect();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain(pid_vars.iter().map(|(_, var)| var.as_ptr().cast()))
            .chain([std::ptr::null()])
            .collect();
        let sources = spec
            .listeners
            .iter()
            .map(|(_, fd)| fd.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            program,
            cwd,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            pid_vars,
            moved: vec![-1; sources.len()],
            sources,
        })
    }

    /// In the child: place the sockets, change directory, write the pid variables, exec.
    /// Returns only on failure.
    pub(super) fn run(&mut self) -> io::Result<()> {
        self.place_sockets()?;
        if let Some(dir) = &self.cwd {
            // SAFETY: chdir reads a NUL-terminated string owned by `self`, allocated before the
            // fork; it is async-signal-safe.
            if unsafe { libc::chdir(dir.as_ptr()) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() } as u64;
        for (at, var) in &mut self.pid_vars {
            write_decimal(&mut var[*at..], pid);
        }
        // SAFETY: every pointer is a NUL-terminated string owned by `self`, and both arrays end
        // with a null pointer.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    }

    /// Moves the sockets to fds 3, 4, … without close-on-exec (`fcntl(2)`, `dup2(2)`).
    fn place_sockets(&mut self) -> io::Result<()> {
        let above = (3 + self.sources.len() + 16) as RawFd;
        // First move every socket out of the way of fds 3, 4, … (close-on-exec copies) …
        for (i, fd) in self.sources.iter().enumerate() {
            // SAFETY: fcntl on a descriptor we own; F_DUPFD_CLOEXEC returns a new one or -1.
            let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above) };
            if moved < 0 {
                return Err(io::Error::last_os_error());
            }
            self.moved[i] = moved;
        }
        // … then onto them; dup2 leaves the targets without close-on-exec.
        for (i, &moved) in self.moved.iter().enumerate() {
            // SAFETY: both descriptors are valid; the target is replaced atomically.
            if unsafe { libc::dup2(moved, 3 + i as RawFd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The environment std would pass: ours, overridden by the spec's, without `LISTEN_*`, the
/// variables systemd gave the master alone, nor the pid variables; then the child's tree token
/// list (see `tree`), and with sockets the spec's `LISTEN_FDS` and `LISTEN_FDNAMES` (the pid
/// variables are added in the child).
fn environment(spec: &SpawnSpec) -> Vec<(OsString, OsString)> {
    let master_only = |k: &OsString| notify::MASTER_ONLY.iter().any(|m| k == m);
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !spec.env.iter().any(|(sk, _)| sk == k) && !master_only(k))
        .chain(spec.env.iter().cloned())
        .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_") && k != tree::VAR)
        .filter(|(k, _)| !pid_names(spec).any(|name| k == name))
        .collect();
    env.push((tree::VAR.into(), spec.tree.env_value()));
    if !spec.listeners.is_empty() {
        let names: Vec<&str> = spec.listeners.iter().map(|(n, _)| n.as_str()).collect();
        env.push(("LISTEN_FDS".into(), spec.listeners.len().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    }
    env
}

/// The variables that hold the child's own pid: `LISTEN_PID` with sockets, and the spec's.
fn pid_names(spec: &SpawnSpec) -> impl Iterator<Item = &'static str> + '_ {
    let listen = (!spec.listeners.is_empty()).then_some("LISTEN_PID");
    listen.into_iter().chain(spec.pid_vars.iter().copied())
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

/// Writes `n` in decimal followed by a NUL at the start of `out` (at least 21 bytes), without
/// allocating (it runs between fork and exec, and in the keeper); returns the digits' count.
pub(super) fn write_decimal(out: &mut [u8], mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    out[len] = 0;
    len
}

#[cfg(test)]
mod tests {
    use super::{environment, pid_names, write_decimal};
    use crate::os::SpawnSpec;

    #[test]
    fn the_pid_variables_are_left_for_the_child_and_sockets_alone_bring_listen_fds() {
        let mut spec = SpawnSpec::command("/bin/true", &[]);
        spec.pid_vars = vec!["WATCHDOG_PID"];
        spec.env = vec![
            ("WATCHDOG_PID".into(), "1".into()),
            ("NOTIFY_SOCKET".into(), "/run/x/0".into()),
            ("WATCHDOG_USEC".into(), "5000000".into()),
        ];
        let env = environment(&spec);
        let value = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(value("WATCHDOG_PID"), None, "written in the child");
        assert_eq!(value("NOTIFY_SOCKET"), Some("/run/x/0".into()));
        assert_eq!(value("WATCHDOG_USEC"), Some("5000000".into()));
        assert_eq!(value("LISTEN_FDS"), None);
        assert_eq!(pid_names(&spec).collect::<Vec<_>>(), ["WATCHDOG_PID"]);
    }

    #[test]
    fn pids_are_written_in_decimal_with_a_nul() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (4_194_304, "4194304"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = [0xffu8; 21];
            write_decimal(&mut out, n);
            assert_eq!(&out[..text.len()], text.as_bytes());
            assert_eq!(out[text.len()], 0);
        }
    }
}
