//! The cache's and the logger's figures, as metric families.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::families::{counter, family, gauge};
use crate::backend::{NodeId, NodeInfo, NodeStats};
use crate::cache::{CacheStats, CollectionStats, LockStats};
use crate::logger::LogStats;

/// Per collection: entries, bytes, hits, misses, evictions, expiries; then operations and locks.
pub(super) fn encode_cache(
    cache: &CacheStats,
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    encode_collections(&bounded(&cache.collections), e)?;
    let help = "Cache operations served, by kind and result (error: refused or failed).";
    let mut m = family(
        e,
        "procactor_cache_operations",
        help,
        None,
        MetricType::Counter,
    )?;
    for (op, counts) in &cache.operations {
        counter(&mut m, &[("op", op.as_str()), ("result", "ok")], counts.ok)?;
        counter(
            &mut m,
            &[("op", op.as_str()), ("result", "error")],
            counts.error,
        )?;
    }
    let none: [(&str, &str); 0] = [];
    let help = "Reads of collections never written (they keep no figures of their own).";
    let name = "procactor_cache_unknown_collection_misses";
    let mut m = family(e, name, help, None, MetricType::Counter)?;
    counter(&mut m, &none, cache.unknown_misses)?;
    encode_locks(&cache.locks, e)?;
    for (name, help, value) in [
        (
            "procactor_cache_locks_held",
            "Locks held now.",
            cache.locks_held,
        ),
        (
            "procactor_cache_lock_waiters",
            "Processes waiting in line for a lock now.",
            cache.lock_waiters,
        ),
        (
            "procactor_cache_subscriptions",
            "Subscriptions to change notifications now.",
            cache.subscriptions,
        ),
    ] {
        let mut m = family(e, name, help, None, MetricType::Gauge)?;
        gauge(&mut m, &none, value as f64)?;
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
    collections: &[CollectionStats],
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
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
        for c in collections {
            gauge(&mut m, &[("collection", c.name.as_str())], value(c) as f64)?;
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
        for c in collections {
            counter(&mut m, &[("collection", c.name.as_str())], value(c))?;
        }
    }
    Ok(())
}

/// Grants, waits and their time, timeouts, lease expiries, locks freed by an exit.
fn encode_locks(locks: &LockStats, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let none: [(&str, &str); 0] = [];
    for (name, help, value) in [
        (
            "procactor_cache_lock_grants",
            "Locks granted, at once or after a wait.",
            locks.grants,
        ),
        (
            "procactor_cache_lock_waits",
            "Grants that had to wait in line first.",
            locks.waits,
        ),
        (
            "procactor_cache_lock_timeouts",
            "Waits for a lock that ran out before it was free.",
            locks.timeouts,
        ),
        (
            "procactor_cache_lock_lease_expiries",
            "Leases that ran out while held (the holder lost the lock by time).",
            locks.lease_expiries,
        ),
        (
            "procactor_cache_locks_freed_by_exit",
            "Locks released because their holder's process ended.",
            locks.freed_by_exit,
        ),
    ] {
        let mut m = family(e, name, help, None, MetricType::Counter)?;
        counter(&mut m, &none, value)?;
    }
    let help = "Time each granted lock waited in line (0 when granted at once).";
    let name = "procactor_cache_lock_wait";
    let mut m = family(e, name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    let histogram = &locks.wait_histogram;
    // Per-bucket counts from the cumulative ones, then +Inf.
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(histogram.buckets.len() + 1);
    for (bound, cumulative) in &histogram.buckets {
        buckets.push((bound.as_secs_f64(), cumulative.saturating_sub(below)));
        below = *cumulative;
    }
    buckets.push((f64::INFINITY, histogram.count.saturating_sub(below)));
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        histogram.sum.as_secs_f64(),
        histogram.count,
        &buckets,
        None,
    )
}

/// Records written by kind, dropped by reason and kind, file bytes, rotations and errors, and
/// the queue's fill.
pub(super) fn encode_logs(
    logs: &LogStats,
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let help = "Log records the writer handed to the files and sinks, by kind.";
    let mut m = family(e, "procactor_log_records", help, None, MetricType::Counter)?;
    for (kind, count) in logs.written.iter() {
        counter(&mut m, &[("kind", kind.as_str())], count)?;
    }
    let help = "Log records lost, by reason (queue_full: output lines refused while the writer was behind; writer_closed; sink_error; sink_panicked) and kind.";
    let name = "procactor_log_records_dropped";
    let mut m = family(e, name, help, None, MetricType::Counter)?;
    for (reason, counts) in logs.dropped.by_reason() {
        for (kind, count) in counts.iter() {
            counter(
                &mut m,
                &[("reason", reason), ("kind", kind.as_str())],
                count,
            )?;
        }
    }
    let none: [(&str, &str); 0] = [];
    let help = "Bytes written to the log files.";
    let unit = Some(&Unit::Bytes);
    let mut m = family(e, "procactor_log_file", help, unit, MetricType::Counter)?;
    counter(&mut m, &none, logs.file_bytes)?;
    for (name, help, value) in [
        (
            "procactor_log_file_rotations",
            "Log file rotations.",
            logs.file_rotations,
        ),
        (
            "procactor_log_file_errors",
            "Failed writes to the log files.",
            logs.file_errors,
        ),
    ] {
        let mut m = family(e, name, help, None, MetricType::Counter)?;
        counter(&mut m, &none, value)?;
    }
    let help = "Bytes of log records waiting for the writer.";
    let mut m = family(e, "procactor_log_queue", help, unit, MetricType::Gauge)?;
    gauge(&mut m, &none, logs.queued_bytes as f64)?;
    let help = "The log queue's limit.";
    let mut m = family(
        e,
        "procactor_log_queue_limit",
        help,
        unit,
        MetricType::Gauge,
    )?;
    gauge(&mut m, &none, logs.max_queue_bytes as f64)?;
    Ok(())
}

/// This node's membership: its configured name (every series of the scrape gets it as the
/// `node` label), who it is now, the live nodes it sees, its heartbeat's figures.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) name: String,
    pub(crate) me: Option<NodeId>,
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) stats: NodeStats,
}

