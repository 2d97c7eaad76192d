//! What travels between nodes on their inbox channels: one postcard-encoded [`Frame`] per
//! Redis pub/sub message, with its size bounded and its addressing checked on arrival.
//!
//! A frame names its sender by (node name, epoch, worker id, pid) and its target by (epoch,
//! worker id): the receiving node refuses a frame for another epoch than its own (it was sent
//! to an earlier boot of this name, or to a later one this boot is not), answering a request
//! with [`AskError::NodeGone`] rather than dropping it. Epochs come from one counter for the
//! whole cluster, so an epoch alone tells node boots apart.
//!
//! The frames published on one channel in one turn of the sender's loop go as one message, a
//! batch ([`BATCH`] then the list of the frames' bytes), when there are several: a message is
//! a thread wake-up and a parse at the receiver and a command in Redis, whatever its size. A
//! lone frame goes as itself, so that a node of the previous layout still reads it; a batch is
//! counted as bad by such a node.
//!
//! Limits: a frame is at most [`MAX_FRAME_BYTES`] (the payload plus some hundred bytes); a
//! larger message is refused at the sender with [`AskError::Invalid`], and a larger frame read
//! from the channel is counted as bad and dropped. A frame that does not decode (another
//! version, garbage published on our channel) is counted and dropped: nothing panics.

use serde::{Deserialize, Serialize};

use crate::error::AskError;
use crate::state::WorkerId;

/// The layout version of a frame; a frame of another version is dropped as bad.
pub(crate) const VERSION: u8 = 1;
/// The largest frame sent or read: 1 MiB (Redis's pub/sub output buffers are the limit that
/// matters: a slow subscriber is disconnected past them).
pub(crate) const MAX_FRAME_BYTES: usize = 1 << 20;

/// The first byte of a batch (a frame's first byte is its [`VERSION`]).
pub(crate) const BATCH: u8 = 2;
/// The most a frame adds to a batch beyond its bytes (its length, a postcard varint).
const BATCH_OVERHEAD: usize = 5;

/// Groups encoded `frames` (each at most [`MAX_FRAME_BYTES`]), in order, into messages of at
/// most [`MAX_FRAME_BYTES`]: a frame alone as itself, several as a batch; each message with
/// the tags of its frames.
pub(crate) fn batches<T>(frames: Vec<(Vec<u8>, T)>) -> Vec<(Vec<u8>, Vec<T>)> {
    let mut groups: Vec<(Vec<Vec<u8>>, Vec<T>, usize)> = Vec::new();
    for (frame, tag) in frames {
        let len = frame.len() + BATCH_OVERHEAD;
        match groups.last_mut() {
            Some((group, tags, size)) if *size + len <= MAX_FRAME_BYTES => {
                group.push(frame);
                tags.push(tag);
                *size += len;
            }
            _ => groups.push((vec![frame], vec![tag], 1 + BATCH_OVERHEAD + len)),
        }
    }
    let message = |mut group: Vec<Vec<u8>>| match group.len() {
        1 => group.pop().unwrap_or_default(),
        _ => {
            let frames: Vec<&serde_bytes::Bytes> =
                group.iter().map(|f| serde_bytes::Bytes::new(f)).collect();
            // A list of byte strings always encodes.
            postcard::to_stdvec(&(BATCH, frames)).unwrap_or_default()
        }
    };
    let groups = groups.into_iter();
    groups
        .map(|(group, tags, _)| (message(group), tags))
        .collect()
}

/// The frames of a batch read from a channel, in order; `None` when `bytes` is not a batch
/// that decodes (it is then read as one frame, which [`Frame::decode`] judges).
pub(crate) fn unbatch(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes.first() != Some(&BATCH) || bytes.len() > MAX_FRAME_BYTES {
        return None;
    }
    let (_, frames): (u8, Vec<&serde_bytes::Bytes>) = postcard::from_bytes(bytes).ok()?;
    Some(frames.into_iter().map(|f| &**f).collect())
}

/// Who sent a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct From {
    /// The sender's node name (where a reply goes).
    pub(crate) node: String,
    /// The sender's node epoch: a reply for another epoch of that name is refused.
    pub(crate) epoch: u64,
    /// The sending worker (`None`: the node's master), and its process (a pid on the
    /// sender's host).
    pub(crate) worker: Option<WorkerId>,
    pub(crate) pid: u32,
}

