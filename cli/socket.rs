//! Where the daemon's control socket lives, and who may reach it.
//!
//! The socket is `--socket` (or `PROCACTOR_SOCKET`), else `$XDG_RUNTIME_DIR/procactor/daemon.sock`,
//! else `/tmp/procactor-<uid>/daemon.sock`. The default's directory is procactor's own: created
//! 0700, and refused when it is not a directory of ours that only we can enter (a symlink is
//! refused too: someone who planted `/tmp/procactor-1000` first would otherwise own our socket).
//! A directory the operator chose with `--socket` is created 0700 when missing; an existing one
//! must be ours (or root's) and writable by nobody else, so nobody can replace the socket. The
//! socket file is made 0600: nobody else can connect, and the peer's uid is still checked on
//! every connection (`handshake.rs`) — file modes are the first wall, `SO_PEERCRED` the second.
//!
//! Why the mode is set after `bind` rather than under a umask: the umask is process-wide and
//! the daemon may have threads by then; between `bind` and `chmod` the socket sits in a
//! directory only we can enter, so nobody can reach it in that window.
//!
//! Limits: a socket path is at most 107 bytes (`sun_path` holds 108 with its NUL); a longer
//! one is an error naming the length, never truncated. A directory under `/tmp` may be cleaned
//! by `systemd-tmpfiles` after days unused; `$XDG_RUNTIME_DIR` does not have that problem.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with the NUL).
pub(crate) const MAX_PATH_BYTES: usize = 107;

/// Why the socket cannot be used.
#[derive(Debug)]
pub(crate) enum SocketError {
    /// Nothing answers at the path: no daemon runs there.
    NoDaemon(PathBuf),
    /// A daemon already answers at the path (when binding).
    AlreadyRunning(PathBuf),
    /// The socket is not this user's to connect to (its mode lets only its owner in).
    Forbidden(PathBuf),
    /// The path is longer than a socket address holds.
    TooLong(PathBuf),
    /// The directory or the path is not safe to use, and why.
    Unsafe(PathBuf, String),
    /// Another error of the system, with what was being done.
    Io(String, PathBuf, io::Error),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::NoDaemon(p) => write!(f, "no daemon is running at {}", p.display()),
            SocketError::AlreadyRunning(p) => {
                write!(f, "a daemon already runs at {}", p.display())
            }
            SocketError::Forbidden(p) => write!(
                f,
                "refused: the daemon at {} belongs to another user (permission denied); run \
                 your own, with a socket of yours (--socket)",
                p.display()
            ),
            SocketError::TooLong(p) => write!(
                f,
                "the socket path {} is {} bytes, longer than the {MAX_PATH_BYTES} a Unix socket \
                 address holds; choose a shorter one with --socket",
                p.display(),
                p.as_os_str().len()
            ),
            SocketError::Unsafe(p, why) => write!(f, "{}: {why}", p.display()),
            SocketError::Io(doing, p, e) => write!(f, "cannot {doing} {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for SocketError {}

/// This process's effective uid.
pub(crate) fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Where the socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SocketPath {
    /// The path.
    pub(crate) path: PathBuf,
    /// Whether the operator chose it (`--socket`); else its directory is procactor's own.
    pub(crate) chosen: bool,
}

/// The socket path: `chosen` (from `--socket` or its variable), else the default.
pub(crate) fn socket_path(chosen: Option<&Path>) -> SocketPath {
    match chosen {
        Some(path) => SocketPath {
            path: path.to_path_buf(),
            chosen: true,
        },
        None => SocketPath {
            path: default_path(std::env::var_os("XDG_RUNTIME_DIR").as_deref(), my_uid()),
            chosen: false,
        },
    }
}

/// The default for a runtime directory (if set, and absolute as the XDG spec demands) and uid.
fn default_path(runtime_dir: Option<&OsStr>, uid: u32) -> PathBuf {
    match runtime_dir.map(Path::new) {
        Some(dir) if dir.is_absolute() => dir.join("procactor").join("daemon.sock"),
        _ => PathBuf::from(format!("/tmp/procactor-{uid}/daemon.sock")),
    }
}

fn check_len(path: &Path) -> Result<(), SocketError> {
    if path.as_os_str().len() > MAX_PATH_BYTES {
        return Err(SocketError::TooLong(path.to_path_buf()));
    }
    Ok(())
}

/// The client's side: connects to the daemon at `path`.
///
/// # Errors
/// [`SocketError::NoDaemon`] when no file is there or nobody accepts on it (a stale socket);
/// [`SocketError::Forbidden`] when the socket or its directory is another user's.
pub(crate) async fn connect(path: &Path) -> Result<UnixStream, SocketError> {
    check_len(path)?;
    UnixStream::connect(path).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            SocketError::NoDaemon(path.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => SocketError::Forbidden(path.to_path_buf()),
        _ => SocketError::Io("connect to".into(), path.to_path_buf(), e),
    })
}

/// The daemon's side: makes the directory safe, replaces a stale socket, binds, and makes the
/// socket 0600.
///
/// # Errors
/// [`SocketError::AlreadyRunning`] when a daemon answers at the path; [`SocketError::Unsafe`]
/// when the directory is not safe (see the module docs) or the path is not a socket.
pub(crate) fn bind(socket: &SocketPath) -> Result<UnixListener, SocketError> {
    let path = socket.path.as_path();
    check_len(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    prepare_dir(dir, my_uid(), !socket.chosen)?;
    remove_stale(path)?;
    let io = |doing: &'static str| {
        let path = path.to_path_buf();
        move |e| SocketError::Io(doing.into(), path, e)
    };
    let listener = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("set the mode of"))?;
    Ok(listener)
}

