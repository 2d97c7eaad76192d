//! Metrics for Prometheus: the master serves `GET /metrics` when
//! [`ClusterConfig::metrics`](crate::ClusterConfig::metrics) gives it an address, or, for a
//! program that runs several clusters, one [`Exporter`] serves them all at one address.
//!
//! ```no_run
//! # use procactor::prelude::*;
//! # use procactor::actors::echo::Echo;
//! # async fn f() -> Result<(), procactor::Error> {
//! let cluster = ClusterSupervisor::start::<Echo>(
//!     ClusterConfig::default().workers(4).metrics("127.0.0.1:9464"),
//! )
//! .await?;
//! let at = cluster.metrics_addr().expect("metrics are on");
//! // curl http://127.0.0.1:9464/metrics
//! # let _ = at;
//! # Ok(())
//! # }
//! ```
//!
//! # How
//! Each scrape reads the master's state as it is then: one message to every slot's proxy, the
//! cache's and the logger's counters, `/proc` for each worker's CPU and memory. Nothing polls
//! the workers between scrapes, and counting costs the proxies an integer add per frame. With
//! metrics on, each request is also timed (two clock reads) for the latency histogram.
//!
//! Scrapes are coalesced: while one runs, requests for the same format wait for its answer, so
//! any number of scrapers costs the master one scrape at a time. A scrape the cluster does not
//! answer within 10 s, or one after the cluster stopped, is answered 503 with the reason — a
//! failed scrape, not a body with the workers' series missing.
//!
//! The body is the Prometheus text format (0.0.4), or OpenMetrics 1.0 when the scraper's
//! `Accept` prefers it (Prometheus does), encoded by the Prometheus organisation's
//! `prometheus-client`. The endpoint answers `GET /metrics` (and a short page at `/`); any other
//! path is a 404, any other method a 405, a malformed or oversized request head a 400 or 431, a
//! head slower than 10 s a 408, and past 64 connections a 503 — it runs on the master's thread
//! as tasks that only wait on their own socket, so a slow or silent client holds nothing but
//! its connection. It has no authentication: bind it to loopback or a private interface.
//!
//! # Several clusters: [`Exporter`]
//! Each cluster's own endpoint has its own `process_*` series and its own port. A program that
//! runs several clusters (the `procactor` daemon runs one per app) binds one [`Exporter`]
//! instead and [adds](Exporter::add) each cluster to it: one scrape then holds each family
//! once, with every cluster's series, one set of `process_*` series and one
//! `procactor_build_info`, then the program's own families ([`Exporter::register`]). A
//! cluster is known by its group's name: its workers' series carry `group` as always, and its
//! cluster-wide series (reloads, cache, logs, membership) get `group` too, that name. A cluster
//! leaves the scrape when it stops or is [removed](Exporter::remove). Scrapes of an exporter
//! are coalesced and bounded as above; only a cluster that does not answer in time fails one.
//!
//! # Names
//! Base units, `_total` for counters, labels with bounded values: `group` (the supervision
//! group), `worker` (the worker's id, stable across restarts), `reason`, `kind`, `direction`,
//! `state`, `result`, `collection`; with several hosts
//! ([`ClusterConfig::backend`](crate::ClusterConfig::backend)) every series also carries `node`,
//! the node's configured name. The pid is a label of `procactor_worker_info` only (it changes
//! on every restart). Through an [`Exporter`], the families below without `group` (reloads,
//! cache, logs, membership) carry `group` as well: the name of the cluster's group it was added
//! by.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `procactor_worker_up` | gauge | group, worker | 1 when ready |
//! | `procactor_worker_state` | gauge | group, worker, state | 1 for the state it is in (spawning, starting, online, ready, stopping, exited, backoff, failed) |
//! | `procactor_worker_info` | gauge (info) | group, worker, pid, generation | 1 per running process |
//! | `procactor_worker_restarts_total` | counter | group, worker, reason | processes the slot started again after one ended, by how it ended (exited, signaled, protocol, shutdown_timeout, ready_timeout, heartbeat_timeout, killed, spawn_failed, watchdog_timeout); a reload's replacements are not restarts |
//! | `procactor_worker_start_time_seconds` | gauge | group, worker | the running process's start, since the epoch |
//! | `procactor_worker_cpu_seconds_total` | counter | group, worker | CPU time of the running process (from `/proc`; restarts at 0 with a new process) |
//! | `procactor_worker_resident_memory_bytes` | gauge | group, worker | resident memory of the running process |
//! | `procactor_worker_frames_total` | counter | group, worker, direction, kind | frames to (`sent`) and from (`received`) the worker by protocol kind (kinds never seen are left out) |
//! | `procactor_worker_frame_bytes_total` | counter | group, worker, direction, kind | their bytes, length prefixes included |
//! | `procactor_worker_requests_total` | counter | group, worker | requests queued for the worker, by the master or other workers (acknowledged one-way messages are not requests) |
//! | `procactor_worker_replies_total` | counter | group, worker | requests it answered, with a reply or a failure |
//! | `procactor_worker_errors_total` | counter | group, worker | requests answered with a failure or lost when its process ended, and messages that could not be sent or delivered to it (a full outbox, not running) |
//! | `procactor_worker_request_duration_seconds` | histogram | group, worker | queuing a request to its answer (50 µs … 10 s buckets) |
//! | `procactor_worker_outbox_bytes` | gauge | group, worker | bytes waiting to be written to it |
//! | `procactor_worker_backpressure_refusals_total` | counter | group, worker | messages refused because its outbox was full |
//! | `procactor_worker_in_flight_requests` | gauge | group, worker | requests it has not answered yet |
//! | `procactor_reloads_started_total` | counter | | rolling reloads started |
//! | `procactor_reloads_total` | counter | result | reloads ended: succeeded, rolled_back, stopped |
//! | `procactor_reload_in_progress` | gauge | | 1 while one runs |
//! | `procactor_reload_workers_replaced`, `procactor_reload_workers` | gauge | | the running reload's progress: replaced so far, of how many |
//! | `procactor_reload_last_duration_seconds` | gauge | | how long the last finished reload took |
//! | `procactor_cache_*` | | collection (the first 100 by name; the rest added up as `_other`), op, result | per collection: entries, bytes, hits, misses, evictions, expiries; operations by kind and result; locks held, waiters, waits and wait time, lease expiries |
//! | `procactor_log_*` | | kind, reason | records and bytes written, records dropped |
//! | `procactor_cluster_nodes`, `procactor_cluster_node_info` | gauge, info | member, epoch, host | with several hosts: the live nodes this node sees |
//! | `procactor_node_member`, `procactor_node_connected` | gauge | | with several hosts: this node is a member; its last beat reached Redis |
//! | `procactor_node_{beats,beat_failures,bad_entries,rejoins}_total` | counter | | with several hosts: its heartbeat's figures |
//! | `procactor_build_info` | gauge (info) | version | |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_start_time_seconds`, `process_open_fds`, `process_max_fds` | | | the master process, under the standard names |

mod collect;
mod exporter;
mod families;
mod flights;
pub(crate) mod http;
mod services;

pub use exporter::Exporter;
pub(crate) use exporter::{serve, Sources};
pub(crate) use http::Endpoint;

/// The crate procactor encodes its metrics with, for the metrics and collectors given to
/// [`Exporter::register`] and [`Exporter::register_collector`].
pub use prometheus_client;
