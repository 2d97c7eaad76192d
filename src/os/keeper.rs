//! The keeper: a small process that outlives the master to sweep its workers' descendants when
//! the master dies, even by `SIGKILL`.
//!
//! `PR_SET_PDEATHSIG` kills the workers when the master dies, but not their descendants. So the
//! first spawn of a master process also starts a keeper: a copy of the master made by `fork`
//! (no exec), which holds the read end of a pipe whose write end only the master holds. When
//! the master is gone, however it ended, the kernel closes that end, the keeper reads
//! end-of-file, sweeps every process that carries one of this master's tokens (`<nonce>/`, see
//! `tree` and `sweep`) until none is left, and exits.
//!
//! It is forked twice (the middle process exits at once), so it is not the master's child: the
//! master has no extra child to reap or to count, and init (or the nearest subreaper) reaps the
//! keeper. It leads a session of its own, so a signal to the master's process group does not
//! reach it, ignores `SIGINT`, `SIGTERM` and `SIGHUP`, and does not die with its parent (no
//! `PR_SET_PDEATHSIG`). It clears the copy of the master's environment it was born with (through
//! `/proc/self/mem`), so that it carries neither the master's tokens nor anything a scan of
//! `/proc` looks for. Its name is `procactor-keep`.
//!
//! Not a subreaper (`PR_SET_CHILD_SUBREAPER`): that would need the keeper to be an ancestor of
//! the workers, and making the master one would hand orphans to the master as zombies its user
//! does not expect.
//!
//! # Caveats
//! - Every step after `fork` is a system call: no allocation, no lock, buffers on its stack,
//!   everything else prepared before the fork.
//! - A process the master forks without exec also holds the write end, and the keeper waits for
//!   it too.
//! - A keeper that is killed (it ignores only the three signals above) is not replaced.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::fcntl::OFlag;

use super::sweep;
use super::tree::{master_prefix, Matcher, Needle};

/// Starts the keeper of this master process, if it is not running yet. Best effort: without
/// one, only the master's death goes unswept.
pub(super) fn start() {
    static KEEPER: OnceLock<Option<OwnedFd>> = OnceLock::new();
    KEEPER.get_or_init(|| match fork_keeper() {
        Ok(write_end) => Some(write_end),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the procactor keeper");
            None
        }
    });
}

/// What the keeper needs, prepared before the fork.
struct Prepared {
    /// `<nonce>/`: every token of this master.
    prefix: &'static [u8],
    /// The read end of the pipe.
    read_end: libc::c_int,
    /// Where this process's environment block lies (`/proc/self/stat`, fields 50 and 51).
    environ: Option<(u64, u64)>,
    /// The descriptor limit, for closing descriptors one by one where `close_range` is missing.
    max_fds: libc::c_int,
}

