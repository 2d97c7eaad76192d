//! The master's end of systemd's notification protocol (`sd_notify(3)`) for one plain program:
//! a datagram socket of its own, named in the program's `NOTIFY_SOCKET`, on which it reports
//! `READY=1`, `STATUS=…` and `WATCHDOG=1`.
//!
//! One socket per process, so whatever arrives on it is about that process, whoever sends it
//! (the program, a `systemd-notify` it runs, a wrapper). The sockets live in one directory per
//! master, `procactor-notify-<pid>` in `$XDG_RUNTIME_DIR` (else the temporary directory),
//! created with mode 0700: only the master's user (and root) may send. A socket's file is
//! removed when it is dropped, and the directory with its last socket. The master's own
//! `NOTIFY_SOCKET` and watchdog variables, if systemd gave it any, never reach a child.
//!
//! Bounds: a datagram is read into a buffer of [`MAX_DATAGRAM`] bytes and one more; a longer
//! one, one that is not UTF-8 or a line that is not `KEY=VALUE` is [`Bad`], for the caller to
//! count. Descriptors sent along (`FDSTORE=1`) are not accepted: the kernel closes them. The
//! queue of unread datagrams is the kernel's, bounded; a sender waits when it is full.
//!
//! Limit: a directory left by a master that was killed stays behind (its sockets are inert).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The variable that names the socket, as systemd sets it.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The variable that holds the watchdog period in microseconds.
pub(crate) const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The variable that holds the pid the watchdog is meant for.
pub(crate) const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// What systemd may have given the master itself: never passed on to a child, which gets its
/// own or none.
pub(crate) const MASTER_ONLY: [&str; 3] = [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID];
/// The longest datagram taken (systemd's own limit, `PIPE_BUF`).
pub(crate) const MAX_DATAGRAM: usize = 4096;

/// What one datagram said; assignments other than these are ignored, as systemd ignores those
/// it does not know.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// `READY=1`.
    pub(crate) ready: bool,
    /// `WATCHDOG=1`.
    pub(crate) watchdog: bool,
    /// `STATUS=…`, the last one in the datagram.
    pub(crate) status: Option<String>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Longer than [`MAX_DATAGRAM`].
    TooLong,
    /// Not UTF-8.
    NotText,
    /// A line without `=`.
    NotAnAssignment,
}

/// Reads one datagram: newline-separated `KEY=VALUE` assignments (empty lines skipped).
pub(crate) fn parse(datagram: &[u8]) -> Result<Notice, Bad> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Bad::TooLong);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| Bad::NotText)?;
    let mut notice = Notice::default();
    for line in text.split('\n').filter(|line| !line.is_empty()) {
        match line.split_once('=').ok_or(Bad::NotAnAssignment)? {
            ("READY", "1") => notice.ready = true,
            ("WATCHDOG", "1") => notice.watchdog = true,
            ("STATUS", status) => notice.status = Some(status.to_owned()),
            _ => {}
        }
    }
    Ok(notice)
}

/// One process's notification socket; see the module docs.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
    buf: Box<[u8; MAX_DATAGRAM + 1]>,
}

impl NotifySocket {
    /// Binds a new socket in the master's notification directory (created if need be). On
    /// the caller's tokio runtime.
    pub(crate) fn bind() -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = RuntimeDir::enter()?;
        let path = dir.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
        let bound = tokio::net::UnixDatagram::bind(&path).or_else(|e| {
            // A file left by an earlier master with this pid: ours to replace.
            if e.kind() != io::ErrorKind::AddrInUse {
                return Err(e);
            }
            std::fs::remove_file(&path)?;
            tokio::net::UnixDatagram::bind(&path)
        });
        match bound {
            Ok(socket) => Ok(Self {
                socket,
                path,
                buf: Box::new([0; MAX_DATAGRAM + 1]),
            }),
            Err(e) => {
                RuntimeDir::leave();
                Err(e)
            }
        }
    }

    /// The socket's path, for `NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram, read.
    ///
    /// # Errors
    /// When the socket cannot be read.
    pub(crate) async fn next(&mut self) -> io::Result<Result<Notice, Bad>> {
        let n = self.socket.recv(&mut self.buf[..]).await?;
        Ok(parse(&self.buf[..n]))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        RuntimeDir::leave();
    }
}

