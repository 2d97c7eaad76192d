//! One scrape's exposition: the figures the master holds at that moment, encoded with
//! prometheus-client's encoders in the format the scraper asked for.
//!
//! The figures are copied into an [`Exposition`] first (one message per slot, the cache's and the
//! logger's counters, `/proc/self`), then encoded by a custom collector: no registry lives
//! between scrapes, and nothing is counted twice.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::families::{counter, counter_f64, family, gauge};
use super::http::Format;
pub(crate) use super::services::Membership;
use crate::cache::CacheStats;
use crate::logger::LogStats;
use crate::protocol::Envelope;
use crate::proxy::{SlotFigures, Tally, LATENCY_BOUNDS, RESTART_REASONS};
use crate::state::WorkerState;
use crate::supervisor::ClusterFigures;

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exposition {
    pub(crate) cluster: ClusterFigures,
    pub(crate) cache: CacheStats,
    pub(crate) logs: LogStats,
    pub(crate) master: Master,
    /// The node's membership, when the cluster spans hosts.
    pub(crate) node: Option<Membership>,
}

/// The master process's own figures, under the standard `process_*` names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Master {
    pub(crate) cpu: Duration,
    pub(crate) rss_bytes: u64,
    pub(crate) start_time: f64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: u64,
}

impl Master {
    /// This process's figures, from `/proc/self` and `getrlimit`.
    pub(crate) fn read(started: SystemTime) -> Self {
        let (cpu, rss_bytes) = crate::messaging::proc_usage(std::process::id());
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
        let max_fds = max_open_files().unwrap_or(0);
        Self {
            cpu,
            rss_bytes,
            start_time: process_start_time().unwrap_or_else(|| seconds_since_epoch(started)),
            open_fds,
            max_fds,
        }
    }
}

/// This process's soft limit of open files, from `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// When this process started, in seconds since the epoch: its start in clock ticks after boot
/// (`/proc/self/stat`, field 22) plus the boot time (`btime` of `/proc/stat`).
fn process_start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(btime + ticks / hz as f64)
}

fn seconds_since_epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

impl Exposition {
    /// The exposition's text in `format`.
    pub(crate) fn encode(self, format: Format) -> String {
        let mut registry = match &self.node {
            Some(node) => Registry::with_labels(std::iter::once((
                Cow::Borrowed("node"),
                Cow::Owned(node.name.clone()),
            ))),
            None => Registry::default(),
        };
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
        };
        // Writing to a String cannot fail, and every name and label here is ours.
        debug_assert!(encoded.is_ok(), "{encoded:?}");
        text
    }
}

/// Label values of one slot.
struct Slot<'a> {
    group: &'a str,
    worker: String,
}

impl<'a> Slot<'a> {
    fn of(figures: &'a SlotFigures) -> Self {
        Self {
            group: &figures.group,
            worker: figures.id.to_string(),
        }
    }

    fn labels(&self) -> [(&str, &str); 2] {
        [("group", self.group), ("worker", &self.worker)]
    }

    fn with<'b>(&'b self, key: &'b str, value: &'b str) -> [(&'b str, &'b str); 3] {
        [
            ("group", self.group),
            ("worker", &self.worker),
            (key, value),
        ]
    }
}

/// The snake_case name of a state, as the `state` label says it.
fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Spawning => "spawning",
        WorkerState::Starting => "starting",
        WorkerState::Online => "online",
        WorkerState::Ready => "ready",
        WorkerState::Stopping => "stopping",
        WorkerState::Exited => "exited",
        WorkerState::Backoff => "backoff",
        WorkerState::Failed => "failed",
    }
}

const STATES: [WorkerState; 8] = [
    WorkerState::Spawning,
    WorkerState::Starting,
    WorkerState::Online,
    WorkerState::Ready,
    WorkerState::Stopping,
    WorkerState::Exited,
    WorkerState::Backoff,
    WorkerState::Failed,
];

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_master(&mut encoder)?;
        self.encode_workers(&mut encoder)?;
        self.encode_traffic(&mut encoder)?;
        self.encode_reloads(&mut encoder)?;
        super::services::encode_cache(&self.cache, &mut encoder)?;
        super::services::encode_logs(&self.logs, &mut encoder)?;
        match &self.node {
            Some(node) => super::services::encode_membership(node, &mut encoder),
            None => Ok(()),
        }
    }
}

