//! Messaging between processes, end to end with real worker processes: peer requests both ways,
//! broadcast, groups, confirmations, delivery acknowledgements, master handlers, cluster info,
//! stats, controls, stamped senders, order, backpressure and bad payloads.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::cluster::within;
use common::is_alive;
use common::relay::{Received, Relay, RelayMsg, RelayReply};
use procactor::prelude::*;
use procactor::{AskError, Error, Peer, TellAck, Via, WorkerRequest};

use common::cluster::relay_config;

use common::cluster::relay as cmd;

async fn pid(cluster: &Cluster<Relay>, worker: usize) -> u32 {
    match cmd(cluster, worker, RelayMsg::Pid).await {
        RelayReply::Pid(pid) => pid,
        other => panic!("{other:?}"),
    }
}

async fn log(cluster: &Cluster<Relay>, worker: usize) -> Vec<Received> {
    match cmd(cluster, worker, RelayMsg::Log).await {
        RelayReply::Log(log) => log,
        other => panic!("{other:?}"),
    }
}

/// Polls a worker's log until `pred` holds for it, or panics after 20 s.
async fn log_until(
    cluster: &Cluster<Relay>,
    worker: usize,
    what: &str,
    pred: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = log(cluster, worker).await;
        if pred(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "worker {worker}: {what}: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn texts(log: &[Received]) -> Vec<&str> {
    log.iter().map(|r| r.text.as_str()).collect()
}

#[actix::test]
async fn peers_ask_each_other_both_ways_and_see_the_stamped_sender() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3))
            .await
            .unwrap();
        let pids = [
            pid(&cluster, 0).await,
            pid(&cluster, 1).await,
            pid(&cluster, 2).await,
        ];
        for (asker, answerer) in [(0, 1), (1, 0), (2, 0), (1, 2)] {
            let reply = cmd(
                &cluster,
                asker,
                RelayMsg::AskPeer {
                    to: answerer,
                    text: format!("{asker}->{answerer}"),
                    timeout_ms: 10_000,
                },
            )
            .await;
            assert_eq!(
                reply,
                RelayReply::Echoed {
                    by: answerer,
                    from: Peer::Worker {
                        id: asker,
                        pid: pids[asker]
                    },
                    text: format!("{asker}->{answerer}"),
                }
            );
        }
        // One-way, acknowledged and not; the receiver sees who sent it.
        assert_eq!(
            cmd(
                &cluster,
                2,
                RelayMsg::TellPeerAcked {
                    to: 1,
                    text: "acked".into()
                }
            )
            .await,
            RelayReply::Done
        );
        assert_eq!(
            cmd(
                &cluster,
                0,
                RelayMsg::TellPeer {
                    to: 1,
                    text: "plain".into()
                }
            )
            .await,
            RelayReply::Done
        );
        let log = log_until(&cluster, 1, "two notes", |l| l.len() == 2).await;
        assert_eq!(
            log[0],
            Received {
                from: Peer::Worker {
                    id: 2,
                    pid: pids[2]
                },
                via: Via::Direct,
                text: "acked".into()
            }
        );
        assert_eq!(
            log[1].from,
            Peer::Worker {
                id: 0,
                pid: pids[0]
            }
        );
        // No such worker: a typed error at once.
        let reply = cmd(
            &cluster,
            0,
            RelayMsg::AskPeer {
                to: 9,
                text: "?".into(),
                timeout_ms: 10_000,
            },
        )
        .await;
        assert_eq!(reply, RelayReply::Failed(AskError::NoSuchWorker(9)));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn broadcasts_reach_every_other_worker_exactly_once_and_in_order() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(4))
            .await
            .unwrap();
        for n in 0..20 {
            let reply = cmd(&cluster, 0, RelayMsg::Broadcast(format!("w{n}"))).await;
            assert_eq!(reply, RelayReply::Done);
        }
        // From the master: every worker, acknowledged.
        let received = cluster
            .broadcast(&RelayMsg::Note("from master".into()))
            .await
            .unwrap();
        assert_eq!(received, 4);
        let expected: Vec<String> = (0..20).map(|n| format!("w{n}")).collect();
        for w in 1..4 {
            let log = log_until(&cluster, w, "21 notes", |l| l.len() >= 21).await;
            let from_zero: Vec<&str> = log
                .iter()
                .filter(|r| matches!(r.from, Peer::Worker { id: 0, .. }))
                .map(|r| r.text.as_str())
                .collect();
            assert_eq!(from_zero, expected, "worker {w}");
            assert!(log.iter().all(|r| r.via == Via::Broadcast));
            assert_eq!(
                log.iter().filter(|r| r.from == Peer::Master).count(),
                1,
                "worker {w}: {log:?}"
            );
        }
        // The sender itself got only the master's broadcast.
        let own = log(&cluster, 0).await;
        assert_eq!(texts(&own), ["from master"]);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn group_messages_reach_members_only_and_stop_after_leave() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(4))
            .await
            .unwrap();
        for w in [1, 2] {
            assert_eq!(
                cmd(&cluster, w, RelayMsg::Join("blue".into())).await,
                RelayReply::Done
            );
        }
        assert_eq!(cluster.group_members("blue"), [1, 2]);
        let info = cluster.info().await.unwrap();
        assert_eq!(info.groups.get("blue").cloned(), Some(vec![1, 2]));
        assert_eq!(info.workers[1].groups, ["blue"]);

        let publish = |text: &str| RelayMsg::Publish {
            group: "blue".into(),
            text: text.into(),
        };
        assert_eq!(cmd(&cluster, 0, publish("one")).await, RelayReply::Done);
        assert_eq!(
            cluster
                .publish("blue", &RelayMsg::Note("two".into()))
                .await
                .unwrap(),
            2
        );
        for w in [1, 2] {
            let log = log_until(&cluster, w, "both notes", |l| l.len() == 2).await;
            assert_eq!(texts(&log), ["one", "two"]);
            assert_eq!(log[0].via, Via::Group("blue".into()));
        }

        assert_eq!(
            cmd(&cluster, 2, RelayMsg::Leave("blue".into())).await,
            RelayReply::Done
        );
        assert_eq!(cmd(&cluster, 0, publish("three")).await, RelayReply::Done);
        log_until(&cluster, 1, "the third note", |l| l.len() == 3).await;
        // A round trip through worker 0's pipe and proxy after its publish: had worker 2 still
        // been a member, the note would have reached it first.
        assert_eq!(
            cmd(
                &cluster,
                0,
                RelayMsg::TellPeerAcked {
                    to: 2,
                    text: "marker".into()
                }
            )
            .await,
            RelayReply::Done
        );
        let log2 = log_until(&cluster, 2, "the marker", |l| l.len() == 3).await;
        assert_eq!(texts(&log2), ["one", "two", "marker"]);
        for w in [0, 3] {
            assert!(
                log(&cluster, w).await.is_empty(),
                "worker {w} is not a member"
            );
        }
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn confirmations_wait_for_n_of_m_and_time_out_short_of_it() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(4))
            .await
            .unwrap();
        // A worker waits for 3 confirmations while they come in.
        let waiter = cluster.worker(0).send(Call(RelayMsg::AwaitConfirmations {
            key: "warm".into(),
            n: 3,
            timeout_ms: 20_000,
        }));
        for w in [3, 1, 2] {
            assert_eq!(
                cmd(&cluster, w, RelayMsg::Confirm("warm".into())).await,
                RelayReply::Done
            );
        }
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            RelayReply::Confirmed(vec![3, 1, 2])
        );
        let who = cluster
            .await_confirmations("warm", 3, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(who, [3, 1, 2]);
        let t = Instant::now();
        let short = cluster
            .await_confirmations("warm", 4, Duration::from_millis(300))
            .await;
        assert!(
            matches!(short, Err(Error::Ask(AskError::Timeout(_)))),
            "{short:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_request_to_a_worker_that_dies_mid_request_fails_fast() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3))
            .await
            .unwrap();
        let victim = pid(&cluster, 1).await;
        // Worker 1 is busy (its thread sleeps), so worker 0's request waits in its pipe.
        cluster.worker(1).do_send(Call(RelayMsg::Block(60_000)));
        let asked = cluster.worker(0).send(Call(RelayMsg::AskPeer {
            to: 1,
            text: "never answered".into(),
            timeout_ms: 30_000,
        }));
        common::eventually(
            Duration::from_secs(20),
            "the request to reach worker 1",
            || async { cluster.stats().await.unwrap()[1].sent.get("PeerRequest") == Some(&1) },
        )
        .await;
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let reply = asked.await.unwrap().unwrap();
        assert!(
            matches!(
                reply,
                RelayReply::Failed(AskError::WorkerDied {
                    worker: 1,
                    reason: ExitReason::Signaled(9),
                })
            ),
            "the asker learns how the receiver ended, as the master does: {reply:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        assert!(!is_alive(victim));
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_stuck_receiver_gives_its_senders_backpressure_and_the_master_stays_bounded() {
    within(120, async {
        let config = relay_config(2)
            .max_frame_bytes(64 * 1024)
            .max_outbox_bytes(256 * 1024)
            .pipe_buffer_bytes(0)
            .heartbeat_interval(Duration::ZERO);
        let cluster = ClusterSupervisor::start::<Relay>(config).await.unwrap();
        // Worker 1's thread sleeps: it reads nothing.
        // Its Block request is ahead of every request of the flood in its pipe.
        cluster.worker(1).do_send(Call(RelayMsg::Block(4_000)));
        let reply = cmd(
            &cluster,
            0,
            RelayMsg::Flood {
                to: 1,
                count: 200,
                bytes: 16 * 1024,
            },
        )
        .await;
        let RelayReply::Flooded {
            ok,
            backpressure,
            other,
        } = reply
        else {
            panic!("{reply:?}")
        };
        assert!(other.is_empty(), "{other:?}");
        // At most 256 KiB queued in the master, plus what the pipe holds; the rest refused.
        assert!(backpressure >= 150, "ok {ok}, backpressure {backpressure}");
        assert_eq!(ok + backpressure, 200);
        let stats = cluster.stats().await.unwrap();
        assert!(stats[1].errors as usize >= backpressure);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_payload_the_receiver_cannot_decode_is_a_typed_error_and_nothing_crashes() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(2))
            .await
            .unwrap();
        let before = pid(&cluster, 1).await;
        let reply = cmd(&cluster, 0, RelayMsg::AskGarbage { to: 1 }).await;
        let RelayReply::Failed(AskError::Failed(why)) = &reply else {
            panic!("{reply:?}")
        };
        assert!(why.contains("did not decode"), "{why}");
        assert_eq!(pid(&cluster, 1).await, before, "the receiver is untouched");
        cluster.stop().await.unwrap();
    })
    .await;
}

/// The master's handler for `ask_master`.
struct Shouter;

impl Actor for Shouter {
    type Context = Context<Self>;
}

impl Handler<WorkerRequest<String, String>> for Shouter {
    type Result = String;

    fn handle(&mut self, req: WorkerRequest<String, String>, _: &mut Context<Self>) -> String {
        format!("{} from worker {}", req.msg.to_uppercase(), req.worker)
    }
}

#[actix::test]
async fn workers_ask_the_master_and_the_master_acknowledges_one_way_messages() {
    within(60, async {
        let cluster = ClusterSupervisor::builder::<Relay>(relay_config(2))
            .on_request(Shouter.start().recipient())
            .start()
            .await
            .unwrap();
        assert_eq!(
            cmd(&cluster, 1, RelayMsg::AskMaster("hello".into())).await,
            RelayReply::Text("HELLO from worker 1".into())
        );
        cluster
            .worker(0)
            .send(TellAck(RelayMsg::Note("acked".into())))
            .await
            .unwrap()
            .unwrap();
        // Acknowledged on receipt, so the note is in the log once the handler has run: the
        // log request comes after it on the same pipe.
        assert_eq!(texts(&log(&cluster, 0).await), ["acked"]);
        cluster.stop().await.unwrap();

        // Without a handler, a typed error.
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(1))
            .await
            .unwrap();
        assert_eq!(
            cmd(&cluster, 0, RelayMsg::AskMaster("hello".into())).await,
            RelayReply::Failed(AskError::NoHandler)
        );
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn workers_control_others_only_where_the_config_permits() {
    within(120, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3))
            .await
            .unwrap();
        let reply = cmd(&cluster, 0, RelayMsg::Kill(1)).await;
        assert!(
            matches!(reply, RelayReply::Failed(AskError::NotPermitted(_))),
            "{reply:?}"
        );
        let reply = cmd(&cluster, 0, RelayMsg::Restart(1)).await;
        assert!(
            matches!(reply, RelayReply::Failed(AskError::NotPermitted(_))),
            "{reply:?}"
        );
        cluster.stop().await.unwrap();

        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3).worker_control(true))
            .await
            .unwrap();
        let (one, two) = (pid(&cluster, 1).await, pid(&cluster, 2).await);
        assert_eq!(cmd(&cluster, 0, RelayMsg::Kill(1)).await, RelayReply::Done);
        assert!(!is_alive(one));
        assert_eq!(
            cmd(&cluster, 0, RelayMsg::Restart(2)).await,
            RelayReply::Done
        );
        assert!(!is_alive(two));
        // Both slots serve again, with new processes: one restarted by its policy, one replaced.
        common::eventually(
            Duration::from_secs(20),
            "both slots to serve again",
            || async {
                let info = cluster.info().await.unwrap();
                info.workers
                    .iter()
                    .all(|w| w.state == procactor::WorkerState::Ready)
            },
        )
        .await;
        let info = cluster.info().await.unwrap();
        assert_eq!(info.workers[1].restarts, 1);
        assert_eq!(
            info.workers[2].restarts, 0,
            "a replacement is not a restart"
        );
        assert_eq!(info.workers[2].generation, 2);
        assert_ne!(pid(&cluster, 1).await, one);
        assert_ne!(pid(&cluster, 2).await, two);
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn cluster_info_and_stats_match_the_traffic_sent() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Relay>(relay_config(3))
            .await
            .unwrap();
        let pids = [
            pid(&cluster, 0).await,
            pid(&cluster, 1).await,
            pid(&cluster, 2).await,
        ];
        // Worker 0 tells worker 1 500 notes, in order; worker 2 asks worker 1 ten times.
        let reply = cmd(
            &cluster,
            0,
            RelayMsg::TellMany {
                to: 1,
                prefix: "n".into(),
                count: 500,
            },
        )
        .await;
        assert_eq!(reply, RelayReply::Done);
        for _ in 0..10 {
            let reply = cmd(
                &cluster,
                2,
                RelayMsg::AskPeer {
                    to: 1,
                    text: "x".into(),
                    timeout_ms: 10_000,
                },
            )
            .await;
            assert!(matches!(reply, RelayReply::Echoed { by: 1, .. }));
        }
        let log = log_until(&cluster, 1, "500 notes", |l| l.len() == 500).await;
        let expected: Vec<String> = (0..500).map(|n| format!("n{n}")).collect();
        assert_eq!(
            texts(&log),
            expected,
            "one sender's messages keep their order"
        );

        let stats = cluster.stats().await.unwrap();
        let count = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        assert_eq!(count(&stats[0].received, "Send"), 500);
        assert_eq!(count(&stats[1].sent, "Deliver"), 500);
        assert_eq!(count(&stats[2].received, "Ask"), 10);
        assert_eq!(count(&stats[1].sent, "PeerRequest"), 10);
        assert_eq!(count(&stats[2].sent, "AskReply"), 10);
        // Master requests so far: pid ×1 each, TellMany, AskPeer ×10, Log (≥ 1).
        assert_eq!(count(&stats[0].sent, "Request"), 2);
        assert_eq!(count(&stats[2].sent, "Request"), 11);
        assert!(stats[1].requests >= 10 + 2);
        for (s, pid) in stats.iter().zip(pids) {
            assert_eq!(s.pid, Some(pid));
            assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
            assert_eq!(s.restarts, 0);
        }

        // The same from a worker's side.
        let RelayReply::Info(info) = cmd(&cluster, 2, RelayMsg::Info).await else {
            panic!()
        };
        assert_eq!(info.master_pid, std::process::id());
        let seen: Vec<Option<u32>> = info.workers.iter().map(|w| w.pid).collect();
        assert_eq!(seen, pids.map(Some));
        assert!(info
            .workers
            .iter()
            .all(|w| w.generation == 1 && w.uptime > Duration::ZERO));
        let RelayReply::Stats(from_worker) = cmd(&cluster, 2, RelayMsg::Stats).await else {
            panic!()
        };
        assert_eq!(from_worker.len(), 3);
        cluster.stop().await.unwrap();
    })
    .await;
}