/// Creates `dir` 0700 if missing; refuses it unless it is a real directory owned by `uid` that
/// nobody else may enter (`own`: procactor's own directory), or, for a directory the operator
/// chose, one owned by `uid` or root that nobody else may write to.
fn prepare_dir(dir: &Path, uid: u32, own: bool) -> Result<(), SocketError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(SocketError::Io("create".into(), dir.to_path_buf(), e)),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| SocketError::Io("inspect".into(), dir.to_path_buf(), e))?;
    let unsafe_dir = |why: String| Err(SocketError::Unsafe(dir.to_path_buf(), why));
    if !meta.is_dir() {
        return unsafe_dir("not a directory (a symlink is refused)".into());
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != uid && (own || meta.uid() != 0) {
        return unsafe_dir(format!(
            "owned by uid {}, not by you (uid {uid}): use a directory of your own",
            meta.uid()
        ));
    }
    if own && mode & 0o077 != 0 {
        return unsafe_dir(format!(
            "mode {mode:03o} lets others in; procactor's socket directory must be 0700 \
             (chmod 700 it)"
        ));
    }
    if mode & 0o022 != 0 {
        return unsafe_dir(format!(
            "mode {mode:03o} lets others write there, and so replace the socket: choose a \
             directory only you can write to"
        ));
    }
    Ok(())
}