/// The node's membership: live nodes, this node's place and its heartbeat's figures.
pub(super) fn encode_membership(
    node: &Membership,
    e: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let none: [(&str, &str); 0] = [];
    let help = "Live nodes of the cluster as this node last read them, itself included.";
    let mut m = family(e, "procactor_cluster_nodes", help, None, MetricType::Gauge)?;
    gauge(&mut m, &none, node.nodes.len() as f64)?;
    let help = "Each live node (member) and its epoch, as this node last read them.";
    let mut m = family(e, "procactor_cluster_node", help, None, MetricType::Info)?;
    for info in &node.nodes {
        let epoch = info.id.epoch.to_string();
        m.encode_info(&[
            ("member", info.id.name.as_str()),
            ("epoch", epoch.as_str()),
            ("host", info.host.as_str()),
        ])?;
    }
    let help = "1 while this node is a member (joined, its last beat answered in time), else 0.";
    let mut m = family(e, "procactor_node_member", help, None, MetricType::Gauge)?;
    gauge(&mut m, &none, f64::from(u8::from(node.me.is_some())))?;
    let help = "1 while this node's last beat reached Redis, else 0.";
    let mut m = family(e, "procactor_node_connected", help, None, MetricType::Gauge)?;
    gauge(&mut m, &none, f64::from(u8::from(node.stats.connected)))?;
    let stats = &node.stats;
    for (name, help, value) in [
        (
            "procactor_node_beats",
            "Heartbeats Redis answered.",
            stats.beats,
        ),
        (
            "procactor_node_beat_failures",
            "Heartbeats that failed (Redis unreachable, too slow or refusing).",
            stats.beat_failures,
        ),
        (
            "procactor_node_bad_entries",
            "Values under the cluster's keys that procactor did not write (skipped or replaced).",
            stats.bad_entries,
        ),
        (
            "procactor_node_rejoins",
            "Joins with a new epoch after the first.",
            stats.rejoins,
        ),
        (
            "procactor_node_frames_sent",
            "Frames published to other nodes (requests, answers, one-way messages, broadcasts).",
            stats.frames_sent,
        ),
        (
            "procactor_node_frames_received",
            "Frames from other nodes taken in.",
            stats.frames_received,
        ),
        (
            "procactor_node_frames_dropped",
            "One-way messages, broadcasts and confirmations for other nodes not delivered.",
            stats.frames_dropped,
        ),
        (
            "procactor_node_requests",
            "Requests to other nodes' workers.",
            stats.requests,
        ),
        (
            "procactor_node_requests_failed",
            "Requests to other nodes' workers that ended with an error.",
            stats.requests_failed,
        ),
    ] {
        let mut m = family(e, name, help, None, MetricType::Counter)?;
        counter(&mut m, &none, value)?;
    }
    Ok(())
}

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
