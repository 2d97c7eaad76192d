//! Starting the daemon: in the background for `start` and `resurrect` (a process of its own
//! session, its output in `<state>/daemon.log`), or in this process with `--foreground` (for
//! systemd's `Type=notify` and for containers).
//!
//! Why the daemon is this same executable re-run with a hidden `daemon` command rather than a
//! fork: a fork of a process with threads (the client's runtime) may copy a lock held by
//! another thread; a fresh exec has none. The daemon leaves the client's session with
//! `setsid` as its first act, so a terminal's hang-up or Ctrl-C does not reach it or its apps.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::Cli;
use crate::daemon::{self, Options};
use crate::exit::{Exit, Failure};
use crate::socket::SocketPath;

/// How long `start` waits for a daemon it started to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

fn state_dir(cli: &Cli) -> Result<PathBuf, Failure> {
    crate::state::state_dir(cli.state_dir.as_deref()).map_err(|e| Failure::new(Exit::Usage, e))
}

/// Whether a daemon answers at `socket`.
fn answers(socket: &Path) -> bool {
    // A plain connect, no runtime: `start` asks this every 20 ms while a daemon starts.
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
    }
}

/// Makes sure a daemon answers at `socket`: when none does, starts one in the background and
/// waits for it to answer.
///
/// # Errors
/// When the daemon cannot be started or does not answer in time; the message ends with the
/// tail of its log.
pub(crate) fn ensure_daemon(cli: &Cli, socket: &SocketPath) -> Result<(), Failure> {
    if answers(&socket.path) {
        return Ok(());
    }
    let state = state_dir(cli)?;
    private_dir(&state).map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot create {}: {e}", state.display()),
        )
    })?;
    let log_path = state.join("daemon.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| Failure::new(Exit::Failed, format!("{}: {e}", log_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot find this executable: {e}")))?;
    let mut command = Command::new(exe);
    command
        .arg("--socket")
        .arg(&socket.path)
        .arg("--state-dir")
        .arg(&state)
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Failure::new(Exit::Failed, e.to_string()))?,
        )
        .stderr(log);
    let mut child = command
        .spawn()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start the daemon: {e}")))?;
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        if answers(&socket.path) {
            // The daemon runs on in its own session; its exit is its own business now.
            drop(child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::new(
                Exit::Failed,
                format!("the daemon exited ({status}):\n{}", tail(&log_path)),
            ));
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "the daemon did not answer at {} within {ANSWER_WITHIN:?}:\n{}",
                    socket.path.display(),
                    tail(&log_path)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates `dir` (and its parents) with mode 0700, or makes an existing one 0700: the state
/// file, the daemon's log and the apps' logs (whose lines may hold secrets) are the user's alone.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The last lines of the daemon's log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The daemon, as `start` runs it in the background: a session of its own, a pid file, then
/// [`daemon::run`].
pub(crate) fn daemon(cli: &Cli, socket: SocketPath, resurrect: bool) -> Result<(), Failure> {
    // Fails only for a process group leader, which a child `start` spawned is not.
    let _ = nix::unistd::setsid();
    // Holds no directory: the one `start` ran in may be deleted (a pruned release) or be a
    // mount to unmount. Every path the daemon gets is absolute.
    let _ = std::env::set_current_dir("/");
    serve(cli, socket, None, resurrect)
}

/// The daemon in this process (`start --foreground`, `resurrect --foreground`).
pub(crate) fn foreground(
    cli: &Cli,
    socket: SocketPath,
    start: Option<(PathBuf, String)>,
    resurrect: bool,
) -> Result<(), Failure> {
    serve(cli, socket, start, resurrect)
}

fn serve(
    cli: &Cli,
    socket: SocketPath,
    start: Option<(PathBuf, String)>,
    resurrect: bool,
) -> Result<(), Failure> {
    let state_dir = state_dir(cli)?;
    private_dir(&state_dir).map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot create {}: {e}", state_dir.display()),
        )
    })?;
    let options = Options {
        socket,
        state_dir,
        resurrect,
        start,
    };
    daemon::run(options).map_err(|e| Failure::new(Exit::Failed, e))
}
