//! The benchmark: procactor's figures beside a raw-pipe baseline measured in the same run.
//!
//! ```text
//! cargo run --release --example bench              # a readable table
//! cargo run --release --example bench -- --json    # one JSON object, last on stdout
//! cargo run --release --example bench -- --quick   # smaller counts, for a smoke run
//! cargo run --release --example bench -- --only tell,bulk   # some sections (for profiling)
//! ```
//!
//! `actix_local_req_per_s` is the ceiling of any proxy on actix: the same pipelined loop against
//! an actor in this process that answers at once (`tell_per_s_vs_actix_local` and
//! `pipelined_vs_actix_local` divide by it: a `send` per message cannot beat it). The floors in
//! `floor.rs` bound the round trips from below: `loop_rtt_us_median_*` (an event loop on each
//! side of the raw pipe, with no framework) and `cross_node_floor_us` (a request and its answer
//! through Redis pub/sub with no framework, `redis_pubsub_rtt_us_median`, plus the local hop
//! from a master to its worker, `local_node_rtt_us_median`).
//!
//! Sections for `--only`: `rtt`, `pipelined`, `tell`, `bulk`, `spawn`, `respawn`, `broadcast`,
//! `peer`, `pinned`, `http`, `cache`, `logs`, `scale`, `metrics`, `nodes`, `cross`, `cli`, `raw`;
//! figures of the others read `NaN` (`null` in `--json`). `cross` (figures across the nodes of a
//! cluster on Redis) is described in `cross.rs`; `cli` (the `procactor` binary's daemon beside
//! PM2's) in `cli.rs`.
//!
//! The baseline (`raw_*` keys) is two processes and two pipes with no framework: coalesced
//! writes, blocking reads, the floor a framework can approach. Every `*_vs_raw` key is the
//! framework's figure divided by the baseline's (for latencies, lower is better; for rates,
//! higher is better). The worker is this executable re-run in worker role, running
//! [`procactor::actors::echo::Echo`].

mod cache;
mod cli;
mod cross;
mod floor;
mod http;
mod local;
mod logs;
mod metrics;
mod nodes;
mod pinned;
mod raw;
/// The relay worker of `procactor-relay` (a test fixture), for the cache and log figures.
#[path = "../../actors/relay/relay.rs"]
mod relay;
mod scale;

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{Backoff, Intensity, RestartPolicy, TellBatch};

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    round_trips: usize,
    pipelined: usize,
    in_flight: usize,
    tells: usize,
    bulk_messages: usize,
    spawns: usize,
    broadcasts: usize,
    peer_round_trips: u32,
}

/// Broadcasts in flight at once, for procactor and the baseline alike.
const BROADCAST_WINDOW: usize = 256;

impl Sizes {
    fn full() -> Self {
        Self {
            round_trips: 20_000,
            pipelined: 200_000,
            in_flight: 1_000,
            tells: 2_000_000,
            bulk_messages: 20_000,
            spawns: 10,
            broadcasts: 200_000,
            peer_round_trips: 20_000,
        }
    }

    fn quick() -> Self {
        Self {
            round_trips: 2_000,
            pipelined: 20_000,
            in_flight: 1_000,
            tells: 200_000,
            bulk_messages: 2_000,
            spawns: 3,
            broadcasts: 20_000,
            peer_round_trips: 2_000,
        }
    }
}

/// procactor's figures, named as the baseline's (`NaN` for a section not measured).
#[derive(Debug)]
struct Figures {
    rtt_us_median: f64,
    rtt_us_p99: f64,
    pipelined_req_per_s: f64,
    tell_per_s: f64,
    tell_batch_per_s: f64,
    bulk_64k_mb_per_s: f64,
    spawn_ms_median: f64,
    respawn_ms_median: f64,
    broadcast_4_per_s: f64,
    peer_rtt_us_median: f64,
}

/// The sections `--only` named, or `None` for all.
static ONLY: std::sync::OnceLock<Option<Vec<String>>> = std::sync::OnceLock::new();

