//! One connection of the control protocol, as JSON lines of bounded length.
//!
//! Why bounded: a confused or hostile peer must not grow the other's memory. A line longer than
//! [`MAX_LINE_BYTES`], sent or received, is an error and ends the connection (tokio-util's
//! `LinesCodec` stops reading at the bound, before it allocates more); a line that is not valid
//! UTF-8 or not the JSON expected is an error too.

use std::fmt;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use crate::proto::MAX_LINE_BYTES;

/// Why a line could not be sent or read.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The connection failed.
    Io(std::io::Error),
    /// A line longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// A line that is not the JSON expected.
    Json(serde_json::Error),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Io(e) => write!(f, "{e}"),
            LineError::TooLong => write!(f, "a line longer than {MAX_LINE_BYTES} bytes"),
            LineError::Json(e) => write!(f, "a line that is not understood ({e})"),
        }
    }
}

impl std::error::Error for LineError {}

impl From<LinesCodecError> for LineError {
    fn from(e: LinesCodecError) -> Self {
        match e {
            LinesCodecError::MaxLineLengthExceeded => LineError::TooLong,
            LinesCodecError::Io(e) => LineError::Io(e),
        }
    }
}

/// One connection, as JSON lines.
#[derive(Debug)]
pub(crate) struct Conn {
    framed: Framed<UnixStream, LinesCodec>,
}

impl Conn {
    /// Frames `stream` into lines of at most [`MAX_LINE_BYTES`].
    pub(crate) fn new(stream: UnixStream) -> Self {
        Conn {
            framed: Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES)),
        }
    }

    /// The uid of the process at the other end (`SO_PEERCRED`).
    pub(crate) fn peer_uid(&self) -> std::io::Result<u32> {
        Ok(self.framed.get_ref().peer_cred()?.uid())
    }

    /// Sends one line.
    pub(crate) async fn send<T: Serialize>(&mut self, line: &T) -> Result<(), LineError> {
        let text = serde_json::to_string(line).map_err(LineError::Json)?;
        if text.len() > MAX_LINE_BYTES {
            return Err(LineError::TooLong);
        }
        self.framed.send(text).await.map_err(LineError::from)
    }

    /// The next line; `None` when the other end has closed.
    pub(crate) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LineError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line?)
                .map(Some)
                .map_err(LineError::Json),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientLine, DaemonLine, Event, Request};

    #[tokio::test]
    async fn lines_cross_a_socket_and_a_line_too_long_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Conn::new(a), Conn::new(b));
        a.send(&ClientLine::Request(Request::List)).await.unwrap();
        let got: Option<ClientLine> = b.recv().await.unwrap();
        assert_eq!(got, Some(ClientLine::Request(Request::List)));
        // Too long to send …
        let huge = Event::Note {
            message: "x".repeat(MAX_LINE_BYTES),
        };
        assert!(matches!(a.send(&huge).await, Err(LineError::TooLong)));
        // … and too long to receive, from a peer that sends it anyway.
        let (raw, c) = UnixStream::pair().unwrap();
        let mut c = Conn::new(c);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut raw = raw;
            let _ = raw.write_all(&vec![b'x'; MAX_LINE_BYTES + 2]).await;
            raw
        });
        assert!(matches!(
            c.recv::<DaemonLine>().await,
            Err(LineError::TooLong)
        ));
        drop(c); // the writer may still be blocked on a full socket
        drop(writer.await.unwrap());
        // A closed peer reads as None.
        drop(a);
        assert_eq!(b.recv::<ClientLine>().await.unwrap(), None);
    }
}
