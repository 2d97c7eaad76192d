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
//! worker → master   ReloadRequest                     asks for a reload (older workers; now `System { RequestReload }`)
//! worker → master   Send { to, ack, payload }         one-way to the master, a worker, all, a group
//! worker → master   Ask { id, to, payload }           … AskReply { id, payload } or AskFailed
//! worker → master   System { id, op }                 groups, confirmations, info, controls
//! master → worker   Deliver { from, via, ack, .. }    one-way from another process, sender stamped
//! master → worker   PeerRequest { id, from, .. }      … Reply { id } or Failed { id }, routed back
//! master → worker   Notify { payload }                a change to subscribed cache keys
//! worker → master   Log { kind, time_ns, fields }     a record for the cluster's logger
//! master → worker   Credit { worker, count }          one-way sends to `worker` it took in
//! master → worker   ShutdownWith { status }           `Shutdown`, then exit with `status`
//! ```
//!
//! Wire types are flat (no recursion), so a hostile frame cannot nest deeply; byte fields borrow
//! from the frame, so decoding allocates nothing.

use serde::{Deserialize, Serialize};

use crate::messaging::{AskError, Peer, Route, SystemOp, Via};

/// Version of this protocol. A worker whose `Hello` carries another version is ended for good.
pub const PROTOCOL_VERSION: u32 = 2;

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
    /// Worker → master: a one-way message for another process, routed by the master. With
    /// `ack`, the worker is told (`AskReply { id: ack }`) once the receiver has it.
    Send {
        /// Where it goes.
        #[serde(borrow)]
        to: Route<'a>,
        /// The id under which the sender awaits the delivery acknowledgement.
        ack: Option<u64>,
        /// The message, postcard-encoded as the receiver's `Msg` type (or the master's `Event`).
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: a request to the master or to another worker, answered with
    /// `AskReply` or `AskFailed` carrying the same id.
    Ask {
        /// The asker's correlation id.
        id: u64,
        /// Who answers it (`Master` or `Worker`).
        #[serde(borrow)]
        to: Route<'a>,
        /// The request.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: a system operation (groups, confirmations, cluster info, controls),
    /// answered like an `Ask`.
    System {
        /// The asker's correlation id.
        id: u64,
        /// The operation.
        #[serde(borrow)]
        op: SystemOp<'a>,
    },
    /// Master → worker: the answer to the worker's `Ask`, `System` or acknowledged `Send`.
    AskReply {
        /// The asker's correlation id.
        id: u64,
        /// The answer, postcard-encoded.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Master → worker: the worker's `Ask`, `System` or acknowledged `Send` failed.
    AskFailed {
        /// The asker's correlation id.
        id: u64,
        /// Why.
        error: AskError,
    },
    /// Master → worker: a one-way message from another process; the sender is stamped by the
    /// master. With `ack`, the runtime answers `Reply { id: ack }` on receipt.
    Deliver {
        /// Who sent it.
        from: Peer,
        /// How it came.
        via: Via,
        /// Acknowledge receipt under this id.
        ack: Option<u64>,
        /// The message, postcard-encoded as the worker's `Msg` type.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Master → worker: a request from another worker, answered with `Reply` or `Failed`.
    PeerRequest {
        /// Correlation id, as for `Request`.
        id: u64,
        /// Who asks.
        from: Peer,
        /// The request, postcard-encoded as the worker's `Msg` type.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Master → worker: a change to cache keys the worker subscribed to, postcard-encoded as
    /// a [`CacheEvent`](crate::cache::CacheEvent).
    Notify {
        /// The event.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Worker → master: a log record (`ip`, `history` or `error`) for the cluster's logger.
    Log {
        /// Its kind.
        kind: crate::logger::record::Kind,
        /// When it happened, in nanoseconds since the Unix epoch.
        time_ns: u64,
        /// Its fields, as a JSON object (JSON because record fields are free-form values).
        fields: &'a str,
    },
    /// Master → worker: worker `worker` has taken in `count` more of the one-way messages this
    /// worker sent it (`Send` to one worker, no `ack`), in order. The runtime keeps a window of
    /// messages per receiver not yet taken in; a full window is `AskError::Backpressure`.
    Credit {
        /// The receiver.
        worker: u64,
        /// How many messages.
        count: u64,
    },
    /// Master → worker: as `Shutdown`, then the worker exits with `status`.
    ShutdownWith {
        /// The exit status.
        status: i32,
    },
}

impl Envelope<'_> {
    /// The name of every variant, in declaration order; [`index`](Self::index) points into it.
    pub const KINDS: [&'static str; 22] = [
        "Hello",
        "Ready",
        "Request",
        "Reply",
        "Failed",
        "Tell",
        "Event",
        "Shutdown",
        "Ping",
        "Pong",
        "ReloadRequest",
        "Send",
        "Ask",
        "System",
        "AskReply",
        "AskFailed",
        "Deliver",
        "PeerRequest",
        "Notify",
        "Log",
        "Credit",
        "ShutdownWith",
    ];

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
            Envelope::Send { .. } => "Send",
            Envelope::Ask { .. } => "Ask",
            Envelope::System { .. } => "System",
            Envelope::AskReply { .. } => "AskReply",
            Envelope::AskFailed { .. } => "AskFailed",
            Envelope::Deliver { .. } => "Deliver",
            Envelope::PeerRequest { .. } => "PeerRequest",
            Envelope::Notify { .. } => "Notify",
            Envelope::Log { .. } => "Log",
            Envelope::Credit { .. } => "Credit",
            Envelope::ShutdownWith { .. } => "ShutdownWith",
        }
    }

    /// About how many bytes the frame body takes encoded: its payload and text plus room for
    /// the fixed fields. A hint, to size buffers: rarely a little short for long errors.
    pub(crate) fn size_hint(&self) -> usize {
        let carried = match self {
            Envelope::Request { payload, .. }
            | Envelope::Reply { payload, .. }
            | Envelope::Tell { payload }
            | Envelope::Event { payload }
            | Envelope::Send { payload, .. }
            | Envelope::Ask { payload, .. }
            | Envelope::AskReply { payload, .. }
            | Envelope::PeerRequest { payload, .. }
            | Envelope::Notify { payload } => payload.len(),
            Envelope::Deliver { payload, via, .. } => {
                payload.len()
                    + match via {
                        crate::messaging::Via::Group(group) => group.len(),
                        _ => 0,
                    }
            }
            Envelope::Log { fields, .. } => fields.len(),
            Envelope::AskFailed { .. } | Envelope::Failed { .. } => 256,
            _ => 0,
        };
        carried + 64
    }

    /// The variant's position in [`KINDS`](Self::KINDS), for counters.
    pub fn index(&self) -> usize {
        match self {
            Envelope::Hello { .. } => 0,
            Envelope::Ready => 1,
            Envelope::Request { .. } => 2,
            Envelope::Reply { .. } => 3,
            Envelope::Failed { .. } => 4,
            Envelope::Tell { .. } => 5,
            Envelope::Event { .. } => 6,
            Envelope::Shutdown => 7,
            Envelope::Ping { .. } => 8,
            Envelope::Pong { .. } => 9,
            Envelope::ReloadRequest => 10,
            Envelope::Send { .. } => 11,
            Envelope::Ask { .. } => 12,
            Envelope::System { .. } => 13,
            Envelope::AskReply { .. } => 14,
            Envelope::AskFailed { .. } => 15,
            Envelope::Deliver { .. } => 16,
            Envelope::PeerRequest { .. } => 17,
            Envelope::Notify { .. } => 18,
            Envelope::Log { .. } => 19,
            Envelope::Credit { .. } => 20,
            Envelope::ShutdownWith { .. } => 21,
        }
    }
}
