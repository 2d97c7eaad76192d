//! What a slot counts for the cluster's figures ([`WorkerStats`](crate::WorkerStats) and the
//! metrics endpoint), and the snapshot of them a scrape takes (`GetFigures`, answered in
//! `messages`). Pure: no actix, no OS.
//!
//! Every count is a plain integer the proxy adds to on the master's thread as frames pass: no
//! atomic, no lock, no allocation. A scrape asks each proxy for a [`SlotFigures`] (one actor
//! message per slot, answered from these counters and one read of `/proc`); nothing polls the
//! workers between scrapes.
//!
//! Request latency is timed only when the cluster serves metrics (two clock reads per request,
//! which the pipelined bench would feel; a round trip does not).

use std::time::{Duration, Instant, SystemTime};

use crate::error::ExitReason;
use crate::protocol::Envelope;
use crate::state::{WorkerId, WorkerState};

/// Upper bounds (seconds) of the request latency histogram's buckets; `+Inf` follows. From a
/// round trip on an idle machine (tens of microseconds) to a handler that takes seconds.
pub(crate) const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// The bounds in nanoseconds, for placing an observation without floating point.
const LATENCY_NANOS: [u64; 16] = {
    let mut nanos = [0; 16];
    let mut i = 0;
    while i < 16 {
        nanos[i] = (LATENCY_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// A histogram of request latencies: per-bucket counts (not cumulative; the last is `+Inf`),
/// their number and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Latency {
    pub(crate) buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub(crate) count: u64,
    pub(crate) sum: Duration,
}

impl Latency {
    pub(crate) fn observe(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let at = LATENCY_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[at] += 1;
        self.count += 1;
        self.sum += took;
    }
}

/// Why a slot's process was restarted, as the `reason` label says it: one per [`ExitReason`]
/// variant, in [`reason_index`] order.
pub(crate) const RESTART_REASONS: [&str; 9] = [
    "exited",
    "signaled",
    "protocol",
    "shutdown_timeout",
    "ready_timeout",
    "heartbeat_timeout",
    "killed",
    "spawn_failed",
    "watchdog_timeout",
];

/// The position of `reason` in [`RESTART_REASONS`].
pub(crate) fn reason_index(reason: &ExitReason) -> usize {
    match reason {
        ExitReason::Exited(_) => 0,
        ExitReason::Signaled(_) => 1,
        ExitReason::Protocol(_) => 2,
        ExitReason::ShutdownTimeout => 3,
        ExitReason::ReadyTimeout => 4,
        ExitReason::HeartbeatTimeout => 5,
        ExitReason::Killed => 6,
        ExitReason::SpawnFailed(_) => 7,
        ExitReason::WatchdogTimeout => 8,
    }
}

/// Frames of one kind and their bytes (the 4-byte length prefix included), side by side: a
/// frame counted touches one cache line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

/// Frames and bytes to and from a slot's processes by kind, requests, failures, refusals,
/// restarts by reason and request latency, since the slot started.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) sent: [Tally; Envelope::KINDS.len()],
    pub(crate) received: [Tally; Envelope::KINDS.len()],
    /// Requests queued for the worker, by the master or by peers.
    pub(crate) requests: u64,
    /// Requests the worker answered (a reply or a failure).
    pub(crate) replies: u64,
    /// Requests answered with a failure, messages refused or undelivered.
    pub(crate) errors: u64,
    /// Messages refused because the outbox was full ([`CallError::Backpressure`](crate::CallError)).
    pub(crate) refused: u64,
    pub(crate) restarts: [u64; RESTART_REASONS.len()],
    pub(crate) latency: Latency,
}

impl Counters {
    /// A frame of `kind` of `bytes` bytes was queued for the worker.
    pub(crate) fn sent(&mut self, kind: usize, bytes: usize) {
        self.sent_many(kind, 1, bytes);
    }

    /// `frames` frames of `kind`, `bytes` bytes in all, were queued for the worker.
    pub(crate) fn sent_many(&mut self, kind: usize, frames: usize, bytes: usize) {
        let tally = &mut self.sent[kind];
        tally.frames += frames as u64;
        tally.bytes += bytes as u64;
    }

    /// A frame of `kind` with a body of `body` bytes arrived from the worker.
    pub(crate) fn received(&mut self, kind: usize, body: usize) {
        let tally = &mut self.received[kind];
        tally.frames += 1;
        tally.bytes += (crate::codec::HEADER_LEN + body) as u64;
    }

    /// Counts a failure to send (and a refusal, when the outbox was full) when `result` is
    /// one; hands `result` on.
    #[inline]
    pub(crate) fn failure<T>(
        &mut self,
        result: Result<T, crate::error::CallError>,
    ) -> Result<T, crate::error::CallError> {
        if result.is_err() {
            self.errors += 1;
        }
        self.refusal(result)
    }

    /// Counts a refusal when `result` is one for a full outbox; hands `result` on.
    #[inline]
    pub(crate) fn refusal<T>(
        &mut self,
        result: Result<T, crate::error::CallError>,
    ) -> Result<T, crate::error::CallError> {
        if let Err(crate::error::CallError::Backpressure { .. }) = &result {
            self.refused += 1;
        }
        result
    }

    /// A request was answered now (a reply or a failure); it was queued at `since` (when
    /// requests are timed).
    pub(crate) fn replied(&mut self, since: Option<Instant>) {
        self.replies += 1;
        if let Some(since) = since {
            self.latency.observe(since.elapsed());
        }
    }
}

/// Positions in [`Envelope::KINDS`] of the frames the proxy counts as it sends them.
pub(crate) const REQUEST: usize = 2;
pub(crate) const TELL: usize = 5;
pub(crate) const PING: usize = 8;
pub(crate) const ASK_REPLY: usize = 14;
pub(crate) const ASK_FAILED: usize = 15;
pub(crate) const DELIVER: usize = 16;
pub(crate) const PEER_REQUEST: usize = 17;
pub(crate) const NOTIFY: usize = 18;
pub(crate) const CREDIT: usize = 20;

/// One slot's figures at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SlotFigures {
    pub(crate) id: WorkerId,
    pub(crate) group: String,
    pub(crate) state: WorkerState,
    /// The serving process, while one runs.
    pub(crate) pid: Option<u32>,
    pub(crate) generation: u64,
    /// When the serving process started (wall clock), while one runs.
    pub(crate) started: Option<SystemTime>,
    /// CPU time and resident memory of the serving process, from `/proc`.
    pub(crate) cpu: Duration,
    pub(crate) rss_bytes: u64,
    /// Bytes waiting in the serving process's outbox.
    pub(crate) outbox_bytes: usize,
    /// Answers the serving process owes (requests, asks).
    pub(crate) in_flight: usize,
    pub(crate) counters: Counters,
    /// Requests failed because the process they were sent to ended.
    pub(crate) abandoned: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_that_holds_it() {
        let mut latency = Latency::default();
        latency.observe(Duration::from_micros(10));
        latency.observe(Duration::from_micros(50));
        latency.observe(Duration::from_micros(51));
        latency.observe(Duration::from_secs(60));
        assert_eq!(latency.buckets[0], 2, "≤ 50 µs, the bound included");
        assert_eq!(latency.buckets[1], 1, "≤ 100 µs");
        assert_eq!(latency.buckets[LATENCY_BOUNDS.len()], 1, "+Inf");
        assert_eq!(latency.count, 4);
        assert_eq!(
            latency.sum,
            Duration::from_secs(60) + Duration::from_micros(111)
        );
    }

    #[test]
    fn every_exit_reason_has_its_label() {
        let reasons = [
            ExitReason::Exited(1),
            ExitReason::Signaled(9),
            ExitReason::Protocol(crate::error::ProtocolError::UnknownReply { id: 1 }),
            ExitReason::ShutdownTimeout,
            ExitReason::ReadyTimeout,
            ExitReason::HeartbeatTimeout,
            ExitReason::Killed,
            ExitReason::SpawnFailed(crate::error::SpawnError {
                program: "x".into(),
                kind: std::io::ErrorKind::NotFound,
                message: "x".into(),
            }),
            ExitReason::WatchdogTimeout,
        ];
        let labels: Vec<_> = reasons
            .iter()
            .map(|r| RESTART_REASONS[reason_index(r)])
            .collect();
        assert_eq!(labels, RESTART_REASONS);
    }

    #[test]
    fn a_full_outbox_refusal_is_counted_and_nothing_else_is() {
        let mut counters = Counters::default();
        let full = crate::error::CallError::Backpressure {
            worker: 1,
            queued: 10,
            limit: 10,
        };
        assert!(counters.refusal::<()>(Err(full)).is_err());
        assert!(counters
            .refusal::<()>(Err(crate::error::CallError::NotRunning { worker: 1 }))
            .is_err());
        assert!(counters.refusal(Ok(())).is_ok());
        assert_eq!(counters.refused, 1);
    }
}
