//! Clusters of several groups: different programs, counts, policies, types, environments,
//! arguments and CPUs; start and stop order; bad configurations refused before anything starts.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::cluster::{collector, next_matching, relay, within};
use common::relay::{Relay, RelayMsg, RelayReply};
use common::{is_alive, status_field};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::{Affinity, Backoff, Error, GroupHandlers, RestartPolicy, RestartType, WorkerState};

const RELAY: &str = env!("CARGO_BIN_EXE_procactor-relay");
const ECHO: &str = env!("CARGO_BIN_EXE_procactor-echo");

fn base() -> ClusterConfig {
    ClusterConfig::new()
        .handle_signals(false)
        .ready_timeout(Duration::from_secs(20))
        .env("CLUSTER_WIDE", "everyone")
        .env("OVERRIDDEN", "cluster")
        .args(["--cluster-wide"])
        .restart(RestartPolicy {
            backoff: Backoff::none(),
            ..RestartPolicy::default()
        })
}

/// The relays' handler for `ask_master`.
struct Shouter;

impl Actor for Shouter {
    type Context = Context<Self>;
}

impl Handler<procactor::WorkerRequest<String, String>> for Shouter {
    type Result = String;

    fn handle(
        &mut self,
        req: procactor::WorkerRequest<String, String>,
        _: &mut Context<Self>,
    ) -> String {
        format!("{} from {}", req.msg.to_uppercase(), req.worker)
    }
}

fn first_cpu() -> usize {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .find(|&c| set.is_set(c).unwrap_or(false))
        .unwrap()
}

