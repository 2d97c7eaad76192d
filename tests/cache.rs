//! The shared cache from several worker processes at once: exact counters, TTL, the LRU bound,
//! ordered notifications, replicas, locks (contention, and a holder killed with SIGKILL), and
//! snapshots (round trip, a corrupt one set aside, and large ones written often while workers
//! are served).

mod common;

use std::time::{Duration, Instant};

use common::cluster::within;
use common::is_alive;
use common::relay::{Relay, RelayMsg, RelayReply};
use procactor::cache::{CacheConfig, Limits};
use procactor::prelude::*;

use common::cluster::relay_config as config;

use common::cluster::relay as cmd;

fn temp_path(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("procactor-cache-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("cache.snapshot")
}

#[actix::test]
async fn a_counter_incremented_10000_times_from_4_workers_ends_exact() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(4)).await.unwrap();
        let runs: Vec<_> = (0..4)
            .map(|w| {
                cluster.worker(w).send(Call(RelayMsg::CacheIncrement {
                    collection: "counters".into(),
                    key: "hits".into(),
                    times: 2_500,
                }))
            })
            .collect();
        for run in runs {
            assert_eq!(run.await.unwrap().unwrap(), RelayReply::Done);
        }
        let cache = cluster.cache();
        assert_eq!(
            cache.get::<i64>("counters", "hits").await.unwrap(),
            Some(10_000)
        );
        assert_eq!(
            cache.increment("counters", "hits", -1).await.unwrap(),
            9_999
        );
        // Every other operation from the master.
        cache.set("c", "a/1", &"one", None).await.unwrap();
        cache.set("c", "a/2", &"two", None).await.unwrap();
        cache.set("c", "b/1", &"three", None).await.unwrap();
        assert_eq!(cache.keys("c", "a/").await.unwrap(), ["a/1", "a/2"]);
        assert!(cache.exists("c", "b/1").await.unwrap());
        assert!(cache.delete("c", "b/1").await.unwrap());
        assert!(!cache.exists("c", "b/1").await.unwrap());
        assert!(cache
            .compare_and_set("c", "a/1", Some(&"one"), Some(&"uno"), None)
            .await
            .unwrap());
        assert!(!cache
            .compare_and_set("c", "a/1", Some(&"one"), Some(&"eins"), None)
            .await
            .unwrap());
        assert_eq!(
            cache.get::<String>("c", "a/1").await.unwrap().as_deref(),
            Some("uno")
        );
        assert!(
            cache.increment("c", "a/1", 1).await.is_err(),
            "not an integer"
        );
        assert_eq!(cache.ttl("c", "a/1").await.unwrap(), Some(None));
        assert_eq!(cache.ttl("c", "nope").await.unwrap(), None);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn keys_expire_on_time_and_subscribers_hear_of_it() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(2)).await.unwrap();
        let cache = cluster.cache();
        let mut changes = cache.subscribe("sessions", "").await.unwrap();
        let set = cmd(
            &cluster,
            0,
            RelayMsg::CacheSet {
                collection: "sessions".into(),
                key: "s1".into(),
                value: "alice".into(),
                ttl_ms: Some(300),
            },
        )
        .await;
        assert_eq!(set, RelayReply::Done);
        let ttl = cache
            .ttl("sessions", "s1")
            .await
            .unwrap()
            .flatten()
            .expect("has a ttl");
        assert!(
            ttl <= Duration::from_millis(300) && ttl > Duration::ZERO,
            "{ttl:?}"
        );
        assert!(cache.exists("sessions", "s1").await.unwrap());
        // The expiry is an event: await it, then the key is gone.
        let t = Instant::now();
        let first = changes.recv().await.unwrap();
        assert!(matches!(first.change, procactor::cache::Change::Set(_)));
        let second = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("the expiry is announced")
            .unwrap();
        assert_eq!(second.change, procactor::cache::Change::Expired);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!cache.exists("sessions", "s1").await.unwrap());
        let stats = cache.stats().await.unwrap();
        let sessions = stats
            .collections
            .iter()
            .find(|c| c.name == "sessions")
            .unwrap();
        assert_eq!(sessions.expiries, 1);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_bounded_collection_evicts_the_least_recently_used() {
    within(60, async {
        let cache_config = CacheConfig {
            collections: vec![(
                "lru".into(),
                Limits {
                    max_entries: Some(100),
                    max_bytes: None,
                },
            )],
            ..CacheConfig::default()
        };
        let cluster = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config))
            .await
            .unwrap();
        let cache = cluster.cache();
        for n in 0..100u64 {
            cache.set("lru", &format!("k{n}"), &n, None).await.unwrap();
        }
        // k0 is read, so k1 is now the least recently used.
        assert_eq!(cache.get::<u64>("lru", "k0").await.unwrap(), Some(0));
        for n in 100..150u64 {
            cache.set("lru", &format!("k{n}"), &n, None).await.unwrap();
        }
        let keys = cache.keys("lru", "").await.unwrap();
        assert_eq!(keys.len(), 100);
        assert!(keys.contains(&"k0".to_string()), "recently read: kept");
        for n in 1..=50 {
            assert!(!keys.contains(&format!("k{n}")), "k{n} should be evicted");
        }
        let stats = cache.stats().await.unwrap();
        let lru = stats.collections.iter().find(|c| c.name == "lru").unwrap();
        assert_eq!((lru.entries, lru.evictions), (100, 50));
        // Other collections are unbounded.
        for n in 0..200u64 {
            cache.set("free", &format!("k{n}"), &n, None).await.unwrap();
        }
        assert_eq!(cache.keys("free", "").await.unwrap().len(), 200);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn subscribers_hear_changes_in_order_and_a_replica_stays_in_sync() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(3)).await.unwrap();
        let subscribe = RelayMsg::CacheSubscribe {
            collection: "items".into(),
            prefix: "a/".into(),
        };
        assert_eq!(cmd(&cluster, 1, subscribe).await, RelayReply::Done);
        assert_eq!(
            cmd(&cluster, 2, RelayMsg::CacheReplica("items".into())).await,
            RelayReply::Done
        );
        let cache = cluster.cache();
        for (key, value) in [("a/1", "x"), ("b/1", "ignored"), ("a/2", "y"), ("a/1", "z")] {
            cache.set("items", key, &value, None).await.unwrap();
        }
        cache.delete("items", "a/2").await.unwrap();
        // Worker 1 heard exactly the a/ changes, in order.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut events = Vec::new();
        while events.len() < 4 {
            let RelayReply::Events(more) = cmd(&cluster, 1, RelayMsg::CacheEvents).await else {
                panic!()
            };
            events.extend(more);
            assert!(Instant::now() < deadline, "{events:?}");
        }
        let expected = [
            ("a/1", "set x"),
            ("a/2", "set y"),
            ("a/1", "set z"),
            ("a/2", "deleted"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, c)| (k.to_string(), c.to_string()))
            .collect();
        assert_eq!(events, expected);

        // A burst of writes from worker 0 (numbers), then worker 2's replica matches the store.
        cache.delete("items", "a/1").await.unwrap();
        cache.delete("items", "b/1").await.unwrap();
        let burst = RelayMsg::CacheBurst {
            collection: "items".into(),
            prefix: "n".into(),
            count: 1_000,
        };
        assert_eq!(cmd(&cluster, 0, burst).await, RelayReply::Done);
        let truth = cache.entries::<u64>("items", "").await.unwrap();
        assert_eq!(truth.len(), 900);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let RelayReply::Entries(replica) = cmd(&cluster, 2, RelayMsg::CacheReplicaState).await
            else {
                panic!()
            };
            if replica == truth {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica has {} entries",
                replica.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_lock_excludes_every_other_process_under_contention() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(4)).await.unwrap();
        let runs: Vec<_> = (0..4)
            .map(|w| {
                cluster.worker(w).send(Call(RelayMsg::CacheLockedIncrement {
                    lock: "L".into(),
                    collection: "c".into(),
                    key: "n".into(),
                    times: 200,
                }))
            })
            .collect();
        for run in runs {
            assert_eq!(run.await.unwrap().unwrap(), RelayReply::Done);
        }
        // A read-modify-write without the lock would lose updates; with it, none is lost.
        assert_eq!(
            cluster.cache().get::<u64>("c", "n").await.unwrap(),
            Some(800)
        );
        let stats = cluster.cache().stats().await.unwrap();
        assert_eq!(stats.locks_held, 0);
        // Every operation counted once, as served: 200 rounds of lock, get, set, unlock each.
        let counted = |kind: &str| (stats.operations[kind].ok, stats.operations[kind].error);
        for kind in ["lock", "set", "unlock"] {
            assert_eq!(counted(kind), (800, 0), "{kind}");
        }
        assert_eq!(counted("get"), (801, 0), "and the master's");
        assert_eq!(stats.locks.grants, 800);
        assert_eq!(stats.locks.wait_histogram.count, 800);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_lock_is_released_when_its_holder_is_killed_and_waits_time_out() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(3)).await.unwrap();
        let RelayReply::Pid(holder) = cmd(&cluster, 0, RelayMsg::Pid).await else {
            panic!()
        };
        assert_eq!(
            cmd(&cluster, 0, RelayMsg::CacheHoldLock("L".into())).await,
            RelayReply::Done
        );
        // While it is held, a short wait times out.
        let reply = cmd(
            &cluster,
            2,
            RelayMsg::CacheLockWait {
                lock: "L".into(),
                wait_ms: 200,
            },
        )
        .await;
        assert!(
            matches!(&reply, RelayReply::Failed(e) if e.to_string().contains("not acquired")),
            "{reply:?}"
        );
        // A long one is served as soon as the holder dies.
        let waiter = cluster.worker(1).send(Call(RelayMsg::CacheLockWait {
            lock: "L".into(),
            wait_ms: 30_000,
        }));
        common::eventually(
            Duration::from_secs(10),
            "worker 1 in line for the lock",
            || async { cluster.cache().stats().await.unwrap().lock_waiters == 1 },
        )
        .await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let RelayReply::Int(waited_ms) = waiter.await.unwrap().unwrap() else {
            panic!()
        };
        assert!(
            waited_ms < 10_000,
            "waited {waited_ms} ms; the lease was 60 s"
        );
        assert!(!is_alive(holder));
        let stats = cluster.cache().stats().await.unwrap();
        let locks = &stats.locks;
        assert_eq!((locks.grants, locks.waits, locks.timeouts), (2, 1, 1));
        assert_eq!((locks.freed_by_exit, locks.lease_expiries), (1, 0));
        // In line in the master: within the time the waiter saw pass (whole milliseconds).
        let seen = Duration::from_millis(waited_ms as u64 + 1);
        assert!(locks.wait_time > Duration::ZERO && locks.wait_time <= seen);
        let lock = stats.operations["lock"];
        assert_eq!((lock.ok, lock.error), (2, 1), "granted twice, one timeout");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_snapshot_survives_a_restart_of_the_cluster_and_a_corrupt_one_is_set_aside() {
    within(120, async {
        let path = temp_path("snapshot");
        let cache_config = CacheConfig {
            snapshot: Some(path.clone()),
            ..CacheConfig::default()
        };
        let cluster = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config.clone()))
            .await
            .unwrap();
        let cache = cluster.cache();
        cache.set("users", "alice", &42u64, None).await.unwrap();
        cache
            .set("users", "bob", &7u64, Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        cache
            .set("users", "gone", &0u64, Some(Duration::from_millis(1)))
            .await
            .unwrap();
        cluster.stop().await.unwrap();
        assert!(path.exists(), "written at stop");

        let cluster = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config.clone()))
            .await
            .unwrap();
        let cache = cluster.cache();
        assert_eq!(cache.get::<u64>("users", "alice").await.unwrap(), Some(42));
        assert_eq!(cache.get::<u64>("users", "bob").await.unwrap(), Some(7));
        let ttl = cache.ttl("users", "bob").await.unwrap().flatten().unwrap();
        assert!(ttl > Duration::from_secs(3500), "the ttl survived: {ttl:?}");
        assert_eq!(cache.get::<u64>("users", "gone").await.unwrap(), None);
        assert_eq!(cache.stats().await.unwrap().snapshot_error, None);
        cluster.stop().await.unwrap();

        // Flip a byte in the middle: the checksum catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let cluster = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config))
            .await
            .unwrap();
        let cache = cluster.cache();
        let stats = cache.stats().await.unwrap();
        assert!(stats.snapshot_error.is_some(), "the corruption is reported");
        assert_eq!(
            cache.get::<u64>("users", "alice").await.unwrap(),
            None,
            "not loaded"
        );
        let aside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("corrupt"))
            .collect();
        assert_eq!(aside.len(), 1, "set aside, not deleted: {aside:?}");
        cluster.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    })
    .await;
}

