//! The words of membership — a node's id and what it publishes, the events — and how a node's
//! hash in Redis is written and read back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::script::Fields;
use crate::messaging::{ClusterInfo, NodeId, NodeInfo, NodeWorker};

/// Why a node left the cluster, as another node saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LeaveReason {
    /// Its heartbeat key expired: its master died, hung, or could not reach Redis for longer
    /// than its node timeout.
    Expired,
    /// It left cleanly (its cluster stopped).
    Stopped,
    /// A new epoch of the same name appeared before this node saw the old one go.
    Replaced,
    /// It was gone when this node could read Redis again after failing to.
    Unknown,
}

/// A change of the cluster's membership, or of this node's link to it; delivered to the
/// recipients registered with [`ClusterBuilder::on_node`](crate::ClusterBuilder::on_node).
#[derive(Debug, Clone, PartialEq, Eq, actix::Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub enum NodeEvent {
    /// Another node is in the cluster: one that joined, or one that was there when this node
    /// first read the members.
    Joined(NodeInfo),
    /// Another node left (as it was last seen).
    Left {
        /// The node, as last read.
        node: NodeInfo,
        /// How it went.
        reason: LeaveReason,
    },
    /// This node cannot reach Redis (or cannot take its name back): it goes on supervising and
    /// serving locally and tries again at every beat. Sent once per outage.
    Disconnected {
        /// The first error.
        error: String,
    },
    /// Redis answers again and this node's key had not expired: the node goes on as it was.
    Reconnected {
        /// This node.
        node: NodeId,
    },
    /// This node joined again, with a new epoch: its key had expired (or Redis lost it), or
    /// Redis was unreachable when the cluster started.
    Rejoined {
        /// This node, with its new epoch.
        node: NodeId,
    },
}

/// What the node's heartbeat has done since the cluster started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Beats (and checks) Redis answered.
    pub beats: u64,
    /// Beats that failed (Redis unreachable, too slow, or refusing).
    pub beat_failures: u64,
    /// Values found under the cluster's keys that were not what procactor writes there (the
    /// wrong type, undecodable): skipped, or replaced when under this node's own keys.
    pub bad_entries: u64,
    /// Joins with a new epoch after the first.
    pub rejoins: u64,
    /// Whether the last beat reached Redis.
    pub connected: bool,
    /// Frames published to other nodes (requests, answers, one-way messages, broadcasts,
    /// publishes, confirmations).
    pub frames_sent: u64,
    /// Frames from other nodes taken in (this node's own on the cluster's channel not
    /// counted; bad ones are `bad_entries`).
    pub frames_received: u64,
    /// One-way messages, broadcasts, publishes and confirmations for other nodes that were not
    /// delivered (this node not joined or cut off, the publish failed or reached no one, too
    /// many under way).
    pub frames_dropped: u64,
    /// Requests to other nodes' workers.
    pub requests: u64,
    /// Of those, the ones that ended with an error (no such node, node gone, Redis
    /// unavailable, timeout, or the worker's own failure).
    pub requests_failed: u64,
}

/// The version of the hash's layout; a node reading another version skips it as bad.
const VERSION: &str = "1";
/// The largest hash read back: a node with thousands of workers fits many times over.
const MAX_ENTRY_BYTES: usize = 4 << 20;

/// This node's fields, besides `boot`, `epoch` and `beat`: from the supervisor's
/// [`ClusterInfo`] (`None` before the first answer: no groups yet).
pub(crate) fn fields(
    info: Option<&ClusterInfo>,
    host: &str,
    started: SystemTime,
) -> (Fields, BTreeMap<String, Vec<NodeWorker>>) {
    let groups = info.map(ClusterInfo::node_groups).unwrap_or_default();
    let started_ms = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let pid = info.map_or(std::process::id(), |i| i.master_pid);
    let json = serde_json::to_string(&groups).expect("plain data serializes");
    let fields = vec![
        ("v", VERSION.to_owned()),
        ("pid", pid.to_string()),
        ("host", host.to_owned()),
        ("started", started_ms.to_string()),
        ("groups", json),
    ];
    (fields, groups)
}