/// The sections `--only` takes; the first [`BESIDE_RAW`] are printed beside the raw-pipe
/// baseline, so asking for one of them runs the baseline too.
const SECTIONS: [&str; 18] = [
    "rtt",
    "pipelined",
    "tell",
    "bulk",
    "spawn",
    "respawn",
    "broadcast",
    "peer",
    "pinned",
    "http",
    "cache",
    "logs",
    "scale",
    "metrics",
    "nodes",
    "cross",
    "cli",
    "raw",
];

/// How many of the first [`SECTIONS`] are printed beside the raw-pipe baseline.
const BESIDE_RAW: usize = 7;

const USAGE: &str = "\
usage: bench [--json] [--quick] [--only SECTION,...]

  --json     one JSON object, the last line of stdout (a figure not measured is null)
  --quick    smaller counts, for a smoke run
  --only     run these sections only (the raw-pipe baseline comes with rtt, pipelined, tell,
             bulk, spawn, respawn and broadcast): rtt, pipelined, tell, bulk, spawn, respawn,
             broadcast, peer, pinned, http, cache, logs, scale, metrics, nodes, cross, cli, raw
  -h, --help this text";

/// The bench's command line.
struct Args {
    json: bool,
    quick: bool,
    only: Option<Vec<String>>,
}

impl Args {
    /// The arguments, or why not (`None`: `--help`).
    fn parse(args: impl Iterator<Item = String>) -> Result<Args, Option<String>> {
        let mut parsed = Args {
            json: false,
            quick: false,
            only: None,
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--json" => parsed.json = true,
                "--quick" => parsed.quick = true,
                "-h" | "--help" => return Err(None),
                "--only" => {
                    let list = args
                        .next()
                        .ok_or_else(|| Some("--only needs a list of sections".to_owned()))?;
                    let mut only: Vec<String> = Vec::new();
                    for section in list.split(',').filter(|s| !s.is_empty()) {
                        if !SECTIONS.contains(&section) {
                            return Err(Some(format!("no section is called {section:?}")));
                        }
                        only.push(section.to_owned());
                    }
                    if only.is_empty() {
                        return Err(Some("--only needs at least one section".into()));
                    }
                    let beside_raw = &SECTIONS[..BESIDE_RAW];
                    if only.iter().any(|s| beside_raw.contains(&s.as_str()))
                        && !only.iter().any(|s| s == "raw")
                    {
                        only.push("raw".into());
                    }
                    parsed.only = Some(only);
                }
                other => return Err(Some(format!("unknown argument {other:?}"))),
            }
        }
        Ok(parsed)
    }
}

