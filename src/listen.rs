//! Shared listening sockets: bound once by the master, handed to every worker.
//!
//! The master binds each configured address when the cluster starts and keeps the sockets for
//! the cluster's life; every worker process receives them at fixed descriptors following
//! systemd's socket-activation convention (`sd_listen_fds(3)`): the n sockets are fds 3 to
//! 2 + n, `LISTEN_FDS` holds n, `LISTEN_FDNAMES` their names joined by `:`, and `LISTEN_PID` the
//! worker's own pid. A procactor worker gets them by name from
//! [`WorkerContext::listener`](crate::WorkerContext::listener); any program that understands
//! socket activation can use them as they are. The kernel spreads incoming connections over the
//! workers that accept, and a connection waiting in the backlog survives the restart of any one
//! worker.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// What a listener binds: a TCP address, or a Unix socket path (written `unix:/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A Unix stream socket at this path, with the mode of
    /// [`ClusterConfig::unix_socket_mode`](crate::ClusterConfig::unix_socket_mode) (0600 by
    /// default); refused when a server answers there, a stale socket file is replaced.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("a unix: address needs a path".into()),
            Some(path) => Ok(ListenAddr::Unix(PathBuf::from(path))),
            None => s
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|e| format!("{s:?} is neither host:port nor unix:/path ({e})")),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A socket the master has bound.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
    /// Where it listens (the actual port for a TCP port 0).
    pub(crate) addr: ListenAddr,
}

/// One group's listening sockets: bound when it starts, handed (as duplicates) to every process
/// it starts, and closed when the cluster stops — by its supervisor, however it stops — so a
/// stopped cluster holds no port even while a handle to it is kept. Shared by the group's
/// handle, its slots and the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Listening(std::sync::Arc<std::sync::Mutex<Vec<Bound>>>);

impl Listening {
    /// Binds every listener of `listeners`, in order (see [`bind_all`]).
    pub(crate) fn bind(
        listeners: &[(String, String)],
        unix_mode: u32,
    ) -> Result<Self, ConfigError> {
        let bound = bind_all(listeners, unix_mode)?;
        Ok(Self(std::sync::Arc::new(std::sync::Mutex::new(bound))))
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Vec<Bound>> {
        // A panic elsewhere while it was held leaves the list as it was: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A duplicate of every socket, by name, for a process about to start (none once closed).
    pub(crate) fn duplicates(&self) -> Vec<(String, OwnedFd)> {
        self.sockets()
            .iter()
            .filter_map(|b| Some((b.name.clone(), b.fd.try_clone().ok()?)))
            .collect()
    }

    /// Where the socket `name` listens, while it is open.
    pub(crate) fn local_addr(&self, name: &str) -> Option<ListenAddr> {
        self.sockets()
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.addr.clone())
    }

    /// Closes every socket: the addresses are free from now on (processes that still hold a
    /// duplicate keep theirs until they exit).
    pub(crate) fn close(&self) {
        self.sockets().clear();
    }
}

/// Binds every listener, in order.
///
/// # Errors
/// A [`ConfigError`] for the `listen` field naming the listener that could not be bound.
pub(crate) fn bind_all(
    listeners: &[(String, String)],
    unix_mode: u32,
) -> Result<Vec<Bound>, ConfigError> {
    listeners
        .iter()
        .map(|(name, addr)| {
            bind(name, addr, unix_mode).map_err(|e| ConfigError {
                field: "listen",
                reason: format!("{name}: cannot bind {addr}: {e}"),
            })
        })
        .collect()
}

fn bind(name: &str, addr: &str, unix_mode: u32) -> io::Result<Bound> {
    let addr: ListenAddr = addr
        .parse()
        .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (fd, addr) = match addr {
        ListenAddr::Tcp(addr) => {
            let listener = std::net::TcpListener::bind(addr)?;
            let local = listener.local_addr()?;
            (OwnedFd::from(listener), ListenAddr::Tcp(local))
        }
        ListenAddr::Unix(path) => {
            let listener = bind_unix(&path, unix_mode)?;
            (OwnedFd::from(listener), ListenAddr::Unix(path))
        }
    };
    Ok(Bound {
        name: name.to_owned(),
        fd,
        addr,
    })
}

/// The sockets handed to this process by socket activation (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`), by name, in descriptor order; empty when none were handed to it.
///
/// This is for programs that run outside the worker runtime, for example under a cluster in
/// plain mode or under systemd; a procactor worker uses
/// [`WorkerContext::listener`](crate::WorkerContext::listener) instead. The descriptors are taken
/// (marked close-on-exec and owned by the caller), so call it once, early in `main`.
pub fn activated_sockets() -> Vec<(String, OwnedFd)> {
    crate::os::take_listen_fds()
}

/// Binds a Unix socket at `path` with permissions `mode`: refused when a server answers there;
/// a stale socket file (nobody answers) is replaced. The socket is bound under a temporary name
/// beside `path`, given its mode, then renamed into place: the path never exists with the
/// umask's permissions.
fn bind_unix(path: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another server answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.binding", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "127.0.0.1:80".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/tmp/x.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn tcp_port_zero_binds_a_real_port() {
        let bound = bind_all(&[("http".into(), "127.0.0.1:0".into())], 0o600).unwrap();
        let ListenAddr::Tcp(addr) = &bound[0].addr else {
            panic!()
        };
        assert_ne!(addr.port(), 0);
        assert!(std::net::TcpStream::connect(addr).is_ok(), "it listens");
    }

    #[test]
    fn a_unix_socket_gets_its_mode_a_live_server_is_refused_a_stale_file_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("procactor-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = format!("unix:{}", path.display());
        let listeners = [("s".to_owned(), addr)];

        let first = bind_all(&listeners, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Someone answers there: refused, and the path still reaches the first server.
        let e = bind_all(&listeners, 0o600).unwrap_err();
        assert!(e.reason.contains("another server answers"), "{}", e.reason);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        // Nobody answers any more: the stale file is replaced, with the mode asked for.
        drop(first);
        let second = bind_all(&listeners, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
