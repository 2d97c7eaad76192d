//! The master's `/metrics` endpoint with real workers: the counters equal the traffic sent,
//! `promtool check metrics` passes on a scrape, a real Prometheus server scraping the cluster
//! sees a SIGKILLed worker's restart through `increase(...)`, and bad scrape input gets a clear
//! HTTP error without holding the master. One [`Exporter`] over two clusters: each family once
//! with both clusters' series, a removed or stopped cluster gone from a scrape that still
//! answers, the program's own counter, and Prometheus querying both through it.
//!
//! promtool and prometheus come from the Debian package `prometheus` (`.ci/run` installs it);
//! outside CI a test skips, saying so, when they are missing.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::{echo_config, within};
use common::prometheus::{encoded, free_port, have, promtool_accepts, start_prometheus};
use procactor::actors::echo::{Echo, EchoMsg};
use procactor::metrics::prometheus_client::metrics::counter::Counter;
use procactor::metrics::Exporter;
use procactor::prelude::*;

/// One HTTP exchange on a fresh connection: `head` is the request line and headers (without
/// the blank line); returns the status, the headers (lower-case names) and the body.
fn exchange(addr: SocketAddr, head: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The same, off the master's thread (which serves the endpoint).
async fn fetch(addr: SocketAddr, head: &str) -> (u16, BTreeMap<String, String>, String) {
    let head = head.to_owned();
    tokio::task::spawn_blocking(move || exchange(addr, &head))
        .await
        .unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, headers, body) = fetch(addr, "GET /metrics HTTP/1.1\r\nHost: test").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    body
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let wanted = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && wanted).then(|| value.parse().ok())?
        })
}

fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(body, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
}

