//! One scrape's exposition: the figures the master holds at that moment, encoded with
//! prometheus-client's encoders in the format the scraper asked for.
//!
//! The figures are copied into an [`Exposition`] first (one message per slot, the cache's and the
//! logger's counters, `/proc/self`), then encoded by a custom collector: no registry lives
//! between scrapes, and nothing is counted twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::families::{counter, counter_f64, counters, family, gauge, gauges, Scoped};
use super::http::Format;
pub(crate) use super::services::Membership;
use crate::cache::CacheStats;
use crate::logger::LogStats;
use crate::protocol::Envelope;
use crate::proxy::{SlotFigures, Tally, LATENCY_BOUNDS, RESTART_REASONS};
use crate::state::WorkerState;
use crate::supervisor::ClusterFigures;

/// Labels every series of a part of the scrape carries before its own: keys are ours.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// Everything one scrape reports: the process's figures once, then each cluster's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exposition {
    pub(crate) master: Master,
    /// The labels of the process's series: a cluster's own endpoint gives them its node's.
    pub(crate) master_labels: Labels,
    pub(crate) clusters: Vec<Part>,
}

/// One cluster's figures at the scrape, and the labels that tell its series apart.
#[derive(Debug, Clone, Default)]
pub(crate) struct Part {
    /// On every series of the cluster: its node, when it spans hosts.
    pub(crate) labels: Labels,
    /// On its cluster-wide series (reloads, cache, logs, membership), which have no `group`
    /// of their own: `labels`, and in an exporter the group it was added by.
    pub(crate) scope: Labels,
    pub(crate) cluster: ClusterFigures,
    pub(crate) cache: CacheStats,
    pub(crate) logs: LogStats,
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
    /// The exposition's text in `format`, then the families of `extra` (the embedding
    /// program's, registered with an [`Exporter`](super::Exporter)).
    pub(crate) fn encode(self, format: Format, extra: &Registry) -> String {
        let mut ours = Registry::default();
        ours.register_collector(Box::new(self));
        let mut text = String::new();
        let encoded = match format {
            Format::Prometheus => {
                use prometheus_client::encoding::prometheus_text::encode;
                encode(&mut text, &ours).and_then(|()| encode(&mut text, extra))
            }
            Format::OpenMetrics => {
                use prometheus_client::encoding::text::{encode_eof, encode_registry};
                encode_registry(&mut text, &ours)
                    .and_then(|()| encode_registry(&mut text, extra))
                    .and_then(|()| encode_eof(&mut text))
            }
        };
        // Writing to a String cannot fail, and every name and label here is ours (a program's
        // own families are encoded by prometheus-client as it would encode them alone).
        debug_assert!(encoded.is_ok(), "{encoded:?}");
        text
    }

    /// Every slot of every cluster, with its cluster.
    fn slots(&self) -> impl Iterator<Item = (&Part, &SlotFigures)> + '_ {
        self.clusters
            .iter()
            .flat_map(|part| part.cluster.slots.iter().map(move |s| (part, s)))
    }

    /// Each cluster's cluster-wide labels with one of its figures.
    fn scoped<'a, T>(&'a self, of: impl Fn(&'a Part) -> T) -> Vec<Scoped<'a, T>> {
        self.clusters
            .iter()
            .map(|part| (part.scope.as_slice(), of(part)))
            .collect()
    }
}

/// Label values of one slot.
struct Slot<'a> {
    base: &'a [(&'static str, String)],
    group: &'a str,
    worker: String,
}

impl<'a> Slot<'a> {
    fn of(part: &'a Part, figures: &'a SlotFigures) -> Self {
        Self {
            base: &part.labels,
            group: &figures.group,
            worker: figures.id.to_string(),
        }
    }

