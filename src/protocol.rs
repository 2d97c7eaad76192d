//! The wire protocol between a master and its workers.
//!
//! Every frame carries one [`Envelope`]. User payloads travel inside it as postcard bytes, so the
//! master routes frames without knowing user types; they are typed again at both edges by the
//! proxy ([`Worker`](crate::Worker)) and the worker runtime.
//!
//! A conversation:
//!
//! ```text
//! worker → master   Hello { protocol_version, pid }   first frame, always
//! worker → master   Ready                             after the `started` hook
//! master → worker   Request { id, payload }           … Reply { id, payload } or Failed { id, error }
//! master → worker   Tell { payload }                  one-way
//! worker → master   Event { payload }                 one-way, to the master's handlers
//! master → worker   Shutdown                          `stopping` hook, then exit 0
//! master → worker   Ping { seq }                      … Pong { seq }, answered off the handler path
//! worker → master   ReloadRequest                     asks for a rolling reload of the cluster
//! ```
//!
//! Wire types are flat (no recursion), so a hostile frame cannot nest deeply; byte fields borrow
//! from the frame, so decoding allocates nothing.

use serde::{Deserialize, Serialize};

/// Version of this protocol. A worker whose `Hello` carries another version is ended for good.
pub const PROTOCOL_VERSION: u32 = 1;

/// One frame body, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope<'a> {
    /// Worker → master, first frame: the protocol the worker speaks and its pid.
    Hello {
        /// The worker's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The worker's process id, as it sees itself.
        pid: u32,
    },
    /// Worker → master: the worker's `started` hook has returned; it takes requests.
    Ready,
    /// Master → worker: a request awaiting exactly one `Reply` or `Failed` with the same id.
    Request {
        /// Correlation id, unique among the requests in flight to this worker.
        id: u64,
        /// The request, postcard-encoded as the worker's `Msg` type.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: the answer to the request `id`.
    Reply {
        /// Correlation id of the request.
        id: u64,
        /// The reply, postcard-encoded as the worker's `Reply` type.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: the request `id` could not be handled (e.g. its payload did not decode).
    Failed {
        /// Correlation id of the request.
        id: u64,
        /// What went wrong, for the caller's error.
        error: &'a str,
    },
    /// Master → worker: a one-way message, postcard-encoded as the worker's `Msg` type.
    Tell {
        /// The message.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: a one-way message, postcard-encoded as the worker's `Event` type.
    Event {
        /// The message.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Master → worker: stop gracefully (run the `stopping` hook, flush, exit 0).
    Shutdown,
    /// Master → worker: a heartbeat, answered at once by the runtime (not by a handler).
    Ping {
        /// Echoed in the `Pong`.
        seq: u64,
    },
    /// Worker → master: the answer to `Ping { seq }`.
    Pong {
        /// The `Ping`'s sequence number.
        seq: u64,
    },
    /// Worker → master: please reload the cluster (honoured only where the config allows it).
    ReloadRequest,
}

impl Envelope<'_> {
    /// The variant's name, for log lines and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Envelope::Hello { .. } => "Hello",
            Envelope::Ready => "Ready",
            Envelope::Request { .. } => "Request",
            Envelope::Reply { .. } => "Reply",
            Envelope::Failed { .. } => "Failed",
            Envelope::Tell { .. } => "Tell",
            Envelope::Event { .. } => "Event",
            Envelope::Shutdown => "Shutdown",
            Envelope::Ping { .. } => "Ping",
            Envelope::Pong { .. } => "Pong",
            Envelope::ReloadRequest => "ReloadRequest",
        }
    }
}