impl Exposition {
    fn encode_master(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let none: [(&str, &str); 0] = [];
        let master = &self.master;
        let mut m = family(
            e,
            "procactor_build",
            "procactor's version.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        let cpu = "Total user and system CPU time of the master process.";
        let mut m = family(
            e,
            "process_cpu",
            cpu,
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        counter_f64(&mut m, &none, master.cpu.as_secs_f64())?;
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "Resident memory of the master process.",
                Some(&Unit::Bytes),
                master.rss_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the master process since the Unix epoch.",
                Some(&Unit::Seconds),
                master.start_time,
            ),
            (
                "process_open_fds",
                "Open file descriptors of the master process.",
                None,
                master.open_fds as f64,
            ),
            (
                "process_max_fds",
                "The master process's limit of open file descriptors.",
                None,
                master.max_fds as f64,
            ),
        ] {
            let mut m = family(e, name, help, unit, MetricType::Gauge)?;
            gauge(&mut m, &none, value)?;
        }
        Ok(())
    }

    fn encode_workers(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let slots = &self.cluster.slots;
        let help = "1 when the worker is ready to serve, else 0.";
        let mut m = family(e, "procactor_worker_up", help, None, MetricType::Gauge)?;
        for s in slots {
            gauge(
                &mut m,
                &Slot::of(s).labels(),
                f64::from(u8::from(s.state == WorkerState::Ready)),
            )?;
        }
        let help = "The worker's state: 1 for the one it is in, 0 for the others.";
        let mut m = family(e, "procactor_worker_state", help, None, MetricType::Gauge)?;
        for s in slots {
            let slot = Slot::of(s);
            for state in STATES {
                gauge(
                    &mut m,
                    &slot.with("state", state_name(state)),
                    f64::from(u8::from(s.state == state)),
                )?;
            }
        }
        let help = "The worker's process and generation (the pid is a label here only).";
        let mut m = family(e, "procactor_worker", help, None, MetricType::Info)?;
        for s in slots {
            let (Some(pid), slot) = (s.pid, Slot::of(s)) else {
                continue;
            };
            let (pid, generation) = (pid.to_string(), s.generation.to_string());
            m.encode_info(&[
                ("group", slot.group),
                ("worker", &slot.worker),
                ("pid", &pid),
                ("generation", &generation),
            ])?;
        }
        let help = "Processes of the worker started after its first, by why the last one ended.";
        let mut m = family(
            e,
            "procactor_worker_restarts",
            help,
            None,
            MetricType::Counter,
        )?;
        for s in slots {
            let slot = Slot::of(s);
            for (reason, count) in RESTART_REASONS.iter().zip(s.counters.restarts) {
                counter(&mut m, &slot.with("reason", reason), count)?;
            }
        }
        self.encode_resources(e)
    }

    /// Start time, CPU and memory of each worker's running process, from `/proc`.
    fn encode_resources(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let running = || self.cluster.slots.iter().filter(|s| s.pid.is_some());
        let help = "Start time of the worker's process since the Unix epoch.";
        let unit = Some(&Unit::Seconds);
        let mut m = family(
            e,
            "procactor_worker_start_time",
            help,
            unit,
            MetricType::Gauge,
        )?;
        for s in running() {
            let at = s.started.map_or(0.0, seconds_since_epoch);
            gauge(&mut m, &Slot::of(s).labels(), at)?;
        }
        let help = "User and system CPU time of the worker's current process.";
        let mut m = family(e, "procactor_worker_cpu", help, unit, MetricType::Counter)?;
        for s in running() {
            counter_f64(&mut m, &Slot::of(s).labels(), s.cpu.as_secs_f64())?;
        }
        let help = "Resident memory of the worker's current process.";
        let unit = Some(&Unit::Bytes);
        let name = "procactor_worker_resident_memory";
        let mut m = family(e, name, help, unit, MetricType::Gauge)?;
        for s in running() {
            gauge(&mut m, &Slot::of(s).labels(), s.rss_bytes as f64)?;
        }
        Ok(())
    }