/// Whether this run measures `section`.
pub(crate) fn wants(section: &str) -> bool {
    ONLY.get()
        .and_then(Option::as_ref)
        .is_none_or(|only| only.iter().any(|s| s == section))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if raw::is_raw_child() {
        raw::child_main();
    }
    if let Some(ended) = floor::child_role() {
        return ended;
    }
    if procactor::is_worker() {
        if http::is_http_worker() {
            return Ok(http::run_http_worker()?);
        }
        if cache::is_relay_worker() {
            return Ok(cache::run_relay_worker()?);
        }
        return Ok(procactor::run_worker(Echo::default())?);
    }
    if logs::is_child() {
        return logs::child_main();
    }
    if scale::is_child() {
        return scale::child_main();
    }
    if nodes::is_child() {
        return nodes::child_main();
    }
    if cross::is_child() {
        return cross::child_main();
    }
    let Args { json, quick, only } = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(Some(message)) => {
            eprintln!("bench: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
        Err(None) => {
            println!("{USAGE}");
            return Ok(());
        }
    };
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    ONLY.set(only).expect("set once");
    let ours = crate::run_in_system(measure(sizes))?;
    // Pinned round trips: cross-core and same-core, procactor then raw.
    let pinned = match pinned::two_cpus().filter(|_| wants("pinned")) {
        Some((a, b)) => {
            let base = ClusterConfig::new().log(bench_logs());
            let cross =
                crate::run_in_system(pinned::procactor_rtt(base.clone(), a, b, sizes.round_trips))?;
            let same = crate::run_in_system(pinned::procactor_rtt(base, a, a, sizes.round_trips))?;
            let raw_cross = raw::pinned_rtt(a, b, sizes.round_trips)?;
            let raw_same = raw::pinned_rtt(a, a, sizes.round_trips)?;
            let loop_cross = crate::run_in_system(floor::loop_rtt(a, b, sizes.round_trips))?;
            let loop_same = crate::run_in_system(floor::loop_rtt(a, a, sizes.round_trips))?;
            Some((cross, raw_cross, same, raw_same, loop_cross, loop_same))
        }
        None => None,
    };
    let web = if wants("http") {
        crate::run_in_system(http::measure(quick))?
    } else {
        http::HttpFigures::nan()
    };
    let cache_ops = if quick { 20_000 } else { 200_000 };
    let (cache_rate, redis_rate) = if wants("cache") {
        (
            crate::run_in_system(cache::procactor_ops(cache_ops))?,
            cache::redis_ops(cache_ops)?,
        )
    } else {
        (f64::NAN, Some(f64::NAN))
    };
    let logs = if wants("logs") {
        logs::measure_in_child(quick)?
    } else {
        logs::LogFigures::nan()
    };
    let local_calls = if wants("pipelined") {
        run_in_system(local::calls_per_s(sizes.pipelined, sizes.in_flight))
    } else {
        f64::NAN
    };
    let metered = if wants("metrics") {
        crate::run_in_system(metrics::measure(quick))?
    } else {
        metrics::MetricsFigures::nan()
    };
    let scaled = if wants("scale") {
        scale::measure_in_child(quick)?
    } else {
        scale::ScaleFigures::nan()
    };
    let noded = if wants("nodes") {
        nodes::measure(quick)?
    } else {
        nodes::NodeFigures::nan()
    };
    let crossed = if wants("cross") {
        cross::measure(quick)?
    } else {
        cross::CrossFigures::nan()
    };
    let operator = if wants("cli") {
        cli::measure(quick)?
    } else {
        cli::CliFigures::nan()
    };
    // The bare PING beside the cross-node round trip: the cross section's (same server, same
    // moment) when it ran, else the nodes section's.
    let ping_rtt_us_median = if crossed.ping_rtt_us_median.is_finite() {
        crossed.ping_rtt_us_median
    } else {
        noded.ping_rtt_us_median
    };
    let raw = if !wants("raw") {
        raw::RawFigures::nan()
    } else {
        raw::measure(&raw::RawParams {
            round_trips: sizes.round_trips,
            pipelined: sizes.pipelined,
            in_flight: sizes.in_flight,
            tells: sizes.tells,
            bulk_messages: sizes.bulk_messages,
            spawns: sizes.spawns,
            broadcasts: sizes.broadcasts,
            broadcast_window: BROADCAST_WINDOW,
        })?
    };

    let (cross, raw_cross, same, raw_same, loop_cross, loop_same) =
        pinned.unwrap_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN));
    // Floors (`floor.rs`) and ceilings (`local.rs`) beside the figures they bound.
    let cross_floor = crossed.pubsub_rtt_us_median + crossed.local_rtt_us_median;
    let bounds: [(&str, f64); 12] = [
        ("loop_rtt_us_median_same_core", loop_same),
        ("loop_rtt_us_median_same_core_vs_raw", loop_same / raw_same),
        ("rtt_us_median_same_core_vs_loop", same / loop_same),
        ("loop_rtt_us_median_cross_core", loop_cross),
        (
            "loop_rtt_us_median_cross_core_vs_raw",
            loop_cross / raw_cross,
        ),
        ("rtt_us_median_cross_core_vs_loop", cross / loop_cross),
        ("tell_per_s_vs_actix_local", ours.tell_per_s / local_calls),
        ("redis_pubsub_rtt_us_median", crossed.pubsub_rtt_us_median),
        (
            "redis_pubsub_rtt_vs_ping",
            crossed.pubsub_rtt_us_median / ping_rtt_us_median,
        ),
        ("cross_node_floor_us", cross_floor),
        ("cross_node_floor_vs_ping", cross_floor / ping_rtt_us_median),
        (
            "cross_node_rtt_vs_floor",
            crossed.rtt_us_median / cross_floor,
        ),
    ];
    let rows: [(&str, f64, f64, bool); 10] = [
        ("rtt_us_median_cross_core", cross, raw_cross, false),
        ("rtt_us_median_same_core", same, raw_same, false),
        (
            "rtt_us_median",
            ours.rtt_us_median,
            raw.rtt_us_median,
            false,
        ),
        ("rtt_us_p99", ours.rtt_us_p99, raw.rtt_us_p99, false),
        (
            "pipelined_req_per_s",
            ours.pipelined_req_per_s,
            raw.pipelined_req_per_s,
            true,
        ),
        ("tell_per_s", ours.tell_per_s, raw.tell_per_s, true),
        (
            "bulk_64k_mb_per_s",
            ours.bulk_64k_mb_per_s,
            raw.bulk_64k_mb_per_s,
            true,
        ),
        (
            "spawn_ms_median",
            ours.spawn_ms_median,
            raw.spawn_ms_median,
            false,
        ),
        (
            "respawn_ms_median",
            ours.respawn_ms_median,
            raw.respawn_ms_median,
            false,
        ),
        (
            "broadcast_4_per_s",
            ours.broadcast_4_per_s,
            raw.broadcast_4_per_s,
            true,
        ),
    ];
    // Figures with a baseline of their own: (key, value, baseline key, baseline, ratio key).
    let pairs: [(&str, f64, &str, f64, &str); 22] = [
        (
            "rtt_us_median_metrics_on",
            metered.rtt_us_median_on,
            "rtt_us_median_metrics_off",
            metered.rtt_us_median_off,
            "metrics_on_vs_off",
        ),
        (
            "metrics_scrape_ms",
            metered.scrape_ms_median,
            "metrics_scrape_kb",
            metered.scrape_kb,
            "",
        ),
        (
            "pipelined_req_per_s",
            ours.pipelined_req_per_s,
            "actix_local_req_per_s",
            local_calls,
            "pipelined_vs_actix_local",
        ),
        (
            "tell_batch_per_s",
            ours.tell_batch_per_s,
            "raw_tell_per_s",
            raw.tell_per_s,
            "tell_batch_vs_raw",
        ),
        (
            "log_records_per_s",
            logs.records_per_s,
            "direct_file_records_per_s",
            logs.direct_records_per_s,
            "log_records_vs_direct",
        ),
        (
            "flood_master_rss_mb",
            logs.flood_master_rss_mb,
            "idle_master_rss_mb",
            logs.idle_master_rss_mb,
            "flood_rss_vs_idle",
        ),
        (
            "peer_rtt_us_median",
            ours.peer_rtt_us_median,
            "raw_rtt_us_median",
            raw.rtt_us_median,
            "peer_rtt_vs_raw_rtt",
        ),
        (
            "http_4w_req_per_s",
            web.req_per_s_4w,
            "http_1w_req_per_s",
            web.req_per_s_1w,
            "http_4w_vs_1w",
        ),
        (
            "reload_ms",
            web.reload_ms,
            "kill_restart_ms",
            web.kill_restart_ms,
            "reload_vs_kill_restart",
        ),
        (
            "reload_worker_ms",
            web.reload_worker_ms,
            "reload_drain_ms_max",
            web.reload_drain_ms_max,
            "",
        ),
        (
            "rtt_us_median_256_workers",
            scaled.rtt_us_median_256_workers,
            "rtt_us_median_1_worker",
            scaled.rtt_us_median_1_worker,
            "rtt_256_vs_1_worker",
        ),
        (
            "start_256_workers_ms",
            scaled.start_256_workers_ms,
            "master_rss_mb_per_100_workers",
            scaled.master_rss_mb_per_100_workers,
            "",
        ),
        (
            "reload_failed_requests",
            web.reload_failed_requests,
            "kill_restart_failed_requests",
            web.kill_restart_failed_requests,
            "",
        ),
        (
            "node_loss_detect_ms",
            noded.loss_detect_ms,
            "node_timeout_ms",
            noded.node_timeout_ms,
            "node_loss_vs_timeout",
        ),
        (
            "cross_node_rtt_us_median",
            crossed.rtt_us_median,
            "redis_ping_rtt_us_median",
            ping_rtt_us_median,
            "cross_node_rtt_vs_ping",
        ),
        (
            "cross_node_worker_rtt_us_median",
            crossed.worker_rtt_us_median,
            "local_node_rtt_us_median",
            crossed.local_rtt_us_median,
            "",
        ),
        (
            "cross_node_req_per_s",
            crossed.req_per_s,
            "local_node_req_per_s",
            crossed.local_req_per_s,
            "cross_node_req_vs_local",
        ),
        (
            "cross_node_broadcast_per_s",
            crossed.broadcast_per_s,
            "redis_publish_per_s",
            crossed.publish_per_s,
            "cross_node_broadcast_vs_publish",
        ),
        (
            "redis_cache_ops_per_s",
            crossed.cache_ops_per_s,
            "redis_direct_ops_per_s",
            crossed.direct_ops_per_s,
            "redis_cache_vs_direct",
        ),
        (
            "cli_list_ms",
            operator.list_ms,
            "pm2_jlist_ms",
            operator.pm2_jlist_ms,
            "cli_list_vs_pm2",
        ),
        (
            "daemon_idle_rss_mb",
            operator.idle_rss_mb,
            "pm2_daemon_idle_rss_mb",
            operator.pm2_idle_rss_mb,
            "",
        ),
        (
            "daemon_idle_cpu_pct",
            operator.idle_cpu_pct,
            "pm2_daemon_idle_cpu_pct",
            operator.pm2_idle_cpu_pct,
            "",
        ),
    ];
    if json {
        // JSON has no NaN: a figure not measured is `null`.
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".to_owned()
            }
        };
        let mut fields = Vec::new();
        for (key, value, base, _) in rows {
            fields.push(format!("\"{key}\":{}", num(value)));
            fields.push(format!("\"raw_{key}\":{}", num(base)));
            fields.push(format!("\"{key}_vs_raw\":{}", num(value / base)));
        }
        for (key, value, base_key, base, ratio_key) in pairs {
            fields.push(format!("\"{key}\":{}", num(value)));
            fields.push(format!("\"{base_key}\":{}", num(base)));
            if !ratio_key.is_empty() {
                fields.push(format!("\"{ratio_key}\":{}", num(value / base)));
            }
        }
        for (key, value) in bounds {
            fields.push(format!("\"{key}\":{}", num(value)));
        }
        fields.push(format!(
            "\"idle_master_cpu_pct_256_workers\":{}",
            num(scaled.idle_master_cpu_pct_256_workers)
        ));
        if !noded.redis {
            fields.push("\"nodes\":\"redis-server is not installed\"".into());
        }
        if !crossed.redis {
            fields.push("\"cross\":\"redis-server is not installed\"".into());
        }
        fields.extend(operator.json_notes());
        fields.push(format!("\"cache_ops_per_s\":{}", num(cache_rate)));
        match redis_rate {
            Some(redis) => {
                fields.push(format!("\"redis_server_ops_per_s\":{}", num(redis)));
                fields.push(format!("\"cache_vs_redis\":{}", num(cache_rate / redis)));
            }
            None => {
                fields.push("\"redis_server_ops_per_s\":null".into());
                fields.push("\"redis\":\"redis-server is not installed\"".into());
            }
        }
        println!("{{{}}}", fields.join(","));
    } else {
        println!(
            "{:<22} {:>14} {:>14} {:>9}",
            "figure", "procactor", "raw pipe", "ratio"
        );
        for (key, value, base, higher_is_better) in rows {
            let note = if higher_is_better {
                "(higher is better)"
            } else {
                "(lower is better)"
            };
            println!(
                "{key:<22} {value:>14.2} {base:>14.2} {:>9.3} {note}",
                value / base
            );
        }
        println!();
        println!(
            "{:<32} {:>12}   {:<30} {:>12}",
            "figure", "value", "baseline (same run)", "value"
        );
        for (key, value, base_key, base, _) in pairs {
            println!("{key:<32} {value:>12.2}   {base_key:<30} {base:>12.2}");
        }
        println!();
        for (key, value) in bounds {
            println!("{key:<40} {value:>12.3}");
        }
        println!(
            "{:<24} {:>12.2}",
            "idle_master_cpu_pct_256_workers", scaled.idle_master_cpu_pct_256_workers
        );
        if !noded.redis {
            println!("nodes: redis-server is not installed: no figures");
        }
        if !crossed.redis {
            println!("cross: redis-server is not installed: no figures");
        }
        for line in operator.notes() {
            println!("{line}");
        }
        match redis_rate {
            Some(redis) => println!(
                "{:<24} {cache_rate:>12.2}   {:<30} {redis:>12.2}",
                "cache_ops_per_s", "redis_server_ops_per_s"
            ),
            None => println!(
                "{:<24} {cache_rate:>12.2}   redis-server is not installed: no baseline",
                "cache_ops_per_s"
            ),
        }
    }
    if let Some(dir) = bench_logs().dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