#[actix::test]
async fn snapshots_of_32_mib_every_20_ms_do_not_stall_round_trips_and_the_last_is_whole() {
    within(180, async {
        let path = temp_path("busy-snapshots");
        let busy = CacheConfig {
            snapshot: Some(path.clone()),
            snapshot_interval: Some(Duration::from_millis(20)),
            ..CacheConfig::default()
        };
        let cluster = ClusterSupervisor::start::<Relay>(config(2).cache(busy))
            .await
            .unwrap();
        let cache = cluster.cache();
        // 32 MiB in 512 values of 64 KiB (a 31 MB snapshot every 20 ms once stalled the loop
        // for seconds and kept stop() waiting).
        let value = vec![7u8; 64 * 1024];
        for n in 0..512 {
            cache
                .set("big", &format!("k{n}"), &value, None)
                .await
                .unwrap();
        }
        common::eventually(Duration::from_secs(20), "a snapshot written", || async {
            cache.stats().await.unwrap().snapshots_written > 0
        })
        .await;
        let written_before = cache.stats().await.unwrap().snapshots_written;

        // Round trips to a worker for at least 2 s, and until 3 more snapshots are written.
        let mut rtts = Vec::new();
        let t = Instant::now();
        let mut written = 0;
        while t.elapsed() < Duration::from_secs(2) || written < 3 {
            assert!(t.elapsed() < Duration::from_secs(60), "{written} written");
            let sent = Instant::now();
            assert!(matches!(
                cmd(&cluster, 1, RelayMsg::Pid).await,
                RelayReply::Pid(_)
            ));
            rtts.push(sent.elapsed());
            if rtts.len() % 100 == 0 {
                let stats = cache.stats().await.unwrap();
                written = stats.snapshots_written - written_before;
            }
        }
        rtts.sort();
        let p99 = rtts[rtts.len() * 99 / 100];
        assert!(
            p99 < Duration::from_millis(100),
            "p99 {p99:?} over {} round trips, max {:?}",
            rtts.len(),
            rtts.last()
        );

        // The state at stop is in the last snapshot, and stop waits for it, no longer.
        cache.set("big", "last", &value, None).await.unwrap();
        let t = Instant::now();
        cluster.stop().await.unwrap();
        let stopping = t.elapsed();
        assert!(stopping < Duration::from_secs(10), "stop took {stopping:?}");
        let quiet = CacheConfig {
            snapshot: Some(path.clone()),
            ..CacheConfig::default()
        };
        let cluster = ClusterSupervisor::start::<Relay>(config(1).cache(quiet))
            .await
            .unwrap();
        let cache = cluster.cache();
        assert_eq!(cache.stats().await.unwrap().snapshot_error, None);
        assert_eq!(cache.keys("big", "").await.unwrap().len(), 513);
        assert_eq!(
            cache.get::<Vec<u8>>("big", "last").await.unwrap(),
            Some(value)
        );
        cluster.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    })
    .await;
}

