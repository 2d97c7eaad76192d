//! How a command ends: its exit status, and the one message it prints on stderr.
//!
//! The statuses are a contract for scripts and systemd (`procactor --help` lists them):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | failed (a reload rolled back, an app not ready, the daemon left mid-request, …) |
//! | 2 | usage or config: bad arguments, a file with an error, an unusable socket path |
//! | 3 | no daemon is running at the socket |
//! | 4 | this client and the running daemon speak different protocol versions |
//! | 5 | refused: the daemon and this client run as different users |

use std::fmt;
use std::process::ExitCode;

use crate::client::ClientError;
use crate::file::FileError;
use crate::handshake::HandshakeError;
use crate::proto::Outcome;
use crate::socket::SocketError;

/// The exit statuses, as listed in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: the command failed.
    Failed = 1,
    /// 2: bad arguments or configuration.
    Usage = 2,
    /// 3: no daemon is running.
    NoDaemon = 3,
    /// 4: protocol version mismatch.
    Mismatch = 4,
    /// 5: refused (another user).
    Refused = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The text `--help` shows after the commands.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status: 0 done, 1 failed, 2 usage or config error, 3 no daemon running,
4 protocol version mismatch with the daemon, 5 refused (another user's daemon).";

/// A command that did not succeed: its status and what to say.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The status to exit with.
    pub(crate) exit: Exit,
    /// The message, printed on stderr.
    pub(crate) message: String,
}

impl Failure {
    /// A failure with this status and message.
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<FileError> for Failure {
    fn from(e: FileError) -> Self {
        Failure::new(Exit::Usage, e.to_string())
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let exit = match &e {
            ClientError::Socket(SocketError::NoDaemon(_)) => Exit::NoDaemon,
            ClientError::Socket(SocketError::TooLong(_) | SocketError::Unsafe(..)) => Exit::Usage,
            ClientError::Handshake(HandshakeError::Mismatch { .. }) => Exit::Mismatch,
            ClientError::Handshake(
                HandshakeError::Forbidden { .. } | HandshakeError::NotOurs { .. },
            )
            | ClientError::Socket(SocketError::Forbidden(_)) => Exit::Refused,
            _ => Exit::Failed,
        };
        Failure::new(exit, e.to_string())
    }
}

/// The status of a request's outcome: 0 when it is ok; 2 for a daemon that found the
/// configuration wrong; 1 otherwise.
pub(crate) fn of_outcome(outcome: &Outcome) -> Result<(), Failure> {
    match (&outcome.ok, &outcome.error) {
        (true, _) => Ok(()),
        (false, Some(e)) if e.kind == "config" => Err(Failure::new(Exit::Usage, &e.message)),
        (false, Some(e)) => Err(Failure::new(Exit::Failed, &e.message)),
        (false, None) => Err(Failure::new(Exit::Failed, "the daemon reports a failure")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::proto::{Hello, OutcomeError};

    #[test]
    fn each_failure_has_its_documented_status() {
        let status = |e: ClientError| Failure::from(e).exit as u8;
        let sock = PathBuf::from("/run/x.sock");
        assert_eq!(
            status(ClientError::Socket(SocketError::NoDaemon(sock.clone()))),
            3
        );
        assert_eq!(
            status(ClientError::Socket(SocketError::TooLong(sock.clone()))),
            2
        );
        assert_eq!(
            status(ClientError::Socket(SocketError::Forbidden(sock.clone()))),
            5
        );
        let hello = |protocol| Hello {
            protocol,
            version: "0".into(),
            pid: None,
        };
        let mismatch = HandshakeError::Mismatch {
            client: hello(1),
            daemon: hello(2),
        };
        assert_eq!(status(ClientError::Handshake(mismatch)), 4);
        assert_eq!(
            status(ClientError::Handshake(HandshakeError::Forbidden { uid: 9 })),
            5
        );
        assert_eq!(
            status(ClientError::Handshake(HandshakeError::NotOurs { uid: 9 })),
            5
        );
        assert_eq!(status(ClientError::Closed), 1);
        let failed = |kind: &str| Outcome {
            ok: false,
            error: Some(OutcomeError {
                kind: kind.into(),
                message: "m".into(),
            }),
            data: serde_json::Value::Null,
        };
        assert_eq!(of_outcome(&failed("config")).unwrap_err().exit, Exit::Usage);
        assert_eq!(
            of_outcome(&failed("reload_failed")).unwrap_err().exit,
            Exit::Failed
        );
        let ok = Outcome {
            ok: true,
            error: None,
            data: serde_json::Value::Null,
        };
        assert!(of_outcome(&ok).is_ok());
        assert_eq!(ExitCode::from(Exit::Refused), ExitCode::from(5));
    }
}
