//! Near-caches in worker processes: what a reader may observe (see `procactor::cache::NearCache`).
//! A write by another process that happened before a read (through the cluster's own
//! messages) is seen by the read; a near-cache answers what it holds without the master, its
//! own writes at once, never a value past its time to live, and holds no more than its bound.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{relay as cmd, relay_config as config, within};
use common::relay::{Relay, RelayMsg, RelayReply};
use procactor::prelude::*;
use procactor::Peer;

async fn near_get(cluster: &Cluster<Relay>, worker: usize, key: &str) -> (Option<u64>, bool) {
    match cmd(cluster, worker, RelayMsg::NearGet(key.into())).await {
        RelayReply::NearRead { value, local } => (value, local),
        other => panic!("NearGet: {other:?}"),
    }
}

async fn open(cluster: &Cluster<Relay>, worker: usize, collection: &str, max_entries: usize) {
    let open = RelayMsg::NearOpen {
        collection: collection.into(),
        max_entries,
    };
    assert_eq!(cmd(cluster, worker, open).await, RelayReply::Done);
}

#[actix::test]
async fn a_write_is_seen_by_another_workers_near_cache_once_a_message_sent_after_it_arrives() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(2)).await.unwrap();
        open(&cluster, 1, "near", 64).await;
        // Not there: fetched once, then answered by the near-cache (absence is kept too).
        assert_eq!(near_get(&cluster, 1, "k").await, (None, false));
        assert_eq!(near_get(&cluster, 1, "k").await, (None, true));

        // Worker 0 writes 300 times; after each write is answered it tells worker 1 to read.
        // Every read must see that write or a later one, however the invalidation and the
        // message race through the master.
        let writes = RelayMsg::SetThenTell {
            collection: "near".into(),
            key: "k".into(),
            from: 1,
            count: 300,
            to: 1,
        };
        assert_eq!(cmd(&cluster, 0, writes).await, RelayReply::Done);
        let deadline = Instant::now() + Duration::from_secs(60);
        let notes = loop {
            let RelayReply::Log(log) = cmd(&cluster, 1, RelayMsg::Log).await else {
                panic!("Log");
            };
            if log.len() == 300 || Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(notes.len(), 300, "every check ran");
        let stale: Vec<_> = notes.iter().filter(|n| !n.text.starts_with("ok")).collect();
        assert!(stale.is_empty(), "stale reads: {stale:?}");
        assert!(notes
            .iter()
            .all(|n| matches!(n.from, Peer::Worker { id: 0, .. })));
        // Values never go back.
        let values: Vec<u64> = notes
            .iter()
            .map(|n| n.text.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");

        // Settled: the last value, fetched once, then held.
        let (value, _) = near_get(&cluster, 1, "k").await;
        assert_eq!(value, Some(300));
        assert_eq!(near_get(&cluster, 1, "k").await, (Some(300), true));
        let RelayReply::NearStats([hits, misses, _, invalidations, resets]) =
            cmd(&cluster, 1, RelayMsg::NearStats).await
        else {
            panic!("NearStats");
        };
        assert!(hits >= 2 && misses >= 2, "hits {hits}, misses {misses}");
        assert!(invalidations >= 1, "it heard of the writes");
        assert_eq!(resets, 0, "no invalidation was lost or out of order");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn the_masters_writes_own_writes_and_expiry_are_seen_at_once() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(1)).await.unwrap();
        let cache = cluster.cache();
        open(&cluster, 0, "near", 64).await;
        cache.set("near", "a", &1u64, None).await.unwrap();
        assert_eq!(near_get(&cluster, 0, "a").await, (Some(1), false));
        assert_eq!(near_get(&cluster, 0, "a").await, (Some(1), true));

        // The master's write is answered before the request below is sent: the worker takes
        // the invalidation in first.
        cache.set("near", "a", &2u64, None).await.unwrap();
        assert_eq!(near_get(&cluster, 0, "a").await, (Some(2), false));
        assert!(cache.delete("near", "a").await.unwrap());
        assert_eq!(near_get(&cluster, 0, "a").await, (None, false));
        assert_eq!(near_get(&cluster, 0, "a").await, (None, true));

        // Its own write, through the near-cache: seen by its next read.
        let own = RelayMsg::NearSet {
            key: "a".into(),
            value: 7,
            ttl_ms: None,
        };
        assert_eq!(cmd(&cluster, 0, own).await, RelayReply::Done);
        assert_eq!(near_get(&cluster, 0, "a").await.0, Some(7));
        assert_eq!(near_get(&cluster, 0, "a").await, (Some(7), true));
        assert_eq!(cache.get::<u64>("near", "a").await.unwrap(), Some(7));

        // A key with a time to live: held, and never read past its expiry.
        let ttl = Some(Duration::from_millis(400));
        cache.set("near", "t", &5u64, ttl).await.unwrap();
        assert_eq!(near_get(&cluster, 0, "t").await, (Some(5), false));
        assert_eq!(near_get(&cluster, 0, "t").await, (Some(5), true));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.exists("near", "t").await.unwrap() {
            assert!(Instant::now() < deadline, "t never expired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(near_get(&cluster, 0, "t").await.0, None);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_near_cache_holds_no_more_than_its_bound() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(config(1)).await.unwrap();
        let cache = cluster.cache();
        for n in 0..100u64 {
            cache.set("near", &format!("k{n}"), &n, None).await.unwrap();
        }
        open(&cluster, 0, "near", 8).await;
        for n in 0..100u64 {
            let (value, _) = near_get(&cluster, 0, &format!("k{n}")).await;
            assert_eq!(value, Some(n));
        }
        let RelayReply::NearStats([_, misses, entries, _, resets]) =
            cmd(&cluster, 0, RelayMsg::NearStats).await
        else {
            panic!("NearStats");
        };
        assert_eq!(misses, 100);
        assert!(entries <= 8, "{entries} entries");
        assert_eq!(resets, 0);
        // The last ones read are held.
        assert_eq!(near_get(&cluster, 0, "k99").await, (Some(99), true));
        cluster.stop().await.unwrap();
    })
    .await;
}
