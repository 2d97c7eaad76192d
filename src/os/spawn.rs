//! Starting children: one long-lived spawner thread, and the steps a child takes between fork and
//! exec, one function per mechanism.
//!
//! Every step in the child runs after `fork` in a copy of a multi-threaded process, so it may
//! only call async-signal-safe functions (`signal-safety(7)`): it allocates nothing and takes no
//! lock. What the steps need (the CPU set, the master's pid) is prepared before the fork.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};

use nix::fcntl::{fcntl, FcntlArg};

use super::activated::ActivatedExec;
use super::child::{OsChild, Spawned};
use super::{keeper, notify, reap, sweep, tree, ChildPipes, SpawnSpec, Spawner};
use crate::error::SpawnError;

/// The real [`Spawner`]: children are forked by one spawner thread, so that `PR_SET_PDEATHSIG`
/// (tied by the kernel to the forking thread) fires only when the master process dies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OsSpawner;

impl Spawner for OsSpawner {
    type Child = OsChild;

    // Not an `async fn`: the future must not borrow the spawner (`'static`).
    #[allow(clippy::manual_async_fn)]
    fn spawn(
        &self,
        spec: SpawnSpec,
    ) -> impl Future<Output = Result<(ChildPipes, OsChild), SpawnError>> + 'static {
        async move {
            let program = spec.program.clone();
            let spawned = on_spawner_thread(spec).await?;
            // Registered with the runtime that polls this future: the caller's.
            spawned.into_async().map_err(|e| spawn_error(&program, &e))
        }
    }
}

struct Job {
    spec: SpawnSpec,
    reply: tokio::sync::oneshot::Sender<Result<Spawned, SpawnError>>,
}

async fn on_spawner_thread(spec: SpawnSpec) -> Result<Spawned, SpawnError> {
    let program = spec.program.clone();
    let (reply, rx) = tokio::sync::oneshot::channel();
    let gone = || spawn_error(&program, &io::Error::other("the spawner thread is gone"));
    spawner().send(Job { spec, reply }).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        // Started with the spawner, so that the first spawn settles the count of our threads.
        reap::start();
        sweep::start();
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("procactor-spawner".into())
            .spawn(move || {
                // Forked here, off the caller's event loop, before the first child.
                keeper::start();
                for job in rx {
                    // A child nobody waits for any more is dropped here: killed and handed to
                    // the reaper.
                    let _ = job.reply.send(spawn_now(&job.spec));
                }
            })
            .expect("cannot start the procactor spawner thread");
        tx
    })
}

fn spawn_error(program: &Path, e: &io::Error) -> SpawnError {
    SpawnError {
        program: program.to_owned(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn spawn_now(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let err = |e: io::Error| spawn_error(&spec.program, &e);
    let mut cmd = Command::new(&spec.program);
    for key in notify::MASTER_ONLY {
        cmd.env_remove(key);
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(tree::VAR, spec.tree.env_value())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let steps = InChild::new(&spec.cpus);
    // SAFETY: `InChild::run` calls only async-signal-safe functions (sched_setaffinity, setsid,
    // prctl, getppid, close_range, _exit); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || steps.run());
    }
    if !spec.listeners.is_empty() || !spec.pid_vars.is_empty() {
        // It changes to the working directory itself, just before its execve.
        let mut exec = ActivatedExec::new(spec).map_err(err)?;
        // SAFETY: as above; `run` only calls fcntl, dup2, chdir, getpid and execve, and writes
        // into memory that `exec` allocated before the fork.
        unsafe {
            cmd.pre_exec(move || exec.run());
        }
    } else if let Some(dir) = &spec.cwd {
        // The slot's spec found the program from this directory already (an absolute path).
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().map_err(err)?;
    let spawned = Spawned::adopt(child, spec.tree.clone()).map_err(err)?;
    if spec.pipe_bytes > 0 {
        let (stdin, stdout) = spawned.channel();
        size_pipes(&[stdin, stdout], spec.pipe_bytes);
    }
    Ok(spawned)
}

/// Raises the pipes' capacity (`fcntl(2)`, `F_SETPIPE_SZ`). Best effort: a smaller pipe only
/// costs throughput, and an unprivileged process is capped by `/proc/sys/fs/pipe-max-size`.
fn size_pipes(pipes: &[&OwnedFd], bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for fd in pipes {
        let _ = fcntl(fd.as_fd(), FcntlArg::F_SETPIPE_SZ(bytes));
    }
}

/// What a child does between fork and exec, prepared before the fork.
struct InChild {
    /// The CPU set to pin the child to, built in the parent; `None`: the master's.
    cpus: Option<libc::cpu_set_t>,
    /// The master's pid, to check that it has not died before `PDEATHSIG` was armed.
    master: libc::pid_t,
}

impl InChild {
    fn new(cpus: &[usize]) -> Self {
        let set = (!cpus.is_empty()).then(|| {
            // SAFETY: cpu_set_t is plain data, all zeroes is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &cpu in cpus {
                // SAFETY: CPU_SET writes a bit inside `set`; `cpu` was checked against
                // CPU_SETSIZE by the config's validation, and CPU_SET ignores bits past the set.
                unsafe { libc::CPU_SET(cpu, &mut set) };
            }
            set
        });
        Self {
            cpus: set,
            master: std::process::id() as libc::pid_t,
        }
    }

    /// In the child, after fork: every step in order.
    fn run(&self) -> io::Result<()> {
        if let Some(cpus) = &self.cpus {
            pin_to(cpus)?;
        }
        new_session()?;
        die_with_master(self.master)?;
        close_inherited();
        Ok(())
    }
}

/// Restricts the calling process to `cpus` (`sched_setaffinity(2)`). In the child only.
fn pin_to(cpus: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `cpus` is a valid cpu_set_t of the size passed; pid 0 is the calling process.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), cpus) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the calling process the leader of a new session and process group (`setsid(2)`): the
/// master's terminal signals do not reach it, and `killpg` reaches its descendants. In the child
/// only.
fn new_session() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and only fails with EPERM.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arms `SIGKILL` for when the forking thread's process dies (`prctl(2)`, `PR_SET_PDEATHSIG`),
/// and exits at once if the master died before it was armed (`getppid(2)`). In the child only:
/// it calls `_exit`.
fn die_with_master(master: libc::pid_t) -> io::Result<()> {
    let signal = libc::SIGKILL as libc::c_ulong;
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the other arguments are unused.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail; _exit ends the child without running the parent's handlers.
    unsafe {
        if libc::getppid() != master {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Marks every descriptor above 2 close-on-exec (`close_range(2)`, `CLOSE_RANGE_CLOEXEC`):
/// whatever the master inherited without close-on-exec (a jobserver pipe, a socket of the program
/// that started it) is not the worker's. Socket activation places its sockets after this step.
/// Best effort: kernels before 5.11 lack `close_range`. In the child only.
fn close_inherited() {
    // SAFETY: close_range takes two descriptor bounds and flags; with CLOSE_RANGE_CLOEXEC it
    // closes nothing, it only sets a flag.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}
