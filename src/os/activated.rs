//! The exec of a worker that receives listening sockets (socket activation, `sd_listen_fds(3)`).
//!
//! `LISTEN_PID` must hold the worker's own pid, which exists only after the fork, and nothing
//! may be allocated between fork and exec. So the whole environment and argument vector are
//! built before the fork, with room for the pid's digits, and the child fills them in, moves the
//! sockets to fds 3, 4, … changes to its working directory (`chdir(2)`, the path also prepared
//! before the fork) and calls `execve(2)` itself.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::{tree, SpawnSpec};

/// The prepared exec; see the module doc.
pub(super) struct ActivatedExec {
    program: CString,
    /// The directory to change to before the exec, if any.
    cwd: Option<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for 20 digits and a NUL; pointed to from `envp_ptrs`.
    listen_pid: Box<[u8; 32]>,
    sources: Vec<OwnedFd>,
    moved: Vec<RawFd>,
}

// SAFETY: the raw pointers point into CStrings and a box owned by the same value; they are only
// read, in the child, by execve.
unsafe impl Send for ActivatedExec {}
// SAFETY: as above; `run` takes `&mut self`.
unsafe impl Sync for ActivatedExec {}

impl ActivatedExec {
    const LISTEN_PID: &'static [u8] = b"LISTEN_PID=";

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
        let mut listen_pid = Box::new([0u8; 32]);
        listen_pid[..Self::LISTEN_PID.len()].copy_from_slice(Self::LISTEN_PID);
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain([listen_pid.as_ptr().cast(), std::ptr::null()])
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
            listen_pid,
            moved: vec![-1; sources.len()],
            sources,
        })
    }

    /// In the child: place the sockets, change directory, write `LISTEN_PID`, exec. Returns
    /// only on failure.
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
        write_decimal(&mut self.listen_pid[Self::LISTEN_PID.len()..], pid);
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

/// The environment std would pass: ours, overridden by the spec's, without `LISTEN_*`; then the
/// child's tree token list (see `tree`), the spec's `LISTEN_FDS` and `LISTEN_FDNAMES`
/// (`LISTEN_PID` is added in the child).
fn environment(spec: &SpawnSpec) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !spec.env.iter().any(|(sk, _)| sk == k))
        .chain(spec.env.iter().cloned())
        .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_") && k != tree::VAR)
        .collect();
    env.push((tree::VAR.into(), spec.tree.env_value()));
    let names: Vec<&str> = spec.listeners.iter().map(|(n, _)| n.as_str()).collect();
    env.push(("LISTEN_FDS".into(), spec.listeners.len().to_string().into()));
    env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    env
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
    use super::write_decimal;

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
