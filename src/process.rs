//! The OS seam: spawning, signalling and reaping worker processes, and the worker's own
//! descriptor set-up. All of procactor's `unsafe` and Linux-specific code lives here.
//!
//! # Guarantees
//! - Every worker runs in its own session and process group, so signals meant for the master's
//!   terminal group do not reach it and a stop reaches its grandchildren (`killpg`).
//! - `PR_SET_PDEATHSIG(SIGKILL)`, re-checked against `getppid()`, kills a worker whose master dies.
//!   The kernel ties that signal to the *thread* that forked, so every child is forked by one
//!   long-lived spawner thread that never exits.
//! - The master's ends of every pipe are `O_CLOEXEC`, and every descriptor above 2 is closed at
//!   exec: a worker starts with stdin, stdout and stderr only, and never holds a sibling's pipe.
//! - Each child is watched through a pidfd and reaped exactly once, by its owner; it is never
//!   signalled after it has been reaped, so a recycled pid cannot be hit.
//!
//! # Caveats
//! A grandchild that calls `setsid()` itself leaves the worker's process group and is not reached
//! by a group signal.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

use crate::error::SpawnError;

/// What to run as a worker.
#[derive(Debug)]
pub(crate) struct SpawnSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Size to raise the stdin and stdout pipes to; 0 leaves them as they are.
    pub(crate) pipe_bytes: usize,
    /// Listening sockets to hand over at fds 3, 4, … (socket activation), with their names.
    pub(crate) listeners: Vec<(String, OwnedFd)>,
    /// The CPUs the child may run on; empty: those of the master.
    pub(crate) cpus: Vec<usize>,
}

/// A started child: its pid, the master's ends of its pipes and its pidfd.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    pidfd: OwnedFd,
}

/// The master's async ends of a child's pipes.
#[derive(Debug)]
pub(crate) struct ChildPipes {
    pub(crate) stdin: pipe::Sender,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawExit {
    Code(i32),
    Signal(i32),
}

/// A child process that its owner signals and reaps.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    reaped: std::cell::Cell<bool>,
}

struct Job {
    spec: SpawnSpec,
    reply: tokio::sync::oneshot::Sender<Result<Spawned, SpawnError>>,
}

/// Starts a child from the spawner thread.
pub(crate) async fn spawn(spec: SpawnSpec) -> Result<Spawned, SpawnError> {
    let program = spec.program.clone();
    let (reply, rx) = tokio::sync::oneshot::channel();
    let gone = || SpawnError {
        program: program.clone(),
        kind: io::ErrorKind::Other,
        message: "the spawner thread is gone".into(),
    };
    spawner().send(Job { spec, reply }).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("procactor-spawner".into())
            .spawn(move || {
                for job in rx {
                    let result = spawn_now(&job.spec);
                    if let Err(Ok(orphan)) = job.reply.send(result) {
                        // Nobody waits for this child any more: end it and reap it here.
                        orphan.kill_and_reap();
                    }
                }
            })
            .expect("cannot start the procactor spawner thread");
        tx
    })
}

fn spawn_now(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let err = |e: io::Error| SpawnError {
        program: spec.program.clone(),
        kind: e.kind(),
        message: e.to_string(),
    };
    let master = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The CPU set is built here, before the fork; the child only hands it to the kernel.
    // SAFETY: cpu_set_t is plain data, all zeroes is the empty set.
    let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in &spec.cpus {
        // SAFETY: CPU_SET writes a bit inside `cpus`; `cpu` was checked against CPU_SETSIZE by
        // the config's validation, and CPU_SET ignores bits past the set anyway.
        unsafe { libc::CPU_SET(cpu, &mut cpus) };
    }
    let pin = !spec.cpus.is_empty();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (setsid, prctl, getppid, sched_setaffinity, close_range, _exit); it allocates nothing and
    // takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if pin && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) < 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != master {
                // The master died before PDEATHSIG was armed.
                libc::_exit(1);
            }
            // Whatever the master inherited without close-on-exec (a jobserver pipe, a socket
            // of the program that started it) is not the worker's: only 0, 1 and 2 survive exec.
            // Best effort: kernels before 5.11 lack close_range.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    if !spec.listeners.is_empty() {
        let mut exec = ActivatedExec::new(spec).map_err(err)?;
        // SAFETY: as above; `run` only calls fcntl, dup2, getpid and execve, and writes into
        // memory that `exec` allocated before the fork.
        unsafe {
            cmd.pre_exec(move || exec.run());
        }
    }
    let mut child = cmd.spawn().map_err(err)?;
    let pid = child.id();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three pipes were requested");
    };
    let (stdin, stdout, stderr) = (OwnedFd::from(stdin), OwnedFd::from(stdout), stderr.into());
    if spec.pipe_bytes > 0 {
        for fd in [&stdin, &stdout] {
            // Best effort: a smaller pipe only costs throughput.
            let _ = fcntl(
                fd.as_fd(),
                FcntlArg::F_SETPIPE_SZ(spec.pipe_bytes as libc::c_int),
            );
        }
    }
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            pidfd,
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err(e))
        }
    }
}