/// The master's notification directory and the sockets in it.
struct RuntimeDir {
    path: PathBuf,
    sockets: usize,
}

static DIR: Mutex<Option<RuntimeDir>> = Mutex::new(None);

impl RuntimeDir {
    /// Counts one more socket in the directory, creating it first if need be (also when it
    /// was removed under the master: `$XDG_RUNTIME_DIR` goes at logout); its path.
    fn enter() -> io::Result<PathBuf> {
        let mut dir = DIR.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = dir.as_mut() {
            if !dir.path.is_dir() {
                dir.path = create()?;
            }
            dir.sockets += 1;
            return Ok(dir.path.clone());
        }
        let path = create()?;
        *dir = Some(RuntimeDir {
            path: path.clone(),
            sockets: 1,
        });
        Ok(path)
    }

    /// Counts one socket less; the directory is removed with its last one.
    fn leave() {
        let mut dir = DIR.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dir.as_mut() {
            d.sockets -= 1;
            if d.sockets == 0 {
                let _ = std::fs::remove_dir(&d.path);
                *dir = None;
            }
        }
    }
}

/// Creates the directory (mode 0700), or takes one of ours that an earlier master with this
/// pid left; never one another user made or may enter (then the next name is tried).
fn create() -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // A socket's path must fit in `sun_path` (108 bytes): a long base falls back to /tmp.
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let base = match base.as_os_str().len() {
        0..=64 => base,
        _ => PathBuf::from("/tmp"),
    };
    // SAFETY: geteuid takes nothing and cannot fail (nix's `getuid` is not in our features).
    let uid = unsafe { libc::geteuid() };
    let mut last = None;
    for attempt in 0..16 {
        let path = base.join(format!("procactor-notify-{}.{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&path)?;
                let ours = meta.is_dir() && meta.uid() == uid;
                if ours && meta.permissions().mode() & 0o077 == 0 {
                    return Ok(path);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no notification directory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_read_and_unknown_ones_ignored() {
        let notice = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=7\n").unwrap();
        assert!(notice.ready && !notice.watchdog);
        assert_eq!(notice.status.as_deref(), Some("serving 3 clients"));
        let notice = parse(b"WATCHDOG=1").unwrap();
        assert!(notice.watchdog && !notice.ready);
        assert_eq!(parse(b"READY=0\n\n").unwrap(), Notice::default());
        assert_eq!(parse(b"").unwrap(), Notice::default());
        let notice = parse(b"STATUS=a=b\nSTATUS=last").unwrap();
        assert_eq!(notice.status.as_deref(), Some("last"));
    }

    #[test]
    fn bad_datagrams_are_told_apart() {
        assert_eq!(parse(&[b'x'; MAX_DATAGRAM + 1]), Err(Bad::TooLong));
        assert_eq!(parse(b"READY=1\n\xff\xfe"), Err(Bad::NotText));
        assert_eq!(parse(b"READY=1\nhello"), Err(Bad::NotAnAssignment));
        let mut full = b"STATUS=".to_vec();
        full.resize(MAX_DATAGRAM, b'.');
        assert!(parse(&full).is_ok(), "4096 bytes are taken");
    }

    #[tokio::test]
    async fn a_socket_reads_what_is_sent_and_is_removed_with_its_directory() {
        use std::os::unix::fs::PermissionsExt;
        let mut socket = NotifySocket::bind().unwrap();
        let second = NotifySocket::bind().unwrap();
        let dir = socket.path().parent().unwrap().to_owned();
        assert_eq!(second.path().parent(), Some(dir.as_path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender
            .send_to(b"READY=1\nSTATUS=up", socket.path())
            .unwrap();
        sender.send_to(&[b'x'; 5000], socket.path()).unwrap();
        let first = socket.next().await.unwrap().unwrap();
        assert!(first.ready);
        assert_eq!(first.status.as_deref(), Some("up"));
        assert_eq!(socket.next().await.unwrap(), Err(Bad::TooLong));

        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists());
        assert!(dir.exists(), "the other socket is still in it");
        drop(second);
        assert!(!dir.exists());
    }
}