#[actix::test]
async fn one_cluster_per_snapshot_path_and_a_missing_directory_is_refused_at_start() {
    within(120, async {
        let path = temp_path("shared-snapshot");
        let cache_config = CacheConfig {
            snapshot: Some(path.clone()),
            ..CacheConfig::default()
        };
        let first = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config.clone()))
            .await
            .unwrap();
        let second = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config.clone())).await;
        match second {
            Err(procactor::Error::Config(e)) => {
                assert_eq!(e.field, "cache");
                assert!(
                    e.reason.contains(&path.display().to_string()),
                    "{}",
                    e.reason
                );
            }
            other => panic!("a second cluster on the same snapshot path: {other:?}"),
        }
        // Once the first has stopped (its last snapshot written), the path is free.
        first.stop().await.unwrap();
        let third = ClusterSupervisor::start::<Relay>(config(1).cache(cache_config))
            .await
            .unwrap();
        third.stop().await.unwrap();

        let missing = CacheConfig {
            snapshot: Some(path.with_file_name("no-such-dir").join("cache.snap")),
            ..CacheConfig::default()
        };
        match ClusterSupervisor::start::<Relay>(config(1).cache(missing)).await {
            Err(procactor::Error::Config(e)) => {
                assert!(e.reason.contains("no-such-dir"), "{}", e.reason)
            }
            other => panic!("a snapshot in a missing directory: {other:?}"),
        }
    })
    .await;
}