async fn measure(sizes: Sizes) -> Result<Figures, procactor::Error> {
    let config = ClusterConfig::new()
        .log(bench_logs())
        .workers(1)
        .max_outbox_bytes(256 * 1024 * 1024);
    let cluster = ClusterSupervisor::start::<Echo>(config.clone()).await?;
    let w = cluster.worker(0);
    let mut figures = Figures {
        rtt_us_median: f64::NAN,
        rtt_us_p99: f64::NAN,
        pipelined_req_per_s: f64::NAN,
        tell_per_s: f64::NAN,
        tell_batch_per_s: f64::NAN,
        bulk_64k_mb_per_s: f64::NAN,
        spawn_ms_median: f64::NAN,
        respawn_ms_median: f64::NAN,
        broadcast_4_per_s: f64::NAN,
        peer_rtt_us_median: f64::NAN,
    };

    if wants("rtt") {
        // Round trips, one at a time.
        for _ in 0..1_000 {
            w.send(Call(EchoMsg::Ping)).await??;
        }
        let mut rtts = Vec::with_capacity(sizes.round_trips);
        for _ in 0..sizes.round_trips {
            let t = Instant::now();
            w.send(Call(EchoMsg::Ping)).await??;
            rtts.push(t.elapsed());
        }
        rtts.sort();
        figures.rtt_us_median = micros(rtts[rtts.len() / 2]);
        figures.rtt_us_p99 = micros(rtts[rtts.len() * 99 / 100]);
    }
    if wants("pipelined") {
        // Pipelined requests with a window of `in_flight`, every reply awaited.
        let t = Instant::now();
        tokio::task::unconstrained(async {
            let mut window = FuturesUnordered::new();
            let mut sent = 0;
            let mut answered = 0;
            while answered < sizes.pipelined {
                while sent < sizes.pipelined && window.len() < sizes.in_flight {
                    window.push(w.send(Call(EchoMsg::Ping)));
                    sent += 1;
                }
                let reply = window.next().await.expect("window is not empty")??;
                assert_eq!(reply, EchoReply::Pong);
                answered += 1;
            }
            Ok::<_, procactor::Error>(())
        })
        .await?;
        figures.pipelined_req_per_s = sizes.pipelined as f64 / t.elapsed().as_secs_f64();
    }
    // One-way messages, counted by the worker.
    if wants("tell") {
        figures.tell_per_s = tells(&w, sizes.tells, sizes.in_flight, || EchoMsg::Ping).await? / 1.0;
        // The same messages in batches of 64 (`TellBatch`), as many in flight.
        figures.tell_batch_per_s = tell_batches(&w, sizes.tells, sizes.in_flight / 64).await?;
    }
    // 64 KiB one-way payloads.
    if wants("bulk") {
        let payload = vec![0xa5u8; 64 * 1024];
        let rate = tells(&w, sizes.bulk_messages, 64, || {
            EchoMsg::Echo(payload.clone())
        })
        .await?;
        figures.bulk_64k_mb_per_s = rate * (64.0 * 1024.0) / 1e6;
    }
    cluster.stop().await?;

    if wants("spawn") {
        // Start → first reply, a fresh cluster each time.
        let mut spawns = Vec::with_capacity(sizes.spawns);
        for _ in 0..sizes.spawns {
            let t = Instant::now();
            let cluster = ClusterSupervisor::start::<Echo>(config.clone()).await?;
            cluster.worker(0).send(Call(EchoMsg::Ping)).await??;
            spawns.push(t.elapsed());
            cluster.stop().await?;
        }
        spawns.sort();
        figures.spawn_ms_median = spawns[spawns.len() / 2].as_secs_f64() * 1e3;
    }
    let broadcast_config = config.clone().workers(4);
    if wants("respawn") {
        // SIGKILL of a worker until its replacement answers (no backoff for a first restart).
        let config = config.restart(RestartPolicy {
            backoff: Backoff::none(),
            intensity: Intensity {
                max_restarts: u32::MAX,
                period: Duration::from_secs(1),
            },
            ..RestartPolicy::default()
        });
        let cluster = ClusterSupervisor::start::<Echo>(config).await?;
        let w = cluster.worker(0);
        let mut respawns = Vec::with_capacity(sizes.spawns);
        for _ in 0..sizes.spawns {
            let pid = match w.send(Call(EchoMsg::Pid)).await?? {
                EchoReply::Pid(pid) => pid,
                other => unreachable!("{other:?}"),
            };
            let t = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            )
            .expect("kill the worker");
            // Until the new process answers: calls fail fast while the slot is down, and wait in
            // its outbox once the restart has begun.
            loop {
                match w.send(Call(EchoMsg::Pid)).await? {
                    Ok(EchoReply::Pid(new)) if new != pid => break,
                    _ => tokio::task::yield_now().await,
                }
            }
            respawns.push(t.elapsed());
        }
        cluster.stop().await?;
        respawns.sort();
        figures.respawn_ms_median = respawns[respawns.len() / 2].as_secs_f64() * 1e3;
    }

    // Broadcast to 4 workers, `BROADCAST_WINDOW` in flight, each acknowledged by every worker.
    let cluster = ClusterSupervisor::start::<Echo>(broadcast_config).await?;
    if wants("broadcast") {
        let t = Instant::now();
        tokio::task::unconstrained(async {
            let mut window = FuturesUnordered::new();
            let (mut sent, mut done) = (0, 0);
            while done < sizes.broadcasts {
                while sent < sizes.broadcasts && window.len() < BROADCAST_WINDOW {
                    window.push(cluster.broadcast(&EchoMsg::Ping));
                    sent += 1;
                }
                let acked = window.next().await.expect("window is not empty")?;
                assert_eq!(acked, 4, "every worker acknowledged");
                done += 1;
            }
            Ok::<_, procactor::Error>(())
        })
        .await?;
        figures.broadcast_4_per_s = sizes.broadcasts as f64 / t.elapsed().as_secs_f64();
    }
    if wants("peer") {
        // Worker 0 asks worker 1, through the master, one request at a time.
        let reply = cluster
            .worker(0)
            .send(Call(EchoMsg::PeerRoundTrips {
                to: 1,
                count: sizes.peer_round_trips,
            }))
            .await??;
        let EchoReply::Nanos(mut nanos) = reply else {
            return Err(procactor::Error::Ask(procactor::AskError::Failed(format!(
                "{reply:?}"
            ))));
        };
        // The first tenth warms up.
        nanos.drain(..nanos.len() / 10);
        nanos.sort_unstable();
        figures.peer_rtt_us_median = nanos[nanos.len() / 2] as f64 / 1e3;
    }
    cluster.stop().await?;
    Ok(figures)
}