    fn labels(&self) -> impl EncodeLabelSet + '_ {
        (self.base, [("group", self.group), ("worker", &self.worker)])
    }

    fn with<'b>(&'b self, key: &'b str, value: &'b str) -> impl EncodeLabelSet + 'b {
        let own = [
            ("group", self.group),
            ("worker", &self.worker),
            (key, value),
        ];
        (self.base, own)
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
        // With no cluster (an exporter's before the first is added), no cluster family.
        if self.clusters.is_empty() {
            return Ok(());
        }
        self.encode_workers(&mut encoder)?;
        self.encode_traffic(&mut encoder)?;
        self.encode_reloads(&mut encoder)?;
        super::services::encode_cache(&self.scoped(|p| &p.cache), &mut encoder)?;
        super::services::encode_logs(&self.scoped(|p| &p.logs), &mut encoder)?;
        let nodes: Vec<_> = self
            .scoped(|p| p.node.as_ref())
            .into_iter()
            .filter_map(|(labels, node)| Some((labels, node?)))
            .collect();
        super::services::encode_membership(&nodes, &mut encoder)
    }
}

impl Exposition {
    fn encode_master(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let labels = self.master_labels.as_slice();
        let master = &self.master;
        let mut m = family(
            e,
            "procactor_build",
            "procactor's version.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&(labels, [("version", env!("CARGO_PKG_VERSION"))]))?;
        let cpu = "Total user and system CPU time of the master process.";
        let mut m = family(
            e,
            "process_cpu",
            cpu,
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        counter_f64(&mut m, &labels, master.cpu.as_secs_f64())?;
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
            gauge(&mut m, &labels, value)?;
        }
        Ok(())
    }

    fn encode_workers(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let help = "1 when the worker is ready to serve, else 0.";
        let mut m = family(e, "procactor_worker_up", help, None, MetricType::Gauge)?;
        for (p, s) in self.slots() {
            gauge(
                &mut m,
                &Slot::of(p, s).labels(),
                f64::from(u8::from(s.state == WorkerState::Ready)),
            )?;
        }
        let help = "The worker's state: 1 for the one it is in, 0 for the others.";
        let mut m = family(e, "procactor_worker_state", help, None, MetricType::Gauge)?;
        for (p, s) in self.slots() {
            let slot = Slot::of(p, s);
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
        for (p, s) in self.slots() {
            let (Some(pid), slot) = (s.pid, Slot::of(p, s)) else {
                continue;
            };
            let (pid, generation) = (pid.to_string(), s.generation.to_string());
            let own = [
                ("group", slot.group),
                ("worker", &slot.worker),
                ("pid", &pid),
                ("generation", &generation),
            ];
            m.encode_info(&(slot.base, own))?;
        }
        let help = "Processes of the worker started after its first, by why the last one ended.";
        let mut m = family(
            e,
            "procactor_worker_restarts",
            help,
            None,
            MetricType::Counter,
        )?;
        for (p, s) in self.slots() {
            let slot = Slot::of(p, s);
            for (reason, count) in RESTART_REASONS.iter().zip(s.counters.restarts) {
                counter(&mut m, &slot.with("reason", reason), count)?;
            }
        }
        self.encode_resources(e)
    }

    /// Start time, CPU and memory of each worker's running process, from `/proc`.
    fn encode_resources(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let running = || self.slots().filter(|(_, s)| s.pid.is_some());
        let help = "Start time of the worker's process since the Unix epoch.";
        let unit = Some(&Unit::Seconds);
        let mut m = family(
            e,
            "procactor_worker_start_time",
            help,
            unit,
            MetricType::Gauge,
        )?;
        for (p, s) in running() {
            let at = s.started.map_or(0.0, seconds_since_epoch);
            gauge(&mut m, &Slot::of(p, s).labels(), at)?;
        }
        let help = "User and system CPU time of the worker's current process.";
        let mut m = family(e, "procactor_worker_cpu", help, unit, MetricType::Counter)?;
        for (p, s) in running() {
            counter_f64(&mut m, &Slot::of(p, s).labels(), s.cpu.as_secs_f64())?;
        }
        let help = "Resident memory of the worker's current process.";
        let unit = Some(&Unit::Bytes);
        let name = "procactor_worker_resident_memory";
        let mut m = family(e, name, help, unit, MetricType::Gauge)?;
        for (p, s) in running() {
            gauge(&mut m, &Slot::of(p, s).labels(), s.rss_bytes as f64)?;
        }
        Ok(())
    }

    /// Frames, bytes, requests, answers, refusals and latency of each slot.
    fn encode_traffic(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let help = "Frames to (sent) and from (received) the worker, by kind; kinds never seen are left out.";
        let mut m = family(
            e,
            "procactor_worker_frames",
            help,
            None,
            MetricType::Counter,
        )?;
        for (p, s) in self.slots() {
            by_kind(&mut m, &Slot::of(p, s), s, |t| t.frames)?;
        }
        let help = "Bytes of the frames to and from the worker, length prefixes included, by kind.";
        let unit = Some(&Unit::Bytes);
        let mut m = family(e, "procactor_worker_frame", help, unit, MetricType::Counter)?;
        for (p, s) in self.slots() {
            by_kind(&mut m, &Slot::of(p, s), s, |t| t.bytes)?;
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
            for (p, s) in self.slots() {
                counter(&mut m, &Slot::of(p, s).labels(), value(s))?;
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
            for (p, s) in self.slots() {
                gauge(&mut m, &Slot::of(p, s).labels(), value(s) as f64)?;
            }
        }
        self.encode_latency(e)
    }

    fn encode_latency(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let help = "Time from queuing a request to the worker to its answer (timed while metrics are served).";
        let unit = Some(&Unit::Seconds);
        let name = "procactor_worker_request_duration";
        let mut m = family(e, name, help, unit, MetricType::Histogram)?;
        for (p, s) in self.slots() {
            let latency = &s.counters.latency;
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(latency.buckets)
                .collect();
            m.encode_family(&Slot::of(p, s).labels())?
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
        let reloads = self.scoped(|p| &p.cluster.reloads);
        let help = "Rolling reloads started.";
        let name = "procactor_reloads_started";
        let started = reloads.iter().map(|(l, r)| (*l, r.started));
        counters(e, name, help, None, started)?;
        let help = "Rolling reloads ended: succeeded, rolled_back (a replacement failed; the rest kept their old processes) or stopped (the cluster stopped).";
        let mut m = family(e, "procactor_reloads", help, None, MetricType::Counter)?;
        for (labels, r) in &reloads {
            for (result, count) in [
                ("succeeded", r.succeeded),
                ("rolled_back", r.rolled_back),
                ("stopped", r.stopped),
            ] {
                counter(&mut m, &(*labels, [("result", result)]), count)?;
            }
        }
        // Per cluster: whether one runs, replaced so far, of how many.
        let progress: Vec<_> = reloads
            .iter()
            .map(|(l, r)| {
                let (done, of) = r.current.unwrap_or_default();
                let running = f64::from(u8::from(r.current.is_some()));
                (*l, [running, done as f64, of as f64])
            })
            .collect();
        for (i, (name, help)) in [
            (
                "procactor_reload_in_progress",
                "1 while a rolling reload runs.",
            ),
            (
                "procactor_reload_workers_replaced",
                "Workers the running reload has replaced so far (0 when none runs).",
            ),
            (
                "procactor_reload_workers",
                "Workers the running reload replaces (0 when none runs).",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let values = progress.iter().map(|(l, v)| (*l, v[i]));
            gauges(e, name, help, None, values)?;
        }
        let took: Vec<_> = reloads
            .iter()
            .filter_map(|(l, r)| Some((*l, r.last_duration?.as_secs_f64())))
            .collect();
        if !took.is_empty() {
            let help = "How long the last finished reload took.";
            let name = "procactor_reload_last_duration";
            gauges(e, name, help, Some(&Unit::Seconds), took)?;
        }
        Ok(())
    }
}

/// One slot's per-kind figure (`of` a tally: frames or bytes), sent and received, leaving out
/// the kinds never seen.
fn by_kind(
    m: &mut MetricEncoder<'_>,
    slot: &Slot<'_>,
    s: &SlotFigures,
    of: fn(&Tally) -> u64,
) -> Result<(), std::fmt::Error> {
    for (direction, tallies) in [
        ("sent", &s.counters.sent),
        ("received", &s.counters.received),
    ] {
        for (kind, tally) in Envelope::KINDS.iter().zip(tallies) {
            let count = of(tally);
            if count > 0 {
                let own = [
                    ("group", slot.group),
                    ("worker", &slot.worker),
                    ("direction", direction),
                    ("kind", kind),
                ];
                counter(m, &(slot.base, own), count)?;
            }
        }
    }
    Ok(())
}