/// What a frame is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A request under the sender's correlation id `id`; the receiver drops it unanswered
    /// once `deadline_ms` (from when it was sent, as the sender's clock measured it, so only
    /// durations cross hosts) has passed since it arrived — the sender has given up by then.
    Ask { id: u64, deadline_ms: u64 },
    /// A one-way message.
    Tell,
    /// The answer to request `id`.
    Reply {
        id: u64,
        result: Result<Vec<u8>, AskError>,
    },
    /// A one-way message for every worker (`group: None`) or every member of `group` of every
    /// node but the sender's, published on the cluster's channel (no target epoch).
    Fanout { group: Option<String> },
    /// A confirmation of `key` by the sender, for every other node to count.
    Confirm { key: String },
}

impl Kind {
    /// Whether the frame is for every node (published on the cluster's channel) rather than
    /// one epoch of one node.
    pub(crate) fn to_everyone(&self) -> bool {
        matches!(self, Kind::Fanout { .. } | Kind::Confirm { .. })
    }
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub(crate) version: u8,
    pub(crate) from: From,
    /// The target node's epoch.
    pub(crate) to_epoch: u64,
    /// The target worker (unused in a `Reply`, which goes to the node's pending table).
    pub(crate) to_worker: WorkerId,
    pub(crate) kind: Kind,
    /// The message (empty in a `Reply`, whose result carries it).
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

/// Why a frame read from the channel was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    TooLarge(usize),
    Undecodable(String),
    Version(u8),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::TooLarge(n) => write!(f, "{n} bytes, more than {MAX_FRAME_BYTES}"),
            Bad::Undecodable(e) => write!(f, "does not decode: {e}"),
            Bad::Version(v) => write!(f, "layout version {v}, this node reads {VERSION}"),
        }
    }
}

impl Frame {
    /// A frame from this node (`(name, epoch)`) and `from` (a worker and its pid; `None`: the
    /// master) to worker `to_worker` of epoch `to_epoch` (0 and 0 for every node).
    pub(crate) fn new(
        (node, epoch): (String, u64),
        from: Option<(WorkerId, u32)>,
        to_epoch: u64,
        to_worker: WorkerId,
        kind: Kind,
        payload: Vec<u8>,
    ) -> Self {
        let (worker, pid) = match from {
            Some((worker, pid)) => (Some(worker), pid),
            None => (None, std::process::id()),
        };
        Frame {
            version: VERSION,
            from: From {
                node,
                epoch,
                worker,
                pid,
            },
            to_epoch,
            to_worker,
            kind,
            payload,
        }
    }