/// Sends `count` one-way messages, one `Tell` each, with `window` sends in flight; returns
/// messages per second.
async fn tells(
    w: &Addr<Worker<Echo>>,
    count: usize,
    window: usize,
    mut msg: impl FnMut() -> EchoMsg,
) -> Result<f64, procactor::Error> {
    one_way(w, count, window, 1, |_| w.send(Tell(msg()))).await
}

/// Sends `count` one-way messages in batches of 64 (`TellBatch`) with `window` batches in
/// flight; returns messages per second.
async fn tell_batches(
    w: &Addr<Worker<Echo>>,
    count: usize,
    window: usize,
) -> Result<f64, procactor::Error> {
    one_way(w, count, window, 64, |n| {
        w.send(TellBatch(vec![EchoMsg::Ping; n]))
    })
    .await
}

/// Sends `count` one-way messages, `per_send` at a time through `send(n)`, with `window` sends
/// in flight, then asks the worker how many it received; returns messages per second.
async fn one_way<F>(
    w: &Addr<Worker<Echo>>,
    count: usize,
    window: usize,
    per_send: usize,
    mut send: impl FnMut(usize) -> F,
) -> Result<f64, procactor::Error>
where
    F: std::future::Future<Output = Result<Result<(), CallError>, actix::MailboxError>>,
{
    let before = stats(w).await?;
    let t = Instant::now();
    tokio::task::unconstrained(async {
        let mut sends = FuturesUnordered::new();
        let mut sent = 0;
        while sent < count {
            if sends.len() >= window {
                sends.next().await.expect("not empty")??;
            }
            let n = per_send.min(count - sent);
            sends.push(send(n));
            sent += n;
        }
        while let Some(sent) = sends.next().await {
            sent??;
        }
        Ok::<_, procactor::Error>(())
    })
    .await?;
    let after = stats(w).await?;
    let elapsed = t.elapsed();
    assert_eq!(
        after - before,
        count as u64,
        "the worker received every message"
    );
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Runs this bench again in a fresh process with `var=value` in its environment (the child
/// measures one section and prints its figures on one line), and reads the figures.
pub(crate) fn child_figures<const N: usize>(
    var: &str,
    value: &str,
) -> Result<[f64; N], Box<dyn std::error::Error>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env(var, value)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let numbers: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bench child ({var}) printed {text:?}: {e}"))?;
    numbers
        .try_into()
        .map_err(|_| format!("bench child ({var}) printed {text:?}").into())
}

/// This process's resident memory (`VmRSS`), or another `/proc/self/status` field, in MB.
pub(crate) fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn stats(w: &Addr<Worker<Echo>>) -> Result<u64, procactor::Error> {
    match w.send(Call(EchoMsg::Stats)).await?? {
        EchoReply::Stats { tells, .. } => Ok(tells),
        other => unreachable!("{other:?}"),
    }
}

/// Runs `f` to its end as a task of a new actix system, as the code of an actor or a handler
/// runs, not as the system's own `block_on` future: since tokio 1.52.4, each wake-up of the
/// `block_on` future costs a poll of the I/O driver (one more `epoll_wait` per reply), which a
/// task of the system does not pay.
pub(crate) fn run_in_system<F>(f: F) -> F::Output
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    actix::System::new().block_on(async move {
        actix::spawn(f)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    })
}

/// The bench's clusters log to a directory of their own under the temp dir, with `tracing`
/// output off (the bench installs no subscriber).
pub(crate) fn bench_logs() -> procactor::logger::LogConfig {
    procactor::logger::LogConfig {
        dir: Some(
            std::env::temp_dir().join(format!("procactor-bench-logs-{}", std::process::id())),
        ),
        tracing: false,
        ..procactor::logger::LogConfig::default()
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
