//! The cache's and the logger's figures, as metric families.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::families::{counter, counters, family, gauge, gauges, Scoped};
use crate::backend::{NodeId, NodeInfo, NodeStats};
use crate::cache::{CacheStats, CollectionStats, LockStats};
use crate::logger::LogStats;

/// Per collection: entries, bytes, hits, misses, evictions, expiries; then operations and locks;
/// each cluster's series with its cluster-wide labels.
pub(super) fn encode_cache(
    caches: &[Scoped<'_, &CacheStats>],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let collections: Vec<_> = caches
        .iter()
        .map(|(labels, cache)| (*labels, bounded(&cache.collections)))
        .collect();
    encode_collections(&collections, e)?;
    let help = "Cache operations served, by kind and result (error: refused or failed).";
    let mut m = family(
        e,
        "procactor_cache_operations",
        help,
        None,
        MetricType::Counter,
    )?;
    for (labels, cache) in caches {
        for (op, counts) in &cache.operations {
            for (result, count) in [("ok", counts.ok), ("error", counts.error)] {
                let own = [("op", op.as_str()), ("result", result)];
                counter(&mut m, &(*labels, own), count)?;
            }
        }
    }
    let help = "Reads of collections never written (they keep no figures of their own).";
    let name = "procactor_cache_unknown_collection_misses";
    let misses = caches.iter().map(|(l, c)| (*l, c.unknown_misses));
    counters(e, name, help, None, misses)?;
    encode_locks(caches, e)?;
    for (name, help, value) in [
        (
            "procactor_cache_locks_held",
            "Locks held now.",
            (|c: &CacheStats| c.locks_held) as fn(&CacheStats) -> usize,
        ),
        (
            "procactor_cache_lock_waiters",
            "Processes waiting in line for a lock now.",
            |c| c.lock_waiters,
        ),
        (
            "procactor_cache_subscriptions",
            "Subscriptions to change notifications now.",
            |c| c.subscriptions,
        ),
    ] {
        let values = caches.iter().map(|(l, c)| (*l, value(c) as f64));
        gauges(e, name, help, None, values)?;
    }
    Ok(())
}

/// Collections with a series of their own; the rest are added up under [`OTHER`]. Workers name
/// collections, so their number is theirs to choose: a label must stay bounded.
pub(crate) const MAX_COLLECTIONS: usize = 100;

/// The `collection` label of the collections past [`MAX_COLLECTIONS`].
pub(crate) const OTHER: &str = "_other";

/// The first [`MAX_COLLECTIONS`] collections (by name), then one that adds up the rest.
fn bounded(collections: &[CollectionStats]) -> Vec<CollectionStats> {
    let mut kept: Vec<CollectionStats> =
        collections.iter().take(MAX_COLLECTIONS).cloned().collect();
    let rest = &collections[kept.len()..];
    if !rest.is_empty() {
        let mut other = CollectionStats {
            name: OTHER.to_owned(),
            ..CollectionStats::default()
        };
        for c in rest {
            other.entries += c.entries;
            other.bytes += c.bytes;
            other.hits += c.hits;
            other.misses += c.misses;
            other.evictions += c.evictions;
            other.expiries += c.expiries;
        }
        kept.push(other);
    }
    kept
}

/// Per collection: entries and bytes held, hits, misses, evictions, expiries.
fn encode_collections(
    collections: &[Scoped<'_, Vec<CollectionStats>>],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let each = || {
        collections
            .iter()
            .flat_map(|(labels, cs)| cs.iter().map(move |c| (*labels, c)))
    };
    for (name, help, unit, value) in [
        (
            "procactor_cache_entries",
            "Entries the collection holds, expired ones not yet purged included.",
            None,
            (|c: &CollectionStats| c.entries) as fn(&_) -> usize,
        ),
        (
            "procactor_cache",
            "Bytes the collection holds (keys and values).",
            Some(&Unit::Bytes),
            |c| c.bytes,
        ),
    ] {
        let mut m = family(e, name, help, unit, MetricType::Gauge)?;
        for (labels, c) in each() {
            let own = [("collection", c.name.as_str())];
            gauge(&mut m, &(labels, own), value(c) as f64)?;
        }
    }
    for (name, help, value) in [
        (
            "procactor_cache_hits",
            "Reads that found a live entry.",
            (|c: &CollectionStats| c.hits) as fn(&_) -> u64,
        ),
        ("procactor_cache_misses", "Reads that found none.", |c| {
            c.misses
        }),
        (
            "procactor_cache_evictions",
            "Entries evicted to make room (least recently used).",
            |c| c.evictions,
        ),
        (
            "procactor_cache_expiries",
            "Entries removed because their time to live ran out.",
            |c| c.expiries,
        ),
    ] {
        let mut m = family(e, name, help, None, MetricType::Counter)?;
        for (labels, c) in each() {
            let own = [("collection", c.name.as_str())];
            counter(&mut m, &(labels, own), value(c))?;
        }
    }
    Ok(())
}

/// Grants, waits and their time, timeouts, lease expiries, locks freed by an exit.
fn encode_locks(
    caches: &[Scoped<'_, &CacheStats>],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        (
            "procactor_cache_lock_grants",
            "Locks granted, at once or after a wait.",
            (|l: &LockStats| l.grants) as fn(&LockStats) -> u64,
        ),
        (
            "procactor_cache_lock_waits",
            "Grants that had to wait in line first.",
            |l| l.waits,
        ),
        (
            "procactor_cache_lock_timeouts",
            "Waits for a lock that ran out before it was free.",
            |l| l.timeouts,
        ),
        (
            "procactor_cache_lock_lease_expiries",
            "Leases that ran out while held (the holder lost the lock by time).",
            |l| l.lease_expiries,
        ),
        (
            "procactor_cache_locks_freed_by_exit",
            "Locks released because their holder's process ended.",
            |l| l.freed_by_exit,
        ),
    ] {
        let values = caches.iter().map(|(l, c)| (*l, value(&c.locks)));
        counters(e, name, help, None, values)?;
    }
    let help = "Time each granted lock waited in line (0 when granted at once).";
    let name = "procactor_cache_lock_wait";
    let mut m = family(e, name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, cache) in caches {
        let histogram = &cache.locks.wait_histogram;
        // Per-bucket counts from the cumulative ones, then +Inf.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(histogram.buckets.len() + 1);
        for (bound, cumulative) in &histogram.buckets {
            buckets.push((bound.as_secs_f64(), cumulative.saturating_sub(below)));
            below = *cumulative;
        }
        buckets.push((f64::INFINITY, histogram.count.saturating_sub(below)));
        m.encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                histogram.sum.as_secs_f64(),
                histogram.count,
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// Records written by kind, dropped by reason and kind, file bytes, rotations and errors, and
/// the queue's fill.
pub(super) fn encode_logs(
    logs: &[Scoped<'_, &LogStats>],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let help = "Log records the writer handed to the files and sinks, by kind.";
    let mut m = family(e, "procactor_log_records", help, None, MetricType::Counter)?;
    for (labels, log) in logs {
        for (kind, count) in log.written.iter() {
            counter(&mut m, &(*labels, [("kind", kind.as_str())]), count)?;
        }
    }
    let help = "Log records lost, by reason (queue_full: output lines refused while the writer was behind; writer_closed; sink_error; sink_panicked) and kind.";
    let name = "procactor_log_records_dropped";
    let mut m = family(e, name, help, None, MetricType::Counter)?;
    for (labels, log) in logs {
        for (reason, counts) in log.dropped.by_reason() {
            for (kind, count) in counts.iter() {
                let own = [("reason", reason), ("kind", kind.as_str())];
                counter(&mut m, &(*labels, own), count)?;
            }
        }
    }
    let unit = Some(&Unit::Bytes);
    for (name, help, unit, value) in [
        (
            "procactor_log_file",
            "Bytes written to the log files.",
            unit,
            (|l: &LogStats| l.file_bytes) as fn(&LogStats) -> u64,
        ),
        (
            "procactor_log_file_rotations",
            "Log file rotations.",
            None,
            |l| l.file_rotations,
        ),
        (
            "procactor_log_file_errors",
            "Failed writes to the log files.",
            None,
            |l| l.file_errors,
        ),
    ] {
        counters(
            e,
            name,
            help,
            unit,
            logs.iter().map(|(l, s)| (*l, value(s))),
        )?;
    }
    let help = "Bytes of log records waiting for the writer.";
    let queued = logs.iter().map(|(l, s)| (*l, s.queued_bytes as f64));
    gauges(e, "procactor_log_queue", help, unit, queued)?;
    let help = "The log queue's limit.";
    let limit = logs.iter().map(|(l, s)| (*l, s.max_queue_bytes as f64));
    gauges(e, "procactor_log_queue_limit", help, unit, limit)?;
    Ok(())
}

/// This node's membership: who it is now, the live nodes it sees, its heartbeat's figures
/// (its configured name is the `node` label of every series of its cluster).
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) me: Option<NodeId>,
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) stats: NodeStats,
}

