//! A command's one conversation with the daemon: connect, handshake, one request, its events
//! as they come, its outcome.
//!
//! Why one request per connection: nothing is left half-read between two commands, and a
//! client that dies mid-request leaves the daemon nothing to clean up but a closed socket.
//!
//! Limits: the client waits as long as the daemon takes (a rolling reload of slow apps takes
//! what it takes); Ctrl-C ends the wait, not the daemon's work.

use std::fmt;
use std::path::Path;

use crate::conn::{Conn, LineError};
use crate::handshake::{self, HandshakeError};
use crate::proto::{ClientLine, DaemonLine, Event, Hello, Outcome, Request};
use crate::socket::{self, SocketError};

/// Why a request got no outcome.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The socket could not be reached (no daemon, among others).
    Socket(SocketError),
    /// The daemon and this client cannot talk.
    Handshake(HandshakeError),
    /// The connection failed.
    Line(LineError),
    /// The daemon closed the connection before the outcome.
    Closed,
    /// The daemon sent a line out of place.
    Unexpected(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Socket(e) => write!(f, "{e}"),
            ClientError::Handshake(e) => write!(f, "{e}"),
            ClientError::Line(e) => write!(f, "talking to the daemon: {e}"),
            ClientError::Closed => write!(
                f,
                "the daemon closed the connection before answering (did it stop? see its log)"
            ),
            ClientError::Unexpected(what) => write!(f, "the daemon sent {what} out of place"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<SocketError> for ClientError {
    fn from(e: SocketError) -> Self {
        ClientError::Socket(e)
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        ClientError::Handshake(e)
    }
}

impl From<LineError> for ClientError {
    fn from(e: LineError) -> Self {
        ClientError::Line(e)
    }
}

/// Sends `request` to the daemon at `socket`, hands each event to `on_event`, and returns the
/// daemon's hello and the request's outcome.
///
/// # Errors
/// A [`ClientError`]; [`SocketError::NoDaemon`] inside it when no daemon runs there.
pub(crate) async fn request(
    socket: &Path,
    request: Request,
    mut on_event: impl FnMut(Event),
) -> Result<(Hello, Outcome), ClientError> {
    let mut conn = Conn::new(socket::connect(socket).await?);
    let daemon = handshake::client(&mut conn, socket::my_uid()).await?;
    conn.send(&ClientLine::Request(request)).await?;
    loop {
        match conn.recv::<DaemonLine>().await? {
            None => return Err(ClientError::Closed),
            Some(DaemonLine::Event(event)) => on_event(event),
            Some(DaemonLine::Outcome(outcome)) => return Ok((daemon, outcome)),
            Some(DaemonLine::Hello(_)) => {
                return Err(ClientError::Unexpected("a second hello".into()))
            }
            Some(DaemonLine::Error(_)) => {
                return Err(ClientError::Unexpected("a refusal after the hello".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{OutcomeError, Target};

    /// A daemon that serves one connection with `serve`.
    async fn fake_daemon<F, Fut>(path: &Path, serve: F) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce(Conn, Request) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = socket::bind(&socket::socket_path(Some(path))).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Conn::new(stream);
            handshake::server(&mut conn, socket::my_uid(), std::process::id())
                .await
                .unwrap();
            let Some(ClientLine::Request(request)) = conn.recv().await.unwrap() else {
                panic!("no request")
            };
            serve(conn, request).await;
        })
    }

    #[tokio::test]
    async fn events_stream_then_the_outcome_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.sock");
        let daemon = fake_daemon(&path, |mut conn, request| async move {
            assert_eq!(
                request,
                Request::Reload {
                    target: Target::App("web".into())
                }
            );
            for (instance, state) in [(0, "starting"), (0, "ready")] {
                let event = Event::Instance {
                    app: "web".into(),
                    instance,
                    pid: Some(9),
                    state: state.into(),
                };
                conn.send(&DaemonLine::Event(event)).await.unwrap();
            }
            let failed = Outcome {
                ok: false,
                error: Some(OutcomeError {
                    kind: "reload_failed".into(),
                    message: "web[1] exited".into(),
                }),
                data: serde_json::Value::Null,
            };
            conn.send(&DaemonLine::Outcome(failed)).await.unwrap();
        })
        .await;
        let mut seen = Vec::new();
        let reload = Request::Reload {
            target: Target::App("web".into()),
        };
        let (hello, outcome) = request(&path, reload, |e| seen.push(e.to_string()))
            .await
            .unwrap();
        assert_eq!(hello.pid, Some(std::process::id()));
        assert_eq!(seen, ["web[0] pid 9 starting", "web[0] pid 9 ready"]);
        assert!(!outcome.ok);
        assert_eq!(outcome.error.unwrap().message, "web[1] exited");
        daemon.await.unwrap();
    }

    #[tokio::test]
    async fn a_daemon_that_leaves_mid_request_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("daemon.sock");
        let daemon = fake_daemon(&path, |conn, _| async move { drop(conn) }).await;
        let e = request(&path, Request::List, |_| {}).await.unwrap_err();
        assert!(matches!(e, ClientError::Closed), "{e}");
        daemon.await.unwrap();
    }

    #[tokio::test]
    async fn no_socket_is_no_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        let e = request(&tmp.path().join("none.sock"), Request::List, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Socket(SocketError::NoDaemon(_))),
            "{e}"
        );
    }
}