#[actix::test]
async fn two_groups_of_different_programs_types_counts_and_policies() {
    within(120, async {
        let cpu = first_cpu();
        let mut builder = ClusterSupervisor::with_groups(base());
        let handlers = GroupHandlers::<Relay>::new().on_request(Shouter.start().recipient());
        let relays = builder.group_with::<Relay>(
            GroupConfig::new("relays")
                .workers(2)
                .exec(RELAY)
                .args(["--from-group", "relays"])
                .env("OVERRIDDEN", "group")
                .restart(RestartPolicy {
                    restart: RestartType::Temporary,
                    ..RestartPolicy::default()
                }),
            handlers,
        );
        let echoes = builder.group::<Echo>(
            GroupConfig::new("echoes")
                .workers(3)
                .exec(ECHO)
                .affinity(Affinity::Cpus(vec![cpu])),
        );
        let groups = builder.start().await.unwrap();
        let (relays, echoes) = (groups.get(relays).unwrap(), groups.get(echoes).unwrap());
        assert_eq!((relays.len(), echoes.len()), (2, 3));
        assert_eq!(groups.workers().await.unwrap().len(), 5);

        // Typed handles: each group answers its own messages.
        assert_eq!(
            echoes
                .worker(2)
                .send(Call(EchoMsg::Ping))
                .await
                .unwrap()
                .unwrap(),
            EchoReply::Pong
        );
        let env = |name: &str| RelayMsg::Env(name.into());
        assert_eq!(
            relay(relays, 1, env("CLUSTER_WIDE")).await,
            RelayReply::Events(vec![("CLUSTER_WIDE".into(), "everyone".into())])
        );
        assert_eq!(
            relay(relays, 0, env("OVERRIDDEN")).await,
            RelayReply::Events(vec![("OVERRIDDEN".into(), "group".into())])
        );
        let RelayReply::Events(identity) = relay(relays, 0, RelayMsg::Identity).await else {
            panic!()
        };
        assert_eq!(identity[0], ("group".into(), "relays".into()));
        let args: Vec<&str> = identity[1..].iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(args, ["--cluster-wide", "--from-group", "relays"]);

        // The group's own handler answers its workers' requests.
        assert_eq!(
            relay(relays, 1, RelayMsg::AskMaster("hi".into())).await,
            RelayReply::Text("HI from 1".into())
        );

        // CPU affinity per group.
        for info in echoes.workers().await.unwrap() {
            assert_eq!(
                status_field(info.pid.unwrap(), "Cpus_allowed_list").unwrap(),
                cpu.to_string()
            );
        }

        // Policies per group: a temporary relay stays down, a permanent echo comes back.
        let relay_pid = relays.workers().await.unwrap()[0].pid.unwrap();
        let echo0 = echoes.workers().await.unwrap()[0].clone();
        let echo_pid = echo0.pid.unwrap();
        // Ids are cluster-wide: the relays are 0 and 1, the echoes 2, 3 and 4.
        assert_eq!((relays.ids(), echoes.ids()), (vec![0, 1], vec![2, 3, 4]));
        relays.kill(0).await.unwrap();
        echoes.kill(echo0.id).await.unwrap();
        common::eventually(Duration::from_secs(20), "the echo's restart", || async {
            let echo = &echoes.workers().await.unwrap()[0];
            echo.state == WorkerState::Ready && echo.pid != Some(echo_pid)
        })
        .await;
        let relay0 = &relays.workers().await.unwrap()[0];
        assert!(!is_alive(relay_pid));
        assert_eq!(relay0.state, WorkerState::Exited, "{relay0:?}");
        groups.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn groups_start_in_order_waiting_when_asked_and_stop_in_reverse() {
    within(120, async {
        let (events, mut seen) = collector::<WorkerEvent>();
        let mut builder = ClusterSupervisor::with_groups(base());
        builder.subscribe(events);
        let first = builder.group::<Relay>(GroupConfig::new("first").workers(1).exec(RELAY));
        let second = builder.group::<Echo>(
            GroupConfig::new("second")
                .workers(1)
                .exec(ECHO)
                .after("first"),
        );
        let groups = builder.start().await.unwrap();
        let first_id = groups.get(first).unwrap().workers().await.unwrap()[0].id;
        let second_id = groups.get(second).unwrap().workers().await.unwrap()[0].id;
        // The second group's process was spawned only after the first was ready.
        let mut order = Vec::new();
        while order.len() < 2 {
            let e = next_matching(&mut seen, Duration::from_secs(10), |e| {
                matches!(e.kind, WorkerEventKind::Ready | WorkerEventKind::Spawned)
                    && !(e.worker == first_id && e.kind == WorkerEventKind::Spawned)
            })
            .await
            .expect("start events");
            order.push((e.worker, e.kind));
        }
        assert_eq!(
            order,
            [
                (first_id, WorkerEventKind::Ready),
                (second_id, WorkerEventKind::Spawned)
            ]
        );
        groups.stop().await.unwrap();
        let mut exits = Vec::new();
        while exits.len() < 2 {
            let e = next_matching(&mut seen, Duration::from_secs(10), |e| {
                matches!(e.kind, WorkerEventKind::Exited { .. })
            })
            .await
            .expect("exit events");
            exits.push(e.worker);
        }
        assert_eq!(exits, [second_id, first_id], "the last group stops first");
    })
    .await;
}

#[actix::test]
async fn bad_group_configurations_are_refused_before_anything_starts() {
    within(60, async {
        let cases: Vec<(&str, Vec<GroupConfig>)> = vec![
            (
                "empty",
                vec![GroupConfig::new("empty").workers(0).exec(ECHO)],
            ),
            (
                "same name",
                vec![
                    GroupConfig::new("twin").workers(1).exec(ECHO),
                    GroupConfig::new("twin").workers(1).exec(ECHO),
                ],
            ),
            (
                "missing program",
                vec![GroupConfig::new("ghost")
                    .workers(1)
                    .exec("/no/such/program")],
            ),
            (
                "unknown cpu",
                vec![GroupConfig::new("pinned")
                    .workers(1)
                    .exec(ECHO)
                    .affinity(Affinity::Cpus(vec![100_000]))],
            ),
            (
                "unknown after",
                vec![GroupConfig::new("late")
                    .workers(1)
                    .exec(ECHO)
                    .after("nobody")],
            ),
            ("no name", vec![GroupConfig::new("").workers(1).exec(ECHO)]),
        ];
        for (case, configs) in cases {
            let mut builder = ClusterSupervisor::with_groups(base());
            for config in configs {
                builder.group::<Echo>(config);
            }
            match builder.start().await {
                Err(Error::Config(e)) => {
                    assert_eq!(e.field, "groups", "{case}: {e}");
                    let expected = match case {
                        "empty" => "\"empty\": workers",
                        "same name" => "\"twin\": name",
                        "missing program" => "\"ghost\": exec",
                        "unknown cpu" => "\"pinned\": affinity",
                        "unknown after" => "\"late\": after",
                        _ => "\"\": name",
                    };
                    assert!(e.reason.contains(expected), "{case}: {e}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    })
    .await;
}

#[actix::test]
async fn a_group_key_of_another_cluster_is_an_error_not_a_panic() {
    within(60, async {
        let mut builder = ClusterSupervisor::with_groups(base());
        let mine = builder.group::<Echo>(GroupConfig::new("mine").workers(1).exec(ECHO));
        // Same index and type, other builder: it must not be read as this cluster's group.
        let foreign =
            ClusterSupervisor::with_groups(base()).group::<Echo>(GroupConfig::new("mine"));
        let groups = builder.start().await.unwrap();
        assert!(matches!(groups.get(foreign), Err(Error::ForeignGroupKey)));
        assert_eq!(groups.get(mine).unwrap().len(), 1);
        groups.stop().await.unwrap();
    })
    .await;
}
