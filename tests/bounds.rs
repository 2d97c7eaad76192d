//! What one worker sends cannot grow the master without bound or hold its event loop.
//!
//! Each test reproduces a fault seen from outside with a hostile `procactor-chaos` worker that
//! speaks the wire protocol by hand (floods, requests it never reads the answers to) and asserts
//! the bound: how much the master read from it, how much memory it took, or how long a round
//! trip to another worker took meanwhile. The tests that read the master's memory take a lock,
//! so that no other test of this binary allocates at the same time.

// Each test runs its own runtime on a thread of its own: the memory lock orders those threads,
// and holding it across their awaits is the point.
#![allow(clippy::await_holding_lock)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::cluster::{chaos_config, within};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{WorkerRequest, WorkerState, WorkerStats};

/// Held by the tests that measure the master's (this process's) memory.
static MEMORY: Mutex<()> = Mutex::new(());

fn rss_mib() -> u64 {
    let kib: u64 = common::status_field(std::process::id(), "VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// Frames of `kind` the master has read from worker `id`.
async fn received(cluster: &Cluster<Echo>, id: usize, kind: &str) -> u64 {
    let stats: Vec<WorkerStats> = cluster.stats().await.unwrap();
    stats[id].received.get(kind).copied().unwrap_or(0)
}

/// A flood's test cluster: worker 0 misbehaves in `mode` once it gets its first frame, the
/// others run the echo worker; no heartbeats (the hand-written worker does not answer pings),
/// quick stops, logs in a temporary directory.
fn flood_config(n: usize, mode: &str, logs: &std::path::Path) -> ClusterConfig {
    let mut config = chaos_config(n, &[(0, mode)])
        .heartbeat_interval(Duration::ZERO)
        .shutdown_timeout(Duration::from_secs(1));
    config.log.dir = Some(logs.to_owned());
    config
}

#[actix::test]
async fn cache_gets_from_a_worker_that_never_reads_are_held_to_its_outbox() {
    let _memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    within(120, async {
        let logs = tempdir();
        let config = flood_config(1, "get-no-read", &logs)
            .max_frame_bytes(2 * 1024 * 1024)
            .max_outbox_bytes(4 * 1024 * 1024)
            .env("PROCACTOR_CHAOS_COUNT", "400");
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let value = vec![7u8; 1024 * 1024];
        cluster.cache().set("c", "big", &value, None).await.unwrap();
        let before = rss_mib();
        // Its first frame sets it off: 400 gets of 1 MiB, none of the answers read.
        cluster.worker(0).do_send(Tell(EchoMsg::Ping));
        let deadline = Instant::now() + Duration::from_secs(30);
        while received(&cluster, 0, "System").await < 4 {
            assert!(Instant::now() < deadline, "the gets never arrived");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // Watch for two seconds: the master reads on only as its outbox drains, and it does not.
        let mut most = 0;
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_secs(2) {
            most = most.max(received(&cluster, 0, "System").await);
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let grown = rss_mib().saturating_sub(before);
        eprintln!("get-no-read: {most} of 400 gets read, the master grew by {grown} MiB");
        // 4 MiB of outbox, the pipe's buffer (1 MiB) and the answer that crossed the limit.
        assert!(most <= 8, "the master read {most} of the 400 gets");
        assert!(
            grown < 48,
            "the master grew by {grown} MiB (was 420 before the bound)"
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

/// An `on_message` handler that takes `per_message` for each message, on a thread of its own,
/// and counts what it handled.
struct Slow {
    handled: Arc<AtomicU64>,
    per_message: Duration,
}

impl Actor for Slow {
    type Context = Context<Self>;
}

impl Handler<FromWorker<String>> for Slow {
    type Result = ();

    fn handle(&mut self, _: FromWorker<String>, _: &mut Context<Self>) {
        std::thread::sleep(self.per_message);
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
}

fn slow_handler(per_message: Duration) -> (Recipient<FromWorker<String>>, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&handled);
    let addr = Slow::start_in_arbiter(&Arbiter::new().handle(), move |_| Slow {
        handled: counter,
        per_message,
    });
    (addr.recipient(), handled)
}

#[actix::test]
async fn messages_for_a_slow_on_message_handler_wait_in_a_bounded_queue_per_worker() {
    let _memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    within(120, async {
        let logs = tempdir();
        let limit = 64;
        let config = flood_config(2, "flood-events", &logs).max_worker_pending(limit);
        let (handler, handled) = slow_handler(Duration::from_micros(200));
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .on_message(handler)
            .start()
            .await
            .unwrap();
        let before = rss_mib();
        cluster.worker(0).do_send(Tell(EchoMsg::Ping));
        let watch = Instant::now();
        let mut samples = 0;
        while watch.elapsed() < Duration::from_secs(3) {
            // Read the count handled first: what was read can only have grown since.
            let done = handled.load(Ordering::SeqCst);
            let read = received(&cluster, 0, "Event").await;
            assert!(
                read <= done + limit as u64,
                "{read} events read, {done} handled: more than {limit} waiting"
            );
            samples += 1;
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        let done = handled.load(Ordering::SeqCst);
        eprintln!(
            "flood-events: {done} handled, the master grew by {} MiB",
            rss_mib().saturating_sub(before)
        );
        assert!(done > 1000, "the handler got only {done} messages");
        assert!(samples > 10);
        // Another worker is served meanwhile.
        let reply = cluster.worker(1).send(Call(EchoMsg::Ping)).await.unwrap();
        assert_eq!(reply, Ok(EchoReply::Pong));
        let grown = rss_mib().saturating_sub(before);
        assert!(grown < 48, "the master grew by {grown} MiB");
        cluster.stop().await.unwrap();
    })
    .await;
}

/// An `on_request` handler that takes `per_request` for each request, on a thread of its own,
/// and counts what it answered.
struct SlowAnswers {
    answered: Arc<AtomicU64>,
    per_request: Duration,
}

impl Actor for SlowAnswers {
    type Context = Context<Self>;
}

impl Handler<WorkerRequest<String, String>> for SlowAnswers {
    type Result = String;

    fn handle(&mut self, _: WorkerRequest<String, String>, _: &mut Context<Self>) -> String {
        std::thread::sleep(self.per_request);
        self.answered.fetch_add(1, Ordering::SeqCst);
        "answer".into()
    }
}

#[actix::test]
async fn requests_for_a_slow_on_request_handler_wait_in_a_bounded_queue_per_worker() {
    let _memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    within(120, async {
        let logs = tempdir();
        let limit = 64;
        let config = flood_config(2, "flood-asks", &logs).max_worker_pending(limit);
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        let handler =
            SlowAnswers::start_in_arbiter(&Arbiter::new().handle(), move |_| SlowAnswers {
                answered: counter,
                per_request: Duration::from_micros(200),
            });
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .on_request(handler.recipient())
            .start()
            .await
            .unwrap();
        cluster.worker(0).do_send(Tell(EchoMsg::Ping));
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_secs(2) {
            let done = answered.load(Ordering::SeqCst);
            let read = received(&cluster, 0, "Ask").await;
            assert!(
                read <= done + limit as u64,
                "{read} requests read, {done} answered: more than {limit} waiting"
            );
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        let done = answered.load(Ordering::SeqCst);
        assert!(done > 1000, "the handler got only {done} requests");
        let reply = cluster.worker(1).send(Call(EchoMsg::Ping)).await.unwrap();
        assert_eq!(reply, Ok(EchoReply::Pong));
        cluster.stop().await.unwrap();
    })
    .await;
}

/// Round trips to worker 1 while worker 0 floods in `mode`: the 99th percentile, in ms.
async fn p99_while_flooding(mode: &str) -> f64 {
    let logs = tempdir();
    // A handler that keeps up: the flood reaches the master's handlers at full speed.
    let (handler, _handled) = slow_handler(Duration::ZERO);
    let cluster = ClusterSupervisor::builder::<Echo>(flood_config(2, mode, &logs))
        .on_message(handler)
        .start()
        .await
        .unwrap();
    cluster.worker(0).do_send(Tell(EchoMsg::Ping));
    let kind = match mode {
        "flood-logs" => "Log",
        "flood-sends" => "Send",
        "flood-joins" => "System",
        _ => "Event",
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(&cluster, 0, kind).await < 10_000 {
        assert!(Instant::now() < deadline, "{mode}: the flood never came");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let worker = cluster.worker(1);
    let mut rtts = Vec::new();
    for _ in 0..300 {
        let sent = Instant::now();
        let reply = worker.send(Call(EchoMsg::Ping)).await.unwrap();
        rtts.push(sent.elapsed().as_secs_f64() * 1e3);
        assert_eq!(reply, Ok(EchoReply::Pong), "{mode}");
    }
    let flooded = received(&cluster, 0, kind).await;
    assert!(flooded > 20_000, "{mode}: only {flooded} frames: no flood");
    cluster.stop().await.unwrap();
    rtts.sort_by(f64::total_cmp);
    eprintln!("{mode}: max {:.2} ms", rtts[rtts.len() - 1]);
    rtts[rtts.len() * 99 / 100]
}

#[actix::test]
async fn round_trips_to_another_worker_stay_under_50_ms_at_p99_while_one_floods() {
    // Alone: the floods would disturb the memory measures of the other tests.
    let _memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    within(300, async {
        for mode in ["flood-events", "flood-logs", "flood-sends", "flood-joins"] {
            let p99 = p99_while_flooding(mode).await;
            eprintln!("{mode}: p99 {p99:.2} ms");
            assert!(p99 < 50.0, "{mode}: p99 round trip {p99:.1} ms");
        }
    })
    .await;
}

/// A fresh temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("procactor-bounds-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Asks worker 0 (`tell-burst`) for a burst of 1000 `tell_worker`s to worker 1; what it says:
/// (accepted, refused with backpressure).
async fn burst(
    cluster: &Cluster<Echo>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<FromWorker<String>>,
) -> (u64, u64) {
    cluster.worker(0).do_send(Tell(EchoMsg::Ping));
    let told =
        common::cluster::next_matching(rx, Duration::from_secs(30), |m| m.msg.starts_with("told "))
            .await
            .expect("the burst's report");
    let n: Vec<u64> = told.msg[5..]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(n[2], 0, "no other error: {}", told.msg);
    assert_eq!(n[0] + n[1], 1000, "{}", told.msg);
    (n[0], n[1])
}

#[actix::test]
async fn tell_worker_to_a_stuck_receiver_is_refused_with_backpressure_and_nothing_accepted_is_lost()
{
    within(120, async {
        let logs = tempdir();
        let mut config = chaos_config(2, &[(0, "tell-burst"), (1, "stop-reading")])
            .heartbeat_interval(Duration::ZERO)
            .shutdown_timeout(Duration::from_secs(1))
            .max_frame_bytes(64 * 1024)
            .max_outbox_bytes(256 * 1024);
        config.log.dir = Some(logs.to_path_buf());
        let (reports, mut rx) = common::cluster::collector::<FromWorker<String>>();
        let cluster = ClusterSupervisor::builder::<Echo>(config)
            .on_message(reports)
            .start()
            .await
            .unwrap();
        let (mut accepted, mut last) = (0, u64::MAX);
        for round in 0..6 {
            let (ok, refused) = burst(&cluster, &mut rx).await;
            eprintln!("round {round}: {ok} accepted, {refused} refused");
            assert!(refused > 0, "round {round}: a stuck receiver refuses");
            accepted += ok;
            last = ok;
        }
        assert_eq!(last, 0, "once its outbox is full, nothing more is accepted");
        // Every message accepted went into the receiver's outbox: none was dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats: Vec<WorkerStats> = cluster.stats().await.unwrap();
            let delivered = stats[1].sent.get("Deliver").copied().unwrap_or(0);
            if delivered == accepted {
                assert_eq!(stats[1].errors, 0, "nothing refused at the receiver");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{delivered} of {accepted} delivered"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // Its process ends: what it had is gone with it, and the sender may send again.
        cluster.kill(1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.workers().await.unwrap()[1].state != WorkerState::Ready {
            assert!(Instant::now() < deadline, "worker 1 never came back");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let (ok, _) = burst(&cluster, &mut rx).await;
        assert!(ok > 0, "the window opened again");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn extreme_values_from_a_worker_are_answered_without_overflow_or_panic() {
    within(60, async {
        let logs = tempdir();
        let (events, _rx) = common::cluster::collector::<FromWorker<String>>();
        let cluster = ClusterSupervisor::builder::<Echo>(flood_config(2, "extremes", &logs))
            .on_message(events)
            .start()
            .await
            .unwrap();
        let pid = cluster.workers().await.unwrap()[0].pid;
        cluster.worker(0).do_send(Tell(EchoMsg::Ping));
        let deadline = Instant::now() + Duration::from_secs(20);
        for (kind, n) in [
            ("System", 20),
            ("Log", 1),
            ("Event", 1),
            ("Send", 2),
            ("Ask", 2),
        ] {
            while received(&cluster, 0, kind).await < n {
                assert!(Instant::now() < deadline, "the {kind} frames never came");
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Every frame was valid: the worker still runs (no fault), and the master serves.
        let workers = cluster.workers().await.unwrap();
        assert_eq!(workers[0].pid, pid, "the same process");
        assert_eq!(workers[0].state, WorkerState::Ready);
        let reply = cluster.worker(1).send(Call(EchoMsg::Ping)).await.unwrap();
        assert_eq!(reply, Ok(EchoReply::Pong));
        // The set with the largest TTL holds; the overflowing increment was refused, not wrapped.
        let cache = cluster.cache();
        assert!(cache.exists("c", "k").await.unwrap());
        assert_eq!(cache.get::<i64>("c", "n").await.unwrap(), Some(i64::MAX));
        assert_eq!(cache.get::<i64>("c", "m").await.unwrap(), Some(i64::MIN));
        cluster.stop().await.unwrap();
    })
    .await;
}