    /// The frame's bytes, or [`AskError::Invalid`] when it is too large.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, AskError> {
        let bytes = postcard::to_stdvec(self).map_err(|e| AskError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(AskError::Invalid(format!(
                "a message to another node is at most {MAX_FRAME_BYTES} bytes (this one: {})",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// A frame read from the channel.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Bad> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(Bad::TooLarge(bytes.len()));
        }
        // The version is the first byte (a `u8` is one byte in postcard): checked first, so
        // that a later layout is told apart from garbage.
        match bytes.first() {
            Some(&VERSION) => {}
            Some(&BATCH) => return Err(Bad::Undecodable("a batch that does not decode".into())),
            Some(&other) => return Err(Bad::Version(other)),
            None => return Err(Bad::Undecodable("empty".into())),
        }
        postcard::from_bytes(bytes).map_err(|e| Bad::Undecodable(e.to_string()))
    }
}

/// The bytes of the answer from node `me` (name, epoch) to request `id` of epoch `to_epoch`:
/// `result`, or why it cannot go when it is too large.
pub(crate) fn reply(
    me: (String, u64),
    to_epoch: u64,
    id: u64,
    result: Result<Vec<u8>, AskError>,
) -> Vec<u8> {
    let frame = Frame::new(
        me.clone(),
        None,
        to_epoch,
        0,
        Kind::Reply { id, result },
        Vec::new(),
    );
    frame.encode().unwrap_or_else(|e| {
        let kind = Kind::Reply { id, result: Err(e) };
        let small = Frame::new(me, None, to_epoch, 0, kind, Vec::new());
        small.encode().unwrap_or_default()
    })
}

/// What a node does with a frame for it, by the epoch it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addressed {
    /// For this boot.
    Mine,
    /// For an older epoch of this name: refused (the sender hears the node is gone).
    Stale,
    /// For a newer epoch of this name (this boot lost its name to it), or this node has not
    /// joined: dropped without an answer — the name's current holder, subscribed to the same
    /// inbox, answers it.
    NotMine,
}

/// Checks a frame's target epoch against this node's (`None`: not joined, nothing is ours).
pub(crate) fn addressed(frame: &Frame, mine: Option<u64>) -> Addressed {
    match mine {
        Some(epoch) if epoch == frame.to_epoch => Addressed::Mine,
        Some(epoch) if frame.to_epoch < epoch => Addressed::Stale,
        _ => Addressed::NotMine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind) -> Frame {
        Frame {
            version: VERSION,
            from: From {
                node: "a".into(),
                epoch: 7,
                worker: Some(1),
                pid: 42,
            },
            to_epoch: 9,
            to_worker: 0,
            kind,
            payload: b"hi".to_vec(),
        }
    }

    #[test]
    fn frames_round_trip() {
        for kind in [
            Kind::Ask {
                id: 3,
                deadline_ms: 1000,
            },
            Kind::Tell,
            Kind::Reply {
                id: 3,
                result: Err(AskError::NoSuchWorker(5)),
            },
            Kind::Reply {
                id: 4,
                result: Ok(vec![1, 2]),
            },
        ] {
            let f = frame(kind);
            assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn bad_frames_say_why_and_large_ones_are_refused() {
        assert!(matches!(Frame::decode(b""), Err(Bad::Undecodable(_))));
        assert!(matches!(Frame::decode(&[9, 1, 2]), Err(Bad::Version(9))));
        assert!(matches!(
            Frame::decode(&[VERSION, 0xff]),
            Err(Bad::Undecodable(_))
        ));
        let huge = vec![0; MAX_FRAME_BYTES + 1];
        assert!(matches!(Frame::decode(&huge), Err(Bad::TooLarge(_))));
        let mut f = frame(Kind::Tell);
        f.payload = huge;
        assert!(matches!(f.encode(), Err(AskError::Invalid(_))));
    }

    #[test]
    fn frames_go_in_batches_of_at_most_the_largest_frame() {
        let one = frame(Kind::Tell).encode().unwrap();
        let [(lone, tags)]: [_; 1] = batches(vec![(one.clone(), 7)]).try_into().unwrap();
        assert_eq!(
            (lone.as_slice(), tags),
            (one.as_slice(), vec![7]),
            "a lone frame as itself"
        );
        assert_eq!(unbatch(&lone), None);
        let many = (0..3).map(|i| (one.clone(), i)).collect();
        let [(batch, tags)]: [_; 1] = batches(many).try_into().unwrap();
        assert_eq!(tags, vec![0, 1, 2]);
        let frames = unbatch(&batch).unwrap();
        assert_eq!(frames, vec![one.as_slice(); 3]);
        assert_eq!(Frame::decode(frames[2]).unwrap(), frame(Kind::Tell));
        let big = vec![VERSION; MAX_FRAME_BYTES / 2];
        let split = batches(vec![(big.clone(), 0), (big.clone(), 1), (one, 2)]);
        assert_eq!(split.len(), 2, "a batch stays within MAX_FRAME_BYTES");
        assert!(split.iter().all(|(m, _)| m.len() <= MAX_FRAME_BYTES));
        assert_eq!(unbatch(&split[1].0).unwrap()[0], big.as_slice());
        assert!(matches!(
            Frame::decode(&[BATCH, 0xff]),
            Err(Bad::Undecodable(_))
        ));
    }

    #[test]
    fn an_answer_too_large_goes_as_why() {
        let me = ("b".to_owned(), 3);
        let small = Frame::decode(&reply(me.clone(), 7, 5, Ok(vec![1; 10]))).unwrap();
        assert_eq!(
            small.kind,
            Kind::Reply {
                id: 5,
                result: Ok(vec![1; 10])
            }
        );
        assert_eq!((small.to_epoch, small.from.epoch), (7, 3));
        let large = reply(me, 7, 5, Ok(vec![1; MAX_FRAME_BYTES]));
        let Kind::Reply {
            id: 5,
            result: Err(AskError::Invalid(why)),
        } = Frame::decode(&large).unwrap().kind
        else {
            panic!("not the error");
        };
        assert!(why.contains("at most"), "{why}");
    }

    #[test]
    fn a_frame_for_another_epoch_is_stale() {
        let f = frame(Kind::Tell);
        assert_eq!(addressed(&f, Some(9)), Addressed::Mine);
        assert_eq!(addressed(&f, Some(10)), Addressed::Stale);
        assert_eq!(addressed(&f, Some(8)), Addressed::NotMine, "a newer boot's");
        assert_eq!(addressed(&f, None), Addressed::NotMine);
    }
}
