//! Supervision groups are message topics, and confirmations count in rounds, end to end with
//! real worker processes: publish to a group from the master and from workers of either group,
//! members and pids by group (from the master and from a worker), a killed worker out of its
//! group while it restarts and back after, a reload keeping the members; two rounds of one key,
//! the master confirming, and one process confirming twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::cluster::{collector, next_matching, relay_config, within};
use common::relay::{Received, Relay, RelayMsg, RelayReply};
use procactor::prelude::*;
use procactor::{AskError, Backoff, ClusterInfo, Error, Peer, RestartPolicy, Via, WorkerEventKind};

const RELAY: &str = env!("CARGO_BIN_EXE_procactor-relay");

/// Sends the `pos`-th worker of `group` (in slot order) a command and returns its reply.
async fn cmd(group: &Cluster<Relay>, pos: usize, msg: RelayMsg) -> RelayReply {
    group.addrs()[pos]
        .send(Call(msg))
        .await
        .expect("mailbox")
        .expect("call")
}

/// The ids and pids of `group`'s workers, in slot order.
async fn ids_pids(group: &Cluster<Relay>) -> (Vec<WorkerId>, Vec<u32>) {
    let workers = group.workers().await.unwrap();
    let ids = workers.iter().map(|w| w.id).collect();
    let pids = workers.iter().map(|w| w.pid.expect("running")).collect();
    (ids, pids)
}

async fn log(group: &Cluster<Relay>, pos: usize) -> Vec<Received> {
    match cmd(group, pos, RelayMsg::Log).await {
        RelayReply::Log(log) => log,
        other => panic!("{other:?}"),
    }
}

/// Polls the log of `group`'s `pos`-th worker until it holds `n` notes; panics after 20 s.
async fn notes(group: &Cluster<Relay>, pos: usize, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log(group, pos).await;
        if log.len() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "worker {pos}: {n} notes: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn texts(log: &[Received]) -> Vec<&str> {
    log.iter().map(|r| r.text.as_str()).collect()
}

async fn clear(groups: &[&Cluster<Relay>]) {
    for group in groups {
        for pos in 0..group.len() {
            assert_eq!(cmd(group, pos, RelayMsg::Clear).await, RelayReply::Done);
        }
    }
}

/// A cluster of two relay groups, `web` (2 workers) and `cache` (2 workers), whose restarts
/// wait `backoff` (no jitter).
async fn web_and_cache(
    backoff: Duration,
    events: Option<Recipient<WorkerEvent>>,
) -> (procactor::Groups, Cluster<Relay>, Cluster<Relay>) {
    let policy = RestartPolicy {
        backoff: Backoff {
            floor: backoff,
            cap: backoff,
            jitter: 0.0,
            ..Backoff::default()
        },
        ..RestartPolicy::default()
    };
    let mut builder = ClusterSupervisor::with_groups(relay_config(1).restart(policy));
    let web = builder.group::<Relay>(GroupConfig::new("web").workers(2).exec(RELAY));
    let cache = builder.group::<Relay>(GroupConfig::new("cache").workers(2).exec(RELAY));
    if let Some(events) = events {
        builder.subscribe(events);
    }
    let groups = builder.start().await.unwrap();
    let (web, cache) = (
        groups.get(web).unwrap().clone(),
        groups.get(cache).unwrap().clone(),
    );
    (groups, web, cache)
}

fn pids_by_group(web: &[u32], cache: &[u32]) -> BTreeMap<String, Vec<u32>> {
    BTreeMap::from([
        ("web".into(), web.to_vec()),
        ("cache".into(), cache.to_vec()),
    ])
}