    /// Frames, bytes, requests, answers, refusals and latency of each slot.
    fn encode_traffic(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let slots = &self.cluster.slots;
        let help = "Frames to (sent) and from (received) the worker, by kind; kinds never seen are left out.";
        let mut m = family(
            e,
            "procactor_worker_frames",
            help,
            None,
            MetricType::Counter,
        )?;
        for s in slots {
            by_kind(&mut m, s, |t| t.frames)?;
        }
        let help = "Bytes of the frames to and from the worker, length prefixes included, by kind.";
        let unit = Some(&Unit::Bytes);
        let mut m = family(e, "procactor_worker_frame", help, unit, MetricType::Counter)?;
        for s in slots {
            by_kind(&mut m, s, |t| t.bytes)?;
        }
        for (name, help, value) in [
            (
                "procactor_worker_requests",
                "Requests made to the worker, by the master or by other workers.",
                (|s: &SlotFigures| s.counters.requests) as fn(&SlotFigures) -> u64,
            ),
            (
                "procactor_worker_replies",
                "Requests the worker answered (a reply or a failure).",
                |s| s.counters.replies,
            ),
            (
                "procactor_worker_errors",
                "Requests that failed (answered with a failure, or lost when the worker's process ended) and messages that could not be sent or delivered to the worker.",
                |s| s.counters.errors + s.abandoned,
            ),
            (
                "procactor_worker_backpressure_refusals",
                "Messages refused because the worker's outbox held its limit.",
                |s| s.counters.refused,
            ),
        ] {
            let mut m = family(e, name, help, None, MetricType::Counter)?;
            for s in slots {
                counter(&mut m, &Slot::of(s).labels(), value(s))?;
            }
        }
        for (name, help, unit, value) in [
            (
                "procactor_worker_outbox",
                "Bytes waiting to be written to the worker.",
                Some(&Unit::Bytes),
                (|s: &SlotFigures| s.outbox_bytes) as fn(&SlotFigures) -> usize,
            ),
            (
                "procactor_worker_in_flight_requests",
                "Requests the worker has not answered yet.",
                None,
                |s| s.in_flight,
            ),
        ] {
            let mut m = family(e, name, help, unit, MetricType::Gauge)?;
            for s in slots {
                gauge(&mut m, &Slot::of(s).labels(), value(s) as f64)?;
            }
        }
        self.encode_latency(e)
    }

    fn encode_latency(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let help = "Time from queuing a request to the worker to its answer (timed while metrics are served).";
        let unit = Some(&Unit::Seconds);
        let name = "procactor_worker_request_duration";
        let mut m = family(e, name, help, unit, MetricType::Histogram)?;
        for s in &self.cluster.slots {
            let latency = &s.counters.latency;
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(latency.buckets)
                .collect();
            m.encode_family(&Slot::of(s).labels())?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    latency.sum.as_secs_f64(),
                    latency.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn encode_reloads(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let none: [(&str, &str); 0] = [];
        let r = &self.cluster.reloads;
        let help = "Rolling reloads started.";
        let mut m = family(
            e,
            "procactor_reloads_started",
            help,
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &none, r.started)?;
        let help = "Rolling reloads ended: succeeded, rolled_back (a replacement failed; the rest kept their old processes) or stopped (the cluster stopped).";
        let mut m = family(e, "procactor_reloads", help, None, MetricType::Counter)?;
        for (result, count) in [
            ("succeeded", r.succeeded),
            ("rolled_back", r.rolled_back),
            ("stopped", r.stopped),
        ] {
            counter(&mut m, &[("result", result)], count)?;
        }
        let (done, of) = r.current.unwrap_or_default();
        for (name, help, value) in [
            (
                "procactor_reload_in_progress",
                "1 while a rolling reload runs.",
                f64::from(u8::from(r.current.is_some())),
            ),
            (
                "procactor_reload_workers_replaced",
                "Workers the running reload has replaced so far (0 when none runs).",
                done as f64,
            ),
            (
                "procactor_reload_workers",
                "Workers the running reload replaces (0 when none runs).",
                of as f64,
            ),
        ] {
            let mut m = family(e, name, help, None, MetricType::Gauge)?;
            gauge(&mut m, &none, value)?;
        }
        if let Some(took) = r.last_duration {
            let help = "How long the last finished reload took.";
            let name = "procactor_reload_last_duration";
            let mut m = family(e, name, help, Some(&Unit::Seconds), MetricType::Gauge)?;
            gauge(&mut m, &none, took.as_secs_f64())?;
        }
        Ok(())
    }
}

/// One slot's per-kind figure (`of` a tally: frames or bytes), sent and received, leaving out
/// the kinds never seen.
fn by_kind(
    m: &mut MetricEncoder<'_>,
    s: &SlotFigures,
    of: fn(&Tally) -> u64,
) -> Result<(), std::fmt::Error> {
    let slot = Slot::of(s);
    for (direction, tallies) in [
        ("sent", &s.counters.sent),
        ("received", &s.counters.received),
    ] {
        for (kind, tally) in Envelope::KINDS.iter().zip(tallies) {
            let count = of(tally);
            if count > 0 {
                let labels = [
                    ("group", slot.group),
                    ("worker", &slot.worker),
                    ("direction", direction),
                    ("kind", kind),
                ];
                counter(m, &labels, count)?;
            }
        }
    }
    Ok(())
}
