//! The worker's side: taking the channel off fds 0 and 1, and the sockets handed over by socket
//! activation. Both run once, early, before the worker's runtime opens any descriptor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg};

/// Worker side: moves the channel off fd 1 and fd 0 so that user code cannot touch it
/// (`fcntl(2)` `F_DUPFD_CLOEXEC`, then `dup2(2)`).
///
/// Returns `(from_master, to_master)`: close-on-exec duplicates of the original stdin and stdout.
/// Afterwards fd 1 is a copy of fd 2 (a stray `println!` lands in the log, not in the channel)
/// and fd 0 reads `/dev/null`, so a program the worker starts inherits neither channel end.
pub(crate) fn take_worker_channel() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::io::Write;
    let _ = io::stdout().flush();
    let dup_cloexec = |fd: RawFd| -> io::Result<OwnedFd> {
        // SAFETY: fd 0 and fd 1 are open for the life of the process; the borrow ends here.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let raw = fcntl(borrowed, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(io::Error::from)?;
        // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    let from_master = dup_cloexec(0)?;
    let to_master = dup_cloexec(1)?;
    nix::unistd::dup2_stdout(io::stderr()).map_err(io::Error::from)?;
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    debug_assert!(from_master.as_raw_fd() > 2 && to_master.as_raw_fd() > 2);
    Ok((from_master, to_master))
}

/// Worker side: takes the listening sockets handed over by socket activation.
///
/// Follows `sd_listen_fds(3)`: `LISTEN_PID` must be this process (otherwise the variables were
/// meant for another and nothing is taken); fds 3 to 2 + `LISTEN_FDS` are the sockets, named by
/// `LISTEN_FDNAMES`. They are made close-on-exec, so programs the worker starts do not inherit
/// them.
pub(crate) fn take_listen_fds() -> Vec<(String, OwnedFd)> {
    let var = |name: &str| std::env::var(name).ok();
    let ours = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count: RawFd = var("LISTEN_FDS").and_then(|n| n.parse().ok()).unwrap_or(0);
    if !ours || !(1..=1024).contains(&count) {
        return Vec::new();
    }
    let names = var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    (3..3 + count)
        .filter_map(|fd| {
            let name = names.next().unwrap_or("unknown").to_owned();
            // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return None;
            }
            // SAFETY: the master placed this socket here for this process, and nothing else in
            // it has claimed the descriptor: this runs once, before the runtime opens anything.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = fcntl(
                owned.as_fd(),
                FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            Some((name, owned))
        })
        .collect()
}