#[actix::test]
async fn publish_to_a_supervision_group_reaches_exactly_its_live_workers() {
    within(120, async {
        let (groups, web, cache) = web_and_cache(Duration::from_millis(100), None).await;
        let (web_ids, web_pids) = ids_pids(&web).await;
        let (cache_ids, cache_pids) = ids_pids(&cache).await;

        // Members from the start, without `join`; pids by group, from the master and a worker.
        assert_eq!(web.group_members("web"), web_ids);
        assert_eq!(web.group_members("cache"), cache_ids);
        let info = web.info().await.unwrap();
        assert_eq!(info.pids_by_group(), pids_by_group(&web_pids, &cache_pids));
        assert_eq!(info.group_pids("cache"), cache_pids);
        let RelayReply::Info(seen) = cmd(&cache, 1, RelayMsg::Info).await else {
            panic!()
        };
        assert_eq!(seen.pids_by_group(), pids_by_group(&web_pids, &cache_pids));

        // From the master (through either group's handle): exactly the group's workers.
        let note = |text: &str| RelayMsg::Note(text.into());
        assert_eq!(web.publish("cache", &note("m1")).await.unwrap(), 2);
        assert_eq!(cache.publish("web", &note("m2")).await.unwrap(), 2);
        // From a worker of the other group: all of the group's workers.
        let publish = |group: &str, text: &str| RelayMsg::Publish {
            group: group.into(),
            text: text.into(),
        };
        assert_eq!(cmd(&web, 0, publish("cache", "w1")).await, RelayReply::Done);
        // From a worker of the group itself: the others, not the publisher.
        assert_eq!(
            cmd(&cache, 0, publish("cache", "c1")).await,
            RelayReply::Done
        );
        let cache0 = notes(&cache, 0, 2).await;
        assert_eq!(texts(&cache0), ["m1", "w1"]);
        assert_eq!(cache0[0].from, Peer::Master);
        assert_eq!(cache0[0].via, Via::Group("cache".into()));
        assert_eq!(
            cache0[1].from,
            Peer::Worker {
                id: web_ids[0],
                pid: web_pids[0]
            }
        );
        assert_eq!(texts(&notes(&cache, 1, 3).await), ["m1", "w1", "c1"]);
        for pos in 0..2 {
            assert_eq!(texts(&notes(&web, pos, 1).await), ["m2"]);
        }
        // A round trip through every publisher's pipe after its publish: nothing more came.
        for pos in 0..2 {
            assert_eq!(
                cmd(&web, pos, RelayMsg::Pid).await,
                RelayReply::Pid(web_pids[pos])
            );
            assert_eq!(
                cmd(&cache, pos, RelayMsg::Pid).await,
                RelayReply::Pid(cache_pids[pos])
            );
        }
        assert_eq!(log(&web, 0).await.len(), 1);
        assert_eq!(log(&cache, 0).await.len(), 2);

        // `join` adds a topic — another group's too; leaving one's own group does nothing.
        assert_eq!(
            cmd(&web, 1, RelayMsg::Join("cache".into())).await,
            RelayReply::Done
        );
        assert_eq!(
            cmd(&cache, 0, RelayMsg::Leave("cache".into())).await,
            RelayReply::Done
        );
        let mut members = cache_ids.clone();
        members.push(web_ids[1]);
        members.sort();
        assert_eq!(web.group_members("cache"), members);
        let info = web.info().await.unwrap();
        assert_eq!(info.groups["cache"], members);
        assert_eq!(info.workers[web_ids[1]].groups, ["cache"]);
        assert!(
            info.workers[cache_ids[0]].groups.is_empty(),
            "not joined, a member"
        );
        clear(&[&web, &cache]).await;
        assert_eq!(web.publish("cache", &note("m3")).await.unwrap(), 3);
        assert_eq!(texts(&notes(&web, 1, 1).await), ["m3"]);
        assert_eq!(texts(&notes(&cache, 0, 1).await), ["m3"]);
        assert!(log(&web, 0).await.is_empty());
        groups.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_killed_worker_is_out_of_its_group_while_it_restarts_and_back_after() {
    within(120, async {
        let (events, mut rx) = collector::<WorkerEvent>();
        // Restarts wait 5 s: long enough to look at the group in between.
        let (groups, web, cache) = web_and_cache(Duration::from_secs(5), Some(events)).await;
        let (web_ids, web_pids) = ids_pids(&web).await;
        let (cache_ids, cache_pids) = ids_pids(&cache).await;
        let victim = cache_ids[1];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(cache_pids[1] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let restarting = next_matching(&mut rx, Duration::from_secs(20), |e| {
            e.worker == victim && matches!(e.kind, WorkerEventKind::Restarting { .. })
        })
        .await
        .expect("a restart scheduled");
        let gone_at = Instant::now();
        assert!(
            matches!(restarting.kind, WorkerEventKind::Restarting { delay } if delay >= Duration::from_secs(5)),
            "{restarting:?}"
        );
        assert_eq!(web.group_members("cache"), [cache_ids[0]]);
        let note = RelayMsg::Note("while restarting".into());
        assert_eq!(web.publish("cache", &note).await.unwrap(), 1);
        let info: ClusterInfo = web.info().await.unwrap();
        assert_eq!(info.groups["cache"], [cache_ids[0]]);
        assert_eq!(
            info.pids_by_group(),
            pids_by_group(&web_pids, &cache_pids[..1])
        );
        assert!(
            gone_at.elapsed() < Duration::from_secs(4),
            "looked within the backoff ({restarting:?})"
        );

        // Back once its new process runs, with its new pid.
        common::eventually(Duration::from_secs(30), "the restart", || async {
            web.group_members("cache") == cache_ids
        })
        .await;
        let (_, new_pids) = ids_pids(&cache).await;
        assert_ne!(new_pids[1], cache_pids[1]);
        let note = RelayMsg::Note("back".into());
        assert_eq!(web.publish("cache", &note).await.unwrap(), 2);
        assert_eq!(texts(&notes(&cache, 1, 1).await), ["back"]);

        // A reload replaces every process; the members stay.
        web.reload().await.unwrap();
        assert_eq!(web.group_members("web"), web_ids);
        assert_eq!(web.group_members("cache"), cache_ids);
        let (_, reloaded_web) = ids_pids(&web).await;
        let (_, reloaded_cache) = ids_pids(&cache).await;
        assert!(reloaded_web.iter().all(|p| !web_pids.contains(p)));
        assert_eq!(
            web.info().await.unwrap().pids_by_group(),
            pids_by_group(&reloaded_web, &reloaded_cache)
        );
        groups.stop().await.unwrap();
    })
    .await;
}

/// A worker's id and pid, as its confirmations are stamped.
async fn peer(group: &Cluster<Relay>, pos: usize) -> Peer {
    let (ids, pids) = ids_pids(group).await;
    Peer::Worker {
        id: ids[pos],
        pid: pids[pos],
    }
}

async fn confirm(group: &Cluster<Relay>, pos: usize, key: &str) {
    assert_eq!(
        cmd(group, pos, RelayMsg::Confirm(key.into())).await,
        RelayReply::Done
    );
}

#[actix::test]
async fn two_confirmation_rounds_of_one_key_each_count_from_zero() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3))
            .await
            .unwrap();
        let (w0, w1, w2) = (
            peer(&cluster, 0).await,
            peer(&cluster, 1).await,
            peer(&cluster, 2).await,
        );
        let mut rounds = cluster.on_confirmation("step", 2).await.unwrap();
        // Round one.
        confirm(&cluster, 1, "step").await;
        assert_eq!(rounds.try_next(), None, "one of two");
        confirm(&cluster, 2, "step").await;
        assert_eq!(rounds.try_next(), Some(vec![w1, w2]));
        let long = Duration::from_secs(20);
        assert_eq!(
            cluster.await_confirmations("step", 2, long).await.unwrap(),
            [1, 2]
        );
        // Round two starts from zero, for the registration and for the master's waits.
        let master = cluster.clone();
        let second = actix::spawn(async move { master.await_confirmations("step", 2, long).await });
        confirm(&cluster, 0, "step").await;
        assert_eq!(rounds.try_next(), None, "one of two, again");
        confirm(&cluster, 1, "step").await;
        assert_eq!(rounds.try_next(), Some(vec![w0, w1]));
        let second = second.await.unwrap().unwrap();
        assert_eq!(second, [0, 1]);
        // A worker's first wait sees what is on record; its second, a round of its own.
        let waits = |n| RelayMsg::AwaitConfirmations {
            key: "step".into(),
            n,
            timeout_ms: 300,
        };
        assert_eq!(
            cmd(&cluster, 2, waits(3)).await,
            RelayReply::Confirmed(vec![2, 0, 1])
        );
        assert!(matches!(
            cmd(&cluster, 2, waits(1)).await,
            RelayReply::Failed(AskError::Timeout(_))
        ));
        assert_eq!(rounds.missed(), 0);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn the_master_confirms_as_one_process_and_one_process_counts_once_a_round() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(2))
            .await
            .unwrap();
        let (w0, w1) = (peer(&cluster, 0).await, peer(&cluster, 1).await);
        let mut rounds = cluster.on_confirmation("warm", 2).await.unwrap();
        // The master confirms, twice: one process, one count.
        cluster.confirm("warm").await.unwrap();
        cluster.confirm("warm").await.unwrap();
        assert_eq!(rounds.try_next(), None);
        // A worker waiting for 2 is answered with the workers of the round (the master has no
        // worker id).
        let waiting = cluster.addrs()[0].send(Call(RelayMsg::AwaitConfirmations {
            key: "warm".into(),
            n: 2,
            timeout_ms: 20_000,
        }));
        let waiting = actix::spawn(waiting);
        // A worker confirming twice counts once too.
        confirm(&cluster, 1, "warm").await;
        assert_eq!(rounds.try_next(), Some(vec![Peer::Master, w1]));
        assert_eq!(
            waiting.await.unwrap().unwrap().unwrap(),
            RelayReply::Confirmed(vec![id_of(w1)])
        );
        confirm(&cluster, 1, "warm").await;
        confirm(&cluster, 1, "warm").await;
        assert_eq!(
            rounds.try_next(),
            None,
            "worker 1 twice in one round: one count"
        );
        confirm(&cluster, 0, "warm").await;
        assert_eq!(rounds.try_next(), Some(vec![w1, w0]));
        // Refused: an empty round, a key past its bound.
        assert!(matches!(
            cluster.on_confirmation("warm", 0).await,
            Err(Error::Ask(AskError::Invalid(_)))
        ));
        assert!(matches!(
            cluster.confirm(&"k".repeat(2000)).await,
            Err(Error::Ask(AskError::Invalid(_)))
        ));
        // Dropped, the registration ends; the next registration counts what is on record.
        drop(rounds);
        let mut again = cluster.on_confirmation("warm", 3).await.unwrap();
        assert_eq!(again.try_next(), Some(vec![Peer::Master, w1, w0]));
        cluster.stop().await.unwrap();
        assert_eq!(again.next().await, None, "the cluster stopped");
    })
    .await;
}

fn id_of(peer: Peer) -> WorkerId {
    match peer {
        Peer::Worker { id, .. } => id,
        other => panic!("a worker of this node, not {other:?}"),
    }
}