#[actix::test]
async fn the_counters_equal_the_traffic_and_promtool_passes() {
    within(120, async {
        let config = echo_config(2).metrics("127.0.0.1:0");
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let addr = cluster.metrics_addr().expect("metrics on");
        for _ in 0..500 {
            cluster
                .worker(0)
                .send(Call(EchoMsg::Ping))
                .await
                .unwrap()
                .unwrap();
        }
        for _ in 0..200 {
            cluster
                .worker(1)
                .send(Tell(EchoMsg::Ping))
                .await
                .unwrap()
                .unwrap();
        }
        // Acknowledged messages are not requests: their receipts are not replies.
        for _ in 0..5 {
            let acked = TellAck(EchoMsg::Ping);
            cluster.worker(1).send(acked).await.unwrap().unwrap();
        }
        let cache = cluster.cache();
        for i in 0..30u32 {
            cache
                .set("sessions", &format!("k{i}"), &i, None)
                .await
                .unwrap();
        }
        for i in 0..40u32 {
            let _: Option<u32> = cache.get("sessions", &format!("k{i}")).await.unwrap();
        }
        let lease = Duration::from_secs(5);
        for _ in 0..3 {
            let guard = cache.lock("deploy", lease, lease).await.unwrap();
            guard.release().await.unwrap();
        }
        cluster.reload().await.unwrap();
        cluster.flush_logs().await.unwrap();
        let body = scrape(addr).await;
        let w0 = [("group", "workers"), ("worker", "0")];
        let w1 = [("group", "workers"), ("worker", "1")];
        // Counters of the slot: they carry over the reload's replacement.
        assert_eq!(value(&body, "procactor_worker_requests_total", &w0), 500.0);
        assert_eq!(value(&body, "procactor_worker_replies_total", &w0), 500.0);
        let latency = "procactor_worker_request_duration_seconds_count";
        assert_eq!(value(&body, latency, &w0), 500.0);
        let sent = [("worker", "0"), ("direction", "sent"), ("kind", "Request")];
        assert_eq!(value(&body, "procactor_worker_frames_total", &sent), 500.0);
        let tells = [("worker", "1"), ("direction", "sent"), ("kind", "Tell")];
        assert_eq!(value(&body, "procactor_worker_frames_total", &tells), 200.0);
        assert!(value(&body, "procactor_worker_frame_bytes_total", &tells) >= 200.0 * 5.0);
        assert_eq!(value(&body, "procactor_worker_requests_total", &w1), 0.0);
        assert_eq!(value(&body, "procactor_worker_replies_total", &w1), 0.0);
        assert_eq!(value(&body, latency, &w1), 0.0);
        let acked = [("worker", "1"), ("direction", "sent"), ("kind", "Deliver")];
        assert_eq!(value(&body, "procactor_worker_frames_total", &acked), 5.0);
        assert_eq!(value(&body, "procactor_worker_errors_total", &w0), 0.0);
        for w in [w0, w1] {
            assert_eq!(value(&body, "procactor_worker_up", &w), 1.0);
            let ready = [w[0], w[1], ("state", "ready")];
            assert_eq!(value(&body, "procactor_worker_state", &ready), 1.0);
            assert!(value(&body, "procactor_worker_resident_memory_bytes", &w) > 0.0);
            let restarts = [w[0], w[1], ("reason", "signaled")];
            assert_eq!(
                value(&body, "procactor_worker_restarts_total", &restarts),
                0.0
            );
        }
        let pid = pid_of(&cluster, 0).await;
        let info = [
            ("worker", "0"),
            ("pid", &pid.to_string()),
            ("generation", "2"),
        ];
        assert_eq!(value(&body, "procactor_worker_info", &info), 1.0);
        assert_eq!(value(&body, "procactor_reloads_started_total", &[]), 1.0);
        let ok = [("result", "succeeded")];
        assert_eq!(value(&body, "procactor_reloads_total", &ok), 1.0);
        assert_eq!(value(&body, "procactor_reload_in_progress", &[]), 0.0);
        assert!(value(&body, "process_resident_memory_bytes", &[]) > 0.0);
        // The cache: operations by kind and result, hits and misses, locks.
        let set = [("op", "set"), ("result", "ok")];
        assert_eq!(value(&body, "procactor_cache_operations_total", &set), 30.0);
        let get = [("op", "get"), ("result", "ok")];
        assert_eq!(value(&body, "procactor_cache_operations_total", &get), 40.0);
        let sessions = [("collection", "sessions")];
        assert_eq!(value(&body, "procactor_cache_hits_total", &sessions), 30.0);
        assert_eq!(
            value(&body, "procactor_cache_misses_total", &sessions),
            10.0
        );
        assert_eq!(value(&body, "procactor_cache_entries", &sessions), 30.0);
        assert_eq!(value(&body, "procactor_cache_lock_grants_total", &[]), 3.0);
        assert_eq!(
            value(&body, "procactor_cache_lock_wait_seconds_count", &[]),
            3.0
        );
        // The logs: each line a worker prints is one output record written.
        let output = [("kind", "output")];
        let before = value(&body, "procactor_log_records_total", &output);
        for i in 0..7 {
            let line = EchoMsg::Print(format!("line {i}"));
            cluster.worker(1).send(Call(line)).await.unwrap().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            cluster.flush_logs().await.unwrap();
            let now = value(&scrape(addr).await, "procactor_log_records_total", &output);
            if now == before + 7.0 {
                break;
            }
            assert!(
                now < before + 7.0,
                "{now} output records, {before} + 7 expected"
            );
            assert!(
                Instant::now() < deadline,
                "{now} output records, {before} + 7 expected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dropped = [("reason", "queue_full"), ("kind", "output")];
        assert_eq!(
            value(&body, "procactor_log_records_dropped_total", &dropped),
            0.0
        );

        // A request in flight when its worker is killed fails, and counts as an error; the
        // restart counts as killed.
        let w = cluster.worker(0);
        let pending = actix::spawn(async move { w.send(Call(EchoMsg::Sleep(60_000))).await });
        let in_flight = "procactor_worker_in_flight_requests";
        let deadline = Instant::now() + Duration::from_secs(20);
        while value(&scrape(addr).await, in_flight, &w0) != 1.0 {
            assert!(Instant::now() < deadline, "the request never went out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.kill(0).await.unwrap();
        let failed = pending.await.unwrap().unwrap();
        assert!(
            matches!(failed, Err(CallError::WorkerExited { .. })),
            "{failed:?}"
        );
        let after = scrape(addr).await;
        assert_eq!(value(&after, "procactor_worker_errors_total", &w0), 1.0);
        assert_eq!(value(&after, "procactor_worker_requests_total", &w0), 501.0);
        assert_eq!(value(&after, "procactor_worker_replies_total", &w0), 500.0);
        let killed = [w0[0], w0[1], ("reason", "killed")];
        assert_eq!(
            value(&after, "procactor_worker_restarts_total", &killed),
            1.0
        );

        promtool_accepts(&body);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn openmetrics_when_asked_and_clear_errors_for_bad_requests() {
    within(120, async {
        let config = echo_config(1).metrics("127.0.0.1:0");
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let addr = cluster.metrics_addr().unwrap();
        let accept = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2";
        let (status, headers, body) =
            fetch(addr, &format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{accept}")).await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"].starts_with("application/openmetrics-text"),
            "{headers:?}"
        );
        assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        assert!(body.contains("procactor_worker_restarts_total{"), "{body}");

        let (status, headers, _) = fetch(addr, "POST /metrics HTTP/1.1\r\nHost: t").await;
        assert_eq!(status, 405);
        assert_eq!(headers["allow"], "GET");
        let (status, _, body) = fetch(addr, "GET /nothing HTTP/1.1\r\nHost: t").await;
        assert_eq!(status, 404);
        assert!(body.contains("/metrics"), "the error names the path: {body}");

        // A client that connects and sends nothing holds only its own connection: a scrape
        // and a request to a worker both go through meanwhile.
        let silent = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        scrape(addr).await;
        cluster.worker(0).send(Call(EchoMsg::Ping)).await.unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a silent client held the master for {:?}",
            started.elapsed()
        );
        drop(silent);
        cluster.stop().await.unwrap();

        // A bad address is a config error naming the setting; so is one already in use.
        let bad = ClusterSupervisor::start::<Echo>(echo_config(1).metrics("nowhere")).await;
        assert!(
            matches!(bad, Err(procactor::Error::Config(ref e)) if e.field == "metrics"),
            "{bad:?}"
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let used = taken.local_addr().unwrap().to_string();
        let bad = ClusterSupervisor::start::<Echo>(echo_config(1).metrics(used.clone())).await;
        assert!(
            matches!(bad, Err(procactor::Error::Config(ref e)) if e.field == "metrics"),
            "{bad:?}"
        );

        // A cluster that fails to start after its endpoint was bound lets the address go.
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = echo_config(1).listen("http", used).metrics(metrics.clone());
        let bad = ClusterSupervisor::start::<Echo>(config).await;
        assert!(bad.is_err(), "the listening address is taken");
        std::net::TcpListener::bind(&metrics).expect("the metrics address is free again");
    })
    .await;
}

/// A PromQL instant query through Prometheus's HTTP API: each result's labels and value.
async fn query(
    prometheus: SocketAddr,
    promql: &str,
    at: Option<f64>,
) -> Vec<(serde_json::Value, f64)> {
    let time = at.map(|t| format!("&time={t:.3}")).unwrap_or_default();
    let head = format!(
        "GET /api/v1/query?query={}{time} HTTP/1.1\r\nHost: t",
        encoded(promql)
    );
    let (status, _, body) = fetch(prometheus, &head).await;
    assert_eq!(status, 200, "{promql}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Waits (60 s at most) until Prometheus is ready and `promql`'s results pass `done`.
async fn scraped_until(
    prometheus: SocketAddr,
    dir: &std::path::Path,
    promql: &str,
    done: impl Fn(&[(serde_json::Value, f64)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = TcpStream::connect(prometheus).is_ok()
            && fetch(prometheus, "GET /-/ready HTTP/1.1\r\nHost: t")
                .await
                .0
                == 200
            && done(&query(prometheus, promql, None).await);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the cluster: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix::test]
async fn prometheus_sees_a_killed_workers_restart() {
    if !have("prometheus") {
        return;
    }
    within(180, async {
        let config = echo_config(2).metrics("127.0.0.1:0");
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let target = cluster.metrics_addr().unwrap();
        let dir = tempfile_dir();
        // Killed and reaped by its handle when the test ends, also when an assertion fails.
        let (_server, prometheus) = start_prometheus(&dir, target);
        let restarts = "procactor_worker_restarts_total{worker=\"1\",reason=\"signaled\"}";
        // Prometheus is up and has scraped the counter at 0 (a few times).
        let scraped = format!("count_over_time({restarts}[1m])");
        scraped_until(prometheus, &dir, &scraped, |results| {
            results.first().is_some_and(|(_, n)| *n >= 2.0)
        })
        .await;
        let pid = pid_of(&cluster, 1).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Prometheus has the counter at 1 once it scraped after the restart.
        let deadline = Instant::now() + Duration::from_secs(60);
        while query(prometheus, restarts, None)
            .await
            .first()
            .map(|(_, v)| *v)
            != Some(1.0)
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw the restart"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // At the last sample's time, the increase over a minute is exactly that one restart
        // (no extrapolation past the samples).
        let last = query(prometheus, &format!("timestamp({restarts})"), None).await[0].1;
        let promql = "sum by (worker) (increase(procactor_worker_restarts_total[1m]))";
        let increases: BTreeMap<String, f64> = query(prometheus, promql, Some(last))
            .await
            .into_iter()
            .map(|(labels, v)| (labels["worker"].as_str().unwrap().to_owned(), v))
            .collect();
        assert_eq!(increases.get("1"), Some(&1.0), "{increases:?}");
        assert_eq!(increases.get("0"), Some(&0.0), "{increases:?}");
        cluster.stop().await.unwrap();
        std::fs::remove_dir_all(&dir).ok();
    })
    .await;
}

/// A fresh temporary directory of this test process.
fn tempfile_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("procactor-metrics-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pid of worker `id`'s process.
async fn pid_of(cluster: &Cluster<Echo>, id: usize) -> u32 {
    let workers = cluster.workers().await.unwrap();
    let info = workers.iter().find(|w| w.id == id).expect("the worker");
    info.pid.expect("a running process")
}

#[actix::test]
async fn a_node_of_a_cluster_across_hosts_labels_its_series_and_reports_membership() {
    // RedisServer::start skips (printing why) only when redis-server is absent outside CI.
    let Some(redis) = common::redis::RedisServer::start() else {
        return;
    };
    within(120, async {
        let backend = procactor::Backend::redis(redis.url())
            .cluster("scraped")
            .node("m1");
        let config = echo_config(1).metrics("127.0.0.1:0").backend(backend);
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let addr = cluster.metrics_addr().unwrap();
        let body = scrape(addr).await;
        let me = [("node", "m1")];
        assert_eq!(value(&body, "procactor_cluster_nodes", &me), 1.0);
        assert_eq!(value(&body, "procactor_node_member", &me), 1.0);
        assert_eq!(value(&body, "procactor_node_connected", &me), 1.0);
        let info = [("node", "m1"), ("member", "m1")];
        assert_eq!(value(&body, "procactor_cluster_node_info", &info), 1.0);
        // Every series of the scrape carries the node.
        let w0 = [("node", "m1"), ("group", "workers"), ("worker", "0")];
        assert_eq!(value(&body, "procactor_worker_up", &w0), 1.0);
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("node=\"m1\""), "{line}");
        }
        cluster.stop().await.unwrap();
    })
    .await;
    drop(redis);
}

/// A cluster of `n` echo workers in one group named `name`, as the daemon starts an app:
/// the cluster, and its group's handle.
async fn named(name: &str, n: usize, config: ClusterConfig) -> (Groups, Cluster<Echo>) {
    let mut builder = ClusterSupervisor::with_groups(config);
    let key = builder.group::<Echo>(GroupConfig::new(name).workers(n));
    let groups = builder.start().await.unwrap();
    let cluster = groups.get(key).unwrap().clone();
    (groups, cluster)
}

/// How many times each metric name is described by a `# {what} ` line of `body`.
fn descriptors(body: &str, what: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(&format!("# {what} ")) {
            let name = rest.split(' ').next().unwrap().to_owned();
            *seen.entry(name).or_insert(0) += 1;
        }
    }
    seen
}

/// How many samples of `name` (any labels) `body` has.
fn samples(body: &str, name: &str) -> usize {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .count()
}

#[actix::test]
async fn one_exporter_serves_two_clusters_with_each_family_once() {
    within(120, async {
        let exporter = Exporter::bind("127.0.0.1:0").unwrap();
        let addr = exporter.local_addr();
        let (alpha_groups, alpha) = named("alpha", 2, echo_config(1)).await;
        // beta serves its own endpoint too, as it would alone.
        let beta_config = echo_config(1).metrics("127.0.0.1:0");
        let (beta_groups, beta) = named("beta", 1, beta_config).await;
        exporter.add(&alpha);
        exporter.add(&beta);
        assert_eq!(exporter.names(), ["alpha", "beta"]);
        let requests = Counter::<u64>::default();
        let help = "Control requests the daemon answered.";
        exporter.register("procactor_daemon_control_requests", help, requests.clone());
        requests.inc_by(3);
        let ping = alpha.worker(0).send(Call(EchoMsg::Ping)).await;
        ping.unwrap().unwrap();

        let body = scrape(addr).await;
        for (group, worker) in [("alpha", "0"), ("alpha", "1"), ("beta", "0")] {
            let w = [("group", group), ("worker", worker)];
            assert_eq!(value(&body, "procactor_worker_up", &w), 1.0);
        }
        // Both clusters have a worker 0: their groups tell them apart.
        let requests_total = "procactor_worker_requests_total";
        let alpha0 = [("group", "alpha"), ("worker", "0")];
        assert_eq!(value(&body, requests_total, &alpha0), 1.0);
        let beta0 = [("group", "beta"), ("worker", "0")];
        assert_eq!(value(&body, requests_total, &beta0), 0.0);
        // The cluster-wide series, one per cluster, by the group it was added by.
        for group in ["alpha", "beta"] {
            let g = [("group", group)];
            assert_eq!(value(&body, "procactor_reloads_started_total", &g), 0.0);
            assert!(value(&body, "procactor_log_queue_limit_bytes", &g) > 0.0);
        }
        assert_eq!(samples(&body, "procactor_reloads_started_total"), 2);
        // Each family described once; one process, one build.
        let (types, helps) = (descriptors(&body, "TYPE"), descriptors(&body, "HELP"));
        assert!(types.len() > 30, "{types:?}");
        assert!(types.values().all(|n| *n == 1), "{types:?}");
        assert_eq!(
            types.keys().collect::<Vec<_>>(),
            helps.keys().collect::<Vec<_>>()
        );
        assert!(helps.values().all(|n| *n == 1), "{helps:?}");
        assert_eq!(samples(&body, "process_resident_memory_bytes"), 1);
        assert_eq!(samples(&body, "procactor_build_info"), 1);
        // The program's own family, after procactor's.
        let daemon = "procactor_daemon_control_requests_total";
        assert_eq!(value(&body, daemon, &[]), 3.0);
        promtool_accepts(&body);
        let openmetrics = "Accept: application/openmetrics-text;version=1.0.0";
        let head = format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{openmetrics}");
        let (status, _, om) = fetch(addr, &head).await;
        assert_eq!(status, 200, "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert_eq!(om.matches("# EOF").count(), 1, "{om}");
        assert_eq!(value(&om, daemon, &[]), 3.0);

        // beta's own endpoint is as it was: its cluster-wide series have no group.
        let own = scrape(beta.metrics_addr().unwrap()).await;
        assert_eq!(value(&own, "procactor_reloads_started_total", &[]), 0.0);
        assert!(!own.contains("procactor_reloads_started_total{"), "{own}");
        assert!(!own.contains("alpha") && !own.contains(daemon), "{own}");

        // Removed: its series leave; the scrape still answers.
        assert!(exporter.remove("beta"));
        assert!(!exporter.remove("beta"), "removed already");
        let body = scrape(addr).await;
        assert!(!body.contains("\"beta\""), "{body}");
        let alpha1 = [("group", "alpha"), ("worker", "1")];
        assert_eq!(value(&body, "procactor_worker_up", &alpha1), 1.0);

        // Stopped: it leaves by itself, and no scrape fails meanwhile.
        alpha_groups.stop().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !exporter.names().is_empty() {
            scrape(addr).await;
            assert!(
                Instant::now() < deadline,
                "{:?} still exported",
                exporter.names()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = scrape(addr).await;
        assert!(!body.contains("procactor_worker_up"), "{body}");
        assert!(!body.contains("\"alpha\""), "{body}");
        assert!(value(&body, "process_resident_memory_bytes", &[]) > 0.0);
        assert_eq!(value(&body, daemon, &[]), 3.0);
        promtool_accepts(&body);
        // A stopped cluster added again does not stay.
        exporter.add(&alpha);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !exporter.names().is_empty() {
            scrape(addr).await;
            assert!(Instant::now() < deadline, "the stopped cluster stays");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        beta_groups.stop().await.unwrap();
        drop(exporter);
        assert!(
            TcpStream::connect(addr).is_err(),
            "a dropped exporter stops"
        );
    })
    .await;
}

#[actix::test]
async fn prometheus_scrapes_two_clusters_through_one_exporter() {
    if !have("prometheus") {
        return;
    }
    within(180, async {
        let exporter = Exporter::bind("127.0.0.1:0").unwrap();
        let (alpha_groups, alpha) = named("alpha", 2, echo_config(1)).await;
        let (beta_groups, beta) = named("beta", 1, echo_config(1)).await;
        exporter.add(&alpha);
        exporter.add(&beta);
        let dir = tempfile_dir();
        // Killed and reaped by its handle when the test ends, also when an assertion fails.
        let (_server, prometheus) = start_prometheus(&dir, exporter.local_addr());
        let promql = "sum by (group) (procactor_worker_up)";
        scraped_until(prometheus, &dir, promql, |results| {
            let ready: BTreeMap<&str, f64> = results
                .iter()
                .filter_map(|(labels, v)| Some((labels["group"].as_str()?, *v)))
                .collect();
            ready == BTreeMap::from([("alpha", 2.0), ("beta", 1.0)])
        })
        .await;
        // One target, one process: its series once.
        let process = query(prometheus, "count(process_resident_memory_bytes)", None).await;
        assert_eq!(process.first().map(|(_, n)| *n), Some(1.0), "{process:?}");
        let reloads = "count by (group) (procactor_reloads_started_total)";
        assert_eq!(query(prometheus, reloads, None).await.len(), 2);
        alpha_groups.stop().await.unwrap();
        beta_groups.stop().await.unwrap();
        std::fs::remove_dir_all(&dir).ok();
    })
    .await;
}
