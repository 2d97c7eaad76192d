//! The first exchange on every connection: who is at the other end (its uid, by
//! `SO_PEERCRED`), and whether both speak the same protocol.
//!
//! Who may talk to a daemon: its own user, and root. Both ends check: the daemon refuses a
//! client of another user with one `forbidden` line, and the client refuses a daemon that runs
//! as another user (not root) — whoever got to bind the socket path first must not be able to
//! receive our commands and the config files they carry.
//!
//! A protocol mismatch is an error on both sides that names both versions, written by the
//! daemon as one `protocol_mismatch` line; nothing else is printed, so `--json` output never
//! gets a banner mixed in. Equal protocols with different build versions talk without a word.

use std::fmt;

use crate::conn::{Conn, LineError};
use crate::proto::{ClientLine, DaemonLine, Hello, Refusal};

/// A peer that may not talk to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Its uid.
    pub(crate) peer: u32,
}

/// Whether the process of uid `peer` may talk to us, of uid `me`: the same user, or root.
pub(crate) fn authorize(peer: u32, me: u32) -> Result<(), Refused> {
    if peer == me || peer == 0 {
        Ok(())
    } else {
        Err(Refused { peer })
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The daemon refused us: we run as `uid`, another user than its own.
    Forbidden { uid: u32 },
    /// The daemon runs as another user (`uid`); we do not talk to it.
    NotOurs { uid: u32 },
    /// The client refused by the daemon, or the daemon that refused the client (server side).
    Refused { peer: u32 },
    /// The two ends speak different protocols.
    Mismatch { client: Hello, daemon: Hello },
    /// The other end closed before its hello.
    Closed,
    /// The other end said something that is no hello.
    Unexpected(String),
    /// The connection failed.
    Line(LineError),
}

impl From<LineError> for HandshakeError {
    fn from(e: LineError) -> Self {
        HandshakeError::Line(e)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Forbidden { uid } => write!(
                f,
                "the daemon refused this connection: it serves its own user and root, not uid {uid}"
            ),
            HandshakeError::NotOurs { uid } => write!(
                f,
                "the daemon at this socket runs as uid {uid}, not as you: not talking to it"
            ),
            HandshakeError::Refused { peer } => write!(f, "refused a client of uid {peer}"),
            HandshakeError::Mismatch { client, daemon } => {
                let pid = daemon.pid.map_or("?".to_string(), |p| p.to_string());
                write!(
                    f,
                    "procactor {} speaks protocol {}, the running daemon ({}, pid {pid}) speaks \
                     protocol {}: stop it (`kill {pid}` stops it and its apps), then start this \
                     version's daemon (`procactor resurrect` brings the apps back)",
                    client.version, client.protocol, daemon.version, daemon.protocol
                )
            }
            HandshakeError::Closed => write!(f, "the other end closed before its hello"),
            HandshakeError::Unexpected(line) => {
                write!(
                    f,
                    "the other end does not speak procactor's protocol: {line}"
                )
            }
            HandshakeError::Line(e) => write!(f, "during the handshake: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The client's side: checks the daemon's uid, says hello, reads the daemon's.
///
/// # Errors
/// A [`HandshakeError`] naming what stops the two from talking.
pub(crate) async fn client(conn: &mut Conn, me: u32) -> Result<Hello, HandshakeError> {
    let daemon_uid = conn
        .peer_uid()
        .map_err(|e| HandshakeError::Line(LineError::Io(e)))?;
    client_with(conn, daemon_uid, me, Hello::ours(None)).await
}

async fn client_with(
    conn: &mut Conn,
    daemon_uid: u32,
    me: u32,
    ours: Hello,
) -> Result<Hello, HandshakeError> {
    if authorize(daemon_uid, me).is_err() {
        return Err(HandshakeError::NotOurs { uid: daemon_uid });
    }
    // A daemon that refuses this user answers before reading the hello and closes, so the
    // hello may meet a closed socket: its refusal is still there to read.
    let sent = conn.send(&ClientLine::Hello(ours.clone())).await;
    let answer = match (conn.recv::<serde_json::Value>().await, sent) {
        (Ok(Some(answer)), _) => answer,
        (_, Err(e)) => return Err(e.into()),
        (Ok(None), Ok(())) => return Err(HandshakeError::Closed),
        (Err(e), Ok(())) => return Err(e.into()),
    };
    let shown = || answer.to_string().chars().take(200).collect::<String>();
    let line: DaemonLine =
        serde_json::from_value(answer.clone()).map_err(|_| HandshakeError::Unexpected(shown()))?;
    match line {
        DaemonLine::Hello(daemon) if daemon.protocol == ours.protocol => Ok(daemon),
        DaemonLine::Hello(daemon) => Err(HandshakeError::Mismatch {
            client: ours,
            daemon,
        }),
        DaemonLine::Error(Refusal::Forbidden { uid }) => Err(HandshakeError::Forbidden { uid }),
        DaemonLine::Error(Refusal::ProtocolMismatch {
            daemon,
            version,
            pid,
            ..
        }) => Err(HandshakeError::Mismatch {
            client: ours,
            daemon: Hello {
                protocol: daemon,
                version,
                pid: Some(pid),
            },
        }),
        DaemonLine::Event(_) | DaemonLine::Outcome(_) => Err(HandshakeError::Unexpected(shown())),
    }
}

/// The daemon's side: checks the client's uid, reads its hello, answers with ours (`pid`) or
/// with the one line that says why not.
///
/// # Errors
/// [`HandshakeError::Refused`] or [`HandshakeError::Mismatch`] once the client has been told.
pub(crate) async fn server(conn: &mut Conn, me: u32, pid: u32) -> Result<Hello, HandshakeError> {
    let peer = conn
        .peer_uid()
        .map_err(|e| HandshakeError::Line(LineError::Io(e)))?;
    server_with(conn, peer, me, Hello::ours(Some(pid))).await
}

async fn server_with(
    conn: &mut Conn,
    peer: u32,
    me: u32,
    ours: Hello,
) -> Result<Hello, HandshakeError> {
    if let Err(Refused { peer }) = authorize(peer, me) {
        conn.send(&DaemonLine::Error(Refusal::Forbidden { uid: peer }))
            .await?;
        return Err(HandshakeError::Refused { peer });
    }
    let client = match conn.recv::<ClientLine>().await {
        Ok(Some(ClientLine::Hello(hello))) => hello,
        Ok(Some(ClientLine::Request(_))) => {
            return Err(HandshakeError::Unexpected(
                "a request before the hello".into(),
            ))
        }
        Ok(None) => return Err(HandshakeError::Closed),
        Err(LineError::Json(e)) => return Err(HandshakeError::Unexpected(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    if client.protocol != ours.protocol {
        let refusal = Refusal::ProtocolMismatch {
            client: client.protocol,
            daemon: ours.protocol,
            version: ours.version.clone(),
            pid: ours.pid.unwrap_or_default(),
        };
        conn.send(&DaemonLine::Error(refusal)).await?;
        return Err(HandshakeError::Mismatch {
            client,
            daemon: ours,
        });
    }
    conn.send(&DaemonLine::Hello(ours)).await?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixStream;

    use super::*;
    use crate::proto::{PROTOCOL, VERSION};

    fn pair() -> (Conn, Conn) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(a), Conn::new(b))
    }

    fn hello(protocol: u32, version: &str, pid: Option<u32>) -> Hello {
        Hello {
            protocol,
            version: version.into(),
            pid,
        }
    }

    #[test]
    fn the_same_user_and_root_are_authorized_no_one_else() {
        assert_eq!(authorize(1000, 1000), Ok(()));
        assert_eq!(
            authorize(0, 1000),
            Ok(()),
            "root may talk to anyone's daemon"
        );
        assert_eq!(authorize(1001, 1000), Err(Refused { peer: 1001 }));
        assert_eq!(
            authorize(1000, 0),
            Err(Refused { peer: 1000 }),
            "root's daemon is root's"
        );
        assert_eq!(authorize(65534, 0), Err(Refused { peer: 65534 }));
    }

    #[tokio::test]
    async fn the_same_protocol_talks_over_a_real_socket_pair() {
        let (mut c, mut d) = pair();
        let me = crate::socket::my_uid();
        let (client, server) = tokio::join!(client(&mut c, me), server(&mut d, me, 4242));
        let daemon = client.unwrap();
        assert_eq!(daemon, hello(PROTOCOL, VERSION, Some(4242)));
        assert_eq!(server.unwrap(), hello(PROTOCOL, VERSION, None));
        // Both now carry requests.
        c.send(&ClientLine::Request(crate::proto::Request::List))
            .await
            .unwrap();
        let got: Option<ClientLine> = d.recv().await.unwrap();
        assert_eq!(got, Some(ClientLine::Request(crate::proto::Request::List)));
    }

    #[tokio::test]
    async fn a_protocol_mismatch_names_both_versions_on_both_sides() {
        let (mut c, mut d) = pair();
        let (client, server) = tokio::join!(
            client_with(&mut c, 7, 7, hello(1, "0.2.0", None)),
            server_with(&mut d, 7, 7, hello(2, "0.3.0", Some(99))),
        );
        let e = client.unwrap_err();
        assert_eq!(
            e.to_string(),
            "procactor 0.2.0 speaks protocol 1, the running daemon (0.3.0, pid 99) speaks \
             protocol 2: stop it (`kill 99` stops it and its apps), then start this version's \
             daemon (`procactor resurrect` brings the apps back)"
        );
        let HandshakeError::Mismatch { client, daemon } = server.unwrap_err() else {
            panic!("not a mismatch")
        };
        assert_eq!((client.protocol, daemon.protocol), (1, 2));
        // A daemon that answers hello with another protocol is a mismatch just the same.
        let (mut c, mut d) = pair();
        let (client, _) = tokio::join!(client_with(&mut c, 7, 7, hello(1, "0.2.0", None)), async {
            let _: Option<ClientLine> = d.recv().await.unwrap();
            d.send(&DaemonLine::Hello(hello(3, "0.9.0", Some(5))))
                .await
                .unwrap();
        });
        assert!(client
            .unwrap_err()
            .to_string()
            .contains("(0.9.0, pid 5) speaks protocol 3"));
    }

    #[tokio::test]
    async fn another_users_client_gets_one_forbidden_line() {
        let (mut c, mut d) = pair();
        let (client, server) = tokio::join!(
            client_with(&mut c, 1000, 1000, Hello::ours(None)),
            server_with(&mut d, 1001, 1000, Hello::ours(Some(1))),
        );
        assert!(matches!(
            server.unwrap_err(),
            HandshakeError::Refused { peer: 1001 }
        ));
        let e = client.unwrap_err();
        assert!(matches!(e, HandshakeError::Forbidden { uid: 1001 }), "{e}");
        assert!(e.to_string().contains("not uid 1001"), "{e}");
    }

    #[tokio::test]
    async fn a_daemon_of_another_user_is_not_talked_to() {
        let (mut c, _d) = pair();
        let e = client_with(&mut c, 1001, 1000, Hello::ours(None))
            .await
            .unwrap_err();
        assert!(matches!(e, HandshakeError::NotOurs { uid: 1001 }), "{e}");
        // Root's daemon is trusted by everyone.
        let (mut c, mut d) = pair();
        let (client, _) = tokio::join!(client_with(&mut c, 0, 1000, Hello::ours(None)), async {
            let _: Option<ClientLine> = d.recv().await.unwrap();
            d.send(&DaemonLine::Hello(Hello::ours(Some(1))))
                .await
                .unwrap();
        });
        client.unwrap();
    }

    #[tokio::test]
    async fn a_silent_or_foreign_peer_is_a_clear_error() {
        let (mut c, d) = pair();
        drop(d);
        let e = client_with(&mut c, 7, 7, Hello::ours(None))
            .await
            .unwrap_err();
        assert!(
            matches!(e, HandshakeError::Closed | HandshakeError::Line(_)),
            "{e}"
        );
        let (mut c, mut d) = pair();
        let (client, _) = tokio::join!(client_with(&mut c, 7, 7, Hello::ours(None)), async {
            let _: Option<ClientLine> = d.recv().await.unwrap();
            d.send(&serde_json::json!({"banner": "welcome"}))
                .await
                .unwrap();
        });
        let e = client.unwrap_err();
        assert!(e.to_string().contains(r#"{"banner":"welcome"}"#), "{e}");
        // A client that skips its hello is not served.
        let (mut c, mut d) = pair();
        let (_, server) = tokio::join!(
            c.send(&ClientLine::Request(crate::proto::Request::Kill)),
            server_with(&mut d, 7, 7, Hello::ours(Some(1))),
        );
        assert!(matches!(server.unwrap_err(), HandshakeError::Unexpected(_)));
    }
}