/// The exec of a worker that receives listening sockets, prepared before the fork.
///
/// `LISTEN_PID` must hold the worker's own pid, which exists only after the fork, and nothing
/// may be allocated between fork and exec. So the whole environment and argument vector are
/// built here, with room for the pid's digits, and the child fills them in, moves the sockets
/// to fds 3, 4, … and calls `execve` itself.
struct ActivatedExec {
    program: CString,
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

    fn new(spec: &SpawnSpec) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
        };
        let program = c(spec.program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for arg in &spec.args {
            argv.push(c(arg.as_bytes())?);
        }
        // The environment std would pass: ours, overridden by the spec's, without LISTEN_*.
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !spec.env.iter().any(|(sk, _)| sk == k))
            .chain(spec.env.iter().cloned())
            .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"))
            .collect();
        let names: Vec<&str> = spec.listeners.iter().map(|(n, _)| n.as_str()).collect();
        env.push(("LISTEN_FDS".into(), spec.listeners.len().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            envp.push(c(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
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
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            listen_pid,
            moved: vec![-1; sources.len()],
            sources,
        })
    }

    /// In the child: place the sockets, write `LISTEN_PID`, exec. Returns only on failure.
    fn run(&mut self) -> io::Result<()> {
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
        // SAFETY: getpid cannot fail.
        let mut pid = unsafe { libc::getpid() } as u64;
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (pid % 10) as u8;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        let at = Self::LISTEN_PID.len();
        let len = digits.len() - start;
        self.listen_pid[at..at + len].copy_from_slice(&digits[start..]);
        self.listen_pid[at + len] = 0;
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
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, open and owned by nobody else; pidfds
    // are close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Spawned {
    /// Registers the pipes and the pidfd with the current tokio runtime.
    pub(crate) fn into_async(self) -> io::Result<(ChildPipes, ChildHandle)> {
        let pipes = ChildPipes {
            stdin: pipe::Sender::from_owned_fd(self.stdin)?,
            stdout: pipe::Receiver::from_owned_fd(self.stdout)?,
            stderr: pipe::Receiver::from_owned_fd(self.stderr)?,
        };
        let handle = ChildHandle {
            pid: Pid::from_raw(self.pid as libc::pid_t),
            // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is dropped,
            // which only happens when the AsyncFd is.
            pidfd: unsafe { AsyncFd::register_with_interest(self.pidfd, Interest::READABLE) }
                .map_err(io::Error::from)?,
            reaped: std::cell::Cell::new(false),
        };
        Ok((pipes, handle))
    }

    fn kill_and_reap(self) {
        let _ = killpg(Pid::from_raw(self.pid as libc::pid_t), Signal::SIGKILL);
        let _ = waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED);
    }
}

impl ChildHandle {
    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends `signal` to the child's whole process group; a no-op once the child is reaped.
    pub(crate) fn signal_group(&self, signal: Signal) {
        if !self.reaped.get() {
            // The group id is the child's pid (setsid). The leader is not reaped yet, so the pid
            // is still ours even if it has exited.
            let _ = killpg(self.pid, signal);
        }
    }

    /// Waits for the child to exit, kills what is left of its process group (grandchildren),
    /// and reaps it.
    pub(crate) async fn wait(&self) -> RawExit {
        let fd = self.pidfd.get_ref().as_fd();
        loop {
            let mut guard = match self.pidfd.readable().await {
                Ok(guard) => guard,
                Err(_) => return self.reap_blocking(),
            };
            // Peek first (WNOWAIT): while the leader is unreaped, its group id is still ours.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::PIDFd(fd), flags) {
                Ok(WaitStatus::StillAlive) => guard.clear_ready(),
                Ok(_) => {
                    self.signal_group(Signal::SIGKILL);
                    return self.reap_blocking();
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return self.reap_blocking(),
            }
        }
    }

    fn reap_blocking(&self) -> RawExit {
        let status = waitid(
            Id::PIDFd(self.pidfd.get_ref().as_fd()),
            WaitPidFlag::WEXITED,
        );
        self.reaped(status.unwrap_or(WaitStatus::Signaled(self.pid, Signal::SIGKILL, false)))
    }

    fn reaped(&self, status: WaitStatus) -> RawExit {
        self.reaped.set(true);
        match status {
            WaitStatus::Exited(_, code) => RawExit::Code(code),
            WaitStatus::Signaled(_, signal, _) => RawExit::Signal(signal as i32),
            _ => RawExit::Signal(0),
        }
    }
}

impl Drop for ChildHandle {
    /// Kill on drop: a child whose owner goes away is killed with its group and reaped, so it
    /// can neither outlive the proxy nor linger as a zombie.
    fn drop(&mut self) {
        if !self.reaped.get() {
            self.signal_group(Signal::SIGKILL);
            let _ = waitid(
                Id::PIDFd(self.pidfd.get_ref().as_fd()),
                WaitPidFlag::WEXITED,
            );
        }
    }
}

/// Worker side: moves the channel off fd 1 and fd 0 so that user code cannot touch it.
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