/// Forks the keeper; returns the pipe's write end, which the master holds until it dies.
fn fork_keeper() -> std::io::Result<OwnedFd> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let prepared = Prepared {
        prefix: master_prefix().as_bytes(),
        read_end: read_end.as_raw_fd(),
        environ: environ_block(),
        max_fds: max_fds(),
    };
    // SAFETY: the child calls only `Prepared::middle`, which makes system calls and ends in
    // `_exit`; it allocates nothing and takes no lock.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if middle == 0 {
        prepared.middle();
    }
    drop(read_end);
    let mut status = 0;
    // The middle process exits at once; EINTR aside, one wait.
    // SAFETY: waitpid on our own child, writing its status into `status`.
    while unsafe { libc::waitpid(middle, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    Ok(write_end)
}

impl Prepared {
    /// In the middle process: forks the keeper and exits. Never returns.
    fn middle(&self) -> ! {
        // A raw fork: no `pthread_atfork` handler runs in this copy of a multi-threaded process.
        // SAFETY: clone with only the exit signal set behaves as fork; the child goes on with
        // a copy of this stack and makes system calls only.
        let keeper = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if keeper == 0 {
            self.keep();
        }
        // SAFETY: _exit ends the middle process without running anything of the master's.
        unsafe { libc::_exit(0) }
    }

    /// In the keeper: set up, wait for the master to go, sweep, exit. Never returns.
    fn keep(&self) -> ! {
        // SAFETY: each call is a system call on values prepared before the fork or on this
        // stack; see the module doc for what each step is for.
        unsafe {
            libc::setsid();
            libc::prctl(libc::PR_SET_NAME, c"procactor-keep".as_ptr(), 0, 0, 0);
        }
        default_signals();
        self.close_all_but_the_pipe();
        if let Some((start, end)) = self.environ {
            clear_memory(start, end);
        }
        if self.master_gone() {
            let mut matchers = [Matcher::new(Needle::Prefix(self.prefix))];
            // SAFETY: getpid cannot fail.
            let me = unsafe { libc::getpid() };
            sweep::sweep(&mut matchers[..], me);
        }
        // SAFETY: _exit ends the keeper.
        unsafe { libc::_exit(0) }
    }

    /// Closes every descriptor but the pipe's read end.
    fn close_all_but_the_pipe(&self) {
        let fd = self.read_end as libc::c_uint;
        let close_range = |from: libc::c_uint, to: libc::c_uint| {
            // SAFETY: close_range closes the descriptors between two bounds; no flags.
            unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) }
        };
        let below = if fd == 0 { 0 } else { close_range(0, fd - 1) };
        if below < 0 || close_range(fd + 1, libc::c_uint::MAX) < 0 {
            // Before Linux 5.9: one by one.
            for other in (0..self.max_fds).filter(|&o| o != self.read_end) {
                // SAFETY: close on a number; a descriptor that is not open gives EBADF.
                unsafe { libc::close(other) };
            }
        }
    }

    /// Blocks until the master is gone (end-of-file on the pipe); false if the pipe fails.
    fn master_gone(&self) -> bool {
        let mut byte = 0u8;
        loop {
            // SAFETY: read writes at most one byte into `byte`.
            let n = unsafe { libc::read(self.read_end, (&raw mut byte).cast(), 1) };
            match n {
                0 => return true,
                n if n > 0 => {}
                _ if errno() == libc::EINTR => {}
                _ => return false,
            }
        }
    }
}

/// Every signal back to its default action, with none blocked; `SIGINT`, `SIGTERM` and `SIGHUP`
/// ignored. In the keeper only.
fn default_signals() {
    // SAFETY: sigaction structures are plain data; all zeroes is SIG_DFL with an empty mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    for signal in 1..65 {
        action.sa_sigaction = match signal {
            libc::SIGINT | libc::SIGTERM | libc::SIGHUP => libc::SIG_IGN,
            _ => libc::SIG_DFL,
        };
        // SAFETY: sigaction reads `action`; signals that cannot be changed give EINVAL.
        unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    }
    // SAFETY: as above, all zeroes is the empty set.
    let none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigprocmask reads one signal set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) };
}

/// Overwrites `[start, end)` of this process's memory with zeroes through `/proc/self/mem`,
/// which fails cleanly where a plain write would fault. In the keeper only.
fn clear_memory(start: u64, end: u64) {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let mem = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if mem < 0 {
        return;
    }
    let zeroes = [0u8; 512];
    let mut at = start;
    while at < end {
        let len = (end - at).min(zeroes.len() as u64) as usize;
        // SAFETY: pwrite reads `len` bytes of `zeroes`; the offset is an address of this process.
        let n = unsafe { libc::pwrite(mem, zeroes.as_ptr().cast(), len, at as libc::off_t) };
        if n <= 0 {
            break;
        }
        at += n as u64;
    }
    // SAFETY: `mem` was opened above and is closed once.
    unsafe { libc::close(mem) };
}

fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() }
}

/// Where this process's environment block lies, from `/proc/self/stat` (fields 50 and 51,
/// `env_start` and `env_end`).
fn environ_block() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which may hold spaces: field 3 is the first.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let start = fields.get(50 - 3)?.parse().ok()?;
    let end = fields.get(51 - 3)?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// The soft limit on descriptors, capped.
fn max_fds() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`; on failure it keeps the default.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur.min(1 << 20) as libc::c_int
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_block_is_found() {
        let (start, end) = environ_block().expect("fields 50 and 51 of /proc/self/stat");
        let block = std::fs::read("/proc/self/environ").unwrap();
        assert_eq!((end - start) as usize, block.len());
    }
}
