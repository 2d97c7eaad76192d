//! `TellBatch`: many one-way messages in one actix message, with real worker processes: they
//! arrive in order, interleaved in order with single `Tell`s and `Call`s, and a batch holding
//! one message too large for a frame is refused whole.

mod common;

use common::cluster::{echo_config, within};
use procactor::actors::echo::{Echo, EchoMsg, EchoReply};
use procactor::prelude::*;
use procactor::TellBatch;

async fn stats(w: &Addr<Worker<Echo>>) -> (u64, u64) {
    match w.send(Call(EchoMsg::Stats)).await.unwrap().unwrap() {
        EchoReply::Stats {
            tells,
            out_of_order,
            ..
        } => (tells, out_of_order),
        other => panic!("{other:?}"),
    }
}

#[actix::test]
async fn batches_arrive_whole_and_in_order_with_single_messages() {
    within(60, async {
        let cluster = ClusterSupervisor::start::<Echo>(echo_config(1))
            .await
            .unwrap();
        let w = cluster.worker(0);
        let mut n = 0u64;
        for round in 0..50 {
            let batch: Vec<EchoMsg> = (n..n + 100).map(EchoMsg::Seq).collect();
            w.send(TellBatch(batch)).await.unwrap().unwrap();
            n += 100;
            // Single messages and requests between batches keep their place.
            w.send(Tell(EchoMsg::Seq(n))).await.unwrap().unwrap();
            n += 1;
            if round % 10 == 0 {
                let reply = w.send(Call(EchoMsg::Seq(n))).await.unwrap().unwrap();
                assert_eq!(reply, EchoReply::Seq { n, in_order: true });
                n += 1;
            }
        }
        // An empty batch is nothing, and fine.
        w.send(TellBatch(Vec::new())).await.unwrap().unwrap();
        let (tells, out_of_order) = stats(&w).await;
        assert_eq!(tells, 50 * 101, "every one-way message arrived");
        assert_eq!(out_of_order, 0, "in order");
        cluster.stop().await.unwrap();
    })
    .await;
}

#[actix::test]
async fn a_batch_with_a_message_too_large_for_a_frame_is_refused_whole() {
    within(60, async {
        let config = echo_config(1).max_frame_bytes(64 * 1024);
        let cluster = ClusterSupervisor::start::<Echo>(config).await.unwrap();
        let w = cluster.worker(0);
        let batch = vec![
            EchoMsg::Seq(0),
            EchoMsg::Echo(vec![7; 128 * 1024]),
            EchoMsg::Seq(1),
        ];
        let refused = w.send(TellBatch(batch)).await.unwrap();
        assert!(
            matches!(refused, Err(CallError::Frame(_))),
            "refused with a frame error: {refused:?}"
        );
        let (tells, _) = stats(&w).await;
        assert_eq!(tells, 0, "none of the batch was sent");
        // The worker is fine and takes the next batch.
        w.send(TellBatch(vec![EchoMsg::Seq(0), EchoMsg::Seq(1)]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats(&w).await, (2, 0));
        cluster.stop().await.unwrap();
    })
    .await;
}