/// A member's hash read back as a [`NodeInfo`], or why it cannot be.
pub(crate) fn decode(name: &str, fields: &[(String, Vec<u8>)]) -> Result<NodeInfo, String> {
    let size: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
    if size > MAX_ENTRY_BYTES {
        return Err(format!("{size} bytes, more than {MAX_ENTRY_BYTES}"));
    }
    let get = |field: &str| {
        fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| format!("no field {field:?}"))
    };
    let text = |field: &str| {
        std::str::from_utf8(get(field)?).map_err(|_| format!("field {field:?} is not UTF-8"))
    };
    let number = |field: &str| {
        text(field)?
            .parse::<u64>()
            .map_err(|_| format!("field {field:?} is not a number"))
    };
    let version = text("v")?;
    if version != VERSION {
        return Err(format!(
            "layout version {version:?}, this node reads {VERSION:?}"
        ));
    }
    let groups = serde_json::from_slice(get("groups")?)
        .map_err(|e| format!("field \"groups\" does not decode: {e}"))?;
    Ok(NodeInfo {
        id: NodeId {
            name: name.to_owned(),
            epoch: number("epoch")?,
        },
        host: text("host")?.to_owned(),
        master_pid: u32::try_from(number("pid")?).map_err(|_| "field \"pid\" is too large")?,
        started: UNIX_EPOCH + Duration::from_millis(number("started")?),
        groups,
    })
}

/// A random 128-bit id for this boot, in hex: what tells two masters that claim one name apart.
pub(crate) fn boot_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom (a sandbox): the std hasher's random keys, the time and the pid.
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            h.write_u32(std::process::id());
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WorkerInfo;
    use crate::state::WorkerState;

    fn info() -> ClusterInfo {
        let worker = |id, pid| WorkerInfo {
            id,
            pid,
            state: WorkerState::Ready,
            generation: 2,
            uptime: Duration::ZERO,
            restarts: 1,
            groups: Vec::new(),
        };
        ClusterInfo {
            master_pid: 77,
            workers: vec![worker(0, Some(100)), worker(1, None)],
            groups: BTreeMap::from([("web".to_owned(), vec![0, 1])]),
            nodes: Vec::new(),
        }
    }

    fn as_read(fields: &Fields, epoch: &str) -> Vec<(String, Vec<u8>)> {
        let mut read: Vec<_> = fields
            .iter()
            .map(|(f, v)| ((*f).to_owned(), v.clone().into_bytes()))
            .collect();
        read.push(("epoch".into(), epoch.into()));
        read.push(("boot".into(), b"x".to_vec()));
        read
    }

    #[test]
    fn what_a_node_writes_reads_back() {
        let started = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let (fields, groups) = fields(Some(&info()), "h1", started);
        let node = decode("a", &as_read(&fields, "9")).unwrap();
        assert_eq!(
            node.id,
            NodeId {
                name: "a".into(),
                epoch: 9
            }
        );
        assert_eq!((node.host.as_str(), node.master_pid), ("h1", 77));
        assert_eq!(node.started, started);
        assert_eq!(node.groups, groups);
        assert_eq!(node.pids_by_group()["web"], vec![100]);
        assert_eq!(
            node.groups["web"][1],
            NodeWorker {
                id: 1,
                generation: 2,
                pid: None
            }
        );
        assert_eq!(node.id.to_string(), "a#9");
    }

    #[test]
    fn bad_hashes_say_why() {
        let (fields, _) = fields(None, "h", SystemTime::now());
        let good = as_read(&fields, "3");
        let with = |field: &str, value: &[u8]| {
            let mut read = good.clone();
            read.retain(|(f, _)| f != field);
            read.push((field.to_owned(), value.to_vec()));
            decode("n", &read).unwrap_err()
        };
        assert!(with("groups", b"{not json").contains("groups"));
        assert!(with("epoch", b"-1").contains("epoch"));
        assert!(with("v", b"2").contains("version"));
        assert!(with("pid", &[0xff]).contains("UTF-8"));
        assert!(decode("n", &[]).unwrap_err().contains("no field"));
        assert!(with("host", &vec![b'x'; MAX_ENTRY_BYTES]).contains("bytes"));
    }

    #[test]
    fn boot_ids_are_128_bits_and_differ() {
        let (a, b) = (boot_id(), boot_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