/// Removes a socket file nobody accepts on; refuses a live one, or a file that is no socket.
fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SocketError::Io("inspect".into(), path.to_path_buf(), e)),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::Unsafe(
            path.to_path_buf(),
            "exists and is not a socket; not replaced".into(),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| SocketError::Io("remove the stale socket".into(), path.to_path_buf(), e)),
        Err(e) => Err(SocketError::Io("probe".into(), path.to_path_buf(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn chosen(path: &Path) -> SocketPath {
        socket_path(Some(path))
    }

    fn dir_with_mode(parent: &Path, name: &str, mode: u32) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn the_default_is_in_the_runtime_dir_else_in_tmp_by_uid() {
        let run = OsStr::new("/run/user/1000");
        let in_run = default_path(Some(run), 1000);
        assert_eq!(in_run, Path::new("/run/user/1000/procactor/daemon.sock"));
        let in_tmp = default_path(None, 1000);
        assert_eq!(in_tmp, Path::new("/tmp/procactor-1000/daemon.sock"));
        // The spec says a relative XDG_RUNTIME_DIR is to be ignored.
        let relative = default_path(Some(OsStr::new("run")), 7);
        assert_eq!(relative, Path::new("/tmp/procactor-7/daemon.sock"));
        let given = chosen(Path::new("/x/s"));
        assert_eq!(
            (given.path.as_path(), given.chosen),
            (Path::new("/x/s"), true)
        );
        assert!(!socket_path(None).chosen);
    }

    #[tokio::test]
    async fn bind_makes_a_0700_directory_and_a_0600_socket_that_connects() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/procactor/daemon.sock");
        let listener = bind(&chosen(&path)).unwrap();
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let (client, accepted) = tokio::join!(connect(&path), listener.accept());
        client.unwrap();
        accepted.unwrap();
        // A second daemon is refused while the first answers …
        let second = bind(&chosen(&path));
        assert!(matches!(second, Err(SocketError::AlreadyRunning(_))));
        // … and replaces the socket once it is gone (stale).
        drop(listener);
        let gone = connect(&path).await;
        assert!(matches!(gone, Err(SocketError::NoDaemon(_))));
        let _again = bind(&chosen(&path)).unwrap();
    }

    #[tokio::test]
    async fn no_file_is_no_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.sock");
        let e = connect(&path).await.unwrap_err();
        let expected = format!("no daemon is running at {}", path.display());
        assert_eq!(e.to_string(), expected);
    }

    #[test]
    fn procactors_own_directory_is_ours_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let me = my_uid();
        prepare_dir(&tmp.path().join("new"), me, true).unwrap();
        assert_eq!(mode(&tmp.path().join("new")), 0o700);
        let open = dir_with_mode(tmp.path(), "open", 0o755);
        let e = prepare_dir(&open, me, true).unwrap_err();
        assert!(e.to_string().contains("mode 755 lets others in"), "{e}");
        let theirs = dir_with_mode(tmp.path(), "theirs", 0o700);
        let e = prepare_dir(&theirs, me + 1, true).unwrap_err();
        assert!(e.to_string().contains("not by you"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        let e = prepare_dir(&link, me, true).unwrap_err();
        assert!(e.to_string().contains("a symlink is refused"), "{e}");
    }

    #[test]
    fn a_chosen_directory_must_be_writable_by_us_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let me = my_uid();
        let readable = dir_with_mode(tmp.path(), "readable", 0o755);
        prepare_dir(&readable, me, false).unwrap();
        for (name, mode) in [("group", 0o775), ("world", 0o777), ("sticky", 0o1777)] {
            let dir = dir_with_mode(tmp.path(), name, mode);
            let e = bind(&chosen(&dir.join("d.sock"))).unwrap_err();
            assert!(e.to_string().contains("lets others write there"), "{e}");
        }
        let e = prepare_dir(&readable, me + 1, false);
        assert_eq!(
            e.is_ok(),
            me == 0,
            "another user's directory, unless it is root's"
        );
    }

    #[test]
    fn a_file_that_is_no_socket_is_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.sock");
        std::fs::write(&path, "data").unwrap();
        let e = bind(&chosen(&path)).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[tokio::test]
    async fn a_path_too_long_is_a_clear_error() {
        let path = PathBuf::from(format!("/tmp/{}/daemon.sock", "x".repeat(100)));
        let refused = [
            bind(&chosen(&path)).unwrap_err(),
            connect(&path).await.unwrap_err(),
        ];
        for e in refused {
            let shown = e.to_string();
            assert!(
                shown.contains("is 117 bytes, longer than the 107"),
                "{shown}"
            );
        }
        let fits = PathBuf::from(format!("/tmp/{}", "x".repeat(MAX_PATH_BYTES - 5)));
        assert!(check_len(&fits).is_ok());
    }
}