/// The node's membership: live nodes, this node's place and its heartbeat's figures.
pub(super) fn encode_membership(
    nodes: &[Scoped<'_, &Membership>],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    // Only clusters across hosts have a membership; with none, no family.
    if nodes.is_empty() {
        return Ok(());
    }
    let help = "Live nodes of the cluster as this node last read them, itself included.";
    let live = nodes.iter().map(|(l, n)| (*l, n.nodes.len() as f64));
    gauges(e, "procactor_cluster_nodes", help, None, live)?;
    let help = "Each live node (member) and its epoch, as this node last read them.";
    let mut m = family(e, "procactor_cluster_node", help, None, MetricType::Info)?;
    for (labels, node) in nodes {
        for info in &node.nodes {
            let epoch = info.id.epoch.to_string();
            let own = [
                ("member", info.id.name.as_str()),
                ("epoch", epoch.as_str()),
                ("host", info.host.as_str()),
            ];
            m.encode_info(&(*labels, own))?;
        }
    }
    let help = "1 while this node is a member (joined, its last beat answered in time), else 0.";
    let member = nodes
        .iter()
        .map(|(l, n)| (*l, f64::from(u8::from(n.me.is_some()))));
    gauges(e, "procactor_node_member", help, None, member)?;
    let help = "1 while this node's last beat reached Redis, else 0.";
    let connected = nodes
        .iter()
        .map(|(l, n)| (*l, f64::from(u8::from(n.stats.connected))));
    gauges(e, "procactor_node_connected", help, None, connected)?;
    for (name, help, value) in NODE_COUNTERS {
        let values = nodes.iter().map(|(l, n)| (*l, value(&n.stats)));
        counters(e, name, help, None, values)?;
    }
    Ok(())
}

/// The heartbeat's and the messages' counters: name, help, figure.
type NodeCounter = (&'static str, &'static str, fn(&NodeStats) -> u64);

const NODE_COUNTERS: [NodeCounter; 9] = [
    ("procactor_node_beats", "Heartbeats Redis answered.", |s| {
        s.beats
    }),
    (
        "procactor_node_beat_failures",
        "Heartbeats that failed (Redis unreachable, too slow or refusing).",
        |s| s.beat_failures,
    ),
    (
        "procactor_node_bad_entries",
        "Values under the cluster's keys that procactor did not write (skipped or replaced).",
        |s| s.bad_entries,
    ),
    (
        "procactor_node_rejoins",
        "Joins with a new epoch after the first.",
        |s| s.rejoins,
    ),
    (
        "procactor_node_frames_sent",
        "Frames published to other nodes (requests, answers, one-way messages, broadcasts).",
        |s| s.frames_sent,
    ),
    (
        "procactor_node_frames_received",
        "Frames from other nodes taken in.",
        |s| s.frames_received,
    ),
    (
        "procactor_node_frames_dropped",
        "One-way messages, broadcasts and confirmations for other nodes not delivered.",
        |s| s.frames_dropped,
    ),
    (
        "procactor_node_requests",
        "Requests to other nodes' workers.",
        |s| s.requests,
    ),
    (
        "procactor_node_requests_failed",
        "Requests to other nodes' workers that ended with an error.",
        |s| s.requests_failed,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_past_the_limit_are_added_up_under_one_label() {
        let collections: Vec<CollectionStats> = (0..MAX_COLLECTIONS + 5)
            .map(|i| CollectionStats {
                name: format!("c{i:04}"),
                entries: 1,
                hits: 2,
                ..CollectionStats::default()
            })
            .collect();
        let kept = bounded(&collections);
        assert_eq!(kept.len(), MAX_COLLECTIONS + 1);
        let other = kept.last().unwrap();
        assert_eq!(other.name, OTHER);
        assert_eq!((other.entries, other.hits), (5, 10));
        assert_eq!(
            bounded(&collections[..3]).len(),
            3,
            "under the limit, as they are"
        );
    }
}
